#!/usr/bin/env python3
"""Compute benchmark: how fast a server boots under TCG, and what its qemu costs beyond RAM.

    .venv/bin/python bench/compute/run.py                    # about 4 minutes
    .venv/bin/python bench/compute/run.py --trace            # and where ACTIVE's time goes
    .venv/bin/python bench/compute/run.py --network private  # servers with a port

Starts its own tinystack (``tinystack up -d`` on a fresh data dir under
``bench/.ref/compute`` and a free loopback port; it uploads the cached guest
image ``tiny`` on first start), talks to the compute API over plain HTTP with
an admin token, boots one warm-up server (it fills the node's image cache and
is not counted), then measures:

1. **POST -> ACTIVE**: ``POST /servers`` (flavor ``m1.nano``, image ``tiny``,
   ``networks: "none"`` unless ``--network`` says ``auto`` or names one) until
   ``GET /servers/{id}`` says ACTIVE, for ``--count`` servers one after another,
   each deleted before the next;
2. **POST -> ready line**: same servers, until ``os-getConsoleOutput`` shows
   the line the guest's init prints when it is up (``tinystack-guest ready:``,
   ``tinystack/image/guest/init.sh``); the guest's own uptime at that line too;
3. **N at once**: one ``POST`` with ``min_count = max_count = --burst`` (or, with
   ``--burst-mode posts``, that many POSTs from as many threads), until
   all are ACTIVE and until all have printed the ready line;
4. **memory beyond the guest's RAM**: for every server of (1), ``--settle``
   seconds after its ready line: its qemu's RSS (``/proc/PID/smaps``), the part
   of it that is guest RAM (the resident pages of the RAM block, the anonymous
   mapping of the flavor's size), and what is left: qemu's own memory (of which
   the TCG code cache and the shared binary and libraries are shown apart).

References measured in the same run, by starting the guest's own qemu command
line (from the server's ``guest.json``) by hand, with no tinystack around it:
the same command line paused (``-S``) until QMP answers (the floor of figure 1
and QEMU's memory before a guest runs), running until the ready line (the
floor of figure 2, and its memory), and a plain qemu (default TCG cache, no
free page reporting) for what the tuning saves.

``--trace`` also starts tinystack with ``bench/compute/tracehook`` on its
``PYTHONPATH``: it timestamps each step of the build path (API, scheduler,
bus, agent, image cache, qemu start, report, conductor), and the run prints
the median of each step. The machine is shared: the 1-minute load average is
sampled during the run and printed with the figures. See bench/README.md.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import math
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCH_DIR = HERE.parent
sys.path.insert(0, str(BENCH_DIR))

from cloud import (ApiError, Cloud, LoadSampler, clean_env, cpu_seconds, free_port,  # noqa: E402
                   log, warn_if_busy)

WORK = BENCH_DIR / ".ref" / "compute"
MIB = 1024 * 1024
READY = re.compile(r"tinystack-guest ready: hostname=(\S*) addresses=(\S*) uptime=([\d.]+)")
MICROVERSION = "2.37"
"""The first microversion that takes ``networks: "none"`` and ``"auto"``."""
TARGETS = {"active_s": 1.5, "ready_s": 6.0, "burst_ready_s": 30.0, "own_mib": 100.0}


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def parse_ready(text: str) -> dict | None:
    """The guest's ready line in console output, as {hostname, addresses, uptime}."""
    found = READY.search(text)
    if found is None:
        return None
    return {"hostname": found[1], "addresses": found[2], "uptime": float(found[3])}


# -- the server -----------------------------------------------------------------------


class ComputeCloud(Cloud):
    """The bench's tinystack (``bench/cloud.py``), with the compute calls it makes."""

    def __init__(self, data_dir: Path, port: int, env: dict):
        super().__init__(data_dir, port, env, clouds_yaml=data_dir.parent / "clouds.yaml",
                         headers={"OpenStack-API-Version": f"compute {MICROVERSION}"})

    # compute, the few calls the bench makes

    def image_id(self, name: str, timeout: float = 300) -> str:
        deadline = time.monotonic() + timeout
        while True:
            images = self.ok("GET", f"/image/v2/images?name={name}")["images"]
            active = [i for i in images if i["status"] == "active"]
            if active:
                return active[0]["id"]
            if time.monotonic() > deadline:
                raise ApiError(f"image {name} is not active after {timeout:g} s")
            time.sleep(0.5)

    def flavor(self, name: str) -> dict:
        for flavor in self.ok("GET", "/compute/v2.1/flavors/detail")["flavors"]:
            if name in (flavor["name"], flavor["id"]):
                return flavor
        raise ApiError(f"no flavor {name}")

    def network_ref(self, network: str, timeout: float = 60) -> str:
        """``none`` and ``auto`` as they are; a network's name or id as its id (the bootstrap
        networks appear a little after ``up`` returns, so this waits for them)."""
        if network in ("none", "auto"):
            return network
        return self.network_id(network, timeout)

    def unlimited_quota(self) -> None:
        """Lift the admin project's instance, core and RAM quota (a throwaway cloud)."""
        status, _, _ = self.call("PUT", f"/compute/v2.1/os-quota-sets/{self.project_id}",
                                 {"quota_set": {"instances": -1, "cores": -1, "ram": -1}})
        if status != 200:
            log(f"could not lift the quota (HTTP {status}); --burst above 10 may be refused")

    def create(self, body: dict) -> dict:
        return self.ok("POST", "/compute/v2.1/servers", {"server": body}, expect=(202,))

    def server(self, server_id: str) -> dict | None:
        status, _, data = self.call("GET", f"/compute/v2.1/servers/{server_id}")
        if status == 404:
            return None
        if status != 200:
            raise ApiError(f"GET server {server_id}: HTTP {status}")
        return data["server"]

    def servers(self, reservation_id: str) -> list[dict]:
        return self.ok("GET", f"/compute/v2.1/servers/detail?reservation_id={reservation_id}"
                       )["servers"]

    def console(self, server_id: str) -> str:
        status, _, data = self.call("POST", f"/compute/v2.1/servers/{server_id}/action",
                                    {"os-getConsoleOutput": {}})
        return data.get("output", "") if status == 200 and isinstance(data, dict) else ""

    def delete(self, server_id: str) -> None:
        self.ok("DELETE", f"/compute/v2.1/servers/{server_id}", expect=(204, 404))

    def instance_dir(self, server_id: str) -> Path:
        return self.data_dir / "compute" / "instances" / server_id


# -- memory of one qemu ---------------------------------------------------------------


def parse_smaps(text: str, guest_ram_kib: int, tb_kib: int | None = None) -> dict:
    """Split a qemu's resident memory (``/proc/PID/smaps``) into guest RAM and the rest.

    The guest's RAM block is the anonymous mapping of the RAM's size (QEMU may add a
    little for alignment); its resident pages are guest RAM the guest has touched
    and not given back. The TCG code cache is the anonymous executable mapping.
    Returns KiB figures: rss, guest_ram (resident), tcg_cache, file (binary, libraries),
    own = rss - guest_ram.
    """
    mappings, current = [], None
    for line in text.splitlines():
        head = line.split(None, 5)
        if head and re.match(r"^[0-9a-f]+-[0-9a-f]+$", head[0]):
            current = {"perms": head[1], "path": head[5] if len(head) > 5 else "",
                       "size": 0, "rss": 0}
            mappings.append(current)
        elif current is not None and line.startswith(("Size:", "Rss:")):
            current["size" if line.startswith("Size:") else "rss"] = int(line.split()[1])
    anonymous = [m for m in mappings if not m["path"]]
    ram = [m for m in anonymous if guest_ram_kib <= m["size"] <= guest_ram_kib + 8192]
    guest = min(ram, key=lambda m: m["size"]) if ram else None
    code = [m for m in anonymous if "x" in m["perms"] and m is not guest]
    if tb_kib:
        code = [m for m in code if m["size"] >= tb_kib // 2] or code
    rss = sum(m["rss"] for m in mappings)
    file_backed = sum(m["rss"] for m in mappings if m["path"].startswith("/"))
    guest_rss = guest["rss"] if guest else 0
    return {"rss": rss, "guest_ram": guest_rss, "tcg_cache": sum(m["rss"] for m in code),
            "file": file_backed, "own": rss - guest_rss, "found_ram_block": guest is not None}


def qemu_memory(pid: int, guest_ram_mib: int, tb_mib: int | None) -> dict:
    text = Path(f"/proc/{pid}/smaps").read_text()
    figures = parse_smaps(text, guest_ram_mib * 1024, tb_mib * 1024 if tb_mib else None)
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            figures["vmrss"] = int(line.split()[1])
    return {k: (v / 1024 if isinstance(v, int) and not isinstance(v, bool) else v)
            for k, v in figures.items()}


def tb_size_of(argv: list[str]) -> int | None:
    for word in argv:
        found = re.search(r"tb-size=(\d+)", word)
        if found:
            return int(found[1])
    return None


# -- the figures -----------------------------------------------------------------------


@dataclass
class Boot:
    id: str
    post_s: float = 0.0
    """Until the 202."""
    active_s: float = float("nan")
    ready_s: float = float("nan")
    uptime_s: float = float("nan")
    """The guest's own uptime at its ready line (kernel start to ready)."""
    cpu_s: float = float("nan")
    """CPU seconds its qemu had used when the ready line was seen."""
    addresses: str = ""
    """What the ready line says (``none`` without a network)."""
    deleted_s: float = float("nan")
    memory: dict = field(default_factory=dict)
    t0: float = 0.0
    """time.monotonic() at the POST (lines the trace up)."""
    active_at: float = 0.0


@dataclass
class Results:
    flavor: dict = field(default_factory=dict)
    network: str = "none"
    warmup: dict = field(default_factory=dict)
    boots: list[Boot] = field(default_factory=list)
    burst: dict = field(default_factory=dict)
    reference: dict = field(default_factory=dict)
    load: dict = field(default_factory=dict)
    trace: dict = field(default_factory=dict)
    argv: list[str] = field(default_factory=list)


def server_body(name: str, image: str, flavor: str, network: str, count: int = 1) -> dict:
    """``network``: ``none``, ``auto`` or a network id (``ComputeCloud.network_ref`` resolves
    names)."""
    networks = network if network in ("none", "auto") else [{"uuid": network}]
    body = {"name": name, "imageRef": image, "flavorRef": flavor, "networks": networks}
    if count > 1:
        body.update(min_count=count, max_count=count, return_reservation_id=True)
    return body


def wait_active(cloud: ComputeCloud, server_id: str, t0: float, poll: float,
                timeout: float) -> float:
    while True:
        server = cloud.server(server_id)
        if server is not None and server["status"] == "ACTIVE":
            return time.monotonic() - t0
        if server is None or server["status"] == "ERROR":
            fault = (server or {}).get("fault", {}).get("message", "gone")
            raise ApiError(f"server {server_id} failed to build: {fault}")
        if time.monotonic() - t0 > timeout:
            raise ApiError(f"server {server_id} not ACTIVE after {timeout:g} s")
        time.sleep(poll)


def wait_ready(cloud: ComputeCloud, server_id: str, t0: float, poll: float, timeout: float):
    while True:
        ready = parse_ready(cloud.console(server_id))
        if ready is not None:
            return time.monotonic() - t0, ready
        if time.monotonic() - t0 > timeout:
            raise ApiError(f"server {server_id}: no ready line after {timeout:g} s")
        time.sleep(poll)


def delete_and_wait(cloud: ComputeCloud, server_ids: list[str], timeout: float = 120) -> float:
    started = time.monotonic()
    for server_id in server_ids:
        cloud.delete(server_id)
    left = set(server_ids)
    while left:
        left = {s for s in left if cloud.server(s) is not None}
        if left and time.monotonic() - started > timeout:
            raise ApiError(f"servers {sorted(left)} still there after {timeout:g} s")
        if left:
            time.sleep(0.05)
    return time.monotonic() - started


def qemu_pid(cloud: ComputeCloud, server_id: str) -> int:
    return int((cloud.instance_dir(server_id) / "qemu.pid").read_text().split()[0])


def one_boot(cloud: ComputeCloud, args, image: str, flavor: dict, name: str,
             measure_memory: bool = True) -> tuple[Boot, list[str]]:
    t0 = time.monotonic()
    created = cloud.create(server_body(name, image, flavor["id"], args.network))
    boot = Boot(id=created["server"]["id"], post_s=time.monotonic() - t0, t0=t0)
    boot.active_s = wait_active(cloud, boot.id, t0, args.poll, args.timeout)
    boot.active_at = t0 + boot.active_s
    boot.ready_s, ready = wait_ready(cloud, boot.id, t0, args.console_poll, args.timeout)
    boot.cpu_s = cpu_seconds(qemu_pid(cloud, boot.id))
    boot.uptime_s, boot.addresses = ready["uptime"], ready["addresses"]
    argv = json.loads((cloud.instance_dir(boot.id) / "guest.json").read_text())["argv"]
    if measure_memory:
        time.sleep(args.settle)
        boot.memory = qemu_memory(qemu_pid(cloud, boot.id), flavor["ram"], tb_size_of(argv))
    boot.deleted_s = delete_and_wait(cloud, [boot.id])
    return boot, argv


def burst_ids(cloud: ComputeCloud, args, image: str, flavor: dict) -> list[str]:
    """Create ``--burst`` servers at once: one POST with min_count, or that many POSTs."""
    count = args.burst
    if args.burst_mode == "posts":
        with concurrent.futures.ThreadPoolExecutor(count) as pool:
            replies = pool.map(lambda n: cloud.create(server_body(
                f"bench-burst-{n}", image, flavor["id"], args.network)), range(count))
            return [reply["server"]["id"] for reply in replies]
    reply = cloud.create(server_body("bench-burst", image, flavor["id"], args.network, count))
    deadline = time.monotonic() + 60
    while len(ids := [s["id"] for s in cloud.servers(reply["reservation_id"])]) < count:
        if time.monotonic() > deadline:
            raise ApiError(f"burst: only {len(ids)} of {count} servers were created")
        time.sleep(0.05)
    return ids


def burst(cloud: ComputeCloud, args, image: str, flavor: dict) -> dict:
    count = args.burst
    t0 = time.monotonic()
    ids = burst_ids(cloud, args, image, flavor)
    posted = time.monotonic() - t0
    active: dict[str, float] = {}
    ready: dict[str, float] = {}
    cpu: dict[str, float] = {}
    longest_round = 0.0
    while len(ready) < count:
        round_started = time.monotonic()
        if round_started - t0 > args.timeout * 4:
            raise ApiError(f"burst: {len(ready)} of {count} ready after "
                           f"{time.monotonic() - t0:.0f} s")
        for server_id in [s for s in ids if s not in active]:
            server = cloud.server(server_id)
            if server is None or server["status"] == "ERROR":
                raise ApiError(f"burst: server {server_id} failed: "
                               f"{(server or {}).get('fault', 'gone')}")
            if server["status"] == "ACTIVE":
                active[server_id] = time.monotonic() - t0
        for server_id in [s for s in active if s not in ready]:
            found = parse_ready(cloud.console(server_id))
            if found is not None:
                ready[server_id] = time.monotonic() - t0
                with contextlib.suppress(OSError, ValueError):
                    cpu[server_id] = cpu_seconds(qemu_pid(cloud, server_id))
        longest_round = max(longest_round, time.monotonic() - round_started)
        time.sleep(args.burst_poll)
    memory = []
    for server_id in ids:
        with contextlib.suppress(OSError, ValueError):
            memory.append(qemu_memory(qemu_pid(cloud, server_id), flavor["ram"], None))
    deleted = delete_and_wait(cloud, ids, timeout=300)
    return {"count": count, "mode": args.burst_mode, "posted_s": posted, "t0": t0,
            "longest_round_s": longest_round + args.burst_poll,
            "active_by_id": active,
            "all_active_s": max(active.values()), "all_ready_s": max(ready.values()),
            "first_ready_s": min(ready.values()), "active_s": sorted(active.values()),
            "ready_s": sorted(ready.values()), "cpu_s": sorted(cpu.values()),
            "own_mib": [m["own"] for m in memory], "rss_mib": [m["rss"] for m in memory],
            "deleted_s": deleted}


# -- references: the guest's own qemu command line, started by hand ------------------------


def reference_argv(argv: list[str], workdir: Path, *, paused: bool, plain: bool) -> list[str]:
    """``argv`` (a server's qemu command line) rewritten to run from ``workdir``.

    Its root disk becomes ``workdir/disk``, the serial console a plain file
    ``workdir/console.log``, the pid file and QMP socket live in ``workdir``; other
    disks and NICs are left out. ``paused`` keeps ``-S``; ``plain`` drops the TCG
    cache size and free page reporting (QEMU's defaults).
    """
    out: list[str] = []
    dropped: set[str] = set()
    words = iter(argv)
    for word in words:
        if word == "-S":
            if paused:
                out.append(word)
            continue
        if word in ("-pidfile", "-name", "-chardev", "-drive", "-netdev", "-accel", "-device"):
            value = next(words)
            if word == "-pidfile":
                value = str(workdir / "qemu.pid")
            elif word == "-name":
                value = "guest=tinystack-bench-reference,debug-threads=on"
            elif word == "-chardev" and "id=console" in value:
                value = f"file,id=console,path={workdir / 'console.log'}"
            elif word == "-drive":
                if "id=root" not in value:
                    dropped.add(re.search(r"id=([^,]+)", value)[1])
                    continue
                value = f"file={workdir / 'disk'},format=qcow2,if=none,id=root"
            elif word == "-netdev":
                continue
            elif word == "-accel" and plain:
                value = re.sub(r",tb-size=\d+", "", value)
            elif word == "-device":
                if value.startswith("virtio-net") or any(f"drive={d}" in value
                                                         for d in dropped):
                    continue
                if plain:
                    value = value.replace(",free-page-reporting=on", "")
            out += [word, value]
            continue
        out.append(word)
    return out


def _qmp_answers(path: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(2)
            sock.connect(str(path))
            reader = sock.makefile("rb")
            reader.readline()
            sock.sendall(b'{"execute": "qmp_capabilities"}\n')
            return b"return" in reader.readline()
    except OSError:
        return False


def run_reference(argv: list[str], base_disk: Path, workdir: Path, *, paused: bool,
                  plain: bool, guest_ram_mib: int, settle: float, timeout: float) -> dict:
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base_disk), "-F",
                    "qcow2", str(workdir / "disk")], check=True, timeout=60)
    command = reference_argv(argv, workdir, paused=paused, plain=plain)
    t0 = time.monotonic()
    with open(workdir / "qemu.log", "wb") as qemu_log:
        proc = subprocess.Popen(command, cwd=workdir, stdin=subprocess.DEVNULL,
                                stdout=qemu_log, stderr=subprocess.STDOUT)
    result: dict = {"paused": paused, "plain": plain}
    try:
        while not _qmp_answers(workdir / "qmp.sock"):
            if proc.poll() is not None or time.monotonic() - t0 > timeout:
                raise ApiError(f"reference qemu did not answer: "
                               f"{(workdir / 'qemu.log').read_text()[-500:]}")
            time.sleep(0.005)
        result["qmp_s"] = time.monotonic() - t0
        if not paused:
            console = workdir / "console.log"
            while True:
                text = console.read_text(errors="replace") if console.exists() else ""
                found = parse_ready(text)
                if found is not None:
                    result["ready_s"] = time.monotonic() - t0
                    result["cpu_s"] = cpu_seconds(proc.pid)
                    result["uptime_s"] = found["uptime"]
                    break
                if proc.poll() is not None or time.monotonic() - t0 > timeout:
                    raise ApiError(f"reference guest printed no ready line:\n{text[-800:]}")
                time.sleep(0.02)
        time.sleep(settle)
        result["memory"] = qemu_memory(proc.pid, guest_ram_mib, tb_size_of(command))
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)
    return result


def references(cloud: ComputeCloud, argv: list[str], image: str, flavor: dict, args) -> dict:
    base = cloud.data_dir / "compute" / "images" / image
    common = {"base_disk": base, "guest_ram_mib": flavor["ram"], "settle": args.settle,
              "timeout": args.timeout}
    out = {"paused": run_reference(argv, workdir=WORK / "ref", paused=True, plain=False,
                                   **common)}
    tuned, plain = [], []
    for _ in range(args.reference_rounds):
        tuned.append(run_reference(argv, workdir=WORK / "ref", paused=False, plain=False,
                                   **common))
        plain.append(run_reference(argv, workdir=WORK / "ref", paused=False, plain=True,
                                   **common))
    out["tuned"], out["plain"] = tuned, plain
    return out


# -- the trace -------------------------------------------------------------------------

STEPS = [
    # (label, from, to): points are (fn, "t"|"end"), or "post"/"active" (the client's)
    ("POST -> API create starts", "post", ("api.create", "t")),
    ("API create (checks, rows) -> 202", ("api.create", "t"), ("api.create", "end")),
    ("202 -> scheduler starts", ("api.create", "end"), ("api.schedule", "t")),
    ("scheduler (pick, claim)", ("api.schedule", "t"), ("api.schedule", "end")),
    ("ports: allocate and bind (network API)", ("api.allocate", "t"), ("api.allocate", "end")),
    ("launch: ports recorded, spec made", ("api.launch", "t"), ("api.launch", "end")),
    ("scheduled -> spec cast (ports + launch)", ("api.schedule", "end"), ("api.send_spec", "t")),
    ("cast -> agent receives", ("api.send_spec", "t"), ("agent.receive", "t")),
    ("agent receives -> driver builds", ("agent.receive", "t"), ("drv.ensure_server", "t")),
    ("root disk (cache + qemu-img create)", ("drv.root_disk", "t"), ("drv.root_disk", "end")),
    ("ensure_server total", ("drv.ensure_server", "t"), ("drv.ensure_server", "end")),
    ("ensure -> power_on", ("drv.ensure_server", "end"), ("drv.power_on", "t")),
    ("power_on: files, argv -> exec", ("drv.power_on", "t"), ("drv.start", "t")),
    ("exec qemu -> QMP answers", ("drv.start", "t"), ("drv.wait_monitor", "end")),
    ("QMP -> cont done", ("drv.wait_monitor", "end"), ("drv.let_run", "end")),
    ("power_on total", ("drv.power_on", "t"), ("drv.power_on", "end")),
    ("running -> report cast", ("drv.power_on", "end"), ("agent.report", "t")),
    ("report -> conductor applied", ("agent.report", "t"), ("conductor.apply", "end")),
    ("applied -> client sees ACTIVE", ("conductor.apply", "end"), "active"),
]


def read_trace(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def breakdown(records: list[dict], boots: list[Boot]) -> dict:
    """Median seconds of each step of ``STEPS`` over ``boots``; and the calls per server."""
    by_server: dict[str, dict[tuple[str, str], float]] = {}
    for record in records:
        ids = record.get("ids") or ([record["id"]] if record.get("id") else [])
        for server_id in ids:
            for server in str(server_id).split(","):
                points = by_server.setdefault(server, {})
                # The first call of each function is the build's (later ones: delete...).
                points.setdefault((record["fn"], "t"), record["t"])
                points.setdefault((record["fn"], "end"), record.get("end", record["t"]))
    steps: dict[str, list[float]] = {label: [] for label, _, _ in STEPS}
    for boot in boots:
        points = dict(by_server.get(boot.id, {}))
        points["post"], points["active"] = boot.t0, boot.active_at
        for label, start, end in STEPS:
            if start in points and end in points:
                steps[label].append(points[end] - points[start])
    missing = next((r.get("missing") for r in records if r.get("fn") == "installed"), None)
    return {"median_ms": {k: median(v) * 1000 for k, v in steps.items()},
            "max_ms": {k: max(v) * 1000 if v else float("nan") for k, v in steps.items()},
            "missing": missing, "records": len(records)}


# -- the run ---------------------------------------------------------------------------


def run(args) -> Results:
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    env = clean_env(TINYSTACK_LOG_LEVEL=args.log_level)
    trace_file = WORK / "trace.jsonl"
    if args.trace:
        env["TINYSTACK_BENCH_TRACE"] = str(trace_file)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE / "tracehook"),
                                                          env.get("PYTHONPATH")]))
    cloud = ComputeCloud(WORK / "data", args.port or free_port(), env)
    results = Results(network=args.network)
    log(f"starting tinystack on port {cloud.port}")
    cloud.start()
    try:
        with LoadSampler() as load:
            results.load["at_start"] = os.getloadavg()[0]
            image = cloud.image_id("tiny")
            flavor = cloud.flavor(args.flavor)
            results.flavor = {k: flavor[k] for k in ("id", "name", "ram", "vcpus", "disk")}
            cloud.unlimited_quota()
            args.network = cloud.network_ref(args.network)
            log(f"warm-up server ({flavor['name']}, {flavor['ram']} MB, networks "
                f"{results.network!r}): fills the node's image cache")
            warm, argv = one_boot(cloud, args, image, flavor, "bench-warmup",
                                  measure_memory=False)
            results.warmup = {"active_s": warm.active_s, "ready_s": warm.ready_s}
            results.argv = argv
            log(f"warm-up: ACTIVE {warm.active_s:.2f} s, ready {warm.ready_s:.2f} s")
            for n in range(args.count):
                boot, _ = one_boot(cloud, args, image, flavor, f"bench-{n:02d}")
                results.boots.append(boot)
                log(f"server {n + 1}/{args.count}: ACTIVE {boot.active_s:.2f} s, ready "
                    f"{boot.ready_s:.2f} s (guest uptime {boot.uptime_s:.2f} s, addresses "
                    f"{boot.addresses}), qemu RSS "
                    f"{boot.memory['rss']:.0f} MiB, own {boot.memory['own']:.0f} MiB, "
                    f"deleted in {boot.deleted_s:.2f} s")
            if args.reference_rounds:
                log("references: the same qemu command line, started by hand")
                results.reference = references(cloud, argv, image, flavor, args)
            if args.burst:
                log(f"{args.burst} servers at once ({args.burst_mode})")
                results.burst = burst(cloud, args, image, flavor)
                log(f"burst: all ACTIVE {results.burst['all_active_s']:.1f} s, all ready "
                    f"{results.burst['all_ready_s']:.1f} s")
        results.load.update(samples=load.samples, at_end=os.getloadavg()[0])
        if args.trace:
            records = read_trace(trace_file)
            results.trace = breakdown(records, results.boots)
            if results.burst:
                b = results.burst
                results.trace["burst"] = breakdown(records, [
                    Boot(id=i, t0=b["t0"], active_at=b["t0"] + s)
                    for i, s in b["active_by_id"].items()])
    finally:
        cloud.stop()
        if not args.keep:
            shutil.rmtree(WORK, ignore_errors=True)
    return results


def verdict(value: float, target: float) -> str:
    return "met" if value < target else "MISSED"


def table(r: Results) -> str:
    boots = r.boots
    active = [b.active_s for b in boots]
    ready = [b.ready_s for b in boots]
    own = [b.memory["own"] for b in boots]
    rss = [b.memory["rss"] for b in boots]
    guest = [b.memory["guest_ram"] for b in boots]
    ref = r.reference
    rows = [
        ("1 POST -> ACTIVE, p50 (max)", f"{median(active):.2f} s ({max(active):.2f})",
         f"< {TARGETS['active_s']} s", verdict(median(active), TARGETS["active_s"])),
        ("2 POST -> guest ready line, p50 (max)", f"{median(ready):.2f} s ({max(ready):.2f})",
         f"< {TARGETS['ready_s']:g} s", verdict(median(ready), TARGETS["ready_s"])),
    ]
    if r.burst:
        b = r.burst
        rows += [(f"3 {b['count']} at once ({b['mode']}) -> all ready", f"{b['all_ready_s']:.1f} s",
                  f"< {TARGETS['burst_ready_s']:g} s",
                  verdict(b["all_ready_s"], TARGETS["burst_ready_s"]))]
    rows += [("4 qemu's own memory (RSS - guest RAM resident), p50 (max)",
              f"{median(own):.0f} MiB ({max(own):.0f})", f"< {TARGETS['own_mib']:g} MiB",
              verdict(median(own), TARGETS["own_mib"]))]
    width = max(len(row[0]) for row in rows)
    lines = [f"compute bench: {len(boots)} servers one after another, flavor "
             f"{r.flavor['name']} ({r.flavor['ram']} MB, {r.flavor['vcpus']} vCPU), image tiny, "
             f"networks {r.network!r}", "",
             f"{'figure':{width}}  {'measured':>20}  {'target':>10}"]
    lines += [f"{a:{width}}  {b:>20}  {c:>10}  {d}" for a, b, c, d in rows]
    lines += ["", "details"]
    details = [
        ("warm-up server (node image cache cold): ACTIVE / ready",
         f"{r.warmup['active_s']:.2f} / {r.warmup['ready_s']:.2f} s"),
        ("POST -> 202, p50", f"{median([b.post_s for b in boots]) * 1000:.0f} ms"),
        ("ACTIVE -> ready line, p50", f"{median([b.ready_s - b.active_s for b in boots]):.2f} s"),
        ("guest uptime at its ready line, p50", f"{median([b.uptime_s for b in boots]):.2f} s"),
        ("qemu CPU time at the ready line, p50", f"{median([b.cpu_s for b in boots]):.2f} s"),
        ("DELETE -> 404, p50", f"{median([b.deleted_s for b in boots]):.2f} s"),
        ("qemu RSS, p50", f"{median(rss):.0f} MiB"),
        ("  guest RAM resident (flavor RAM)", f"{median(guest):.0f} MiB ({r.flavor['ram']})"),
        ("  TCG code cache", f"{median([b.memory['tcg_cache'] for b in boots]):.0f} MiB"),
        ("  binary and libraries (file-backed, shared)",
         f"{median([b.memory['file'] for b in boots]):.0f} MiB"),
        ("  RSS - flavor RAM (lower bound of own)", f"{median(rss) - r.flavor['ram']:.0f} MiB"),
    ]
    if r.burst:
        b = r.burst
        details += [(f"{b['count']} at once -> all ACTIVE / first ready",
                     f"{b['all_active_s']:.1f} / {b['first_ready_s']:.1f} s"),
                    (f"{b['count']} at once: longest round of polls (the resolution)",
                     f"{b.get('longest_round_s', float('nan')):.2f} s"),
                    (f"{b['count']} at once: qemu CPU time at ready line, p50",
                     f"{median(b['cpu_s']):.2f} s"),
                    (f"{b['count']} at once: qemu own memory p50 / RSS p50",
                     f"{median(b['own_mib']):.0f} / {median(b['rss_mib']):.0f} MiB")]
    if ref:
        paused, tuned, plain = ref["paused"], ref["tuned"], ref["plain"]
        details += [
            ("ref: same qemu argv paused, exec -> QMP answers", f"{paused['qmp_s'] * 1000:.0f} ms"),
            ("ref: same qemu argv paused, RSS", f"{paused['memory']['rss']:.0f} MiB"),
            ("ref: same argv by hand, exec -> ready line, p50",
             f"{median([t['ready_s'] for t in tuned]):.2f} s"),
            ("ref: same argv by hand, qemu CPU time at ready line, p50",
             f"{median([t['cpu_s'] for t in tuned]):.2f} s"),
            ("ref: same argv by hand, RSS / own",
             f"{median([t['memory']['rss'] for t in tuned]):.0f} / "
             f"{median([t['memory']['own'] for t in tuned]):.0f} MiB"),
            ("ref: plain qemu (default TCG cache, no page reporting), RSS / own",
             f"{median([t['memory']['rss'] for t in plain]):.0f} / "
             f"{median([t['memory']['own'] for t in plain]):.0f} MiB"),
            ("ref: plain qemu, exec -> ready line, p50",
             f"{median([t['ready_s'] for t in plain]):.2f} s"),
        ]
    dwidth = max(len(a) for a, _ in details)
    lines += [f"  {a:{dwidth}}  {b}" for a, b in details]
    samples = r.load.get("samples") or [r.load.get("at_start", 0.0)]
    lines += ["", f"load average (1 min): {r.load.get('at_start', 0):.2f} at start, "
              f"{min(samples):.2f}-{max(samples):.2f} during, {r.load.get('at_end', 0):.2f} "
              f"at end (2 cores; the machine is shared)"]
    if r.trace:
        lines += ["", f"where POST -> ACTIVE goes (median of {len(boots)} servers, ms; "
                      f"--trace)"]
        twidth = max(len(k) for k in r.trace["median_ms"])
        def step(label: str, value: float, most: float) -> str:
            if math.isnan(value):
                return f"  {label:{twidth}}  {'-':>8}  (not on this path)"
            return f"  {label:{twidth}}  {value:8.1f}  (max {most:.1f})"

        for label, value in r.trace["median_ms"].items():
            lines.append(step(label, value, r.trace["max_ms"][label]))
        burst_trace = r.trace.get("burst")
        if burst_trace:
            lines += ["", f"the same for the {r.burst['count']} at once (median, ms; each "
                          f"step counts from that server's POST; the API builds them in turn)"]
            for label, value in burst_trace["median_ms"].items():
                lines.append(step(label, value, burst_trace["max_ms"][label]))
        if r.trace.get("missing"):
            lines.append(f"  not traced (moved?): {', '.join(r.trace['missing'])}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=10, help="servers one after another")
    parser.add_argument("--burst", type=int, default=10, help="servers in one POST; 0 skips")
    parser.add_argument("--burst-mode", choices=("min_count", "posts"), default="min_count",
                        help="one POST with min_count, or that many POSTs at once")
    parser.add_argument("--flavor", default="m1.nano", help="name or id (m1.nano, m1.tiny)")
    parser.add_argument("--network", default="none",
                        help='the "networks" of every server: none, auto (Nova\'s automatic '
                             'allocation) or a network name or id, e.g. private')
    parser.add_argument("--settle", type=float, default=3.0,
                        help="seconds after the ready line before memory is read")
    parser.add_argument("--poll", type=float, default=0.05, help="seconds between GETs")
    parser.add_argument("--console-poll", type=float, default=0.1,
                        help="seconds between console reads")
    parser.add_argument("--burst-poll", type=float, default=0.25,
                        help="seconds between rounds of polls during the burst")
    parser.add_argument("--timeout", type=float, default=120.0, help="per server, seconds")
    parser.add_argument("--reference-rounds", type=int, default=3,
                        help="boots of each by-hand reference; 0 skips them")
    parser.add_argument("--trace", action="store_true",
                        help="timestamp the build path inside tinystack (bench/compute/tracehook)")
    parser.add_argument("--log-level", default="warning", help="tinystack's log level")
    parser.add_argument("--port", type=int, default=0, help="default: a free port")
    parser.add_argument("--keep", action="store_true", help="keep bench/.ref/compute afterwards")
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    args = parser.parse_args()
    if args.count < 1:
        parser.error("--count must be at least 1")
    if shutil.which("qemu-system-x86_64") is None:
        sys.exit("compute bench: qemu-system-x86_64 is not installed")
    warn_if_busy()
    try:
        results = run(args)
    except ApiError as exc:
        sys.exit(f"compute bench: {exc}")
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(asdict(results), indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
