"""The L2 driver on Linux: a bridge per network, VXLAN between nodes, nftables for ports.

Every network that has a port on this node gets the bridge
``messages.bridge_name(network_id)``; a VXLAN network with ports on other
nodes also gets ``tsvx<id>``, a VXLAN device (VNI = segmentation id, UDP
4789, learning off) on that bridge, with one all-zero FDB flood entry per
peer node (``NetworkSpec.vxlan_peers``), as Neutron's l2population does.
With no peer there is no device: all-in-one needs none, and two clouds on
one machine (tests) never fight over a VNI. A flat network
is its bridge alone: on the network node the L3 agent gives the external
network's bridge the external gateway address, so that bridge is the
host's external bridge. A port's device (a compute tap, or the veth of a DHCP
or router namespace) is put on its network's bridge when it exists. The
packet filter is ``security_groups.render`` loaded with ``nft``.

What we made carries our owner tag: the alias ``tinystack:<owner> network
<network_id>`` on bridges and VXLAN devices, and the nft tables
``tinystack_<owner>``. Nothing else is ever changed or removed. Taps belong
to compute and are never deleted here.

Runs in the host, or in one namespace (``netns``) standing for a whole node
(tests put a second "compute node" in a namespace). Read ``host.py`` next.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from tinystack.network.agents import host
from tinystack.network.agents.drivers.base import (
    NetworkState,
    PermanentFailure,
    PortState,
    TemporaryFailure,
)
from tinystack.network.agents.security_groups import ZONE_LIMIT, render, table_name
from tinystack.network.messages import NetworkSpec, PortSpec, bridge_name, tap_name

__all__ = ["LinuxBridgeDriver", "vxlan_name"]

log = logging.getLogger(__name__)

VXLAN_PORT = 4789


def vxlan_name(network_id: str) -> str:
    """The VXLAN device of a network (15 characters at most)."""
    return "tsvx" + network_id.replace("-", "")[:11]


class LinuxBridgeDriver:
    capabilities = frozenset({"vxlan", "flat", "local", "security_groups", "port_security"})

    def __init__(self, *, owner: str, local_ip: str | None = None, netns: str | None = None):
        self.owner = owner
        self.local_ip = local_ip if local_ip not in (None, "", "127.0.0.1") else None
        """This node's address on the data network (VXLAN source); None: let the kernel pick."""
        self.netns = netns
        self.table = table_name(owner)
        self._on_device: Callable[[str], None] | None = None
        self._watcher: asyncio.Task | None = None
        self._filter_applied: str | None = None
        self._rendered: tuple[tuple, str] | None = None

    def _alias(self, network_id: str) -> str:
        return f"tinystack:{self.owner} network {network_id}"

    def _network_of_alias(self, alias: str) -> str | None:
        prefix = f"tinystack:{self.owner} network "
        return alias[len(prefix):] if alias.startswith(prefix) else None

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        if self.netns is None:
            changed = await asyncio.to_thread(host.set_bridge_netfilter)
            if changed:
                log.warning("network: switched on %s so bridged traffic is filtered", changed)
        if self._on_device is not None:
            ready = asyncio.Event()
            self._watcher = asyncio.get_running_loop().create_task(
                host.watch_links(self._on_device, netns=self.netns, ready=ready))
            waiter = asyncio.ensure_future(ready.wait())
            await asyncio.wait({waiter, self._watcher}, timeout=host.NETLINK_TIMEOUT,
                               return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            if self._watcher.done():
                raise TemporaryFailure(f"cannot watch links: {self._watcher.exception()}")

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._watcher

    def watch(self, on_device: Callable[[str], None]) -> None:
        self._on_device = on_device

    # -- networks ----------------------------------------------------------------------------

    async def list_networks(self) -> list[str]:
        async with self._netlink() as nl:
            links = await nl.links()
        found = set()
        for link in links:
            network_id = self._network_of_alias(link.alias)
            if network_id and link.name in (bridge_name(network_id), vxlan_name(network_id)):
                found.add(network_id)
        return sorted(found)

    async def inspect_network(self, network_id: str) -> NetworkState | None:
        async with self._netlink() as nl:
            bridge = await nl.link(bridge_name(network_id))
            if bridge is None or bridge.alias != self._alias(network_id):
                return None
            vxlan = await nl.link(vxlan_name(network_id))
            if vxlan is None or vxlan.alias != self._alias(network_id):
                return NetworkState(network_id=network_id, mtu=bridge.mtu, intact=bridge.up)
            peers = await nl.flood_entries(vxlan.name)
            intact = (bridge.up and vxlan.up and vxlan.master == bridge.index
                      and self._local_ok(vxlan))
            return NetworkState(network_id=network_id, mtu=bridge.mtu, vni=vxlan.vni,
                                peers=frozenset(peers), intact=intact)

    def _local_ok(self, vxlan: host.Link) -> bool:
        return (vxlan.vxlan_local or None) == self.local_ip

    async def ensure_network(self, spec: NetworkSpec) -> None:
        segment = spec.segment
        bridge, alias = bridge_name(spec.id), self._alias(spec.id)
        async with self._netlink() as nl:
            found = await nl.link(bridge)
            if found is not None and found.alias != alias:
                raise PermanentFailure(f"device {bridge} exists and is not ours "
                                       f"(alias {found.alias!r})")
            if found is None:
                await nl.add_bridge(bridge, alias=alias, mtu=segment.mtu)
            elif found.mtu != segment.mtu or not found.up:
                await nl.set_link(bridge, up=True, mtu=segment.mtu)
            await self._ensure_vxlan(nl, spec)

    async def _ensure_vxlan(self, nl: host.Netlink, spec: NetworkSpec) -> None:
        name, alias, segment = vxlan_name(spec.id), self._alias(spec.id), spec.segment
        found = await nl.link(name)
        if found is not None and found.alias != alias:
            raise PermanentFailure(f"device {name} exists and is not ours")
        want = {p for p in spec.vxlan_peers if p != self.local_ip}
        if segment.network_type != "vxlan" or not want:
            if found is not None:  # flat, or no other node to tunnel to (yet)
                await nl.delete_link(name)
            return
        if not segment.segmentation_id:
            raise PermanentFailure(f"VXLAN network {spec.id} has no segmentation id")
        if found is not None and (found.vni != segment.segmentation_id or not self._local_ok(found)):
            await nl.delete_link(name)
            found = None
        if found is None:
            await nl.add_vxlan(name, vni=segment.segmentation_id, local=self.local_ip,
                               port=VXLAN_PORT, alias=alias, mtu=segment.mtu)
        await nl.set_link(name, master=bridge_name(spec.id), mtu=segment.mtu, up=True)
        have = await nl.flood_entries(name)
        for peer in sorted(want - have):
            await nl.add_flood_entry(name, peer)
        for peer in sorted(have - want):
            await nl.delete_flood_entry(name, peer)

    async def remove_network(self, network_id: str) -> None:
        alias = self._alias(network_id)
        async with self._netlink() as nl:
            for name in (vxlan_name(network_id), bridge_name(network_id)):
                found = await nl.link(name)
                if found is not None and found.alias == alias:
                    await nl.delete_link(name)

    # -- ports -------------------------------------------------------------------------------

    @staticmethod
    def _device(port: PortSpec) -> str:
        return port.device or tap_name(port.id)

    async def inspect_port(self, port: PortSpec) -> PortState:
        async with self._netlink() as nl:
            link = await nl.link(self._device(port))
            if link is None:
                return PortState(exists=False)
            network_id = None
            if link.master is not None:
                bridge = await nl.link_by_index(link.master)
                if bridge is not None and bridge.kind == "bridge":
                    network_id = self._network_of_alias(bridge.alias)
            return PortState(exists=True, network_id=network_id, up=link.up, mtu=link.mtu)

    async def plug_port(self, port: PortSpec, network: NetworkSpec) -> None:
        device = self._device(port)
        async with self._netlink() as nl:
            link = await nl.link(device)
            if link is None:
                raise TemporaryFailure(f"device {device} of port {port.id} is not there yet")
            bridge = await nl.link(bridge_name(network.id))
            if bridge is None:
                raise TemporaryFailure(f"bridge of network {network.id} is not there yet")
            master = bridge.name if link.master != bridge.index else None
            await nl.set_link(device, master=master, mtu=network.segment.mtu,
                              up=port.admin_state_up)

    async def unplug_port(self, port: PortSpec) -> None:
        device = self._device(port)
        async with self._netlink() as nl:
            link = await nl.link(device)
            if link is None or link.master is None:
                return
            bridge = await nl.link_by_index(link.master)
            if bridge is not None and self._network_of_alias(bridge.alias):
                await nl.set_link(device, nomaster=True)

    async def forget_connections(self, port: PortSpec, *, inbound: bool, outbound: bool) -> None:
        addresses = {ip.get("ip_address") for ip in port.fixed_ips if ip.get("ip_address")}
        segment = port.network.segment if port.network else None
        zone = (segment.segmentation_id if segment is not None and segment.network_type == "vxlan"
                and 0 < (segment.segmentation_id or 0) < ZONE_LIMIT else None)
        try:
            await host.forget_connections(
                netns=self.netns, zone=zone,
                orig_sources=addresses if outbound else set(),
                orig_destinations=addresses if inbound else set(),
                reply_destinations=set())
        except host.HostError as exc:
            raise TemporaryFailure(str(exc)) from None

    # -- packet filter -----------------------------------------------------------------------

    async def ensure_filter(self, ports: list[PortSpec], *, verify: bool = False) -> bool:
        text = self._render(ports)
        fingerprint = text.split('comment "', 1)[1].split('"', 1)[0] if text else "absent"
        if verify:
            self._filter_applied = await self._installed_fingerprint()
        if self._filter_applied == fingerprint:
            return False
        if not text:
            await self.remove_filter()
            self._filter_applied = fingerprint
            return True
        try:
            await host.nft_apply(text, netns=self.netns)
        except host.HostError as exc:
            self._filter_applied = None
            raise PermanentFailure(f"nftables refused the ruleset: {exc}") from None
        self._filter_applied = fingerprint
        return True

    def _render(self, ports: list[PortSpec]) -> str:
        """``render`` of ``ports``, reused while no port changed (a revision names a port's
        content; for unrevisioned local ports, their network's segment is what counts)."""
        key = tuple(sorted(
            (p.id, p.revision, p.deleted, p.network.id if p.network else "",
             p.network.segment.segmentation_id if p.network else None,
             p.network.segment.network_type if p.network else "",
             hash(p.model_dump_json()) if p.revision == 0 else 0)
            for p in ports))
        if self._rendered is None or self._rendered[0] != key:
            self._rendered = (key, render(ports, table=self.table))
        return self._rendered[1]

    async def _installed_fingerprint(self) -> str | None:
        """The fingerprint both our tables carry; "absent" when neither exists."""
        tables = {t["family"] for t in await self._tables() if t["name"] == self.table}
        if not tables:
            return "absent"
        if tables != {"bridge", "inet"}:
            return None
        found = set()
        for family in ("bridge", "inet"):
            try:
                out = await host.run(["nft", "list", "table", family, self.table], netns=self.netns)
            except host.HostError:
                return None
            marker = out.split('comment "', 1)
            found.add(marker[1].split('"', 1)[0] if len(marker) == 2 else "")
        return found.pop() if len(found) == 1 else None

    async def _tables(self) -> list[dict]:
        try:
            return await host.nft_tables(netns=self.netns)
        except host.HostError as exc:
            raise TemporaryFailure(str(exc)) from None

    async def remove_filter(self) -> None:
        present = {t["family"] for t in await self._tables() if t["name"] == self.table}
        for family in sorted(present & {"bridge", "inet"}):
            try:
                await host.nft_delete_table(family, self.table, netns=self.netns)
            except host.HostError as exc:
                raise TemporaryFailure(str(exc)) from None
        self._filter_applied = None

    # -- internals ---------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _netlink(self):
        try:
            async with host.netlink(self.netns) as nl:
                yield nl
        except host.HostError as exc:
            raise TemporaryFailure(str(exc)) from None
