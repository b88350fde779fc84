"""The image HTTP app: every ``/v2`` route, the version document and Glance's error body.

Mounted at ``/image``: ``GET /image`` answers 300 with the versions (as
Glance's root does), ``/image/versions`` 200 with the same, and the API is
under ``/image/v2``. Routes live in ``api_images.py`` (records, tags,
actions), ``api_data.py`` (data, import, stores) and ``api_members.py``; the
schema documents are served from ``schemas.py`` here.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tinystack.common.context import caller
from tinystack.common.errors import NotFound
from tinystack.common.http import ServiceApp, json_response
from tinystack.image import api_data, api_images, api_members, schemas
from tinystack.image.errors import glance_error

__all__ = ["build_app", "VERSIONS"]

VERSIONS = (("2.15", "CURRENT"), ("2.13", "SUPPORTED"), ("2.12", "SUPPORTED"),
            ("2.11", "SUPPORTED"), ("2.10", "SUPPORTED"), ("2.9", "SUPPORTED"),
            ("2.8", "SUPPORTED"), ("2.7", "SUPPORTED"), ("2.6", "SUPPORTED"),
            ("2.5", "SUPPORTED"), ("2.4", "SUPPORTED"), ("2.3", "SUPPORTED"),
            ("2.2", "SUPPORTED"), ("2.1", "SUPPORTED"), ("2.0", "SUPPORTED"))
"""What Glance with several stores and no cache lists: 2.14 and 2.16 are the cache API."""

SCHEMAS = {"image": schemas.IMAGE_SCHEMA, "images": schemas.IMAGES_SCHEMA,
           "member": schemas.MEMBER_SCHEMA, "members": schemas.MEMBERS_SCHEMA}


def _versions(request: Request) -> dict:
    root = request.scope.get("root_path", "")
    host = request.headers.get("host", "localhost")
    href = f"{request.url.scheme}://{host}{root}/v2/"
    return {"versions": [{"id": f"v{number}", "status": status,
                          "links": [{"rel": "self", "href": href}]}
                         for number, status in VERSIONS]}


def build_app(component) -> ServiceApp:
    async def root(request: Request) -> Response:
        return json_response(_versions(request), 300)

    async def versions(request: Request) -> Response:
        return json_response(_versions(request))

    async def schema(request: Request) -> Response:
        await caller(request, component.token_check)
        found = SCHEMAS.get(request.path_params["name"])
        if found is None:
            raise NotFound("The resource could not be found.")
        return json_response(found)

    routes = [
        Route("/", root, methods=["GET"]),
        Route("/versions", versions, methods=["GET"]),
        Route("/v2/schemas/{name:str}", schema, methods=["GET"]),
        *api_images.routes(component),
        *api_data.routes(component),
        *api_members.routes(component),
    ]
    return ServiceApp("image", routes, glance_error)
