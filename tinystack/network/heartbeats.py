"""Agents as ``/v2.0/agents`` shows them, their heartbeats, and availability zones.

Each agent (L2, DHCP, L3, metadata) casts an ``AgentReport`` now and then;
``record`` keeps one row per (type, host) with the time of the last beat, so
``alive`` is "heard from within ``agent_down_time``". A report from an agent
that was not alive (new, or back after a silence) counts as a (re)start and
sets ``started_at``, which is how the newest DHCP agent, and so the network
node, is found. Availability zones are those of alive DHCP agents (network
zones) and L3 agents (router zones), as Neutron lists them.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from tinystack.network.errors import AgentNotFound
from tinystack.network.messages import AgentReport
from tinystack.network.models import Agent
from tinystack.network.service import Context, NetworkCore, new_uuid
from tinystack.network.views import agent_view

__all__ = ["Agents", "Heartbeat", "TOPICS", "ZONE_RESOURCES"]

TOPICS = {"DHCP agent": "dhcp_agent", "L3 agent": "l3_agent"}
ZONE_RESOURCES = {"DHCP agent": "network", "L3 agent": "router"}


@dataclass(frozen=True)
class Heartbeat:
    """What a report changed: whether the agent (re)started, and its data address."""

    started: bool
    data_ip_changed: bool


class Agents:
    def __init__(self, core: NetworkCore):
        self.core = core

    def _get(self, s: Session, ctx: Context, agent_id: str) -> Agent:
        ctx.enforce("get_agent")
        agent = s.get(Agent, agent_id)
        if agent is None:
            raise AgentNotFound(id=agent_id)
        return agent

    def list(self, ctx: Context, hints: dict[str, list[str]]) -> list[dict]:
        ctx.enforce("get_agent")

        def read(s: Session) -> list[dict]:
            query = sa.select(Agent).order_by(Agent.host, Agent.agent_type)
            if hints.get("id"):
                query = query.where(Agent.id.in_(hints["id"]))
            return [agent_view(self.core, a) for a in s.scalars(query)]
        return self.core.transaction(read)

    def show(self, ctx: Context, agent_id: str) -> dict:
        return self.core.transaction(lambda s: agent_view(self.core,
                                                          self._get(s, ctx, agent_id)))

    def update(self, ctx: Context, agent_id: str, values: dict) -> dict:
        def write(s: Session) -> dict:
            agent = self._get(s, ctx, agent_id)
            ctx.enforce("update_agent")
            for name in ("admin_state_up", "description"):
                if name in values:
                    setattr(agent, name, values[name])
            s.flush()
            return agent_view(self.core, agent)
        return self.core.transaction(write)

    def delete(self, ctx: Context, agent_id: str) -> None:
        def write(s: Session) -> None:
            agent = self._get(s, ctx, agent_id)
            ctx.enforce("delete_agent")
            s.delete(agent)
        self.core.transaction(write)

    def record(self, report: AgentReport) -> Heartbeat:
        """Store a heartbeat; says whether the agent (re)started or moved its data address."""
        def write(s: Session) -> Heartbeat:
            now = self.core.clock()
            agent = s.scalar(sa.select(Agent).where(Agent.agent_type == report.agent_type,
                                                    Agent.host == report.host))
            if agent is None:
                agent = Agent(id=new_uuid(), agent_type=report.agent_type, host=report.host,
                              binary=report.binary, created_at=now, started_at=now,
                              topic=TOPICS.get(report.agent_type, "N/A"),
                              heartbeat_timestamp=now)
                s.add(agent)
                started, moved = True, True
            else:
                started = not self.core.alive(agent)
                moved = agent.data_ip != report.data_ip
                if started:
                    agent.started_at = now
            agent.binary = report.binary
            agent.heartbeat_timestamp = now
            agent.data_ip = report.data_ip
            agent.configurations = dict(report.configurations)
            agent.availability_zone = report.availability_zone \
                if report.agent_type in ZONE_RESOURCES else None
            s.flush()
            return Heartbeat(started=started, data_ip_changed=moved)
        return self.core.transaction(write)

    def zones(self, ctx: Context) -> list[dict]:
        ctx.enforce("get_availability_zone")

        def read(s: Session) -> list[dict]:
            found: dict[tuple[str, str], bool] = {}
            for agent in s.scalars(sa.select(Agent).where(
                    Agent.agent_type.in_(list(ZONE_RESOURCES)))):
                if not agent.availability_zone:
                    continue
                key = (agent.availability_zone, ZONE_RESOURCES[agent.agent_type])
                found[key] = found.get(key, False) or (
                    self.core.alive(agent) and agent.admin_state_up)
            return [{"name": name, "resource": resource,
                     "state": "available" if up else "unavailable"}
                    for (name, resource), up in sorted(found.items())]
        return self.core.transaction(read)
