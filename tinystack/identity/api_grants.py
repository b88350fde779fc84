"""Grant routes (``/v3/projects/{id}/users/{id}/roles/{id}`` and every sibling
for groups, domains, the system and OS-INHERIT) and ``/v3/role_assignments``.

One handler factory serves every actor x target path, since they differ only
in which words fill the assignment's key.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from tinystack.identity.service import Grant
from tinystack.identity.web import Handlers, flag, no_content

__all__ = ["GrantHandlers"]

_ACTIONS = {"PUT": "create_grant", "DELETE": "revoke_grant", "HEAD": "check_grant",
            "GET": "check_grant"}


class GrantHandlers(Handlers):
    def _target(self, request: Request, target: str) -> str:
        return "all" if target == "system" else request.path_params["target_id"]

    def lister(self, actor: str, target: str, inherited: bool = False):
        async def handler(request: Request) -> Response:
            target_id = self._target(request, target)
            await self.enforce(request, "identity:list_grants",
                               domain_id=target_id if target == "domain" else None)
            roles = await self.run(self.identity.list_grant_roles, actor,
                                   request.path_params["actor_id"], target, target_id,
                                   inherited)
            return self.collection(request, "roles", [self.c.views.role(request, r)
                                                      for r in roles])
        return handler

    def one(self, actor: str, target: str, inherited: bool):
        async def handler(request: Request) -> Response:
            action = _ACTIONS[request.method]
            target_id = self._target(request, target)
            await self.enforce(request, f"identity:{action}",
                               domain_id=target_id if target == "domain" else None)
            method = {"create_grant": self.identity.grant,
                      "revoke_grant": self.identity.revoke_grant,
                      "check_grant": self.identity.check_grant}[action]
            await self.run(method, request.path_params["role_id"], actor,
                           request.path_params["actor_id"], target, target_id, inherited)
            return no_content()
        return handler

    async def role_assignments(self, request: Request) -> Response:
        q = request.query_params
        caller = await self.caller(request)
        project_id = q.get("scope.project.id")
        domain_id = q.get("scope.domain.id")
        await self.enforce(request, "identity:list_role_assignments",
                           project_id=project_id, domain_id=domain_id or caller.payload.domain_id)
        inherited_to = q.get("scope.OS-INHERIT:inherited_to")
        effective = "effective" in q and flag(q.get("effective")) is not False
        grants = await self.run(
            self.identity.list_grants, user_id=q.get("user.id"), group_id=q.get("group.id"),
            role_id=q.get("role.id"), project_id=project_id, domain_id=domain_id,
            system=q.get("scope.system") == "all",
            inherited=True if inherited_to == "projects" else None,
            effective=effective, include_subtree=flag(q.get("include_subtree")) is True)
        names = "include_names" in q and flag(q.get("include_names")) is not False
        rendered = await self.run(self._render, request, grants, names)
        return self.collection(request, "role_assignments", rendered)

    def _render(self, request: Request, grants: list[Grant], names: bool) -> list[dict]:
        base = self.base(request)
        lookup = {}
        if names:
            ids = {"role": set(), "user": set(), "group": set(), "project": set(),
                   "domain": set()}
            for g in grants:
                ids["role"].add(g.role_id)
                ids[g.actor_type].add(g.actor_id)
                if g.target_type != "system":
                    ids[g.target_type].add(g.target_id)
            for kind, wanted in ids.items():
                lookup[kind] = self.identity.names(kind, wanted)
            domain_ids = {o.domain_id for kind in ("user", "group", "project")
                          for o in lookup[kind].values()}
            domain_ids |= {r.domain_id for r in lookup["role"].values() if r.domain_id}
            lookup["domain"].update(self.identity.names("domain", domain_ids))

        def ref(kind: str, obj_id: str) -> dict:
            out = {"id": obj_id}
            obj = lookup.get(kind, {}).get(obj_id) if names else None
            if obj is not None:
                out["name"] = obj.name
                domain_id = getattr(obj, "domain_id", None)
                if domain_id:
                    domain = lookup["domain"].get(domain_id)
                    out["domain"] = {"id": domain_id, "name": domain.name if domain else None}
            return out

        out = []
        for g in grants:
            if g.target_type == "system":
                scope = {"system": {"all": True}}
                path = f"system/{g.actor_type}s/{g.actor_id}/roles/{g.role_id}"
            else:
                scope = {g.target_type: ref(g.target_type, g.target_id)}
                path = (f"{g.target_type}s/{g.target_id}/{g.actor_type}s/{g.actor_id}"
                        f"/roles/{g.role_id}")
                if g.inherited:
                    scope["OS-INHERIT:inherited_to"] = "projects"
                    path = f"OS-INHERIT/{path}/inherited_to_projects"
            links = {"assignment": f"{base}/{path}"}
            if g.via_group_id:
                links["membership"] = f"{base}/groups/{g.via_group_id}/users/{g.actor_id}"
            if g.prior_role_id:
                links["prior_role"] = f"{base}/roles/{g.prior_role_id}"
            out.append({"role": ref("role", g.role_id), "scope": scope,
                        g.actor_type: ref(g.actor_type, g.actor_id), "links": links})
        return out
