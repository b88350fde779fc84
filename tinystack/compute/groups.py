"""Server groups: affinity, anti-affinity and their soft variants (``os-server-groups``).

A group has one policy (before 2.64 the API shows it as a one-item
``policies`` list) and, for ``anti-affinity``, an optional
``max_server_per_host`` rule (2.64). A server joins a group with the
``group`` scheduler hint when it is created (``servers.py``) and leaves it
when it is deleted; the scheduler reads the members' hosts
(``scheduler.py``). Groups count against the ``server_groups`` quota.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import sqlalchemy as sa

from tinystack.common.db import Database, utcnow
from tinystack.common.errors import BadRequest, NotFound
from tinystack.compute.models import Server, ServerGroup, ServerGroupMember
from tinystack.compute.quotas import Quotas

__all__ = ["Groups", "GroupView", "POLICIES", "SOFT_POLICIES"]

POLICIES = ("affinity", "anti-affinity")
SOFT_POLICIES = ("soft-affinity", "soft-anti-affinity")


@dataclass
class GroupView:
    group: ServerGroup
    members: list[str] = field(default_factory=list)


class Groups:
    def __init__(self, db: Database, quotas: Quotas):
        self.db = db
        self.quotas = quotas

    @staticmethod
    def _members(s, group_ids: list[str]) -> dict[str, list[str]]:
        members: dict[str, list[str]] = {g: [] for g in group_ids}
        if group_ids:
            rows = s.execute(
                sa.select(ServerGroupMember.group_id, ServerGroupMember.server_id)
                .join(Server, Server.id == ServerGroupMember.server_id)
                .where(ServerGroupMember.group_id.in_(group_ids), Server.deleted_at.is_(None))
                .order_by(Server.created_at))
            for group_id, server_id in rows:
                members[group_id].append(server_id)
        return members

    def create(self, caller, name: str, policy: str, rules: dict, *, soft_allowed: bool
               ) -> GroupView:
        allowed = POLICIES + (SOFT_POLICIES if soft_allowed else ())
        if policy not in allowed:
            raise BadRequest(f"Invalid input for field/attribute policy. Value: {policy}. "
                             f"'{policy}' is not one of {list(allowed)}")
        if rules:
            if policy != "anti-affinity":
                raise BadRequest("Only anti-affinity policy supports rules.")
            unknown = set(rules) - {"max_server_per_host"}
            value = rules.get("max_server_per_host")
            if unknown or not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise BadRequest("Invalid input for field/attribute rules. "
                                 "max_server_per_host must be a positive integer.")
        with self.db.session() as s:
            self.quotas.check_server_groups(s, caller.project_id)
            group = ServerGroup(id=str(uuid.uuid4()), name=name, project_id=caller.project_id,
                                user_id=caller.user_id, policy=policy, rules=dict(rules or {}),
                                created_at=utcnow())
            s.add(group)
        return GroupView(group, [])

    def list(self, caller, *, all_projects: bool, limit: int | None, offset: int
             ) -> list[GroupView]:
        with self.db.session() as s:
            query = sa.select(ServerGroup).order_by(ServerGroup.created_at, ServerGroup.id)
            if not all_projects:
                query = query.where(ServerGroup.project_id == caller.project_id)
            groups = list(s.scalars(query))[offset:]
            if limit is not None:
                groups = groups[:limit]
            members = self._members(s, [g.id for g in groups])
        return [GroupView(g, members[g.id]) for g in groups]

    def _find(self, s, caller, group_id: str) -> ServerGroup:
        group = s.get(ServerGroup, group_id)
        if group is None or not (caller.is_admin or group.project_id == caller.project_id):
            raise NotFound(f"Instance group {group_id} could not be found.")
        return group

    def get(self, caller, group_id: str) -> GroupView:
        with self.db.session() as s:
            group = self._find(s, caller, group_id)
            return GroupView(group, self._members(s, [group.id])[group.id])

    def delete(self, caller, group_id: str) -> None:
        with self.db.session() as s:
            s.delete(self._find(s, caller, group_id))

    def of_server(self, server_ids: list[str]) -> dict[str, list[str]]:
        """server id -> ids of the groups it belongs to (2.71's ``server_groups``)."""
        found: dict[str, list[str]] = {i: [] for i in server_ids}
        if not server_ids:
            return found
        with self.db.session() as s:
            for group_id, server_id in s.execute(
                    sa.select(ServerGroupMember.group_id, ServerGroupMember.server_id)
                    .where(ServerGroupMember.server_id.in_(server_ids))):
                found[server_id].append(group_id)
        return found
