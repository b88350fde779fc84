#!/usr/bin/env python3
"""Image benchmark: a 1 GiB image up and down the image API, beside a plain file copy.

    python bench/image/run.py                 # 1 GiB, 3 rounds, then the table
    python bench/image/run.py --size-mib 256 --rounds 5

Starts its own tinystack (``tinystack up -d --data-dir DIR --port P``, DIR
under ``bench/.ref/image``), makes a file of random bytes, and in every round
measures, one after the other:

- **copy**: the same file copied to another file in the kernel
  (``copy_file_range``, as ``cp`` does), 64 MiB at a time, each piece flushed
  before the next is copied, then fsynced: the physical limit of putting those
  bytes in another file on this machine;
- **hash**: MD5 and SHA-512 of the file, in two threads at once (what any
  Glance-compatible upload must compute; from the page cache, no writing);
  the CPU time of each thread is kept too;
- **loopback**: the file sent with ``sendfile`` over a loopback TCP connection
  to a thread that receives it into a buffer and drops it: what moving the
  bytes to a server costs, before the server does anything with them;
- **upload**: ``PUT /v2/images/{id}/file`` of the file (sent with
  ``sendfile``, so the client costs little CPU), until the 204, which comes
  after the server has hashed, written and fsynced it;
- **download**: ``GET /v2/images/{id}/file`` into another file (the body
  moved in the kernel with ``splice``, so the client costs little CPU, and
  flushed every 64 MiB, as the server's store does), fsynced.

Before each figure that writes a file, an untimed scratch file of the same
size is written and deleted (``recycle_memory``): on a virtual machine whose
RAM is backed on first touch, a figure that grows the page cache into pages
never used before pays several times the CPU of one that reuses freed pages.

The server's resident memory is sampled every 20 ms during the transfers.
Prints the figures side by side, with the ratio to the plain copy (target:
at least 70% both ways) and, for the upload, to the hashing rate and to the
best an upload can do on this machine's cores: it must spend at least the
CPU of the two digests, the copy and the loopback together, spread over
every core at best, and no less time than the slower digest alone takes in
its thread (each digest is sequential). See bench/README.md.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import fcntl
import hashlib
import json
import os
import shutil
import socket
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BENCH_DIR))

from cloud import (Cloud, clean_env, cpu_seconds, free_port, log,  # noqa: E402
                   warn_if_busy)

WORK = BENCH_DIR / ".ref" / "image"
MIB = 1024 * 1024
BLOCK = 4 * MIB
SYNC_EVERY = 64 * MIB
"""Writers here flush every 64 MiB as they go, as the image store does."""
PIPE = 1 * MIB
"""The download client's pipe between the socket and the file."""
SPLICE = os.SPLICE_F_MOVE | os.SPLICE_F_MORE
TARGET = 0.70


# -- what the server costs ----------------------------------------------------------


def own_cpu() -> float:
    times = os.times()
    return times.user + times.system


class CPU:
    """CPU seconds the server and this process spend inside the block (noise-proof work)."""

    def __init__(self, server: Cloud | None = None):
        self.server, self.seconds = server, 0.0

    def _now(self) -> float:
        total = own_cpu()
        if self.server is not None:
            total += cpu_seconds(self.server.pid)
        return total

    def __enter__(self) -> CPU:
        self._start = self._now()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = self._now() - self._start


class PeakRSS:
    """Samples the server's RSS every 20 ms while in use; ``peak`` is the largest seen."""

    def __init__(self, server: Cloud):
        self.server, self.peak = server, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.server.rss())
            self._stop.wait(0.02)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.server.rss())


# -- the measures -------------------------------------------------------------------


def make_source(path: Path, size: int) -> str:
    """A file of random bytes; its SHA-512."""
    digest = hashlib.sha512()
    with open(path, "wb") as handle:
        left = size
        while left:
            block = os.urandom(min(BLOCK, left))
            handle.write(block)
            digest.update(block)
            left -= len(block)
        handle.flush()
        os.fsync(handle.fileno())
    return digest.hexdigest()


def recycle_memory(size: int) -> None:
    """Write ``size`` bytes to a scratch file and delete it before it reaches the disk.

    On a virtual machine whose RAM the hypervisor backs on first touch (as here), the
    first use of a page costs some 15 us: writing 1 GiB into pages never used before
    takes 5 s of CPU instead of 0.8, while pages freed by a deleted file are reused at
    full speed. Called (untimed) before every figure that writes a file, so each takes
    its page cache from memory used before, as a machine in steady state does, and no
    figure pays for having grown the page cache while another did not."""
    scratch = WORK / "scratch"
    zeros = bytes(BLOCK)
    with open(scratch, "wb", buffering=0) as handle:
        for _ in range(size // BLOCK):
            handle.write(zeros)
    scratch.unlink()


def timed_copy(source: Path, target: Path) -> float:
    """The file copied in the kernel (``copy_file_range``, as ``cp`` does) 64 MiB at a time,
    each piece flushed before the next is copied (as the server's store and the download
    client write), then fsynced: the fastest way to put these bytes in another file here."""
    started = time.perf_counter()
    with open(source, "rb") as src, open(target, "wb") as dst:
        left = os.fstat(src.fileno()).st_size
        while left:
            copied = os.copy_file_range(src.fileno(), dst.fileno(), min(SYNC_EVERY, left))
            if not copied:
                raise OSError("copy_file_range copied nothing")
            left -= copied
            os.fdatasync(dst.fileno())
        os.fsync(dst.fileno())
    elapsed = time.perf_counter() - started
    target.unlink()
    return elapsed


def timed_hash(source: Path) -> tuple[float, dict[str, float]]:
    """MD5 and SHA-512 of the file at once, each in its own thread, as the server does;
    the seconds, and the CPU seconds of each digest."""
    def one(name: str) -> float:
        hasher = hashlib.new(name)
        cpu = 0.0
        with open(source, "rb", buffering=0) as handle:
            while block := handle.read(BLOCK):
                started = time.thread_time()
                hasher.update(block)
                cpu += time.thread_time() - started
        hasher.hexdigest()
        return cpu

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        cpu = dict(zip(("md5", "sha512"), pool.map(one, ("md5", "sha512"))))
    return time.perf_counter() - started, cpu


def timed_loopback(source: Path, size: int) -> float:
    """The file sent with ``sendfile`` over loopback TCP to a thread that receives it into
    one buffer and drops it: the cost of getting the bytes to a server, nothing more."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        received: list[int] = []

        def receive() -> None:
            conn, _ = listener.accept()
            buffer, left = memoryview(bytearray(BLOCK)), size
            with conn:
                while left and (got := conn.recv_into(buffer, min(BLOCK, left))):
                    left -= got
            received.append(size - left)

        thread = threading.Thread(target=receive)
        thread.start()
        started = time.perf_counter()
        with socket.create_connection(listener.getsockname()) as sock, open(source, "rb") as f:
            sock.sendfile(f)
            thread.join()
        elapsed = time.perf_counter() - started
    assert received == [size], received
    return elapsed


def _read_head(sock: socket.socket) -> tuple[int, dict, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, rest


def timed_upload(server: Cloud, source: Path, size: int) -> tuple[float, str]:
    """PUT the file (sendfile); seconds until the answer, and the new image's id."""
    status, _, image = server.call("POST", "/image/v2/images", {
        "name": "bench", "disk_format": "raw", "container_format": "bare"})
    assert status == 201, status
    path = f"/image/v2/images/{image['id']}/file"
    with socket.create_connection(("127.0.0.1", server.port)) as sock, open(source, "rb") as f:
        started = time.perf_counter()
        sock.sendall((f"PUT {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
                      f"X-Auth-Token: {server.token}\r\nContent-Type: application/octet-stream"
                      f"\r\nContent-Length: {size}\r\n\r\n").encode())
        sock.sendfile(f)
        status, _, _ = _read_head(sock)
        elapsed = time.perf_counter() - started
    assert status == 204, status
    return elapsed, image["id"]


def timed_download(server: Cloud, image_id: str, target: Path, size: int) -> float:
    """GET into a file, the body moved in the kernel (``splice`` from the socket into a
    pipe and from the pipe into the file, as the upload's client uses ``sendfile``),
    flushed every 64 MiB, then fsynced."""
    path = f"/image/v2/images/{image_id}/file"
    read_end, write_end = os.pipe()
    try:
        fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, PIPE)
        with socket.create_connection(("127.0.0.1", server.port)) as sock, \
                open(target, "wb", buffering=0) as out:
            started = time.perf_counter()
            sock.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
                          f"X-Auth-Token: {server.token}\r\n\r\n").encode())
            status, headers, rest = _read_head(sock)
            assert status == 200 and int(headers["content-length"]) == size, (status, headers)
            out.write(rest)
            left, unsynced = size - len(rest), len(rest)
            while left:
                piped = os.splice(sock.fileno(), write_end, min(PIPE, left), flags=SPLICE)
                if not piped:
                    raise ConnectionError("download ended early")
                left -= piped
                unsynced += piped
                while piped:
                    piped -= os.splice(read_end, out.fileno(), piped, flags=SPLICE)
                if unsynced >= SYNC_EVERY:
                    os.fdatasync(out.fileno())
                    unsynced = 0
            os.fsync(out.fileno())
            return time.perf_counter() - started
    finally:
        os.close(read_end)
        os.close(write_end)


def sha512_of(path: Path) -> str:
    digest = hashlib.sha512()
    with open(path, "rb", buffering=0) as handle:
        while block := handle.read(BLOCK):
            digest.update(block)
    return digest.hexdigest()


# -- the run --------------------------------------------------------------------------


@dataclass
class Results:
    size: int
    copy: list[float] = field(default_factory=list)
    hash: list[float] = field(default_factory=list)
    loopback: list[float] = field(default_factory=list)
    upload: list[float] = field(default_factory=list)
    download: list[float] = field(default_factory=list)
    cpu: dict[str, list[float]] = field(default_factory=lambda: {
        "copy": [], "hash": [], "md5": [], "sha512": [], "loopback": [], "upload": [],
        "download": []})
    cores: int = field(default_factory=lambda: os.cpu_count() or 1)
    load: list[float] = field(default_factory=list)
    rss_idle: int = 0
    rss_upload: int = 0
    rss_download: int = 0

    def rate(self, name: str) -> float:
        """MiB/s of the median round."""
        return self.size / MIB / statistics.median(getattr(self, name))

    def bound_seconds(self) -> float:
        """The least time an upload can take here (median CPU figures): the CPU it cannot
        avoid (the two digests alone, without reading the file; putting the bytes in a
        file, as the copy does; getting them over loopback) spread over every core, and
        never less than the slower digest alone in its thread. Python, HTTP and the
        threads' hand-overs come on top."""
        cpu = {key: statistics.median(values) for key, values in self.cpu.items() if values}
        spread = (cpu["md5"] + cpu["sha512"] + cpu["copy"] + cpu["loopback"]) / self.cores
        return max(spread, cpu["md5"], cpu["sha512"])

    def bound_rate(self) -> float:
        return self.size / MIB / self.bound_seconds()


def run(args) -> Results:
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    size = args.size_mib * MIB
    source, copy_target, download_target = WORK / "source.raw", WORK / "copy.raw", WORK / "down.raw"
    log(f"writing {args.size_mib} MiB of random bytes to {source}")
    source_sha512 = make_source(source, size)
    env = clean_env(TINYSTACK_IMAGE__DEFAULT_IMAGE="false", TINYSTACK_LOG_LEVEL="warning")
    server = Cloud(WORK / "data", args.port or free_port(), env, call_timeout=600,
                   up_timeout=180, down_timeout=120)
    log(f"starting tinystack on port {server.port}")
    server.start()
    results = Results(size=size)
    try:
        results.rss_idle = server.rss()
        for round_number in range(1, args.rounds + 1):
            recycle_memory(size)
            with CPU() as cpu:
                results.copy.append(timed_copy(source, copy_target))
            results.cpu["copy"].append(cpu.seconds)
            with CPU() as cpu:
                elapsed, digests = timed_hash(source)
            results.hash.append(elapsed)
            results.cpu["hash"].append(cpu.seconds)
            for name, seconds in digests.items():
                results.cpu[name].append(seconds)
            with CPU() as cpu:
                results.loopback.append(timed_loopback(source, size))
            results.cpu["loopback"].append(cpu.seconds)
            recycle_memory(size)
            with PeakRSS(server) as peak, CPU(server) as cpu:
                elapsed, image_id = timed_upload(server, source, size)
            results.upload.append(elapsed)
            results.cpu["upload"].append(cpu.seconds)
            results.rss_upload = max(results.rss_upload, peak.peak)
            _, _, image = server.call("GET", f"/image/v2/images/{image_id}")
            assert image["os_hash_value"] == source_sha512, "the server hashed other bytes"
            recycle_memory(size)
            with PeakRSS(server) as peak, CPU(server) as cpu:
                results.download.append(timed_download(server, image_id, download_target,
                                                        size))
            results.cpu["download"].append(cpu.seconds)
            results.rss_download = max(results.rss_download, peak.peak)
            if round_number == 1:
                assert sha512_of(download_target) == source_sha512, "downloaded other bytes"
            download_target.unlink()
            server.call("DELETE", f"/image/v2/images/{image_id}")
            results.load.append(os.getloadavg()[0])
            log(f"round {round_number}: copy {results.copy[-1]:.2f} s, hash "
                f"{results.hash[-1]:.2f} s, loopback {results.loopback[-1]:.2f} s, upload "
                f"{results.upload[-1]:.2f} s, download {results.download[-1]:.2f} s, load "
                f"{results.load[-1]:.1f}")
    finally:
        server.stop()
        if not args.keep:
            shutil.rmtree(WORK, ignore_errors=True)
    return results


def table(r: Results, rounds: int) -> str:
    copy = r.rate("copy")
    md5, sha512 = (statistics.median(r.cpu[name]) for name in ("md5", "sha512"))
    bound = r.bound_rate()
    rows = [
        ("plain copy + fsync", "copy", "100%", ""),
        ("MD5 + SHA-512 of the file", "hash", f"{r.rate('hash') / copy:.0%}",
         f"what an upload must compute (CPU: MD5 {md5:.2f} s, SHA-512 {sha512:.2f} s)"),
        ("loopback TCP, sendfile", "loopback", f"{r.rate('loopback') / copy:.0%}",
         "getting the bytes to a server"),
        ("upload   PUT /file", "upload", f"{r.rate('upload') / copy:.0%}",
         f"{r.rate('upload') / r.rate('hash'):.0%} of the hashing rate, "
         f"{r.rate('upload') / bound:.0%} of the bound"),
        ("download GET /file + fsync", "download", f"{r.rate('download') / copy:.0%}", ""),
    ]
    lines = [f"image bench: {r.size // MIB} MiB of random bytes, median of {rounds} rounds "
             f"(min-max seconds), {r.cores} cores", "",
             f"{'':28} {'MiB/s':>7} {'seconds':>19} {'vs copy':>8} {'CPU s':>6}"]
    for name, key, ratio, note in rows:
        times = getattr(r, key)
        spread = f"{statistics.median(times):.2f} ({min(times):.2f}-{max(times):.2f})"
        rate = r.size / MIB / statistics.median(times)
        cpu = statistics.median(r.cpu[key])
        lines.append(f"{name:28} {rate:7.0f} {spread:>19} {ratio:>8} {cpu:6.2f}  "
                     f"{note}".rstrip())
    lines.append(f"{'upload bound, ' + str(r.cores) + ' cores':28} {bound:7.0f} "
                 f"{r.bound_seconds():19.2f} {bound / copy:8.0%} {'':>6}  "
                 f"max((MD5 + SHA-512 + copy + loopback CPU) / {r.cores}, MD5, SHA-512)")
    upload_verdict = "met" if r.rate("upload") >= TARGET * copy else "MISSED"
    if upload_verdict == "MISSED" and bound < TARGET * copy:
        upload_verdict += f" (out of reach here: the bound is {bound / copy:.0%} of the copy)"
    lines += ["CPU s: seconds of CPU used, by this process and (upload, download) the server",
              "",
              f"server RSS: idle {r.rss_idle / MIB:.0f} MiB, peak during uploads "
              f"{r.rss_upload / MIB:.0f} MiB, during downloads {r.rss_download / MIB:.0f} MiB",
              f"load average after each round: "
              f"{', '.join(f'{load:.1f}' for load in r.load)}",
              "",
              f"target >= {TARGET:.0%} of the plain copy: upload {upload_verdict}, download "
              f"{'met' if r.rate('download') >= TARGET * copy else 'MISSED'}"]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--port", type=int, default=0, help="default: a free port")
    parser.add_argument("--keep", action="store_true", help="keep bench/.ref/image afterwards")
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    args = parser.parse_args()
    warn_if_busy()
    results = run(args)
    print(table(results, args.rounds))
    if args.json:
        args.json.write_text(json.dumps(results.__dict__, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
