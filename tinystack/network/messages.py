"""What the network service and the network agents say to each other on the bus.

The network service (controller: API, IPAM, ``service.py``) owns the database;
agents own the Linux machinery of their node. They meet only here:

- controller -> ``network-l2.<host>``: ``cast("sync_port", spec=PortSpec)``
  for every port bound to that host (a ``PortSpec`` with ``deleted=True`` is a
  tombstone); ``cast("sync_network", spec=NetworkSpec)`` when a network's
  segment or VXLAN peers change.
- controller -> ``network-dhcp.<host>``: ``cast("sync_dhcp", spec=DhcpSpec)``,
  the whole DHCP view of one network (its subnets and every port's address).
- controller -> ``network-l3.<host>``: ``cast("sync_router", spec=RouterSpec)``.
- agent -> ``network-server``: ``call("agent_state", host=..., agent_type=...)``
  on start returns every spec for that agent (``AgentState``), so a restarted
  agent converges without waiting; ``cast("report_port", report=PortReport)``
  once a port is wired; ``cast("report_agent", report=AgentReport)`` as a
  heartbeat (os-agents ``alive``); ``cast("report_dhcp", report=DhcpReport)``
  once a network's DHCP server serves a revision (Neutron's DHCP provisioning
  block: a port can get its address); ``cast("report_router",
  report=RouterReport)`` once a router revision is in place, with each
  floating IP's status.
- metadata proxy -> ``network-server``: ``call("port_by_address",
  network_id=..., ip_address=...)`` returns ``{"port_id", "device_id",
  "device_owner", "project_id"}`` of the port holding that fixed address on
  that network, or None. The proxy asks only when its own specs
  (``DhcpHost.device_id``/``project_id``, router interfaces) cannot name the
  guest, e.g. a request through a router namespace.

Provisioning blocks: the server sets a bound port ``ACTIVE`` once its L2
agent reported it ACTIVE *and*, when its network is served by DHCP (an
address on a DHCP-enabled subnet, a live DHCP agent on the network node; not
for the network's own ``network:*`` ports), a ``DhcpReport`` with status
ACTIVE named it in ``port_ids``, in either order. An agent therefore reports
only what is really in place: the L2 agent once the device is on its bridge
with its rules, the DHCP agent once every host of the revision is in
dnsmasq's host files.

Every spec carries a ``revision``: an agent never applies an older one over a
newer one. Messages change additively (new fields get defaults; receivers
ignore unknown fields).

Port binding with compute: the compute service creates a port with
``binding:host_id``; the port comes back with ``binding:vif_type`` "tap" and
``binding:vif_details`` ``{"bridge_name": ..., "tap_name": ...}``. The compute
agent creates the tap (qemu needs it at start) and plugs it into that bridge
if the bridge exists; the L2 agent ensures the bridge and enslaves the tap when
it appears. Both steps are idempotent, so either may come first.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "SERVER_TARGET",
    "l2_target",
    "dhcp_target",
    "l3_target",
    "bridge_name",
    "tap_name",
    "Segment",
    "NetworkSpec",
    "SecurityRule",
    "PortSpec",
    "DhcpSubnet",
    "DhcpHost",
    "DhcpSpec",
    "RouterInterface",
    "FloatingIpSpec",
    "RouterSpec",
    "PortReport",
    "DhcpReport",
    "RouterReport",
    "AgentReport",
    "AgentState",
]

SERVER_TARGET = "network-server"


def l2_target(host: str) -> str:
    return f"network-l2.{host}"


def dhcp_target(host: str) -> str:
    return f"network-dhcp.{host}"


def l3_target(host: str) -> str:
    return f"network-l3.{host}"


def bridge_name(network_id: str) -> str:
    """The Linux bridge of a network on every node (15 characters at most)."""
    return "tsbr" + network_id.replace("-", "")[:11]


def tap_name(port_id: str) -> str:
    """The tap device of a port (15 characters at most)."""
    return "tap" + port_id.replace("-", "")[:11]


class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Segment(_Message):
    network_type: Literal["vxlan", "flat", "local"] = "vxlan"
    segmentation_id: int | None = None
    """The VNI for vxlan."""
    physical_network: str | None = None
    """For flat: the name of the host interface or bridge mapping (e.g. ``public``)."""
    mtu: int = 1450


class NetworkSpec(_Message):
    id: str
    revision: int
    segment: Segment
    vxlan_peers: list[str] = Field(default_factory=list)
    """Data-network addresses of the other nodes with ports on this network
    (static flood entries, as l2population does)."""
    deleted: bool = False


class SecurityRule(_Message):
    """One resolved rule: remote groups are already expanded to addresses."""

    direction: Literal["ingress", "egress"]
    ethertype: Literal["IPv4", "IPv6"] = "IPv4"
    protocol: str | None = None
    """"tcp", "udp", "icmp", a number, or None for any."""
    port_range_min: int | None = None
    port_range_max: int | None = None
    remote_ip_prefixes: list[str] = Field(default_factory=list)
    """Empty means any address."""


class PortSpec(_Message):
    id: str
    revision: int
    network: NetworkSpec | None = None
    mac: str = ""
    fixed_ips: list[dict] = Field(default_factory=list)
    """``[{"subnet_id", "ip_address", "cidr", "gateway_ip"}]``."""
    device: str = ""
    """Tap name; empty means ``tap_name(id)``."""
    device_owner: str = ""
    admin_state_up: bool = True
    port_security_enabled: bool = True
    allowed_address_pairs: list[dict] = Field(default_factory=list)
    security_rules: list[SecurityRule] = Field(default_factory=list)
    deleted: bool = False
    device_id: str = ""
    """What the port is attached to: a server id for ``compute:*`` owners, a router id
    for router ports (added for the metadata proxy and for logs)."""
    host: str = ""
    """``binding:host_id``: the node this spec is for."""


class DhcpSubnet(_Message):
    id: str
    cidr: str
    ip_version: int = 4
    gateway_ip: str | None = None
    enable_dhcp: bool = True
    dns_nameservers: list[str] = Field(default_factory=list)
    host_routes: list[dict] = Field(default_factory=list)
    """``[{"destination", "nexthop"}]``; the metadata route is added by the agent."""
    allocation_pools: list[dict] = Field(default_factory=list)


class DhcpHost(_Message):
    port_id: str
    mac: str
    ip_address: str
    hostname: str
    subnet_id: str = ""
    """The subnet ``ip_address`` belongs to."""
    device_id: str = ""
    """The server (or router) behind the port: the metadata proxy names the instance
    by it, as Neutron's metadata agent does from the port it finds."""
    device_owner: str = ""
    project_id: str = ""
    """The port's project (the metadata proxy's ``X-Tenant-ID``)."""


class DhcpSpec(_Message):
    network_id: str
    revision: int
    segment: Segment
    dhcp_port: PortSpec | None = None
    """The network's DHCP port (its address is the server's)."""
    subnets: list[DhcpSubnet] = Field(default_factory=list)
    hosts: list[DhcpHost] = Field(default_factory=list)
    dns_domain: str = "openstacklocal"
    metadata: bool = True
    """Serve 169.254.169.254 from the DHCP namespace (route via option 121)."""
    deleted: bool = False


class RouterInterface(_Message):
    port_id: str
    subnet_id: str
    network_id: str
    segment: Segment
    mac: str
    ip_address: str
    cidr: str
    ip_version: int = 4
    gateway_ip: str | None = None
    """The subnet's gateway (a router interface on a subnet holds it)."""
    ipv6_ra_mode: str | None = None
    """The subnet's ``ipv6_ra_mode``: with ``slaac`` or ``dhcpv6-stateless`` the router
    sends router advertisements for ``cidr`` on this interface."""
    ipv6_address_mode: str | None = None


class FloatingIpSpec(_Message):
    id: str
    floating_ip_address: str
    fixed_ip_address: str


class RouterSpec(_Message):
    id: str
    revision: int
    admin_state_up: bool = True
    gateway: RouterInterface | None = None
    """The external-network side (its ``ip_address`` carries SNAT)."""
    external_gateway_ip: str | None = None
    enable_snat: bool = True
    interfaces: list[RouterInterface] = Field(default_factory=list)
    routes: list[dict] = Field(default_factory=list)
    floating_ips: list[FloatingIpSpec] = Field(default_factory=list)
    deleted: bool = False


class PortReport(_Message):
    port_id: str
    host: str
    revision: int
    status: Literal["ACTIVE", "DOWN", "BUILD", "ERROR"]
    detail: str = ""


class DhcpReport(_Message):
    """A DHCP agent applied (or failed) revision ``revision`` of a network's ``DhcpSpec``."""

    network_id: str
    host: str
    revision: int
    status: Literal["ACTIVE", "ERROR"] = "ACTIVE"
    port_ids: list[str] = Field(default_factory=list)
    """Ports whose address the server now hands out (every host of the spec, not only
    the new ones): the DHCP provisioning block of each is closed."""
    detail: str = ""


class RouterReport(_Message):
    """An L3 agent applied (or failed) revision ``revision`` of a ``RouterSpec``."""

    router_id: str
    host: str
    revision: int
    status: Literal["ACTIVE", "ERROR"] = "ACTIVE"
    floating_ips: dict[str, str] = Field(default_factory=dict)
    """Floating IP id -> "ACTIVE" (NAT in place) or "ERROR"."""
    detail: str = ""


class AgentReport(_Message):
    host: str
    agent_type: Literal["Linux bridge agent", "DHCP agent", "L3 agent", "Metadata agent"]
    binary: str
    availability_zone: str = "nova"
    data_ip: str = "127.0.0.1"
    """This node's address on the data network (VXLAN endpoint)."""
    configurations: dict = Field(default_factory=dict)


class AgentState(_Message):
    ports: list[PortSpec] = Field(default_factory=list)
    networks: list[NetworkSpec] = Field(default_factory=list)
    dhcp: list[DhcpSpec] = Field(default_factory=list)
    routers: list[RouterSpec] = Field(default_factory=list)
