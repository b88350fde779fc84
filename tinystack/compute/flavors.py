"""Flavors: sizes a server may have, their extra specs and who may use a private one.

Every method is synchronous and opens its own transaction (the API runs them
in worker threads) and returns detached rows or plain data. A flavor is
found by its ``flavorid`` (the API's ``id``); a private flavor is visible to
admins and to the projects in its access list, to no one else (404, as
Nova). ``for_server`` copies a flavor into what a server row keeps, so a
later change to the flavor never changes a running server. ``DEFAULTS`` are
DevStack's flavors, made on the first start.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tinystack.common.db import Database, utcnow
from tinystack.common.errors import BadRequest, Conflict, NotFound
from tinystack.compute import extra_specs as spec_rules
from tinystack.compute.models import Flavor, FlavorExtraSpec, FlavorProject

__all__ = ["Flavors", "FlavorView", "DEFAULTS", "SORT_KEYS"]

DEFAULTS = (
    # flavorid, name, memory_mb, vcpus, root_gb, extra specs
    ("42", "m1.nano", 192, 1, 1, {"hw_rng:allowed": "True"}),
    ("84", "m1.micro", 256, 1, 1, {"hw_rng:allowed": "True"}),
    ("1", "m1.tiny", 512, 1, 1, {}),
    ("2", "m1.small", 2048, 1, 20, {}),
    ("3", "m1.medium", 4096, 2, 40, {}),
    ("4", "m1.large", 8192, 4, 80, {}),
    ("5", "m1.xlarge", 16384, 8, 160, {}),
)
"""DevStack's flavors: m1.nano and m1.micro as lib/tempest makes them (RAM raised for
CirrOS 0.6), m1.tiny to m1.xlarge as Nova's historic defaults that lib/nova creates."""

SORT_KEYS = {"created_at", "description", "disabled", "ephemeral_gb", "flavorid", "id",
             "is_public", "memory_mb", "name", "root_gb", "rxtx_factor", "swap",
             "updated_at", "vcpus"}


@dataclass
class FlavorView:
    """A flavor with its extra specs, detached from the session."""

    flavor: Flavor
    extra_specs: dict[str, str]


class Flavors:
    def __init__(self, db: Database):
        self.db = db

    # -- reading ------------------------------------------------------------------------

    @staticmethod
    def _visible(s: Session, flavor: Flavor, project_id: str | None, is_admin: bool) -> bool:
        if flavor.is_public or is_admin:
            return True
        return project_id is not None and s.get(FlavorProject, (flavor.id, project_id)) is not None

    def _find(self, s: Session, flavorid: str, project_id: str | None = None,
              is_admin: bool = True) -> Flavor:
        flavor = s.scalar(sa.select(Flavor).where(Flavor.flavorid == flavorid))
        if flavor is None or not self._visible(s, flavor, project_id, is_admin):
            raise NotFound(f"Flavor {flavorid} could not be found.")
        return flavor

    @staticmethod
    def _specs(s: Session, flavor_pk: int) -> dict[str, str]:
        return dict(s.execute(sa.select(FlavorExtraSpec.key, FlavorExtraSpec.value)
                              .where(FlavorExtraSpec.flavor_id == flavor_pk)).all())

    def get(self, flavorid: str, project_id: str | None, is_admin: bool) -> FlavorView:
        with self.db.session() as s:
            flavor = self._find(s, flavorid, project_id, is_admin)
            return FlavorView(flavor, self._specs(s, flavor.id))

    def list(self, project_id: str | None, is_admin: bool, *, is_public: bool | None = True,
             min_disk: int | None = None, min_ram: int | None = None,
             sort_key: str = "flavorid", sort_dir: str = "asc", limit: int | None = None,
             marker: str | None = None) -> list[FlavorView]:
        if sort_key not in SORT_KEYS:
            raise BadRequest(f"Invalid input received: Invalid sort_key '{sort_key}'")
        with self.db.session() as s:
            query = sa.select(Flavor)
            if not is_admin:
                query = query.where(Flavor.disabled.is_(False))
            if is_public is not None:
                access = sa.select(FlavorProject.flavor_id).where(
                    FlavorProject.project_id == (project_id or ""))
                if is_public:
                    query = query.where(sa.or_(Flavor.is_public.is_(True),
                                               Flavor.id.in_(access)))
                else:
                    query = query.where(Flavor.is_public.is_(False))
                    if not is_admin:
                        query = query.where(Flavor.id.in_(access))
            if min_disk is not None:
                query = query.where(Flavor.root_gb >= min_disk)
            if min_ram is not None:
                query = query.where(Flavor.memory_mb >= min_ram)
            column = getattr(Flavor, "id" if sort_key == "id" else sort_key)
            order = column.desc() if sort_dir == "desc" else column.asc()
            flavors = list(s.scalars(query.order_by(order, Flavor.id.asc())))
            if marker is not None:
                ids = [f.flavorid for f in flavors]
                if marker not in ids:
                    raise BadRequest(f"marker [{marker}] not found")
                flavors = flavors[ids.index(marker) + 1:]
            if limit is not None:
                flavors = flavors[:limit]
            specs: dict[int, dict[str, str]] = {}
            if flavors:
                for pk, key, value in s.execute(
                        sa.select(FlavorExtraSpec.flavor_id, FlavorExtraSpec.key,
                                  FlavorExtraSpec.value)
                        .where(FlavorExtraSpec.flavor_id.in_([f.id for f in flavors]))):
                    specs.setdefault(pk, {})[key] = value
            return [FlavorView(f, specs.get(f.id, {})) for f in flavors]

    def for_server(self, caller, flavor_ref: str) -> dict:
        """The copy of a flavor a new server keeps; 400 when the caller may not use it."""
        flavorid = flavor_ref.rstrip("/").rsplit("/", 1)[-1]
        with self.db.session() as s:
            try:
                flavor = self._find(s, flavorid, caller.project_id, caller.is_admin)
            except NotFound:
                raise BadRequest(f"Flavor {flavorid} could not be found.") from None
            if flavor.disabled:
                raise BadRequest(f"Flavor {flavorid} could not be found.")
            return self.record(flavor, self._specs(s, flavor.id))

    @staticmethod
    def record(flavor: Flavor, extra_specs: dict[str, str]) -> dict:
        return {"flavorid": flavor.flavorid, "name": flavor.name,
                "memory_mb": flavor.memory_mb, "vcpus": flavor.vcpus,
                "root_gb": flavor.root_gb, "ephemeral_gb": flavor.ephemeral_gb,
                "swap": flavor.swap, "rxtx_factor": flavor.rxtx_factor,
                "extra_specs": dict(extra_specs)}

    # -- writing ------------------------------------------------------------------------

    def create(self, *, name: str, memory_mb: int, vcpus: int, root_gb: int,
               flavorid: str | None = None, ephemeral_gb: int = 0, swap: int = 0,
               rxtx_factor: float = 1.0, is_public: bool = True,
               description: str | None = None, extra_specs: dict | None = None) -> FlavorView:
        if not name.strip():
            raise BadRequest("Invalid input for field/attribute name. Value: . "
                             "'' does not match '^(?! )[a-zA-Z0-9. _-]+(?<! )$'")
        flavorid = flavorid if flavorid not in (None, "", "auto") else str(uuid.uuid4())
        with self.db.session() as s:
            if s.scalar(sa.select(Flavor.id).where(Flavor.name == name)) is not None:
                raise Conflict(f"Flavor with name {name} already exists.")
            if s.scalar(sa.select(Flavor.id).where(Flavor.flavorid == flavorid)) is not None:
                raise Conflict(f"Flavor with ID {flavorid} already exists.")
            flavor = Flavor(flavorid=flavorid, name=name, memory_mb=memory_mb, vcpus=vcpus,
                            root_gb=root_gb, ephemeral_gb=ephemeral_gb, swap=swap,
                            rxtx_factor=rxtx_factor, is_public=is_public,
                            description=description, created_at=utcnow())
            s.add(flavor)
            try:
                s.flush()
            except IntegrityError:
                raise Conflict(f"Flavor with ID {flavorid} already exists.") from None
            for key, value in (extra_specs or {}).items():
                s.add(FlavorExtraSpec(flavor_id=flavor.id, key=key, value=value))
            return FlavorView(flavor, dict(extra_specs or {}))

    def update_description(self, flavorid: str, description: str | None) -> FlavorView:
        with self.db.session() as s:
            flavor = self._find(s, flavorid)
            flavor.description = description
            flavor.updated_at = utcnow()
            return FlavorView(flavor, self._specs(s, flavor.id))

    def delete(self, flavorid: str) -> None:
        with self.db.session() as s:
            s.delete(self._find(s, flavorid))

    def ensure_defaults(self) -> None:
        """Create DevStack's flavors when there are none at all (first start)."""
        with self.db.session() as s:
            if s.scalar(sa.select(sa.func.count()).select_from(Flavor)):
                return
        for flavorid, name, ram, vcpus, disk, specs in DEFAULTS:
            try:
                self.create(name=name, memory_mb=ram, vcpus=vcpus, root_gb=disk,
                            flavorid=flavorid, extra_specs=specs)
            except Conflict:  # a racing start made it first
                continue

    # -- extra specs --------------------------------------------------------------------

    def extra_specs(self, flavorid: str, project_id: str | None, is_admin: bool) -> dict:
        return self.get(flavorid, project_id, is_admin).extra_specs

    def set_extra_specs(self, flavorid: str, specs: dict[str, str], *,
                        validate: bool) -> dict[str, str]:
        for key, value in specs.items():
            if not spec_rules.KEY_PATTERN.match(key):
                raise BadRequest(f"Invalid input for field/attribute extra_specs. Value: "
                                 f"{specs}. '{key}' does not match any of the regexes: "
                                 "'^[\\w.:\\- ]{1,255}$'")
            if len(value) > 255:
                raise BadRequest(f"Invalid input for field/attribute {key}. Value: {value}. "
                                 "is too long")
            if validate:
                spec_rules.validate(key, value)
        with self.db.session() as s:
            flavor = self._find(s, flavorid)
            for key, value in specs.items():
                row = s.get(FlavorExtraSpec, (flavor.id, key))
                if row is None:
                    s.add(FlavorExtraSpec(flavor_id=flavor.id, key=key, value=value))
                else:
                    row.value = value
        return specs

    def delete_extra_spec(self, flavorid: str, key: str) -> None:
        with self.db.session() as s:
            flavor = self._find(s, flavorid)
            row = s.get(FlavorExtraSpec, (flavor.id, key))
            if row is None:
                raise NotFound(f"Flavor {flavorid} has no extra specs with key {key}.")
            s.delete(row)

    # -- access -------------------------------------------------------------------------

    def access(self, flavorid: str) -> list[str]:
        with self.db.session() as s:
            flavor = self._find(s, flavorid)
            if flavor.is_public:
                raise NotFound("Access list not available for public flavors.")
            return list(s.scalars(sa.select(FlavorProject.project_id)
                                  .where(FlavorProject.flavor_id == flavor.id)
                                  .order_by(FlavorProject.project_id)))

    def add_access(self, flavorid: str, project_id: str, *, check_public: bool) -> list[str]:
        with self.db.session() as s:
            flavor = self._find(s, flavorid)
            if check_public and flavor.is_public:
                raise Conflict("Can not add access to a public flavor.")
            if s.get(FlavorProject, (flavor.id, project_id)) is not None:
                raise Conflict(f"Flavor access already exists for flavor {flavorid} and "
                               f"project {project_id} combination.")
            s.add(FlavorProject(flavor_id=flavor.id, project_id=project_id))
        return self.access(flavorid) if not flavor.is_public else [project_id]

    def remove_access(self, flavorid: str, project_id: str) -> list[str]:
        with self.db.session() as s:
            flavor = self._find(s, flavorid)
            row = s.get(FlavorProject, (flavor.id, project_id))
            if row is None:
                raise NotFound(f"Flavor access not found for {flavorid} / {project_id} "
                               "combination.")
            s.delete(row)
        return self.access(flavorid)
