"""The network agents of a tinystack process, wired together for its node roles.

``cloud.py`` calls ``node_components(settings, bus)`` when the node plays
``compute`` or ``network`` and starts what it returns (``start``, ``stop``,
``health``, as the compute node does):

- ``network-l2`` (``L2Node``) on compute and network nodes: the L2 agent on
  the Linux bridge driver;
- ``network`` (``NetworkNode``) on the network node: the DHCP agent (dnsmasq),
  the L3 agent (router namespaces) and the metadata proxy, handing their own
  ports to the node's L2 agent.

Everything they keep lives under ``<data_dir>/network/`` (``dhcp/``,
``l3/``). Everything they make on the machine carries the owner tag
``owner_tag(settings)``, derived from the data dir, so two tinystack
instances on one machine never touch each other's bridges, namespaces or
nftables tables. Read ``l2.py``, ``dhcp.py``, ``l3.py`` next.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from pathlib import Path

from tinystack.common.bus import Bus
from tinystack.config import Settings
from tinystack.network.agents.dhcp import DhcpAgent
from tinystack.network.agents.drivers.dnsmasq import DnsmasqDriver
from tinystack.network.agents.drivers.linux_bridge import LinuxBridgeDriver
from tinystack.network.agents.drivers.router_ns import RouterNamespaceDriver
from tinystack.network.agents.l2 import L2Agent
from tinystack.network.agents.l3 import L3Agent
from tinystack.network.agents.metadata import MetadataProxy
from tinystack.network.agents.reconcile import Agent, AgentOptions

__all__ = ["L2Node", "NetworkNode", "node_components", "owner_tag", "shared_secret"]

log = logging.getLogger(__name__)

SECRET_FILE = Path("compute") / "metadata-secret"
"""Where the compute service keeps a generated metadata secret (all-in-one)."""


def owner_tag(settings: Settings) -> str:
    """Eight hex digits naming this instance's devices, namespaces and tables."""
    return hashlib.sha256(str(settings.data_dir.resolve()).encode()).hexdigest()[:8]


def shared_secret(settings: Settings):
    """A function giving the metadata proxy's shared secret: the configured one, else
    the one the compute service generated in the data dir (read once it exists)."""
    configured = settings.compute.metadata_proxy_shared_secret
    found: list[str] = []

    def secret() -> str:
        if configured:
            return configured
        if not found:
            path = settings.data_dir / SECRET_FILE
            if path.exists():
                found.append(path.read_text().strip())
        return found[0] if found else ""
    return secret


class _Running:
    """Runs agents: ``start`` each, then its ``run_forever`` in a task; ``stop`` undoes it."""

    def __init__(self, name: str, node: str, agents: list[Agent]):
        self.name = name
        self.node = node
        self.agents = agents
        self._tasks: list[asyncio.Task] = []
        self.error: str | None = None

    async def start(self) -> None:
        for agent in self.agents:
            try:
                await agent.start()
            except Exception as exc:
                log.exception("%s: %s could not start", self.name, agent.binary)
                self.error = f"{agent.binary}: {exc}"
                continue
            task = asyncio.get_running_loop().create_task(agent.run_forever())
            task.add_done_callback(self._ended)
            self._tasks.append(task)

    def _ended(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("%s: an agent stopped", self.name, exc_info=task.exception())
            self.error = str(task.exception())

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        for agent in reversed(self.agents):
            with contextlib.suppress(Exception):
                await agent.stop()

    def health(self) -> dict:
        agents = [agent.health() for agent in self.agents]
        healthy = self.error is None and all(a["healthy"] for a in agents) and bool(self._tasks)
        return {"name": self.name, "kind": "agent", "node": self.node, "healthy": healthy,
                "error": self.error, "agents": agents}


class L2Node(_Running):
    def __init__(self, settings: Settings, bus: Bus, *, options: AgentOptions | None = None):
        data_ip = settings.compute_node.my_ip
        self.driver = LinuxBridgeDriver(owner=owner_tag(settings), local_ip=data_ip)
        self.agent = L2Agent(host=settings.node, bus=bus, driver=self.driver, options=options,
                             data_ip=data_ip)
        super().__init__("network-l2", settings.node, [self.agent])


class NetworkNode(_Running):
    def __init__(self, settings: Settings, bus: Bus, *, l2: L2Agent | None,
                 options: AgentOptions | None = None):
        root = settings.data_dir / "network"
        owner = owner_tag(settings)
        data_ip = settings.compute_node.my_ip
        self.dhcp_driver = DnsmasqDriver(state_dir=root / "dhcp", owner=owner)
        self.router_driver = RouterNamespaceDriver(state_dir=root / "l3", owner=owner)
        self.dhcp = DhcpAgent(host=settings.node, bus=bus, driver=self.dhcp_driver, l2=l2,
                              options=options, data_ip=data_ip)
        self.metadata = MetadataProxy(metadata_url=f"{settings.base_url}/metadata",
                                      secret=shared_secret(settings), lookup=self.dhcp.lookup,
                                      bus=bus)
        self.dhcp.metadata = self.metadata
        self.l3 = L3Agent(host=settings.node, bus=bus, driver=self.router_driver, l2=l2,
                          options=options, data_ip=data_ip)
        super().__init__("network", settings.node, [self.dhcp, self.l3])

    def health(self) -> dict:
        body = super().health()
        body["metadata"] = self.metadata.statistics()
        return body


def node_components(settings: Settings, bus: Bus) -> dict[str, _Running]:
    """The network components this node's roles call for, in start order.

    They clean up on exit exactly when compute stops its guests on exit
    (``compute_node.stop_guests_on_exit``): a stopped cloud leaves no bridge,
    namespace, nft table or dnsmasq behind, and the next start rebuilds them.
    """
    options = AgentOptions(clean_on_exit=settings.compute_node.stop_guests_on_exit)
    components: dict[str, _Running] = {}
    roles = set(settings.roles)
    l2 = None
    if roles & {"compute", "network"}:
        node = L2Node(settings, bus, options=options)
        components["network-l2"] = node
        l2 = node.agent
    if "network" in roles:
        components["network"] = NetworkNode(settings, bus, l2=l2, options=options)
    return components
