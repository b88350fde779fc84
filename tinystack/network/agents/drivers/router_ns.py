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
from pathlib import Path

from tinystack.network.agents import host
from tinystack.network.agents.drivers.base import (
    PermanentFailure,
    RouterState,
    TemporaryFailure,
)
from tinystack.network.agents.security_groups import table_name
from tinystack.network.messages import RouterInterface, RouterSpec, bridge_name, tap_name

__all__ = ["RouterNamespaceDriver", "router_namespace"]

log = logging.getLogger(__name__)


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
    def __init__(self, *, state_dir: Path, owner: str):
        self.root = state_dir
        self.owner = owner
        self.table = table_name(owner)

    async def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    async def close(self) -> None:
        return None

    def _dir(self, router_id: str) -> Path:
        return self.root / _safe(router_id)

    def _alias(self, router_id: str) -> str:
        return f"tinystack:{self.owner} router {router_id}"

    # -- what should be ----------------------------------------------------------------------

    def _plan(self, spec: RouterSpec) -> dict:
        devices = {}
        internal = []
        for interface in spec.interfaces:
            devices[_inside("qr-", interface.port_id)] = {
                "port_id": interface.port_id, "mac": interface.mac.lower(),
                "mtu": interface.segment.mtu, "addresses": [_cidr(interface)],
                "bridge": bridge_name(interface.network_id)}
            internal.append(str(ipaddress.ip_network(interface.cidr, strict=False)))
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
        return {"namespace": router_namespace(spec.id), "devices": devices, "routes": routes,
                "nat": nat}

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
        ports = sorted(d["port_id"] for d in plan["devices"].values())
        (directory / "applied").write_text(json.dumps(
            {"fingerprint": fingerprint, "floating_ips": fips, "ports": ports, "nat": nat}))
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
                outside = tap_name(want["port_id"])
                link = await nl.link(outside)
                if link is not None and link.alias != alias:
                    raise PermanentFailure(f"device {outside} exists and is not ours")
                found = await inside.link(device)
                if link is None or found is None:
                    if found is not None:
                        await inside.delete_link(device)
                    if link is not None:
                        await nl.delete_link(outside)
                    await nl.add_veth(outside, device, peer_netns=ns, alias=alias)
                await inside.set_link(device, mac=want["mac"], mtu=want["mtu"], up=True)
                have = await inside.addresses(device)
                for cidr in sorted(set(want["addresses"]) - have):
                    await inside.add_address(device, cidr)
                for cidr in sorted(have - set(want["addresses"])):
                    await inside.delete_address(device, cidr)
                bridge = await nl.link(want["bridge"])
                link = await nl.link(outside)
                master = want["bridge"] if bridge is not None and link.master != bridge.index else None
                await nl.set_link(outside, mtu=want["mtu"], master=master, up=True)

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
