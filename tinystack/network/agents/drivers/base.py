"""What the network agents ask of a backend, in domain words: networks, ports, DHCP, routers.

Three small interfaces, one per agent: ``L2Driver`` (bridges, VXLAN, a
port's device on its bridge, the node's packet filter), ``DhcpDriver`` (a
DHCP server per network) and ``RouterDriver`` (a router per router). The
Linux implementations are ``linux_bridge.py``, ``dnsmasq.py`` and
``router_ns.py``; ``tests/fakes/network_drivers.py`` keeps each honest.

Every ``ensure_*`` is idempotent and cleans up what it half-made when it fails;
every ``remove_*`` is quiet when the thing is already gone. Failures are sorted
for the agent: ``TemporaryFailure`` (retry with backoff), ``PermanentFailure``
(report an error, wait for a newer spec), ``Gone`` (stop quietly). Backend
names (bridge and tap names, nft tables, dnsmasq pids) stay inside drivers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from tinystack.network.messages import DhcpSpec, NetworkSpec, PortSpec, RouterSpec

__all__ = [
    "DhcpDriver",
    "DhcpState",
    "Gone",
    "L2Driver",
    "NetworkState",
    "PermanentFailure",
    "PortState",
    "RouterDriver",
    "RouterState",
    "TemporaryFailure",
]


class TemporaryFailure(Exception):
    """Try again later (a device not there yet, a command that timed out)."""


class PermanentFailure(Exception):
    """This spec cannot be applied as it is; a newer one may fix it."""


class Gone(Exception):
    """The thing went away meanwhile; nothing to do."""


@dataclass(frozen=True)
class NetworkState:
    """A network as it is on this node."""

    network_id: str
    mtu: int
    vni: int | None = None
    """The VXLAN id; None for flat or local networks, and for a VXLAN network with no
    peer (nothing to tunnel to: no device, so instances on one machine never clash)."""
    peers: frozenset[str] = frozenset()
    """Remote VXLAN endpoints this node floods to."""
    intact: bool = True
    """False when a device we made is down, unplugged or bound to another local address."""

    def matches(self, spec: NetworkSpec, local_ip: str | None = None) -> bool:
        """True when nothing needs changing to match ``spec``."""
        segment = spec.segment
        peers = frozenset(p for p in spec.vxlan_peers if p != local_ip)
        tunnel = segment.network_type == "vxlan" and bool(peers)
        vni = segment.segmentation_id if tunnel else None
        peers = peers if tunnel else frozenset()
        return (self.intact and self.mtu == segment.mtu and self.vni == vni
                and self.peers == peers)


@dataclass(frozen=True)
class PortState:
    """A port's device as it is on this node."""

    exists: bool
    network_id: str | None = None
    """The network whose bridge the device is plugged into, if any of ours."""
    up: bool = False
    mtu: int | None = None


class L2Driver(Protocol):
    capabilities: frozenset[str]
    """e.g. {"vxlan", "flat", "security_groups"}."""

    async def start(self) -> None: ...
    async def close(self) -> None: ...

    def watch(self, on_device: Callable[[str], None]) -> None:
        """Call ``on_device(device)`` when a device appears (a tap made by compute)."""

    async def list_networks(self) -> list[str]:
        """Ids of the networks that have a bridge here (ours only)."""

    async def inspect_network(self, network_id: str) -> NetworkState | None: ...
    async def ensure_network(self, spec: NetworkSpec) -> None: ...
    async def remove_network(self, network_id: str) -> None: ...

    async def inspect_port(self, port: PortSpec) -> PortState: ...

    async def plug_port(self, port: PortSpec, network: NetworkSpec) -> None:
        """Put the port's device on the network's bridge, up (down if not admin up)."""

    async def unplug_port(self, port: PortSpec) -> None:
        """Take the port's device off whatever bridge of ours it is on (never delete it)."""

    async def forget_connections(self, port: PortSpec, *, inbound: bool, outbound: bool) -> None:
        """Drop tracked connections to (``inbound``) or from (``outbound``) the port's
        addresses, so rules that were removed stop them too."""

    async def ensure_filter(self, ports: list[PortSpec], *, verify: bool = False) -> bool:
        """Make the node's packet filter exactly what ``ports`` need; True if it changed.

        ``verify`` reads what is installed instead of trusting the last write."""

    async def remove_filter(self) -> None: ...


@dataclass(frozen=True)
class DhcpState:
    """A network's DHCP server as it is on this node."""

    network_id: str
    running: bool
    fingerprint: str = ""
    """What the server serves, as ``DhcpDriver.fingerprint(spec)`` computes it."""
    pid: int | None = None


class DhcpDriver(Protocol):
    async def start(self) -> None: ...
    async def close(self) -> None: ...

    def watch(self, on_change: Callable[[str], None]) -> None:
        """Call ``on_change(network_id)`` when a server dies on its own."""

    def fingerprint(self, spec: DhcpSpec) -> str:
        """A digest of what ``spec`` asks to serve (compared with ``DhcpState``)."""

    async def list_networks(self) -> list[str]: ...
    async def inspect(self, network_id: str) -> DhcpState | None: ...
    async def ensure(self, spec: DhcpSpec) -> DhcpState: ...
    async def remove(self, network_id: str) -> None: ...

    def namespace(self, network_id: str) -> str:
        """Where a metadata proxy for that network listens (169.254.169.254:80)."""


@dataclass(frozen=True)
class RouterState:
    router_id: str
    fingerprint: str = ""
    floating_ips: frozenset[str] = frozenset()


class RouterDriver(Protocol):
    async def start(self) -> None: ...
    async def close(self) -> None: ...

    def fingerprint(self, spec: RouterSpec) -> str: ...
    async def list_routers(self) -> list[str]: ...
    async def inspect(self, router_id: str) -> RouterState | None: ...
    async def ensure(self, spec: RouterSpec) -> RouterState: ...
    async def remove(self, router_id: str) -> None: ...

    async def ensure_gateways(self, addresses: dict[str, list[str]]) -> None:
        """The host's own addresses on external networks: network id -> ``["ip/len"]``
        (the external subnet's gateway, so the host reaches floating IPs)."""

