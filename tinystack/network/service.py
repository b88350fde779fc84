"""What every network service module shares: the caller, transactions, lookups, quotas.

The rules live in one module per resource (``networks.py``, ``subnets.py``,
``ports.py``, ``routers.py``, ``floating_ips.py``, ``security_groups.py``,
``rbac.py``, ``quotas.py``, ``heartbeats.py``); each method is synchronous, runs
in a worker thread and opens its own transaction through
``NetworkCore.transaction``, which retries a transaction that lost a race
(a deadlock, an address or MAC another request took first: ``Retry``).

A write returns ``Changes``: which ports, networks, routers and security
groups the agents must hear about. ``dispatch.py`` turns them into specs
after the commit. Lookups here apply visibility: a resource the caller may
not see is "not found", as Neutron answers, and ``Context.enforce`` checks
``policy.py`` for what the caller may do to a resource it sees.
"""

from __future__ import annotations

import itertools
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import Session

from tinystack.common.db import Database, utcnow
from tinystack.common.policy import Credentials
from tinystack.config import Settings
from tinystack.network import policy
from tinystack.network.errors import (
    FloatingIPNotFound,
    NetworkNotFound,
    OverQuota,
    PortNotFound,
    RouterNotFound,
    SecurityGroupNotFound,
    SubnetNotFound,
)
from tinystack.network.models import (
    Agent,
    FloatingIp,
    Network,
    NetworkRbac,
    NetworkTag,
    Port,
    Quota,
    Router,
    SecurityGroup,
    Subnet,
)

__all__ = ["Context", "Changes", "NetworkCore", "Retry", "new_uuid", "replace", "QUOTA_DEFAULTS",
           "DHCP_OWNER", "ROUTER_INTERFACE_OWNER", "ROUTER_GATEWAY_OWNER",
           "FLOATINGIP_OWNER", "NETWORK_NODE_OWNERS", "T"]

log = logging.getLogger(__name__)
T = TypeVar("T")

DHCP_OWNER = "network:dhcp"
ROUTER_INTERFACE_OWNER = "network:router_interface"
ROUTER_GATEWAY_OWNER = "network:router_gateway"
FLOATINGIP_OWNER = "network:floatingip"
NETWORK_NODE_OWNERS = (DHCP_OWNER, ROUTER_INTERFACE_OWNER, ROUTER_GATEWAY_OWNER)
"""Ports the network node wires (its DHCP and router namespaces)."""

QUOTA_DEFAULTS = {"network": 100, "subnet": 100, "port": 500, "router": 10,
                  "floatingip": 50, "security_group": 10, "security_group_rule": 100,
                  "rbac_policy": 10, "subnetpool": -1}
"""Neutron's default quotas; -1 means unlimited."""

_QUOTA_MODELS = {"network": Network, "subnet": Subnet, "port": Port, "router": Router,
                 "floatingip": FloatingIp, "security_group": SecurityGroup,
                 "rbac_policy": NetworkRbac}


def new_uuid() -> str:
    """Neutron's ids: a UUID with dashes."""
    return str(uuid.uuid4())


def replace(s: Session, collection: list, rows: list) -> None:
    """Swap a child collection's rows, deleting the old ones first (their keys may repeat)."""
    collection.clear()
    s.flush()
    collection.extend(rows)


class Retry(Exception):
    """This transaction lost a race it can win on a second try (an address, a MAC, a VNI)."""


@dataclass(frozen=True)
class Context:
    """The caller of one request, with the checks every service needs."""

    creds: Credentials

    @classmethod
    def system(cls) -> Context:
        """The service itself (bootstrap, agents' reports): admin, no project."""
        return cls(Credentials(user_id="tinystack-network", user_domain_id="default",
                               roles=frozenset({"admin", "member", "reader"})))

    @property
    def admin(self) -> bool:
        return policy.is_admin(self.creds)

    @property
    def service(self) -> bool:
        """The compute service acting for its servers (``service`` role): sees all ports."""
        return "service" in self.creds.roles

    @property
    def project_id(self) -> str | None:
        return self.creds.project_id

    def owns(self, project_id: str | None) -> bool:
        return self.project_id is not None and project_id == self.project_id

    def allowed(self, action: str, target: dict | None = None) -> bool:
        return policy.allowed(action, self.creds, target)

    def enforce(self, action: str, target: dict | None = None) -> None:
        policy.enforce(action, self.creds, target)

    def owner_for(self, values: dict) -> str:
        """The project a new resource belongs to: the body's ``project_id``, else the caller's."""
        return values.get("project_id") or self.project_id or ""


@dataclass
class Changes:
    """What the agents must hear about after a write; ``dispatch.py`` reads it."""

    ports: set[str] = field(default_factory=set)
    """Ports whose spec changed: recast to their binding host."""
    gone_ports: dict[str, tuple[str, str]] = field(default_factory=dict)
    """Ports removed from a host: port id -> (that host, network id), for tombstones."""
    networks: set[str] = field(default_factory=set)
    """Networks whose DHCP view or L2 peers changed."""
    gone_networks: set[str] = field(default_factory=set)
    routers: set[str] = field(default_factory=set)
    gone_routers: set[str] = field(default_factory=set)
    groups: set[str] = field(default_factory=set)
    """Security groups whose rules changed: their member ports are recast."""
    members: set[str] = field(default_factory=set)
    """Security groups whose member addresses changed: ports with rules naming them."""
    devices: set[str] = field(default_factory=set)
    """Servers whose ports or floating IPs changed: compute hears ``network.port.changed``."""

    def merge(self, other: Changes | None) -> Changes:
        if other is not None:
            for name in ("ports", "networks", "gone_networks", "routers", "gone_routers",
                         "groups", "members", "devices"):
                getattr(self, name).update(getattr(other, name))
            self.gone_ports.update(other.gone_ports)
        return self

    def __bool__(self) -> bool:
        return any((self.ports, self.gone_ports, self.networks, self.gone_networks,
                    self.routers, self.gone_routers, self.groups, self.members, self.devices))

    def device(self, port: Port | None) -> Changes:
        """Note that the server owning ``port`` (if a server does) should refresh it."""
        if port is not None and port.device_id and port.device_owner.startswith("compute:"):
            self.devices.add(port.device_id)
        return self

    def port(self, port: Port, *, addresses: bool = True) -> Changes:
        """Note a port that changed: its spec, its network's DHCP view and, when its
        addresses or groups changed, the rules of every port that names its groups."""
        self.ports.add(port.id)
        self.networks.add(port.network_id)
        self.device(port)
        if addresses:
            self.members.update(port.security_group_ids)
        return self

    def gone(self, port: Port) -> Changes:
        """Note a port about to disappear (or leave its host)."""
        if port.binding_host_id:
            self.gone_ports[port.id] = (port.binding_host_id, port.network_id)
        self.networks.add(port.network_id)
        self.device(port)
        self.members.update(port.security_group_ids)
        return self


_RETRY_CODES = ("1213", "1205", "40001", "40P01", "database is locked", "deadlock")


def _retriable(error: DBAPIError) -> bool:
    text = str(getattr(error, "orig", error))
    code = str(getattr(getattr(error, "orig", None), "sqlstate", "") or "")
    args = getattr(getattr(error, "orig", None), "args", ())
    if args and isinstance(args[0], int):
        code = str(args[0])
    return any(marker in code or marker in text.lower() for marker in _RETRY_CODES)


class NetworkCore:
    """The database, the settings and the bookkeeping every service module shares."""

    ATTEMPTS = 12

    def __init__(self, db: Database, settings: Settings, clock: Callable[[], Any] = utcnow):
        self.db = db
        self.settings = settings
        self.conf = settings.network
        self.clock = clock
        self._revision_lock = threading.Lock()
        self._last_revision = 0

    # -- transactions ------------------------------------------------------------------

    def transaction(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(session, *args, **kwargs)`` in a transaction, retried when it lost a race
        (``Retry``, a deadlock, a constraint a concurrent commit broke).

        ``session.info["attempt"]`` counts the tries (0 first), so an allocation
        can spread its choices on a retry.
        """
        for attempt in itertools.count():
            try:
                with self.db.session() as s:
                    s.info["attempt"] = attempt
                    return fn(s, *args, **kwargs)
            except Retry:
                if attempt + 1 >= self.ATTEMPTS:
                    raise
            except IntegrityError:
                # A row we checked for changed under us (a port made on a network being
                # deleted...): the next try checks again and answers properly.
                if attempt + 1 >= self.ATTEMPTS:
                    raise
            except (OperationalError, DBAPIError) as error:
                if attempt + 1 >= self.ATTEMPTS or not _retriable(error):
                    raise
            log.debug("network: retrying %s (attempt %d)", getattr(fn, "__name__", fn),
                      attempt + 1)
            time.sleep(random.uniform(0, 0.005 * (attempt + 1)))
        raise AssertionError("unreachable")

    def next_revision(self) -> int:
        """A spec revision: larger than any given before, in this process and across restarts
        (microseconds since the epoch, bumped when two are asked for in one microsecond)."""
        with self._revision_lock:
            self._last_revision = max(self._last_revision + 1, time.time_ns() // 1000)
            return self._last_revision

    # -- the network node -------------------------------------------------------------

    def alive(self, agent: Agent) -> bool:
        age = (self.clock() - agent.heartbeat_timestamp).total_seconds()
        return age <= self.conf.agent_down_time

    def network_node(self, s: Session) -> str:
        """Where DHCP and routers run: the newest alive DHCP agent's host, else the setting."""
        agents = s.scalars(sa.select(Agent).where(
            Agent.agent_type == "DHCP agent", Agent.admin_state_up.is_(True)).order_by(
            Agent.started_at.desc(), Agent.created_at.desc()))
        for agent in agents:
            if self.alive(agent):
                return agent.host
        return self.conf.network_node or self.settings.node

    def zones(self, s: Session, agent_type: str) -> list[str]:
        """Availability zones with an alive agent of this type (networks: DHCP, routers: L3)."""
        agents = s.scalars(sa.select(Agent).where(Agent.agent_type == agent_type))
        return sorted({a.availability_zone for a in agents
                       if a.availability_zone and self.alive(a)})

    # -- lookups with visibility ---------------------------------------------------------

    @staticmethod
    def rbac_allows(network: Network, project_id: str | None, action: str) -> bool:
        return any(entry.action == action and entry.target_project in ("*", project_id)
                   for entry in network.rbac)

    def shared_for(self, ctx: Context, network: Network) -> bool:
        return self.rbac_allows(network, ctx.project_id, "access_as_shared")

    def can_see_network(self, ctx: Context, network: Network) -> bool:
        return (ctx.admin or ctx.service or ctx.owns(network.project_id)
                or self.shared_for(ctx, network)
                or self.rbac_allows(network, ctx.project_id, "access_as_external"))

    def network_target(self, ctx: Context, network: Network) -> dict:
        return {"project_id": network.project_id, "network_project_id": network.project_id,
                "shared": self.shared_for(ctx, network), "external": network.external}

    @staticmethod
    def lock(s: Session, model: type, row_id: str) -> None:
        """Take ``row_id``'s row lock for this transaction (on SQLite: the write lock), so
        the checks that follow see every commit before ours and none after."""
        s.execute(sa.update(model).where(model.id == row_id).values(id=model.id)
                  .execution_options(synchronize_session=False))

    def get_network(self, s: Session, ctx: Context, network_id: str, *,
                    for_update: bool = False) -> Network:
        if for_update:
            self.lock(s, Network, network_id)
            network = s.get(Network, network_id, with_for_update=True, populate_existing=True)
        else:
            network = s.get(Network, network_id)
        if network is None or not self.can_see_network(ctx, network):
            raise NetworkNotFound(net_id=network_id)
        return network

    def get_subnet(self, s: Session, ctx: Context, subnet_id: str) -> Subnet:
        subnet = s.get(Subnet, subnet_id)
        if subnet is None:
            raise SubnetNotFound(subnet_id=subnet_id)
        network = s.get(Network, subnet.network_id)
        if not self.can_see_network(ctx, network):
            raise SubnetNotFound(subnet_id=subnet_id)
        return subnet

    def can_see_port(self, s: Session, ctx: Context, port: Port) -> bool:
        if ctx.admin or ctx.service or ctx.owns(port.project_id):
            return True
        network = s.get(Network, port.network_id)
        return network is not None and ctx.owns(network.project_id)

    def get_port(self, s: Session, ctx: Context, port_id: str) -> Port:
        port = s.get(Port, port_id)
        if port is None or not self.can_see_port(s, ctx, port):
            raise PortNotFound(port_id=port_id)
        return port

    def port_target(self, s: Session, ctx: Context, port: Port,
                    network: Network | None = None) -> dict:
        network = network or s.get(Network, port.network_id)
        target = self.network_target(ctx, network)
        target.update(project_id=port.project_id, device_owner=port.device_owner)
        return target

    @staticmethod
    def get_owned(s: Session, ctx: Context, model: type, obj_id: str, missing: Exception):
        obj = s.get(model, obj_id)
        if obj is None or not (ctx.admin or ctx.owns(obj.project_id)):
            raise missing
        return obj

    def get_router(self, s: Session, ctx: Context, router_id: str) -> Router:
        return self.get_owned(s, ctx, Router, router_id, RouterNotFound(router_id=router_id))

    def get_floating_ip(self, s: Session, ctx: Context, fip_id: str) -> FloatingIp:
        return self.get_owned(s, ctx, FloatingIp, fip_id,
                              FloatingIPNotFound(floatingip_id=fip_id))

    def get_security_group(self, s: Session, ctx: Context, group_id: str) -> SecurityGroup:
        return self.get_owned(s, ctx, SecurityGroup, group_id, SecurityGroupNotFound(id=group_id))

    # -- quotas and tags -----------------------------------------------------------------

    def limit(self, s: Session, project_id: str, resource: str) -> int:
        row = s.get(Quota, (project_id, resource))
        return row.limit if row is not None else QUOTA_DEFAULTS[resource]

    @staticmethod
    def used(s: Session, project_id: str, resource: str) -> int:
        if resource == "security_group_rule":
            from tinystack.network.models import SecurityGroupRule as model
        else:
            model = _QUOTA_MODELS.get(resource)
        if model is None:
            return 0
        return s.scalar(sa.select(sa.func.count()).select_from(model).where(
            model.project_id == project_id)) or 0

    def check_quota(self, s: Session, project_id: str, resource: str, adding: int = 1) -> None:
        """OverQuota (409) when ``adding`` more would pass the project's limit."""
        limit = self.limit(s, project_id, resource)
        if limit < 0 or not project_id:
            return
        if self.used(s, project_id, resource) + adding > limit:
            raise OverQuota(overs=f"['{resource}']")

    @staticmethod
    def tags_of(s: Session, kind: str, ids: Iterable[str]) -> dict[str, list[str]]:
        ids = list(ids)
        found: dict[str, list[str]] = {i: [] for i in ids}
        for chunk in range(0, len(ids), 500):
            rows = s.execute(sa.select(NetworkTag.resource_id, NetworkTag.tag).where(
                NetworkTag.resource_type == kind,
                NetworkTag.resource_id.in_(ids[chunk:chunk + 500])))
            for resource_id, tag in rows:
                found[resource_id].append(tag)
        return {i: sorted(t) for i, t in found.items()}

    @staticmethod
    def drop_tags(s: Session, kind: str, resource_id: str) -> None:
        s.execute(sa.delete(NetworkTag).where(NetworkTag.resource_type == kind,
                                               NetworkTag.resource_id == resource_id))
