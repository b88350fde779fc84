"""Fixtures for the network agents' tests: a bus, the fake network server, spec builders.

- ``bus``: an in-process bus of the test's own, with ``server`` (a
  ``FakeNetworkServer``) serving ``network-server``;
- ``clock``: a fake monotonic clock the test moves (backoff, report resends);
- ``specs``: builders of networks, ports, DHCP and router specs with fresh ids
  and rising revisions.

Agents are made by each test with its fake driver and ``start()``-ed; the
fixture stops what was registered in ``agents``.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator

import pytest
from fakes.network_server import FakeNetworkServer

from tinystack.common.bus import connect
from tinystack.network.agents.reconcile import AgentOptions
from tinystack.network.messages import (
    SERVER_TARGET,
    DhcpHost,
    DhcpSpec,
    DhcpSubnet,
    FloatingIpSpec,
    NetworkSpec,
    PortSpec,
    RouterInterface,
    RouterSpec,
    SecurityRule,
    Segment,
)

HOST = "node1"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Specs:
    """Builds specs with fresh ids and rising revisions."""

    def __init__(self) -> None:
        self._revisions = itertools.count(1)
        self._vnis = itertools.count(100)

    def revision(self) -> int:
        return next(self._revisions)

    def network(self, *, flat: bool = False, peers=()) -> NetworkSpec:
        segment = (Segment(network_type="flat", physical_network="public", mtu=1500) if flat
                   else Segment(network_type="vxlan", segmentation_id=next(self._vnis)))
        return NetworkSpec(id=str(uuid.uuid4()), revision=self.revision(), segment=segment,
                           vxlan_peers=list(peers))

    def port(self, network: NetworkSpec, ip: str = "10.0.0.5", **fields) -> PortSpec:
        fields.setdefault("security_rules", [SecurityRule(direction="ingress", protocol="icmp"),
                                             SecurityRule(direction="egress")])
        fields.setdefault("device_owner", "compute:nova")
        fields.setdefault("fixed_ips", [{"subnet_id": "s1", "ip_address": ip,
                                         "cidr": "10.0.0.0/24"}])
        return PortSpec(id=str(uuid.uuid4()), revision=self.revision(), network=network,
                        mac="fa:16:3e:00:00:01", device_id=str(uuid.uuid4()), host=HOST,
                        **fields)

    def dhcp(self, network: NetworkSpec, ports=(), **fields) -> DhcpSpec:
        dhcp_port = PortSpec(id=str(uuid.uuid4()), revision=self.revision(), mac="fa:16:3e:00:00:02",
                             fixed_ips=[{"subnet_id": "s1", "ip_address": "10.0.0.2",
                                         "cidr": "10.0.0.0/24"}],
                             device_owner="network:dhcp")
        hosts = [DhcpHost(port_id=p.id, mac=p.mac, ip_address=p.fixed_ips[0]["ip_address"],
                          hostname=f"host-{i}", device_id=p.device_id, project_id="proj-1")
                 for i, p in enumerate(ports)]
        return DhcpSpec(network_id=network.id, revision=self.revision(), segment=network.segment,
                        dhcp_port=dhcp_port, hosts=hosts,
                        subnets=[DhcpSubnet(id="s1", cidr="10.0.0.0/24", gateway_ip="10.0.0.1")],
                        **fields)

    def router(self, internal: NetworkSpec, external: NetworkSpec, fips=(), **fields) -> RouterSpec:
        def iface(network: NetworkSpec, ip: str, cidr: str) -> RouterInterface:
            return RouterInterface(port_id=str(uuid.uuid4()), subnet_id="s", network_id=network.id,
                                   segment=network.segment, mac="fa:16:3e:00:00:03",
                                   ip_address=ip, cidr=cidr)
        return RouterSpec(
            id=str(uuid.uuid4()), revision=self.revision(),
            interfaces=[iface(internal, "10.0.0.1", "10.0.0.0/24")],
            gateway=iface(external, "172.24.4.10", "172.24.4.0/24"),
            external_gateway_ip="172.24.4.1",
            floating_ips=[FloatingIpSpec(id=f"fip-{i}", floating_ip_address=f, fixed_ip_address=x)
                          for i, (f, x) in enumerate(fips)], **fields)

    @staticmethod
    def revise(spec, revision: int, **changes):
        return spec.model_copy(update={"revision": revision, **changes})


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def specs() -> Specs:
    return Specs()


@pytest.fixture
def options() -> AgentOptions:
    return AgentOptions(audit_interval=3600, retry_initial=1.0, retry_max=8.0, state_timeout=0.2,
                        report_every=60.0)


@pytest.fixture
async def server() -> FakeNetworkServer:
    return FakeNetworkServer()


@pytest.fixture
async def bus(server) -> AsyncIterator:
    bus = connect(f"memory://netagents-{uuid.uuid4().hex[:8]}")
    await bus.start()
    await bus.serve(SERVER_TARGET, server)
    yield bus
    await bus.close()


@pytest.fixture
async def agents() -> AsyncIterator[list]:
    """Agents a test started; stopped at its end."""
    started: list = []
    yield started
    for agent in reversed(started):
        await agent.stop()
