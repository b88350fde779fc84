"""The L3 agent: routers as namespaces, SNAT and floating IPs, the host's external address.

It serves ``network-l3.<host>``: ``sync_router(spec)`` carries one router
whole (``RouterSpec``: interfaces, gateway, routes, floating IPs); a newer
revision replaces an older one, ``deleted`` or ``admin_state_up`` false
removes it. Keys: each router id, and ``gateways``, the host's own addresses
on external networks (each external subnet's gateway, taken from the
routers' ``external_gateway_ip`` and gateway CIDR), so the host reaches
floating IPs through the external bridge.

Before a router is built its ports are handed to this node's L2 agent
(``offer_local_port``) so the bridges exist. After each applied revision the
agent casts ``report_router`` (``RouterReport``: the router and each of its
floating IPs ACTIVE). Never opens the database; the Linux work is in
``drivers/router_ns.py`` (which also sends IPv6 router advertisements on
``slaac``/``dhcpv6-stateless`` interfaces; a driver with ``watch`` calls back
when such a process dies, and that router is synced again).
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable

from tinystack.common.bus import Bus
from tinystack.network.agents.drivers.base import RouterDriver
from tinystack.network.agents.reconcile import Agent, AgentOptions, Desired
from tinystack.network.messages import (
    SERVER_TARGET,
    AgentState,
    NetworkSpec,
    PortSpec,
    RouterInterface,
    RouterReport,
    RouterSpec,
    l3_target,
)

__all__ = ["GATEWAYS", "L3Agent"]

log = logging.getLogger(__name__)

GATEWAYS = "gateways"
"""The key of the host's addresses on external networks."""


class L3Agent(Agent):
    agent_type = "L3 agent"
    binary = "neutron-l3-agent"

    def __init__(self, *, host: str, bus: Bus, driver: RouterDriver, l2=None,
                 options: AgentOptions | None = None,
                 clock: Callable[[], float] = time.monotonic, data_ip: str = "127.0.0.1"):
        super().__init__(host=host, bus=bus, options=options, clock=clock, data_ip=data_ip)
        self.driver = driver
        self.l2 = l2
        self.routers: Desired[RouterSpec] = Desired(lambda s: s.id, clock=clock,
                                                    tombstone_ttl=self.options.tombstone_ttl)
        self._local_ports: dict[str, set[str]] = {}
        self._reported: dict[str, tuple[RouterReport, float]] = {}

    @property
    def target(self) -> str:
        return l3_target(self.host)

    def handlers(self) -> dict:
        async def sync_router(spec: dict, **_) -> None:
            await self.receive(RouterSpec.model_validate(spec))

        return {"sync_router": sync_router}

    async def start_driver(self) -> None:
        watch = getattr(self.driver, "watch", None)
        if watch is not None:  # the router-advertisement process died: sync that router
            watch(self.sync_soon)
        await self.driver.start()

    async def close_driver(self) -> None:
        await self.driver.close()

    async def receive(self, spec: RouterSpec) -> None:
        if self._stopping or not self.routers.offer(spec):
            return
        await self.sync(spec.id)
        await self.sync(GATEWAYS)

    async def load(self, state: AgentState, since: int) -> set[str]:
        return self.routers.replace(state.routers, since=since)

    def desired_keys(self) -> set[str]:
        return set(self.routers.keys())

    async def run_once(self) -> None:
        await super().run_once()
        await self.sync(GATEWAYS)  # after the routers: their ports bring the bridges

    async def machine_keys(self) -> set[str]:
        return set(await self.driver.list_routers())

    def revision_of(self, key: str) -> int:
        record = self.routers.get(key)
        return record.revision if record is not None else 0

    def _live(self, router_id: str) -> RouterSpec | None:
        spec = self.routers.live(router_id)
        return spec if spec is not None and spec.admin_state_up else None

    async def sync_key(self, key: str) -> None:
        if key == GATEWAYS:
            await self.driver.ensure_gateways(self._gateways())
            return
        spec = self._live(key)
        have = await self.driver.inspect(key)
        if spec is None:
            if have is not None:
                log.info("l3: removing router %s from this node", key)
                await self.driver.remove(key)
            await self._offer_ports(key, [], None)
            return
        await self._offer_ports(key, spec.interfaces, spec.gateway)
        if have is None or have.fingerprint != self.driver.fingerprint(spec):
            have = await self.driver.ensure(spec)
        await self._report(spec, {fid: "ACTIVE" for fid in sorted(have.floating_ips)})

    def _gateways(self) -> dict[str, list[str]]:
        """External network id -> the host's addresses on it."""
        found: dict[str, set[str]] = {}
        for spec in self.routers.live_specs():
            gw = spec.gateway
            if not spec.admin_state_up or gw is None or not spec.external_gateway_ip:
                continue
            try:
                prefix = ipaddress.ip_network(gw.cidr, strict=False).prefixlen
                address = ipaddress.ip_address(spec.external_gateway_ip)
            except ValueError:
                continue
            found.setdefault(gw.network_id, set()).add(f"{address}/{prefix}")
        return {network_id: sorted(cidrs) for network_id, cidrs in found.items()}

    async def _offer_ports(self, router_id: str, interfaces: list[RouterInterface],
                           gateway: RouterInterface | None) -> None:
        if self.l2 is None:
            return
        wanted = set()
        owned = [(i, "network:router_interface") for i in interfaces]
        if gateway is not None:
            owned.append((gateway, "network:router_gateway"))
        for interface, owner in owned:
            wanted.add(interface.port_id)
            network = NetworkSpec(id=interface.network_id, revision=0, segment=interface.segment)
            ip = {"subnet_id": interface.subnet_id, "ip_address": interface.ip_address,
                  "cidr": interface.cidr}
            await self.l2.offer_local_port(PortSpec(
                id=interface.port_id, revision=0, network=network, mac=interface.mac,
                fixed_ips=[ip], device_owner=owner, port_security_enabled=False,
                device_id=router_id))
        for port_id in self._local_ports.get(router_id, set()) - wanted:
            await self.l2.withdraw_local_port(port_id)
        if wanted:
            self._local_ports[router_id] = wanted
        else:
            self._local_ports.pop(router_id, None)

    async def _report(self, spec: RouterSpec, floating_ips: dict[str, str], *,
                      status: str = "ACTIVE", detail: str = "") -> None:
        report = RouterReport(router_id=spec.id, host=self.host, revision=spec.revision,
                              status=status, floating_ips=floating_ips, detail=detail)
        now = self._clock()
        last = self._reported.get(spec.id)
        if last is not None and last[0] == report and now - last[1] < self.options.report_every:
            return
        self._reported[spec.id] = (report, now)
        await self.bus.cast(SERVER_TARGET, "report_router", report=report)

    async def report_failure(self, key: str, message: str) -> None:
        spec = self._live(key) if key != GATEWAYS else None
        if spec is not None:
            await self._report(spec, {f.id: "ERROR" for f in spec.floating_ips},
                               status="ERROR", detail=message)

    def prune(self) -> None:
        for router_id in self.routers.prune():
            self._reported.pop(router_id, None)
            self.forget(router_id)

    async def teardown(self) -> None:
        for router_id in await self.driver.list_routers():
            await self.driver.remove(router_id)
        await self.driver.ensure_gateways({})

    def configurations(self) -> dict:
        live = [s for s in self.routers.live_specs() if s.admin_state_up]
        return {"routers": len(live), "interfaces": sum(len(s.interfaces) for s in live),
                "floating_ips": sum(len(s.floating_ips) for s in live),
                "gateway_external_network_id": "", "agent_mode": "legacy"}
