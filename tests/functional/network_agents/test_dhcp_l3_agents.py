"""The DHCP and L3 agents' reconciliation, with fake drivers (and a real L2 agent on a fake).

A test casts ``sync_dhcp``/``sync_router`` as the network server would and
reads the fake server's ``report_dhcp``/``report_router``; the fake drivers
say what was changed on the "machine".
"""

from __future__ import annotations

import asyncio

import pytest
from fakes.network_drivers import FakeDhcpDriver, FakeL2Driver, FakeRouterDriver

from tinystack.network.agents.dhcp import DhcpAgent
from tinystack.network.agents.l2 import L2Agent
from tinystack.network.agents.l3 import GATEWAYS, L3Agent
from tinystack.network.messages import AgentState, dhcp_target, l3_target, tap_name

from .conftest import HOST


class FakeMetadata:
    def __init__(self) -> None:
        self.serving: dict[str, str] = {}

    async def ensure(self, network_id: str, namespace: str) -> None:
        self.serving[network_id] = namespace

    async def remove(self, network_id: str) -> None:
        self.serving.pop(network_id, None)

    async def close(self) -> None:
        self.serving.clear()

    def statistics(self) -> dict:
        return {"listeners": len(self.serving)}


@pytest.fixture
def make_l2(bus, options, clock, agents):
    async def make() -> L2Agent:
        agent = L2Agent(host=HOST, bus=bus, driver=FakeL2Driver(), options=options, clock=clock)
        await agent.start()
        agents.append(agent)
        return agent
    return make


@pytest.fixture
def make_dhcp(bus, options, clock, agents):
    async def make(driver=None, l2=None, metadata=None) -> DhcpAgent:
        agent = DhcpAgent(host=HOST, bus=bus, driver=driver or FakeDhcpDriver(), l2=l2,
                          metadata=metadata, options=options, clock=clock)
        await agent.start()
        agents.append(agent)
        await agent.run_once()
        return agent
    return make


@pytest.fixture
def make_l3(bus, options, clock, agents):
    async def make(driver=None, l2=None) -> L3Agent:
        agent = L3Agent(host=HOST, bus=bus, driver=driver or FakeRouterDriver(), l2=l2,
                        options=options, clock=clock)
        await agent.start()
        agents.append(agent)
        await agent.run_once()
        return agent
    return make


async def wait_dhcp(server, network_id: str, revision: int, status: str = "ACTIVE"):
    def seen():
        return [r for r in server.dhcp if r.network_id == network_id and r.revision == revision
                and r.status == status]
    await server.wait_for(seen, 5)
    return seen()[-1]


async def wait_router(server, router_id: str, revision: int, status: str = "ACTIVE"):
    def seen():
        return [r for r in server.routers if r.router_id == router_id and r.revision == revision
                and r.status == status]
    await server.wait_for(seen, 5)
    return seen()[-1]


# -- DHCP ------------------------------------------------------------------------------------


async def test_a_dhcp_spec_starts_a_server_with_its_port_on_the_bridge(
        make_dhcp, make_l2, bus, server, specs):
    l2 = await make_l2()
    metadata = FakeMetadata()
    driver = FakeDhcpDriver()
    await make_dhcp(driver, l2=l2, metadata=metadata)
    network = specs.network()
    ports = [specs.port(network, ip="10.0.0.5"), specs.port(network, ip="10.0.0.6")]
    spec = specs.dhcp(network, ports)

    await bus.cast(dhcp_target(HOST), "sync_dhcp", spec=spec)
    report = await wait_dhcp(server, network.id, spec.revision)

    assert report.port_ids == sorted(p.id for p in ports)
    assert driver.servers[network.id].spec == spec
    assert network.id in l2.driver.networks, "the DHCP port's bridge exists"
    assert metadata.serving == {network.id: f"qdhcp-{network.id}"}


async def test_converged_dhcp_does_nothing_and_a_new_host_updates_it(make_dhcp, specs):
    driver = FakeDhcpDriver()
    agent = await make_dhcp(driver)
    network = specs.network()
    spec = specs.dhcp(network, [specs.port(network)])
    await agent.receive(spec)
    driver.reset()

    await agent.run_once()
    assert driver.mutations() == []

    more = specs.revise(spec, specs.revision(), hosts=[*spec.hosts, *specs.dhcp(
        network, [specs.port(network, ip="10.0.0.9")]).hosts])
    await agent.receive(more)
    assert driver.mutations() == ["ensure"]
    assert len(driver.servers[network.id].spec.hosts) == 2


async def test_a_server_that_dies_is_started_again_at_once(make_dhcp, specs):
    driver = FakeDhcpDriver()
    agent = await make_dhcp(driver)
    loop = asyncio.get_running_loop().create_task(agent.run_forever())
    try:
        network = specs.network()
        await agent.receive(specs.dhcp(network))
        driver.crash(network.id)
        for _ in range(100):
            if driver.servers[network.id].running:
                break
            await asyncio.sleep(0.01)
    finally:
        loop.cancel()

    assert driver.servers[network.id].running
    assert driver.servers[network.id].starts == 2


async def test_deleting_dhcp_removes_server_proxy_and_bridge(make_dhcp, make_l2, specs):
    l2 = await make_l2()
    metadata = FakeMetadata()
    driver = FakeDhcpDriver()
    agent = await make_dhcp(driver, l2=l2, metadata=metadata)
    network = specs.network()
    spec = specs.dhcp(network)
    l2.driver.add_device(tap_name(spec.dhcp_port.id))
    await agent.receive(spec)

    await agent.receive(specs.revise(spec, specs.revision(), deleted=True))

    assert driver.servers == {}
    assert metadata.serving == {}
    assert network.id not in l2.driver.networks


async def test_a_network_without_dhcp_subnets_has_no_server(make_dhcp, specs):
    driver = FakeDhcpDriver()
    agent = await make_dhcp(driver)
    network = specs.network()
    spec = specs.dhcp(network)
    await agent.receive(spec)
    subnets = [s.model_copy(update={"enable_dhcp": False}) for s in spec.subnets]

    await agent.receive(specs.revise(spec, specs.revision(), subnets=subnets))

    assert driver.servers == {}


async def test_dhcp_restart_removes_stray_servers_but_only_with_the_servers_word(
        make_dhcp, server, specs):
    driver = FakeDhcpDriver()
    first = await make_dhcp(driver)
    keep, drop = specs.dhcp(specs.network()), specs.dhcp(specs.network())
    await first.receive(keep)
    await first.receive(drop)
    await first.stop()
    driver.reset()

    server.silent = True
    blind = await make_dhcp(driver)
    assert driver.mutations() == []
    await blind.stop()

    server.silent = False
    server.states["DHCP agent"] = AgentState(dhcp=[keep])
    await make_dhcp(driver)
    assert driver.mutations() == ["remove"]
    assert set(driver.servers) == {keep.network_id}


async def test_the_metadata_lookup_names_the_guest_behind_an_address(make_dhcp, specs):
    agent = await make_dhcp()
    network = specs.network()
    port = specs.port(network, ip="10.0.0.7")
    await agent.receive(specs.dhcp(network, [port]))

    assert agent.lookup(network.id, "10.0.0.7") == {
        "device_id": port.device_id, "project_id": "proj-1", "device_owner": "",
        "port_id": port.id}
    assert agent.lookup(network.id, "10.0.0.8") is None
    assert agent.lookup("other", "10.0.0.7") is None


# -- L3 --------------------------------------------------------------------------------------


async def test_a_router_is_built_with_the_hosts_gateway_and_floating_ips_reported(
        make_l3, make_l2, bus, server, specs):
    l2 = await make_l2()
    driver = FakeRouterDriver()
    await make_l3(driver, l2=l2)
    internal, external = specs.network(), specs.network(flat=True)
    router = specs.router(internal, external, fips=[("172.24.4.20", "10.0.0.5")])

    await bus.cast(l3_target(HOST), "sync_router", spec=router)
    report = await wait_router(server, router.id, router.revision)

    assert report.floating_ips == {"fip-0": "ACTIVE"}
    assert driver.routers[router.id] == router
    assert driver.gateways == {external.id: ["172.24.4.1/24"]}
    assert {internal.id, external.id} <= set(l2.driver.networks)


async def test_converged_l3_does_nothing_and_a_disassociation_updates_nat(
        make_l3, server, specs):
    driver = FakeRouterDriver()
    agent = await make_l3(driver)
    router = specs.router(specs.network(), specs.network(flat=True),
                          fips=[("172.24.4.20", "10.0.0.5")])
    await agent.receive(router)
    driver.reset()

    await agent.run_once()
    assert driver.mutations() == []

    without = specs.revise(router, specs.revision(), floating_ips=[])
    await agent.receive(without)
    report = await wait_router(server, router.id, without.revision)

    assert driver.mutations() == ["ensure"]
    assert report.floating_ips == {}


@pytest.mark.parametrize("change", [{"deleted": True}, {"admin_state_up": False}])
async def test_a_deleted_or_disabled_router_is_removed_with_the_hosts_gateway(
        make_l3, make_l2, specs, change):
    l2 = await make_l2()
    driver = FakeRouterDriver()
    agent = await make_l3(driver, l2=l2)
    internal, external = specs.network(), specs.network(flat=True)
    router = specs.router(internal, external)
    await agent.receive(router)

    await agent.receive(specs.revise(router, specs.revision(), **change))

    assert driver.routers == {}
    assert driver.gateways == {}
    assert l2.driver.networks == {}


async def test_l3_restart_removes_stray_routers(make_l3, server, specs):
    driver = FakeRouterDriver()
    first = await make_l3(driver)
    external = specs.network(flat=True)
    keep = specs.router(specs.network(), external)
    drop = specs.router(specs.network(), external)
    await first.receive(keep)
    await first.receive(drop)
    await first.stop()
    server.states["L3 agent"] = AgentState(routers=[keep])
    driver.reset()

    second = await make_l3(driver)

    assert driver.mutations() == ["remove"]
    assert set(driver.routers) == {keep.id}
    await second.sync(GATEWAYS)
    assert driver.gateways == {external.id: ["172.24.4.1/24"]}


async def test_clean_on_exit_removes_everything_the_agents_made(bus, options, clock, specs):
    from dataclasses import replace

    clean = replace(options, clean_on_exit=True)
    l2_driver, dhcp_driver, l3_driver = FakeL2Driver(), FakeDhcpDriver(), FakeRouterDriver()
    l2 = L2Agent(host=HOST, bus=bus, driver=l2_driver, options=clean, clock=clock)
    dhcp = DhcpAgent(host=HOST, bus=bus, driver=dhcp_driver, l2=l2, options=clean, clock=clock)
    l3 = L3Agent(host=HOST, bus=bus, driver=l3_driver, l2=l2, options=clean, clock=clock)
    for agent in (l2, dhcp, l3):
        await agent.start()
        await agent.run_once()
    internal = specs.network()
    port = specs.port(internal)
    l2_driver.add_device(tap_name(port.id))
    await l2.receive_port(port)
    await dhcp.receive(specs.dhcp(internal, [port]))
    await l3.receive(specs.router(internal, specs.network(flat=True)))

    for agent in (l3, dhcp, l2):
        await agent.stop()

    assert (l2_driver.networks, l2_driver.filter) == ({}, None)
    assert dhcp_driver.servers == {}
    assert (l3_driver.routers, l3_driver.gateways) == ({}, {})
