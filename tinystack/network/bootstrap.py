"""What the first start makes, DevStack's way: ``public``, and ``private`` + ``router1`` for demo.

- ``public``: a flat external network on physical network "public", owned by
  the admin project, with ``public-subnet`` (the floating range, 172.24.4.0/24
  by default: gateway .1, pool .2-.254, no DHCP);
- for the ``demo`` project: ``private`` (VXLAN) with ``private-subnet``
  (10.0.0.0/26 by default, DHCP on), and ``router1`` with its gateway on
  public and an interface on private-subnet;
- demo's default security group gets two more ingress rules, ICMP and SSH
  from anywhere, so its guests answer ping and ssh out of the box.

It runs once per data dir (``DATA_DIR/network/bootstrap-done``); a piece that
already exists (by name) is left alone, so a start interrupted midway
finishes the job the next time. Project ids come from the identity API (a
password login with the bootstrap credentials), as any client's would, so it
runs in the background and waits for the API to answer.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import httpx
import sqlalchemy as sa
from sqlalchemy.orm import Session

from tinystack.common.client import bootstrap_project_id
from tinystack.network.models import Network, Router, SecurityGroupRule, Subnet
from tinystack.network.security_groups import ensure_default
from tinystack.network.service import Changes, Context

__all__ = ["ensure_bootstrap", "marker"]

log = logging.getLogger(__name__)


def marker(data_dir: Path) -> Path:
    return data_dir / "network" / "bootstrap-done"


async def ensure_bootstrap(component, *, transport: httpx.AsyncBaseTransport | None = None,
                           force: bool = False) -> bool:
    """Make DevStack's initial networks unless done before; True if it ran."""
    done = marker(component.settings.data_dir)
    if done.exists() and not force:
        return False
    admin = await bootstrap_project_id(component.settings, "admin", transport)
    demo = await bootstrap_project_id(component.settings, "demo", transport)
    changes = await asyncio.to_thread(_make_all, component, admin, demo)
    await component.dispatcher.send(changes)
    done.parent.mkdir(parents=True, exist_ok=True)
    done.write_text("done\n")
    log.info("network: bootstrap networks are in place")
    return True


def _find(component, model, **where):
    def read(s: Session):
        query = sa.select(model.id)
        for name, value in where.items():
            query = query.where(getattr(model, name) == value)
        return s.scalar(query.limit(1))
    return component.core.transaction(read)


def _make_all(component, admin: str, demo: str) -> Changes:
    conf = component.settings.network
    ctx = Context.system()
    changes = Changes()
    public = _find(component, Network, name="public", external=True)
    if public is None:
        view, _ = component.networks.create(ctx, {
            "name": "public", "project_id": admin, "router:external": True,
            "provider:network_type": "flat",
            "provider:physical_network": conf.physical_networks[0]})
        public = view["id"]
    public_subnet = _find(component, Subnet, network_id=public)
    if public_subnet is None:
        view, more = component.subnets.create(ctx, {
            "name": "public-subnet", "project_id": admin, "network_id": public,
            "ip_version": 4, "cidr": conf.floating_range, "enable_dhcp": False})
        changes.merge(more)
        public_subnet = view["id"]
    private = _find(component, Network, name="private", project_id=demo)
    if private is None:
        view, _ = component.networks.create(ctx, {"name": "private", "project_id": demo})
        private = view["id"]
    private_subnet = _find(component, Subnet, network_id=private)
    if private_subnet is None:
        view, more = component.subnets.create(ctx, {
            "name": "private-subnet", "project_id": demo, "network_id": private,
            "ip_version": 4, "cidr": conf.fixed_range})
        changes.merge(more)
        private_subnet = view["id"]
    router = _find(component, Router, name="router1", project_id=demo)
    if router is None:
        view, more = component.routers.create(ctx, {
            "name": "router1", "project_id": demo,
            "external_gateway_info": {"network_id": public}})
        changes.merge(more)
        _, more = component.routers.add_interface(ctx, view["id"],
                                                  {"subnet_id": private_subnet})
        changes.merge(more)
    changes.merge(_open_default_group(component, demo))
    return changes


def _open_default_group(component, project: str) -> Changes:
    """ICMP and SSH in from anywhere on the project's default group."""
    changes = Changes()

    def write(s: Session) -> None:
        group = ensure_default(s, project)
        for protocol, port in (("icmp", None), ("tcp", 22)):
            exists = s.scalar(sa.select(SecurityGroupRule.id).where(
                SecurityGroupRule.security_group_id == group.id,
                SecurityGroupRule.direction == "ingress", SecurityGroupRule.protocol == protocol,
                SecurityGroupRule.port_range_min.is_(port) if port is None
                else SecurityGroupRule.port_range_min == port))
            if exists is None:
                component.security_groups.add(s, Context.system(), {
                    "security_group_id": group.id, "direction": "ingress",
                    "ethertype": "IPv4", "protocol": protocol, "port_range_min": port,
                    "port_range_max": port, "remote_ip_prefix": "0.0.0.0/0",
                    "project_id": project})
        changes.groups.add(group.id)
    component.core.transaction(write)
    return changes
