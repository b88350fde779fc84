"""Images and members as Glance's JSON shows them.

An image is its custom properties, then every base property (``null`` when
unset), then ``tags``, ``self``, ``file``, ``schema`` and, once it has data,
``stores``: the order and the relative links of Glance's serializer.
Timestamps are ISO 8601 to the second with a ``Z``.
"""

from __future__ import annotations

import datetime as dt

from tinystack.image.models import Image, ImageMember

__all__ = ["image_view", "member_view", "isotime", "BASE_ATTRIBUTES"]

BASE_ATTRIBUTES = ("name", "disk_format", "container_format", "visibility", "size",
                   "virtual_size", "status", "checksum", "protected", "min_ram", "min_disk",
                   "owner", "os_hidden", "os_hash_algo", "os_hash_value")
HIDDEN_PROPERTIES = frozenset({"os_glance_stage_host"})


def isotime(value: dt.datetime | None) -> str | None:
    return None if value is None else value.strftime("%Y-%m-%dT%H:%M:%SZ")


def image_view(image: Image, store_ids: dict[str, str] | None = None) -> dict:
    """``store_ids`` maps a location prefix to its store id, for the ``stores`` field."""
    view: dict = {k: v for k, v in image.extra.items() if k not in HIDDEN_PROPERTIES}
    for key in BASE_ATTRIBUTES:
        view[key] = getattr(image, key)
    view["id"] = image.id
    view["created_at"] = isotime(image.created_at)
    view["updated_at"] = isotime(image.updated_at)
    view["tags"] = image.tag_values
    view["self"] = f"/v2/images/{image.id}"
    view["file"] = f"/v2/images/{image.id}/file"
    view["schema"] = "/v2/schemas/image"
    if image.location and store_ids:
        for prefix, store_id in store_ids.items():
            if image.location.startswith(prefix):
                view["stores"] = store_id
                break
    return view


def member_view(member: ImageMember) -> dict:
    return {"member_id": member.member, "image_id": member.image_id, "status": member.status,
            "created_at": isotime(member.created_at), "updated_at": isotime(member.updated_at),
            "schema": "/v2/schemas/member"}
