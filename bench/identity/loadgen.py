"""The load generator, the same for both servers.

Default: wrk (`-t2 -c8 --latency`), driven by a generated Lua script that
sets the method, headers and body; its report is parsed for requests/s and
the 50th/99th latency percentiles.  Fallback when wrk is missing and cannot
be installed: a small asyncio HTTP/1.1 client with keep-alive (reconnecting
whenever the server closes, as gunicorn's sync workers do after each reply).

Whichever is used, one run uses it for both servers.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.parse
from dataclasses import asdict, dataclass, field

from common import BenchError, assert_loopback, http


@dataclass
class Request:
    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None


@dataclass
class Result:
    tool: str
    duration_s: float
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    mean_ms: float | None = None
    non_2xx: int = 0
    socket_errors: int = 0

    @property
    def errors(self) -> int:
        return self.non_2xx + self.socket_errors

    def as_dict(self) -> dict:
        d = asdict(self)
        d["errors"] = self.errors
        return d


# --------------------------------------------------------------------------- #
# wrk
# --------------------------------------------------------------------------- #
def find_or_install_wrk(allow_install: bool, log=print) -> str | None:
    path = shutil.which("wrk")
    if path or not allow_install:
        return path
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        log("wrk is not installed and cannot be installed here (needs root and apt-get)")
        return None
    log("installing wrk with apt-get ...")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "wrk"]):
        r = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, timeout=600)
        if r.returncode != 0:
            log(f"{' '.join(cmd)} failed:\n{r.stdout[-2000:]}")
            return None
    return shutil.which("wrk")


def _lua_str(text: str) -> str:
    """A double-quoted Lua string literal (decimal escapes for anything unusual)."""
    out = []
    for ch in text.encode():
        c = chr(ch)
        if c in '"\\' or ch < 32 or ch > 126:
            out.append(f"\\{ch:03d}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def wrk_script(req: Request) -> str:
    lines = [f"wrk.method = {_lua_str(req.method)}"]
    if req.body is not None:
        lines.append(f"wrk.body = {_lua_str(req.body.decode())}")
    for k, v in req.headers.items():
        lines.append(f"wrk.headers[{_lua_str(k)}] = {_lua_str(v)}")
    return "\n".join(lines) + "\n"


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text.strip())
    if not m:
        raise BenchError(f"cannot parse wrk latency {text!r}")
    return float(m.group(1)) * _UNITS_MS[m.group(2)]


def parse_wrk(out: str, duration_s: float) -> Result:
    def grab(pattern: str, default=None):
        m = re.search(pattern, out, re.MULTILINE)
        return m.groups() if m else default

    rps = grab(r"^Requests/sec:\s+([\d.]+)")
    p50 = grab(r"^\s+50%\s+(\S+)")
    p99 = grab(r"^\s+99%\s+(\S+)")
    total = grab(r"^\s+(\d+) requests in ([\d.]+\w+)")
    if not (rps and total):
        raise BenchError(f"unexpected wrk output:\n{out}")
    mean = grab(r"^\s+Latency\s+(\S+)")
    sock = grab(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", ("0",) * 4)
    non2xx = grab(r"Non-2xx or 3xx responses: (\d+)", ("0",))
    requests = int(total[0])
    return Result(
        tool="wrk",
        duration_s=_ms(total[1]) / 1000.0,
        requests=requests,
        rps=float(rps[0]),
        # With no completed request wrk prints 0us percentiles; report nan then.
        p50_ms=_ms(p50[0]) if (p50 and requests) else float("nan"),
        p99_ms=_ms(p99[0]) if (p99 and requests) else float("nan"),
        mean_ms=_ms(mean[0]) if (mean and requests) else None,
        non_2xx=int(non2xx[0]),
        socket_errors=sum(int(x) for x in sock),
    )


def run_wrk(wrk: str, req: Request, *, duration_s: float, connections: int, threads: int,
            timeout_s: float, log_path: str | None = None) -> Result:
    assert_loopback(req.url)
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(wrk_script(req))
        script = f.name
    try:
        cmd = [wrk, f"-t{threads}", f"-c{connections}", f"-d{max(1, int(round(duration_s)))}s",
               "--latency", "--timeout", f"{int(timeout_s)}s", "-s", script, req.url]
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=duration_s + timeout_s + 30)
    finally:
        os.unlink(script)
    if log_path:
        with open(log_path, "a") as f:
            f.write(f"$ {' '.join(cmd[:-3])} <script> {req.method} {req.url}\n{r.stdout}\n")
    # wrk reports a broken script but still runs (plain GETs) and exits 0.
    if r.returncode != 0 or re.search(r"\.lua:\d+:", r.stdout):
        raise BenchError(f"wrk failed ({r.returncode}):\n{r.stdout}")
    return parse_wrk(r.stdout, duration_s)


# --------------------------------------------------------------------------- #
# asyncio fallback
# --------------------------------------------------------------------------- #
class _Closed(Exception):
    pass


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    version, status = lines[0].split(" ", 2)[:2]
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
    if "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    else:
        await reader.read()  # body runs to end of connection
        keep = False
    return int(status), keep


async def _client(req: Request, raw: bytes, host: str, port: int, deadline: float,
                  timeout_s: float, lat: list[float], stats: dict) -> None:
    reader = writer = None
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            if writer is None:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), left)
            t0 = time.perf_counter()
            writer.write(raw)
            status, keep = await asyncio.wait_for(_read_response(reader), min(left, timeout_s))
            lat.append(time.perf_counter() - t0)
            if status >= 400:
                stats["non_2xx"] += 1
            if not keep:
                writer.close()
                writer = None
        except asyncio.TimeoutError:
            if time.monotonic() < deadline:
                stats["socket_errors"] += 1
            break
        except (OSError, asyncio.IncompleteReadError, ValueError):
            stats["socket_errors"] += 1
            if writer is not None:
                writer.close()
            writer = None
    if writer is not None:
        writer.close()


def run_python(req: Request, *, duration_s: float, connections: int, timeout_s: float) -> Result:
    assert_loopback(req.url)
    u = urllib.parse.urlsplit(req.url)
    host, port = u.hostname, u.port or 80
    path = u.path + (f"?{u.query}" if u.query else "")
    hdrs = {"Host": f"{host}:{port}", "User-Agent": "tinystack-bench", "Accept": "*/*"}
    hdrs.update(req.headers)
    body = req.body or b""
    if req.body is not None or req.method in ("POST", "PUT", "PATCH"):
        hdrs["Content-Length"] = str(len(body))
    raw = (f"{req.method} {path} HTTP/1.1\r\n"
           + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n").encode() + body

    lat: list[float] = []
    stats = {"non_2xx": 0, "socket_errors": 0}

    async def main():
        start = time.monotonic()
        deadline = start + duration_s
        await asyncio.gather(*(_client(req, raw, host, port, deadline, timeout_s, lat, stats)
                               for _ in range(connections)))
        return time.monotonic() - start

    elapsed = asyncio.run(main())
    lat.sort()

    def pct(p: float) -> float:
        if not lat:
            return float("nan")
        return lat[min(len(lat) - 1, max(0, int(round(p / 100 * len(lat))) - 1))] * 1000

    return Result(
        tool="python-asyncio",
        duration_s=elapsed,
        requests=len(lat),
        rps=len(lat) / elapsed if elapsed else 0.0,
        p50_ms=pct(50),
        p99_ms=pct(99),
        mean_ms=(sum(lat) / len(lat) * 1000) if lat else None,
        non_2xx=stats["non_2xx"],
        socket_errors=stats["socket_errors"],
    )


class LoadGen:
    """One configured generator, used for every measurement of a run."""

    def __init__(self, *, kind: str = "auto", duration_s: float = 8, warmup_s: float = 2,
                 connections: int = 8, threads: int = 2, timeout_s: float = 30,
                 allow_install: bool = True, log_path: str | None = None, log=print):
        self.duration_s = duration_s
        self.warmup_s = warmup_s
        self.connections = connections
        self.threads = threads
        self.timeout_s = timeout_s
        self.log_path = log_path
        self.wrk = None
        if kind in ("auto", "wrk"):
            self.wrk = find_or_install_wrk(allow_install, log=log)
            if self.wrk is None and kind == "wrk":
                raise BenchError("wrk requested but not available")
            if self.wrk is None:
                log("falling back to the built-in asyncio load generator")
        self.kind = "wrk" if self.wrk else "python-asyncio"

    def describe(self) -> str:
        if self.kind == "wrk":
            v = subprocess.run([self.wrk, "--version"], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True).stdout.splitlines()
            ver = v[0].split(" [")[0] if v else "wrk"
            return (f"{ver}: -t{self.threads} -c{self.connections} -d{self.duration_s:g}s "
                    f"--latency (+{self.warmup_s:g}s warm-up per figure)")
        return (f"built-in asyncio HTTP/1.1 client: {self.connections} connections, "
                f"{self.duration_s:g}s (+{self.warmup_s:g}s warm-up per figure)")

    def _once(self, req: Request, duration_s: float) -> Result:
        if self.wrk:
            return run_wrk(self.wrk, req, duration_s=duration_s, connections=self.connections,
                           threads=self.threads, timeout_s=self.timeout_s, log_path=self.log_path)
        return run_python(req, duration_s=duration_s, connections=self.connections,
                          timeout_s=self.timeout_s)

    def measure(self, req: Request) -> Result:
        if self.warmup_s > 0:
            self._once(req, self.warmup_s)
            drain(req)
        return self._once(req, self.duration_s)


def drain(req: Request) -> None:
    """Send the request once more and wait for its reply.

    When a load run ends, the requests it had in flight stay queued in the
    server (gunicorn's sync workers still serve them after the client left);
    with a slow endpoint that backlog would eat into the next measured run.
    A blocking request queues behind it, so its reply means the queue is empty.
    """
    http(req.method, req.url, body=req.body,
         headers={k: v for k, v in req.headers.items() if k.lower() != "content-type"},
         timeout=120)
