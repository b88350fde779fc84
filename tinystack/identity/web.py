"""What every identity handler needs: the caller, the policy check, links.

``Handlers`` is the base of the three route modules (``api_auth.py``,
``api_resources.py``, ``api_catalog.py``): it resolves ``X-Auth-Token`` to a
``ValidToken`` (401 when missing or invalid), checks an action against
``policy.py``, runs blocking service calls in worker threads, and builds the
``links`` Keystone puts on every resource and collection.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any, TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from tinystack.common.errors import BadRequest, NotFound, Unauthorized
from tinystack.common.http import json_response
from tinystack.identity.auth import UNAUTHORIZED, ValidToken
from tinystack.identity.policy import policy

__all__ = ["Handlers", "flag", "iso", "no_content"]

T = TypeVar("T")


def flag(value: str | None) -> bool | None:
    """A boolean query filter: None when absent."""
    if value is None:
        return None
    lowered = value.lower()
    if lowered in ("", "true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise BadRequest(f"Invalid boolean value '{value}' in the query string.")


def iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.strftime("%Y-%m-%dT%H:%M:%S.%f")


def no_content() -> Response:
    return Response(status_code=204)


class Handlers:
    def __init__(self, component):
        self.c = component
        self.identity = component.identity
        self.auth = component.auth

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await run_in_threadpool(fn, *args, **kwargs)

    async def caller(self, request: Request) -> ValidToken:
        token = request.headers.get("x-auth-token")
        if not token:
            raise Unauthorized(UNAUTHORIZED)
        valid = self.auth.cached(token)
        if valid is None:
            try:
                valid = await self.run(self.auth.validate, token)
            except NotFound:
                raise Unauthorized(UNAUTHORIZED) from None
        request.state.caller = valid
        return valid

    async def enforce(self, request: Request, action: str, **target: Any) -> ValidToken:
        valid = await self.caller(request)
        policy.enforce(action, valid.credentials, target)
        return valid

    def allowed(self, valid: ValidToken, action: str, **target: Any) -> bool:
        return policy.allowed(action, valid.credentials, target)

    @staticmethod
    def base(request: Request) -> str:
        """The identity API's own URL as the client reached it, ending in /v3."""
        root = request.scope.get("root_path", "")
        host = request.headers.get("host", "localhost")
        return f"{request.url.scheme}://{host}{root}/v3"

    def link(self, request: Request, path: str) -> dict:
        return {"self": f"{self.base(request)}/{path}"}

    def collection(self, request: Request, key: str, items: list[dict]) -> Response:
        url = str(request.url)
        return json_response({key: items, "links": {"self": url, "previous": None,
                                                      "next": None}})

    @staticmethod
    def query(request: Request, name: str) -> str | None:
        return request.query_params.get(name)
