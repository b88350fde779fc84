"""One tinystack process: the services and agents its node roles call for.

``Cloud(settings)`` is what ``tinystack up`` runs (``runner.py`` serves it
with uvicorn). ``start`` brings the database schema to head, connects the
bus, builds each service and runs first-start bootstrap; ``asgi`` is the
single HTTP app with every API under its own prefix (DevStack style);
``health`` says what runs here and whether it answers; ``stop`` undoes
``start``. Services are listed in ``SERVICES``: adding one is one line there
plus its package.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Mount, Route

from tinystack.common import bus as busmod
from tinystack.common.component import CatalogEntry
from tinystack.common.db import Database, upgrade
from tinystack.common.http import json_response
from tinystack.config import Settings

__all__ = ["Cloud", "CatalogEntry"]

log = logging.getLogger(__name__)


# name -> "module:Class" of each API the controller serves besides identity. A
# component takes (settings, db, bus, token_check) and offers catalog_entry,
# asgi, start() and stop(); optionally ``mounts`` ({prefix: app}) for apps
# served outside its catalog prefix (compute's metadata service at /metadata).
CONTROLLER_SERVICES: list[tuple[str, str]] = [
    ("image", "tinystack.image:ImageComponent"),
    ("compute", "tinystack.compute:ComputeComponent"),
    ("network", "tinystack.network:NetworkComponent"),
]


class _BarePrefix:
    """ASGI app answering ``/prefix`` itself as the service's ``/``."""

    def __init__(self, prefix: str, app):
        self.prefix, self.app = prefix, app

    async def __call__(self, scope, receive, send):
        scope = {**scope, "path": "/", "root_path": scope.get("root_path", "") + self.prefix}
        await self.app(scope, receive, send)


class Cloud:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.db: Database | None = None
        self.bus: busmod.Bus | None = None
        self.services: dict[str, Any] = {}
        self.agents: dict[str, Any] = {}
        """Node agents (start, stop, health), e.g. the compute agent on a compute node."""
        self.catalog: list[CatalogEntry] = []
        self._mounts: list[Mount] = []
        self.asgi = Starlette(routes=[Route("/healthcheck", self._healthcheck)])
        self.started = False

    async def start(self) -> None:
        settings = self.settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.bus = busmod.connect(settings.bus)
        await self.bus.start()
        if "controller" in settings.roles:
            self.db = Database(settings.db_url)
            await asyncio.to_thread(upgrade, self.db)
            await self._start_controller()
        if "compute" in settings.roles:
            from tinystack.compute.node import ComputeNode

            self.agents["compute"] = ComputeNode(settings, self.bus)
            await self.agents["compute"].start()
        if {"compute", "network"} & set(settings.roles):
            from tinystack.network.agents.node import node_components

            for name, component in node_components(settings, self.bus).items():
                self.agents[name] = component
                await component.start()
        self.asgi.router.routes.extend(self._mounts)
        self.started = True

    async def _start_controller(self) -> None:
        """Build the identity service, then every other API, then start them in order."""
        import importlib

        from tinystack.identity import IdentityComponent

        identity = IdentityComponent(self.settings, self.db, self.bus)
        self.services["identity"] = identity
        for name, path in CONTROLLER_SERVICES:
            module_name, class_name = path.split(":")
            component_cls = getattr(importlib.import_module(module_name), class_name)
            self.services[name] = component_cls(
                self.settings, self.db, self.bus, identity.credentials_for)
        for service in self.services.values():
            self.catalog.append(service.catalog_entry)
            self._mount(service.catalog_entry.path, service.asgi)
            for prefix, app in getattr(service, "mounts", {}).items():
                self._mounts.append(Mount(prefix, app=app))  # off-catalog, e.g. /metadata
        await identity.start(catalog=self.catalog)
        for name, service in self.services.items():
            if name != "identity":
                await service.start()

    def _mount(self, prefix: str, app) -> None:
        """Serve ``app`` under ``prefix``, the bare prefix included (its version document)."""

        self._mounts.append(Route(prefix, _BarePrefix(prefix, app), methods=None))
        self._mounts.append(Mount(prefix, app=app))

    async def stop(self) -> None:
        for agent in reversed(list(self.agents.values())):
            await agent.stop()
        self.agents.clear()
        for service in reversed(list(self.services.values())):
            await service.stop()
        self.services.clear()
        if self.bus is not None:
            await self.bus.close()
        if self.db is not None:
            self.db.dispose()
        self.started = False

    def health(self) -> dict:
        node = self.settings.node
        services = [
            {"name": name, "kind": "api", "node": node, "healthy": self.started,
             "url": f"{self.settings.base_url}{svc.catalog_entry.path}"}
            for name, svc in self.services.items()
        ]
        agents = [agent.health() for agent in self.agents.values()]
        return {"node": node, "roles": self.settings.roles, "services": services, "agents": agents}

    async def _healthcheck(self, request: Request):
        body = self.health()
        healthy = self.started and all(s["healthy"] for s in body["services"])
        return json_response(body, 200 if healthy else 503)
