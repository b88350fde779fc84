"""The image service as compute sees it: Glance v2 over HTTP, never its modules.

``ImageClient`` reads an image's record (to check it against the flavor and
to tell the node what to fetch), registers snapshot records and deletes a
snapshot whose upload failed. It speaks to ``<base_url>/image/v2`` with the
caller's token, as Nova uses the user's token towards Glance; the node gets
the same token in ``ServerSpec.token`` to download the data.

``Image`` is the part of Glance's JSON compute keeps: base fields plus the
custom properties (``kernel_id``, ``hw_architecture``...) in ``properties``.
Tests give the client an ``httpx`` transport of their own (``http``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import httpx

from tinystack.common.client import ApiClient
from tinystack.common.errors import Unavailable

__all__ = ["Image", "ImageClient", "ImageNotFound", "ImageServiceError"]

log = logging.getLogger(__name__)

_BASE_KEYS = frozenset({
    "id", "name", "status", "visibility", "protected", "checksum", "os_hash_algo",
    "os_hash_value", "owner", "size", "virtual_size", "min_ram", "min_disk", "disk_format",
    "container_format", "created_at", "updated_at", "tags", "self", "file", "schema",
    "direct_url", "locations", "os_hidden", "stores",
})


class ImageNotFound(Exception):
    """Glance said 404: the image does not exist or the caller may not see it."""


class ImageServiceError(Unavailable):
    """Glance could not be reached, or answered with an error compute cannot pass on."""


@dataclass(frozen=True)
class Image:
    id: str
    name: str | None
    status: str
    size: int | None
    min_disk: int
    min_ram: int
    disk_format: str | None
    container_format: str | None
    checksum: str | None
    properties: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_glance(cls, body: dict) -> Image:
        return cls(id=body["id"], name=body.get("name"), status=body.get("status", ""),
                   size=body.get("size"), min_disk=int(body.get("min_disk") or 0),
                   min_ram=int(body.get("min_ram") or 0), disk_format=body.get("disk_format"),
                   container_format=body.get("container_format"),
                   checksum=body.get("checksum"),
                   properties={k: v for k, v in body.items() if k not in _BASE_KEYS})

    def as_record(self) -> dict:
        """What a server row keeps of its image (``Server.image``)."""
        return {"id": self.id, "name": self.name, "size": self.size,
                "min_disk": self.min_disk, "min_ram": self.min_ram,
                "disk_format": self.disk_format, "container_format": self.container_format,
                "checksum": self.checksum, "properties": dict(self.properties)}


class ImageClient(ApiClient):
    def __init__(self, base_url: str, *, timeout: float = 10.0):
        super().__init__(timeout=timeout)
        self.root = f"{base_url.rstrip('/')}/image"

    def image_url(self, image_id: str) -> str:
        return f"{self.root}/v2/images/{image_id}"

    def file_url(self, image_id: str) -> str:
        return f"{self.image_url(image_id)}/file"

    async def _request(self, method: str, url: str, token: str, **kwargs: Any) -> httpx.Response:
        headers = {"X-Auth-Token": token, **kwargs.pop("headers", {})}
        try:
            return await self.http.request(method, url, headers=headers, **kwargs)
        except httpx.HTTPError as exc:
            log.warning("image service at %s: %s", self.root, exc)
            raise ImageServiceError(f"The image service is not available: {exc}") from None

    async def get(self, image_id: str, token: str) -> Image:
        """The image ``image_id`` as the caller sees it; ImageNotFound if it may not."""
        response = await self._request("GET", self.image_url(image_id), token)
        if response.status_code in (403, 404):
            raise ImageNotFound(image_id)
        if response.status_code != 200:
            raise ImageServiceError(
                f"The image service answered {response.status_code} for image {image_id}.")
        return Image.from_glance(response.json())

    async def create(self, token: str, **fields: Any) -> dict:
        """Register a new (queued) image, e.g. a snapshot; Glance's JSON for it."""
        response = await self._request("POST", f"{self.root}/v2/images", token, json=fields)
        if response.status_code != 201:
            raise ImageServiceError(
                f"The image service refused the snapshot image ({response.status_code}): "
                f"{response.text[:200]}")
        return response.json()

    async def delete(self, image_id: str, token: str) -> None:
        """Delete an image; no error if it is already gone."""
        response = await self._request("DELETE", self.image_url(image_id), token)
        if response.status_code not in (204, 404):
            log.warning("could not delete image %s: %s", image_id, response.status_code)
