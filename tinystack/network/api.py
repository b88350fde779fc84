"""The network HTTP app: Neutron's v2.0 API, its version documents and its error body.

Mounted at ``/network``: ``GET /network`` lists the one version (v2.0, no
token needed, as Neutron's root), ``/network/v2.0`` lists the collections,
``/network/v2.0/extensions`` what is implemented (``extensions.py``). The
collections are ``api_base.Collection`` over each service; router actions,
tags, quotas and availability zones are in ``api_actions.py``. Errors are
``{"NeutronError": {"type", "message", "detail"}}`` (``errors.py``).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tinystack.common.context import caller
from tinystack.common.http import ServiceApp, json_response
from tinystack.network import api_actions
from tinystack.network.api_base import Collection
from tinystack.network.attributes import RESOURCES
from tinystack.network.errors import ExtensionNotFound, neutron_error
from tinystack.network.extensions import EXTENSIONS, extension_view

__all__ = ["build_app"]


def _root(request: Request) -> str:
    host = request.headers.get("host", "localhost")
    return f"{request.url.scheme}://{host}{request.scope.get('root_path', '')}"


def build_app(component) -> ServiceApp:
    async def versions(request: Request) -> Response:
        return json_response({"versions": [{
            "id": "v2.0", "status": "CURRENT",
            "links": [{"rel": "self", "href": f"{_root(request)}/v2.0/"}]}]})

    async def resources(request: Request) -> Response:
        await caller(request, component.token_check)
        base = f"{_root(request)}/v2.0"
        return json_response({"resources": [
            {"name": r.singular, "collection": r.plural,
             "links": [{"rel": "self", "href": f"{base}/{r.path}"}]}
            for r in RESOURCES.values()]})

    async def extensions(request: Request) -> Response:
        await caller(request, component.token_check)
        return json_response({"extensions": [extension_view(*e) for e in EXTENSIONS]})

    async def extension(request: Request) -> Response:
        await caller(request, component.token_check)
        alias = request.path_params["alias"]
        for entry in EXTENSIONS:
            if entry[0] == alias:
                return json_response({"extension": extension_view(*entry)})
        raise ExtensionNotFound(alias=alias)

    c = component
    services = {"networks": c.networks, "subnets": c.subnets, "ports": c.ports,
                "routers": c.routers, "floatingips": c.floating_ips,
                "security_groups": c.security_groups, "rbac_policies": c.rbac}
    collections = [Collection(c, RESOURCES[plural], service)
                   for plural, service in services.items()]
    collections.append(Collection(c, RESOURCES["security_group_rules"], _Rules(c),
                                  writable=("create", "delete")))
    collections.append(Collection(c, RESOURCES["agents"], _Agents(c),
                                  writable=("update", "delete")))
    routes = [
        Route("/", versions, methods=["GET"]),
        Route("/v2.0", resources, methods=["GET"]),
        Route("/v2.0/", resources, methods=["GET"]),
        Route("/v2.0/extensions", extensions, methods=["GET"]),
        Route("/v2.0/extensions/{alias}", extension, methods=["GET"]),
        *api_actions.routes(c),
    ]
    for collection in collections:
        routes.extend(collection.routes())
    return ServiceApp("network", routes, neutron_error)


class _Rules:
    """Security group rules through the collection interface."""

    def __init__(self, component):
        self.groups = component.security_groups

    def list(self, ctx, hints):
        return self.groups.list_rules(ctx, hints)

    def show(self, ctx, rule_id):
        return self.groups.show_rule(ctx, rule_id)

    def create(self, ctx, values):
        return self.groups.create_rule(ctx, values)

    def delete(self, ctx, rule_id):
        return self.groups.delete_rule(ctx, rule_id)


class _Agents:
    """Agents through the collection interface (no changes for other agents to hear)."""

    def __init__(self, component):
        self.agents = component.agents

    def list(self, ctx, hints):
        return self.agents.list(ctx, hints)

    def show(self, ctx, agent_id):
        return self.agents.show(ctx, agent_id)

    def update(self, ctx, agent_id, values):
        return self.agents.update(ctx, agent_id, values)

    def delete(self, ctx, agent_id):
        self.agents.delete(ctx, agent_id)
        return None
