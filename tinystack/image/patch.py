"""Request bodies that change images: the create body and the JSON-patch document.

``parse_create`` splits a ``POST /v2/images`` body into base properties,
custom properties and tags after Glance's checks (read-only and reserved
names are 403, a schema violation 400). ``parse_patch`` reads a ``PATCH``
body in either of Glance's media types,
``application/openstack-images-v2.1-json-patch`` (RFC 6902 style, ``op`` and
``path``) or the deprecated ``-v2.0-`` one (draft 4 style, ``{"replace":
"/name"}``), into ``service.Change`` objects; any other media type is 415
with ``Accept-Patch``. Nothing here touches the database.
"""

from __future__ import annotations

import re
from typing import Any

from tinystack.common.errors import BadRequest, Forbidden
from tinystack.image.errors import UnsupportedMediaType
from tinystack.image.schemas import check_image
from tinystack.image.service import Change

__all__ = ["parse_create", "parse_patch", "PATCH_MEDIA_TYPES", "RESERVED_PREFIX"]

PATCH_MEDIA_TYPES = {
    "application/openstack-images-v2.0-json-patch": 4,
    "application/openstack-images-v2.1-json-patch": 10,
}
RESERVED_PREFIX = "os_glance"
OPERATIONS = ("add", "remove", "replace")

DISALLOWED = ("direct_url", "self", "file", "schema", "stores")
READONLY = ("created_at", "updated_at", "status", "checksum", "size", "virtual_size",
            "direct_url", "self", "file", "schema", "id", "os_hash_algo", "os_hash_value",
            "stores")
RESERVED = ("location", "deleted", "deleted_at")
BASE = ("checksum", "created_at", "container_format", "disk_format", "id", "min_disk",
        "min_ram", "name", "size", "virtual_size", "status", "tags", "owner", "updated_at",
        "visibility", "protected", "os_hidden")
CREATE_READONLY = ("created_at", "updated_at", "status", "checksum", "size", "virtual_size",
                   "os_hash_algo", "os_hash_value")
PATH_DEPTH = {"locations": {"add": 2, "remove": 2, "replace": 1}}


def _reserved(name: str) -> bool:
    return name in RESERVED or name.startswith(RESERVED_PREFIX)


def parse_create(body: Any) -> tuple[dict, dict[str, str], list[str]]:
    """(base properties, custom properties, tags) of a create body."""
    if not isinstance(body, dict):
        raise BadRequest("Provided object does not match schema 'image': "
                         f"{body!r} is not of type 'object'")
    for key in DISALLOWED:
        if key in body:
            raise Forbidden(f"Attribute '{key}' is read-only.")
    check_image(body)
    properties = dict(body)
    tags = properties.pop("tags", [])
    for key in CREATE_READONLY:
        if key in properties:
            raise Forbidden(f"Attribute '{key}' is read-only.")
    base = {key: properties.pop(key) for key in BASE if key in properties}
    if "locations" in properties:
        raise Forbidden("Attribute 'locations' is reserved.")
    for key in properties:
        if len(key) > 255:
            raise BadRequest("Custom property should not be greater than 255 characters.")
        if _reserved(key):
            raise Forbidden(f"Attribute '{key}' is reserved.")
    extra = {k: v for k, v in properties.items() if v is not None}
    return base, extra, tags


def _decode_pointer(pointer: Any) -> tuple[str, ...]:
    if not isinstance(pointer, str) or not pointer.startswith("/"):
        raise BadRequest(f'Pointer `{pointer}` does not start with "/".')
    if re.search(r"/\s*?/", pointer[1:]):
        raise BadRequest(f'Pointer `{pointer}` contains adjacent "/".')
    if len(pointer) > 1 and pointer.endswith("/"):
        raise BadRequest(f'Pointer `{pointer}` end with "/".')
    if pointer[1:].strip() == "/":
        raise BadRequest(f"Pointer `{pointer}` does not contains valid token.")
    if re.search("~[^01]", pointer) or pointer.endswith("~"):
        raise BadRequest(f'Pointer `{pointer}` contains "~" not part of a recognized escape '
                         "sequence.")
    return tuple(part.replace("~1", "/").replace("~0", "~").strip()
                 for part in pointer.lstrip("/").split("/"))


def _operation(raw: dict, draft: int) -> tuple[str, Any]:
    if draft == 10:
        op = raw.get("op")
        if op is None:
            raise BadRequest("Unable to find `op` in JSON Schema change. It must be one of the "
                             f"following: {', '.join(OPERATIONS)}.")
        if op not in OPERATIONS:
            raise BadRequest(f"Invalid operation: `{op}`. It must be one of the following: "
                             f"{', '.join(OPERATIONS)}.")
        if "path" not in raw:
            raise BadRequest("Unable to find 'path' in JSON Schema change")
        return op, raw["path"]
    found = [key for key in OPERATIONS if key in raw]
    if len(found) > 1:
        raise BadRequest('Operation objects must contain only one member named "add", '
                         '"remove", or "replace".')
    if not found:
        raise BadRequest('Operation objects must contain exactly one member named "add", '
                         '"remove", or "replace".')
    return found[0], raw[found[0]]


def _check_change(change: Change) -> None:
    root = change.path[0]
    if root in READONLY:
        raise Forbidden(f"Attribute '{root}' is read-only.")
    if _reserved(root):
        raise Forbidden(f"Attribute '{root}' is reserved.")
    if len(root) > 255:
        raise BadRequest("Custom property should not be greater than 255 characters.")
    if change.op != "remove" and len(change.path) == 1 and root != "locations":
        check_image({root: change.value})


def parse_patch(content_type: str | None, body: Any) -> list[Change]:
    media_type = (content_type or "").split(";")[0].strip().lower()
    draft = PATCH_MEDIA_TYPES.get(media_type)
    if draft is None:
        raise UnsupportedMediaType(
            f"The media type {media_type or '(none)'} is not supported; use "
            "application/openstack-images-v2.1-json-patch.",
            headers={"Accept-Patch": ", ".join(sorted(PATCH_MEDIA_TYPES))})
    if not isinstance(body, list):
        raise BadRequest("Request body must be a JSON array of operation objects.")
    changes = []
    for raw in body:
        if not isinstance(raw, dict):
            raise BadRequest("Operations must be JSON objects.")
        op, pointer = _operation(raw, draft)
        path = _decode_pointer(pointer)
        depth = PATH_DEPTH.get(path[0], {}).get(op, 1)
        if len(path) != depth:
            raise BadRequest(f"Invalid JSON pointer for this resource: '/{'/'.join(path)}'")
        if op != "remove" and "value" not in raw:
            raise BadRequest(f'Operation "{op}" requires a member named "value".')
        change = Change(op=op, path=path, value=raw.get("value"))
        _check_change(change)
        changes.append(change)
    return changes
