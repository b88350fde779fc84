"""The DHCP driver on Linux: one dnsmasq per network, in namespace ``qdhcp-<network_id>``.

For each network: the namespace; a veth pair whose host end is the DHCP
port's device (``tap_name(port_id)``, on the network's bridge) and whose other
end ``ns-<port>`` carries the port's MAC and addresses (and 169.254.169.254
when metadata is served here); and dnsmasq, a child of the agent started
with ``ip netns exec`` and ``--keep-in-foreground``. Each port is one file in
``--dhcp-hostsdir`` (its MAC, fixed address and host name) and one in
``--hostsdir`` (its DNS name), written to a temporary name and renamed, so
dnsmasq picks additions up by itself: dnsmasq 2.90 may crash on SIGHUP, so it
never gets one. dnsmasq cannot forget a host without a restart, so a removed
or changed host, or changed subnets and options (its command line), restart
it (tens of milliseconds). Per subnet: a static range, router, DNS servers,
domain, MTU (option 26) and classless static routes (option 121) with the
host routes, 169.254.169.254/32 via the DHCP port when metadata is on, and
the default route (a client given option 121 ignores option 3).

What it owns lives under ``<state_dir>/<network_id>/``: the claim on the
namespace (its inode), the host files, dnsmasq's log, and the fingerprint of
what was applied last. A ``qdhcp-`` namespace without that directory is not
ours and is never touched; a dnsmasq whose command line names a host
directory under ``state_dir`` is ours, so one left by a killed agent is
stopped and started again as a child. Read ``host.py`` next.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import json
import logging
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

from tinystack.network.agents import host
from tinystack.network.agents.drivers.base import DhcpState, PermanentFailure, TemporaryFailure
from tinystack.network.agents.drivers import veth
from tinystack.network.agents.drivers.children import Children
from tinystack.network.messages import DhcpSpec, bridge_name, tap_name

__all__ = ["DnsmasqDriver", "METADATA_ADDRESS", "dhcp_namespace"]

log = logging.getLogger(__name__)

METADATA_ADDRESS = "169.254.169.254"
LEASE_TIME = "86400s"


_DEVICE_KEYS = ("namespace", "port_id", "device", "mac", "mtu", "addresses", "bridge")
"""The parts of a plan that live on the namespace's device (the rest is files and argv)."""


def _digest(data: dict) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:24]


def dhcp_namespace(network_id: str) -> str:
    return f"qdhcp-{network_id}"


def _ns_device(port_id: str) -> str:
    return "ns-" + port_id.replace("-", "")[:11]


def _hostname(name: str) -> str:
    label = re.sub(r"[^a-z0-9-]", "-", name.lower()).strip("-")[:63].strip("-")
    return label or "host"


def _lease_max(hosts: int) -> int:
    """Room for 4 leases per host, in powers of two (at least 256): it is on dnsmasq's
    command line, so a value that followed every new port would restart it each time."""
    return 1 << max(8, (4 * hosts - 1).bit_length())


def _safe(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise PermanentFailure(f"unsafe identifier {name!r}")
    return name


class DnsmasqDriver:
    def __init__(self, *, state_dir: Path, owner: str, binary: str = "dnsmasq"):
        self.root = state_dir
        self.owner = owner
        self.binary = binary
        self._children = Children(lambda network_id: f"dnsmasq for network {network_id}")
        self._files: dict[Path, dict[str, str]] = {}
        """Host directory -> the files in it as this process last wrote or read them, so
        a new port costs one file written, not a read of every host's file."""
        self._planned: tuple[DhcpSpec, dict] | None = None
        self.files_written = 0
        """Host and DNS files written (for tests and benches: one per new port each)."""

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        await self._children.stop_strays(self._is_ours, "dnsmasq")

    async def close(self) -> None:
        await self._children.stop_all()

    def watch(self, on_change: Callable[[str], None]) -> None:
        self._children.on_exit = on_change

    def namespace(self, network_id: str) -> str:
        return dhcp_namespace(network_id)

    def _is_ours(self, argv: list[str]) -> bool:
        prefix = f"--dhcp-hostsdir={self.root}/"
        return any(Path(a).name == "dnsmasq" for a in argv[:1]) and any(
            a.startswith(prefix) for a in argv)

    # -- what is there -----------------------------------------------------------------------

    def _dir(self, network_id: str) -> Path:
        return self.root / _safe(network_id)

    async def list_networks(self) -> list[str]:
        if not self.root.exists():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / "claim").exists())

    async def inspect(self, network_id: str) -> DhcpState | None:
        directory = self._dir(network_id)
        if not (directory / "claim").exists():
            return None
        ns = dhcp_namespace(network_id)
        inode = host.netns_inode(ns)
        recorded = (directory / "claim").read_text().strip()
        pid = self._children.pid(network_id)
        intact = inode is not None and recorded == str(inode) and pid is not None
        if intact:
            async with self._netlink() as nl:
                link = await nl.link(tap_name(self._port_id(directory)))
            intact = link is not None and link.up
        fingerprint = self._applied(directory).get("fingerprint", "")
        return DhcpState(network_id=network_id, running=intact,
                         fingerprint=fingerprint if intact else "",
                         pid=pid)

    @staticmethod
    def _applied(directory: Path) -> dict:
        """What ``ensure`` applied last: ``{"fingerprint", "device"}`` (digests)."""
        try:
            return json.loads((directory / "applied").read_text())
        except (OSError, ValueError):
            return {}

    @staticmethod
    def _port_id(directory: Path) -> str:
        path = directory / "port"
        return path.read_text().strip() if path.exists() else ""

    # -- what should be ----------------------------------------------------------------------

    def _plan(self, spec: DhcpSpec) -> dict:
        """Everything ``ensure`` makes, as plain data (its digest is the fingerprint).
        The plan of the last spec is kept: ``fingerprint`` then ``ensure`` plan it once."""
        if self._planned is not None and self._planned[0] is spec:
            return self._planned[1]
        plan = self._make_plan(spec)
        self._planned = (spec, plan)
        return plan

    def _make_plan(self, spec: DhcpSpec) -> dict:
        port = spec.dhcp_port
        if port is None:
            raise PermanentFailure(f"network {spec.network_id} has no DHCP port")
        subnets = [s for s in spec.subnets if s.enable_dhcp and s.ip_version == 4]
        if not subnets:
            raise PermanentFailure(f"network {spec.network_id} has no IPv4 subnet with DHCP")
        directory = self._dir(spec.network_id)
        device = _ns_device(port.id)
        addresses = {}
        for fixed in port.fixed_ips:
            try:
                iface = ipaddress.ip_interface(f"{fixed['ip_address']}/"
                                               f"{ipaddress.ip_network(fixed['cidr']).prefixlen}")
            except (KeyError, ValueError):
                continue
            addresses[fixed.get("subnet_id", "")] = str(iface)
        if not addresses:
            raise PermanentFailure(f"the DHCP port of network {spec.network_id} has no address")
        if spec.metadata:
            addresses["metadata"] = f"{METADATA_ADDRESS}/32"
        domain = spec.dns_domain.strip(".") or "openstacklocal"
        argv = [self.binary, "--keep-in-foreground", "--conf-file=/dev/null", "--no-hosts",
                "--no-resolv", "--user=root", "--group=root", "--pid-file=",
                f"--dhcp-hostsdir={directory}/hosts", f"--hostsdir={directory}/dns",
                "--bind-interfaces", f"--interface={device}", "--except-interface=lo",
                "--leasefile-ro", "--dhcp-authoritative", "--log-facility=-",
                f"--domain={domain}", f"--local=/{domain}/",
                f"--dhcp-lease-max={_lease_max(len(spec.hosts))}"]
        for index, subnet in enumerate(subnets):
            argv += self._subnet_options(spec, subnet, f"s{index}", addresses)
        hosts, names = {}, {}
        for entry in spec.hosts:
            try:
                ip = ipaddress.ip_address(entry.ip_address)
            except ValueError:
                continue
            if ip.version != 4 or not any(ip in ipaddress.ip_network(s.cidr) for s in subnets):
                continue
            name = _hostname(entry.hostname)
            key = f"{_safe(entry.port_id)}_{str(ip).replace('.', '-')}"
            hosts[key] = f"{entry.mac.lower()},{ip},{name}\n"
            names[key] = f"{ip}\t{name}.{domain} {name}\n"
        return {"namespace": dhcp_namespace(spec.network_id), "port_id": port.id,
                "device": device, "mac": port.mac.lower(), "mtu": spec.segment.mtu,
                "addresses": sorted(addresses.values()), "argv": argv,
                "hosts": hosts, "names": names, "bridge": bridge_name(spec.network_id)}

    def _subnet_options(self, spec: DhcpSpec, subnet, tag: str, addresses: dict) -> list[str]:
        net = ipaddress.ip_network(subnet.cidr)
        options = [f"--dhcp-range=set:{tag},{net.network_address},static,{net.netmask},"
                   f"{LEASE_TIME}",
                   f"--dhcp-option-force=tag:{tag},option:mtu,{spec.segment.mtu}"]
        server = addresses.get(subnet.id, "").split("/")[0]
        if not server:
            for cidr in addresses.values():
                if ipaddress.ip_interface(cidr).ip in net:
                    server = str(ipaddress.ip_interface(cidr).ip)
        routes: list[tuple[str, str]] = []
        if spec.metadata and server:
            routes.append((f"{METADATA_ADDRESS}/32", server))
        for route in subnet.host_routes:
            if route.get("destination") and route.get("nexthop"):
                routes.append((str(ipaddress.ip_network(route["destination"], strict=False)),
                               route["nexthop"]))
        if subnet.gateway_ip:
            options.append(f"--dhcp-option=tag:{tag},option:router,{subnet.gateway_ip}")
            if not any(dest == "0.0.0.0/0" for dest, _ in routes):
                routes.append(("0.0.0.0/0", subnet.gateway_ip))
        else:
            options.append(f"--dhcp-option=tag:{tag},option:router")
        if routes:
            flat = ",".join(f"{dest},{via}" for dest, via in routes)
            options.append(f"--dhcp-option-force=tag:{tag},option:classless-static-route,{flat}")
        dns = subnet.dns_nameservers or ([server] if server else [])
        if dns:
            options.append(f"--dhcp-option=tag:{tag},option:dns-server,{','.join(dns)}")
        domain = spec.dns_domain.strip(".") or "openstacklocal"
        options.append(f"--dhcp-option=tag:{tag},option:domain-name,{domain}")
        return options

    def fingerprint(self, spec: DhcpSpec) -> str:
        return _digest(self._plan(spec))

    # -- changes -----------------------------------------------------------------------------

    async def ensure(self, spec: DhcpSpec) -> DhcpState:
        plan = self._plan(spec)
        fingerprint = _digest(plan)
        device = _digest({k: plan[k] for k in _DEVICE_KEYS})
        directory = self._dir(spec.network_id)
        ns = plan["namespace"]
        before = await self.inspect(spec.network_id)
        device_ok = (before is not None and before.running
                     and self._applied(directory).get("device") == device)
        (directory / "hosts").mkdir(parents=True, exist_ok=True)
        (directory / "dns").mkdir(exist_ok=True)
        claim = directory / "claim"
        if not claim.exists():
            claim.write_text("\n")
        try:
            await host.netns_add(ns)
        except host.HostError as exc:
            raise TemporaryFailure(str(exc)) from None
        claim.write_text(f"{host.netns_inode(ns)}\n")
        (directory / "port").write_text(plan["port_id"] + "\n")
        if not device_ok:  # only the hosts changed: the namespace's device is as it was
            await self._ensure_device(spec.network_id, plan)
        removed = await asyncio.to_thread(self._write_files, directory / "hosts", plan["hosts"])
        removed |= await asyncio.to_thread(self._write_files, directory / "dns", plan["names"])
        pid = self._children.pid(spec.network_id)
        if removed or not self._children.runs(spec.network_id, plan["argv"]):
            await self._children.stop(spec.network_id)
            pid = await self._children.start(spec.network_id, plan["argv"],
                                             netns=plan["namespace"],
                                             log_path=directory / "dnsmasq.log")
        (directory / "applied").write_text(json.dumps({"fingerprint": fingerprint,
                                                       "device": device}))
        return DhcpState(network_id=spec.network_id, running=True, fingerprint=fingerprint,
                         pid=pid)

    async def _ensure_device(self, network_id: str, plan: dict) -> None:
        ns, device = plan["namespace"], plan["device"]
        outside = tap_name(plan["port_id"])
        alias = f"tinystack:{self.owner} dhcp {network_id}"
        async with self._netlink() as nl, self._netlink(ns) as inside:
            for stale in await inside.links():
                if stale.name.startswith("ns-") and stale.name != device:
                    await inside.delete_link(stale.name)
            await inside.set_link("lo", up=True)
            await veth.plug(nl, inside, outside=outside, device=device, namespace=ns,
                            alias=alias, want=plan)

    def _write_files(self, directory: Path, files: dict[str, str]) -> bool:
        """Make ``directory`` hold exactly ``files``: write the new and changed ones (temp
        name, then rename), remove the others. What is there is read from disk once per
        process, then known, so adding a host writes one file and reads none. True if a
        file was removed or changed (dnsmasq only forgets on restart)."""
        known = self._files.get(directory)
        if known is None:
            known = {}
            for path in directory.iterdir():
                if not path.name.startswith("."):
                    try:
                        known[path.name] = path.read_text()
                    except OSError:
                        known[path.name] = ""
            self._files[directory] = known
        touched = False
        for name in [n for n in known if n not in files]:
            (directory / name).unlink(missing_ok=True)
            del known[name]
            touched = True
        for name, text in files.items():
            if name in known:
                if known[name] == text:
                    continue
                touched = True
            temp = directory / f".{name}.tmp"
            temp.write_text(text)
            os.replace(temp, directory / name)
            known[name] = text
            self.files_written += 1
        return touched

    async def remove(self, network_id: str) -> None:
        directory = self._dir(network_id)
        await self._children.stop(network_id)
        ns = dhcp_namespace(network_id)
        claim = directory / "claim"
        if claim.exists():
            recorded = claim.read_text().strip()
            inode = host.netns_inode(ns)
            if inode is not None and recorded in ("", str(inode)):
                try:
                    await host.netns_delete(ns)
                except host.HostError as exc:
                    raise TemporaryFailure(str(exc)) from None
            port_id = self._port_id(directory)
            if port_id:
                async with self._netlink() as nl:
                    link = await nl.link(tap_name(port_id))
                    if link is not None and link.alias == f"tinystack:{self.owner} dhcp {network_id}":
                        await nl.delete_link(link.name)
        shutil.rmtree(directory, ignore_errors=True)
        self._files.pop(directory / "hosts", None)
        self._files.pop(directory / "dns", None)

    @contextlib.asynccontextmanager
    async def _netlink(self, netns: str | None = None):
        try:
            async with host.netlink(netns) as nl:
                yield nl
        except host.HostError as exc:
            raise TemporaryFailure(str(exc)) from None
