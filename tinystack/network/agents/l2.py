"""The L2 agent: this node's bridges, VXLAN tunnels, port devices and packet filter.

It serves ``network-l2.<host>`` (``messages.py`` is the contract):
``sync_port(spec)`` for each port bound here (a ``deleted`` spec is a
tombstone) and ``sync_network(spec)`` when a network's VXLAN peers change.
On the network node the DHCP and L3 agents of the same process also hand it
their own ports (``offer_local_port``), so their bridges exist even before the
server says so.

Keys it syncs: ``net:<id>`` (the network has a bridge, and a VXLAN device with
the right VNI and flood entries, exactly while a live port here is on it) and
``port:<id>`` (its device, once it appears, is on that bridge, up unless the
port is admin down; a deleted port's device is taken off the bridge). The
packet filter is one resource for the whole node, rewritten (atomically, by
fingerprint) when any port's rules change; many ports wired at once share one
rewrite. A port is reported ``ACTIVE`` once its device is on the bridge with
its rules in place, ``DOWN`` while its device is missing or admin down,
``ERROR`` on a permanent failure.

The driver watches for new devices (a tap made by compute), so a port is
wired as soon as its tap appears, not at the next audit. Never opens the
database; the Linux work is in ``drivers/linux_bridge.py``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from tinystack.common.bus import Bus
from tinystack.network.agents.drivers.base import L2Driver, PermanentFailure, TemporaryFailure
from tinystack.network.agents.reconcile import Agent, AgentOptions, Desired
from tinystack.network.agents.security_groups import filtered
from tinystack.network.messages import (
    SERVER_TARGET,
    AgentState,
    NetworkSpec,
    PortReport,
    PortSpec,
    l2_target,
    tap_name,
)

__all__ = ["L2Agent"]

log = logging.getLogger(__name__)


class _Coalesced:
    """Runs ``apply`` so that every caller waits for a run that started after it asked,
    while callers arriving together share one run."""

    def __init__(self, apply: Callable[[], object]):
        self._apply = apply
        self._lock = asyncio.Lock()
        self._asked = 0
        self._done = 0

    async def run(self) -> None:
        self._asked += 1
        ticket = self._asked
        async with self._lock:
            if self._done >= ticket:
                return
            upto = self._asked
            await self._apply()
            self._done = upto


def _network_key(spec: NetworkSpec) -> tuple:
    """What a network's spec asks of this node (its revision aside)."""
    return (spec.segment.model_dump_json(), tuple(spec.vxlan_peers), spec.deleted)


def _wiring(port: PortSpec, network: NetworkSpec) -> tuple:
    """What a port's device must be: on which bridge, up or down, with which MTU."""
    return (port.device or tap_name(port.id), network.id, port.admin_state_up,
            network.segment.mtu)


_Rule = tuple[str, str | None, int | None, int | None, frozenset[str]]
"""A rule of one direction: (ethertype, protocol, port_range_min, port_range_max,
remote prefixes; empty means any address)."""


def _rule_set(spec: PortSpec, direction: str) -> frozenset[_Rule]:
    return frozenset((r.ethertype, r.protocol, r.port_range_min, r.port_range_max,
                      frozenset(r.remote_ip_prefixes))
                     for r in spec.security_rules if r.direction == direction)


def _covers(rules: frozenset[_Rule], old: frozenset[_Rule]) -> bool:
    """Whether ``rules`` allow everything ``old`` allowed: a rule whose remote prefixes
    only grew (a member joined its remote group), or that a broader rule now covers,
    narrows nothing. Conservative: a rule whose cover is not shown this way counts as
    removed."""
    for ethertype, protocol, low, high, wanted in old - rules:
        have: set[str] = set()
        for c_ethertype, c_protocol, c_low, c_high, prefixes in rules:
            if c_ethertype != ethertype or c_protocol not in (None, protocol):
                continue
            if c_protocol is not None and (c_low, c_high) != (None, None) and not (
                    low is not None and high is not None and c_low is not None
                    and c_high is not None and c_low <= low and high <= c_high):
                continue
            if not prefixes:
                break
            have |= prefixes
        else:
            if not wanted or not wanted <= have:
                return False
    return True


class L2Agent(Agent):
    agent_type = "Linux bridge agent"
    binary = "neutron-linuxbridge-agent"

    def __init__(self, *, host: str, bus: Bus, driver: L2Driver,
                 options: AgentOptions | None = None,
                 clock: Callable[[], float] = time.monotonic, data_ip: str = "127.0.0.1"):
        super().__init__(host=host, bus=bus, options=options, clock=clock, data_ip=data_ip)
        self.driver = driver
        ttl = self.options.tombstone_ttl
        self.ports: Desired[PortSpec] = Desired(lambda s: s.id, clock=clock, tombstone_ttl=ttl)
        self.networks: Desired[NetworkSpec] = Desired(lambda s: s.id, clock=clock,
                                                      tombstone_ttl=ttl)
        self.local_ports: dict[str, PortSpec] = {}
        """Ports of this node's DHCP and L3 agents (network id from their spec)."""
        self._port_network: dict[str, str] = {}
        self._rules: dict[str, tuple[bool, frozenset, frozenset]] = {}
        """Port id -> (filtered, ingress rules, egress rules) as last put in place."""
        self._reported: dict[str, tuple[PortReport, float]] = {}
        self._verified: dict[str, tuple] = {}
        """Network id -> what its spec asked (``_network_key``) when last found (or made)
        right on the machine since the last audit: ports of a network wired together, or
        recast with a new revision of an unchanged network, check its bridge once."""
        self._wired: dict[str, tuple] = {}
        """Port id -> its wiring (``_wiring``) as last inspected since the last audit and
        the device's last event: a port recast for its rules alone (a member joined a
        remote group: every member is recast) is not inspected again, so a new port
        costs a filter rewrite, not a netlink round per port of its groups."""
        self._filter = _Coalesced(self._apply_filter)
        self._verify_filter = False
        self.filter_rewrites = 0

    @property
    def target(self) -> str:
        return l2_target(self.host)

    def handlers(self) -> dict:
        async def sync_port(spec: dict, **_) -> None:
            await self.receive_port(PortSpec.model_validate(spec))

        async def sync_network(spec: dict, **_) -> None:
            await self.receive_network(NetworkSpec.model_validate(spec))

        return {"sync_port": sync_port, "sync_network": sync_network}

    async def start_driver(self) -> None:
        self.driver.watch(self._on_device)
        await self.driver.start()

    async def close_driver(self) -> None:
        await self.driver.close()

    # -- messages ----------------------------------------------------------------------------

    async def receive_port(self, spec: PortSpec) -> None:
        if self._stopping:
            return
        if spec.network is not None:
            self.networks.offer(spec.network)
        if not self.ports.offer(spec):
            log.debug("l2: port %s revision %s is not newer; ignored", spec.id, spec.revision)
            return
        await self.sync(f"port:{spec.id}")

    async def receive_network(self, spec: NetworkSpec) -> None:
        if self._stopping or not self.networks.offer(spec):
            return
        if not spec.deleted and self._verified.get(spec.id) == _network_key(spec):
            return  # recast for a port's sake, unchanged: the bridge was checked since the audit
        await self.sync(f"net:{spec.id}")
        if spec.deleted:
            for port in self._live_ports():
                if port.network is not None and port.network.id == spec.id:
                    await self.sync(f"port:{port.id}")

    async def offer_local_port(self, spec: PortSpec) -> None:
        """A port of this node's DHCP or L3 agent: wire it like a bound port."""
        if spec.network is not None and self.networks.get(spec.network.id) is None:
            self.networks.offer(spec.network)
        if self.local_ports.get(spec.id) == spec:
            return
        self.local_ports[spec.id] = spec
        await self.sync(f"port:{spec.id}")

    async def withdraw_local_port(self, port_id: str) -> None:
        if self.local_ports.pop(port_id, None) is not None:
            await self.sync(f"port:{port_id}")

    async def load(self, state: AgentState, since: int) -> set[str]:
        changed = {f"net:{k}" for k in self.networks.replace(state.networks, since=since)}
        for port in state.ports:
            if port.network is not None:
                self.networks.offer(port.network)
        changed |= {f"port:{k}" for k in self.ports.replace(state.ports, since=since)}
        self._verify_filter = True
        return changed

    # -- what exists -------------------------------------------------------------------------

    def _port(self, port_id: str) -> PortSpec | None:
        """The port as it should be: the server's live spec, else a local agent's."""
        return self.ports.live(port_id) or self.local_ports.get(port_id)

    def _live_ports(self) -> list[PortSpec]:
        ports = {p.id: p for p in self.local_ports.values()}
        ports.update({p.id: p for p in self.ports.live_specs()})
        return [p for p in ports.values() if not p.deleted and p.network is not None]

    def _network(self, network_id: str) -> NetworkSpec | None:
        network = self.networks.live(network_id)
        if network is not None:
            return network
        if self.networks.get(network_id) is not None:
            return None  # deleted
        for port in self._live_ports():
            if port.network is not None and port.network.id == network_id:
                return port.network
        return None

    def desired_keys(self) -> set[str]:
        keys = {f"port:{k}" for k in self.ports.keys()} | {f"port:{k}" for k in self.local_ports}
        keys |= {f"net:{k}" for k in self.networks.keys()}
        keys |= {f"net:{p.network.id}" for p in self._live_ports()}
        return keys

    async def machine_keys(self) -> set[str]:
        return {f"net:{k}" for k in await self.driver.list_networks()}

    def revision_of(self, key: str) -> int:
        kind, _, ident = key.partition(":")
        store = self.ports if kind == "port" else self.networks
        record = store.get(ident)
        return record.revision if record is not None else 0

    # -- syncing -----------------------------------------------------------------------------

    async def run_once(self) -> None:
        self._verified.clear()
        self._wired.clear()
        await super().run_once()
        verify, self._verify_filter = self._verify_filter, False
        if verify or self.synced:
            await self._ensure_filter(verify=True)

    async def sync_key(self, key: str) -> None:
        kind, _, ident = key.partition(":")
        if kind == "net":
            await self._sync_network(ident)
        elif kind == "port":
            await self._sync_port(ident)

    async def _sync_network(self, network_id: str) -> None:
        spec = self._network(network_id)
        in_use = any(p.network is not None and p.network.id == network_id
                     for p in self._live_ports())
        self._verified.pop(network_id, None)
        have = await self.driver.inspect_network(network_id)
        if spec is None or not in_use:
            if have is not None:
                log.info("l2: removing network %s from this node", network_id)
                await self.driver.remove_network(network_id)
            return
        if have is None or not have.matches(spec, self.data_ip):
            for port_id in [p for p, n in self._port_network.items() if n == network_id]:
                self._wired.pop(port_id, None)  # look at its ports again
            await self.driver.ensure_network(spec)
        self._verified[network_id] = _network_key(spec)

    async def _sync_port(self, port_id: str) -> None:
        spec = self._port(port_id)
        if spec is None:
            await self._sync_gone_port(port_id)
            return
        if spec.network is None:
            raise PermanentFailure(f"port {port_id} came without its network")
        network = self._network(spec.network.id)
        if network is None:
            raise PermanentFailure(f"network {spec.network.id} of port {port_id} is deleted")
        previous = self._port_network.get(port_id)
        self._port_network[port_id] = network.id
        if (self._verified.get(network.id) != _network_key(network)
                and await self.sync(f"net:{network.id}") == "error"):
            raise PermanentFailure(f"network {network.id} cannot be set up here: "
                                   f"{self._failed.get(f'net:{network.id}', (0, '?'))[1]}")
        if previous is not None and previous != network.id:
            await self.sync(f"net:{previous}")
        await self._filter.run()
        await self._forget_what_rules_no_longer_allow(spec)
        wiring = _wiring(spec, network)
        if self._wired.get(port_id) == wiring:
            await self._report(spec, "ACTIVE" if spec.admin_state_up else "DOWN")
            return
        self._wired.pop(port_id, None)
        have = await self.driver.inspect_port(spec)
        if have.exists and (have.network_id != network.id or have.up != spec.admin_state_up
                            or have.mtu != network.segment.mtu):
            try:
                await self.driver.plug_port(spec, network)
            except TemporaryFailure:
                self._verified.pop(network.id, None)  # the bridge may be gone: look again
                raise
            have = await self.driver.inspect_port(spec)
        wired = have.exists and have.network_id == network.id
        if wired and have.up == spec.admin_state_up and have.mtu == network.segment.mtu:
            self._wired[port_id] = wiring
        status = "ACTIVE" if wired and spec.admin_state_up else "DOWN"
        await self._report(spec, status)

    async def _forget_what_rules_no_longer_allow(self, spec: PortSpec) -> None:
        """Connections a removed rule allowed would live on as established: drop them.

        Only when something is allowed no more: a rule whose remote group gained a
        member (every port of a group is recast when one joins) narrows nothing, and
        dumping conntrack for each of them would cost O(ports) per new port."""
        now = (filtered(spec), _rule_set(spec, "ingress"), _rule_set(spec, "egress"))
        before = self._rules.get(spec.id)
        if before is not None and before != now and now[0]:
            newly = not before[0]
            inbound = newly or not _covers(now[1], before[1])
            outbound = newly or not _covers(now[2], before[2])
            if inbound or outbound:
                await self.driver.forget_connections(spec, inbound=inbound, outbound=outbound)
        self._rules[spec.id] = now

    async def _sync_gone_port(self, port_id: str) -> None:
        self._rules.pop(port_id, None)
        self._wired.pop(port_id, None)
        self._reported.pop(port_id, None)  # bound here again, it is reported afresh
        record = self.ports.get(port_id)
        network_id = self._port_network.pop(port_id, None)
        await self._filter.run()
        if record is not None:
            have = await self.driver.inspect_port(record.spec)
            if have.exists and have.network_id is not None:
                log.info("l2: taking device of deleted port %s off its bridge", port_id)
                await self.driver.unplug_port(record.spec)
        if network_id is not None:
            await self.sync(f"net:{network_id}")

    async def _ensure_filter(self, *, verify: bool = False) -> None:
        if await self.driver.ensure_filter(self._live_ports(), verify=verify):
            self.filter_rewrites += 1

    async def _apply_filter(self) -> None:
        await self._ensure_filter()

    # -- reports -----------------------------------------------------------------------------

    async def _report(self, spec: PortSpec, status: str, detail: str = "") -> None:
        if spec.id in self.local_ports and self.ports.get(spec.id) is None:
            return  # the server did not bind it here; nobody waits for its status
        report = PortReport(port_id=spec.id, host=self.host, revision=spec.revision,
                            status=status, detail=detail)
        now = self._clock()
        last = self._reported.get(spec.id)
        if last is not None and last[0] == report and now - last[1] < self.options.report_every:
            return
        self._reported[spec.id] = (report, now)
        await self.bus.cast(SERVER_TARGET, "report_port", report=report)

    async def report_failure(self, key: str, message: str) -> None:
        kind, _, ident = key.partition(":")
        spec = self.ports.live(ident) if kind == "port" else None
        if spec is not None:
            await self._report(spec, "ERROR", message)

    def prune(self) -> None:
        for port_id in self.ports.prune():
            self._reported.pop(port_id, None)
            self.forget(f"port:{port_id}")
        for network_id in self.networks.prune():
            self.forget(f"net:{network_id}")

    async def teardown(self) -> None:
        for network_id in await self.driver.list_networks():
            await self.driver.remove_network(network_id)
        await self.driver.remove_filter()

    def configurations(self) -> dict:
        live = self._live_ports()
        return {"devices": len(live), "tunnel_types": ["vxlan"], "l2_population": True,
                "bridge_mappings": {}, "tunneling_ip": self.data_ip,
                "networks": len({p.network.id for p in live if p.network is not None})}

    # -- devices appearing -------------------------------------------------------------------

    def _on_device(self, device: str) -> None:
        for port in self._live_ports():
            if (port.device or tap_name(port.id)) == device:
                self._wired.pop(port.id, None)
                self.sync_soon(f"port:{port.id}")
