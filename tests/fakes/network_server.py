"""Stands in for ``network-server`` on the bus: answers the agents, keeps their reports.

    server = FakeNetworkServer()
    await bus.serve(SERVER_TARGET, server)
    server.states["Linux bridge agent"] = AgentState(ports=[...])   # what agent_state returns
    await server.wait_for(lambda: server.port_status(port_id) is not None)

``owners`` answers ``port_by_address`` (``(network_id, ip) -> {...}``);
``state_calls`` counts ``agent_state`` calls; ``silent`` makes it time out
(a server that is down), so an agent cannot learn the whole state.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from tinystack.network.messages import (
    AgentReport,
    AgentState,
    DhcpReport,
    PortReport,
    RouterReport,
)

__all__ = ["FakeNetworkServer"]


class FakeNetworkServer:
    """Stands in for ``network-server``: answers ``agent_state`` and keeps reports."""

    def __init__(self) -> None:
        self.states: dict[str, AgentState] = {}
        self.ports: list[PortReport] = []
        self.agents: list[AgentReport] = []
        self.dhcp: list[DhcpReport] = []
        self.routers: list[RouterReport] = []
        self.owners: dict[tuple[str, str], dict] = {}
        self.changed = asyncio.Condition()
        self.state_calls = 0
        self.silent = False

    async def agent_state(self, host: str, agent_type: str, **_) -> dict:
        self.state_calls += 1
        if self.silent:
            await asyncio.Event().wait()
        return self.states.get(agent_type, AgentState()).model_dump(mode="json")

    async def port_by_address(self, network_id: str, ip_address: str, **_) -> dict | None:
        return self.owners.get((network_id, ip_address))

    async def _keep(self, into: list, item) -> None:
        async with self.changed:
            into.append(item)
            self.changed.notify_all()

    async def report_port(self, report: dict, **_) -> None:
        await self._keep(self.ports, PortReport.model_validate(report))

    async def report_agent(self, report: dict, **_) -> None:
        await self._keep(self.agents, AgentReport.model_validate(report))

    async def report_dhcp(self, report: dict, **_) -> None:
        await self._keep(self.dhcp, DhcpReport.model_validate(report))

    async def report_router(self, report: dict, **_) -> None:
        await self._keep(self.routers, RouterReport.model_validate(report))

    def port_status(self, port_id: str) -> PortReport | None:
        found = [r for r in self.ports if r.port_id == port_id]
        return found[-1] if found else None

    async def wait_for(self, predicate: Callable[[], object], timeout: float = 20.0) -> None:
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(predicate), timeout)
