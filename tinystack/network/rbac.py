"""RBAC policies: share a network with one project (or all), or make it external.

An ``access_as_shared`` entry lets its target project see the network and
create ports on it; ``*`` as target is the ``shared`` flag (admins only).
An ``access_as_external`` entry for ``*`` is ``router:external``. Removing an
entry a target project still depends on (its ports on the network) is a 409
(``RbacPolicyInUse``), as in Neutron.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tinystack.network.errors import (
    DuplicateRbacPolicy,
    NetworkNotFound,
    RbacPolicyInUse,
    RbacPolicyNotFound,
)
from tinystack.network.models import Network, NetworkRbac, Port
from tinystack.network.service import (
    FLOATINGIP_OWNER,
    ROUTER_GATEWAY_OWNER,
    Changes,
    Context,
    NetworkCore,
    new_uuid,
)
from tinystack.network.views import rbac_view

__all__ = ["RbacPolicies"]


class RbacPolicies:
    def __init__(self, core: NetworkCore):
        self.core = core

    def list(self, ctx: Context, hints: dict[str, list[str]]) -> list[dict]:
        def read(s: Session) -> list[dict]:
            query = sa.select(NetworkRbac).order_by(NetworkRbac.id)
            if not ctx.admin:
                query = query.where(NetworkRbac.project_id == ctx.project_id)
            if hints.get("id"):
                query = query.where(NetworkRbac.id.in_(hints["id"]))
            if hints.get("object_id"):
                query = query.where(NetworkRbac.object_id.in_(hints["object_id"]))
            return [rbac_view(e) for e in s.scalars(query)]
        return self.core.transaction(read)

    def _get(self, s: Session, ctx: Context, policy_id: str) -> NetworkRbac:
        entry = s.get(NetworkRbac, policy_id)
        if entry is None or not (ctx.admin or ctx.owns(entry.project_id)):
            raise RbacPolicyNotFound(object_type="network", id=policy_id)
        return entry

    def show(self, ctx: Context, policy_id: str) -> dict:
        return self.core.transaction(lambda s: rbac_view(self._get(s, ctx, policy_id)))

    def create(self, ctx: Context, values: dict) -> tuple[dict, Changes]:
        def write(s: Session) -> dict:
            network = self.core.get_network(s, ctx, values["object_id"], for_update=True)
            if not (ctx.admin or ctx.owns(network.project_id)):
                raise NetworkNotFound(net_id=network.id)
            owner = ctx.owner_for(values) if ctx.admin else network.project_id
            target = {"project_id": network.project_id,
                      "target_tenant": values["target_tenant"]}
            ctx.enforce("create_rbac_policy", target)
            ctx.enforce("create_rbac_policy:target_tenant", target)
            if any(e.action == values["action"] and e.target_project == values["target_tenant"]
                   for e in network.rbac):
                raise DuplicateRbacPolicy()
            self.core.check_quota(s, owner, "rbac_policy")
            entry = NetworkRbac(id=new_uuid(), project_id=owner, object_type="network",
                                object_id=network.id, action=values["action"],
                                target_project=values["target_tenant"])
            network.rbac.append(entry)
            if entry.action == "access_as_external" and entry.target_project == "*":
                network.external = True
            network.touch()
            try:
                s.flush()
            except IntegrityError:
                raise DuplicateRbacPolicy() from None
            return rbac_view(entry)
        return self.core.transaction(write), Changes()

    def update(self, ctx: Context, policy_id: str, values: dict) -> tuple[dict, Changes]:
        def write(s: Session) -> dict:
            entry = self._get(s, ctx, policy_id)
            target = {"project_id": entry.project_id,
                      "target_tenant": values.get("target_tenant", entry.target_project)}
            ctx.enforce("update_rbac_policy", target)
            if "target_tenant" in values and values["target_tenant"] != entry.target_project:
                ctx.enforce("update_rbac_policy:target_tenant", target)
                network = s.get(Network, entry.object_id)
                self._check_unused(s, network, entry)
                entry.target_project = values["target_tenant"]
            try:
                s.flush()
            except IntegrityError:
                raise DuplicateRbacPolicy() from None
            return rbac_view(entry)
        return self.core.transaction(write), Changes()

    def delete(self, ctx: Context, policy_id: str) -> Changes:
        def write(s: Session) -> None:
            entry = self._get(s, ctx, policy_id)
            ctx.enforce("delete_rbac_policy", {"project_id": entry.project_id})
            network = s.get(Network, entry.object_id)
            self._check_unused(s, network, entry)
            if entry.action == "access_as_external" and entry.target_project == "*":
                network.external = False
            network.rbac.remove(entry)
            network.touch()
        self.core.transaction(write)
        return Changes()

    @staticmethod
    def _check_unused(s: Session, network: Network, entry: NetworkRbac) -> None:
        """RbacPolicyInUse when a project would lose access it still uses."""
        others = [e for e in network.rbac if e.id != entry.id and e.action == entry.action]
        if any(e.target_project == "*" for e in others):
            return
        still = {e.target_project for e in others} | {network.project_id}
        query = sa.select(Port.project_id).where(Port.network_id == network.id,
                                                 Port.project_id != "")
        if entry.action == "access_as_external":
            query = sa.select(Port.id).where(
                Port.network_id == network.id,
                Port.device_owner.in_([ROUTER_GATEWAY_OWNER, FLOATINGIP_OWNER]))
            if entry.target_project == "*" and s.scalar(query.limit(1)):
                raise RbacPolicyInUse(object_id=network.id,
                                      details="routers or floating IPs use it")
            return
        users = set(s.scalars(query))
        lost = users - still if entry.target_project == "*" else (
            {entry.target_project} & users) - still
        if lost:
            raise RbacPolicyInUse(object_id=network.id,
                                  details=f"project(s) {', '.join(sorted(lost))} have ports "
                                          "on it")
