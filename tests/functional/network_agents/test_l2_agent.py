"""The L2 agent's reconciliation over the in-process bus, with the fake L2 driver.

A test plays the network server: it casts ``sync_port``/``sync_network`` to
``network-l2.<host>`` (or hands specs to the agent) and reads the reports
the fake server keeps. Time is a fake clock; nothing sleeps.
"""

from __future__ import annotations

import asyncio

import pytest
from fakes.network_drivers import FakeL2Driver

from tinystack.network.agents.l2 import L2Agent
from tinystack.network.messages import AgentState, SecurityRule, l2_target, tap_name

from .conftest import HOST


@pytest.fixture
def make_agent(bus, options, clock, agents):
    async def make(driver: FakeL2Driver | None = None, *, run: bool = True) -> L2Agent:
        agent = L2Agent(host=HOST, bus=bus, driver=driver or FakeL2Driver(), options=options,
                        clock=clock)
        await agent.start()
        agents.append(agent)
        if run:
            await agent.run_once()
        return agent
    return make


async def wait_status(server, port_id: str, status: str, revision: int | None = None) -> None:
    def seen() -> bool:
        report = server.port_status(port_id)
        return (report is not None and report.status == status
                and (revision is None or report.revision == revision))
    try:
        await server.wait_for(seen, 5)
    except TimeoutError:
        raise AssertionError(f"port {port_id} not {status}: {server.port_status(port_id)}") \
            from None


async def test_a_port_over_the_bus_is_wired_and_reported_active(make_agent, bus, server, specs):
    driver = FakeL2Driver()
    await make_agent(driver)
    network = specs.network()
    port = specs.port(network)
    driver.add_device(tap_name(port.id))

    await bus.cast(l2_target(HOST), "sync_port", spec=port)
    await wait_status(server, port.id, "ACTIVE", port.revision)

    assert driver.networks[network.id].vni is None, "no peer yet: no tunnel"
    device = driver.devices[tap_name(port.id)]
    assert (device.network_id, device.up, device.mtu) == (network.id, True, 1450)
    assert list(driver.filter) == [port.id]


async def test_a_port_is_down_until_its_tap_appears_then_active_at_once(
        make_agent, server, specs):
    driver = FakeL2Driver()
    agent = await make_agent(driver)
    loop = asyncio.get_running_loop().create_task(agent.run_forever())
    try:
        port = specs.port(specs.network())
        await agent.receive_port(port)
        await wait_status(server, port.id, "DOWN")

        driver.add_device(tap_name(port.id))

        await wait_status(server, port.id, "ACTIVE")
    finally:
        loop.cancel()


async def test_converged_it_does_nothing(make_agent, specs):
    driver = FakeL2Driver()
    agent = await make_agent(driver)
    port = specs.port(specs.network())
    driver.add_device(tap_name(port.id))
    await agent.receive_port(port)
    driver.reset()

    await agent.run_once()
    await agent.sync(f"port:{port.id}")

    assert driver.mutations() == []


async def test_a_restart_removes_strays_and_keeps_what_is_wanted(make_agent, server, specs):
    driver = FakeL2Driver()
    first = await make_agent(driver)
    wanted, stray = specs.network(), specs.network()
    keep, drop = specs.port(wanted), specs.port(stray)
    for port in (keep, drop):
        driver.add_device(tap_name(port.id))
        await first.receive_port(port)
    await first.stop()
    server.states["Linux bridge agent"] = AgentState(ports=[keep], networks=[wanted])
    driver.reset()

    second = await make_agent(driver)

    assert second.synced
    assert set(driver.networks) == {wanted.id}
    assert driver.mutations() == ["remove_network", "ensure_filter"]
    assert list(driver.filter) == [keep.id]


async def test_without_the_servers_word_nothing_found_is_removed(make_agent, server, specs):
    driver = FakeL2Driver()
    first = await make_agent(driver)
    port = specs.port(specs.network())
    driver.add_device(tap_name(port.id))
    await first.receive_port(port)
    await first.stop()
    server.silent = True
    driver.reset()

    second = await make_agent(driver)

    assert not second.synced
    assert driver.mutations() == []
    assert port.network.id in driver.networks


async def test_an_older_revision_never_overwrites_a_newer_one(make_agent, specs):
    driver = FakeL2Driver()
    agent = await make_agent(driver)
    port = specs.port(specs.network())
    driver.add_device(tap_name(port.id))
    newer = specs.revise(port, 10, security_rules=[SecurityRule(direction="ingress",
                                                                protocol="tcp")])
    older = specs.revise(port, 9, security_rules=[])

    await agent.receive_port(newer)
    await agent.receive_port(older)

    assert driver.filter[port.id][0]["protocol"] == "tcp"


async def test_deleting_the_last_port_unplugs_it_and_removes_the_network(
        make_agent, server, specs):
    driver = FakeL2Driver()
    agent = await make_agent(driver)
    network = specs.network()
    port = specs.port(network)
    driver.add_device(tap_name(port.id))
    await agent.receive_port(port)

    await agent.receive_port(specs.revise(port, specs.revision(), deleted=True))

    assert network.id not in driver.networks
    assert driver.devices[tap_name(port.id)].network_id is None
    assert driver.filter is None
    assert tap_name(port.id) in driver.devices, "the tap is compute's: never deleted here"


async def test_a_temporary_failure_backs_off_then_converges(make_agent, server, specs, clock):
    driver = FakeL2Driver(fail_on={"ensure_network"}, fail_times=2)
    agent = await make_agent(driver)
    port = specs.port(specs.network())
    driver.add_device(tap_name(port.id))

    await agent.receive_port(port)
    assert server.port_status(port.id) is None
    await agent.run_once()
    assert driver.failures == 1, "not due yet: the backoff holds"

    clock.advance(1.1)
    await agent.run_once()
    clock.advance(4.1)
    await agent.run_once()

    assert driver.failures == 2
    await wait_status(server, port.id, "ACTIVE")


async def test_a_permanent_failure_reports_error_until_a_newer_revision(
        make_agent, server, specs, clock):
    driver = FakeL2Driver(fail_on={"plug_port"}, fail_kind="permanent", fail_times=1)
    agent = await make_agent(driver)
    port = specs.port(specs.network())
    driver.add_device(tap_name(port.id))

    await agent.receive_port(port)
    await wait_status(server, port.id, "ERROR")
    assert "plug_port failed on purpose" in server.port_status(port.id).detail
    clock.advance(100)
    await agent.run_once()
    assert "plug_port" not in driver.mutations()

    await agent.receive_port(specs.revise(port, specs.revision()))

    await wait_status(server, port.id, "ACTIVE")


async def test_local_ports_get_their_bridge_without_being_reported(make_agent, server, specs):
    driver = FakeL2Driver()
    agent = await make_agent(driver)
    network = specs.network()
    dhcp_port = specs.port(network, device_owner="network:dhcp")
    driver.add_device(tap_name(dhcp_port.id))

    await agent.offer_local_port(dhcp_port)

    assert network.id in driver.networks
    assert driver.devices[tap_name(dhcp_port.id)].network_id == network.id
    assert server.port_status(dhcp_port.id) is None
    assert driver.filter is None, "network:* ports are not filtered"
    await agent.withdraw_local_port(dhcp_port.id)
    assert network.id not in driver.networks


async def test_a_hundred_ports_at_once_share_filter_rewrites(make_agent, server, specs):
    driver = FakeL2Driver()
    agent = await make_agent(driver)
    network = specs.network()
    ports = [specs.port(network, ip=f"10.0.1.{i}") for i in range(1, 101)]
    for port in ports:
        driver.add_device(tap_name(port.id))

    await asyncio.gather(*(agent.receive_port(p) for p in ports))

    assert len(driver.filter) == 100
    assert driver.filter_writes <= 3
    assert all(server.port_status(p.id).status == "ACTIVE" for p in ports)


async def test_new_vxlan_peers_reach_the_network(make_agent, bus, specs):
    driver = FakeL2Driver()
    agent = await make_agent(driver)
    network = specs.network(peers=["192.0.2.2"])
    port = specs.port(network)
    driver.add_device(tap_name(port.id))
    await agent.receive_port(port)

    assert driver.networks[network.id].vni == network.segment.segmentation_id
    await agent.receive_network(specs.revise(network, specs.revision(),
                                             vxlan_peers=["192.0.2.2", "192.0.2.3"]))

    assert driver.networks[network.id].peers == {"192.0.2.2", "192.0.2.3"}


async def test_each_audit_sends_a_heartbeat(make_agent, server):
    await make_agent()

    await server.wait_for(lambda: server.agents, 5)
    reports = [r for r in server.agents if r.agent_type == "Linux bridge agent"]

    assert reports and reports[-1].host == HOST
    assert reports[-1].binary == "neutron-linuxbridge-agent"


async def test_removing_a_rule_forgets_the_connections_it_allowed(make_agent, specs):
    driver = FakeL2Driver()
    agent = await make_agent(driver)
    port = specs.port(specs.network())
    driver.add_device(tap_name(port.id))
    await agent.receive_port(port)
    no_icmp = [r for r in port.security_rules if r.protocol != "icmp"]

    await agent.receive_port(specs.revise(port, specs.revision(), security_rules=no_icmp))
    await agent.receive_port(specs.revise(port, specs.revision(), security_rules=[
        *no_icmp, SecurityRule(direction="ingress", protocol="tcp")]))

    assert driver.forgotten == [(port.id, True, False)], "adding a rule forgets nothing"


async def test_a_member_joining_a_remote_group_costs_no_inspection_nor_forgetting(
        make_agent, server, specs):
    """Every member of a group is recast when one joins (their remote-group rules grow):
    that narrows nothing, so no conntrack is dumped, the wired port is not looked at
    again (the server hears that the revision is in place); the filter is rewritten."""
    driver = FakeL2Driver()
    agent = await make_agent(driver)
    network = specs.network()
    members = SecurityRule(direction="ingress", remote_ip_prefixes=["10.0.0.5/32"])
    port = specs.port(network, security_rules=[members, SecurityRule(direction="egress")])
    driver.add_device(tap_name(port.id))
    await agent.receive_port(port)
    await wait_status(server, port.id, "ACTIVE", port.revision)
    inspected = []
    real_inspect = driver.inspect_port

    async def counting(spec):
        inspected.append(spec.id)
        return await real_inspect(spec)
    driver.inspect_port = counting
    writes, reports = driver.filter_writes, len(server.ports)

    grown = SecurityRule(direction="ingress", remote_ip_prefixes=["10.0.0.5/32", "10.0.0.6/32"])
    await agent.receive_port(specs.revise(port, specs.revision(), network=specs.revise(
        network, specs.revision()), security_rules=[grown, SecurityRule(direction="egress")]))

    assert driver.forgotten == [] and inspected == []
    assert driver.filter_writes == writes + 1
    await server.wait_for(lambda: len(server.ports) == reports + 1, 5)
    assert server.ports[-1].revision > port.revision, "the new revision is in place"

    await agent.receive_port(specs.revise(port, specs.revision(), security_rules=[
        SecurityRule(direction="ingress", remote_ip_prefixes=["10.0.0.6/32"]),
        SecurityRule(direction="egress")]))
    assert driver.forgotten == [(port.id, True, False)], "a member left: its connections go"

    await agent.run_once()
    assert inspected, "an audit looks at every port again"
