"""Request bodies of the compute API, validated at the edge.

Types and ranges are checked here (a wrong one is a 400 naming the field,
via ``common.http.read_json``); which fields a microversion admits is
checked by the handlers (``gate``), since Nova's schema changes with the
version: ``description`` from 2.19, ``tags`` from 2.52, ``hostname`` from
2.90, no ``personality`` from 2.57...
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
)

from tinystack.common.errors import BadRequest

__all__ = [
    "ServerCreateBody", "ServerUpdateBody", "RebuildBody", "FlavorCreateBody",
    "FlavorUpdateBody", "KeyPairBody", "ServerGroupBody", "QuotaSetBody", "QuotaClassBody",
    "ServiceUpdateBody", "ServiceActionBody", "MetadataBody", "MetaItemBody", "TagsBody",
    "ExtraSpecsBody", "RemoteConsoleBody", "gate", "refuse_unknown", "check_hostname",
    "Name", "Count",
]

Name = Annotated[str, StringConstraints(min_length=1, max_length=255)]
Short = Annotated[str, StringConstraints(max_length=255)]


def _int(value: Any) -> Any:
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return value


Count = Annotated[int, BeforeValidator(_int), Field(ge=1)]
NonNegative = Annotated[int, BeforeValidator(_int), Field(ge=0)]
Positive = Annotated[int, BeforeValidator(_int), Field(ge=1)]


def _bool_text(value: Any) -> Any:
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("true", "1", "yes", "on", "t", "y"):
            return True
        if lowered in ("false", "0", "no", "off", "f", "n", ""):
            return False
    return value


Flag = Annotated[bool, BeforeValidator(_bool_text)]


class _Open(BaseModel):
    """A body part that keeps unknown keys, so ``gate`` can name them."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)


_LABEL = re.compile(r"^[a-zA-Z0-9_]([a-zA-Z0-9_-]{0,61}[a-zA-Z0-9_])?$")


def check_hostname(hostname: str | None, *, fqdn: bool) -> None:
    """Nova's hostname rules: one label before 2.94, a dotted name up to 255 from 2.94."""
    if hostname is None:
        return
    labels = hostname.split(".") if fqdn else [hostname]
    if len(hostname) > 255 or not all(_LABEL.match(label) for label in labels):
        raise BadRequest(f"Invalid input for field/attribute hostname. Value: {hostname}. "
                         f"'{hostname}' is not a valid hostname")


def gate(part: BaseModel, name: str, present: bool) -> None:
    """400 as Nova's schema gives for a field the request's microversion does not have."""
    if not present and name in (part.model_fields_set | set(part.model_extra or {})):
        raise BadRequest(f"Invalid input for field/attribute {name}. Additional properties "
                         f"are not allowed ('{name}' was unexpected)")


def refuse_unknown(part: BaseModel, where: str) -> None:
    extra = sorted(part.model_extra or {})
    if extra:
        raise BadRequest(f"Invalid input for field/attribute {where}. Additional properties "
                         f"are not allowed ('{extra[0]}' was unexpected)")


# -- servers ------------------------------------------------------------------------------


class SecurityGroupRef(BaseModel):
    name: Name


class ServerCreate(_Open):
    name: Name
    flavorRef: Annotated[str, BeforeValidator(lambda v: str(v) if isinstance(v, int) else v)]
    imageRef: str = ""
    networks: Literal["auto", "none"] | list[dict] | None = None
    key_name: Name | None = None
    user_data: str | None = None
    metadata: dict[Short, Short] = {}
    security_groups: list[SecurityGroupRef] = []
    availability_zone: Name | None = None
    min_count: Count = 1
    max_count: Count | None = None
    return_reservation_id: Flag = False
    block_device_mapping_v2: list[dict] = []
    config_drive: Flag = False
    description: Short | None = None
    tags: list[Annotated[str, StringConstraints(min_length=1, max_length=60)]] = []
    hostname: Annotated[str, StringConstraints(min_length=1, max_length=255)] | None = None
    host: Name | None = None
    hypervisor_hostname: Name | None = None
    adminPass: str | None = None
    accessIPv4: str | None = None
    accessIPv6: str | None = None
    disk_config: Literal["AUTO", "MANUAL"] = Field("MANUAL", alias="OS-DCF:diskConfig")
    personality: list[dict] | None = None
    trusted_image_certificates: list[str] | None = None


class ServerCreateBody(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)
    server: ServerCreate
    scheduler_hints: dict = Field(default_factory=dict, alias="os:scheduler_hints")
    scheduler_hints_legacy: dict = Field(default_factory=dict,
                                         alias="OS-SCH-HNT:scheduler_hints")


class ServerUpdate(_Open):
    name: Name | None = None
    description: Short | None = None
    hostname: Annotated[str, StringConstraints(min_length=1, max_length=255)] | None = None
    accessIPv4: str | None = None
    accessIPv6: str | None = None
    disk_config: Literal["AUTO", "MANUAL"] | None = Field(None, alias="OS-DCF:diskConfig")


class ServerUpdateBody(BaseModel):
    server: ServerUpdate


class Rebuild(_Open):
    imageRef: str
    name: Name | None = None
    metadata: dict[Short, Short] | None = None
    adminPass: str | None = None
    key_name: Name | None = None
    user_data: str | None = None
    description: Short | None = None
    hostname: Annotated[str, StringConstraints(min_length=1, max_length=255)] | None = None
    preserve_ephemeral: StrictBool = False
    personality: list[dict] | None = None
    trusted_image_certificates: list[str] | None = None
    accessIPv4: str | None = None
    accessIPv6: str | None = None
    disk_config: Literal["AUTO", "MANUAL"] | None = Field(None, alias="OS-DCF:diskConfig")


class RebuildBody(BaseModel):
    rebuild: Rebuild


class MetadataBody(BaseModel):
    metadata: dict[Annotated[str, StringConstraints(min_length=1, max_length=255)], Short]


class MetaItemBody(BaseModel):
    meta: dict[Annotated[str, StringConstraints(min_length=1, max_length=255)], Short]


class TagsBody(BaseModel):
    tags: list[Annotated[str, StringConstraints(min_length=1, max_length=60)]]


class RemoteConsole(BaseModel):
    protocol: Literal["vnc", "spice", "rdp", "serial", "mks"]
    type: Literal["novnc", "xvpvnc", "rdp-html5", "spice-html5", "spice-direct", "serial",
                  "webmks"]


class RemoteConsoleBody(BaseModel):
    remote_console: RemoteConsole


# -- flavors ------------------------------------------------------------------------------


def _no_edge_spaces(value: str) -> str:
    if value != value.strip(" "):
        raise ValueError("must not begin or end with a space")
    return value


class FlavorCreate(_Open):
    name: Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=r"^[\w. -]+$"),
                    AfterValidator(_no_edge_spaces)]
    id: Annotated[str, StringConstraints(min_length=1, max_length=255,
                                         pattern=r"^[a-zA-Z0-9. _-]+$"),
                  AfterValidator(_no_edge_spaces)] | None = None
    ram: Positive
    vcpus: Positive
    disk: NonNegative
    ephemeral: NonNegative = Field(0, alias="OS-FLV-EXT-DATA:ephemeral")
    swap: NonNegative = 0
    rxtx_factor: float = Field(1.0, gt=0, le=3.40282e38)
    is_public: Flag = Field(True, alias="os-flavor-access:is_public")
    description: Annotated[str, StringConstraints(max_length=65535)] | None = None


class FlavorCreateBody(BaseModel):
    flavor: FlavorCreate


class FlavorUpdate(BaseModel):
    description: Annotated[str, StringConstraints(max_length=65535)] | None


class FlavorUpdateBody(BaseModel):
    flavor: FlavorUpdate


class ExtraSpecsBody(BaseModel):
    extra_specs: dict[str, Annotated[str, BeforeValidator(
        lambda v: str(v) if isinstance(v, (int, float, bool)) else v)]]


# -- key pairs, groups, quotas, services -----------------------------------------------------


class KeyPair(_Open):
    name: Annotated[str, StringConstraints(min_length=1, max_length=255)]
    public_key: str | None = None
    type: Literal["ssh", "x509"] = "ssh"
    user_id: str | None = None


class KeyPairBody(BaseModel):
    keypair: KeyPair


class ServerGroup(_Open):
    name: Annotated[str, StringConstraints(min_length=1, max_length=255)]
    policies: list[str] | None = None
    policy: str | None = None
    rules: dict = {}


class ServerGroupBody(BaseModel):
    server_group: ServerGroup


class QuotaSetBody(BaseModel):
    quota_set: dict[str, Any]


class QuotaClassBody(BaseModel):
    quota_class_set: dict[str, Any]


class ServiceUpdateBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: Literal["enabled", "disabled"] | None = None
    disabled_reason: Annotated[str, StringConstraints(min_length=1, max_length=255)] | None = None
    forced_down: StrictBool | None = None


class ServiceActionBody(BaseModel):
    host: Name
    binary: Name
    disabled_reason: Annotated[str, StringConstraints(min_length=1, max_length=255)] | None = None
    forced_down: StrictBool | None = None
