"""Routes beside the plain collections: router actions, tags, quotas, availability zones.

- ``PUT /v2.0/routers/{id}/add_router_interface`` and ``remove_router_interface``
  (``{"subnet_id"}`` or ``{"port_id"}``; the answer is the interface info),
  ``add_extraroutes`` / ``remove_extraroutes`` (``{"router": {"routes"}}``);
- ``/v2.0/{resources}/{id}/tags[/{tag}]`` for every taggable resource;
- ``/v2.0/quotas`` (list), ``/v2.0/quotas/{project}`` (show, update, reset),
  ``.../default`` and ``.../details[.json]``;
- ``GET /v2.0/availability_zones``.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tinystack.common.errors import BadRequest
from tinystack.common.http import json_response
from tinystack.network.api_base import Handlers, apply_query, no_content
from tinystack.network.attributes import Attr, Resource
from tinystack.network.tags import KINDS

__all__ = ["routes"]

_ZONES = Resource("availability_zone", "availability_zones", "availability_zones",
                  {"name": Attr(), "resource": Attr(), "state": Attr()})


class RouterActions(Handlers):
    async def _interface(self, request: Request, add: bool) -> Response:
        ctx = await self.context(request)
        body = await self.body(request)
        if not isinstance(body, dict):
            raise BadRequest("Resource body required")
        action = self.c.routers.add_interface if add else self.c.routers.remove_interface
        info, changes = await self.run(action, ctx, request.path_params["id"], body)
        await self.dispatch(changes)
        return json_response(info)

    async def add_interface(self, request: Request) -> Response:
        return await self._interface(request, True)

    async def remove_interface(self, request: Request) -> Response:
        return await self._interface(request, False)

    async def _routes(self, request: Request, add: bool) -> Response:
        ctx = await self.context(request)
        body = await self.body(request)
        routes = body.get("router", {}).get("routes") if isinstance(body, dict) else None
        if not isinstance(routes, list) or not all(
                isinstance(r, dict) and {"destination", "nexthop"} <= set(r) for r in routes):
            raise BadRequest("Invalid input for routes. Reason: a list of routes with "
                             "destination and nexthop is required.")
        view, changes = await self.run(self.c.routers.change_routes, ctx,
                                       request.path_params["id"], routes, add)
        await self.dispatch(changes)
        return json_response({"router": view})

    async def add_routes(self, request: Request) -> Response:
        return await self._routes(request, True)

    async def remove_routes(self, request: Request) -> Response:
        return await self._routes(request, False)


class TagHandlers(Handlers):
    @staticmethod
    def _where(request: Request) -> tuple[str, str]:
        """(resource kind, id): the kind is the path segment after ``v2.0``."""
        segments = request.url.path.split("/")
        return segments[segments.index("v2.0") + 1], request.path_params["id"]

    async def list(self, request: Request) -> Response:
        ctx = await self.context(request)
        tags = await self.run(self.c.tags.get_all, ctx, *self._where(request))
        return json_response({"tags": tags})

    async def check(self, request: Request) -> Response:
        ctx = await self.context(request)
        await self.run(self.c.tags.check, ctx, *self._where(request), request.path_params["tag"])
        return no_content()

    async def replace(self, request: Request) -> Response:
        ctx = await self.context(request)
        body = await self.body(request)
        if not isinstance(body, dict) or not isinstance(body.get("tags"), list):
            raise BadRequest("Invalid input for tags. Reason: a list of tags is required.")
        tags = await self.run(self.c.tags.replace, ctx, *self._where(request), body["tags"])
        return json_response({"tags": tags})

    async def add(self, request: Request) -> Response:
        ctx = await self.context(request)
        await self.run(self.c.tags.add, ctx, *self._where(request), request.path_params["tag"])
        return Response(status_code=201)

    async def remove(self, request: Request) -> Response:
        ctx = await self.context(request)
        await self.run(self.c.tags.remove, ctx, *self._where(request),
                       request.path_params.get("tag"))
        return no_content()


class QuotaHandlers(Handlers):
    async def list(self, request: Request) -> Response:
        ctx = await self.context(request)
        return json_response({"quotas": await self.run(self.c.quotas.list, ctx)})

    async def show(self, request: Request) -> Response:
        ctx = await self.context(request)
        quota = await self.run(self.c.quotas.show, ctx, request.path_params["project_id"])
        return json_response({"quota": quota})

    async def defaults(self, request: Request) -> Response:
        ctx = await self.context(request)
        quota = await self.run(self.c.quotas.defaults, ctx, request.path_params["project_id"])
        return json_response({"quota": quota})

    async def details(self, request: Request) -> Response:
        ctx = await self.context(request)
        quota = await self.run(self.c.quotas.details, ctx, request.path_params["project_id"])
        return json_response({"quota": quota})

    async def update(self, request: Request) -> Response:
        ctx = await self.context(request)
        body = await self.body(request)
        if not isinstance(body, dict) or not isinstance(body.get("quota"), dict):
            raise BadRequest("Unable to find 'quota' in request body")
        quota = await self.run(self.c.quotas.update, ctx, request.path_params["project_id"],
                               dict(body["quota"]))
        return json_response({"quota": quota})

    async def delete(self, request: Request) -> Response:
        ctx = await self.context(request)
        await self.run(self.c.quotas.delete, ctx, request.path_params["project_id"])
        return no_content()

    async def zones(self, request: Request) -> Response:
        ctx = await self.context(request)
        zones = await self.run(self.c.agents.zones, ctx)
        page, links = apply_query(_ZONES, zones, request.query_params, "")
        return json_response({"availability_zones": page})


def routes(component) -> list[Route]:
    r, t, q = RouterActions(component), TagHandlers(component), QuotaHandlers(component)
    router = "/v2.0/routers/{id}"
    quota = "/v2.0/quotas/{project_id}"
    tag_routes = []
    for kind in KINDS:
        tags = f"/v2.0/{kind}/{{id}}/tags"
        tag_routes += [Route(tags, t.list, methods=["GET"]),
                       Route(tags, t.replace, methods=["PUT"]),
                       Route(tags, t.remove, methods=["DELETE"]),
                       Route(tags + "/{tag}", t.check, methods=["GET"]),
                       Route(tags + "/{tag}", t.add, methods=["PUT"]),
                       Route(tags + "/{tag}", t.remove, methods=["DELETE"])]

    return [
        Route(f"{router}/add_router_interface", r.add_interface, methods=["PUT"]),
        Route(f"{router}/remove_router_interface", r.remove_interface, methods=["PUT"]),
        Route(f"{router}/add_extraroutes", r.add_routes, methods=["PUT"]),
        Route(f"{router}/remove_extraroutes", r.remove_routes, methods=["PUT"]),
        *tag_routes,
        Route("/v2.0/quotas", q.list, methods=["GET"]),
        Route("/v2.0/quotas.json", q.list, methods=["GET"]),
        Route(quota + "/default", q.defaults, methods=["GET"]),
        Route(quota + "/details", q.details, methods=["GET"]),
        Route(quota + "/details.json", q.details, methods=["GET"]),
        Route(quota, q.show, methods=["GET"]),
        Route(quota, q.update, methods=["PUT"]),
        Route(quota, q.delete, methods=["DELETE"]),
        Route("/v2.0/availability_zones", q.zones, methods=["GET"]),
    ]

