"""Identity's tables: who exists, what they may do, and where services live.

Domains are their own table (the API shows a domain as ``is_domain`` false
projects' ``parent_id`` for top-level projects, as Keystone does). One
``Assignment`` table holds every grant: the actor is a user or a group, the
target a project, a domain or the system (``target_id`` "system"). Passwords
keep their history for Keystone's "no reuse of the last N" rule. Revocation
events outlive a restart, which is the whole point of them.

Only ``service.py`` (and its helpers ``tokens.py``, ``bootstrap.py``) use
these; read ``service.py`` next.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import Mapped, mapped_column

from tinystack.common.db import Base, new_id, utcnow

__all__ = [
    "Domain",
    "Project",
    "User",
    "Password",
    "Group",
    "Membership",
    "Role",
    "ImpliedRole",
    "Assignment",
    "ApplicationCredential",
    "Credential",
    "Service",
    "Endpoint",
    "Region",
    "RevocationEvent",
]

ID = sa.String(64)
NAME = sa.String(255)
PRECISE_TIME = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
"""A timestamp kept to the microsecond everywhere: MariaDB's plain DATETIME drops them."""


class Domain(Base):
    __tablename__ = "identity_domains"
    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(NAME, unique=True)
    description: Mapped[str] = mapped_column(sa.Text, default="")
    enabled: Mapped[bool] = mapped_column(default=True)
    extra: Mapped[dict] = mapped_column(sa.JSON, default=dict)


class Project(Base):
    __tablename__ = "identity_projects"
    __table_args__ = (sa.UniqueConstraint("domain_id", "name"),)
    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(NAME)
    domain_id: Mapped[str] = mapped_column(ID, sa.ForeignKey("identity_domains.id"))
    parent_id: Mapped[str | None] = mapped_column(ID, sa.ForeignKey("identity_projects.id"))
    description: Mapped[str] = mapped_column(sa.Text, default="")
    enabled: Mapped[bool] = mapped_column(default=True)
    tags: Mapped[list] = mapped_column(sa.JSON, default=list)
    extra: Mapped[dict] = mapped_column(sa.JSON, default=dict)


class User(Base):
    __tablename__ = "identity_users"
    __table_args__ = (sa.UniqueConstraint("domain_id", "name"),)
    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(NAME)
    domain_id: Mapped[str] = mapped_column(ID, sa.ForeignKey("identity_domains.id"))
    enabled: Mapped[bool] = mapped_column(default=True)
    default_project_id: Mapped[str | None] = mapped_column(ID)
    extra: Mapped[dict] = mapped_column(sa.JSON, default=dict)
    options: Mapped[dict] = mapped_column(sa.JSON, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_active_at: Mapped[dt.datetime | None]
    failed_auth_count: Mapped[int] = mapped_column(default=0)
    failed_auth_at: Mapped[dt.datetime | None]


class Password(Base):
    """Every password a user had; the newest one is the current one."""

    __tablename__ = "identity_passwords"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(
        ID, sa.ForeignKey("identity_users.id", ondelete="CASCADE"), index=True
    )
    hash: Mapped[str] = mapped_column(sa.String(255))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime | None]
    self_service: Mapped[bool] = mapped_column(default=False)


class Group(Base):
    __tablename__ = "identity_groups"
    __table_args__ = (sa.UniqueConstraint("domain_id", "name"),)
    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(NAME)
    domain_id: Mapped[str] = mapped_column(ID, sa.ForeignKey("identity_domains.id"))
    description: Mapped[str] = mapped_column(sa.Text, default="")


class Membership(Base):
    __tablename__ = "identity_memberships"
    user_id: Mapped[str] = mapped_column(
        ID, sa.ForeignKey("identity_users.id", ondelete="CASCADE"), primary_key=True
    )
    group_id: Mapped[str] = mapped_column(
        ID, sa.ForeignKey("identity_groups.id", ondelete="CASCADE"), primary_key=True
    )


class Role(Base):
    __tablename__ = "identity_roles"
    __table_args__ = (sa.UniqueConstraint("name", "domain_id"),)
    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(NAME)
    domain_id: Mapped[str | None] = mapped_column(ID)
    description: Mapped[str] = mapped_column(sa.Text, default="")
    options: Mapped[dict] = mapped_column(sa.JSON, default=dict)


class ImpliedRole(Base):
    __tablename__ = "identity_implied_roles"
    prior_role_id: Mapped[str] = mapped_column(
        ID, sa.ForeignKey("identity_roles.id", ondelete="CASCADE"), primary_key=True
    )
    implied_role_id: Mapped[str] = mapped_column(
        ID, sa.ForeignKey("identity_roles.id", ondelete="CASCADE"), primary_key=True
    )


class Assignment(Base):
    """A role granted to a user or group on a project, a domain or the system.

    ``actor_type`` is "user" or "group"; ``target_type`` is "project",
    "domain" or "system" (then ``target_id`` is "all").
    """

    __tablename__ = "identity_assignments"
    actor_type: Mapped[str] = mapped_column(sa.String(8), primary_key=True)
    actor_id: Mapped[str] = mapped_column(ID, primary_key=True)
    target_type: Mapped[str] = mapped_column(sa.String(8), primary_key=True)
    target_id: Mapped[str] = mapped_column(ID, primary_key=True)
    role_id: Mapped[str] = mapped_column(
        ID, sa.ForeignKey("identity_roles.id", ondelete="CASCADE"), primary_key=True
    )
    inherited: Mapped[bool] = mapped_column(primary_key=True, default=False)


class ApplicationCredential(Base):
    __tablename__ = "identity_application_credentials"
    __table_args__ = (sa.UniqueConstraint("user_id", "name"),)
    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(NAME)
    user_id: Mapped[str] = mapped_column(
        ID, sa.ForeignKey("identity_users.id", ondelete="CASCADE"), index=True
    )
    project_id: Mapped[str | None] = mapped_column(ID)
    secret_hash: Mapped[str] = mapped_column(sa.String(255))
    description: Mapped[str] = mapped_column(sa.Text, default="")
    expires_at: Mapped[dt.datetime | None]
    unrestricted: Mapped[bool] = mapped_column(default=False)
    system: Mapped[str | None] = mapped_column(sa.String(16))
    role_ids: Mapped[list] = mapped_column(sa.JSON, default=list)
    access_rules: Mapped[list] = mapped_column(sa.JSON, default=list)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Credential(Base):
    """EC2-style and other credentials; ``blob`` is stored encrypted."""

    __tablename__ = "identity_credentials"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    user_id: Mapped[str] = mapped_column(
        ID, sa.ForeignKey("identity_users.id", ondelete="CASCADE"), index=True
    )
    project_id: Mapped[str | None] = mapped_column(ID)
    type: Mapped[str] = mapped_column(sa.String(255))
    encrypted_blob: Mapped[str] = mapped_column(sa.Text)
    extra: Mapped[dict] = mapped_column(sa.JSON, default=dict)


class Region(Base):
    __tablename__ = "identity_regions"
    id: Mapped[str] = mapped_column(NAME, primary_key=True)
    description: Mapped[str] = mapped_column(sa.Text, default="")
    parent_region_id: Mapped[str | None] = mapped_column(NAME)
    extra: Mapped[dict] = mapped_column(sa.JSON, default=dict)


class Service(Base):
    __tablename__ = "identity_services"
    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    type: Mapped[str] = mapped_column(NAME)
    name: Mapped[str] = mapped_column(NAME, default="")
    description: Mapped[str] = mapped_column(sa.Text, default="")
    enabled: Mapped[bool] = mapped_column(default=True)
    extra: Mapped[dict] = mapped_column(sa.JSON, default=dict)


class Endpoint(Base):
    __tablename__ = "identity_endpoints"
    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    service_id: Mapped[str] = mapped_column(
        ID, sa.ForeignKey("identity_services.id", ondelete="CASCADE"), index=True
    )
    interface: Mapped[str] = mapped_column(sa.String(8))
    url: Mapped[str] = mapped_column(sa.Text)
    region_id: Mapped[str | None] = mapped_column(NAME)
    enabled: Mapped[bool] = mapped_column(default=True)
    extra: Mapped[dict] = mapped_column(sa.JSON, default=dict)


class RevocationEvent(Base):
    """Tokens matching every non-null field and issued before ``issued_before`` are revoked."""

    __tablename__ = "identity_revocation_events"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    audit_id: Mapped[str | None] = mapped_column(sa.String(64), index=True)
    user_id: Mapped[str | None] = mapped_column(ID)
    project_id: Mapped[str | None] = mapped_column(ID)
    domain_id: Mapped[str | None] = mapped_column(ID)
    role_id: Mapped[str | None] = mapped_column(ID)
    application_credential_id: Mapped[str | None] = mapped_column(ID)
    issued_before: Mapped[dt.datetime] = mapped_column(PRECISE_TIME)
    revoked_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
