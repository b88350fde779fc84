"""Reading and editing what a server is: list and show, update, metadata, tags,
addresses, instance actions, and the facts the metadata service serves.

Every method is synchronous, opens its own transaction and returns detached
rows wrapped in ``ServerRecord`` (the server with its metadata, tags, groups
and its node's status), which ``views.py`` turns into Nova's JSON. Lists
filter in SQL where it is plain (project, host, image, flavor, zone...) and
in Python where Nova's semantics are (``name`` is a regular expression,
``status`` is computed from two columns), then sort and page.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.orm import Session

from tinystack.common.errors import BadRequest, Conflict, NotFound
from tinystack.compute import states
from tinystack.compute.metadata import ServerFacts
from tinystack.compute.models import (
    InstanceAction,
    InstanceActionEvent,
    Server,
    ServerGroupMember,
    ServerMetadata,
    ServerTag,
    Service,
)
from tinystack.compute.quotas import Quotas
from tinystack.compute.servers import facts_of
from tinystack.compute.service import Caller, ComputeCore, server_not_found

__all__ = ["Listing", "ServerRecord", "ListFilters", "replace_metadata", "SORT_KEYS",
           "MAX_TAGS"]

MAX_TAGS = 50
_TAG_STATES = (states.ACTIVE, states.PAUSED, states.SUSPENDED, states.STOPPED, "shelved",
               "shelved_offloaded")
_METADATA_STATES = _TAG_STATES
SORT_KEYS = {
    "access_ip_v4": "access_ipv4", "access_ip_v6": "access_ipv6",
    "availability_zone": "availability_zone", "config_drive": "config_drive",
    "created_at": "created_at", "display_description": "description",
    "display_name": "name", "host": "host", "hostname": "hostname", "image_ref": "image_ref",
    "key_name": "key_name", "launch_index": "launch_index", "launched_at": "launched_at",
    "locked": "locked", "locked_by": "locked_by", "node": "node",
    "power_state": "power_state", "progress": "progress", "project_id": "project_id",
    "task_state": "task_state", "terminated_at": "terminated_at",
    "updated_at": "updated_at", "user_id": "user_id", "uuid": "id", "vm_state": "vm_state",
}


@dataclass
class ServerRecord:
    server: Server
    metadata: dict[str, str] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    host_status: str = ""
    """UP, DOWN, MAINTENANCE or UNKNOWN for the server's node; "" without a node (2.16)."""


@dataclass
class ListFilters:
    """``GET /servers`` query, already parsed; None means "not given"."""

    all_tenants: bool = False
    project_id: str | None = None
    user_id: str | None = None
    name: str | None = None
    status: str | None = None
    image: str | None = None
    flavor: str | None = None
    host: str | None = None
    node: str | None = None
    ip: str | None = None
    ip6: str | None = None
    availability_zone: str | None = None
    key_name: str | None = None
    config_drive: bool | None = None
    locked: bool | None = None
    reservation_id: str | None = None
    uuid: str | None = None
    vm_state: str | None = None
    task_state: str | None = None
    power_state: int | None = None
    progress: int | None = None
    hostname: str | None = None
    description: str | None = None
    changes_since: dt.datetime | None = None
    changes_before: dt.datetime | None = None
    launched_at: dt.datetime | None = None
    terminated_at: dt.datetime | None = None
    created_at: dt.datetime | None = None
    deleted: bool | None = None
    tags: list[str] | None = None
    tags_any: list[str] | None = None
    not_tags: list[str] | None = None
    not_tags_any: list[str] | None = None
    sort_keys: list[str] = field(default_factory=lambda: ["created_at"])
    sort_dirs: list[str] = field(default_factory=lambda: ["desc"])
    limit: int | None = None
    marker: str | None = None


def replace_metadata(s: Session, server_id: str, metadata: dict[str, str]) -> None:
    s.execute(sa.delete(ServerMetadata).where(ServerMetadata.server_id == server_id))
    for key, value in metadata.items():
        s.add(ServerMetadata(server_id=server_id, key=key, value=value))


class Listing:
    def __init__(self, core: ComputeCore, quotas: Quotas):
        self.core = core
        self.quotas = quotas

    # -- records ------------------------------------------------------------------------

    def _host_statuses(self, s: Session, hosts: set[str]) -> dict[str, str]:
        if not hosts:
            return {}
        statuses = {}
        for service in s.scalars(sa.select(Service).where(Service.binary == "nova-compute",
                                                          Service.host.in_(hosts))):
            if service.forced_down:
                statuses[service.host] = "DOWN"
            elif service.disabled:
                statuses[service.host] = "MAINTENANCE"
            elif service.last_seen_up is None or (
                    self.core.clock() - service.last_seen_up).total_seconds() \
                    > self.core.settings.service_down_time:
                statuses[service.host] = "DOWN"
            else:
                statuses[service.host] = "UP"
        return statuses

    def records(self, s: Session, servers: list[Server]) -> list[ServerRecord]:
        ids = [server.id for server in servers]
        metadata: dict[str, dict[str, str]] = {i: {} for i in ids}
        tags: dict[str, list[str]] = {i: [] for i in ids}
        groups: dict[str, list[str]] = {i: [] for i in ids}
        for chunk in (ids[i:i + 500] for i in range(0, len(ids), 500)):
            for server_id, key, value in s.execute(
                    sa.select(ServerMetadata.server_id, ServerMetadata.key,
                              ServerMetadata.value).where(ServerMetadata.server_id.in_(chunk))):
                metadata[server_id][key] = value
            for server_id, tag in s.execute(
                    sa.select(ServerTag.server_id, ServerTag.tag)
                    .where(ServerTag.server_id.in_(chunk)).order_by(ServerTag.tag)):
                tags[server_id].append(tag)
            for server_id, group_id in s.execute(
                    sa.select(ServerGroupMember.server_id, ServerGroupMember.group_id)
                    .where(ServerGroupMember.server_id.in_(chunk))):
                groups[server_id].append(group_id)
        statuses = self._host_statuses(s, {srv.host for srv in servers if srv.host})
        return [ServerRecord(srv, metadata[srv.id], tags[srv.id], groups[srv.id],
                             statuses.get(srv.host, "UNKNOWN") if srv.host else "")
                for srv in servers]

    def get(self, caller: Caller, server_id: str) -> ServerRecord:
        with self.core.db.session() as s:
            return self.records(s, [self.core.get_server(s, caller, server_id)])[0]

    # -- list ---------------------------------------------------------------------------

    def _query(self, caller: Caller, f: ListFilters):
        query = sa.select(Server)
        if not caller.is_admin or not (f.all_tenants or f.project_id):
            query = query.where(Server.project_id == caller.project_id)
        elif f.project_id:
            query = query.where(Server.project_id == f.project_id)
        if f.changes_since is None and not (caller.is_admin and f.deleted):
            query = query.where(Server.deleted_at.is_(None))
        elif caller.is_admin and f.deleted:
            query = query.where(Server.deleted_at.is_not(None))
        plain = {Server.user_id: f.user_id, Server.image_ref: f.image, Server.host: f.host,
                 Server.node: f.node, Server.availability_zone: f.availability_zone,
                 Server.key_name: f.key_name, Server.config_drive: f.config_drive,
                 Server.locked: f.locked, Server.reservation_id: f.reservation_id,
                 Server.id: f.uuid, Server.vm_state: f.vm_state,
                 Server.task_state: f.task_state, Server.power_state: f.power_state,
                 Server.progress: f.progress, Server.hostname: f.hostname,
                 Server.description: f.description}
        for column, value in plain.items():
            if value is not None:
                query = query.where(column == value)
        bounds = ((Server.updated_at, f.changes_since, True),
                  (Server.updated_at, f.changes_before, False),
                  (Server.launched_at, f.launched_at, True),
                  (Server.terminated_at, f.terminated_at, True),
                  (Server.created_at, f.created_at, True))
        for column, value, after in bounds:
            if value is not None:
                query = query.where(column >= value if after else column <= value)
        return query

    @staticmethod
    def _keep(record: ServerRecord, f: ListFilters) -> bool:
        server = record.server
        if f.name is not None:
            try:
                if re.search(f.name, server.name) is None:
                    return False
            except re.error:
                if f.name not in server.name:
                    return False
        if f.status is not None and states.status_of(server.vm_state, server.task_state) \
                != f.status.upper():
            return False
        if f.flavor is not None and server.flavor.get("flavorid") != f.flavor:
            return False
        addresses = [a for addrs in (server.addresses or {}).values() for a in addrs]
        if f.ip is not None and not any(a.get("version") == 4 and re.search(f.ip, a["addr"])
                                        for a in addresses):
            return False
        if f.ip6 is not None and not any(a.get("version") == 6 and re.search(f.ip6, a["addr"])
                                         for a in addresses):
            return False
        tags = set(record.tags)
        if f.tags and not set(f.tags) <= tags:
            return False
        if f.tags_any and not set(f.tags_any) & tags:
            return False
        if f.not_tags and set(f.not_tags) <= tags:
            return False
        return not (f.not_tags_any and set(f.not_tags_any) & tags)

    @staticmethod
    def _sort(records: list[ServerRecord], f: ListFilters) -> list[ServerRecord]:
        pairs = list(zip(f.sort_keys, f.sort_dirs + ["desc"] * len(f.sort_keys)))
        for key, direction in reversed(pairs + [("uuid", pairs[0][1] if pairs else "desc")]):
            attr = SORT_KEYS.get(key)
            if attr is None:
                raise BadRequest(f"Invalid input received: Invalid sort_key '{key}'")
            if direction not in ("asc", "desc"):
                raise BadRequest(f"Invalid input received: Invalid sort_dir '{direction}'")

            def value(record: ServerRecord, attr: str = attr) -> tuple:
                v = getattr(record.server, attr)
                return (v is not None, v if v is not None else 0)

            records.sort(key=value, reverse=direction == "desc")
        return records

    def list(self, caller: Caller, f: ListFilters) -> list[ServerRecord]:
        with self.core.db.session() as s:
            servers = list(s.scalars(self._query(caller, f)))
            records = [r for r in self.records(s, servers) if self._keep(r, f)]
        records = self._sort(records, f)
        if f.marker is not None:
            ids = [r.server.id for r in records]
            if f.marker not in ids:
                raise BadRequest(f"marker [{f.marker}] not found")
            records = records[ids.index(f.marker) + 1:]
        if f.limit is not None:
            records = records[:f.limit]
        return records

    # -- update -------------------------------------------------------------------------

    def update(self, caller: Caller, server_id: str, changes: dict) -> ServerRecord:
        with self.core.db.session() as s:
            server = self.core.get_server(s, caller, server_id, lock=True)
            for key, value in changes.items():
                setattr(server, key, value)
            server.updated_at = self.core.clock()
            return self.records(s, [server])[0]

    # -- metadata -----------------------------------------------------------------------

    def _editable(self, s: Session, caller: Caller, server_id: str, action: str) -> Server:
        server = self.core.get_server(s, caller, server_id, lock=True)
        if server.locked and not caller.is_admin:
            raise Conflict(f"Instance {server.id} is locked")
        if server.vm_state not in _METADATA_STATES:
            raise Conflict(f"Cannot '{action}' instance {server.id} while it is in vm_state "
                           f"{server.vm_state}")
        return server

    def _metadata_of(self, s: Session, server_id: str) -> dict[str, str]:
        return dict(s.execute(sa.select(ServerMetadata.key, ServerMetadata.value)
                              .where(ServerMetadata.server_id == server_id)
                              .order_by(ServerMetadata.key)).all())

    def metadata(self, caller: Caller, server_id: str) -> dict[str, str]:
        with self.core.db.session() as s:
            self.core.get_server(s, caller, server_id)
            return self._metadata_of(s, server_id)

    def set_metadata(self, caller: Caller, server_id: str, metadata: dict[str, str], *,
                     replace: bool) -> dict[str, str]:
        with self.core.db.session() as s:
            server = self._editable(s, caller, server_id, "update_metadata")
            merged = dict(metadata) if replace else {**self._metadata_of(s, server.id),
                                                     **metadata}
            self.quotas.check_metadata(s, server.project_id, len(merged))
            replace_metadata(s, server.id, merged)
            server.updated_at = self.core.clock()
            return dict(sorted(merged.items()))

    def metadata_item(self, caller: Caller, server_id: str, key: str) -> str:
        found = self.metadata(caller, server_id)
        if key not in found:
            raise NotFound("Metadata item was not found")
        return found[key]

    def delete_metadata_item(self, caller: Caller, server_id: str, key: str) -> None:
        with self.core.db.session() as s:
            server = self._editable(s, caller, server_id, "delete_metadata")
            gone = s.execute(sa.delete(ServerMetadata).where(
                ServerMetadata.server_id == server.id, ServerMetadata.key == key))
            if gone.rowcount != 1:
                raise NotFound("Metadata item was not found")
            server.updated_at = self.core.clock()

    # -- tags ---------------------------------------------------------------------------

    def _taggable(self, s: Session, caller: Caller, server_id: str, action: str) -> Server:
        server = self.core.get_server(s, caller, server_id, lock=True)
        if server.vm_state not in _TAG_STATES:
            raise Conflict(f"Cannot '{action}' instance {server.id} while it is in vm_state "
                           f"{server.vm_state}")
        return server

    @staticmethod
    def _tags_of(s: Session, server_id: str) -> list[str]:
        return list(s.scalars(sa.select(ServerTag.tag).where(ServerTag.server_id == server_id)
                              .order_by(ServerTag.tag)))

    def tags(self, caller: Caller, server_id: str) -> list[str]:
        with self.core.db.session() as s:
            self.core.get_server(s, caller, server_id)
            return self._tags_of(s, server_id)

    def replace_tags(self, caller: Caller, server_id: str, tags: list[str]) -> list[str]:
        unique = list(dict.fromkeys(tags))
        if len(unique) > MAX_TAGS:
            raise BadRequest(f"The number of tags exceeded the per-server limit {MAX_TAGS}")
        with self.core.db.session() as s:
            server = self._taggable(s, caller, server_id, "update tags")
            s.execute(sa.delete(ServerTag).where(ServerTag.server_id == server.id))
            for tag in unique:
                s.add(ServerTag(server_id=server.id, tag=tag))
            server.updated_at = self.core.clock()
        return sorted(unique)

    def add_tag(self, caller: Caller, server_id: str, tag: str) -> bool:
        """Add one tag; True if it is new."""
        with self.core.db.session() as s:
            server = self._taggable(s, caller, server_id, "update tag")
            have = self._tags_of(s, server.id)
            if tag in have:
                return False
            if len(have) >= MAX_TAGS:
                raise BadRequest(f"The number of tags exceeded the per-server limit "
                                 f"{MAX_TAGS}")
            s.add(ServerTag(server_id=server.id, tag=tag))
            server.updated_at = self.core.clock()
            return True

    def has_tag(self, caller: Caller, server_id: str, tag: str) -> None:
        if tag not in self.tags(caller, server_id):
            raise NotFound(f"Tag {tag} does not exist for instance {server_id}")

    def delete_tag(self, caller: Caller, server_id: str, tag: str | None) -> None:
        with self.core.db.session() as s:
            server = self._taggable(s, caller, server_id, "delete tag" if tag else
                                    "delete tags")
            query = sa.delete(ServerTag).where(ServerTag.server_id == server.id)
            if tag is not None:
                query = query.where(ServerTag.tag == tag)
            gone = s.execute(query)
            if tag is not None and gone.rowcount != 1:
                raise NotFound(f"Tag {tag} does not exist for instance {server_id}")
            server.updated_at = self.core.clock()

    # -- instance actions ---------------------------------------------------------------

    def _any_server(self, s: Session, caller: Caller, server_id: str) -> Server:
        """A server the caller may see, deleted ones included (2.21)."""
        server = s.get(Server, server_id)
        if server is None or not (caller.is_admin or server.project_id == caller.project_id):
            raise server_not_found(server_id)
        return server

    def actions(self, caller: Caller, server_id: str, *, deleted_ok: bool,
                limit: int | None = None, marker: str | None = None,
                changes_since: dt.datetime | None = None,
                changes_before: dt.datetime | None = None) -> list[InstanceAction]:
        with self.core.db.session() as s:
            server = self._any_server(s, caller, server_id)
            if server.deleted_at is not None and not deleted_ok:
                raise server_not_found(server_id)
            query = (sa.select(InstanceAction).where(InstanceAction.server_id == server_id)
                     .order_by(InstanceAction.start_time.desc(), InstanceAction.id.desc()))
            if changes_since is not None:
                query = query.where(InstanceAction.updated_at >= changes_since)
            if changes_before is not None:
                query = query.where(InstanceAction.updated_at <= changes_before)
            found = list(s.scalars(query))
        if marker is not None:
            ids = [a.request_id for a in found]
            if marker not in ids:
                raise BadRequest(f"Marker {marker} could not be found.")
            found = found[ids.index(marker) + 1:]
        return found[:limit] if limit is not None else found

    def action(self, caller: Caller, server_id: str, request_id: str, *, deleted_ok: bool
               ) -> tuple[InstanceAction, list[InstanceActionEvent], str | None]:
        """The action, its events and the server's host (for the events' hostId)."""
        with self.core.db.session() as s:
            server = self._any_server(s, caller, server_id)
            if server.deleted_at is not None and not deleted_ok:
                raise server_not_found(server_id)
            action = s.scalar(sa.select(InstanceAction).where(
                InstanceAction.server_id == server_id,
                InstanceAction.request_id == request_id).order_by(InstanceAction.id.desc()))
            if action is None:
                raise NotFound(f"Action for request_id {request_id} on instance {server_id} "
                               "not found")
            events = list(s.scalars(sa.select(InstanceActionEvent)
                                    .where(InstanceActionEvent.action_id == action.id)
                                    .order_by(InstanceActionEvent.id)))
            return action, events, server.host

    # -- metadata service ---------------------------------------------------------------

    def facts(self, server_id: str) -> ServerFacts | None:
        with self.core.db.session() as s:
            server = s.get(Server, server_id)
            if server is None or server.deleted_at is not None:
                return None
            return facts_of(s, server)
