"""Routes for flavors, their extra specs (``os-extra_specs``) and private access
(``os-flavor-access``, ``addTenantAccess``/``removeTenantAccess``).

Anyone lists and shows the flavors they may use; only admins create, update
(the description, 2.55), delete, edit extra specs and grant access. The
service side is ``flavors.py``.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tinystack.common.errors import BadRequest, NotFound
from tinystack.common.http import json_response, read_json
from tinystack.compute import schemas
from tinystack.compute.web import Handlers, accepted, int_param, raw_json

__all__ = ["FlavorHandlers", "routes"]


class FlavorHandlers(Handlers):
    @property
    def flavors(self):
        return self.c.flavors

    def _is_public(self, request: Request, is_admin: bool) -> bool | None:
        if not is_admin:
            return True
        value = self.query(request, "is_public")
        if value is None:
            return True
        lowered = value.strip().lower()
        if lowered == "none":
            return None
        if lowered in ("true", "t", "1", "yes", "y", "on"):
            return True
        if lowered in ("false", "f", "0", "no", "n", "off"):
            return False
        raise BadRequest(f"Invalid is_public filter [{value}]")

    async def _list(self, request: Request, detail: bool) -> Response:
        caller = await self.caller(request)
        limit = int_param(self.query(request, "limit"), "limit")
        found = await self.run(
            self.flavors.list, caller.project_id, caller.is_admin,
            is_public=self._is_public(request, caller.is_admin),
            min_disk=int_param(self.query(request, "minDisk"), "minDisk"),
            min_ram=int_param(self.query(request, "minRam"), "minRam"),
            sort_key=self.query(request, "sort_key") or "flavorid",
            sort_dir=self.query(request, "sort_dir") or "asc", limit=limit,
            marker=self.query(request, "marker"))
        shaper = self.shaper(request, caller)
        items = [shaper.flavor(f) if detail else shaper.flavor_brief(f) for f in found]
        body: dict = {"flavors": items}
        links = self.next_link(request, "flavors/detail" if detail else "flavors", items, limit)
        if links:
            body["flavors_links"] = links
        return json_response(body)

    async def index(self, request: Request) -> Response:
        return await self._list(request, detail=False)

    async def detail(self, request: Request) -> Response:
        return await self._list(request, detail=True)

    async def show(self, request: Request) -> Response:
        caller = await self.caller(request)
        found = await self.run(self.flavors.get, request.path_params["flavor_id"],
                               caller.project_id, caller.is_admin)
        return json_response({"flavor": self.shaper(request, caller).flavor(found)})

    async def create(self, request: Request) -> Response:
        caller = await self.enforce(request, "os-flavor-manage:create")
        body = (await read_json(request, schemas.FlavorCreateBody)).flavor
        schemas.gate(body, "description", self.mv(request) >= "2.55")
        schemas.refuse_unknown(body, "flavor")
        created = await self.run(
            self.flavors.create, name=body.name, memory_mb=body.ram, vcpus=body.vcpus,
            root_gb=body.disk, flavorid=body.id, ephemeral_gb=body.ephemeral, swap=body.swap,
            rxtx_factor=body.rxtx_factor, is_public=body.is_public,
            description=body.description)
        return json_response({"flavor": self.shaper(request, caller).flavor(created)})

    async def update(self, request: Request) -> Response:
        if self.mv(request) < "2.55":
            raise NotFound("The resource could not be found.")
        caller = await self.enforce(request, "os-flavor-manage:update")
        body = (await read_json(request, schemas.FlavorUpdateBody)).flavor
        updated = await self.run(self.flavors.update_description,
                                 request.path_params["flavor_id"], body.description)
        return json_response({"flavor": self.shaper(request, caller).flavor(updated)})

    async def delete(self, request: Request) -> Response:
        await self.enforce(request, "os-flavor-manage:delete")
        await self.run(self.flavors.delete, request.path_params["flavor_id"])
        return accepted()

    # -- extra specs --------------------------------------------------------------------

    async def extra_specs(self, request: Request) -> Response:
        caller = await self.enforce(request, "os-flavor-extra-specs:index")
        found = await self.run(self.flavors.extra_specs, request.path_params["flavor_id"],
                               caller.project_id, caller.is_admin)
        return json_response({"extra_specs": found})

    async def create_extra_specs(self, request: Request) -> Response:
        await self.enforce(request, "os-flavor-extra-specs:create")
        body = await read_json(request, schemas.ExtraSpecsBody)
        found = await self.run(self.flavors.set_extra_specs, request.path_params["flavor_id"],
                               body.extra_specs, validate=self.mv(request) >= "2.86")
        return json_response({"extra_specs": found})

    async def extra_spec(self, request: Request) -> Response:
        caller = await self.enforce(request, "os-flavor-extra-specs:show")
        key = request.path_params["key"]
        found = await self.run(self.flavors.extra_specs, request.path_params["flavor_id"],
                               caller.project_id, caller.is_admin)
        if key not in found:
            raise NotFound(f"Flavor {request.path_params['flavor_id']} has no extra specs "
                           f"with key {key}.")
        return json_response({key: found[key]})

    async def update_extra_spec(self, request: Request) -> Response:
        await self.enforce(request, "os-flavor-extra-specs:update")
        key = request.path_params["key"]
        raw = await raw_json(request)
        if len(raw) > 1:
            raise BadRequest("Request body contains too many items")
        if key not in raw:
            raise BadRequest("Request body and URI mismatch")
        value = raw[key]
        if isinstance(value, (int, float, bool)):
            value = str(value)
        if not isinstance(value, str):
            raise BadRequest(f"Invalid input for field/attribute {key}.")
        await self.run(self.flavors.set_extra_specs, request.path_params["flavor_id"],
                       {key: value}, validate=self.mv(request) >= "2.86")
        return json_response({key: value})

    async def delete_extra_spec(self, request: Request) -> Response:
        await self.enforce(request, "os-flavor-extra-specs:delete")
        await self.run(self.flavors.delete_extra_spec, request.path_params["flavor_id"],
                       request.path_params["key"])
        return accepted()

    # -- access -------------------------------------------------------------------------

    @staticmethod
    def _access(flavor_id: str, projects: list[str]) -> Response:
        return json_response({"flavor_access": [{"flavor_id": flavor_id, "tenant_id": p}
                                                for p in projects]})

    async def access(self, request: Request) -> Response:
        await self.enforce(request, "os-flavor-access")
        flavor_id = request.path_params["flavor_id"]
        return self._access(flavor_id, await self.run(self.flavors.access, flavor_id))

    async def action(self, request: Request) -> Response:
        raw = await raw_json(request)
        if len(raw) != 1:
            raise BadRequest("Malformed request body")
        name, args = next(iter(raw.items()))
        flavor_id = request.path_params["flavor_id"]
        tenant = (args or {}).get("tenant") if isinstance(args, dict) else None
        if name not in ("addTenantAccess", "removeTenantAccess"):
            raise BadRequest(f"There is no such action: {name}")
        if not isinstance(tenant, str) or not tenant:
            raise BadRequest(f"Invalid input for field/attribute {name}. 'tenant' is a "
                             "required property")
        if name == "addTenantAccess":
            await self.enforce(request, "os-flavor-access:add_tenant_access")
            projects = await self.run(self.flavors.add_access, flavor_id, tenant,
                                      check_public=self.mv(request) >= "2.7")
        else:
            await self.enforce(request, "os-flavor-access:remove_tenant_access")
            projects = await self.run(self.flavors.remove_access, flavor_id, tenant)
        return self._access(flavor_id, projects)


def routes(component) -> list[Route]:
    h = FlavorHandlers(component)
    one = "/v2.1/flavors/{flavor_id}"
    return [
        Route("/v2.1/flavors", h.index, methods=["GET"]),
        Route("/v2.1/flavors", h.create, methods=["POST"]),
        Route("/v2.1/flavors/detail", h.detail, methods=["GET"]),
        Route(one, h.show, methods=["GET"]),
        Route(one, h.update, methods=["PUT"]),
        Route(one, h.delete, methods=["DELETE"]),
        Route(f"{one}/os-extra_specs", h.extra_specs, methods=["GET"]),
        Route(f"{one}/os-extra_specs", h.create_extra_specs, methods=["POST"]),
        Route(f"{one}/os-extra_specs/{{key}}", h.extra_spec, methods=["GET"]),
        Route(f"{one}/os-extra_specs/{{key}}", h.update_extra_spec, methods=["PUT"]),
        Route(f"{one}/os-extra_specs/{{key}}", h.delete_extra_spec, methods=["DELETE"]),
        Route(f"{one}/os-flavor-access", h.access, methods=["GET"]),
        Route(f"{one}/action", h.action, methods=["POST"]),
    ]
