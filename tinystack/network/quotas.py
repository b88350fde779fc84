"""Quotas: per-project limits on networks, ports, routers... with Neutron's defaults.

A project without a row for a resource has Neutron's default (100 networks,
500 ports, 10 routers, 50 floating IPs...); ``-1`` is unlimited. Usage is
counted from the resource tables when asked (``details``) and when a
resource is made (``NetworkCore.check_quota``).
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from tinystack.common.errors import BadRequest
from tinystack.network.models import Quota
from tinystack.network.service import QUOTA_DEFAULTS, Context, NetworkCore

__all__ = ["Quotas"]


class Quotas:
    def __init__(self, core: NetworkCore):
        self.core = core

    def _limits(self, s: Session, project_id: str) -> dict[str, int]:
        return {name: self.core.limit(s, project_id, name) for name in QUOTA_DEFAULTS}

    def list(self, ctx: Context) -> list[dict]:
        """Projects with non-default quotas (admins see all, others their own)."""
        def read(s: Session) -> list[dict]:
            query = sa.select(Quota.project_id).distinct()
            if not ctx.admin:
                query = query.where(Quota.project_id == ctx.project_id)
            return [{"project_id": p, "tenant_id": p, **self._limits(s, p)}
                    for p in sorted(s.scalars(query))]
        return self.core.transaction(read)

    def show(self, ctx: Context, project_id: str) -> dict:
        ctx.enforce("get_quota", {"project_id": project_id})
        return self.core.transaction(self._limits, project_id)

    def defaults(self, ctx: Context, project_id: str) -> dict:
        ctx.enforce("get_quota", {"project_id": project_id})
        return dict(QUOTA_DEFAULTS)

    def details(self, ctx: Context, project_id: str) -> dict:
        ctx.enforce("get_quota", {"project_id": project_id})

        def read(s: Session) -> dict:
            return {name: {"limit": limit, "used": self.core.used(s, project_id, name),
                           "reserved": 0}
                    for name, limit in self._limits(s, project_id).items()}
        return self.core.transaction(read)

    def update(self, ctx: Context, project_id: str, body: dict) -> dict:
        ctx.enforce("update_quota", {"project_id": project_id})
        check = bool(body.pop("check_limit", False))
        body.pop("force", None)
        unknown = sorted(set(body) - set(QUOTA_DEFAULTS))
        if unknown:
            raise BadRequest(f"Unrecognized attribute(s) '{', '.join(unknown)}'")
        limits = {}
        for name, value in body.items():
            try:
                limit = int(value)
            except (TypeError, ValueError):
                raise BadRequest(f"Invalid input for {name}. Reason: '{value}' is not an "
                                 "integer.") from None
            if limit < -1:
                raise BadRequest(f"Invalid input for {name}. Reason: '{limit}' is too small - "
                                 "must be at least '-1'.")
            limits[name] = limit

        def write(s: Session) -> dict:
            for name, limit in limits.items():
                used = self.core.used(s, project_id, name)
                if check and limit != -1 and used > limit:
                    raise BadRequest(f"Quota limit {limit} for {name} must be greater than or "
                                     f"equal to already used and reserved {used}.")
                row = s.get(Quota, (project_id, name))
                if row is None:
                    s.add(Quota(project_id=project_id, resource=name, limit=limit))
                else:
                    row.limit = limit
            s.flush()
            return self._limits(s, project_id)
        return self.core.transaction(write)

    def delete(self, ctx: Context, project_id: str) -> None:
        ctx.enforce("delete_quota", {"project_id": project_id})
        self.core.transaction(lambda s: s.execute(sa.delete(Quota).where(
            Quota.project_id == project_id)))
