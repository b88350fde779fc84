"""Role-based access checks, with each service's rules kept in one readable table.

A service writes its table as plain strings over a few named checks::

    POLICY = {
        "identity:get_user": "admin or system_reader or domain_reader or owner",
        "identity:create_user": "admin",
    }

A rule is ``or`` of ``and`` groups of checks. A check is a name from
``CHECKS`` (or one the service adds) or ``role:NAME``. ``enforce`` raises
``Forbidden`` with the message Keystone uses when no group passes. Rules are
compiled once, when the table is loaded.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tinystack.common.errors import Forbidden

__all__ = ["Credentials", "Policy", "CHECKS", "Check"]


@dataclass(frozen=True)
class Credentials:
    """Who is asking: what a validated token says."""

    user_id: str
    user_domain_id: str
    roles: frozenset[str] = frozenset()
    project_id: str | None = None
    project_domain_id: str | None = None
    domain_id: str | None = None
    system: bool = False
    token: str = field(default="", repr=False)
    audit_id: str = ""
    application_credential_id: str | None = None

    @property
    def scope(self) -> str:
        if self.system:
            return "system"
        if self.project_id:
            return "project"
        if self.domain_id:
            return "domain"
        return "unscoped"


Check = Callable[[Credentials, Mapping[str, Any]], bool]

CHECKS: dict[str, Check] = {
    "admin": lambda c, t: "admin" in c.roles,
    "member": lambda c, t: "member" in c.roles,
    "reader": lambda c, t: "reader" in c.roles,
    "system_reader": lambda c, t: c.system and "reader" in c.roles,
    "domain_reader": lambda c, t: (
        c.domain_id is not None and "reader" in c.roles and t.get("domain_id") == c.domain_id
    ),
    "project_reader": lambda c, t: (
        c.project_id is not None and "reader" in c.roles and t.get("project_id") == c.project_id
    ),
    "project_member": lambda c, t: (
        c.project_id is not None and "member" in c.roles and t.get("project_id") == c.project_id
    ),
    "owner": lambda c, t: t.get("user_id") == c.user_id,
    "any": lambda c, t: True,
}


def _compile(rule: str, checks: Mapping[str, Check]) -> Callable[[Credentials, Mapping], bool]:
    groups = []
    for alternative in rule.split(" or "):
        group = []
        for name in alternative.split(" and "):
            name = name.strip()
            if name.startswith("role:"):
                role = name[5:]
                group.append(lambda c, t, role=role: role in c.roles)
            elif name in checks:
                group.append(checks[name])
            else:
                raise ValueError(f"policy rule {rule!r} names unknown check {name!r}")
        groups.append(tuple(group))
    groups = tuple(groups)

    def evaluate(creds: Credentials, target: Mapping) -> bool:
        return any(all(check(creds, target) for check in group) for group in groups)

    return evaluate


class Policy:
    """A compiled rule table."""

    def __init__(self, table: Mapping[str, str], extra_checks: Mapping[str, Check] | None = None):
        checks = {**CHECKS, **(extra_checks or {})}
        self.table = dict(table)
        self._rules = {action: _compile(rule, checks) for action, rule in table.items()}

    def allowed(self, action: str, creds: Credentials, target: Mapping | None = None) -> bool:
        return self._rules[action](creds, target or {})

    def enforce(self, action: str, creds: Credentials, target: Mapping | None = None) -> None:
        if not self.allowed(action, creds, target):
            raise Forbidden(
                f"You are not authorized to perform the requested action: {action}.",
            )
