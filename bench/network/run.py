"""The network data-plane benchmark: how fast a port is wired, and what a packet costs.

Runs the real L2, DHCP and L3 agents of one node in this process on the
in-process bus (the lab of ``tests/e2e/netlab.py``: no API, specs built by
hand), with guests as network namespaces on veths named like taps, and
measures:

1. **port -> packets**: a new guest's tap exists (compute makes it before
   qemu starts); the clock starts when its ``PortSpec`` and the network's new
   ``DhcpSpec`` are cast, and stops (a) when the L2 agent reports the port
   ACTIVE and the DHCP agent reports the revision (wired), and (b) when an
   ICMP echo from a guest already on the network first comes back (packets
   flow; echoes go out every 5 ms; both guests know each other's MAC, so
   ARP's one-second retry does not hide the figure). Then the time for the new guest's
   ``udhcpc`` to get its lease. Repeated ``--ports`` times; median and max.
2. **100 ports in one go**: 100 taps exist; 100 ``PortSpec`` and one
   ``DhcpSpec`` with 100 hosts are cast at once; time until all are ACTIVE
   and the DHCP revision is served, then until all 100 answer an echo.
3. **ping latency**: guest to guest across the bridge (and its nft rules)
   against the host's loopback, in the same run (raw ICMP, ``--echoes``
   each); median and 99th percentile.

Needs root, iproute2, nftables, dnsmasq and busybox; uses only
10.231.0.0/16 inside namespaces and bridges it makes, and removes them all
at the end. ``.venv/bin/python bench/network/run.py [--json FILE] [--markdown]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO / "tests" / "e2e")]

from icmp import EchoSocket  # noqa: E402  (tests/e2e/icmp.py)
from netlab import Guest, Lab, require_root  # noqa: E402

CIDR = "10.231.8.0/22"
TARGET_WIRED_MS = 200


def ip_of(index: int) -> str:
    """Addresses 10.231.8.10 and up in the /22."""
    n = 10 + index
    return f"10.231.{8 + n // 256}.{n % 256}"


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


class Bench:
    def __init__(self, lab: Lab):
        self.lab = lab
        self.network = lab.network()
        self.dhcp_port = lab.port(self.network, "10.231.8.2", CIDR, owner="network:dhcp",
                                  rules=[])
        self.ports = []
        self.spec = None
        self.index = 0

    def next_port(self):
        port = self.lab.port(self.network, ip_of(self.index), CIDR)
        self.index += 1
        return port

    async def publish(self, new_ports: list) -> int:
        """Cast the new ports and the network's DHCP spec; the DHCP revision."""
        self.ports += new_ports
        self.spec = self.lab.dhcp(self.network, CIDR, self.dhcp_port, self.ports)
        await asyncio.gather(*(self.lab.send_port(p) for p in new_ports),
                             self.lab.send_dhcp(self.spec))
        return self.spec.revision

    async def wired(self, ports: list, revision: int) -> None:
        for port in ports:
            await self.lab.wait_port(port.id, revision=port.revision, timeout=60)
        await self.lab.wait_dhcp(self.network.id, revision, timeout=60)

    async def start(self) -> Guest:
        """The network, its DHCP server and a first guest to ping from."""
        first = self.next_port()
        revision = await self.publish([first])
        guest = await Guest(self.lab, "p0", first).create()
        await self.wired([first], revision)
        await guest.set_address(f"{ip_of(0)}/22")
        return guest


async def port_to_packets(bench: Bench, peer: Guest, count: int) -> dict:
    echo = EchoSocket(peer.ns)
    wired, flowing, leases = [], [], []
    try:
        for n in range(count):
            port = bench.next_port()
            guest = await Guest(bench.lab, f"n{n}", port).create()
            await guest.set_address(f"{port.fixed_ips[0]['ip_address']}/22")
            # Neighbours known both ways: the figure is our wiring, not ARP's 1 s retry.
            await peer.run("ip", "neigh", "replace", port.fixed_ips[0]["ip_address"], "lladdr",
                           port.mac, "dev", "eth0", "nud", "permanent")
            await guest.run("ip", "neigh", "replace", peer.address, "lladdr", peer.port.mac,
                            "dev", "eth0", "nud", "permanent")
            start = time.perf_counter()
            revision = await bench.publish([port])
            ping = asyncio.ensure_future(echo.until_reply(port.fixed_ips[0]["ip_address"]))
            await bench.wired([port], revision)
            wired.append(time.perf_counter() - start)
            first = await ping
            flowing.append(first if first is not None else float("nan"))
            await guest.run("ip", "addr", "flush", "dev", "eth0")
            t = time.perf_counter()
            await guest.dhcp(tries=3)
            leases.append(time.perf_counter() - t)
            await guest.delete()
    finally:
        echo.close()
    return {"wired_ms": [w * 1000 for w in wired], "flowing_ms": [f * 1000 for f in flowing],
            "lease_ms": [x * 1000 for x in leases]}


async def hundred_at_once(bench: Bench, peer: Guest, count: int) -> dict:
    ports = [bench.next_port() for _ in range(count)]
    guests = []
    for n, port in enumerate(ports):
        guest = await Guest(bench.lab, f"h{n}", port).create()
        await guest.set_address(f"{port.fixed_ips[0]['ip_address']}/22")
        guests.append(guest)
    rewrites = bench.lab.l2.filter_rewrites
    start = time.perf_counter()
    revision = await bench.publish(ports)
    await bench.wired(ports, revision)
    wired = time.perf_counter() - start
    echo = EchoSocket(peer.ns)
    try:
        answers = await asyncio.gather(*(echo.until_reply(p.fixed_ips[0]["ip_address"],
                                                          every=0.02, timeout=20)
                                         for p in ports))
    finally:
        echo.close()
    flowing = time.perf_counter() - start
    for guest in guests:
        await guest.delete()
    return {"ports": count, "wired_s": wired, "all_answer_s": flowing,
            "answered": sum(a is not None for a in answers),
            "filter_rewrites": bench.lab.l2.filter_rewrites - rewrites}


async def latency(bench: Bench, peer: Guest, echoes: int) -> dict:
    port = bench.next_port()
    revision = await bench.publish([port])
    other = await Guest(bench.lab, "lat", port).create()
    await other.set_address(f"{port.fixed_ips[0]['ip_address']}/22")
    await bench.wired([port], revision)
    results = {}
    for name, ns, address in (("guest_to_guest", peer.ns, port.fixed_ips[0]["ip_address"]),
                              ("host_loopback", None, "127.0.0.1")):
        echo = EchoSocket(ns)
        try:
            await echo.until_reply(address)
            rtts = []
            for _ in range(echoes):
                rtt = await echo.rtt(address)
                if rtt is not None:
                    rtts.append(rtt * 1e6)
        finally:
            echo.close()
        results[name] = {"p50_us": statistics.median(rtts), "p99_us": quantile(rtts, 0.99),
                         "lost": echoes - len(rtts)}
    await other.delete()
    return results


async def main(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="ts-netbench-") as tmp:
        lab = Lab(Path(tmp))
        try:
            await lab.start()
            bench = Bench(lab)
            peer = await bench.start()
            results = {"port_to_packets": await port_to_packets(bench, peer, args.ports),
                       "at_once": await hundred_at_once(bench, peer, args.at_once),
                       "latency": await latency(bench, peer, args.echoes)}
        finally:
            await lab.close()
    return results


def table(results: dict) -> str:
    p = results["port_to_packets"]
    h = results["at_once"]
    lat = results["latency"]
    rows = [
        ("port spec -> wired (ACTIVE + DHCP served)", "ms",
         f"{statistics.median(p['wired_ms']):.0f}", f"{max(p['wired_ms']):.0f}",
         f"< {TARGET_WIRED_MS}"),
        ("port spec -> first echo answered", "ms", f"{statistics.median(p['flowing_ms']):.0f}",
         f"{max(p['flowing_ms']):.0f}", ""),
        ("new guest's DHCP lease (udhcpc)", "ms", f"{statistics.median(p['lease_ms']):.0f}",
         f"{max(p['lease_ms']):.0f}", ""),
        (f"{h['ports']} ports at once -> all wired", "s", f"{h['wired_s']:.2f}", "",
         f"< {h['ports'] * TARGET_WIRED_MS / 1000:.0f}"),
        (f"{h['ports']} ports at once -> all answer", "s", f"{h['all_answer_s']:.2f}",
         f"{h['answered']}/{h['ports']} answered", ""),
        ("ping guest -> guest (bridge + nft)", "us", f"{lat['guest_to_guest']['p50_us']:.0f}",
         f"{lat['guest_to_guest']['p99_us']:.0f}", "reference below"),
        ("ping host loopback (reference)", "us", f"{lat['host_loopback']['p50_us']:.0f}",
         f"{lat['host_loopback']['p99_us']:.0f}", ""),
    ]
    lines = ["| figure | unit | median | max / p99 | target |", "|---|---|---:|---:|---|"]
    lines += [f"| {a} | {b} | {c} | {d} | {e} |" for a, b, c, d, e in rows]
    lines.append(f"\n{h['filter_rewrites']} nft rewrites for the {h['ports']} ports; "
                 f"{len(p['wired_ms'])} single ports measured.")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ports", type=int, default=10, help="single ports measured")
    parser.add_argument("--at-once", type=int, default=100, help="ports wired in one go")
    parser.add_argument("--echoes", type=int, default=500, help="echoes per latency figure")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--markdown", action="store_true", help="print only the table")
    parsed = parser.parse_args()
    why = require_root()
    if why:
        sys.exit(f"network bench: {why}")
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("pyroute2").setLevel(logging.ERROR)
    out = asyncio.run(main(parsed))
    if parsed.json:
        parsed.json.write_text(json.dumps(out, indent=2))
    print(table(out))
