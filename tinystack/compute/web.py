"""What every compute handler needs: the caller, the microversion, policy, query parsing.

``Handlers`` is the base of the route modules (``api_servers.py``,
``api_actions.py``, ``api_flavors.py``, ``api_project.py``,
``api_hosts.py``): it turns ``X-Auth-Token`` into ``Credentials`` and a
``Caller`` (with the request id instance actions record), reads the
microversion the app's middleware put in the scope, checks a rule of
``policy.py``, runs blocking service calls in worker threads, and builds
the ``Shaper`` that renders views for this request.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any, TypeVar

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from tinystack.common.context import caller as token_caller
from tinystack.common.errors import BadRequest
from tinystack.common.http import request_id
from tinystack.common.policy import Credentials
from tinystack.compute import policy
from tinystack.compute.microversions import MIN, Microversion
from tinystack.compute.service import Caller
from tinystack.compute.views import Shaper

__all__ = ["Handlers", "flag", "no_content", "accepted", "parse_time", "int_param", "raw_json"]

T = TypeVar("T")


def flag(value: str | None, name: str = "") -> bool | None:
    """A boolean query parameter: None when absent."""
    if value is None:
        return None
    lowered = value.strip().lower()
    if lowered in ("", "true", "1", "yes", "on", "t", "y"):
        return True
    if lowered in ("false", "0", "no", "off", "f", "n"):
        return False
    raise BadRequest(f"Invalid input for query parameters {name}. Value: {value}. "
                     f"'{value}' is not a valid boolean value")


def int_param(value: str | None, name: str, minimum: int = 0) -> int | None:
    if value is None:
        return None
    try:
        number = int(value)
    except ValueError:
        raise BadRequest(f"Invalid input for query parameters {name}. Value: {value}. "
                         f"'{value}' is not an integer") from None
    if number < minimum:
        raise BadRequest(f"Invalid input for query parameters {name}. Value: {value}. "
                         f"{number} is less than the minimum of {minimum}")
    return number


def parse_time(value: str | None, name: str) -> dt.datetime | None:
    """An ISO 8601 timestamp as naive UTC; 400 when it is not one."""
    if value is None:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"Invalid input for query parameters {name}. Value: {value}. "
                         f"'{value}' is not a 'date-time'") from None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return parsed


async def raw_json(request: Request) -> dict:
    """The body as a JSON object, for bodies whose keys are data (``{key: value}``)."""
    raw = await request.body()
    try:
        data = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        raise BadRequest("Malformed request body") from None
    if not isinstance(data, dict):
        raise BadRequest("Malformed request body")
    return data


def no_content() -> Response:
    return Response(status_code=204)


def accepted() -> Response:
    return Response(status_code=202)


class Handlers:
    def __init__(self, component):
        self.c = component

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await run_in_threadpool(fn, *args, **kwargs)

    @staticmethod
    def mv(request: Request) -> Microversion:
        return request.scope.get("tinystack.microversion", MIN)

    async def creds(self, request: Request) -> Credentials:
        return await token_caller(request, self.c.token_check)

    async def caller(self, request: Request) -> Caller:
        creds = await self.creds(request)
        return Caller(user_id=creds.user_id, project_id=creds.project_id or "",
                      roles=frozenset(creds.roles), token=creds.token,
                      request_id=request_id(request))

    async def enforce(self, request: Request, rule: str, **target: Any) -> Caller:
        creds = await self.creds(request)
        target.setdefault("project_id", creds.project_id)
        policy.enforce(rule, creds, target)
        return await self.caller(request)

    async def allowed(self, request: Request, rule: str, **target: Any) -> bool:
        creds = await self.creds(request)
        target.setdefault("project_id", creds.project_id)
        return policy.allowed(rule, creds, **target)

    @staticmethod
    def base(request: Request) -> str:
        """The compute API's root as the client reached it (without /v2.1)."""
        root = request.scope.get("root_path", "")
        host = request.headers.get("host", "localhost")
        return f"{request.url.scheme}://{host}{root}"

    def shaper(self, request: Request, caller: Caller) -> Shaper:
        return Shaper(self.mv(request), caller.is_admin, self.base(request))

    @staticmethod
    def query(request: Request, name: str) -> str | None:
        return request.query_params.get(name)

    def next_link(self, request: Request, kind: str, items: list[dict], limit: int | None,
                  marker_key: str = "id") -> list[dict] | None:
        """Nova's ``<kind>_links`` with the ``next`` page, when a full page came back."""
        if limit is None or not items or len(items) < limit:
            return None
        params = [(k, v) for k, v in request.query_params.multi_items() if k != "marker"]
        params.append(("marker", str(items[-1][marker_key])))
        query = "&".join(f"{k}={v}" for k, v in params)
        return [{"rel": "next", "href": f"{self.base(request)}/v2.1/{kind}?{query}"}]
