"""The compute HTTP app: version documents, microversions, Nova's error body, every route.

Routes live in ``api_servers.py`` (servers, metadata, tags, addresses,
instance actions), ``api_actions.py`` (server actions, remote consoles),
``api_flavors.py``, ``api_project.py`` (key pairs, limits, quotas, server
groups), ``api_hosts.py`` (hypervisors, services, zones) and
``api_console.py`` (the serial console websocket). Mounted at ``/compute``:
``GET /compute`` lists the versions, ``GET /compute/v2.1`` describes v2.1.

Every request under ``/v2.1/`` goes through ``_Microversions``: the version
asked for is parsed once (a bad one answers 400 or 406 right there) and
every answer names the version it was made with.
"""

from __future__ import annotations

from starlette._utils import get_route_path
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tinystack.common.errors import DomainError
from tinystack.common.http import ServiceApp, json_response
from tinystack.compute import (
    api_actions,
    api_console,
    api_flavors,
    api_hosts,
    api_project,
    api_servers,
)
from tinystack.compute.microversions import MAX, MIN, requested, response_headers

__all__ = ["build_app", "nova_error", "FAULT_NAMES"]

FAULT_NAMES = {400: "badRequest", 401: "unauthorized", 403: "forbidden", 404: "itemNotFound",
               405: "badMethod", 409: "conflictingRequest", 413: "overLimit",
               415: "badMediaType", 429: "overLimit", 501: "notImplemented",
               503: "serviceUnavailable"}
UPDATED = "2013-07-23T11:33:21Z"


def nova_error(code: int, title: str, message: str) -> dict:
    return {FAULT_NAMES.get(code, "computeFault"): {"code": code, "message": message}}


def _root(request: Request) -> str:
    root = request.scope.get("root_path", "")
    host = request.headers.get("host", "localhost")
    return f"{request.url.scheme}://{host}{root}"


def _version(request: Request) -> dict:
    return {"id": "v2.1", "status": "CURRENT", "version": str(MAX), "min_version": str(MIN),
            "updated": UPDATED,
            "links": [{"rel": "self", "href": f"{_root(request)}/v2.1/"},
                      {"rel": "describedby", "type": "text/html",
                       "href": "http://docs.openstack.org/"}],
            "media-types": [{"base": "application/json",
                             "type": "application/vnd.openstack.compute+json;version=2.1"}]}


async def versions(request: Request) -> Response:
    version = _version(request)
    del version["media-types"]
    version["links"] = version["links"][:1]
    return json_response({"versions": [version]})


async def version(request: Request) -> Response:
    return json_response({"version": _version(request)})


async def extensions(request: Request) -> Response:
    return json_response({"extensions": []})


class _Microversions:
    """Pure ASGI middleware for ``/v2.1/...``: parse the version, stamp the answer."""

    def __init__(self, app, render_error):
        self.app = app
        self.render_error = render_error

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not get_route_path(scope).startswith("/v2.1"):
            return await self.app(scope, receive, send)
        headers = {k.decode().lower(): v.decode() for k, v in scope.get("headers", [])}
        try:
            mv = requested(headers)
        except DomainError as exc:
            mv = MIN
            response = json_response(self.render_error(exc.code, exc.title, exc.message),
                                     exc.code)
            response.headers.update({k.decode(): v.decode() for k, v in response_headers(mv)})
            return await response(scope, receive, send)
        scope["tinystack.microversion"] = mv
        stamp = response_headers(mv)

        async def send_stamped(message):
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + stamp
            await send(message)

        await self.app(scope, receive, send_stamped)


class ComputeApp(ServiceApp):
    def __init__(self, routes: list):
        super().__init__("compute", routes, nova_error)
        # inside the request-id middleware, so a 400/406 on the version has an id too
        self.app.app = _Microversions(self.starlette, nova_error)


def build_app(component) -> ComputeApp:
    routes = [
        Route("/", versions, methods=["GET"]),
        Route("/v2.1", version, methods=["GET"]),
        Route("/v2.1/", version, methods=["GET"]),
        Route("/v2.1/extensions", extensions, methods=["GET"]),
        *api_servers.routes(component), *api_actions.routes(component),
        *api_flavors.routes(component), *api_project.routes(component),
        *api_hosts.routes(component), *api_console.routes(component),
    ]
    return ComputeApp(routes)
