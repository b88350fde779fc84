"""Tags on networks, subnets, ports, routers, floating IPs and security groups.

Neutron's ``standard-attr-tag`` API: ``/v2.0/<resources>/<id>/tags`` to
list, replace or clear, ``.../tags/<tag>`` to check, add or remove one. The
resource must be visible to the caller (else 404) and owned by it (or the
caller an admin) to change its tags; a change bumps its revision. Tags are
filtered on in lists by ``api_base.py`` (``tags``, ``tags-any``,
``not-tags``, ``not-tags-any``).
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.orm import Session

from tinystack.common.errors import BadRequest
from tinystack.network.errors import TagNotFound
from tinystack.network.models import NetworkTag
from tinystack.network.service import Context, NetworkCore

__all__ = ["Tags", "KINDS", "MAX_TAGS"]

MAX_TAGS = 50
KINDS = ("networks", "subnets", "ports", "routers", "floatingips", "security-groups")


class Tags:
    def __init__(self, core: NetworkCore):
        self.core = core
        self._finders: dict[str, Callable] = {
            "networks": core.get_network, "subnets": core.get_subnet, "ports": core.get_port,
            "routers": core.get_router, "floatingips": core.get_floating_ip,
            "security-groups": core.get_security_group,
        }

    def _find(self, s: Session, ctx: Context, kind: str, resource_id: str, *, write: bool):
        row = self._finders[kind](s, ctx, resource_id)
        if write:
            ctx.enforce("update_tags", {"project_id": row.project_id})
        return row

    @staticmethod
    def _current(s: Session, kind: str, resource_id: str) -> list[str]:
        return sorted(s.scalars(sa.select(NetworkTag.tag).where(
            NetworkTag.resource_type == kind, NetworkTag.resource_id == resource_id)))

    @staticmethod
    def _check(tags: list) -> list[str]:
        for tag in tags:
            if not isinstance(tag, str) or not tag or len(tag) > 255:
                raise BadRequest(f"Invalid input for tags. Reason: '{tag}' is not a valid tag.")
        if len(set(tags)) > MAX_TAGS:
            raise BadRequest(f"Invalid input for tags. Reason: more than {MAX_TAGS} tags.")
        return sorted(set(tags))

    def get_all(self, ctx: Context, kind: str, resource_id: str) -> list[str]:
        def read(s: Session) -> list[str]:
            self._find(s, ctx, kind, resource_id, write=False)
            return self._current(s, kind, resource_id)
        return self.core.transaction(read)

    def check(self, ctx: Context, kind: str, resource_id: str, tag: str) -> None:
        if tag not in self.get_all(ctx, kind, resource_id):
            raise TagNotFound(tag=tag, resource=kind.rstrip("s"), resource_id=resource_id)

    def replace(self, ctx: Context, kind: str, resource_id: str, tags: list) -> list[str]:
        wanted = self._check(tags)

        def write(s: Session) -> list[str]:
            row = self._find(s, ctx, kind, resource_id, write=True)
            self.core.drop_tags(s, kind, resource_id)
            s.add_all(NetworkTag(resource_type=kind, resource_id=resource_id, tag=t)
                      for t in wanted)
            row.touch()
            return wanted
        return self.core.transaction(write)

    def add(self, ctx: Context, kind: str, resource_id: str, tag: str) -> None:
        self._check([tag])

        def write(s: Session) -> None:
            row = self._find(s, ctx, kind, resource_id, write=True)
            if tag not in self._current(s, kind, resource_id):
                s.add(NetworkTag(resource_type=kind, resource_id=resource_id, tag=tag))
                row.touch()
        self.core.transaction(write)

    def remove(self, ctx: Context, kind: str, resource_id: str, tag: str | None) -> None:
        def write(s: Session) -> None:
            row = self._find(s, ctx, kind, resource_id, write=True)
            if tag is None:
                self.core.drop_tags(s, kind, resource_id)
            elif tag not in self._current(s, kind, resource_id):
                raise TagNotFound(tag=tag, resource=kind.rstrip("s"), resource_id=resource_id)
            else:
                s.execute(sa.delete(NetworkTag).where(
                    NetworkTag.resource_type == kind, NetworkTag.resource_id == resource_id,
                    NetworkTag.tag == tag))
            row.touch()
        self.core.transaction(write)
