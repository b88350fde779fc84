"""The service catalog: regions, services and their endpoints.

``catalog()`` builds the list a token carries (Keystone's shape: one entry
per enabled service with its enabled endpoints) and caches it until the next
write anywhere in identity (the shared ``generation`` counter of
``IdentityService``). ``ensure_entries`` is what bootstrap uses on every
start to make the catalog name exactly the APIs this process serves.
"""

from __future__ import annotations

import sqlalchemy as sa

from tinystack.common.db import new_id
from tinystack.common.errors import BadRequest, Conflict, Forbidden, NotFound
from tinystack.identity.models import Endpoint, Region, Service
from tinystack.identity.service import IdentityService

__all__ = ["CatalogService", "INTERFACES"]

INTERFACES = ("public", "internal", "admin")


class CatalogService:
    def __init__(self, identity: IdentityService):
        self.identity = identity
        self.db = identity.db
        self._cache: tuple[int, list[dict]] | None = None

    # -- regions -------------------------------------------------------------

    def create_region(self, region_id: str | None, description: str = "",
                      parent_region_id: str | None = None, extra: dict | None = None) -> Region:
        with self.db.session() as s:
            region_id = region_id or new_id()
            if s.get(Region, region_id) is not None:
                raise Conflict("Conflict occurred attempting to store region - Duplicate ID, "
                               f"{region_id}.")
            if parent_region_id and s.get(Region, parent_region_id) is None:
                raise NotFound(f"Could not find region: {parent_region_id}.")
            region = Region(id=region_id, description=description,
                            parent_region_id=parent_region_id, extra=extra or {})
            s.add(region)
        self.identity.changed()
        return region

    def get_region(self, region_id: str) -> Region:
        with self.db.session() as s:
            region = s.get(Region, region_id)
            if region is None:
                raise NotFound(f"Could not find region: {region_id}.")
            return region

    def list_regions(self, parent_region_id: str | None = None) -> list[Region]:
        with self.db.session() as s:
            query = sa.select(Region).order_by(Region.id)
            if parent_region_id is not None:
                query = query.where(Region.parent_region_id == parent_region_id)
            return list(s.scalars(query))

    def update_region(self, region_id: str, changes: dict) -> Region:
        with self.db.session() as s:
            region = s.get(Region, region_id)
            if region is None:
                raise NotFound(f"Could not find region: {region_id}.")
            parent = changes.get("parent_region_id", region.parent_region_id)
            if parent == region_id:
                raise BadRequest("A region cannot be its own parent.")
            if parent and s.get(Region, parent) is None:
                raise NotFound(f"Could not find region: {parent}.")
            region.parent_region_id = parent
            if "description" in changes:
                region.description = changes["description"] or ""
        self.identity.changed()
        return region

    def delete_region(self, region_id: str) -> None:
        with self.db.session() as s:
            region = s.get(Region, region_id)
            if region is None:
                raise NotFound(f"Could not find region: {region_id}.")
            if s.scalar(sa.select(Region.id).where(Region.parent_region_id == region_id)):
                raise Forbidden(f"Unable to delete region {region_id} because it or its child "
                                "regions have associated endpoints.")
            if s.scalar(sa.select(Endpoint.id).where(Endpoint.region_id == region_id)):
                raise Forbidden(f"Unable to delete region {region_id} because it or its child "
                                "regions have associated endpoints.")
            s.delete(region)
        self.identity.changed()

    # -- services ------------------------------------------------------------

    def create_service(self, type: str, name: str = "", description: str = "",
                       enabled: bool = True, extra: dict | None = None) -> Service:
        with self.db.session() as s:
            service = Service(type=type, name=name, description=description, enabled=enabled,
                              extra=extra or {})
            s.add(service)
        self.identity.changed()
        return service

    def get_service(self, service_id: str) -> Service:
        with self.db.session() as s:
            service = s.get(Service, service_id)
            if service is None:
                raise NotFound(f"Could not find service: {service_id}.")
            return service

    def list_services(self, type: str | None = None, name: str | None = None) -> list[Service]:
        with self.db.session() as s:
            query = sa.select(Service).order_by(Service.type)
            if type is not None:
                query = query.where(Service.type == type)
            if name is not None:
                query = query.where(Service.name == name)
            return list(s.scalars(query))

    def update_service(self, service_id: str, changes: dict) -> Service:
        with self.db.session() as s:
            service = s.get(Service, service_id)
            if service is None:
                raise NotFound(f"Could not find service: {service_id}.")
            self.identity._apply(service, changes, ("type", "name", "description", "enabled"))
        self.identity.changed()
        return service

    def delete_service(self, service_id: str) -> None:
        with self.db.session() as s:
            service = s.get(Service, service_id)
            if service is None:
                raise NotFound(f"Could not find service: {service_id}.")
            s.execute(sa.delete(Endpoint).where(Endpoint.service_id == service_id))
            s.delete(service)
        self.identity.changed()

    # -- endpoints -----------------------------------------------------------

    def create_endpoint(self, service_id: str, interface: str, url: str,
                        region_id: str | None = None, enabled: bool = True,
                        extra: dict | None = None) -> Endpoint:
        if interface not in INTERFACES:
            raise BadRequest(f"Invalid input for field 'interface': '{interface}' is not one "
                             f"of {list(INTERFACES)}")
        with self.db.session() as s:
            if s.get(Service, service_id) is None:
                raise NotFound(f"Could not find service: {service_id}.")
            if region_id and s.get(Region, region_id) is None:
                raise NotFound(f"Could not find region: {region_id}.")
            endpoint = Endpoint(service_id=service_id, interface=interface, url=url,
                                region_id=region_id, enabled=enabled, extra=extra or {})
            s.add(endpoint)
        self.identity.changed()
        return endpoint

    def get_endpoint(self, endpoint_id: str) -> Endpoint:
        with self.db.session() as s:
            endpoint = s.get(Endpoint, endpoint_id)
            if endpoint is None:
                raise NotFound(f"Could not find endpoint: {endpoint_id}.")
            return endpoint

    def list_endpoints(self, interface=None, service_id=None, region_id=None) -> list[Endpoint]:
        with self.db.session() as s:
            query = sa.select(Endpoint).order_by(Endpoint.service_id, Endpoint.interface)
            if interface is not None:
                query = query.where(Endpoint.interface == interface)
            if service_id is not None:
                query = query.where(Endpoint.service_id == service_id)
            if region_id is not None:
                query = query.where(Endpoint.region_id == region_id)
            return list(s.scalars(query))

    def update_endpoint(self, endpoint_id: str, changes: dict) -> Endpoint:
        if "interface" in changes and changes["interface"] not in INTERFACES:
            raise BadRequest(f"Invalid input for field 'interface': '{changes['interface']}' "
                             f"is not one of {list(INTERFACES)}")
        with self.db.session() as s:
            endpoint = s.get(Endpoint, endpoint_id)
            if endpoint is None:
                raise NotFound(f"Could not find endpoint: {endpoint_id}.")
            if "service_id" in changes and s.get(Service, changes["service_id"]) is None:
                raise NotFound(f"Could not find service: {changes['service_id']}.")
            region_id = changes.get("region_id")
            if region_id and s.get(Region, region_id) is None:
                raise NotFound(f"Could not find region: {region_id}.")
            self.identity._apply(endpoint, changes,
                                 ("service_id", "interface", "url", "region_id", "enabled"))
        self.identity.changed()
        return endpoint

    def delete_endpoint(self, endpoint_id: str) -> None:
        with self.db.session() as s:
            endpoint = s.get(Endpoint, endpoint_id)
            if endpoint is None:
                raise NotFound(f"Could not find endpoint: {endpoint_id}.")
            s.delete(endpoint)
        self.identity.changed()

    # -- the catalog a token carries -------------------------------------------

    def catalog(self) -> list[dict]:
        generation = self.identity.generation
        if self._cache is not None and self._cache[0] == generation:
            return self._cache[1]
        with self.db.session() as s:
            services = list(s.scalars(sa.select(Service).where(Service.enabled.is_(True))
                                      .order_by(Service.type)))
            endpoints = list(s.scalars(sa.select(Endpoint).where(Endpoint.enabled.is_(True))))
        entries = []
        for service in services:
            entries.append({
                "endpoints": [
                    {"id": e.id, "interface": e.interface, "region_id": e.region_id,
                     "url": e.url, "region": e.region_id}
                    for e in endpoints if e.service_id == service.id
                ],
                "id": service.id,
                "type": service.type,
                "name": service.name,
            })
        self._cache = (generation, entries)
        return entries

    def ensure_entries(self, region: str, entries: list[tuple[str, str, str, str]]) -> None:
        """Make the catalog hold (type, name, description, url) for each given service.

        Existing services of that type keep their id; their endpoints are made
        to say ``url`` on all three interfaces in ``region``.
        """
        with self.db.session() as s:
            if s.get(Region, region) is None:
                s.add(Region(id=region, description=""))
                s.flush()
            for type_, name, description, url in entries:
                service = s.scalar(sa.select(Service).where(Service.type == type_).limit(1))
                if service is None:
                    service = Service(type=type_, name=name, description=description)
                    s.add(service)
                    s.flush()
                have = {e.interface: e for e in s.scalars(
                    sa.select(Endpoint).where(Endpoint.service_id == service.id))}
                for interface in INTERFACES:
                    endpoint = have.get(interface)
                    if endpoint is None:
                        s.add(Endpoint(service_id=service.id, interface=interface, url=url,
                                       region_id=region))
                    elif endpoint.url != url:
                        endpoint.url = url
        self.identity.changed()
