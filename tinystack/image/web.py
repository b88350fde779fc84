"""What every image handler needs: the caller, the policy hooks, body parsing, URLs.

``Handlers`` is the base of the route modules (``api_images.py``,
``api_data.py``, ``api_members.py``). ``caller`` turns ``X-Auth-Token`` into
``Credentials`` through the identity client the component was given;
``owner_rule`` builds the ``authorize`` hook the service calls with the image
it found (the policy check needs the image's owner); ``run`` moves a blocking
service call to a worker thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from tinystack.common.context import caller
from tinystack.common.errors import BadRequest
from tinystack.common.policy import Credentials
from tinystack.image.models import Image
from tinystack.image.policy import enforce, target

__all__ = ["Handlers", "no_content"]

T = TypeVar("T")


def no_content(headers: dict | None = None) -> Response:
    return Response(status_code=204, headers=headers)


class Handlers:
    def __init__(self, component):
        self.c = component
        self.images = component.images
        self.data = component.data

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await run_in_threadpool(fn, *args, **kwargs)

    async def caller(self, request: Request) -> Credentials:
        return await caller(request, self.c.token_check)

    @staticmethod
    def owner_rule(action: str, creds: Credentials) -> Callable[[Image], None]:
        """The hook checking ``action`` against the image's owner and visibility."""
        def check(image: Image) -> None:
            enforce(action, creds, target(image.owner, image.visibility))
        return check

    @staticmethod
    async def body(request: Request) -> Any:
        """The JSON body, whatever its type; 400 when there is none or it is not JSON."""
        raw = await request.body()
        if not raw:
            raise BadRequest("Body expected in request.")
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise BadRequest("Malformed JSON in request body.") from None

    @staticmethod
    def base(request: Request) -> str:
        """The image API's root as the client reached it (``.../image``)."""
        root = request.scope.get("root_path", "")
        host = request.headers.get("host", "localhost")
        return f"{request.url.scheme}://{host}{root}"

    @property
    def store_ids(self) -> dict[str, str]:
        return self.c.store_ids
