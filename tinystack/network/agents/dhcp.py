"""The DHCP agent: a DHCP and DNS server per network, and its metadata proxy.

It serves ``network-dhcp.<host>``: ``sync_dhcp(spec)`` carries the whole DHCP
view of one network (``DhcpSpec``: subnets, the DHCP port, every port's
address and name); a newer revision replaces an older one, ``deleted`` (or no
subnet with DHCP left) removes the server. ``sync(network_id)`` compares the
driver's fingerprint of the spec with what runs and changes only then; a
server that dies on its own is noticed by the driver and restarted at once.

Before the server starts, the DHCP port is handed to this node's L2 agent
(``offer_local_port``) so the network's bridge exists; when metadata is on,
the metadata proxy (``metadata.py``) listens on 169.254.169.254:80 in the
network's namespace and names guests from this spec's hosts. After each
applied revision the agent casts ``report_dhcp`` (``DhcpReport``) so the
server knows which ports can get an address.

Never opens the database; the Linux work is in ``drivers/dnsmasq.py``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from tinystack.common.bus import Bus
from tinystack.network.agents.drivers.base import DhcpDriver
from tinystack.network.agents.reconcile import Agent, AgentOptions, Desired
from tinystack.network.messages import (
    SERVER_TARGET,
    AgentReport,
    AgentState,
    DhcpReport,
    DhcpSpec,
    NetworkSpec,
    PortSpec,
    dhcp_target,
)

__all__ = ["DhcpAgent"]

log = logging.getLogger(__name__)


class DhcpAgent(Agent):
    agent_type = "DHCP agent"
    binary = "neutron-dhcp-agent"

    def __init__(self, *, host: str, bus: Bus, driver: DhcpDriver, l2=None, metadata=None,
                 options: AgentOptions | None = None,
                 clock: Callable[[], float] = time.monotonic, data_ip: str = "127.0.0.1"):
        super().__init__(host=host, bus=bus, options=options, clock=clock, data_ip=data_ip)
        self.driver = driver
        self.l2 = l2
        """This node's L2 agent (``offer_local_port``), or None."""
        self.metadata = metadata
        """This node's metadata proxy, or None."""
        self.specs: Desired[DhcpSpec] = Desired(lambda s: s.network_id, clock=clock,
                                                tombstone_ttl=self.options.tombstone_ttl)
        self._local_ports: dict[str, str] = {}
        self._reported: dict[str, tuple[DhcpReport, float]] = {}

    @property
    def target(self) -> str:
        return dhcp_target(self.host)

    def handlers(self) -> dict:
        async def sync_dhcp(spec: dict, **_) -> None:
            await self.receive(DhcpSpec.model_validate(spec))

        return {"sync_dhcp": sync_dhcp}

    async def start_driver(self) -> None:
        self.driver.watch(self.sync_soon)
        await self.driver.start()

    async def close_driver(self) -> None:
        if self.metadata is not None:
            await self.metadata.close()
        await self.driver.close()

    async def receive(self, spec: DhcpSpec) -> None:
        if self._stopping or not self.specs.offer(spec):
            return
        await self.sync(spec.network_id)

    async def load(self, state: AgentState, since: int) -> set[str]:
        return self.specs.replace(state.dhcp, since=since)

    def desired_keys(self) -> set[str]:
        return set(self.specs.keys())

    async def machine_keys(self) -> set[str]:
        return set(await self.driver.list_networks())

    def revision_of(self, key: str) -> int:
        record = self.specs.get(key)
        return record.revision if record is not None else 0

    def lookup(self, network_id: str, address: str) -> dict | None:
        """The port behind ``address`` on ``network_id``, for the metadata proxy:
        ``{"device_id", "project_id", "device_owner", "port_id"}`` or None."""
        spec = self.specs.live(network_id)
        if spec is None:
            return None
        for entry in spec.hosts:
            if entry.ip_address == address:
                return {"device_id": entry.device_id, "project_id": entry.project_id,
                        "device_owner": entry.device_owner, "port_id": entry.port_id}
        return None

    @staticmethod
    def _wanted(spec: DhcpSpec | None) -> bool:
        return (spec is not None and spec.dhcp_port is not None
                and any(s.enable_dhcp and s.ip_version == 4 for s in spec.subnets))

    async def sync_key(self, network_id: str) -> None:
        spec = self.specs.live(network_id)
        have = await self.driver.inspect(network_id)
        if not self._wanted(spec):
            if self.metadata is not None:
                await self.metadata.remove(network_id)
            if have is not None:
                log.info("dhcp: removing the DHCP server of network %s", network_id)
                await self.driver.remove(network_id)
            port_id = self._local_ports.pop(network_id, None)
            if port_id is not None and self.l2 is not None:
                await self.l2.withdraw_local_port(port_id)
            return
        await self._offer_port(spec)
        if have is None or not have.running or have.fingerprint != self.driver.fingerprint(spec):
            await self.driver.ensure(spec)
        if self.metadata is not None:
            if spec.metadata:
                await self.metadata.ensure(network_id, self.driver.namespace(network_id))
            else:
                await self.metadata.remove(network_id)
        await self._report(spec)

    async def _offer_port(self, spec: DhcpSpec) -> None:
        if self.l2 is None or spec.dhcp_port is None:
            return
        port = spec.dhcp_port
        network = port.network or NetworkSpec(id=spec.network_id, revision=0,
                                              segment=spec.segment)
        local = PortSpec(id=port.id, revision=port.revision, network=network, mac=port.mac,
                         fixed_ips=port.fixed_ips, device=port.device,
                         device_owner=port.device_owner or "network:dhcp",
                         port_security_enabled=False)
        previous = self._local_ports.get(spec.network_id)
        if previous is not None and previous != port.id:
            await self.l2.withdraw_local_port(previous)
        self._local_ports[spec.network_id] = port.id
        await self.l2.offer_local_port(local)

    async def _report(self, spec: DhcpSpec) -> None:
        report = DhcpReport(network_id=spec.network_id, host=self.host, revision=spec.revision,
                            status="ACTIVE", port_ids=sorted({h.port_id for h in spec.hosts}))
        now = self._clock()
        last = self._reported.get(spec.network_id)
        if last is not None and last[0] == report and now - last[1] < self.options.report_every:
            return
        self._reported[spec.network_id] = (report, now)
        await self.bus.cast(SERVER_TARGET, "report_dhcp", report=report)

    async def report_failure(self, key: str, message: str) -> None:
        spec = self.specs.live(key)
        if spec is not None:
            report = DhcpReport(network_id=key, host=self.host, revision=spec.revision,
                                status="ERROR", detail=message)
            self._reported[key] = (report, self._clock())
            await self.bus.cast(SERVER_TARGET, "report_dhcp", report=report)

    def prune(self) -> None:
        for network_id in self.specs.prune():
            self._reported.pop(network_id, None)
            self.forget(network_id)

    async def teardown(self) -> None:
        if self.metadata is not None:
            await self.metadata.close()
        for network_id in await self.driver.list_networks():
            await self.driver.remove(network_id)

    def agent_reports(self) -> list[AgentReport]:
        reports = super().agent_reports()
        if self.metadata is not None:
            reports.append(AgentReport(
                host=self.host, agent_type="Metadata agent", binary="neutron-metadata-agent",
                data_ip=self.data_ip, configurations=self.metadata.statistics()))
        return reports

    def configurations(self) -> dict:
        live = [s for s in self.specs.live_specs() if self._wanted(s)]
        return {"networks": len(live), "ports": sum(len(s.hosts) for s in live),
                "subnets": sum(len(s.subnets) for s in live), "dhcp_driver": "dnsmasq",
                "isolated_metadata": True}
