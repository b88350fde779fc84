"""In-memory network agent drivers with knobs, for the L2, DHCP and L3 agents' tests.

    l2 = FakeL2Driver(fail_on={"ensure_network"}, fail_times=2)       # then it works
    l2 = FakeL2Driver(fail_on={"plug_port"}, fail_kind="permanent")
    l2.add_device("tap1234")          # compute made a tap: the agent is told at once
    dhcp = FakeDhcpDriver(); dhcp.crash(network_id)   # dnsmasq died on its own
    l3 = FakeRouterDriver()

Each records every mutating call in ``calls`` as ``(name, key)`` and keeps
what "exists on the machine" in plain dicts the test may change behind the
agent's back (strays, a device unplugged by hand). ``mutations()`` lists the
names, so "converged: does nothing" is ``mutations() == []`` after a reset.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass

from tinystack.network.agents.drivers.base import (
    DhcpState,
    Gone,
    NetworkState,
    PermanentFailure,
    PortState,
    RouterState,
    TemporaryFailure,
)
from tinystack.network.agents.security_groups import filtered
from tinystack.network.messages import DhcpSpec, NetworkSpec, PortSpec, RouterSpec, tap_name

__all__ = ["FakeDhcpDriver", "FakeDevice", "FakeL2Driver", "FakeRouterDriver"]

_FAILURES = {"temporary": TemporaryFailure, "permanent": PermanentFailure, "gone": Gone}


class _Knobs:
    def __init__(self, fail_on, fail_kind, fail_times):
        self.fail_on = set(fail_on)
        self.fail_kind = fail_kind
        self.fail_times = fail_times
        """Fail this many times, then work; None fails forever."""
        self.failures = 0
        self.calls: list[tuple[str, str]] = []
        self.started = False
        self.closed = False

    def _maybe_fail(self, operation: str) -> None:
        if operation not in self.fail_on:
            return
        if self.fail_times is not None and self.failures >= self.fail_times:
            return
        self.failures += 1
        raise _FAILURES[self.fail_kind](f"{operation} failed on purpose")

    def _record(self, operation: str, key: str) -> None:
        self._maybe_fail(operation)
        self.calls.append((operation, key))

    @staticmethod
    async def _io() -> None:
        """Yield to the loop once, as a real driver's command or netlink call does."""
        await asyncio.sleep(0)

    def mutations(self, key: str | None = None) -> list[str]:
        return [name for name, k in self.calls if key in (None, k)]

    def reset(self) -> None:
        self.calls.clear()

    async def start(self) -> None:
        self.started = True

    async def close(self) -> None:
        self.closed = True


@dataclass
class FakeDevice:
    name: str
    network_id: str | None = None
    up: bool = False
    mtu: int = 1500


class FakeL2Driver(_Knobs):
    capabilities = frozenset({"vxlan", "flat", "local", "security_groups", "port_security"})

    def __init__(self, *, fail_on=frozenset(), fail_kind="temporary", fail_times=None):
        super().__init__(fail_on, fail_kind, fail_times)
        self.networks: dict[str, NetworkState] = {}
        self.devices: dict[str, FakeDevice] = {}
        self.filter: dict[str, list] | None = None
        """Port id -> its rules, for the ports the filter covers (None: no tables)."""
        self.filter_writes = 0
        self.forgotten: list[tuple[str, bool, bool]] = []
        """(port id, inbound, outbound) of each ``forget_connections``."""
        self._on_device: Callable[[str], None] | None = None

    def watch(self, on_device: Callable[[str], None]) -> None:
        self._on_device = on_device

    def add_device(self, name: str) -> None:
        """A device appears (compute made a tap)."""
        self.devices[name] = FakeDevice(name)
        if self._on_device is not None:
            self._on_device(name)

    async def list_networks(self) -> list[str]:
        return sorted(self.networks)

    async def inspect_network(self, network_id: str) -> NetworkState | None:
        return self.networks.get(network_id)

    async def ensure_network(self, spec: NetworkSpec) -> None:
        self._record("ensure_network", spec.id)
        await self._io()
        segment = spec.segment
        peers = frozenset(spec.vxlan_peers)
        vni = segment.segmentation_id if segment.network_type == "vxlan" and peers else None
        self.networks[spec.id] = NetworkState(
            network_id=spec.id, mtu=segment.mtu, vni=vni, peers=peers if vni else frozenset())

    async def remove_network(self, network_id: str) -> None:
        self._record("remove_network", network_id)
        self.networks.pop(network_id, None)
        for device in self.devices.values():
            if device.network_id == network_id:
                device.network_id = None

    async def inspect_port(self, port: PortSpec) -> PortState:
        device = self.devices.get(port.device or tap_name(port.id))
        if device is None:
            return PortState(exists=False)
        return PortState(exists=True, network_id=device.network_id, up=device.up,
                         mtu=device.mtu)

    async def plug_port(self, port: PortSpec, network: NetworkSpec) -> None:
        self._record("plug_port", port.id)
        device = self.devices.get(port.device or tap_name(port.id))
        if device is None:
            raise TemporaryFailure("no device")
        if network.id not in self.networks:
            raise TemporaryFailure("no bridge")
        device.network_id, device.up, device.mtu = (network.id, port.admin_state_up,
                                                    network.segment.mtu)

    async def unplug_port(self, port: PortSpec) -> None:
        self._record("unplug_port", port.id)
        device = self.devices.get(port.device or tap_name(port.id))
        if device is not None:
            device.network_id = None

    async def forget_connections(self, port: PortSpec, *, inbound: bool, outbound: bool) -> None:
        self._record("forget_connections", port.id)
        self.forgotten.append((port.id, inbound, outbound))

    async def ensure_filter(self, ports: list[PortSpec], *, verify: bool = False) -> bool:
        want = {p.id: [r.model_dump() for r in p.security_rules] + [p.mac, p.fixed_ips,
                                                                     p.allowed_address_pairs]
                for p in ports if filtered(p)} or None
        if want == self.filter:
            return False
        self._record("ensure_filter", "node")
        await self._io()
        self.filter = want
        self.filter_writes += 1
        return True

    async def remove_filter(self) -> None:
        self._record("remove_filter", "node")
        self.filter = None


@dataclass
class FakeServer:
    spec: DhcpSpec
    fingerprint: str
    running: bool = True
    pid: int = 4242
    starts: int = 1


class FakeDhcpDriver(_Knobs):
    def __init__(self, *, fail_on=frozenset(), fail_kind="temporary", fail_times=None):
        super().__init__(fail_on, fail_kind, fail_times)
        self.servers: dict[str, FakeServer] = {}
        self._on_change: Callable[[str], None] | None = None

    def watch(self, on_change: Callable[[str], None]) -> None:
        self._on_change = on_change

    def crash(self, network_id: str) -> None:
        """The network's server dies on its own."""
        self.servers[network_id].running = False
        if self._on_change is not None:
            self._on_change(network_id)

    def fingerprint(self, spec: DhcpSpec) -> str:
        body = spec.model_dump(exclude={"revision"})
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]

    def namespace(self, network_id: str) -> str:
        return f"qdhcp-{network_id}"

    async def list_networks(self) -> list[str]:
        return sorted(self.servers)

    async def inspect(self, network_id: str) -> DhcpState | None:
        server = self.servers.get(network_id)
        if server is None:
            return None
        return DhcpState(network_id=network_id, running=server.running,
                         fingerprint=server.fingerprint if server.running else "",
                         pid=server.pid if server.running else None)

    async def ensure(self, spec: DhcpSpec) -> DhcpState:
        self._record("ensure", spec.network_id)
        old = self.servers.get(spec.network_id)
        self.servers[spec.network_id] = FakeServer(
            spec=spec, fingerprint=self.fingerprint(spec), starts=(old.starts + 1) if old else 1)
        return await self.inspect(spec.network_id)

    async def remove(self, network_id: str) -> None:
        self._record("remove", network_id)
        self.servers.pop(network_id, None)


class FakeRouterDriver(_Knobs):
    def __init__(self, *, fail_on=frozenset(), fail_kind="temporary", fail_times=None):
        super().__init__(fail_on, fail_kind, fail_times)
        self.routers: dict[str, RouterSpec] = {}
        self.gateways: dict[str, list[str]] = {}

    def fingerprint(self, spec: RouterSpec) -> str:
        body = spec.model_dump(exclude={"revision"})
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]

    async def list_routers(self) -> list[str]:
        return sorted(self.routers)

    async def inspect(self, router_id: str) -> RouterState | None:
        spec = self.routers.get(router_id)
        if spec is None:
            return None
        return RouterState(router_id=router_id, fingerprint=self.fingerprint(spec),
                           floating_ips=frozenset(f.id for f in spec.floating_ips))

    async def ensure(self, spec: RouterSpec) -> RouterState:
        self._record("ensure", spec.id)
        self.routers[spec.id] = spec
        return await self.inspect(spec.id)

    async def remove(self, router_id: str) -> None:
        self._record("remove", router_id)
        self.routers.pop(router_id, None)

    async def ensure_gateways(self, addresses: dict[str, list[str]]) -> None:
        if addresses == self.gateways:
            return
        self._record("ensure_gateways", ",".join(sorted(addresses)))
        self.gateways = {k: list(v) for k, v in addresses.items()}

