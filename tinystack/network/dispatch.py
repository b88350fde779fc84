"""After a write commits, tell the agents: ``Changes`` in, casts out.

``plan`` (in a worker thread, one read transaction) expands what changed
into the specs each agent must get, then ``send`` casts them:

- every changed port to ``network-l2.<its host>`` (``sync_port``), and a
  tombstone (``deleted``) to a host a port left;
- ports whose rules changed: members of a group whose rules changed, and
  members of groups with rules naming a group whose members changed (cast
  after everything else, so a new port's own spec and DHCP entry are not
  queued behind the recast of every member of its groups);
- for every changed network, its ``DhcpSpec`` to the network node
  (``network-dhcp.<node>``, ``sync_dhcp``) and its ``NetworkSpec`` (VXLAN
  peers) to every host with ports on it (``sync_network``), a tombstone to a
  host left with none;
- every changed router's ``RouterSpec`` to ``network-l3.<node>``
  (``sync_router``);
- for every server whose ports or floating IPs changed, the event
  ``network.port.changed`` (``{"device_id": server id}``), so the compute
  service refreshes its ``addresses`` (Neutron's ``network-changed`` event
  to Nova).

A cast (or a plan) that fails is logged and skipped, never failing the
request that already committed: the agents converge on their next
``agent_state``. Casting happens before the API answers, so when a request
returns its casts are on the bus.
"""

from __future__ import annotations

import asyncio
import logging

import sqlalchemy as sa
from pydantic import BaseModel

from tinystack.network import messages as m
from tinystack.network.models import Network, Port, Router
from tinystack.network.service import DHCP_OWNER, Changes, NetworkCore
from tinystack.network.specs import SpecBuilder

__all__ = ["Dispatcher", "Cast", "PORT_CHANGED"]

PORT_CHANGED = "network.port.changed"

log = logging.getLogger(__name__)

Cast = tuple[str, str, BaseModel]
"""(target, method, spec)"""


class Dispatcher:
    def __init__(self, core: NetworkCore, bus):
        self.core = core
        self.bus = bus

    async def send(self, changes: Changes | None) -> None:
        """Cast what ``changes`` means to the agents; never fails the (committed) request."""
        if not changes:
            return
        try:
            casts = await asyncio.to_thread(self.plan, changes)
        except Exception:
            log.exception("network: could not build the specs for %s; the agents will "
                          "catch up on their next agent_state", changes)
            return
        await self.cast_all(casts)
        for device_id in sorted(changes.devices):
            try:
                await self.bus.publish(PORT_CHANGED, {"device_id": device_id},
                                       publisher="network")
            except Exception:
                log.exception("network: could not tell compute that %s changed", device_id)

    async def cast_all(self, casts: list[Cast]) -> None:
        for target, method, spec in casts:
            try:
                await self.bus.cast(target, method, spec=spec)
            except Exception:
                log.exception("network: could not cast %s to %s", method, target)

    def plan(self, changes: Changes) -> list[Cast]:
        with self.core.db.session() as s:
            b = SpecBuilder(self.core, s)
            casts: list[Cast] = []
            rules_only = b.ports_in_groups(changes.groups)
            rules_only |= b.ports_in_groups(b.groups_naming(changes.members))
            rules_only -= changes.ports
            for port_id, (host, network_id) in sorted(changes.gone_ports.items()):
                port = s.get(Port, port_id)
                if port is None or port.binding_host_id != host:
                    casts.append((m.l2_target(host), "sync_port", b.port_tombstone(port_id, host)))
            for port in self._ports(s, set(changes.ports)):
                if port.binding_host_id:
                    casts.append((m.l2_target(port.binding_host_id), "sync_port",
                                  b.port_spec(port)))
            left: dict[str, set[str]] = {}
            for host, network_id in changes.gone_ports.values():
                left.setdefault(network_id, set()).add(host)
            for network_id in sorted(changes.networks | changes.gone_networks):
                casts.extend(self._network(b, network_id, left.get(network_id, set())))
            for router_id in sorted(changes.routers | changes.gone_routers):
                casts.append((m.l3_target(b.network_node), "sync_router",
                              b.router_spec(router_id)))
            # Last, the ports recast for their rules alone (a member joined or left one of
            # their remote groups): the changed port and its DHCP entry go out first.
            for port in self._ports(s, rules_only):
                if port.binding_host_id:
                    casts.append((m.l2_target(port.binding_host_id), "sync_port",
                                  b.port_spec(port)))
            return casts

    @staticmethod
    def _ports(s, port_ids: set[str]) -> list[Port]:
        ids = sorted(port_ids)
        found = []
        for chunk in range(0, len(ids), 500):
            found.extend(s.scalars(sa.select(Port).where(Port.id.in_(ids[chunk:chunk + 500]))))
        return sorted(found, key=lambda p: p.id)

    @staticmethod
    def _network(b: SpecBuilder, network_id: str, left: set[str]) -> list[Cast]:
        casts: list[Cast] = [(m.dhcp_target(b.network_node), "sync_dhcp",
                              b.dhcp_spec(network_id))]
        network = b.row(Network, network_id)
        hosts = b.hosts_of(network_id) if network is not None else set()
        for host in sorted(hosts):
            casts.append((m.l2_target(host), "sync_network", b.network_spec(network, host)))
        for host in sorted(left - hosts):
            casts.append((m.l2_target(host), "sync_network", b.network_tombstone(network_id)))
        return casts

    def rehome_casts(self, old_hosts: set[str]) -> list[Cast]:
        """Tombstones for every DHCP server and router on hosts that are no longer the node."""
        with self.core.db.session() as s:
            b = SpecBuilder(self.core, s)
            casts: list[Cast] = []
            networks = sorted(s.scalars(sa.select(Port.network_id).where(
                Port.device_owner == DHCP_OWNER).distinct()))
            routers = sorted(s.scalars(sa.select(Router.id)))
            for host in sorted(old_hosts - {b.network_node}):
                for network_id in networks:
                    casts.append((m.dhcp_target(host), "sync_dhcp", m.DhcpSpec(
                        network_id=network_id, revision=self.core.next_revision(),
                        segment=m.Segment(), deleted=True)))
                for router_id in routers:
                    casts.append((m.l3_target(host), "sync_router", m.RouterSpec(
                        id=router_id, revision=self.core.next_revision(), deleted=True)))
            return casts
