"""The router driver on Linux: one namespace ``qrouter-<router_id>`` per router, NAT in nft.

A router is its namespace with IP forwarding on; per interface a veth pair
whose host end is the interface port's device (``tap_name(port_id)``, on the
network's bridge) and whose other end ``qr-<port>`` carries the port's MAC
and address; on the external side ``qg-<port>`` with the gateway address and
every floating IP (/32, so the router answers ARP for them), and the default
route via the external subnet's gateway. Static routes are added with our
routing protocol number, so stale ones are found and removed. NAT is one
nft table in the namespace: DNAT per floating IP (prerouting and output),
SNAT from each floating IP's fixed address to it, and SNAT of the internal
subnets to the gateway address when ``enable_snat``.

IPv6: an interface on a subnet whose ``ipv6_ra_mode`` is ``slaac`` or
``dhcpv6-stateless`` makes the router send router advertisements for that
prefix there, as Neutron's radvd does: one dnsmasq per router in RA-only mode
(``--enable-ra``, ``ra-only``/``ra-stateless`` ranges, ``--port=0``: no DNS), a
child of the agent (``ip netns exec``, ``--keep-in-foreground``), restarted
when its command line (the set of prefixes) changes and never sent SIGHUP; it
goes when the last such interface or the router does. A router with an IPv6
address has IPv6 forwarding on and no duplicate address detection in its
namespace, so its addresses (and the link-local one the advertisements come
from) are usable at once.

``ensure_gateways`` gives the host its own address on external networks
(the external subnet's gateway, 172.24.4.1/24 in DevStack's layout) on that
network's bridge, so the host, playing "the outside", reaches floating IPs.

Ownership: ``<state_dir>/<router_id>/claim`` holds the namespace's inode; a
``qrouter-`` namespace without it is not ours. Host addresses are only
touched on bridges carrying our owner tag. Read ``host.py`` next.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import logging
import re
import shutil
from collections.abc import Callable
from pathlib import Path

from tinystack.network.agents import host
from tinystack.network.agents.drivers.base import (
    PermanentFailure,
    RouterState,
    TemporaryFailure,
)
from tinystack.network.agents.drivers import veth
from tinystack.network.agents.drivers.children import Children
from tinystack.network.agents.security_groups import table_name
from tinystack.network.messages import RouterInterface, RouterSpec, bridge_name, tap_name

__all__ = ["RouterNamespaceDriver", "router_namespace"]

log = logging.getLogger(__name__)

RA_MODES = {"slaac": "ra-only", "dhcpv6-stateless": "ra-stateless"}
"""A subnet's ``ipv6_ra_mode`` -> the dnsmasq range mode that advertises it."""
RA_INTERVAL = 30
"""Seconds between unsolicited router advertisements (a router solicitation is answered
at once)."""
RA_LIFETIME = 1800
"""The router lifetime in each advertisement, in seconds."""


def router_namespace(router_id: str) -> str:
    return f"qrouter-{router_id}"


def _inside(prefix: str, port_id: str) -> str:
    return prefix + port_id.replace("-", "")[:11]


def _safe(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise PermanentFailure(f"unsafe identifier {name!r}")
    return name


def _cidr(interface: RouterInterface) -> str:
    try:
        net = ipaddress.ip_network(interface.cidr, strict=False)
        ip = ipaddress.ip_address(interface.ip_address)
    except ValueError as exc:
        raise PermanentFailure(f"router port {interface.port_id}: {exc}") from None
    return f"{ip}/{net.prefixlen}"


class RouterNamespaceDriver:
    def __init__(self, *, state_dir: Path, owner: str, binary: str = "dnsmasq"):
        self.root = state_dir
        self.owner = owner
        self.table = table_name(owner)
        self.binary = binary
        self._children = Children(lambda router_id: f"router advertisements of router "
                                                    f"{router_id}")
        """Router id -> its router-advertisement dnsmasq (a child of the agent)."""

    async def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        await self._children.stop_strays(self._is_ours, "router advertisements")

    async def close(self) -> None:
        await self._children.stop_all()

    def watch(self, on_change: Callable[[str], None]) -> None:
        """``on_change(router_id)`` when a router's advertisement process dies."""
        self._children.on_exit = on_change

    def _is_ours(self, argv: list[str]) -> bool:
        prefix = f"--dhcp-leasefile={self.root}/"
        return any(Path(a).name == "dnsmasq" for a in argv[:1]) and any(
            a.startswith(prefix) for a in argv)

    def _dir(self, router_id: str) -> Path:
        return self.root / _safe(router_id)

    def _alias(self, router_id: str) -> str:
        return f"tinystack:{self.owner} router {router_id}"

    # -- what should be ----------------------------------------------------------------------

    def _plan(self, spec: RouterSpec) -> dict:
        devices = {}
        internal = []
        advertised: dict[str, list[tuple[str, str]]] = {}
        for interface in spec.interfaces:
            device = _inside("qr-", interface.port_id)
            if device in devices:  # a second address of one port (another subnet)
                devices[device]["addresses"].append(_cidr(interface))
            else:
                devices[device] = {
                    "port_id": interface.port_id, "mac": interface.mac.lower(),
                    "mtu": interface.segment.mtu, "addresses": [_cidr(interface)],
                    "bridge": bridge_name(interface.network_id)}
            network = ipaddress.ip_network(interface.cidr, strict=False)
            if network.version == 4:
                internal.append(str(network))
            elif interface.ipv6_ra_mode in RA_MODES:
                advertised.setdefault(device, []).append(
                    (str(network), RA_MODES[interface.ipv6_ra_mode]))
        routes = {}
        gateway_device = None
        fips = []
        if spec.gateway is not None:
            gw = spec.gateway
            gateway_device = _inside("qg-", gw.port_id)
            for fip in sorted(spec.floating_ips, key=lambda f: f.floating_ip_address):
                try:
                    ipaddress.IPv4Address(fip.floating_ip_address)
                    ipaddress.IPv4Address(fip.fixed_ip_address)
                except ValueError as exc:
                    raise PermanentFailure(f"floating IP {fip.id}: {exc}") from None
                fips.append((fip.floating_ip_address, fip.fixed_ip_address))
            devices[gateway_device] = {
                "port_id": gw.port_id, "mac": gw.mac.lower(), "mtu": gw.segment.mtu,
                "addresses": sorted({_cidr(gw), *(f"{f}/32" for f, _ in fips)}),
                "bridge": bridge_name(gw.network_id)}
            if spec.external_gateway_ip:
                routes["0.0.0.0/0"] = spec.external_gateway_ip
        for route in spec.routes:
            try:
                dest = str(ipaddress.ip_network(route["destination"], strict=False))
                routes[dest] = str(ipaddress.ip_address(route["nexthop"]))
            except (KeyError, ValueError):
                log.warning("l3: router %s: bad route %r left out", spec.id, route)
        nat = self._nat(gateway_device, fips, sorted(set(internal)),
                        spec.gateway.ip_address if spec.gateway and spec.enable_snat else None)
        plan = {"namespace": router_namespace(spec.id), "devices": devices, "routes": routes,
                "nat": nat}
        if any(ipaddress.ip_interface(a).version == 6
               for d in devices.values() for a in d["addresses"]):
            plan["ipv6"] = True
        if advertised:
            plan["ra"] = self._ra_argv(spec.id, advertised, devices)
        return plan

    def _ra_argv(self, router_id: str, advertised: dict[str, list[tuple[str, str]]],
                 devices: dict) -> list[str]:
        """dnsmasq sending router advertisements only: no DNS, no DHCP beyond the
        stateless DHCPv6 that ``ra-stateless`` implies; the lease file is never written
        (``--leasefile-ro``) and only names the router's directory, so a stray is found."""
        argv = [self.binary, "--keep-in-foreground", "--conf-file=/dev/null", "--no-hosts",
                "--no-resolv", "--port=0", "--user=root", "--group=root", "--pid-file=",
                f"--dhcp-leasefile={self._dir(router_id)}/ra.leases", "--leasefile-ro",
                "--log-facility=-", "--quiet-ra", "--enable-ra", "--except-interface=lo"]
        for device in sorted(advertised):
            argv.append(f"--interface={device}")
            argv.append(f"--ra-param={device},mtu:{devices[device]['mtu']},{RA_INTERVAL},"
                        f"{RA_LIFETIME}")
            for cidr, mode in sorted(set(advertised[device])):
                network = ipaddress.ip_network(cidr)
                argv.append(f"--dhcp-range={network.network_address},{mode},"
                            f"{network.prefixlen}")
        return argv

    def _nat(self, gateway: str | None, fips: list[tuple[str, str]], internal: list[str],
             snat_to: str | None) -> str:
        t = self.table
        pre, out, post = [], [], []
        if gateway is not None:
            for floating, fixed in fips:
                pre.append(f"    ip daddr {floating} dnat to {fixed}")
                out.append(f"    ip daddr {floating} dnat to {fixed}")
                post.append(f'    oifname "{gateway}" ip saddr {fixed} snat to {floating}')
            if snat_to and internal:
                post.append(f'    oifname "{gateway}" ip saddr {{ {", ".join(internal)} }} '
                            f'snat to {snat_to}')
        lines = [f"table ip {t} {{}}", f"delete table ip {t}", f"table ip {t} {{",
                 "  chain prerouting {", "    type nat hook prerouting priority -100; policy accept;",
                 *pre, "  }",
                 "  chain output {", "    type nat hook output priority -100; policy accept;",
                 *out, "  }",
                 "  chain postrouting {", "    type nat hook postrouting priority 100; policy accept;",
                 *post, "  }", "}"]
        return "\n".join(lines) + "\n"

    def fingerprint(self, spec: RouterSpec) -> str:
        plan = self._plan(spec)
        return hashlib.sha256(json.dumps(plan, sort_keys=True).encode()).hexdigest()[:24]

    # -- what is there -----------------------------------------------------------------------

    async def list_routers(self) -> list[str]:
        if not self.root.exists():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / "claim").exists())

    async def inspect(self, router_id: str) -> RouterState | None:
        directory = self._dir(router_id)
        claim = directory / "claim"
        if not claim.exists():
            return None
        inode = host.netns_inode(router_namespace(router_id))
        applied = directory / "applied"
        if inode is None or claim.read_text().strip() != str(inode) or not applied.exists():
            return RouterState(router_id=router_id)
        record = self._applied(directory)
        if "fingerprint" not in record:
            return RouterState(router_id=router_id)
        if record.get("ra") and self._children.pid(router_id) is None:
            return RouterState(router_id=router_id)
        async with self._netlink() as nl:
            links = {link.name: link for link in await nl.links()}
        for port_id in record.get("ports", []):
            link = links.get(tap_name(port_id))
            if link is None or not link.up:
                return RouterState(router_id=router_id)
        return RouterState(router_id=router_id, fingerprint=record["fingerprint"],
                           floating_ips=frozenset(record.get("floating_ips", [])))

    @staticmethod
    def _applied(directory: Path) -> dict:
        """What ``ensure`` applied last: fingerprint, floating IP ids, ports, NAT map."""
        try:
            return json.loads((directory / "applied").read_text())
        except (OSError, ValueError):
            return {}

    # -- changes -----------------------------------------------------------------------------

    async def ensure(self, spec: RouterSpec) -> RouterState:
        plan = self._plan(spec)
        fingerprint = hashlib.sha256(json.dumps(plan, sort_keys=True).encode()).hexdigest()[:24]
        directory = self._dir(spec.id)
        directory.mkdir(parents=True, exist_ok=True)
        claim = directory / "claim"
        if not claim.exists():
            claim.write_text("\n")
        ns = plan["namespace"]
        before = self._applied(directory).get("nat", {})
        fresh = not host.netns_exists(ns)
        try:
            await host.netns_add(ns)
            claim.write_text(f"{host.netns_inode(ns)}\n")
            await host.sysctl_set("net.ipv4.ip_forward", "1", netns=ns)
            if fresh:
                await host.sysctl_set("net.ipv4.conf.all.rp_filter", "0", netns=ns)
            if plan.get("ipv6"):  # before the devices, so new ones skip DAD
                for key in ("net.ipv6.conf.all.accept_dad", "net.ipv6.conf.default.accept_dad"):
                    await host.sysctl_set(key, "0", netns=ns)
                await host.sysctl_set("net.ipv6.conf.all.forwarding", "1", netns=ns)
        except host.HostError as exc:
            raise TemporaryFailure(str(exc)) from None
        await self._ensure_devices(spec.id, plan)
        await self._ensure_routes(ns, plan["routes"])
        try:
            await host.nft_apply(plan["nat"], netns=ns)
        except host.HostError as exc:
            raise PermanentFailure(f"nftables refused the router's NAT: {exc}") from None
        fips = sorted(f.id for f in spec.floating_ips) if spec.gateway else []
        nat = ({f.floating_ip_address: f.fixed_ip_address for f in spec.floating_ips}
               if spec.gateway else {})
        gone = {floating for floating, fixed in before.items() if nat.get(floating) != fixed}
        if gone and not fresh:
            try:
                await host.forget_connections(netns=ns, orig_destinations=gone,
                                              reply_destinations=gone)
            except host.HostError as exc:
                raise TemporaryFailure(str(exc)) from None
        await self._ensure_ra(spec.id, plan)
        ports = sorted(d["port_id"] for d in plan["devices"].values())
        record = {"fingerprint": fingerprint, "floating_ips": fips, "ports": ports, "nat": nat}
        if plan.get("ra"):
            record["ra"] = True
        (directory / "applied").write_text(json.dumps(record))
        return RouterState(router_id=spec.id, fingerprint=fingerprint,
                           floating_ips=frozenset(fips))

    async def _ensure_devices(self, router_id: str, plan: dict) -> None:
        ns, alias = plan["namespace"], self._alias(router_id)
        async with self._netlink() as nl, self._netlink(ns) as inside:
            await inside.set_link("lo", up=True)
            for link in await inside.links():
                if link.name.startswith(("qr-", "qg-")) and link.name not in plan["devices"]:
                    await inside.delete_link(link.name)
            for device, want in sorted(plan["devices"].items()):
                await veth.plug(nl, inside, outside=tap_name(want["port_id"]), device=device,
                                namespace=ns, alias=alias, want=want)

    async def _ensure_routes(self, ns: str, routes: dict[str, str]) -> None:
        async with self._netlink(ns) as inside:
            have = await inside.routes()
            for dest in sorted(set(have) - set(routes)):
                await inside.delete_route(dest)
            for dest, via in sorted(routes.items()):
                if have.get(dest) != via:
                    try:
                        await inside.replace_route(dest, via)
                    except host.HostError as exc:
                        raise PermanentFailure(f"route {dest} via {via}: {exc}") from None

    async def remove(self, router_id: str) -> None:
        directory = self._dir(router_id)
        claim = directory / "claim"
        ns = router_namespace(router_id)
        await self._children.stop(router_id)
        if claim.exists():
            recorded = claim.read_text().strip()
            inode = host.netns_inode(ns)
            if inode is not None and recorded in ("", str(inode)):
                try:
                    await host.netns_delete(ns)
                except host.HostError as exc:
                    raise TemporaryFailure(str(exc)) from None
            async with self._netlink() as nl:
                for link in await nl.links():
                    if link.alias == self._alias(router_id):
                        await nl.delete_link(link.name)
        shutil.rmtree(directory, ignore_errors=True)

    # -- router advertisements ----------------------------------------------------------------

    async def _ensure_ra(self, router_id: str, plan: dict) -> None:
        """The router's advertisement process runs exactly ``plan["ra"]``, or none runs."""
        argv = plan.get("ra")
        if argv and self._children.runs(router_id, argv):
            return
        await self._children.stop(router_id)
        if argv:
            await self._children.start(router_id, argv, netns=plan["namespace"],
                                       log_path=self._dir(router_id) / "ra.log")

    # -- the host's addresses on external networks -------------------------------------------

    async def ensure_gateways(self, addresses: dict[str, list[str]]) -> None:
        prefix = f"tinystack:{self.owner} network "
        missing = []
        async with self._netlink() as nl:
            bridges = {link.alias[len(prefix):]: link for link in await nl.links()
                       if link.kind == "bridge" and link.alias.startswith(prefix)}
            for network_id, link in sorted(bridges.items()):
                if link.name != bridge_name(network_id):
                    continue
                want = set(addresses.get(network_id, []))
                have = await nl.addresses(link.name)
                for cidr in sorted(want - have):
                    await nl.add_address(link.name, cidr)
                for cidr in sorted(have - want):
                    await nl.delete_address(link.name, cidr)
            missing = [n for n in addresses if addresses[n] and n not in bridges]
        if missing:
            raise TemporaryFailure(f"no bridge yet for external network(s) {', '.join(missing)}")

    @contextlib.asynccontextmanager
    async def _netlink(self, netns: str | None = None):
        try:
            async with host.netlink(netns) as nl:
                yield nl
        except host.HostError as exc:
            raise TemporaryFailure(str(exc)) from None
