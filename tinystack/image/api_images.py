"""Routes for image records: create, list, show, patch, delete, (de|re)activate, tags.

Each handler resolves the caller, parses the request (``patch.py`` for bodies,
``parse_query`` here for the list's query string), calls ``ImageService`` in
a worker thread with the policy hook for the image it finds, and renders with
``views.py``. Data (``/file``, ``/stage``, ``/import``) is in ``api_data.py``,
members in ``api_members.py``.
"""

from __future__ import annotations

from urllib.parse import urlencode

from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tinystack.common.errors import BadRequest
from tinystack.common.http import json_response
from tinystack.common.policy import Credentials
from tinystack.image.data import IMPORT_METHODS
from tinystack.image.listing import DEFAULT_LIMIT, MAX_LIMIT, SORT_KEYS, ImageQuery
from tinystack.image.models import Image
from tinystack.image.patch import parse_create, parse_patch
from tinystack.image.policy import enforce, target
from tinystack.image.schemas import check_image
from tinystack.image.service import Change
from tinystack.image.views import image_view
from tinystack.image.web import Handlers, no_content

__all__ = ["ImageHandlers", "routes", "parse_query"]

VISIBILITY_FILTERS = ("community", "public", "private", "shared", "all")
MEMBER_STATUS_FILTERS = ("pending", "accepted", "rejected", "all")


def _sort(params: QueryParams) -> list[tuple[str, str]]:
    def key(name: str) -> str:
        if name not in SORT_KEYS:
            raise BadRequest(f"Invalid sort key: {name}. It must be one of the following: "
                             f"{', '.join(SORT_KEYS)}.")
        return name

    def direction(name: str) -> str:
        if name not in ("asc", "desc"):
            raise BadRequest(f"Invalid sort direction: {name}")
        return name

    if "sort" in params:
        if "sort_key" in params or "sort_dir" in params:
            raise BadRequest("Old and new sorting syntax cannot be combined")
        pairs = []
        for item in params["sort"].strip().split(","):
            name, _, way = item.partition(":")
            pairs.append((key(name.strip()), direction(way.strip() or "desc")))
        return pairs
    keys = [key(k.strip()) for k in params.getlist("sort_key")]
    dirs = [direction(d.strip()) for d in params.getlist("sort_dir")]
    if len(dirs) > 1 and len(dirs) != len(keys):
        raise BadRequest("Number of sort dirs does not match the number of sort keys")
    keys = keys or ["created_at"]
    if len(dirs) <= 1:
        dirs = [dirs[0] if dirs else "desc"] * len(keys)
    return list(zip(keys, dirs))


def parse_query(params: QueryParams) -> ImageQuery:
    """``GET /v2/images`` parameters as an ``ImageQuery``; 400 for a malformed one."""
    query = ImageQuery(sort=_sort(params))
    limit = params.get("limit")
    if limit is not None:
        try:
            query.limit = int(limit)
        except ValueError:
            raise BadRequest("limit param must be an integer") from None
        if query.limit < 0:
            raise BadRequest("limit param must be positive")
    query.limit = min(query.limit, MAX_LIMIT) if limit is not None else DEFAULT_LIMIT
    query.marker = params.get("marker")
    query.member_status = params.get("member_status", "accepted")
    if query.member_status not in MEMBER_STATUS_FILTERS:
        raise BadRequest(f"Invalid status: {query.member_status}")
    query.visibility = params.get("visibility") or None
    if query.visibility is not None and query.visibility not in VISIBILITY_FILTERS:
        raise BadRequest(f"Invalid visibility value: {query.visibility}")
    hidden = params.get("os_hidden", "false").lower()
    if hidden not in ("true", "false"):
        raise BadRequest(f"Invalid value '{hidden}' for 'os_hidden' filter. Valid values are "
                         "'true' or 'false'.")
    query.os_hidden = hidden == "true"
    if "changes-since" in params:
        raise BadRequest('The "changes-since" filter is no longer available on v2.')
    query.tags = [t.strip() for t in params.getlist("tag")]
    taken = {"limit", "marker", "member_status", "visibility", "os_hidden", "tag", "sort",
             "sort_key", "sort_dir"}
    query.filters = {k: v for k, v in params.items() if k not in taken}
    return query


class ImageHandlers(Handlers):
    def view(self, image: Image) -> dict:
        return image_view(image, self.store_ids)

    async def list_images(self, request: Request) -> Response:
        creds = await self.caller(request)
        enforce("get_images", creds, target(creds.project_id))
        query = parse_query(request.query_params)
        images, next_marker = await self.run(self.images.list, creds, query)
        kept = [(k, v) for k, v in request.query_params.multi_items() if k != "marker"]
        body = {"images": [self.view(i) for i in images],
                "first": "/v2/images" + (f"?{urlencode(kept)}" if kept else ""),
                "schema": "/v2/schemas/images"}
        if next_marker:
            body["next"] = f"/v2/images?{urlencode([*kept, ('marker', next_marker)])}"
        return json_response(body)

    def _create_rule(self, creds: Credentials):
        def check(image: Image) -> None:
            enforce("add_image", creds, target(image.owner))
            self._visibility_rule(creds, image, image.visibility)
        return check

    @staticmethod
    def _visibility_rule(creds: Credentials, image: Image, visibility: str | None) -> None:
        if visibility == "public":
            enforce("publicize_image", creds, target(image.owner, visibility))
        elif visibility == "community":
            enforce("communitize_image", creds, target(image.owner, visibility))

    async def create_image(self, request: Request) -> Response:
        creds = await self.caller(request)
        base, extra, tags = parse_create(await self.body(request))
        image = await self.run(self.images.create, creds, base, extra, tags,
                               self._create_rule(creds))
        headers = {"Location": f"{self.base(request)}/v2/images/{image.id}",
                   "OpenStack-image-import-methods": ",".join(IMPORT_METHODS),
                   "OpenStack-image-store-ids": ",".join(self.store_ids.values())}
        return json_response(self.view(image), 201, headers)

    async def get_image(self, request: Request) -> Response:
        creds = await self.caller(request)
        image = await self.run(self.images.get, creds, request.path_params["image_id"],
                               self.owner_rule("get_image", creds))
        return json_response(self.view(image))

    async def update_image(self, request: Request) -> Response:
        creds = await self.caller(request)
        changes = parse_patch(request.headers.get("content-type"), await self.body(request))

        def check(image: Image, changes: list[Change]) -> None:
            enforce("modify_image", creds, target(image.owner, image.visibility))
            for change in changes:
                if change.path == ("visibility",) and change.op != "remove":
                    self._visibility_rule(creds, image, change.value)

        image = await self.run(self.images.update, creds, request.path_params["image_id"],
                               changes, check)
        return json_response(self.view(image))

    async def delete_image(self, request: Request) -> Response:
        creds = await self.caller(request)
        image = await self.run(self.images.delete, creds, request.path_params["image_id"],
                               self.owner_rule("delete_image", creds))
        await self.run(self.data.delete_data, image)
        return no_content()

    async def deactivate(self, request: Request) -> Response:
        creds = await self.caller(request)
        await self.run(self.images.deactivate, creds, request.path_params["image_id"],
                       self.owner_rule("deactivate", creds))
        return no_content()

    async def reactivate(self, request: Request) -> Response:
        creds = await self.caller(request)
        await self.run(self.images.reactivate, creds, request.path_params["image_id"],
                       self.owner_rule("reactivate", creds))
        return no_content()

    async def add_tag(self, request: Request) -> Response:
        creds = await self.caller(request)
        tag = request.path_params["tag"]
        check_image({"tags": [tag]})
        await self.run(self.images.add_tag, creds, request.path_params["image_id"], tag,
                       self.owner_rule("modify_image", creds))
        return no_content()

    async def delete_tag(self, request: Request) -> Response:
        creds = await self.caller(request)
        await self.run(self.images.remove_tag, creds, request.path_params["image_id"],
                       request.path_params["tag"], self.owner_rule("modify_image", creds))
        return no_content()


def routes(component) -> list[Route]:
    h = ImageHandlers(component)
    image = "/v2/images/{image_id}"
    return [
        Route("/v2/images", h.list_images, methods=["GET"]),
        Route("/v2/images", h.create_image, methods=["POST"]),
        Route(image, h.get_image, methods=["GET"]),
        Route(image, h.update_image, methods=["PATCH"]),
        Route(image, h.delete_image, methods=["DELETE"]),
        Route(f"{image}/actions/deactivate", h.deactivate, methods=["POST"]),
        Route(f"{image}/actions/reactivate", h.reactivate, methods=["POST"]),
        Route(f"{image}/tags/{{tag}}", h.add_tag, methods=["PUT"]),
        Route(f"{image}/tags/{{tag}}", h.delete_tag, methods=["DELETE"]),
    ]
