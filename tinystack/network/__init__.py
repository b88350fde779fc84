"""The networking service (Neutron v2.0): the API and the server half of the agent protocol.

``NetworkComponent`` is the controller half as ``cloud.py`` runs it: the
API at ``/network`` (``api.py``), the services behind it (one module per
resource, sharing ``service.py``), ``network-server`` on the bus for the
agents (``agent_server.py``), the dispatcher that casts specs to the agents
after every change (``dispatch.py``, ``specs.py``) and first-start
``bootstrap.py``. ``messages.py`` is the contract with the agents, which live
on the network and compute nodes and never open the database. Read
``service.py`` next, or ``messages.py`` for the protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from tinystack.common.component import CatalogEntry

__all__ = ["NetworkComponent"]

log = logging.getLogger(__name__)


class NetworkComponent:
    catalog_entry = CatalogEntry("network", "neutron", "/network", "Networking Service")

    def __init__(self, settings, db, bus, token_check):
        from tinystack.network.agent_server import NetworkServerEndpoint
        from tinystack.network.heartbeats import Agents
        from tinystack.network.api import build_app
        from tinystack.network.dispatch import Dispatcher
        from tinystack.network.floating_ips import FloatingIps
        from tinystack.network.networks import Networks
        from tinystack.network.ports import Ports
        from tinystack.network.quotas import Quotas
        from tinystack.network.rbac import RbacPolicies
        from tinystack.network.routers import Routers
        from tinystack.network.security_groups import SecurityGroups
        from tinystack.network.service import NetworkCore
        from tinystack.network.subnets import Subnets
        from tinystack.network.tags import Tags

        self.settings = settings
        self.bus = bus
        self.token_check = token_check
        self.core = NetworkCore(db, settings)
        self.networks = Networks(self.core)
        self.ports = Ports(self.core)
        self.subnets = Subnets(self.core, self.ports)
        self.routers = Routers(self.core, self.ports)
        self.floating_ips = FloatingIps(self.core, self.ports)
        self.security_groups = SecurityGroups(self.core)
        self.rbac = RbacPolicies(self.core)
        self.quotas = Quotas(self.core)
        self.agents = Agents(self.core)
        self.tags = Tags(self.core)
        self.dispatcher = Dispatcher(self.core, bus)
        self.server = NetworkServerEndpoint(self.core, self.agents, self.ports, self.dispatcher)
        self.asgi = build_app(self)
        self._bootstrap: asyncio.Task | None = None

    async def start(self) -> None:
        from tinystack.network.messages import SERVER_TARGET

        await self.bus.serve(SERVER_TARGET, self.server)
        if self.settings.network.bootstrap:
            self._bootstrap = asyncio.get_running_loop().create_task(
                self._run_bootstrap(), name="network bootstrap")

    async def _run_bootstrap(self) -> None:
        from tinystack.network.bootstrap import ensure_bootstrap

        try:
            await ensure_bootstrap(self)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("network: the bootstrap networks could not be made; they will be "
                          "tried again on the next start")

    async def stop(self) -> None:
        if self._bootstrap is not None:
            self._bootstrap.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._bootstrap
            self._bootstrap = None

    async def wait_bootstrapped(self) -> None:
        """Until the first-start bootstrap task (if any) has finished."""
        if self._bootstrap is not None:
            await asyncio.shield(self._bootstrap)
