"""The JSON schemas Glance serves at ``/v2/schemas/*``, and a validator for request bodies.

``IMAGE_SCHEMA``, ``IMAGES_SCHEMA``, ``MEMBER_SCHEMA`` and ``MEMBERS_SCHEMA`` are
the documents Glance's API serves (glanceclient builds its models and its
``--property`` checks from them), with the custom properties Glance ships in
``schema-image.json`` (``kernel_id``, ``os_distro``...) marked ``is_base:
false``. ``check_image`` validates a create body or one patched property
against the image schema, the subset of JSON Schema these documents use
(type, enum, maxLength, pattern, items, additionalProperties), and raises
``BadRequest`` with Glance's "Provided object does not match schema" text.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from tinystack.common.errors import BadRequest
from tinystack.image.formats import CONTAINER_FORMATS, DISK_FORMATS

__all__ = [
    "IMAGE_SCHEMA",
    "IMAGES_SCHEMA",
    "MEMBER_SCHEMA",
    "MEMBERS_SCHEMA",
    "BASE_PROPERTIES",
    "check_image",
]

UUID_PATTERN = ("^([0-9a-fA-F]){8}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}"
                "-([0-9a-fA-F]){4}-([0-9a-fA-F]){12}$")
STATUSES = ["queued", "saving", "active", "killed", "deleted", "uploading", "importing",
            "pending_delete", "deactivated"]
VISIBILITIES = ["community", "public", "private", "shared"]


def _readonly(kind: Any, description: str, **more: Any) -> dict:
    return {"type": kind, "readOnly": True, "description": description, **more}


BASE_PROPERTIES: dict[str, dict] = {
    "id": {"type": "string", "description": "An identifier for the image",
           "pattern": UUID_PATTERN},
    "name": {"type": ["null", "string"], "description": "Descriptive name for the image",
             "maxLength": 255},
    "status": _readonly("string", "Status of the image", enum=STATUSES),
    "visibility": {"type": "string", "description": "Scope of image accessibility",
                   "enum": VISIBILITIES},
    "protected": {"type": "boolean", "description": "If true, image will not be deletable."},
    "os_hidden": {"type": "boolean",
                  "description": "If true, image will not appear in default image list "
                                 "response."},
    "checksum": _readonly(["null", "string"], "md5 hash of image contents.", maxLength=32),
    "os_hash_algo": _readonly(["null", "string"], "Algorithm to calculate the os_hash_value",
                              maxLength=64),
    "os_hash_value": _readonly(["null", "string"], "Hexdigest of the image contents using "
                               "the algorithm specified by the os_hash_algo", maxLength=128),
    "owner": {"type": ["null", "string"], "description": "Owner of the image",
              "maxLength": 255},
    "size": _readonly(["null", "integer"], "Size of image file in bytes"),
    "virtual_size": _readonly(["null", "integer"], "Virtual size of image in bytes"),
    "container_format": {"type": ["null", "string"], "description": "Format of the container",
                         "enum": [None, *CONTAINER_FORMATS]},
    "disk_format": {"type": ["null", "string"], "description": "Format of the disk",
                    "enum": [None, *DISK_FORMATS]},
    "created_at": _readonly("string", "Date and time of image registration"),
    "updated_at": _readonly("string", "Date and time of the last image modification"),
    "tags": {"type": "array", "description": "List of strings related to the image",
             "items": {"type": "string", "maxLength": 255}},
    "direct_url": _readonly("string", "URL to access the image file kept in external store"),
    "min_ram": {"type": "integer", "description": "Amount of ram (in MB) required to boot "
                                                  "image."},
    "min_disk": {"type": "integer", "description": "Amount of disk space (in GB) required to "
                                                   "boot image."},
    "self": _readonly("string", "An image self url"),
    "file": _readonly("string", "An image file url"),
    "stores": _readonly("string", "Store in which image data resides.  Only present when the "
                        "operator has enabled multiple stores.  May be a comma-separated list "
                        "of store identifiers."),
    "schema": _readonly("string", "An image schema url"),
    "locations": {
        "type": "array",
        "items": {"type": "object", "properties": {
            "url": {"type": "string", "maxLength": 255},
            "metadata": {"type": "object"}}, "required": ["url", "metadata"]},
        "description": "A set of URLs to access the image file kept in external store"},
}

_PROPERTY_KEYS = "https://docs.openstack.org/glance/latest/admin/useful-image-properties.html"
CUSTOM_PROPERTIES: dict[str, dict] = {
    "kernel_id": {"type": ["null", "string"], "pattern": UUID_PATTERN, "is_base": False,
                  "description": "ID of image stored in Glance that should be used as the "
                                 "kernel when booting an AMI-style image."},
    "ramdisk_id": {"type": ["null", "string"], "pattern": UUID_PATTERN, "is_base": False,
                   "description": "ID of image stored in Glance that should be used as the "
                                  "ramdisk when booting an AMI-style image."},
    "instance_uuid": {"type": "string", "is_base": False,
                      "description": "Metadata which can be used to record which instance "
                                     "this image is associated with. (Informational only, "
                                     "does not create an instance snapshot.)"},
    "architecture": {"type": "string", "is_base": False,
                     "description": "Operating system architecture as specified in "
                                    f"{_PROPERTY_KEYS}"},
    "os_distro": {"type": "string", "is_base": False,
                  "description": "Common name of operating system distribution as specified "
                                 f"in {_PROPERTY_KEYS}"},
    "os_version": {"type": "string", "is_base": False,
                   "description": "Operating system version as specified by the distributor"},
}

IMAGE_SCHEMA: dict = {
    "name": "image",
    "properties": {**BASE_PROPERTIES, **CUSTOM_PROPERTIES},
    "additionalProperties": {"type": "string"},
    "links": [{"rel": "self", "href": "{self}"}, {"rel": "enclosure", "href": "{file}"},
              {"rel": "describedby", "href": "{schema}"}],
}


def _collection(name: str, item: dict, paged: bool) -> dict:
    properties = {name: {"type": "array", "items": copy.deepcopy(item)},
                  "schema": {"type": "string"}}
    links = [{"rel": "describedby", "href": "{schema}"}]
    if paged:
        properties.update(first={"type": "string"}, next={"type": "string"})
        links = [{"rel": "first", "href": "{first}"}, {"rel": "next", "href": "{next}"}, *links]
    return {"name": name, "properties": properties, "links": links}


IMAGES_SCHEMA = _collection("images", IMAGE_SCHEMA, paged=True)

MEMBER_SCHEMA: dict = {
    "name": "member",
    "properties": {
        "member_id": {"type": "string",
                      "description": "An identifier for the image member (tenantId)"},
        "image_id": {"type": "string", "description": "An identifier for the image",
                     "pattern": UUID_PATTERN},
        "created_at": {"type": "string", "description": "Date and time of image member "
                                                        "creation"},
        "updated_at": {"type": "string", "description": "Date and time of last modification "
                                                        "of image member"},
        "status": {"type": "string", "description": "The status of this image member",
                   "enum": ["pending", "accepted", "rejected"]},
        "schema": {"type": "string", "readOnly": True},
    },
    "additionalProperties": False,
}

MEMBERS_SCHEMA = _collection("members", MEMBER_SCHEMA, paged=False)

_JSON_TYPES = {
    "null": lambda v: v is None,
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
}


def _problem(spec: dict, value: Any) -> str | None:
    """Why ``value`` fails ``spec`` (jsonschema's wording), or None."""
    kinds = spec.get("type")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else kinds
        if not any(_JSON_TYPES[k](value) for k in kinds):
            shown = repr(kinds[0]) if len(kinds) == 1 else repr(kinds)
            return f"{value!r} is not of type {shown}"
    if "enum" in spec and value not in spec["enum"]:
        return f"{value!r} is not one of {spec['enum']!r}"
    if isinstance(value, str):
        if "maxLength" in spec and len(value) > spec["maxLength"]:
            return f"{value!r} is too long"
        if "pattern" in spec and not re.search(spec["pattern"], value):
            return f"{value!r} does not match {spec['pattern']!r}"
    if isinstance(value, list) and "items" in spec:
        for item in value:
            problem = _problem(spec["items"], item)
            if problem:
                return problem
    if isinstance(value, dict) and "properties" in spec:
        for key in spec.get("required", ()):
            if key not in value:
                return f"{key!r} is a required property"
        for key, item in value.items():
            if key in spec["properties"]:
                problem = _problem(spec["properties"][key], item)
                if problem:
                    return problem
    return None


def check_image(values: dict) -> None:
    """Validate image properties against the image schema; ``BadRequest`` if one fails."""
    properties = IMAGE_SCHEMA["properties"]
    for key, value in values.items():
        problem = _problem(properties.get(key, IMAGE_SCHEMA["additionalProperties"]), value)
        if problem:
            raise BadRequest(f"Provided object does not match schema 'image': {problem}")
