"""Routes for who exists and what they may do: domains, projects, users,
groups, roles, implied roles, grants and ``/v3/role_assignments``.

Each handler checks policy, parses its body with ``schemas.py``, calls
``IdentityService`` in a worker thread and renders with ``views.py``.
Credentials, application credentials and the catalog are in
``api_catalog.py``.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tinystack.common.errors import NotFound
from tinystack.common.http import json_response, read_json
from tinystack.identity import schemas
from tinystack.identity.auth import ValidToken
from tinystack.identity.web import Handlers, flag, no_content

__all__ = ["ResourceHandlers", "routes"]


class ResourceHandlers(Handlers):
    @property
    def v(self):
        return self.c.views

    def _list_domain(self, caller: ValidToken, wanted: str | None) -> str | None:
        """The domain a non-admin, domain-scoped reader's listing is held to."""
        if self.allowed(caller, "identity:list_domains"):
            return wanted
        return caller.payload.domain_id or wanted

    # -- domains ---------------------------------------------------------------

    async def list_domains(self, request: Request) -> Response:
        await self.enforce(request, "identity:list_domains")
        found = await self.run(self.identity.list_domains, name=self.query(request, "name"),
                               enabled=flag(self.query(request, "enabled")))
        return self.collection(request, "domains", [self.v.domain(request, d) for d in found])

    async def create_domain(self, request: Request) -> Response:
        await self.enforce(request, "identity:create_domain")
        body = (await read_json(request, schemas.DomainBody)).domain
        domain = await self.run(self.identity.create_domain, body.name, body.description or "",
                                body.enabled, extra=body.model_extra)
        return json_response({"domain": self.v.domain(request, domain)}, 201)

    async def get_domain(self, request: Request) -> Response:
        domain_id = request.path_params["domain_id"]
        await self.enforce(request, "identity:get_domain", domain_id=domain_id)
        domain = await self.run(self.identity.get_domain, domain_id)
        return json_response({"domain": self.v.domain(request, domain)})

    async def update_domain(self, request: Request) -> Response:
        await self.enforce(request, "identity:update_domain")
        body = (await read_json(request, schemas.DomainPatch)).domain
        domain = await self.run(self.identity.update_domain, request.path_params["domain_id"],
                                body.model_dump(exclude_unset=True))
        return json_response({"domain": self.v.domain(request, domain)})

    async def delete_domain(self, request: Request) -> Response:
        await self.enforce(request, "identity:delete_domain")
        await self.run(self.identity.delete_domain, request.path_params["domain_id"])
        return no_content()

    # -- projects --------------------------------------------------------------

    async def list_projects(self, request: Request) -> Response:
        caller = await self.caller(request)
        domain_id = self.query(request, "domain_id") or caller.payload.domain_id
        await self.enforce(request, "identity:list_projects", domain_id=domain_id)
        tags = self.query(request, "tags")
        found = await self.run(
            self.identity.list_projects, name=self.query(request, "name"),
            domain_id=self._list_domain(caller, self.query(request, "domain_id")),
            enabled=flag(self.query(request, "enabled")),
            parent_id=self.query(request, "parent_id"),
            tags=tags.split(",") if tags else None)
        if flag(self.query(request, "is_domain")):
            found = []
        return self.collection(request, "projects", [self.v.project(request, p) for p in found])

    async def create_project(self, request: Request) -> Response:
        await self.enforce(request, "identity:create_project")
        body = (await read_json(request, schemas.ProjectBody)).project
        project = await self.run(
            self.identity.create_project, body.name, body.domain_id, body.parent_id,
            body.description or "", body.enabled, body.tags, body.model_extra, body.is_domain)
        return json_response({"project": self.v.project(request, project)}, 201)

    async def get_project(self, request: Request) -> Response:
        await self.caller(request)
        project = await self.run(self.identity.get_project, request.path_params["project_id"])
        await self.enforce(request, "identity:get_project", project_id=project.id,
                           domain_id=project.domain_id)
        return json_response({"project": self.v.project(request, project)})

    async def update_project(self, request: Request) -> Response:
        await self.enforce(request, "identity:update_project")
        body = (await read_json(request, schemas.ProjectPatch)).project
        project = await self.run(self.identity.update_project, request.path_params["project_id"],
                                 body.model_dump(exclude_unset=True))
        return json_response({"project": self.v.project(request, project)})

    async def delete_project(self, request: Request) -> Response:
        await self.enforce(request, "identity:delete_project")
        await self.run(self.identity.delete_project, request.path_params["project_id"])
        return no_content()

    # -- users -------------------------------------------------------------------

    async def _user_view(self, request: Request, user) -> dict:
        expires = await self.run(self.identity.password_expires_at, user.id)
        return self.v.user(request, user, expires)

    async def list_users(self, request: Request) -> Response:
        caller = await self.caller(request)
        domain_id = self.query(request, "domain_id") or caller.payload.domain_id
        await self.enforce(request, "identity:list_users", domain_id=domain_id)
        found = await self.run(
            self.identity.list_users, name=self.query(request, "name"),
            domain_id=self._list_domain(caller, self.query(request, "domain_id")),
            enabled=flag(self.query(request, "enabled")))
        return self.collection(request, "users", [self.v.user(request, u) for u in found])

    async def create_user(self, request: Request) -> Response:
        await self.enforce(request, "identity:create_user")
        body = (await read_json(request, schemas.UserBody)).user
        user = await self.run(self.identity.create_user, body.name, body.domain_id,
                              body.password, body.enabled, body.default_project_id,
                              body.model_extra, body.options)
        return json_response({"user": await self._user_view(request, user)}, 201)

    async def get_user(self, request: Request) -> Response:
        await self.caller(request)
        user = await self.run(self.identity.get_user, request.path_params["user_id"])
        await self.enforce(request, "identity:get_user", user_id=user.id,
                           domain_id=user.domain_id)
        return json_response({"user": await self._user_view(request, user)})

    async def update_user(self, request: Request) -> Response:
        await self.enforce(request, "identity:update_user")
        body = (await read_json(request, schemas.UserPatch)).user
        user = await self.run(self.identity.update_user, request.path_params["user_id"],
                              body.model_dump(exclude_unset=True))
        return json_response({"user": await self._user_view(request, user)})

    async def delete_user(self, request: Request) -> Response:
        await self.enforce(request, "identity:delete_user")
        await self.run(self.identity.delete_user, request.path_params["user_id"])
        return no_content()

    async def change_password(self, request: Request) -> Response:
        body = (await read_json(request, schemas.PasswordChangeBody)).user
        await self.run(self.identity.change_password, request.path_params["user_id"],
                       body.original_password, body.password)
        return no_content()

    async def _enforce_on_user(self, request: Request, action: str) -> str:
        """The path's user id, once ``action`` is allowed on that user (and its domain)."""
        await self.caller(request)
        user = await self.run(self.identity.get_user, request.path_params["user_id"])
        await self.enforce(request, action, user_id=user.id, domain_id=user.domain_id)
        return user.id

    async def user_projects(self, request: Request) -> Response:
        user_id = await self._enforce_on_user(request, "identity:list_user_projects")
        projects, _, _ = await self.run(self.identity.user_targets, user_id)
        return self.collection(request, "projects",
                               [self.v.project(request, p) for p in projects])

    async def user_groups(self, request: Request) -> Response:
        user_id = await self._enforce_on_user(request, "identity:list_groups_for_user")
        found = await self.run(self.identity.list_groups, user_id=user_id)
        return self.collection(request, "groups", [self.v.group(request, g) for g in found])

    # -- groups ------------------------------------------------------------------

    async def list_groups(self, request: Request) -> Response:
        caller = await self.caller(request)
        domain_id = self.query(request, "domain_id") or caller.payload.domain_id
        await self.enforce(request, "identity:list_groups", domain_id=domain_id)
        found = await self.run(self.identity.list_groups, name=self.query(request, "name"),
                               domain_id=self._list_domain(caller,
                                                           self.query(request, "domain_id")))
        return self.collection(request, "groups", [self.v.group(request, g) for g in found])

    async def create_group(self, request: Request) -> Response:
        await self.enforce(request, "identity:create_group")
        body = (await read_json(request, schemas.GroupBody)).group
        group = await self.run(self.identity.create_group, body.name, body.domain_id,
                               body.description or "")
        return json_response({"group": self.v.group(request, group)}, 201)

    async def get_group(self, request: Request) -> Response:
        await self.caller(request)
        group = await self.run(self.identity.get_group, request.path_params["group_id"])
        await self.enforce(request, "identity:get_group", domain_id=group.domain_id)
        return json_response({"group": self.v.group(request, group)})

    async def update_group(self, request: Request) -> Response:
        await self.enforce(request, "identity:update_group")
        body = (await read_json(request, schemas.GroupPatch)).group
        group = await self.run(self.identity.update_group, request.path_params["group_id"],
                               body.model_dump(exclude_unset=True))
        return json_response({"group": self.v.group(request, group)})

    async def delete_group(self, request: Request) -> Response:
        await self.enforce(request, "identity:delete_group")
        await self.run(self.identity.delete_group, request.path_params["group_id"])
        return no_content()

    async def _enforce_on_group(self, request: Request, action: str) -> None:
        """Check ``action`` against the path's group and its domain (404 if no such group)."""
        await self.caller(request)
        group = await self.run(self.identity.get_group, request.path_params["group_id"])
        await self.enforce(request, action, domain_id=group.domain_id)

    async def group_users(self, request: Request) -> Response:
        await self._enforce_on_group(request, "identity:list_users_in_group")
        found = await self.run(self.identity.list_users,
                               group_id=request.path_params["group_id"])
        return self.collection(request, "users", [self.v.user(request, u) for u in found])

    async def add_member(self, request: Request) -> Response:
        await self.enforce(request, "identity:add_user_to_group")
        p = request.path_params
        await self.run(self.identity.add_member, p["group_id"], p["user_id"])
        return no_content()

    async def check_member(self, request: Request) -> Response:
        await self._enforce_on_group(request, "identity:check_user_in_group")
        p = request.path_params
        if not await self.run(self.identity.is_member, p["group_id"], p["user_id"]):
            raise NotFound(f"Could not find user: {p['user_id']} in group {p['group_id']}.")
        return no_content()

    async def remove_member(self, request: Request) -> Response:
        await self.enforce(request, "identity:remove_user_from_group")
        p = request.path_params
        await self.run(self.identity.remove_member, p["group_id"], p["user_id"])
        return no_content()

    # -- roles -------------------------------------------------------------------

    async def list_roles(self, request: Request) -> Response:
        await self.enforce(request, "identity:list_roles")
        found = await self.run(self.identity.list_roles, name=self.query(request, "name"),
                               domain_id=self.query(request, "domain_id"))
        return self.collection(request, "roles", [self.v.role(request, r) for r in found])

    async def create_role(self, request: Request) -> Response:
        await self.enforce(request, "identity:create_role")
        body = (await read_json(request, schemas.RoleBody)).role
        role = await self.run(self.identity.create_role, body.name, body.domain_id,
                              body.description or "", body.options)
        return json_response({"role": self.v.role(request, role)}, 201)

    async def get_role(self, request: Request) -> Response:
        await self.enforce(request, "identity:get_role")
        role = await self.run(self.identity.get_role, request.path_params["role_id"])
        return json_response({"role": self.v.role(request, role)})

    async def update_role(self, request: Request) -> Response:
        await self.enforce(request, "identity:update_role")
        body = (await read_json(request, schemas.RolePatch)).role
        role = await self.run(self.identity.update_role, request.path_params["role_id"],
                              body.model_dump(exclude_unset=True))
        return json_response({"role": self.v.role(request, role)})

    async def delete_role(self, request: Request) -> Response:
        await self.enforce(request, "identity:delete_role")
        await self.run(self.identity.delete_role, request.path_params["role_id"])
        return no_content()

    def _inference(self, request: Request, prior, implied: list) -> dict:
        return {"prior_role": self.v.role_ref(request, prior),
                "implies": [self.v.role_ref(request, r) for r in implied]}

    async def list_implies(self, request: Request) -> Response:
        await self.enforce(request, "identity:list_implied_roles")
        prior_id = request.path_params["prior_id"]
        pairs = await self.run(self.identity.list_implied_roles, prior_id)
        prior = await self.run(self.identity.get_role, prior_id)
        return json_response({"role_inference": self._inference(
            request, prior, [implied for _, implied in pairs]),
            "links": {"self": str(request.url)}})

    async def create_implied(self, request: Request) -> Response:
        await self.enforce(request, "identity:create_implied_role")
        p = request.path_params
        await self.run(self.identity.create_implied_role, p["prior_id"], p["implied_id"])
        prior, implied = await self.run(self.identity.get_implied_role, p["prior_id"],
                                        p["implied_id"])
        return json_response({"role_inference": {
            "prior_role": self.v.role_ref(request, prior),
            "implies": self.v.role_ref(request, implied)},
            "links": {"self": str(request.url)}}, 201)

    async def get_implied(self, request: Request) -> Response:
        await self.enforce(request, "identity:get_implied_role")
        p = request.path_params
        prior, implied = await self.run(self.identity.get_implied_role, p["prior_id"],
                                        p["implied_id"])
        if request.method == "HEAD":
            return no_content()
        return json_response({"role_inference": {
            "prior_role": self.v.role_ref(request, prior),
            "implies": self.v.role_ref(request, implied)},
            "links": {"self": str(request.url)}})

    async def delete_implied(self, request: Request) -> Response:
        await self.enforce(request, "identity:delete_implied_role")
        p = request.path_params
        await self.run(self.identity.delete_implied_role, p["prior_id"], p["implied_id"])
        return no_content()

    async def role_inferences(self, request: Request) -> Response:
        await self.enforce(request, "identity:list_role_inference_rules")
        pairs = await self.run(self.identity.list_implied_roles)
        grouped: dict[str, tuple] = {}
        for prior, implied in pairs:
            grouped.setdefault(prior.id, (prior, []))[1].append(implied)
        return json_response({"role_inferences": [
            self._inference(request, prior, implied) for prior, implied in grouped.values()],
            "links": {"self": str(request.url)}})


def _grant_routes(h) -> list[Route]:
    """PUT/HEAD/GET/DELETE on every actor x target grant path Keystone has."""
    from tinystack.identity.api_grants import GrantHandlers

    g = GrantHandlers(h.c)
    out = []
    for target, prefix in (("project", "/v3/projects/{target_id}"),
                           ("domain", "/v3/domains/{target_id}"),
                           ("system", "/v3/system")):
        for actor, part in (("user", "users/{actor_id}"), ("group", "groups/{actor_id}")):
            base = f"{prefix}/{part}/roles"
            out.append(Route(base, g.lister(actor, target), methods=["GET"]))
            one = g.one(actor, target, inherited=False)
            out.append(Route(base + "/{role_id}", one, methods=["PUT", "HEAD", "GET", "DELETE"]))
        if target != "system":
            for actor, part in (("user", "users/{actor_id}"), ("group", "groups/{actor_id}")):
                base = f"/v3/OS-INHERIT{prefix[3:]}/{part}/roles"
                out.append(Route(base + "/inherited_to_projects",
                                 g.lister(actor, target, inherited=True), methods=["GET"]))
                out.append(Route(base + "/{role_id}/inherited_to_projects",
                                 g.one(actor, target, inherited=True),
                                 methods=["PUT", "HEAD", "GET", "DELETE"]))
    out.append(Route("/v3/role_assignments", g.role_assignments, methods=["GET"]))
    return out


def routes(component) -> list[Route]:
    h = ResourceHandlers(component)

    def crud(plural: str, key: str, lister, creator, getter, updater, deleter) -> list[Route]:
        return [
            Route(f"/v3/{plural}", lister, methods=["GET"]),
            Route(f"/v3/{plural}", creator, methods=["POST"]),
            Route(f"/v3/{plural}/{{{key}}}", getter, methods=["GET"]),
            Route(f"/v3/{plural}/{{{key}}}", updater, methods=["PATCH"]),
            Route(f"/v3/{plural}/{{{key}}}", deleter, methods=["DELETE"]),
        ]

    return [
        *crud("domains", "domain_id", h.list_domains, h.create_domain, h.get_domain,
              h.update_domain, h.delete_domain),
        *crud("projects", "project_id", h.list_projects, h.create_project, h.get_project,
              h.update_project, h.delete_project),
        *crud("users", "user_id", h.list_users, h.create_user, h.get_user, h.update_user,
              h.delete_user),
        Route("/v3/users/{user_id}/password", h.change_password, methods=["POST"]),
        Route("/v3/users/{user_id}/projects", h.user_projects, methods=["GET"]),
        Route("/v3/users/{user_id}/groups", h.user_groups, methods=["GET"]),
        *crud("groups", "group_id", h.list_groups, h.create_group, h.get_group,
              h.update_group, h.delete_group),
        Route("/v3/groups/{group_id}/users", h.group_users, methods=["GET"]),
        Route("/v3/groups/{group_id}/users/{user_id}", h.add_member, methods=["PUT"]),
        Route("/v3/groups/{group_id}/users/{user_id}", h.check_member, methods=["HEAD", "GET"]),
        Route("/v3/groups/{group_id}/users/{user_id}", h.remove_member, methods=["DELETE"]),
        *crud("roles", "role_id", h.list_roles, h.create_role, h.get_role, h.update_role,
              h.delete_role),
        Route("/v3/roles/{prior_id}/implies", h.list_implies, methods=["GET"]),
        Route("/v3/roles/{prior_id}/implies/{implied_id}", h.create_implied, methods=["PUT"]),
        Route("/v3/roles/{prior_id}/implies/{implied_id}", h.get_implied,
              methods=["GET", "HEAD"]),
        Route("/v3/roles/{prior_id}/implies/{implied_id}", h.delete_implied,
              methods=["DELETE"]),
        Route("/v3/role_inferences", h.role_inferences, methods=["GET"]),
        *_grant_routes(h),
    ]

