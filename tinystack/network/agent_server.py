"""``network-server`` on the bus: what the network agents ask and report.

- ``agent_state(host, agent_type)`` (call) answers an ``AgentState``: every
  spec that agent should hold, so a restarted agent converges at once. An
  agent should ``report_agent`` first: the DHCP and L3 agents get their
  networks and routers only on the network node.
- ``report_port(report)`` (cast): an L2 agent wired a port (ACTIVE) or lost
  it (DOWN); the port's status follows (see the provisioning blocks below).
- ``report_dhcp(report)`` (cast): a DHCP server serves a revision of a
  network's hosts (``port_ids``).
- ``report_router(report)`` (cast): a router revision is in place; the
  router's status (ERROR on failure) and each floating IP's status follow.
- ``port_by_address(network_id, ip_address)`` (call): the port holding that
  address, for the metadata proxy: ``{"port_id", "device_id", "device_owner",
  "project_id"}`` or None.
- ``report_agent(report)`` (cast): a heartbeat for ``/v2.0/agents``. When a
  DHCP agent (re)starts and so becomes the network node, the network's own
  ports (DHCP, router) move to it and its DHCP and L3 agents get every spec,
  while the old node gets tombstones. When an L2 agent's data address
  changes, the VXLAN peers of its networks are recast.

Provisioning blocks, as Neutron's: a port goes ``ACTIVE`` only once every
block is closed, the L2 agent's (``report_port`` ACTIVE: the device is on its
bridge, its rules in place) and, when the network is served by DHCP, the DHCP
agent's (a ``report_dhcp`` whose ``port_ids`` name it: the guest can get its
address). The DHCP block applies to a port with an address on a DHCP-enabled
subnet, not owned by the network itself (``network:*``), on a network with a
DHCP port while a DHCP agent on the network node is alive; whichever report
comes last makes the port ACTIVE. The blocks are kept in memory (``_Blocks``):
after a restart of the server a port waiting for its DHCP block stays DOWN
until the DHCP agent reports again (at the latest after its ``report_every``);
a port already ACTIVE stays so.

Messages are validated with ``messages.py``; unknown fields are ignored.
"""

from __future__ import annotations

import asyncio
import logging
import threading

import sqlalchemy as sa
from sqlalchemy.orm import Session

from tinystack.network.heartbeats import Agents
from tinystack.network.dispatch import Dispatcher
from tinystack.network.messages import (
    AgentReport,
    DhcpReport,
    PortReport,
    RouterReport,
)
from tinystack.network.models import Agent, FloatingIp, IpAllocation, Port, Router, Subnet
from tinystack.network.policy import NETWORK_DEVICE_PREFIX
from tinystack.network.ports import Ports
from tinystack.network.service import DHCP_OWNER, NETWORK_NODE_OWNERS, Changes, NetworkCore
from tinystack.network.specs import DHCP_AGENT, L2_AGENT, SpecBuilder

__all__ = ["NetworkServerEndpoint"]

log = logging.getLogger(__name__)


class _Blocks:
    """What the agents said so far about ports not yet ACTIVE (one lock: the reports
    are handled in worker threads)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.wired: dict[str, str] = {}
        """Port id -> the host whose L2 agent wired it, while its DHCP block is open."""
        self.served: dict[str, tuple[int, frozenset[str]]] = {}
        """Network id -> (revision, port ids) of the newest DHCP report for it."""

    def dhcp_served(self, network_id: str, port_id: str) -> bool:
        return port_id in self.served.get(network_id, (0, frozenset()))[1]


class NetworkServerEndpoint:
    """The methods agents call on ``network-server`` (``messages.SERVER_TARGET``)."""

    def __init__(self, core: NetworkCore, agents: Agents, ports: Ports, dispatcher: Dispatcher):
        self._core, self._agents, self._ports = core, agents, ports
        self._dispatcher = dispatcher
        self._blocks = _Blocks()

    async def agent_state(self, host: str, agent_type: str = "", **_) -> dict:
        def build() -> dict:
            with self._core.db.session() as s:
                state = SpecBuilder(self._core, s).agent_state(host, agent_type)
                return state.model_dump(mode="json")
        return await asyncio.to_thread(build)

    async def report_port(self, report: dict, **_) -> None:
        parsed = PortReport.model_validate(report)
        await asyncio.to_thread(self._port_report, parsed)

    def _port_report(self, report: PortReport) -> None:
        blocks = self._blocks

        def hold(s: Session, port: Port) -> bool:
            """True (and the L2 block noted closed) while the DHCP block is open."""
            with blocks.lock:
                if blocks.dhcp_served(port.network_id, port.id) or not self._needs_dhcp(s, port):
                    blocks.wired.pop(port.id, None)
                    return False
                blocks.wired[port.id] = report.host
                return True

        if report.status != "ACTIVE":
            with blocks.lock:
                blocks.wired.pop(report.port_id, None)
        self._ports.report(report.port_id, report.host, report.status, hold)

    def _needs_dhcp(self, s: Session, port: Port) -> bool:
        """Whether ``port`` has a DHCP provisioning block (see the module's docstring)."""
        if port.device_owner.startswith(NETWORK_DEVICE_PREFIX) or not port.fixed_ips:
            return False
        subnets = {a.subnet_id for a in port.fixed_ips}
        if not s.scalar(sa.select(Subnet.id).where(Subnet.id.in_(subnets),
                                                   Subnet.enable_dhcp.is_(True)).limit(1)):
            return False
        if not s.scalar(sa.select(Port.id).where(Port.network_id == port.network_id,
                                                 Port.device_owner == DHCP_OWNER).limit(1)):
            return False
        node = self._core.network_node(s)
        return any(self._core.alive(agent) for agent in s.scalars(sa.select(Agent).where(
            Agent.agent_type == DHCP_AGENT, Agent.host == node,
            Agent.admin_state_up.is_(True))))

    async def report_dhcp(self, report: dict, **_) -> None:
        parsed = DhcpReport.model_validate(report)
        log.debug("network: DHCP for %s on %s at revision %d: %s %s", parsed.network_id,
                  parsed.host, parsed.revision, parsed.status, parsed.detail)
        if parsed.status != "ACTIVE":
            return
        blocks = self._blocks
        with blocks.lock:
            current = blocks.served.get(parsed.network_id)
            if current is not None and current[0] >= parsed.revision:
                return
            served = frozenset(parsed.port_ids)
            blocks.served[parsed.network_id] = (parsed.revision, served)
            ready = {p: h for p, h in blocks.wired.items() if p in served}
            for port_id in ready:
                del blocks.wired[port_id]
        if ready:
            await asyncio.to_thread(self._ports.activate, ready)

    async def report_router(self, report: dict, **_) -> None:
        parsed = RouterReport.model_validate(report)
        if parsed.status == "ERROR":
            log.warning("network: router %s failed on %s: %s", parsed.router_id, parsed.host,
                        parsed.detail)
        await asyncio.to_thread(self._router_status, parsed)

    async def port_by_address(self, network_id: str, ip_address: str, **_) -> dict | None:
        def read(s: Session) -> dict | None:
            port = s.scalar(sa.select(Port).join(
                IpAllocation, IpAllocation.port_id == Port.id).where(
                IpAllocation.network_id == network_id, IpAllocation.ip_address == ip_address))
            if port is None:
                return None
            return {"port_id": port.id, "device_id": port.device_id,
                    "device_owner": port.device_owner, "project_id": port.project_id}
        return await asyncio.to_thread(self._core.transaction, read)

    def _router_status(self, report: RouterReport) -> None:
        def write(s: Session) -> None:
            router = s.get(Router, report.router_id)
            if router is None:
                return
            wanted = "ERROR" if report.status == "ERROR" else "ACTIVE"
            if router.status != wanted:
                router.status = wanted
            for fip_id, status in report.floating_ips.items():
                fip = s.get(FloatingIp, fip_id)
                if fip is not None and fip.router_id == router.id and fip.status != status:
                    fip.status = status
        self._core.transaction(write)

    async def report_agent(self, report: dict, **_) -> None:
        parsed = AgentReport.model_validate(report)
        beat = await asyncio.to_thread(self._agents.record, parsed)
        if beat.started and parsed.agent_type == DHCP_AGENT:
            changes, old_hosts = await asyncio.to_thread(self._rehome)
            if old_hosts:
                log.info("network: the network node is now %s (was %s)", parsed.host,
                         ", ".join(sorted(old_hosts)))
                await self._dispatcher.cast_all(
                    await asyncio.to_thread(self._dispatcher.rehome_casts, old_hosts))
            await self._dispatcher.send(changes)
        if beat.data_ip_changed and parsed.agent_type == L2_AGENT:
            await self._dispatcher.send(await asyncio.to_thread(self._networks_on, parsed.host))

    def _rehome(self) -> tuple[Changes, set[str]]:
        """Bind the network's own ports to the network node; (changes, hosts they left)."""
        def write(s: Session) -> tuple[Changes, set[str]]:
            changes, old = Changes(), set()
            node = self._core.network_node(s)
            for port in s.scalars(sa.select(Port).where(
                    Port.device_owner.in_(NETWORK_NODE_OWNERS), Port.binding_host_id != node)):
                if port.binding_host_id:
                    old.add(port.binding_host_id)
                changes.gone(port)
                port.binding_host_id = node
                port.status = "DOWN"
                port.touch()
                changes.port(port)
            if old:
                changes.routers.update(s.scalars(sa.select(Router.id)))
            return changes, old
        return self._core.transaction(write)

    def _networks_on(self, host: str) -> Changes:
        with self._core.db.session() as s:
            return Changes(networks=set(s.scalars(sa.select(Port.network_id).where(
                Port.binding_host_id == host).distinct())))
