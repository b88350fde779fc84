"""The compute service (Nova): the API and scheduler on the controller, the agent on each
compute node. ``messages.py`` is the contract between the two halves; the node half starts
in ``node.py``.

``ComputeComponent`` is the controller half as ``cloud.py`` runs it: the
API at ``/compute`` (``api.py``), the metadata service at ``/metadata``
(``metadata.py``, offered in ``mounts``), the conductor serving
``compute-conductor`` on the bus (``conductor.py``) and its watchdog. The
rules are in ``service.py`` and the modules it names. Controller modules are
imported when the component is built, so a compute-only process never loads
them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from tinystack.common.component import CatalogEntry

__all__ = ["ComputeComponent"]

log = logging.getLogger(__name__)


class ComputeComponent:
    catalog_entry = CatalogEntry("compute", "nova", "/compute", "Compute Service",
                                 url_suffix="/v2.1")

    def __init__(self, settings, db, bus, token_check):
        from tinystack.compute.actions import Actions
        from tinystack.compute.api import build_app
        from tinystack.compute.conductor import ConductorEndpoint, Watchdog
        from tinystack.compute.flavors import Flavors
        from tinystack.compute.groups import Groups
        from tinystack.compute.hosts import Hosts
        from tinystack.compute.images import ImageClient
        from tinystack.compute.keypairs import KeyPairs
        from tinystack.compute.listing import Listing
        from tinystack.compute.metadata import MetadataApp
        from tinystack.compute.networking import Networking
        from tinystack.compute.quotas import Quotas
        from tinystack.compute.scheduler import Scheduler
        from tinystack.compute.servers import Servers
        from tinystack.compute.service import ComputeCore

        self.settings = settings
        self.db = db
        self.bus = bus
        self.token_check = token_check
        conf = settings.compute
        self.images = ImageClient(settings.base_url)
        self.network = Networking(settings.base_url, self._service_password)
        self.core = ComputeCore(db, bus, self.images, conf, base_url=settings.base_url,
                                node=settings.node, network=self.network)

        def clock():
            return self.core.clock()

        self.quotas = Quotas(db)
        self.flavors = Flavors(db)
        self.scheduler = Scheduler(conf, clock)
        self.servers = Servers(self.core, self.flavors, self.quotas, self.scheduler)
        self.listing = Listing(self.core, self.quotas)
        self.actions = Actions(self.core, self.servers, self.flavors, self.quotas,
                               self.scheduler)
        self.keypairs = KeyPairs(db, self.quotas)
        self.groups = Groups(db, self.quotas)
        self.hosts = Hosts(db, conf, clock)
        self.conductor = ConductorEndpoint(self.core, self.servers, self.hosts)
        self.watchdog = Watchdog(self.core, self.servers, self.actions, self.hosts)
        self.metadata_secret = ""
        self.asgi = build_app(self)
        self.metadata_app = MetadataApp(self._facts, lambda: self.metadata_secret)
        self.mounts: dict[str, Any] = {"/metadata": self.metadata_app}
        """Apps to serve under other prefixes than ``catalog_entry.path``."""
        self._watchdog_task: asyncio.Task | None = None

    def _service_password(self) -> str:
        """Compute's service user's password: the setting, else the bootstrap's file."""
        if self.settings.compute.service_password:
            return self.settings.compute.service_password
        import yaml  # noqa: PLC0415 - read once per token

        from tinystack.compute.networking import SERVICE_USER  # noqa: PLC0415

        found = yaml.safe_load((self.settings.data_dir / "credentials.yaml").read_text())
        return (found or {}).get(SERVICE_USER, "")

    async def _port_changed(self, event) -> None:
        device_id = (event.payload or {}).get("device_id")
        if device_id:
            await self.servers.refresh_ports(device_id)

    async def _facts(self, server_id: str):
        return await self.core.run(self.listing.facts, server_id)

    async def start(self) -> None:
        from tinystack.compute.bootstrap import metadata_secret
        from tinystack.compute.messages import CONDUCTOR_TARGET

        self.metadata_secret = await asyncio.to_thread(
            metadata_secret, self.settings.compute.metadata_proxy_shared_secret,
            self.settings.data_dir)
        await self.core.run(self.flavors.ensure_defaults)
        await self.bus.serve(CONDUCTOR_TARGET, self.conductor)
        await self.bus.subscribe("network.port.changed", self._port_changed,
                                 group="compute-network-events")
        await self.watchdog.run_once()
        self._watchdog_task = asyncio.get_running_loop().create_task(
            self.watchdog.run_forever(), name="compute watchdog")

    async def stop(self) -> None:
        if self._watchdog_task is not None:
            self._watchdog_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog_task
            self._watchdog_task = None
        await self.core.close()
        await self.images.close()
        await self.network.close()
