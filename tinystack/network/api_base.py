"""The handlers every Neutron collection shares: list, show, create (one or bulk), update, delete.

Neutron's API is uniform, so one ``Collection`` serves networks, subnets,
ports, routers, floating IPs, security groups and rules, RBAC policies and
agents. It parses the body with ``attributes.py``, calls the resource's
service in a worker thread, hands the ``Changes`` to the dispatcher (the
agents hear of a change before the caller gets the answer), and shapes
lists the way Neutron does:

- filters: any attribute (``?name=x&name=y`` is either), ``tenant_id`` for
  ``project_id``, ``fixed_ips=ip_address=...`` / ``subnet_id=...`` on ports,
  and the tag filters ``tags``, ``tags-any``, ``not-tags``, ``not-tags-any``;
  unknown filters are ignored;
- ``fields`` (repeatable) picks attributes; ``sort_key``/``sort_dir`` sort;
  ``limit``, ``marker`` and ``page_reverse`` page, with ``<plural>_links``.

Services return views as the caller may see them; filtering, sorting and
paging happen here, on those views.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tinystack.common.context import caller
from tinystack.common.errors import BadRequest
from tinystack.common.http import json_response, parse_json
from tinystack.network.attributes import Resource, parse_body, parse_filter
from tinystack.network.service import Changes, Context

__all__ = ["Collection", "Handlers", "apply_query", "no_content", "PAGING"]

T = TypeVar("T")
PAGING = ("fields", "sort_key", "sort_dir", "limit", "marker", "page_reverse")
TAG_FILTERS = ("tags", "tags-any", "not-tags", "not-tags-any")
HINTS = ("id", "project_id", "network_id", "device_id", "device_owner", "security_group_id",
         "object_id", "port_id", "router_id")


def no_content() -> Response:
    return Response(status_code=204)


class Handlers:
    """What every network handler needs: the caller, worker threads, bodies, dispatch."""

    def __init__(self, component):
        self.c = component

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await run_in_threadpool(fn, *args, **kwargs)

    async def context(self, request: Request) -> Context:
        return Context(await caller(request, self.c.token_check))

    @staticmethod
    async def body(request: Request) -> Any:
        raw = await request.body()
        if not raw:
            raise BadRequest("Resource body required")
        return parse_json(raw)

    async def dispatch(self, changes: Changes | None) -> None:
        await self.c.dispatcher.send(changes)

    @staticmethod
    def fields(request: Request) -> list[str]:
        return [f for value in request.query_params.getlist("fields") for f in value.split(",")
                if f]


def _pick(view: dict, fields: list[str]) -> dict:
    return {k: v for k, v in view.items() if k in fields} if fields else view


def _matches_value(actual: Any, wanted: list[Any]) -> bool:
    if isinstance(actual, list):
        return any(w in actual for w in wanted)
    if isinstance(actual, bool) or isinstance(actual, int):
        return actual in wanted
    if actual is None:
        return any(w in ("", None, "None", "null") for w in wanted)
    return str(actual) in [str(w) for w in wanted]


def _matches_fixed_ips(view: dict, wanted: list[str]) -> bool:
    conditions: dict[str, set[str]] = {}
    for item in wanted:
        key, _, value = item.partition("=")
        conditions.setdefault(key, set()).add(value)
    for address in view.get("fixed_ips", []):
        ok = True
        for key, values in conditions.items():
            if key == "ip_address_substr":
                ok = ok and any(v in address["ip_address"] for v in values)
            elif key in ("ip_address", "subnet_id"):
                ok = ok and address[key] in values
        if ok:
            return True
    return False


def _matches_tags(tags: list[str], name: str, values: list[str]) -> bool:
    wanted = {t for v in values for t in v.split(",") if t}
    if name == "tags":
        return wanted <= set(tags)
    if name == "tags-any":
        return bool(wanted & set(tags))
    if name == "not-tags":
        return not wanted <= set(tags)
    return not wanted & set(tags)


def apply_query(resource: Resource, views: list[dict], params: QueryParams,
                base_url: str) -> tuple[list[dict], list[dict] | None]:
    """Filter, sort and page ``views`` as the query string says; (page, links or None)."""
    for name in {k for k in params.keys() if k not in PAGING}:
        values = params.getlist(name)
        if name in TAG_FILTERS:
            views = [v for v in views if _matches_tags(v.get("tags", []), name, values)]
        elif name == "fixed_ips" and "fixed_ips" in resource.attrs:
            views = [v for v in views if _matches_fixed_ips(v, values)]
        elif name in resource.attrs:
            key = "project_id" if name == "tenant_id" else name
            wanted = [parse_filter(resource, key, value) for value in values]
            views = [v for v in views if key in v and _matches_value(v[key], wanted)]
    views = _sort(resource, views, params)
    return _page(resource, views, params, base_url)


def _sort(resource: Resource, views: list[dict], params: QueryParams) -> list[dict]:
    keys = params.getlist("sort_key")
    dirs = params.getlist("sort_dir")
    if not keys:
        return views
    if dirs and len(dirs) != len(keys):
        raise BadRequest("The number of sort_keys and sort_dirs must be same")
    for key in keys:
        if key not in resource.attrs:
            raise BadRequest(f"{[key]} is invalid attribute for sort_key")
    for direction in dirs:
        if direction not in ("asc", "desc"):
            raise BadRequest(f"{[direction]} is invalid value for sort_dir, valid value is "
                             "'asc' and 'desc'")
    dirs = dirs or ["asc"] * len(keys)
    views = sorted(views, key=lambda v: str(v.get("id")))
    for key, direction in reversed(list(zip(keys, dirs))):
        views = sorted(views, key=lambda v, k=key: _sort_value(v.get(k)),
                       reverse=direction == "desc")
    return views


def _sort_value(value: Any) -> tuple:
    if value is None:
        return (0, "")
    if isinstance(value, (list, dict)):
        return (1, str(value))
    return (1, value)


def _page(resource: Resource, views: list[dict], params: QueryParams,
          base_url: str) -> tuple[list[dict], list[dict] | None]:
    limit_text = params.get("limit")
    marker = params.get("marker")
    reverse = str(params.get("page_reverse", "false")).lower() == "true"
    if marker:
        ids = [v.get("id") for v in views]
        if marker not in ids:
            raise BadRequest(f"Marker {marker} could not be found")
        index = ids.index(marker)
        views = views[:index] if reverse else views[index + 1:]
    if limit_text is None:
        return views, None
    try:
        limit = int(limit_text)
    except ValueError:
        raise BadRequest(f"Invalid input for limit. Reason: '{limit_text}' is not an "
                         "integer.") from None
    if limit < 0:
        raise BadRequest(f"Invalid input for limit. Reason: '{limit}' should be non-negative.")
    if limit == 0:
        return views, None
    page = views[-limit:] if reverse else views[:limit]
    kept = [(k, v) for k, v in params.multi_items() if k not in ("marker", "page_reverse")]
    links = []
    if page and len(page) == limit and (len(views) > limit or not reverse):
        links.append({"rel": "next", "href": f"{base_url}?"
                      f"{urlencode([*kept, ('marker', page[-1]['id'])])}"})
    if page and marker:
        links.append({"rel": "previous", "href": f"{base_url}?" + urlencode(
            [*kept, ("marker", page[0]["id"]), ("page_reverse", "True")])})
    return page, links


class Collection(Handlers):
    """The routes of one resource; ``service`` has list/show/create/update/delete."""

    def __init__(self, component, resource: Resource, service, *,
                 writable: tuple[str, ...] = ("create", "update", "delete")):
        super().__init__(component)
        self.resource = resource
        self.service = service
        self.writable = writable

    def url(self, request: Request) -> str:
        root = request.scope.get("root_path", "")
        host = request.headers.get("host", "localhost")
        return f"{request.url.scheme}://{host}{root}/v2.0/{self.resource.path}"

    async def list(self, request: Request) -> Response:
        ctx = await self.context(request)
        params = request.query_params
        hints = {}
        for name in HINTS:
            values = params.getlist(name) or (params.getlist("tenant_id")
                                              if name == "project_id" else [])
            if values and (name in self.resource.attrs or name == "project_id"):
                hints[name] = values
        views = await self.run(self.service.list, ctx, hints)
        page, links = apply_query(self.resource, views, params, self.url(request))
        fields = self.fields(request)
        body: dict[str, Any] = {self.resource.plural: [_pick(v, fields) for v in page]}
        if links is not None:
            body[f"{self.resource.plural}_links"] = links
        return json_response(body)

    async def show(self, request: Request) -> Response:
        ctx = await self.context(request)
        view = await self.run(self.service.show, ctx, request.path_params["id"])
        return json_response({self.resource.singular: _pick(view, self.fields(request))})

    async def create(self, request: Request) -> Response:
        ctx = await self.context(request)
        body = await self.body(request)
        r = self.resource
        if isinstance(body, dict) and r.plural in body and len(body) == 1:
            items = body[r.plural]
            if not isinstance(items, list) or not items:
                raise BadRequest(f"Resources required: '{r.plural}' must be a non-empty list")
            values = [parse_body(r, item, create=True) for item in items]
            views = await self._create_many(ctx, values)
            return json_response({r.plural: views}, 201)
        if not isinstance(body, dict) or r.singular not in body:
            raise BadRequest(f"Unable to find '{r.singular}' in request body")
        values = parse_body(r, body[r.singular], create=True)
        view, changes = await self.run(self.service.create, ctx, values)
        await self.dispatch(changes)
        return json_response({r.singular: view}, 201)

    async def _create_many(self, ctx: Context, values: list[dict]) -> list[dict]:
        bulk = getattr(self.service, "create_bulk", None)
        if bulk is not None:
            views, changes = await self.run(bulk, ctx, values)
            await self.dispatch(changes)
            return views
        views = []
        for item in values:
            view, changes = await self.run(self.service.create, ctx, item)
            await self.dispatch(changes)
            views.append(view)
        return views

    async def update(self, request: Request) -> Response:
        ctx = await self.context(request)
        body = await self.body(request)
        r = self.resource
        if not isinstance(body, dict) or r.singular not in body:
            raise BadRequest(f"Unable to find '{r.singular}' in request body")
        values = parse_body(r, body[r.singular], create=False)
        result = await self.run(self.service.update, ctx, request.path_params["id"], values)
        view, changes = result if isinstance(result, tuple) else (result, None)
        await self.dispatch(changes)
        return json_response({r.singular: view})

    async def delete(self, request: Request) -> Response:
        ctx = await self.context(request)
        changes = await self.run(self.service.delete, ctx, request.path_params["id"])
        await self.dispatch(changes)
        return no_content()

    def routes(self) -> list[Route]:
        base = f"/v2.0/{self.resource.path}"
        routes = [Route(base, self.list, methods=["GET"]),
                  Route(base + "/{id}", self.show, methods=["GET"])]
        if "create" in self.writable:
            routes.append(Route(base, self.create, methods=["POST"]))
        if "update" in self.writable:
            routes.append(Route(base + "/{id}", self.update, methods=["PUT"]))
        if "delete" in self.writable:
            routes.append(Route(base + "/{id}", self.delete, methods=["DELETE"]))
        return routes
