"""Identity's resources and rules: domains, projects, users, groups, roles, grants.

Every method is synchronous and opens its own transaction; ``api.py`` runs
them in worker threads. Methods return detached model objects (or plain data
for computed answers such as effective roles); the API turns them into
Keystone's JSON. Each write bumps ``generation`` so the token cache in
``auth.py`` never serves an answer older than the data it came from.

The catalog (regions, services, endpoints) is in ``catalog.py``, credentials
and application credentials in ``credentials.py``, authentication and tokens
in ``auth.py``.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tinystack.common.cache import BoundedCache
from tinystack.common.db import Database, new_id, utcnow
from tinystack.common.errors import BadRequest, Conflict, Forbidden, NotFound
from tinystack.config import IdentitySettings
from tinystack.identity import passwords
from tinystack.identity.models import (
    Assignment,
    Domain,
    Group,
    ImpliedRole,
    Membership,
    Password,
    Project,
    RevocationEvent,
    Role,
    User,
)

__all__ = ["IdentityService", "Grant", "ROLE_TARGETS"]

ROLE_TARGETS = ("project", "domain", "system")
T = TypeVar("T")

REMEMBERED_ENTRIES = 4096
"""Remembered reads kept at most (see ``IdentityService.remembered``), least recently used
dropped first."""


@dataclass(frozen=True)
class Grant:
    """One role assignment, as ``/v3/role_assignments`` lists it."""

    role_id: str
    actor_type: str  # "user" | "group"
    actor_id: str
    target_type: str  # "project" | "domain" | "system"
    target_id: str
    inherited: bool = False
    via_group_id: str | None = None
    prior_role_id: str | None = None


class IdentityService:
    def __init__(self, db: Database, conf: IdentitySettings):
        self.db = db
        self.conf = conf
        self.generation = 0
        self._lock = threading.Lock()
        self._remembered: BoundedCache[tuple[int, Any]] = BoundedCache(
            REMEMBERED_ENTRIES, conf.cache_ttl)

    # -- bookkeeping -----------------------------------------------------

    def changed(self) -> None:
        """Note a write: every cached token answer and remembered read is now stale."""
        with self._lock:
            self.generation += 1
        self._remembered.clear()  # all stale now: free them rather than wait for eviction

    def remembered(self, key: tuple, compute: Callable[[], T]) -> T:
        """``compute()``, reused until the next write anywhere in identity.

        Identity data changes rarely and is read on every request, so hot
        reads (a token's user, project, roles) are kept per generation. The
        generation is read before computing: a write racing the computation
        leaves an entry that is already stale. At most ``REMEMBERED_ENTRIES``
        are kept, each for ``identity.cache_ttl`` seconds at most.
        """
        generation = self.generation
        hit = self._remembered.get(key)
        if hit is not None and hit[0] == generation:
            return hit[1]
        value = compute()
        self._remembered.put(key, (generation, value))
        return value

    def _lookup(self, model: type, obj_id: str | None):
        if not obj_id:
            return None

        def load():
            with self.db.session() as s:
                return s.get(model, obj_id)
        return self.remembered((model.__name__, obj_id), load)

    def user_snapshot(self, user_id: str) -> User | None:
        return self._lookup(User, user_id)

    def domain_snapshot(self, domain_id: str) -> Domain | None:
        return self._lookup(Domain, domain_id)

    def project_snapshot(self, project_id: str) -> Project | None:
        return self._lookup(Project, project_id)

    def _store(self, session: Session, obj: Any, kind: str, conflict: str) -> None:
        session.add(obj)
        try:
            session.flush()
        except IntegrityError:
            raise Conflict(f"Conflict occurred attempting to store {kind} - {conflict}") from None

    @staticmethod
    def _get(session: Session, model: type, kind: str, obj_id: str):
        obj = session.get(model, obj_id) if obj_id else None
        if obj is None:
            raise NotFound(f"Could not find {kind}: {obj_id}.")
        return obj

    @staticmethod
    def _apply(obj: Any, changes: dict, fields: Iterable[str]) -> None:
        extra = dict(obj.extra or {})
        for key, value in changes.items():
            if key in fields:
                setattr(obj, key, value)
            elif key not in ("id", "links"):
                extra[key] = value
        obj.extra = extra

    # -- domains -----------------------------------------------------------

    def create_domain(self, name: str, description: str = "", enabled: bool = True,
                      domain_id: str | None = None, extra: dict | None = None) -> Domain:
        with self.db.session() as s:
            if s.scalar(sa.select(Domain).where(Domain.name == name)):
                raise Conflict(f"Conflict occurred attempting to store domain - Duplicate entry "
                               f"found with name {name}.")
            domain = Domain(id=domain_id or new_id(), name=name, description=description,
                            enabled=enabled, extra=extra or {})
            self._store(s, domain, "domain", f"Duplicate entry found with name {name}.")
        self.changed()
        return domain

    def get_domain(self, domain_id: str) -> Domain:
        with self.db.session() as s:
            return self._get(s, Domain, "domain", domain_id)

    def find_domain(self, *, domain_id: str | None = None, name: str | None = None) -> Domain:
        with self.db.session() as s:
            if domain_id:
                return self._get(s, Domain, "domain", domain_id)
            domain = s.scalar(sa.select(Domain).where(Domain.name == name))
            if domain is None:
                raise NotFound(f"Could not find domain: {name}.")
            return domain

    def list_domains(self, name: str | None = None, enabled: bool | None = None) -> list[Domain]:
        with self.db.session() as s:
            query = sa.select(Domain).order_by(Domain.name)
            if name is not None:
                query = query.where(Domain.name == name)
            if enabled is not None:
                query = query.where(Domain.enabled == enabled)
            return list(s.scalars(query))

    def update_domain(self, domain_id: str, changes: dict) -> Domain:
        with self.db.session() as s:
            domain = self._get(s, Domain, "domain", domain_id)
            if domain_id == "default" and changes.get("enabled") is False:
                raise Forbidden("The default domain cannot be disabled.")
            self._apply(domain, changes, ("name", "description", "enabled"))
            self._store(s, domain, "domain", f"Duplicate entry found with name {domain.name}.")
        self.changed()
        return domain

    def delete_domain(self, domain_id: str) -> None:
        with self.db.session() as s:
            domain = self._get(s, Domain, "domain", domain_id)
            if domain.enabled:
                raise Forbidden("Cannot delete a domain that is enabled, please disable it first.")
            for model in (User, Group):
                for obj in s.scalars(sa.select(model).where(model.domain_id == domain_id)):
                    self._forget_actor(s, "user" if model is User else "group", obj.id)
                    s.delete(obj)
            projects = list(s.scalars(sa.select(Project).where(Project.domain_id == domain_id)))
            for project in sorted(projects, key=lambda p: -self._depth(s, p)):
                self._forget_target(s, "project", project.id)
                s.delete(project)
                s.flush()
            self._forget_target(s, "domain", domain_id)
            s.execute(sa.delete(Role).where(Role.domain_id == domain_id))
            s.delete(domain)
        self.changed()

    # -- projects ------------------------------------------------------------

    @staticmethod
    def _depth(s: Session, project: Project) -> int:
        depth, parent = 0, project.parent_id
        while parent and parent != project.domain_id:
            depth += 1
            node = s.get(Project, parent)
            parent = node.parent_id if node else None
        return depth

    def create_project(self, name: str, domain_id: str | None = None, parent_id: str | None = None,
                       description: str = "", enabled: bool = True, tags: list | None = None,
                       extra: dict | None = None, is_domain: bool = False,
                       project_id: str | None = None) -> Project:
        if is_domain:
            raise BadRequest("Creating a project acting as a domain is not supported; "
                             "create a domain instead.")
        with self.db.session() as s:
            if parent_id and parent_id != domain_id:
                parent = s.get(Project, parent_id)
                if parent is None:
                    if s.get(Domain, parent_id) is None:
                        raise NotFound(f"Could not find project: {parent_id}.")
                    domain_id = domain_id or parent_id
                elif domain_id and parent.domain_id != domain_id:
                    raise BadRequest("Cannot create project, the parent must be in the same "
                                     "domain as the new project.")
                else:
                    domain_id = parent.domain_id
            domain_id = domain_id or "default"
            self._get(s, Domain, "domain", domain_id)
            clash = s.scalar(sa.select(Project.id).where(
                Project.domain_id == domain_id, Project.name == name))
            if clash:
                raise Conflict("Conflict occurred attempting to store project - it is not "
                               "permitted to have two projects with the same name in the same "
                               f"domain : {name}.")
            project = Project(id=project_id or new_id(), name=name, domain_id=domain_id,
                              parent_id=parent_id if parent_id and parent_id != domain_id else None,
                              description=description, enabled=enabled, tags=tags or [],
                              extra=extra or {})
            self._store(s, project, "project", f"Duplicate entry found with name {name}.")
        self.changed()
        return project

    def get_project(self, project_id: str) -> Project:
        with self.db.session() as s:
            return self._get(s, Project, "project", project_id)

    def find_project(self, *, project_id: str | None = None, name: str | None = None,
                     domain_id: str | None = None) -> Project:
        with self.db.session() as s:
            if project_id:
                return self._get(s, Project, "project", project_id)
            project = s.scalar(sa.select(Project).where(
                Project.name == name, Project.domain_id == (domain_id or "default")))
            if project is None:
                raise NotFound(f"Could not find project: {name}.")
            return project

    def list_projects(self, *, name=None, domain_id=None, enabled=None, parent_id=None,
                      ids: Iterable[str] | None = None, tags=None) -> list[Project]:
        ids = None if ids is None else tuple(ids)
        tags = tuple(tags) if tags else None
        key = ("projects", name, domain_id, enabled, parent_id, ids, tags)
        return list(self.remembered(key, lambda: tuple(self._list_projects(
            name, domain_id, enabled, parent_id, ids, tags))))

    def _list_projects(self, name, domain_id, enabled, parent_id, ids, tags) -> list[Project]:
        with self.db.session() as s:
            query = sa.select(Project).order_by(Project.name)
            if name is not None:
                query = query.where(Project.name == name)
            if domain_id is not None:
                query = query.where(Project.domain_id == domain_id)
            if enabled is not None:
                query = query.where(Project.enabled == enabled)
            if parent_id is not None:
                query = query.where(sa.or_(
                    Project.parent_id == parent_id,
                    sa.and_(Project.parent_id.is_(None), Project.domain_id == parent_id)))
            if ids is not None:
                query = query.where(Project.id.in_(list(ids)))
            found = list(s.scalars(query))
            if tags:
                found = [p for p in found if set(tags) <= set(p.tags or [])]
            return found

    def update_project(self, project_id: str, changes: dict) -> Project:
        if "domain_id" in changes or "parent_id" in changes or changes.get("is_domain"):
            raise BadRequest("A project's domain_id, parent_id and is_domain cannot be changed.")
        with self.db.session() as s:
            project = self._get(s, Project, "project", project_id)
            name = changes.get("name")
            if name and name != project.name and s.scalar(sa.select(Project.id).where(
                    Project.domain_id == project.domain_id, Project.name == name)):
                raise Conflict("Conflict occurred attempting to store project - it is not "
                               "permitted to have two projects with the same name in the same "
                               f"domain : {name}.")
            self._apply(project, changes, ("name", "description", "enabled", "tags"))
            s.flush()
        self.changed()
        return project

    def delete_project(self, project_id: str) -> None:
        with self.db.session() as s:
            project = self._get(s, Project, "project", project_id)
            if s.scalar(sa.select(Project.id).where(Project.parent_id == project_id).limit(1)):
                raise Forbidden(f"Cannot delete the project {project_id} since it is not a leaf "
                                "in the hierarchy. Use the cascade option if you want to "
                                "delete a whole subtree.")
            self._forget_target(s, "project", project_id)
            s.delete(project)
        self.changed()

    def project_ancestors(self, s: Session, project: Project) -> list[str]:
        chain, parent = [], project.parent_id
        while parent:
            chain.append(parent)
            node = s.get(Project, parent)
            parent = node.parent_id if node else None
        return chain

    # -- users ---------------------------------------------------------------

    def create_user(self, name: str, domain_id: str | None = None, password: str | None = None,
                    enabled: bool = True, default_project_id: str | None = None,
                    extra: dict | None = None, options: dict | None = None,
                    user_id: str | None = None) -> User:
        hashed = None if password is None else passwords.hash_password(
            password, self.conf.password_hash_rounds)
        with self.db.session() as s:
            domain_id = domain_id or "default"
            self._get(s, Domain, "domain", domain_id)
            if s.scalar(sa.select(User.id).where(User.domain_id == domain_id, User.name == name)):
                raise Conflict("Conflict occurred attempting to store user - Duplicate entry "
                               f"found with name {name} at domain ID {domain_id}.")
            user = User(id=user_id or new_id(), name=name, domain_id=domain_id, enabled=enabled,
                        default_project_id=default_project_id, extra=extra or {},
                        options=options or {})
            self._store(s, user, "user", f"Duplicate entry found with name {name}.")
            if hashed is not None:
                self._add_password(s, user, hashed, self_service=False)
        self.changed()
        return user

    def _add_password(self, s: Session, user: User, hashed: str, self_service: bool) -> None:
        now = utcnow()
        ignore = bool((user.options or {}).get("ignore_password_expiry"))
        s.add(Password(user_id=user.id, hash=hashed, created_at=now, self_service=self_service,
                       expires_at=passwords.expiry_for_new_password(self.conf, now, ignore)))

    def get_user(self, user_id: str) -> User:
        with self.db.session() as s:
            return self._get(s, User, "user", user_id)

    def find_user(self, *, user_id: str | None = None, name: str | None = None,
                  domain_id: str | None = None, domain_name: str | None = None) -> User:
        with self.db.session() as s:
            if user_id:
                return self._get(s, User, "user", user_id)
            if domain_name and not domain_id:
                domain_id = s.scalar(sa.select(Domain.id).where(Domain.name == domain_name))
            user = s.scalar(sa.select(User).where(User.name == name,
                                                  User.domain_id == (domain_id or "default")))
            if user is None:
                raise NotFound(f"Could not find user: {name}.")
            return user

    def list_users(self, *, name=None, domain_id=None, enabled=None,
                   group_id: str | None = None) -> list[User]:
        with self.db.session() as s:
            query = sa.select(User).order_by(User.name)
            if group_id is not None:
                self._get(s, Group, "group", group_id)
                query = query.join(Membership, Membership.user_id == User.id).where(
                    Membership.group_id == group_id)
            if name is not None:
                query = query.where(User.name == name)
            if domain_id is not None:
                query = query.where(User.domain_id == domain_id)
            if enabled is not None:
                query = query.where(User.enabled == enabled)
            return list(s.scalars(query))

    def password_expires_at(self, user_id: str) -> dt.datetime | None:
        def load():
            with self.db.session() as s:
                return s.scalar(sa.select(Password.expires_at).where(
                    Password.user_id == user_id).order_by(Password.id.desc()).limit(1))
        return self.remembered(("password_expiry", user_id), load)

    def update_user(self, user_id: str, changes: dict) -> User:
        changes = dict(changes)
        password = changes.pop("password", None)
        if "domain_id" in changes:
            raise BadRequest("A user's domain_id cannot be changed.")
        hashed = None if password is None else passwords.hash_password(
            password, self.conf.password_hash_rounds)
        with self.db.session() as s:
            user = self._get(s, User, "user", user_id)
            name = changes.get("name")
            if name and name != user.name and s.scalar(sa.select(User.id).where(
                    User.domain_id == user.domain_id, User.name == name)):
                raise Conflict("Conflict occurred attempting to store user - Duplicate entry "
                               f"found with name {name} at domain ID {user.domain_id}.")
            if "options" in changes:
                options = dict(user.options or {})
                for key, value in (changes.pop("options") or {}).items():
                    if value is None:
                        options.pop(key, None)
                    else:
                        options[key] = value
                user.options = options
            was_enabled = user.enabled
            self._apply(user, changes, ("name", "enabled", "default_project_id"))
            if hashed is not None:
                self._check_history(s, user.id, password)
                self._add_password(s, user, hashed, self_service=False)
                user.failed_auth_count = 0
            if hashed is not None or (was_enabled and not user.enabled):
                self._revoke(s, user_id=user.id)
            s.flush()
        self.changed()
        return user

    def _check_history(self, s: Session, user_id: str, password: str) -> None:
        if self.conf.unique_last_password_count > 1:
            recent = list(s.scalars(sa.select(Password.hash).where(Password.user_id == user_id)
                                    .order_by(Password.id.desc())
                                    .limit(self.conf.unique_last_password_count - 1)))
            passwords.check_history(self.conf, password, recent)

    def current_password(self, s: Session, user_id: str) -> Password | None:
        return s.scalar(sa.select(Password).where(Password.user_id == user_id)
                        .order_by(Password.id.desc()).limit(1))

    def change_password(self, user_id: str, original: str, new: str) -> None:
        """A user's own change: the original must match and the rules must allow it."""
        from tinystack.common.errors import Unauthorized

        with self.db.session() as s:
            user = s.get(User, user_id)
            current = self.current_password(s, user_id) if user else None
            if user is None or not passwords.check_password(original,
                                                            current.hash if current else None):
                raise Unauthorized("The request you have made requires authentication.")
            if current and current.self_service:
                passwords.check_minimum_age(self.conf, current.created_at, utcnow())
            self._check_history(s, user_id, new)
            self._add_password(s, user, passwords.hash_password(
                new, self.conf.password_hash_rounds), self_service=True)
            user.failed_auth_count = 0
            self._revoke(s, user_id=user_id)
        self.changed()

    def delete_user(self, user_id: str) -> None:
        with self.db.session() as s:
            user = self._get(s, User, "user", user_id)
            self._forget_actor(s, "user", user_id)
            self._revoke(s, user_id=user_id)
            s.delete(user)
        self.changed()

    def _forget_actor(self, s: Session, actor_type: str, actor_id: str) -> None:
        s.execute(sa.delete(Assignment).where(Assignment.actor_type == actor_type,
                                              Assignment.actor_id == actor_id))
        column = Membership.user_id if actor_type == "user" else Membership.group_id
        s.execute(sa.delete(Membership).where(column == actor_id))

    def _forget_target(self, s: Session, target_type: str, target_id: str) -> None:
        s.execute(sa.delete(Assignment).where(Assignment.target_type == target_type,
                                              Assignment.target_id == target_id))

    def _revoke(self, s: Session, **match: Any) -> None:
        match.setdefault("issued_before", utcnow())
        s.add(RevocationEvent(**match))

    def record_login(self, user_id: str, success: bool) -> None:
        with self.db.session() as s:
            user = s.get(User, user_id)
            if user is None:
                return
            now = utcnow()
            if success:
                if user.failed_auth_count:
                    user.failed_auth_count = 0
                user.last_active_at = now
            else:
                user.failed_auth_count = (user.failed_auth_count or 0) + 1
                user.failed_auth_at = now

    # -- groups --------------------------------------------------------------

    def create_group(self, name: str, domain_id: str | None = None, description: str = "",
                     extra: dict | None = None) -> Group:
        with self.db.session() as s:
            domain_id = domain_id or "default"
            self._get(s, Domain, "domain", domain_id)
            if s.scalar(sa.select(Group.id).where(Group.domain_id == domain_id,
                                                  Group.name == name)):
                raise Conflict("Conflict occurred attempting to store group - Duplicate entry "
                               f"found with name {name} at domain ID {domain_id}.")
            group = Group(name=name, domain_id=domain_id, description=description)
            self._store(s, group, "group", f"Duplicate entry found with name {name}.")
        self.changed()
        return group

    def get_group(self, group_id: str) -> Group:
        with self.db.session() as s:
            return self._get(s, Group, "group", group_id)

    def list_groups(self, *, name=None, domain_id=None, user_id: str | None = None) -> list[Group]:
        with self.db.session() as s:
            query = sa.select(Group).order_by(Group.name)
            if user_id is not None:
                self._get(s, User, "user", user_id)
                query = query.join(Membership, Membership.group_id == Group.id).where(
                    Membership.user_id == user_id)
            if name is not None:
                query = query.where(Group.name == name)
            if domain_id is not None:
                query = query.where(Group.domain_id == domain_id)
            return list(s.scalars(query))

    def update_group(self, group_id: str, changes: dict) -> Group:
        if "domain_id" in changes:
            raise BadRequest("A group's domain_id cannot be changed.")
        with self.db.session() as s:
            group = self._get(s, Group, "group", group_id)
            for key in ("name", "description"):
                if key in changes:
                    setattr(group, key, changes[key])
            self._store(s, group, "group", f"Duplicate entry found with name {group.name}.")
        self.changed()
        return group

    def delete_group(self, group_id: str) -> None:
        with self.db.session() as s:
            group = self._get(s, Group, "group", group_id)
            self._forget_actor(s, "group", group_id)
            s.delete(group)
        self.changed()

    def add_member(self, group_id: str, user_id: str) -> None:
        with self.db.session() as s:
            self._get(s, Group, "group", group_id)
            self._get(s, User, "user", user_id)
            if s.get(Membership, (user_id, group_id)) is None:
                s.add(Membership(user_id=user_id, group_id=group_id))
        self.changed()

    def is_member(self, group_id: str, user_id: str) -> bool:
        with self.db.session() as s:
            self._get(s, Group, "group", group_id)
            self._get(s, User, "user", user_id)
            return s.get(Membership, (user_id, group_id)) is not None

    def remove_member(self, group_id: str, user_id: str) -> None:
        with self.db.session() as s:
            self._get(s, Group, "group", group_id)
            self._get(s, User, "user", user_id)
            membership = s.get(Membership, (user_id, group_id))
            if membership is None:
                raise NotFound(f"Could not find user: {user_id} in group {group_id}.")
            s.delete(membership)
            self._revoke(s, user_id=user_id)
        self.changed()

    # -- roles ---------------------------------------------------------------

    def create_role(self, name: str, domain_id: str | None = None, description: str = "",
                    options: dict | None = None, role_id: str | None = None) -> Role:
        with self.db.session() as s:
            query = sa.select(Role.id).where(Role.name == name)
            query = query.where(Role.domain_id.is_(None) if domain_id is None
                                else Role.domain_id == domain_id)
            if s.scalar(query):
                raise Conflict("Conflict occurred attempting to store role - Duplicate entry "
                               f"found with name {name}.")
            if domain_id:
                self._get(s, Domain, "domain", domain_id)
            role = Role(id=role_id or new_id(), name=name, domain_id=domain_id,
                        description=description, options=options or {})
            self._store(s, role, "role", f"Duplicate entry found with name {name}.")
        self.changed()
        return role

    def get_role(self, role_id: str) -> Role:
        with self.db.session() as s:
            return self._get(s, Role, "role", role_id)

    def list_roles(self, *, name=None, domain_id: str | None = None) -> list[Role]:
        with self.db.session() as s:
            query = sa.select(Role).order_by(Role.name)
            query = query.where(Role.domain_id.is_(None) if domain_id is None
                                else Role.domain_id == domain_id)
            if name is not None:
                query = query.where(Role.name == name)
            return list(s.scalars(query))

    def update_role(self, role_id: str, changes: dict) -> Role:
        with self.db.session() as s:
            role = self._get(s, Role, "role", role_id)
            if (role.options or {}).get("immutable") and set(changes) - {"options"}:
                raise Forbidden(f"Cannot modify the immutable role {role_id}.")
            name = changes.get("name")
            if name and name != role.name and s.scalar(sa.select(Role.id).where(
                    Role.name == name, Role.domain_id.is_(None) if role.domain_id is None
                    else Role.domain_id == role.domain_id)):
                # the unique key does not see it: NULL domain ids never clash in SQL
                raise Conflict("Conflict occurred attempting to store role - Duplicate entry "
                               f"found with name {name}.")
            for key in ("name", "description", "options"):
                if key in changes:
                    setattr(role, key, changes[key])
            self._store(s, role, "role", f"Duplicate entry found with name {role.name}.")
        self.changed()
        return role

    def delete_role(self, role_id: str) -> None:
        with self.db.session() as s:
            role = self._get(s, Role, "role", role_id)
            if (role.options or {}).get("immutable"):
                raise Forbidden(f"Cannot delete the immutable role {role_id}.")
            s.execute(sa.delete(Assignment).where(Assignment.role_id == role_id))
            s.execute(sa.delete(ImpliedRole).where(sa.or_(
                ImpliedRole.prior_role_id == role_id, ImpliedRole.implied_role_id == role_id)))
            s.delete(role)
        self.changed()

    def create_implied_role(self, prior_id: str, implied_id: str) -> None:
        with self.db.session() as s:
            self._get(s, Role, "role", prior_id)
            self._get(s, Role, "role", implied_id)
            if prior_id == implied_id or implied_id in self._implied_closure(s, [implied_id]) \
                    and prior_id in self._implied_closure(s, [implied_id]):
                raise Forbidden("Cannot create an implied role that forms a loop.")
            if s.get(ImpliedRole, (prior_id, implied_id)) is None:
                s.add(ImpliedRole(prior_role_id=prior_id, implied_role_id=implied_id))
        self.changed()

    def get_implied_role(self, prior_id: str, implied_id: str) -> tuple[Role, Role]:
        with self.db.session() as s:
            prior = self._get(s, Role, "role", prior_id)
            implied = self._get(s, Role, "role", implied_id)
            if s.get(ImpliedRole, (prior_id, implied_id)) is None:
                raise NotFound(f"{prior_id} does not imply {implied_id}.")
            return prior, implied

    def delete_implied_role(self, prior_id: str, implied_id: str) -> None:
        with self.db.session() as s:
            rule = s.get(ImpliedRole, (prior_id, implied_id))
            if rule is None:
                raise NotFound(f"{prior_id} does not imply {implied_id}.")
            s.delete(rule)
        self.changed()

    def list_implied_roles(self, prior_id: str | None = None) -> list[tuple[Role, Role]]:
        with self.db.session() as s:
            if prior_id:
                self._get(s, Role, "role", prior_id)
            query = sa.select(ImpliedRole)
            if prior_id:
                query = query.where(ImpliedRole.prior_role_id == prior_id)
            return [(s.get(Role, r.prior_role_id), s.get(Role, r.implied_role_id))
                    for r in s.scalars(query)]

    def _implied_closure(self, s: Session, role_ids: Iterable[str]) -> dict[str, str | None]:
        """Every role reached from ``role_ids`` through implications: role -> prior role."""
        rules: dict[str, list[str]] = {}
        for rule in s.scalars(sa.select(ImpliedRole)):
            rules.setdefault(rule.prior_role_id, []).append(rule.implied_role_id)
        found: dict[str, str | None] = {r: None for r in role_ids}
        todo = list(found)
        while todo:
            prior = todo.pop()
            for implied in rules.get(prior, ()):
                if implied not in found:
                    found[implied] = prior
                    todo.append(implied)
        return found

    # -- grants ----------------------------------------------------------------

    def _check_grant(self, s: Session, role_id: str, actor_type: str, actor_id: str,
                     target_type: str, target_id: str) -> None:
        self._get(s, Role, "role", role_id)
        self._get(s, User if actor_type == "user" else Group, actor_type, actor_id)
        if target_type == "project":
            self._get(s, Project, "project", target_id)
        elif target_type == "domain":
            self._get(s, Domain, "domain", target_id)

    def grant(self, role_id: str, actor_type: str, actor_id: str, target_type: str,
              target_id: str, inherited: bool = False) -> None:
        with self.db.session() as s:
            self._check_grant(s, role_id, actor_type, actor_id, target_type, target_id)
            key = (actor_type, actor_id, target_type, target_id, role_id, inherited)
            if s.get(Assignment, key) is None:
                s.add(Assignment(actor_type=actor_type, actor_id=actor_id,
                                 target_type=target_type, target_id=target_id,
                                 role_id=role_id, inherited=inherited))
        self.changed()

    def check_grant(self, role_id: str, actor_type: str, actor_id: str, target_type: str,
                    target_id: str, inherited: bool = False) -> None:
        with self.db.session() as s:
            self._check_grant(s, role_id, actor_type, actor_id, target_type, target_id)
            key = (actor_type, actor_id, target_type, target_id, role_id, inherited)
            if s.get(Assignment, key) is None:
                raise NotFound(f"Could not find role assignment with role: {role_id}, "
                               f"{actor_type}: {actor_id}, {target_type}: {target_id}.")

    def revoke_grant(self, role_id: str, actor_type: str, actor_id: str, target_type: str,
                     target_id: str, inherited: bool = False) -> None:
        with self.db.session() as s:
            self._check_grant(s, role_id, actor_type, actor_id, target_type, target_id)
            key = (actor_type, actor_id, target_type, target_id, role_id, inherited)
            assignment = s.get(Assignment, key)
            if assignment is None:
                raise NotFound(f"Could not find role assignment with role: {role_id}, "
                               f"{actor_type}: {actor_id}, {target_type}: {target_id}.")
            s.delete(assignment)
        self.changed()

    def list_grant_roles(self, actor_type: str, actor_id: str, target_type: str,
                         target_id: str, inherited: bool = False) -> list[Role]:
        with self.db.session() as s:
            self._get(s, User if actor_type == "user" else Group, actor_type, actor_id)
            if target_type == "project":
                self._get(s, Project, "project", target_id)
            elif target_type == "domain":
                self._get(s, Domain, "domain", target_id)
            return list(s.scalars(
                sa.select(Role).join(Assignment, Assignment.role_id == Role.id).where(
                    Assignment.actor_type == actor_type, Assignment.actor_id == actor_id,
                    Assignment.target_type == target_type, Assignment.target_id == target_id,
                    Assignment.inherited == inherited).order_by(Role.name)))

    def _user_assignments(self, s: Session, user_id: str) -> list[Grant]:
        group_ids = list(s.scalars(sa.select(Membership.group_id)
                                   .where(Membership.user_id == user_id)))
        query = sa.select(Assignment).where(sa.or_(
            sa.and_(Assignment.actor_type == "user", Assignment.actor_id == user_id),
            sa.and_(Assignment.actor_type == "group", Assignment.actor_id.in_(group_ids))))
        return [Grant(a.role_id, "user", user_id, a.target_type, a.target_id, a.inherited,
                      via_group_id=a.actor_id if a.actor_type == "group" else None)
                for a in s.scalars(query)]

    def effective_role_ids(self, user_id: str, *, project_id: str | None = None,
                           domain_id: str | None = None, system: bool = False) -> set[str]:
        """Every role the user holds on the target: direct, by group, inherited, implied."""
        return set(self.remembered(
            ("effective", user_id, project_id, domain_id, system),
            lambda: frozenset(self._effective_role_ids(user_id, project_id, domain_id, system))))

    def _effective_role_ids(self, user_id: str, project_id: str | None, domain_id: str | None,
                            system: bool) -> set[str]:
        with self.db.session() as s:
            grants = self._user_assignments(s, user_id)
            direct: set[str] = set()
            if system:
                direct = {g.role_id for g in grants if g.target_type == "system"}
            elif domain_id:
                direct = {g.role_id for g in grants if g.target_type == "domain"
                          and g.target_id == domain_id and not g.inherited}
            elif project_id:
                project = s.get(Project, project_id)
                if project is None:
                    return set()
                above = set(self.project_ancestors(s, project))
                for g in grants:
                    if g.target_type == "project" and g.target_id == project_id \
                            and not g.inherited:
                        direct.add(g.role_id)
                    elif g.inherited and g.target_type == "project" and g.target_id in above:
                        direct.add(g.role_id)
                    elif g.inherited and g.target_type == "domain" \
                            and g.target_id == project.domain_id:
                        direct.add(g.role_id)
            return set(self._implied_closure(s, direct)) if direct else set()

    def user_targets(self, user_id: str) -> tuple[list[Project], list[Domain], bool]:
        """Projects and domains where the user has some role, and whether on the system."""
        with self.db.session() as s:
            grants = self._user_assignments(s, user_id)
            project_ids = {g.target_id for g in grants
                           if g.target_type == "project" and not g.inherited}
            domain_ids = {g.target_id for g in grants
                          if g.target_type == "domain" and not g.inherited}
            inherited_domains = {g.target_id for g in grants
                                 if g.target_type == "domain" and g.inherited}
            inherited_projects = {g.target_id for g in grants
                                  if g.target_type == "project" and g.inherited}
            projects = list(s.scalars(sa.select(Project)))
            for project in projects:
                if project.domain_id in inherited_domains or \
                        inherited_projects & set(self.project_ancestors(s, project)):
                    project_ids.add(project.id)
            chosen = [p for p in projects if p.id in project_ids and p.enabled]
            domains = [d for d in s.scalars(sa.select(Domain).where(Domain.id.in_(domain_ids)))
                       if d.enabled]
            system = any(g.target_type == "system" for g in grants)
            return (sorted(chosen, key=lambda p: p.name), sorted(domains, key=lambda d: d.name),
                    system)

    def list_grants(self, *, user_id=None, group_id=None, role_id=None, project_id=None,
                    domain_id=None, system=False, inherited: bool | None = None,
                    effective=False, include_subtree=False) -> list[Grant]:
        """``/v3/role_assignments``: filters as Keystone takes them."""
        with self.db.session() as s:
            rows = list(s.scalars(sa.select(Assignment)))
            grants = [Grant(a.role_id, a.actor_type, a.actor_id, a.target_type, a.target_id,
                            a.inherited) for a in rows]
            projects = {p.id: p for p in s.scalars(sa.select(Project))}
            if effective:
                grants = self._effective(s, grants, projects)
            out = []
            subtree = set()
            if project_id and include_subtree:
                subtree = {pid for pid, p in projects.items()
                           if project_id in self.project_ancestors(s, p)}
            for g in grants:
                if user_id and not (g.actor_type == "user" and g.actor_id == user_id):
                    continue
                if group_id and not (g.actor_type == "group" and g.actor_id == group_id):
                    continue
                if role_id and g.role_id != role_id:
                    continue
                if project_id and not (g.target_type == "project"
                                       and (g.target_id == project_id or g.target_id in subtree)):
                    continue
                if domain_id and not (g.target_type == "domain" and g.target_id == domain_id):
                    continue
                if system and g.target_type != "system":
                    continue
                if inherited is not None and g.inherited != inherited:
                    continue
                out.append(g)
            return out

    def _effective(self, s: Session, grants: list[Grant],
                   projects: dict[str, Project]) -> list[Grant]:
        members: dict[str, list[str]] = {}
        for m in s.scalars(sa.select(Membership)):
            members.setdefault(m.group_id, []).append(m.user_id)
        expanded: list[Grant] = []
        for g in grants:
            actors = [(g.actor_id, None)] if g.actor_type == "user" else \
                [(uid, g.actor_id) for uid in members.get(g.actor_id, [])]
            if g.inherited:
                if g.target_type == "domain":
                    targets = [p.id for p in projects.values() if p.domain_id == g.target_id]
                else:
                    targets = [p.id for p in projects.values()
                               if g.target_id in self.project_ancestors(s, p)]
                targets = [("project", t) for t in targets]
            else:
                targets = [(g.target_type, g.target_id)]
            for actor_id, via in actors:
                for target_type, target_id in targets:
                    expanded.append(Grant(g.role_id, "user", actor_id, target_type, target_id,
                                          False, via_group_id=via))
        with_implied: list[Grant] = []
        seen = set()
        for g in expanded:
            for role_id, prior in self._implied_closure(s, [g.role_id]).items():
                key = (role_id, g.actor_id, g.target_type, g.target_id)
                if key in seen:
                    continue
                seen.add(key)
                with_implied.append(Grant(role_id, "user", g.actor_id, g.target_type,
                                          g.target_id, False, g.via_group_id,
                                          prior_role_id=prior))
        return with_implied

    def names(self, kind: str, ids: Iterable[str]) -> dict[str, Any]:
        """id -> model object for ``include_names`` rendering."""
        model = {"role": Role, "user": User, "group": Group, "project": Project,
                 "domain": Domain}[kind]
        ids = sorted(set(ids))
        if not ids:
            return {}

        def load():
            with self.db.session() as s:
                return {o.id: o for o in s.scalars(sa.select(model).where(model.id.in_(ids)))}
        return dict(self.remembered(("names", kind, tuple(ids)), load))

    def revocation_events(self, since: dt.datetime | None = None) -> list[RevocationEvent]:
        with self.db.session() as s:
            query = sa.select(RevocationEvent).order_by(RevocationEvent.id)
            if since is not None:
                query = query.where(RevocationEvent.revoked_at >= since)
            return list(s.scalars(query))

    def add_revocation(self, **match: Any) -> None:
        with self.db.session() as s:
            self._revoke(s, **match)
        self.changed()
