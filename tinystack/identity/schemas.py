"""Request bodies of the identity API, validated at the edge.

Unknown attributes are kept (Keystone stores them as extras and returns
them); wrong types and missing required fields become a 400 naming the
field, via ``common.http.read_json``. Strings stored in a column of bounded
width are bounded here too, and an update may not set to ``null`` what the
database cannot hold as null (a ``null`` description becomes empty).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StringConstraints, model_validator

__all__ = [
    "DomainBody", "DomainPatch", "ProjectBody", "ProjectPatch", "UserBody", "UserPatch",
    "PasswordChangeBody", "GroupBody", "GroupPatch", "RoleBody", "RolePatch", "RegionBody",
    "RegionPatch", "ServiceBody", "ServicePatch", "EndpointBody", "EndpointPatch",
    "CredentialBody", "CredentialPatch", "Ec2Body", "AppCredBody",
]

Name = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=255,
                                        strip_whitespace=False)]
Text = Annotated[str | None, Field(default=None)]
Id = Annotated[str, StringConstraints(max_length=64)]
"""A reference to a row by id (ids are at most 64 characters)."""
Label = Annotated[str, StringConstraints(max_length=255)]
"""A free string kept in a 255-character column (a region id, a service name)."""


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class _Patch(BaseModel):
    """An update: absent fields stay; ``NOT_NULL`` ones may not be set to null."""

    NOT_NULL: ClassVar[tuple[str, ...]] = ()
    EMPTY_IF_NULL: ClassVar[tuple[str, ...]] = ("description",)

    @model_validator(mode="after")
    def _nulls(self):
        for name in self.NOT_NULL:
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"'{name}' may not be null")
        for name in self.EMPTY_IF_NULL:
            if name in self.model_fields_set and getattr(self, name, "") is None:
                setattr(self, name, "")
        return self


class _OpenPatch(_Patch):
    model_config = ConfigDict(extra="allow")


class Domain(_Open):
    name: Name
    description: str | None = ""
    enabled: StrictBool = True


class DomainPatchFields(_OpenPatch):
    NOT_NULL = ("name", "enabled")
    name: Name | None = None
    description: str | None = None
    enabled: StrictBool | None = None


class DomainBody(BaseModel):
    domain: Domain


class DomainPatch(BaseModel):
    domain: DomainPatchFields


class Project(_Open):
    name: Name
    domain_id: str | None = None
    parent_id: str | None = None
    description: str | None = ""
    enabled: StrictBool = True
    is_domain: StrictBool = False
    tags: list[str] = []


class ProjectPatchFields(_OpenPatch):
    NOT_NULL = ("name", "enabled", "tags")
    name: Name | None = None
    description: str | None = None
    enabled: StrictBool | None = None
    tags: list[str] | None = None


class ProjectBody(BaseModel):
    project: Project


class ProjectPatch(BaseModel):
    project: ProjectPatchFields


class User(_Open):
    name: Name
    domain_id: str | None = None
    password: str | None = None
    enabled: StrictBool = True
    default_project_id: Id | None = None
    options: dict[str, Any] = {}


class UserPatchFields(_OpenPatch):
    NOT_NULL = ("name", "enabled")
    name: Name | None = None
    password: str | None = None
    enabled: StrictBool | None = None
    default_project_id: Id | None = None
    options: dict[str, Any] | None = None


class UserBody(BaseModel):
    user: User


class UserPatch(BaseModel):
    user: UserPatchFields


class PasswordChange(BaseModel):
    original_password: str
    password: Annotated[str, StringConstraints(min_length=1)]


class PasswordChangeBody(BaseModel):
    user: PasswordChange


class Group(BaseModel):
    name: Name
    domain_id: str | None = None
    description: str | None = ""


class GroupPatchFields(_Patch):
    NOT_NULL = ("name",)
    name: Name | None = None
    description: str | None = None
    domain_id: str | None = None


class GroupBody(BaseModel):
    group: Group


class GroupPatch(BaseModel):
    group: GroupPatchFields


class Role(BaseModel):
    name: Name
    domain_id: str | None = None
    description: str | None = ""
    options: dict[str, Any] = {}


class RolePatchFields(_Patch):
    NOT_NULL = ("name", "options")
    name: Name | None = None
    description: str | None = None
    options: dict[str, Any] | None = None


class RoleBody(BaseModel):
    role: Role


class RolePatch(BaseModel):
    role: RolePatchFields


class Region(_Open):
    id: Label | None = None
    description: str | None = ""
    parent_region_id: str | None = None


class RegionBody(BaseModel):
    region: Region


class RegionPatchFields(_OpenPatch):
    description: str | None = None
    parent_region_id: str | None = None


class RegionPatch(BaseModel):
    region: RegionPatchFields


class Service(_Open):
    type: Name
    name: Label | None = ""
    description: str | None = ""
    enabled: StrictBool = True


class ServicePatchFields(_OpenPatch):
    NOT_NULL = ("type", "enabled")
    EMPTY_IF_NULL = ("description", "name")
    type: Name | None = None
    name: Label | None = None
    description: str | None = None
    enabled: StrictBool | None = None


class ServiceBody(BaseModel):
    service: Service


class ServicePatch(BaseModel):
    service: ServicePatchFields


class Endpoint(_Open):
    service_id: str
    interface: str
    url: Annotated[str, StringConstraints(min_length=1)]
    region_id: Label | None = None
    region: Label | None = None
    enabled: StrictBool = True


class EndpointPatchFields(_OpenPatch):
    NOT_NULL = ("service_id", "interface", "url", "enabled")
    service_id: str | None = None
    interface: str | None = None
    url: Annotated[str, StringConstraints(min_length=1)] | None = None
    region_id: Label | None = None
    enabled: StrictBool | None = None


class EndpointBody(BaseModel):
    endpoint: Endpoint


class EndpointPatch(BaseModel):
    endpoint: EndpointPatchFields


class Credential(_Open):
    user_id: Id
    type: Name
    blob: str
    project_id: Id | None = None


class CredentialPatchFields(_Patch):
    NOT_NULL = ("user_id", "type", "blob")
    user_id: Id | None = None
    type: Name | None = None
    blob: str | None = None
    project_id: Id | None = None


class CredentialBody(BaseModel):
    credential: Credential


class CredentialPatch(BaseModel):
    credential: CredentialPatchFields


class Ec2Body(_Open):
    tenant_id: str


class RoleRef(BaseModel):
    id: str | None = None
    name: str | None = None


class AppCred(BaseModel):
    name: Name
    secret: str | None = None
    description: str | None = ""
    expires_at: dt.datetime | None = None
    roles: list[RoleRef] = []
    unrestricted: StrictBool = False
    access_rules: list[dict] = []


class AppCredBody(BaseModel):
    application_credential: AppCred
