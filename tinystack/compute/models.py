"""The compute service's tables: servers, flavors, key pairs, quotas, nodes, groups, actions.

A server row is Nova's instance: what the user asked for (flavor and image
copied in as JSON, so a later flavor edit never changes a running server),
where it runs (``host``), the state the API shows (``vm_state``,
``task_state``, ``power_state``) and the desired state handed to its node
(``want`` with ``revision``: every change bumps the revision, and the
conductor applies an agent's report only when it answers the newest one).
Deleted servers stay as rows with ``deleted_at`` set, so instance actions of
deleted servers can still be listed (microversion 2.21).

A compute node's ``vcpus``/``memory_mb``/``local_gb`` (and the ``*_used``
figures shown in os-hypervisors) are what its agent reports; the
``claimed_*`` columns are what the scheduler has promised to servers, moved
only with an ``Allocation`` row in the same transaction (``scheduler.py``).

Only the service modules (``servers.py``, ``actions.py``, ``flavors.py``...)
use these; read ``service.py`` next.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import Mapped, mapped_column

from tinystack.common.db import Base, utcnow

__all__ = [
    "Flavor",
    "FlavorExtraSpec",
    "FlavorProject",
    "KeyPair",
    "Quota",
    "QuotaClass",
    "Server",
    "ServerMetadata",
    "ServerTag",
    "InstanceAction",
    "InstanceActionEvent",
    "ComputeNode",
    "Allocation",
    "Service",
    "ServerGroup",
    "ServerGroupMember",
    "ConsoleToken",
]

UUID = sa.String(36)
ID = sa.String(64)
NAME = sa.String(255)
EXACT = sa.String(255).with_variant(mysql.VARCHAR(255, collation="utf8mb4_bin"), "mysql")
"""Compared byte for byte even where MariaDB's default collation folds case (names, keys)."""
LONG_TEXT = sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql")


class Flavor(Base):
    __tablename__ = "compute_flavors"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    flavorid: Mapped[str] = mapped_column(EXACT, unique=True)
    name: Mapped[str] = mapped_column(EXACT, unique=True)
    memory_mb: Mapped[int]
    vcpus: Mapped[int]
    root_gb: Mapped[int] = mapped_column(default=0)
    ephemeral_gb: Mapped[int] = mapped_column(default=0)
    swap: Mapped[int] = mapped_column(default=0)
    rxtx_factor: Mapped[float] = mapped_column(default=1.0)
    is_public: Mapped[bool] = mapped_column(default=True)
    disabled: Mapped[bool] = mapped_column(default=False)
    description: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime | None]


class FlavorExtraSpec(Base):
    __tablename__ = "compute_flavor_extra_specs"
    flavor_id: Mapped[int] = mapped_column(
        sa.ForeignKey("compute_flavors.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(EXACT, primary_key=True)
    value: Mapped[str] = mapped_column(NAME)


class FlavorProject(Base):
    """A project allowed to use a private flavor."""

    __tablename__ = "compute_flavor_projects"
    flavor_id: Mapped[int] = mapped_column(
        sa.ForeignKey("compute_flavors.id", ondelete="CASCADE"), primary_key=True)
    project_id: Mapped[str] = mapped_column(ID, primary_key=True)


class KeyPair(Base):
    __tablename__ = "compute_keypairs"
    __table_args__ = (sa.UniqueConstraint("user_id", "name"),)
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(ID, index=True)
    name: Mapped[str] = mapped_column(EXACT)
    type: Mapped[str] = mapped_column(sa.String(8), default="ssh")
    fingerprint: Mapped[str] = mapped_column(NAME)
    public_key: Mapped[str] = mapped_column(sa.Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Quota(Base):
    """A project's limit for one resource, overriding the default class."""

    __tablename__ = "compute_quotas"
    project_id: Mapped[str] = mapped_column(ID, primary_key=True)
    resource: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    hard_limit: Mapped[int]


class QuotaClass(Base):
    """A quota class's limit (only class ``default`` is used, as in Nova)."""

    __tablename__ = "compute_quota_classes"
    class_name: Mapped[str] = mapped_column(sa.String(255), primary_key=True)
    resource: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    hard_limit: Mapped[int]


class Server(Base):
    """Nova's instance. ``flavor``/``image`` hold copies: see the module docstring.

    ``flavor``: {"flavorid", "name", "memory_mb", "vcpus", "root_gb",
    "ephemeral_gb", "swap", "extra_specs"}; ``old_flavor`` is set during a
    resize until it is confirmed or reverted. ``image``: {"id", "name",
    "size", "min_disk", "min_ram", "disk_format", "container_format",
    "checksum", "properties"}, or {} for a server booted from a volume.
    ``fault``: {"code", "message", "details", "created"} or None.
    ``addresses``: the API's ``addresses`` dict, written by network port
    binding once it exists; ``ports`` the bindings sent to the node.
    """

    __tablename__ = "compute_servers"
    __table_args__ = (
        sa.Index("ix_compute_servers_project_id_created_at", "project_id", "created_at"),
    )
    id: Mapped[str] = mapped_column(UUID, primary_key=True)
    name: Mapped[str] = mapped_column(NAME)
    hostname: Mapped[str] = mapped_column(NAME, default="")
    description: Mapped[str | None] = mapped_column(sa.Text)
    project_id: Mapped[str] = mapped_column(ID)
    user_id: Mapped[str] = mapped_column(ID)
    image_ref: Mapped[str] = mapped_column(sa.String(255), default="")
    image: Mapped[dict] = mapped_column(sa.JSON, default=dict)
    flavor: Mapped[dict] = mapped_column(sa.JSON)
    old_flavor: Mapped[dict | None] = mapped_column(sa.JSON)
    key_name: Mapped[str | None] = mapped_column(NAME)
    key_data: Mapped[str | None] = mapped_column(sa.Text)
    user_data: Mapped[str | None] = mapped_column(LONG_TEXT)
    config_drive: Mapped[bool] = mapped_column(default=False)
    availability_zone: Mapped[str | None] = mapped_column(NAME)
    requested_availability_zone: Mapped[str | None] = mapped_column(NAME)
    requested_host: Mapped[str | None] = mapped_column(NAME)
    requested_node: Mapped[str | None] = mapped_column(NAME)
    host: Mapped[str | None] = mapped_column(NAME, index=True)
    node: Mapped[str | None] = mapped_column(NAME)
    vm_state: Mapped[str] = mapped_column(sa.String(32), default="building")
    task_state: Mapped[str | None] = mapped_column(sa.String(32))
    task_started_at: Mapped[dt.datetime | None]
    power_state: Mapped[int] = mapped_column(default=0)
    want: Mapped[str] = mapped_column(sa.String(16), default="active")
    reboot: Mapped[str] = mapped_column(sa.String(8), default="")
    rebuild: Mapped[bool] = mapped_column(default=False)
    revision: Mapped[int] = mapped_column(default=1)
    reported_revision: Mapped[int] = mapped_column(default=0)
    progress: Mapped[int] = mapped_column(default=0)
    fault: Mapped[dict | None] = mapped_column(sa.JSON)
    locked: Mapped[bool] = mapped_column(default=False)
    locked_by: Mapped[str | None] = mapped_column(sa.String(16))
    locked_reason: Mapped[str | None] = mapped_column(NAME)
    reservation_id: Mapped[str] = mapped_column(sa.String(32), default="")
    launch_index: Mapped[int] = mapped_column(default=0)
    access_ipv4: Mapped[str | None] = mapped_column(sa.String(64))
    access_ipv6: Mapped[str | None] = mapped_column(sa.String(64))
    disk_config: Mapped[str] = mapped_column(sa.String(8), default="MANUAL")
    security_groups: Mapped[list] = mapped_column(sa.JSON, default=list)
    scheduler_hints: Mapped[dict] = mapped_column(sa.JSON, default=dict)
    requested_networks: Mapped[str] = mapped_column(sa.String(16), default="none")
    addresses: Mapped[dict] = mapped_column(sa.JSON, default=dict)
    ports: Mapped[list] = mapped_column(sa.JSON, default=list)
    block_devices: Mapped[list] = mapped_column(sa.JSON, default=list)
    launched_at: Mapped[dt.datetime | None]
    terminated_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    deleted_at: Mapped[dt.datetime | None] = mapped_column(index=True)


class ServerMetadata(Base):
    __tablename__ = "compute_server_metadata"
    server_id: Mapped[str] = mapped_column(
        UUID, sa.ForeignKey("compute_servers.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(EXACT, primary_key=True)
    value: Mapped[str] = mapped_column(NAME)


class ServerTag(Base):
    __tablename__ = "compute_server_tags"
    server_id: Mapped[str] = mapped_column(
        UUID, sa.ForeignKey("compute_servers.id", ondelete="CASCADE"), primary_key=True)
    tag: Mapped[str] = mapped_column(EXACT, primary_key=True, index=True)


class InstanceAction(Base):
    """One user request on a server (``os-instance-actions``)."""

    __tablename__ = "compute_instance_actions"
    __table_args__ = (sa.Index("ix_compute_instance_actions_server_id_request_id",
                               "server_id", "request_id"),)
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    server_id: Mapped[str] = mapped_column(
        UUID, sa.ForeignKey("compute_servers.id", ondelete="CASCADE"))
    action: Mapped[str] = mapped_column(sa.String(64))
    request_id: Mapped[str] = mapped_column(sa.String(64))
    user_id: Mapped[str] = mapped_column(ID)
    project_id: Mapped[str] = mapped_column(ID)
    start_time: Mapped[dt.datetime] = mapped_column(default=utcnow)
    finish_time: Mapped[dt.datetime | None]
    message: Mapped[str | None] = mapped_column(NAME)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class InstanceActionEvent(Base):
    """One step of an action; ``result`` is None while it runs, then Success or Error."""

    __tablename__ = "compute_instance_action_events"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    action_id: Mapped[int] = mapped_column(
        sa.ForeignKey("compute_instance_actions.id", ondelete="CASCADE"), index=True)
    event: Mapped[str] = mapped_column(sa.String(64))
    start_time: Mapped[dt.datetime] = mapped_column(default=utcnow)
    finish_time: Mapped[dt.datetime | None]
    result: Mapped[str | None] = mapped_column(sa.String(16))
    traceback: Mapped[str | None] = mapped_column(sa.Text)
    host: Mapped[str | None] = mapped_column(NAME)
    details: Mapped[str | None] = mapped_column(sa.Text)


class ComputeNode(Base):
    """A compute node (hypervisor) as its agent last reported it, plus the scheduler's claims."""

    __tablename__ = "compute_nodes"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    uuid: Mapped[str] = mapped_column(UUID, unique=True)
    host: Mapped[str] = mapped_column(NAME, unique=True)
    hypervisor_hostname: Mapped[str] = mapped_column(NAME)
    hypervisor_type: Mapped[str] = mapped_column(sa.String(32), default="QEMU")
    hypervisor_version: Mapped[int] = mapped_column(default=0)
    accelerator: Mapped[str] = mapped_column(sa.String(8), default="tcg")
    host_ip: Mapped[str] = mapped_column(sa.String(64), default="")
    availability_zone: Mapped[str] = mapped_column(NAME, default="nova")
    cpu_info: Mapped[dict] = mapped_column(sa.JSON, default=dict)
    uptime: Mapped[str] = mapped_column(NAME, default="")
    vcpus: Mapped[int] = mapped_column(default=0)
    memory_mb: Mapped[int] = mapped_column(default=0)
    local_gb: Mapped[int] = mapped_column(default=0)
    vcpus_used: Mapped[int] = mapped_column(default=0)
    memory_mb_used: Mapped[int] = mapped_column(default=0)
    local_gb_used: Mapped[int] = mapped_column(default=0)
    running_vms: Mapped[int] = mapped_column(default=0)
    claimed_vcpus: Mapped[int] = mapped_column(default=0)
    claimed_memory_mb: Mapped[int] = mapped_column(default=0)
    claimed_disk_gb: Mapped[int] = mapped_column(default=0)
    started_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Allocation(Base):
    """Resources a server holds on a node; ``kind`` "server", or "resize-source" mid-resize."""

    __tablename__ = "compute_allocations"
    server_id: Mapped[str] = mapped_column(UUID, primary_key=True)
    kind: Mapped[str] = mapped_column(sa.String(16), primary_key=True)
    node_id: Mapped[int] = mapped_column(
        sa.ForeignKey("compute_nodes.id", ondelete="CASCADE"), index=True)
    vcpus: Mapped[int]
    memory_mb: Mapped[int]
    disk_gb: Mapped[int]


class Service(Base):
    """A row of ``os-services``: nova-compute per node, scheduler and conductor per controller."""

    __tablename__ = "compute_services"
    __table_args__ = (sa.UniqueConstraint("host", "binary"),)
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    uuid: Mapped[str] = mapped_column(UUID, unique=True)
    host: Mapped[str] = mapped_column(NAME)
    binary: Mapped[str] = mapped_column(sa.String(64))
    topic: Mapped[str] = mapped_column(sa.String(64))
    disabled: Mapped[bool] = mapped_column(default=False)
    disabled_reason: Mapped[str | None] = mapped_column(NAME)
    forced_down: Mapped[bool] = mapped_column(default=False)
    last_seen_up: Mapped[dt.datetime | None]
    report_count: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime | None]


class ServerGroup(Base):
    __tablename__ = "compute_server_groups"
    id: Mapped[str] = mapped_column(UUID, primary_key=True)
    name: Mapped[str] = mapped_column(NAME)
    project_id: Mapped[str] = mapped_column(ID, index=True)
    user_id: Mapped[str] = mapped_column(ID)
    policy: Mapped[str] = mapped_column(sa.String(32))
    rules: Mapped[dict] = mapped_column(sa.JSON, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class ServerGroupMember(Base):
    __tablename__ = "compute_server_group_members"
    group_id: Mapped[str] = mapped_column(
        UUID, sa.ForeignKey("compute_server_groups.id", ondelete="CASCADE"), primary_key=True)
    server_id: Mapped[str] = mapped_column(UUID, primary_key=True, index=True)


class ConsoleToken(Base):
    """A remote console URL's token, stored as its SHA-256 so the table holds no secret."""

    __tablename__ = "compute_console_tokens"
    token_hash: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    server_id: Mapped[str] = mapped_column(UUID, index=True)
    console_type: Mapped[str] = mapped_column(sa.String(16))
    expires_at: Mapped[dt.datetime]
