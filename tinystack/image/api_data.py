"""Routes for image data: ``/file`` up and down, ``/stage``, ``/import``, ``/v2/info/*``.

Uploads hand the request body to ``ImageData`` as a stream (it is never read
into memory); downloads stream the store's blocks back with Glance's headers
(``Content-MD5``, ``Content-Range`` for a ``Range`` request, 204 when the
image has no data). The import and store discovery documents are here too.
"""

from __future__ import annotations

import logging
import re

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tinystack.common.errors import BadRequest, Conflict, Forbidden, NotFound
from tinystack.common.http import json_response
from tinystack.common.policy import Credentials
from tinystack.common.sendfile import FileResponse, offers_zero_copy
from tinystack.image.data import IMPORT_METHODS
from tinystack.image.errors import RangeNotSatisfiable, UnsupportedMediaType
from tinystack.image.models import Image
from tinystack.image.policy import enforce, is_admin, target
from tinystack.image.web import Handlers, no_content

__all__ = ["DataHandlers", "routes", "parse_range"]

log = logging.getLogger(__name__)

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


def parse_range(range_header: str | None, content_range: str | None,
                size: int) -> tuple[int, int] | None:
    """(offset, length) a ``Range`` (or legacy ``Content-Range``) header asks for, or None."""
    if range_header is not None:
        text = range_header.strip()
        if "," in text:
            raise BadRequest("Requests with multiple ranges are not supported in Glance. You "
                             "may make multiple single-range requests instead.")
        found = _RANGE.match(text)
        if not found or found.groups() == ("", "") or (
                found.group(1) and found.group(2) and int(found.group(2)) < int(found.group(1))):
            raise RangeNotSatisfiable("Invalid Range header.")
        first, last = found.groups()
        if not first:  # the last N bytes
            count = int(last)
            offset = size - count if count < size else 0
            return offset, size - offset
        offset = int(first)
        if offset >= size:
            raise RangeNotSatisfiable("Invalid start position in Range header. Start position "
                                      f"MUST be in range [0, {size - 1}].")
        end = min(int(last) + 1, size) if last else size
        return offset, end - offset
    if content_range is not None:
        found = _CONTENT_RANGE.match(content_range.strip())
        if not found or int(found.group(2)) < int(found.group(1)):
            raise RangeNotSatisfiable("Invalid Content-Range header.")
        offset, stop = int(found.group(1)), int(found.group(2)) + 1
        if stop > size:
            raise RangeNotSatisfiable("Invalid stop position in Content-Range header. The stop "
                                      f"position MUST be in range [0, {size - 1}].")
        if offset >= size:
            raise RangeNotSatisfiable("Invalid start position in Content-Range header. Start "
                                      f"position MUST be in range [0, {size - 1}].")
        return offset, stop - offset
    return None


def _octet_stream(request: Request) -> None:
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "application/octet-stream":
        raise UnsupportedMediaType(f"Invalid content type {content_type}")


def _length(request: Request) -> int | None:
    value = request.headers.get("content-length")
    return int(value) if value and value.isdigit() else None


class DataHandlers(Handlers):
    async def upload(self, request: Request) -> Response:
        creds = await self.caller(request)
        _octet_stream(request)
        image_id = request.path_params["image_id"]
        try:
            await self.data.upload(creds, image_id, request.stream(),
                                   self.owner_rule("upload_image", creds), _length(request))
        except ClientDisconnect:
            log.info("upload of image %s: the client went away; the image stays queued",
                     image_id)
            return Response(status_code=400)
        return no_content()

    async def stage(self, request: Request) -> Response:
        creds = await self.caller(request)
        if "glance-direct" not in IMPORT_METHODS:
            raise NotFound("'glance-direct' method is not available at this site.")
        _octet_stream(request)
        image_id = request.path_params["image_id"]
        try:
            await self.data.stage(creds, image_id, request.stream(),
                                  self.owner_rule("modify_image", creds), _length(request))
        except ClientDisconnect:
            log.info("staging of image %s: the client went away", image_id)
            return Response(status_code=400)
        return no_content()

    def _download_rule(self, creds: Credentials):
        def check(image: Image) -> None:
            if image.status == "deactivated" and not is_admin(creds):
                raise Forbidden("The requested image has been deactivated. Image data download "
                                "is forbidden.")
            enforce("download_image", creds, target(image.owner, image.visibility))
        return check

    async def download(self, request: Request) -> Response:
        creds = await self.caller(request)
        image = await self.run(self.images.get, creds, request.path_params["image_id"],
                               self._download_rule(creds))
        if not image.location or image.size is None:
            return no_content()
        wanted = parse_range(request.headers.get("range"),
                             request.headers.get("content-range"), image.size)
        offset, length = wanted or (0, image.size)
        headers = {"Content-Length": str(length)}
        if image.checksum:
            headers["Content-MD5"] = image.checksum
        if wanted:
            headers["Content-Range"] = f"bytes {offset}-{offset + length - 1}/{image.size}"
        status = 206 if wanted else 200
        if offers_zero_copy(request.scope) and self.data.store.local_path(image.location):
            file = self.data.open_local(image)
            if file is None:  # the store lost the data: what Glance answers then
                return no_content()
            return FileResponse(file, offset, length, status, headers)
        return StreamingResponse(self.data.read(image, offset, length),
                                 status_code=status, headers=headers,
                                 media_type="application/octet-stream")

    async def import_image(self, request: Request) -> Response:
        creds = await self.caller(request)
        body = await self.body(request)
        method = body.get("method") if isinstance(body, dict) else None
        if not isinstance(method, dict):
            raise BadRequest("Import request requires a 'method' field.")
        if "name" not in method:
            raise BadRequest("Import request requires a 'name' field.")
        if method["name"] not in IMPORT_METHODS:
            raise BadRequest(f"Unknown import method name '{method['name']}'.")
        for flag in ("all_stores_must_succeed", "all_stores"):
            if not isinstance(body.get(flag, True), bool):
                raise BadRequest(f"'{flag}' must be boolean value only")
        wanted = list(body.get("stores") or [])
        if request.headers.get("x-image-meta-store"):
            wanted.append(request.headers["x-image-meta-store"])
        for store_id in wanted:
            if store_id not in self.store_ids.values():
                raise Conflict(f"Unknown scheme '{store_id}' found in URI")
        await self.data.start_import(creds, request.path_params["image_id"], method["name"],
                                     method.get("uri"), self.owner_rule("modify_image", creds))
        return Response(status_code=202)

    async def import_info(self, request: Request) -> Response:
        await self.caller(request)
        return json_response({"import-methods": {
            "description": "Import methods available.", "type": "array",
            "value": list(IMPORT_METHODS)}})

    async def stores(self, request: Request) -> Response:
        await self.caller(request)
        store = self.data.store
        return json_response({"stores": [
            {"id": store.store_id, "description": store.description, "default": "true"}]})

    async def stores_detail(self, request: Request) -> Response:
        creds = await self.caller(request)
        enforce("stores_info_detail", creds, target(creds.project_id))
        store = self.data.store
        properties = {"chunk_size": 65536, "thin_provisioning": False}
        if hasattr(store, "root"):
            properties["data_dir"] = str(store.root)
        return json_response({"stores": [
            {"id": store.store_id, "description": store.description, "default": "true",
             "type": store.kind, "properties": properties, "weight": 0}]})


def routes(component) -> list[Route]:
    h = DataHandlers(component)
    image = "/v2/images/{image_id}"
    return [
        Route(f"{image}/file", h.upload, methods=["PUT"]),
        Route(f"{image}/file", h.download, methods=["GET"]),
        Route(f"{image}/stage", h.stage, methods=["PUT"]),
        Route(f"{image}/import", h.import_image, methods=["POST"]),
        Route("/v2/info/import", h.import_info, methods=["GET"]),
        Route("/v2/info/stores", h.stores, methods=["GET"]),
        Route("/v2/info/stores/detail", h.stores_detail, methods=["GET"]),
    ]
