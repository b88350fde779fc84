"""The network service's tables: networks, subnets, ports, routers, floating IPs, groups.

Shapes follow Neutron's schema where it matters to behaviour:

- a network has one segment, kept on its row (``network_type``,
  ``physical_network``, ``segmentation_id``); ``segment_key`` ("vxlan:1001",
  "flat:public") is unique, so two networks can never share a VNI or a flat
  physical network, even when created at the same instant;
- ``NetworkRbac`` rows are the truth about sharing: ``shared`` is an
  ``access_as_shared`` entry for ``*``, ``router:external`` an
  ``access_as_external`` one, as Neutron's RBAC tables say;
- ``IpAllocation``'s primary key is (subnet, address): IPAM may race, the
  database never lets an address be handed out twice (``ipam.py`` picks,
  ``ports.py`` retries);
- ports carry their binding (``binding_host_id``) and their owner
  (``device_owner``/``device_id``); router and floating IP ports are ordinary
  ports with ``network:*`` owners, so an address on the external network is
  allocated by the same IPAM;
- ``DefaultSecurityGroup`` has the project as primary key: one default group
  per project even when two first requests race.

Every resource row has Neutron's standard attributes (``description``,
``created_at``, ``updated_at``, ``revision_number``); tags live in
``NetworkTag`` for every kind. Only the service modules use these tables;
read ``service.py`` next.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import Mapped, mapped_column, relationship

from tinystack.common.db import Base, utcnow

__all__ = [
    "TIME", "Network", "NetworkRbac", "Subnet", "AllocationPool", "DnsNameserver", "HostRoute",
    "Port", "IpAllocation", "AllowedAddressPair", "PortSecurityGroup", "Router",
    "RouterPort", "RouterRoute", "FloatingIp", "SecurityGroup", "SecurityGroupRule",
    "DefaultSecurityGroup", "Quota", "Agent", "NetworkTag", "STANDARD",
]

ID = sa.String(36)
PROJECT = sa.String(255)
NAME = sa.String(255)
ADDRESS = sa.String(64)
CIDR = sa.String(64)
TIME = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql")
"""Microseconds on every database (MariaDB keeps whole seconds otherwise), so creation
order and the newest agent are well defined."""


class _Standard:
    """Neutron's standard attributes, on every resource table."""

    description: Mapped[str] = mapped_column(sa.String(255), default="")
    created_at: Mapped[dt.datetime] = mapped_column(TIME, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(TIME, default=utcnow)
    revision_number: Mapped[int] = mapped_column(default=0)

    def touch(self) -> None:
        """Record a change: a new revision and update time."""
        self.revision_number = (self.revision_number or 0) + 1
        self.updated_at = utcnow()


STANDARD = _Standard


class Network(_Standard, Base):
    __tablename__ = "network_networks"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    project_id: Mapped[str] = mapped_column(PROJECT, index=True)
    name: Mapped[str] = mapped_column(NAME, default="", index=True)
    status: Mapped[str] = mapped_column(sa.String(16), default="ACTIVE")
    admin_state_up: Mapped[bool] = mapped_column(default=True)
    mtu: Mapped[int] = mapped_column(default=1500)
    port_security_enabled: Mapped[bool] = mapped_column(default=True)
    external: Mapped[bool] = mapped_column(default=False, index=True)
    availability_zone_hints: Mapped[list] = mapped_column(sa.JSON, default=list)
    network_type: Mapped[str] = mapped_column(sa.String(16))
    physical_network: Mapped[str | None] = mapped_column(sa.String(64))
    segmentation_id: Mapped[int | None] = mapped_column()
    segment_key: Mapped[str | None] = mapped_column(sa.String(80), unique=True)
    """"vxlan:<vni>" or "flat:<physnet>"; None for local networks."""

    subnets: Mapped[list[Subnet]] = relationship(
        lazy="selectin", order_by=lambda: (Subnet.created_at, Subnet.id), viewonly=True)
    rbac: Mapped[list[NetworkRbac]] = relationship(
        cascade="all, delete-orphan", lazy="selectin", passive_deletes=True)


class NetworkRbac(Base):
    """An RBAC policy on a network: ``access_as_shared`` or ``access_as_external``."""

    __tablename__ = "network_rbac_policies"
    __table_args__ = (sa.UniqueConstraint("object_id", "action", "target_project"),)
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    project_id: Mapped[str] = mapped_column(PROJECT, index=True)
    object_type: Mapped[str] = mapped_column(sa.String(32), default="network")
    object_id: Mapped[str] = mapped_column(
        ID, sa.ForeignKey("network_networks.id", ondelete="CASCADE"), index=True)
    action: Mapped[str] = mapped_column(sa.String(32))
    target_project: Mapped[str] = mapped_column(PROJECT, index=True)


class Subnet(_Standard, Base):
    __tablename__ = "network_subnets"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    project_id: Mapped[str] = mapped_column(PROJECT, index=True)
    network_id: Mapped[str] = mapped_column(
        ID, sa.ForeignKey("network_networks.id"), index=True)
    name: Mapped[str] = mapped_column(NAME, default="", index=True)
    ip_version: Mapped[int] = mapped_column()
    cidr: Mapped[str] = mapped_column(CIDR)
    gateway_ip: Mapped[str | None] = mapped_column(ADDRESS)
    enable_dhcp: Mapped[bool] = mapped_column(default=True)
    ipv6_ra_mode: Mapped[str | None] = mapped_column(sa.String(16))
    ipv6_address_mode: Mapped[str | None] = mapped_column(sa.String(16))
    ipam_generation: Mapped[int] = mapped_column(default=0)
    """Bumped by every allocation: the row lock that serializes IPAM per subnet."""

    pools: Mapped[list[AllocationPool]] = relationship(
        cascade="all, delete-orphan", lazy="selectin", passive_deletes=True,
        order_by="AllocationPool.position")
    dns: Mapped[list[DnsNameserver]] = relationship(
        cascade="all, delete-orphan", lazy="selectin", passive_deletes=True,
        order_by="DnsNameserver.position")
    routes: Mapped[list[HostRoute]] = relationship(
        cascade="all, delete-orphan", lazy="selectin", passive_deletes=True,
        order_by="HostRoute.position")


class AllocationPool(Base):
    __tablename__ = "network_allocation_pools"
    subnet_id: Mapped[str] = mapped_column(
        ID, sa.ForeignKey("network_subnets.id", ondelete="CASCADE"), primary_key=True)
    position: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    first_ip: Mapped[str] = mapped_column(ADDRESS)
    last_ip: Mapped[str] = mapped_column(ADDRESS)


class DnsNameserver(Base):
    __tablename__ = "network_dns_nameservers"
    subnet_id: Mapped[str] = mapped_column(
        ID, sa.ForeignKey("network_subnets.id", ondelete="CASCADE"), primary_key=True)
    position: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    address: Mapped[str] = mapped_column(ADDRESS)


class HostRoute(Base):
    __tablename__ = "network_host_routes"
    subnet_id: Mapped[str] = mapped_column(
        ID, sa.ForeignKey("network_subnets.id", ondelete="CASCADE"), primary_key=True)
    position: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    destination: Mapped[str] = mapped_column(CIDR)
    nexthop: Mapped[str] = mapped_column(ADDRESS)


class Port(_Standard, Base):
    __tablename__ = "network_ports"
    __table_args__ = (sa.UniqueConstraint("network_id", "mac_address"),)
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    project_id: Mapped[str] = mapped_column(PROJECT, index=True)
    network_id: Mapped[str] = mapped_column(
        ID, sa.ForeignKey("network_networks.id"), index=True)
    name: Mapped[str] = mapped_column(NAME, default="", index=True)
    mac_address: Mapped[str] = mapped_column(sa.String(32))
    admin_state_up: Mapped[bool] = mapped_column(default=True)
    status: Mapped[str] = mapped_column(sa.String(16), default="DOWN")
    device_id: Mapped[str] = mapped_column(sa.String(255), default="", index=True)
    device_owner: Mapped[str] = mapped_column(sa.String(255), default="", index=True)
    port_security_enabled: Mapped[bool] = mapped_column(default=True)
    binding_host_id: Mapped[str] = mapped_column(sa.String(255), default="", index=True)
    binding_profile: Mapped[dict] = mapped_column(sa.JSON, default=dict)
    binding_vnic_type: Mapped[str] = mapped_column(sa.String(32), default="normal")

    fixed_ips: Mapped[list[IpAllocation]] = relationship(
        cascade="all, delete-orphan", lazy="selectin", passive_deletes=True,
        order_by="IpAllocation.position")
    address_pairs: Mapped[list[AllowedAddressPair]] = relationship(
        cascade="all, delete-orphan", lazy="selectin", passive_deletes=True,
        order_by="AllowedAddressPair.position")
    groups: Mapped[list[PortSecurityGroup]] = relationship(
        cascade="all, delete-orphan", lazy="selectin", passive_deletes=True)

    @property
    def security_group_ids(self) -> list[str]:
        return sorted(g.security_group_id for g in self.groups)


class IpAllocation(Base):
    """One address of one port; the key makes an address impossible to hand out twice."""

    __tablename__ = "network_ip_allocations"
    subnet_id: Mapped[str] = mapped_column(
        ID, sa.ForeignKey("network_subnets.id"), primary_key=True)
    ip_address: Mapped[str] = mapped_column(ADDRESS, primary_key=True)
    port_id: Mapped[str] = mapped_column(
        ID, sa.ForeignKey("network_ports.id", ondelete="CASCADE"), index=True)
    network_id: Mapped[str] = mapped_column(ID, index=True)
    position: Mapped[int] = mapped_column(default=0)


class AllowedAddressPair(Base):
    __tablename__ = "network_allowed_address_pairs"
    port_id: Mapped[str] = mapped_column(
        ID, sa.ForeignKey("network_ports.id", ondelete="CASCADE"), primary_key=True)
    mac_address: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    ip_address: Mapped[str] = mapped_column(CIDR, primary_key=True)
    position: Mapped[int] = mapped_column(default=0)


class PortSecurityGroup(Base):
    __tablename__ = "network_port_security_groups"
    port_id: Mapped[str] = mapped_column(
        ID, sa.ForeignKey("network_ports.id", ondelete="CASCADE"), primary_key=True)
    security_group_id: Mapped[str] = mapped_column(
        ID, sa.ForeignKey("network_security_groups.id", name="fk_network_port_sgs_group"),
        primary_key=True, index=True)


class Router(_Standard, Base):
    __tablename__ = "network_routers"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    project_id: Mapped[str] = mapped_column(PROJECT, index=True)
    name: Mapped[str] = mapped_column(NAME, default="", index=True)
    status: Mapped[str] = mapped_column(sa.String(16), default="ACTIVE")
    admin_state_up: Mapped[bool] = mapped_column(default=True)
    gw_port_id: Mapped[str | None] = mapped_column(
        ID, sa.ForeignKey("network_ports.id", ondelete="SET NULL"))
    enable_snat: Mapped[bool] = mapped_column(default=True)
    availability_zone_hints: Mapped[list] = mapped_column(sa.JSON, default=list)

    ports: Mapped[list[RouterPort]] = relationship(
        cascade="all, delete-orphan", lazy="selectin", passive_deletes=True)
    routes: Mapped[list[RouterRoute]] = relationship(
        cascade="all, delete-orphan", lazy="selectin", passive_deletes=True,
        order_by="RouterRoute.position")


class RouterPort(Base):
    __tablename__ = "network_router_ports"
    router_id: Mapped[str] = mapped_column(
        ID, sa.ForeignKey("network_routers.id", ondelete="CASCADE"), index=True)
    port_id: Mapped[str] = mapped_column(
        ID, sa.ForeignKey("network_ports.id", ondelete="CASCADE"), primary_key=True)
    port_type: Mapped[str] = mapped_column(sa.String(64))


class RouterRoute(Base):
    __tablename__ = "network_router_routes"
    router_id: Mapped[str] = mapped_column(
        ID, sa.ForeignKey("network_routers.id", ondelete="CASCADE"), primary_key=True)
    destination: Mapped[str] = mapped_column(CIDR, primary_key=True)
    nexthop: Mapped[str] = mapped_column(ADDRESS, primary_key=True)
    position: Mapped[int] = mapped_column(default=0)


class FloatingIp(_Standard, Base):
    __tablename__ = "network_floating_ips"
    __table_args__ = (
        sa.UniqueConstraint("floating_network_id", "fixed_port_id", "fixed_ip_address",
                            name="uq_network_floating_ips_fixed"),)
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    project_id: Mapped[str] = mapped_column(PROJECT, index=True)
    floating_ip_address: Mapped[str] = mapped_column(ADDRESS)
    floating_network_id: Mapped[str] = mapped_column(
        ID, sa.ForeignKey("network_networks.id"), index=True)
    floating_port_id: Mapped[str] = mapped_column(
        ID, sa.ForeignKey("network_ports.id", ondelete="CASCADE"))
    fixed_port_id: Mapped[str | None] = mapped_column(
        ID, sa.ForeignKey("network_ports.id", ondelete="SET NULL"), index=True)
    fixed_ip_address: Mapped[str | None] = mapped_column(ADDRESS)
    router_id: Mapped[str | None] = mapped_column(
        ID, sa.ForeignKey("network_routers.id", ondelete="SET NULL"), index=True)
    status: Mapped[str] = mapped_column(sa.String(16), default="DOWN")


class SecurityGroup(_Standard, Base):
    __tablename__ = "network_security_groups"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    project_id: Mapped[str] = mapped_column(PROJECT, index=True)
    name: Mapped[str] = mapped_column(NAME, default="", index=True)
    stateful: Mapped[bool] = mapped_column(default=True)

    rules: Mapped[list[SecurityGroupRule]] = relationship(
        cascade="all, delete-orphan", lazy="selectin", passive_deletes=True,
        foreign_keys="SecurityGroupRule.security_group_id",
        order_by=lambda: (SecurityGroupRule.created_at, SecurityGroupRule.id))


class SecurityGroupRule(_Standard, Base):
    __tablename__ = "network_security_group_rules"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    project_id: Mapped[str] = mapped_column(PROJECT, index=True)
    security_group_id: Mapped[str] = mapped_column(
        ID, sa.ForeignKey("network_security_groups.id", ondelete="CASCADE",
                          name="fk_network_sg_rules_group"), index=True)
    remote_group_id: Mapped[str | None] = mapped_column(
        ID, sa.ForeignKey("network_security_groups.id", ondelete="CASCADE",
                          name="fk_network_sg_rules_remote_group"), index=True)
    direction: Mapped[str] = mapped_column(sa.String(16))
    ethertype: Mapped[str] = mapped_column(sa.String(8))
    protocol: Mapped[str | None] = mapped_column(sa.String(40))
    port_range_min: Mapped[int | None] = mapped_column()
    port_range_max: Mapped[int | None] = mapped_column()
    remote_ip_prefix: Mapped[str | None] = mapped_column(CIDR)


class DefaultSecurityGroup(Base):
    """Which group is a project's ``default``; the key keeps it to one per project."""

    __tablename__ = "network_default_security_groups"
    project_id: Mapped[str] = mapped_column(PROJECT, primary_key=True)
    security_group_id: Mapped[str] = mapped_column(
        ID, sa.ForeignKey("network_security_groups.id", ondelete="CASCADE",
                          name="fk_network_default_sg_group"), unique=True)


class Quota(Base):
    __tablename__ = "network_quotas"
    project_id: Mapped[str] = mapped_column(PROJECT, primary_key=True)
    resource: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    limit: Mapped[int] = mapped_column("hard_limit")


class Agent(Base):
    """An agent's heartbeat record (``/v2.0/agents``); one per (type, host)."""

    __tablename__ = "network_agents"
    __table_args__ = (sa.UniqueConstraint("agent_type", "host"),)
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    agent_type: Mapped[str] = mapped_column(sa.String(64))
    binary: Mapped[str] = mapped_column(sa.String(255))
    topic: Mapped[str] = mapped_column(sa.String(255))
    host: Mapped[str] = mapped_column(sa.String(255), index=True)
    availability_zone: Mapped[str | None] = mapped_column(sa.String(255))
    admin_state_up: Mapped[bool] = mapped_column(default=True)
    description: Mapped[str | None] = mapped_column(sa.String(255))
    data_ip: Mapped[str | None] = mapped_column(ADDRESS)
    configurations: Mapped[dict] = mapped_column(sa.JSON, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(TIME, default=utcnow)
    started_at: Mapped[dt.datetime] = mapped_column(TIME, default=utcnow)
    heartbeat_timestamp: Mapped[dt.datetime] = mapped_column(TIME, default=utcnow, index=True)


class NetworkTag(Base):
    __tablename__ = "network_tags"
    resource_type: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    resource_id: Mapped[str] = mapped_column(ID, primary_key=True)
    tag: Mapped[str] = mapped_column(sa.String(255), primary_key=True)
