"""HTTP plumbing shared by every service's ``api.py``.

- ``json_response``: orjson-encoded responses;
- ``read_json``: the request body parsed and validated into a pydantic model,
  malformed JSON or a missing field becoming a ``BadRequest``; ``parse_json``
  is its first half, for bodies a service checks by hand;
- ``ServiceApp``: a Starlette app for one service that turns ``DomainError``
  into that service's error body, everything else into a logged 500, and sets
  ``X-Openstack-Request-Id`` on every response.

NUL characters are refused (400) in paths, query strings and JSON strings:
PostgreSQL cannot store or even compare them, so they would otherwise reach
the database as a 500.

It knows nothing about tokens: ``common/context.py`` turns a token into a
request context, and each service's ``api.py`` checks policy.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import orjson
import pydantic
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from tinystack.common.errors import BadRequest, DomainError

__all__ = ["json_response", "parse_json", "read_json", "ServiceApp", "ErrorRenderer",
           "request_id"]

log = logging.getLogger(__name__)
M = TypeVar("M", bound=pydantic.BaseModel)
ErrorRenderer = Callable[[int, str, str], dict]
"""(status code, title, message) -> the service's error body."""


def json_response(body: Any, status: int = 200, headers: dict | None = None) -> Response:
    return Response(
        orjson.dumps(body), status_code=status, headers=headers, media_type="application/json"
    )


def _describe(error: pydantic.ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "body"
    if first["type"] == "missing":
        return f"Invalid input for field '{where}': '{first['loc'][-1]}' is a required property"
    return f"Invalid input for field '{where}': {first['msg']}"


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, list):
        return any(_has_nul(item) for item in value)
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    return False


def parse_json(raw: bytes) -> Any:
    """A request body's JSON; 400 if it is not JSON or a string in it holds a NUL."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest("Malformed request body: it is not valid JSON.") from None
    if _has_nul(data):
        raise BadRequest("Invalid input: strings may not contain NUL characters.")
    return data


async def read_json(request: Request, model: type[M]) -> M:
    """The body as ``model``; a clear 400 for anything that is not."""
    raw = await request.body()
    if not raw:
        raise BadRequest("The request body is empty; a JSON object is required.")
    data = parse_json(raw)
    if not isinstance(data, dict):
        raise BadRequest("The request body must be a JSON object.")
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as error:
        raise BadRequest(_describe(error)) from None


def request_id(request: Request) -> str:
    return request.scope.setdefault("tinystack.request_id", f"req-{uuid.uuid4()}")


class _RequestId:
    """Pure ASGI middleware: one request id per request, echoed in the response."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        rid = scope.setdefault("tinystack.request_id", f"req-{uuid.uuid4()}")
        header = (b"x-openstack-request-id", rid.encode())

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + [header]
            await send(message)

        await self.app(scope, receive, send_with_id)


class ServiceApp:
    """One service's ASGI app: its routes and its error shape."""

    def __init__(self, name: str, routes: list[BaseRoute], render_error: ErrorRenderer):
        self.name = name
        self.render_error = render_error
        self.starlette = Starlette(
            routes=routes,
            exception_handlers={
                DomainError: self._domain_error,
                404: self._not_found,
                405: self._not_allowed,
                Exception: self._bug,
            },
        )
        self.app = _RequestId(self.starlette)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and (
                "\x00" in scope["path"] or b"%00" in scope.get("query_string", b"")):
            response = self._error(400, "Bad Request",
                                   "Invalid input: the URL may not contain NUL characters.")
            await _RequestId(response)(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _error(self, code: int, title: str, message: str, headers: dict | None = None):
        return json_response(self.render_error(code, title, message), code, headers)

    async def _domain_error(self, request: Request, exc: DomainError) -> Response:
        return self._error(exc.code, exc.title, exc.message, exc.headers)

    async def _not_found(self, request: Request, exc: Exception) -> Response:
        return self._error(404, "Not Found", "The resource could not be found.")

    async def _not_allowed(self, request: Request, exc: Exception) -> Response:
        return self._error(405, "Method Not Allowed", "The method is not allowed for this resource.")

    async def _bug(self, request: Request, exc: Exception) -> Response:
        log.exception("%s: unexpected error in %s %s (%s)", self.name, request.method,
                      request.url.path, request_id(request))
        return self._error(
            500, "Internal Server Error",
            "An unexpected error prevented the server from fulfilling your request.",
        )
