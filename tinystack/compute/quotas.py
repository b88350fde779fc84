"""Quotas: each project's limits, what it uses, and the 403s Nova gives past them.

A limit comes from the project's own row (``os-quota-sets`` PUT), else the
``default`` quota class (``os-quota-class-sets``), else Nova's defaults.
``-1`` means unlimited. Usage is counted from the live rows (servers, key
pairs, groups), never kept as a counter, as Nova does since Pike; a create
checks before it inserts and checks again after (``recheck``), so racing
creates cannot both pass the limit.

Which keys the API shows depends on the microversion (``visible``): the
network quotas went away in 2.36 and the injected-file ones in 2.57.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from tinystack.common.db import Database
from tinystack.common.errors import BadRequest, Forbidden
from tinystack.compute.models import (
    KeyPair,
    Quota,
    QuotaClass,
    Server,
    ServerGroup,
    ServerGroupMember,
)

__all__ = ["DEFAULTS", "Quotas", "visible", "too_many_instances"]

DEFAULTS = {
    "instances": 10, "cores": 20, "ram": 51200, "metadata_items": 128,
    "injected_files": 5, "injected_file_content_bytes": 10240,
    "injected_file_path_bytes": 255, "key_pairs": 100, "server_groups": 10,
    "server_group_members": 10, "fixed_ips": -1, "floating_ips": 10,
    "security_groups": 10, "security_group_rules": 20,
}
_NETWORK = ("fixed_ips", "floating_ips", "security_groups", "security_group_rules")
_INJECTED = ("injected_files", "injected_file_content_bytes", "injected_file_path_bytes")


def visible(mv) -> list[str]:
    """Quota keys shown at microversion ``mv``."""
    keys = list(DEFAULTS)
    if mv >= "2.36":
        keys = [k for k in keys if k not in _NETWORK]
    if mv >= "2.57":
        keys = [k for k in keys if k not in _INJECTED]
    return keys


def too_many_instances(overs: list[str], requested: dict, used: dict, limits: dict) -> Forbidden:
    """Nova's TooManyInstances, e.g. "Quota exceeded for cores: Requested 2, but already used
    20 of 20 cores"."""
    join = ", ".join
    return Forbidden(
        f"Quota exceeded for {join(overs)}: Requested {join(str(requested[r]) for r in overs)}, "
        f"but already used {join(str(used[r]) for r in overs)} of "
        f"{join(str(limits[r]) for r in overs)} {join(overs)}")


class Quotas:
    """Limits and usage. Lower-case helpers run in the caller's session; the ``*_of``
    and ``set_*`` methods open their own (the API calls those)."""

    def __init__(self, db: Database):
        self.db = db

    # -- for the API --------------------------------------------------------------------

    def limits_and_usage(self, project_id: str | None) -> tuple[dict, dict]:
        with self.db.session() as s:
            limits = self.limits(s, project_id)
            return limits, self.usage(s, project_id) if project_id else {}

    def set_project(self, project_id: str, changes: dict[str, int], *, force: bool) -> dict:
        """Apply ``changes`` (``force`` skips the check against usage); the new limits."""
        with self.db.session() as s:
            if force:
                self._validate(changes)
                for key, value in changes.items():
                    self._put(s, project_id, key, value)
            else:
                self.update(s, project_id, changes)
        with self.db.session() as s:
            return self.limits(s, project_id)

    def revert_project(self, project_id: str) -> None:
        with self.db.session() as s:
            self.revert(s, project_id)

    def class_set(self, class_name: str) -> dict:
        with self.db.session() as s:
            return self.class_limits(s, class_name)

    def set_class(self, class_name: str, changes: dict[str, int]) -> dict:
        with self.db.session() as s:
            self.update_class(s, class_name, changes)
        return self.class_set(class_name)

    # -- inside a session ---------------------------------------------------------------

    def limits(self, s: Session, project_id: str | None) -> dict[str, int]:
        values = dict(DEFAULTS)
        for row in s.scalars(sa.select(QuotaClass).where(QuotaClass.class_name == "default")):
            values[row.resource] = row.hard_limit
        if project_id:
            for row in s.scalars(sa.select(Quota).where(Quota.project_id == project_id)):
                values[row.resource] = row.hard_limit
        return values

    def class_limits(self, s: Session, class_name: str) -> dict[str, int]:
        values = dict(DEFAULTS)
        for row in s.scalars(sa.select(QuotaClass).where(QuotaClass.class_name == class_name)):
            values[row.resource] = row.hard_limit
        return values

    def usage(self, s: Session, project_id: str, user_id: str | None = None) -> dict[str, int]:
        instances, cores, ram = 0, 0, 0
        for flavor in s.scalars(sa.select(Server.flavor).where(
                Server.project_id == project_id, Server.deleted_at.is_(None))):
            instances += 1
            cores += int(flavor["vcpus"])
            ram += int(flavor["memory_mb"])
        groups = s.scalar(sa.select(sa.func.count()).select_from(ServerGroup)
                          .where(ServerGroup.project_id == project_id)) or 0
        used = {key: 0 for key in DEFAULTS}
        used.update(instances=instances, cores=cores, ram=ram, server_groups=groups)
        if user_id:
            used["key_pairs"] = self.key_pairs_of(s, user_id)
        return used

    @staticmethod
    def key_pairs_of(s: Session, user_id: str) -> int:
        return s.scalar(sa.select(sa.func.count()).select_from(KeyPair)
                        .where(KeyPair.user_id == user_id)) or 0

    # -- checks -------------------------------------------------------------------

    def instances_allowed(self, s: Session, project_id: str, flavor: dict, min_count: int,
                          max_count: int, *, already_counted: int = 0) -> int:
        """How many of ``max_count`` servers of ``flavor`` fit (at least ``min_count``).

        ``already_counted`` servers of this request are in the usage already (the recheck
        after insert). Raises Nova's 403 when even ``min_count`` do not fit.
        """
        limits = self.limits(s, project_id)
        used = self.usage(s, project_id)
        per = {"instances": 1, "cores": int(flavor["vcpus"]), "ram": int(flavor["memory_mb"])}
        for resource in per:
            used[resource] -= per[resource] * already_counted
        allowed = max_count
        for resource, each in per.items():
            if limits[resource] < 0 or each == 0:
                continue
            headroom = limits[resource] - used[resource]
            allowed = min(allowed, max(headroom, 0) // each)
        if allowed >= min_count:
            return allowed
        overs = [r for r, each in per.items()
                 if limits[r] >= 0 and used[r] + each * max_count > limits[r]]
        count = str(min_count) if min_count == max_count else f"{min_count}-{max_count}"
        requested = {"instances": count, "cores": per["cores"], "ram": per["ram"]}
        raise too_many_instances(overs, requested, used, limits)

    def check_resize(self, s: Session, project_id: str, old: dict, new: dict) -> None:
        """An upsize must fit the cores and RAM quotas."""
        limits = self.limits(s, project_id)
        used = self.usage(s, project_id)
        delta = {"cores": int(new["vcpus"]) - int(old["vcpus"]),
                 "ram": int(new["memory_mb"]) - int(old["memory_mb"])}
        overs = [r for r, d in delta.items() if d > 0 and limits[r] >= 0
                 and used[r] + d > limits[r]]
        if overs:
            raise too_many_instances(overs, delta, used, limits)

    def check_key_pairs(self, s: Session, user_id: str, project_id: str) -> None:
        limit = self.limits(s, project_id)["key_pairs"]
        if 0 <= limit <= self.key_pairs_of(s, user_id):
            raise Forbidden("Quota exceeded, too many key pairs.")

    def check_server_groups(self, s: Session, project_id: str) -> None:
        limit = self.limits(s, project_id)["server_groups"]
        if 0 <= limit <= self.usage(s, project_id)["server_groups"]:
            raise Forbidden("Quota exceeded, too many server groups.")

    def check_group_members(self, s: Session, project_id: str, group_id: str,
                            adding: int) -> None:
        limit = self.limits(s, project_id)["server_group_members"]
        members = s.scalar(sa.select(sa.func.count()).select_from(ServerGroupMember)
                           .where(ServerGroupMember.group_id == group_id)) or 0
        if 0 <= limit < members + adding:
            raise Forbidden("Quota exceeded, too many servers in group")

    def check_metadata(self, s: Session, project_id: str, count: int) -> None:
        limit = self.limits(s, project_id)["metadata_items"]
        if 0 <= limit < count:
            raise Forbidden(f"Maximum number of metadata items exceeds {limit}")

    # -- admin updates ------------------------------------------------------------

    @staticmethod
    def _validate(changes: dict[str, int]) -> None:
        for key, value in changes.items():
            if key not in DEFAULTS:
                raise BadRequest(f"Invalid input for field/attribute quota_set. Additional "
                                 f"properties are not allowed ('{key}' was unexpected)")
            if not isinstance(value, int) or isinstance(value, bool) or value < -1:
                raise BadRequest(f"Invalid input for field/attribute {key}. Value: {value}. "
                                 f"{value!r} is less than the minimum of -1")

    def update(self, s: Session, project_id: str, changes: dict[str, int]) -> None:
        self._validate(changes)
        used = self.usage(s, project_id)
        for key, value in changes.items():
            if 0 <= value < used.get(key, 0) and key in ("instances", "cores", "ram",
                                                          "server_groups"):
                raise BadRequest(f"Quota limit {value} for {key} must be greater than or "
                                 f"equal to already used and reserved {used[key]}.")
            self._put(s, project_id, key, value)

    @staticmethod
    def _put(s: Session, project_id: str, key: str, value: int) -> None:
        row = s.get(Quota, (project_id, key))
        if row is None:
            s.add(Quota(project_id=project_id, resource=key, hard_limit=value))
        else:
            row.hard_limit = value

    def revert(self, s: Session, project_id: str) -> None:
        s.execute(sa.delete(Quota).where(Quota.project_id == project_id))

    def update_class(self, s: Session, class_name: str, changes: dict[str, int]) -> None:
        self._validate(changes)
        for key, value in changes.items():
            row = s.get(QuotaClass, (class_name, key))
            if row is None:
                s.add(QuotaClass(class_name=class_name, resource=key, hard_limit=value))
            else:
                row.hard_limit = value
