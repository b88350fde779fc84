#!/usr/bin/env python3
"""The network bench through the API: from binding a port to ACTIVE, as compute sees it.

    sudo .venv/bin/python bench/network/port_api.py             # 10 ports each way, about 20 s
    .venv/bin/python bench/network/port_api.py --ports 20 --json out.json

Starts its own tinystack (``bench/cloud.py``: ``tinystack up -d`` on a fresh
data dir under ``bench/.ref/network-api`` and a free loopback port, no
default guest image), logs in as admin, waits for the bootstrap network
``private`` and for this node's L2 and DHCP agents (``GET /v2.0/agents``;
their ``host`` is the node's name), then, for ``--ports`` ports each:

1. **PUT binding -> ACTIVE** (the tap is there first): ``POST /v2.0/ports``
   on ``private``, unbound; the tap its binding will name
   (``tinystack.network.messages.tap_name(id)``) is made and set up (``ip
   tuntap add ... mode tap``, ``ip link set ... up``: the bench stands in for
   compute); then the clock starts, ``PUT /v2.0/ports/{id}`` sets
   ``binding:host_id`` to the node, and the port is polled until its
   ``status`` is ``ACTIVE``. A port cannot be created bound with its tap
   already there: the tap's name comes from the port's id.
2. **POST bound, then tap -> ACTIVE** (compute's own order: the API binds
   the port, compute makes the tap before qemu starts): ``POST /v2.0/ports``
   with ``binding:host_id`` set, the tap made as soon as the id is known,
   the clock running from the POST until ACTIVE, and until the port's DHCP
   host entry is in dnsmasq's ``--dhcp-hostsdir`` too (the DHCP agent's
   files under the data dir), whichever comes later: the port fully wired.

ACTIVE means both provisioning blocks are closed: the L2 agent reported the
tap on the network's bridge with its nft rules in place, and the DHCP agent
reported a revision of the network's hosts that has the port (as Neutron
does); the DHCP entry is also looked for on disk, as a check. The DHCP spec
lists unbound ports too, so the entry comes with the create, not the bind:
in (1) the bench waits for it before the tap and the PUT (and reports the
POST -> entry time), so the figure is the bind alone; in (2) the two run
at once, as they do when compute boots a server. The ports are made one
after another and stay until the end, when they and their taps are removed.
Needs root and iproute2 (and what tinystack's network agents need: nftables,
dnsmasq). The 1-minute load average is sampled during the run, and the CPU
time tinystack (with the children it waited for: nft, ip) spent over all
the measured ports, a figure the load moves much less than wall times. See
bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCH_DIR = HERE.parent
sys.path.insert(0, str(BENCH_DIR))

from cloud import (ApiError, Cloud, LoadSampler, clean_env, free_port, log,  # noqa: E402
                   warn_if_busy)

from tinystack.network.messages import tap_name  # noqa: E402

WORK = BENCH_DIR / ".ref" / "network-api"
TARGET_MS = 200
L2_AGENT, DHCP_AGENT = "Linux bridge agent", "DHCP agent"


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


def make_tap(name: str) -> None:
    ip("tuntap", "add", "dev", name, "mode", "tap")
    ip("link", "set", name, "up")


def remove_tap(name: str) -> None:
    subprocess.run(["ip", "link", "del", name], capture_output=True, timeout=30)


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a process and of the children it has waited for."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def dhcp_entry(data_dir: Path, mac: str) -> bool:
    """Whether a DHCP agent's host file (``network/dhcp/*/hosts/*``) names this MAC."""
    for path in data_dir.glob("network/dhcp/*/hosts/*"):
        try:
            if path.read_text().lower().startswith(mac.lower()):
                return True
        except OSError:
            continue
    return False


class Bench:
    def __init__(self, cloud: Cloud, network_id: str, host: str, poll: float, timeout: float):
        self.cloud, self.network_id, self.host = cloud, network_id, host
        self.poll, self.timeout = poll, timeout
        self.ports: list[str] = []
        self.taps: list[str] = []
        self.get_ms: list[float] = []

    def create(self, name: str, host: str = "") -> tuple[dict, float]:
        """POST a port on the network (bound to ``host`` if given); it and time.monotonic()
        just before the POST."""
        body = {"network_id": self.network_id, "name": name}
        if host:
            body["binding:host_id"] = host
        t0 = time.monotonic()
        port = self.cloud.ok("POST", "/network/v2.0/ports", {"port": body},
                             expect=(201,))["port"]
        self.ports.append(port["id"])
        return port, t0

    def tap(self, port_id: str) -> str:
        name = tap_name(port_id)
        self.taps.append(name)
        make_tap(name)
        return name

    def wait_dhcp(self, mac: str, t0: float) -> float:
        """Seconds from ``t0`` until the DHCP host entry for ``mac`` is on disk (nan if not
        within 5 s)."""
        while not dhcp_entry(self.cloud.data_dir, mac):
            if time.monotonic() - t0 > 5:
                return float("nan")
            time.sleep(0.005)
        return time.monotonic() - t0

    def wait_active(self, port_id: str, t0: float, mac: str = "") -> tuple[float, float]:
        """Seconds from ``t0`` until the port is ACTIVE; with ``mac``, also until its DHCP
        host entry is on disk (looked for at every poll, and after ACTIVE until it is)."""
        active = dhcp = float("nan")
        while active != active or (mac and dhcp != dhcp):
            started = time.monotonic()
            if mac and dhcp != dhcp and dhcp_entry(self.cloud.data_dir, mac):
                dhcp = time.monotonic() - t0
            if active != active:
                port = self.cloud.ok("GET", f"/network/v2.0/ports/{port_id}")["port"]
                self.get_ms.append((time.monotonic() - started) * 1000)
                if port["status"] == "ACTIVE":
                    active = time.monotonic() - t0
            if started - t0 > self.timeout:
                raise ApiError(f"port {port_id}: ACTIVE {active:.2f} s, DHCP entry "
                               f"{dhcp:.2f} s, after {self.timeout:g} s")
            time.sleep(self.poll)
        return active, dhcp

    def put_variant(self, name: str) -> dict:
        """Unbound port, its tap, then the clock: PUT binding:host_id until ACTIVE."""
        port, posted = self.create(name)
        dhcp_s = self.wait_dhcp(port["mac_address"], posted)
        tap = self.tap(port["id"])
        time.sleep(0.1)   # the agent sees a device of no port of its own: let that pass
        t0 = time.monotonic()
        bound = self.cloud.ok("PUT", f"/network/v2.0/ports/{port['id']}",
                              {"port": {"binding:host_id": self.host}})["port"]
        put_s = time.monotonic() - t0
        named = bound.get("binding:vif_details", {}).get("tap_name")
        if named != tap:
            raise ApiError(f"port {port['id']} names tap {named!r}, the bench made {tap!r}")
        active_s, _ = self.wait_active(port["id"], t0)
        return {"id": port["id"], "put_ms": put_s * 1000, "active_ms": active_s * 1000,
                "dhcp_ms": dhcp_s * 1000,
                "dhcp_at_active": dhcp_entry(self.cloud.data_dir, port["mac_address"])}

    def post_variant(self, name: str) -> dict:
        """POST bound to the node, the tap as soon as the id is known, until ACTIVE."""
        port, t0 = self.create(name, host=self.host)
        post_s = time.monotonic() - t0
        self.tap(port["id"])
        active_s, dhcp_s = self.wait_active(port["id"], t0, port["mac_address"])
        return {"id": port["id"], "post_ms": post_s * 1000, "active_ms": active_s * 1000,
                "dhcp_ms": dhcp_s * 1000, "wired_ms": max(active_s, dhcp_s) * 1000,
                "dhcp_at_active": dhcp_s <= active_s}

    def clean(self) -> None:
        for port_id in self.ports:
            try:
                self.cloud.call("DELETE", f"/network/v2.0/ports/{port_id}")
            except OSError:
                pass
        for name in self.taps:
            remove_tap(name)
        self.ports.clear()
        self.taps.clear()


def agents_host(cloud: Cloud, timeout: float = 120) -> str:
    """The host of this node's L2 agent, once it and a DHCP agent on it are alive."""
    deadline = time.monotonic() + timeout
    while True:
        agents = cloud.ok("GET", "/network/v2.0/agents")["agents"]
        alive = {(a["agent_type"], a["host"]) for a in agents if a.get("alive")}
        for agent_type, host in sorted(alive):
            if agent_type == L2_AGENT and (DHCP_AGENT, host) in alive:
                return host
        if time.monotonic() > deadline:
            raise ApiError(f"no live L2 and DHCP agents on one host after {timeout:g} s: "
                           f"{sorted(alive)}")
        time.sleep(0.5)


def run(args) -> dict:
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    env = clean_env(TINYSTACK_IMAGE__DEFAULT_IMAGE="false", TINYSTACK_LOG_LEVEL="warning")
    cloud = Cloud(WORK / "data", args.port or free_port(), env)
    log(f"starting tinystack on port {cloud.port}")
    cloud.start()
    results: dict = {"load": {"at_start": os.getloadavg()[0]}}
    bench = None
    try:
        network_id = cloud.network_id(args.network, timeout=120)
        host = agents_host(cloud)
        log(f"network {args.network} ({network_id}), agents on host {host!r}")
        bench = Bench(cloud, network_id, host, args.poll, args.timeout)
        with LoadSampler() as load:
            warm = bench.put_variant("bench-warmup")
            results["warmup_ms"] = warm["active_ms"]
            log(f"warm-up port: ACTIVE {warm['active_ms']:.0f} ms after the PUT")
            put, post = [], []
            cpu_before = cpu_seconds(cloud.pid)
            for n in range(args.ports):
                put.append(bench.put_variant(f"bench-put-{n:02d}"))
                post.append(bench.post_variant(f"bench-post-{n:02d}"))
                log(f"port {n + 1}/{args.ports}: PUT -> ACTIVE {put[-1]['active_ms']:.0f} ms; "
                    f"POST bound -> ACTIVE {post[-1]['active_ms']:.0f} ms, -> DHCP entry "
                    f"{post[-1]['dhcp_ms']:.0f} ms")
            time.sleep(1.0)   # the last ports' recasts finish
            results["cpu_ms_per_port"] = ((cpu_seconds(cloud.pid) - cpu_before) * 1000
                                          / (2 * args.ports))
        results.update(host=host, put=put, post=post, get_ms=bench.get_ms,
                       load={**results["load"], "samples": load.samples,
                             "at_end": os.getloadavg()[0]})
    finally:
        if bench is not None:
            bench.clean()
        cloud.stop()
        if not args.keep:
            shutil.rmtree(WORK, ignore_errors=True)
    return results


def table(r: dict) -> str:
    def row(label: str, values: list[float], target: str = "") -> str:
        if target:
            target += " met" if statistics.median(values) < TARGET_MS else " MISSED"
        return (f"| {label} | ms | {statistics.median(values):.0f} | {max(values):.0f} | "
                f"{target} |")

    put, post = r["put"], r["post"]
    rows = [
        row("PUT binding:host_id -> ACTIVE (tap made before)", [p["active_ms"] for p in put],
            f"< {TARGET_MS}"),
        row("of which: the PUT's answer", [p["put_ms"] for p in put]),
        row("POST bound, then tap -> ACTIVE (compute's order)",
            [p["active_ms"] for p in post], f"< {TARGET_MS}"),
        row("POST bound, then tap -> ACTIVE and DHCP entry", [p["wired_ms"] for p in post],
            f"< {TARGET_MS}"),
        row("of which: the POST's answer", [p["post_ms"] for p in post]),
        row("POST (unbound) -> DHCP host entry on disk", [p["dhcp_ms"] for p in put]),
        row("GET port (the poll's own time)", r["get_ms"]),
    ]
    early = sum(not p["dhcp_at_active"] for p in post)
    samples = r["load"].get("samples") or [r["load"]["at_start"]]
    lines = ["| figure | unit | median | max | target |", "|---|---|---:|---:|---|", *rows, "",
             f"{len(put)} ports each way on network private, host {r['host']!r}; the warm-up "
             f"port (not counted): {r['warmup_ms']:.0f} ms. POST bound: ACTIVE seen before "
             f"the DHCP entry for {early}/{len(post)} ports (ACTIVE waits for the DHCP "
             f"agent's report; the entry is looked for on disk before each GET, so one "
             f"that lands during the GET counts here).",
             f"tinystack's CPU per port (with nft and ip), both ways: "
             f"{r.get('cpu_ms_per_port', float('nan')):.0f} ms",
             f"load average (1 min): {r['load']['at_start']:.2f} at start, "
             f"{min(samples):.2f}-{max(samples):.2f} during, {r['load']['at_end']:.2f} at end "
             f"({os.cpu_count()} cores; the machine is shared)"]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ports", type=int, default=10, help="ports measured each way")
    parser.add_argument("--network", default="private", help="name or id")
    parser.add_argument("--poll", type=float, default=0.005, help="seconds between GETs")
    parser.add_argument("--timeout", type=float, default=30.0, help="per port, seconds")
    parser.add_argument("--port", type=int, default=0, help="API port; default: a free one")
    parser.add_argument("--keep", action="store_true",
                        help="keep bench/.ref/network-api afterwards")
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    args = parser.parse_args()
    if args.ports < 1:
        parser.error("--ports must be at least 1")
    if os.geteuid() != 0:
        sys.exit("network API bench: needs root (taps, and tinystack's network agents)")
    if shutil.which("ip") is None:
        sys.exit("network API bench: iproute2's ip is not installed")
    warn_if_busy()
    try:
        results = run(args)
    except ApiError as exc:
        sys.exit(f"network API bench: {exc}")
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
