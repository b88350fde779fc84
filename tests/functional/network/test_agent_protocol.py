"""The server half of the agent protocol: which specs go to which agent, and what agents say.

``agents`` (an ``AgentRecorder``) listens as the L2, DHCP and L3 agents of
``compute1`` and of the network node ``netnode`` and keeps every spec cast to
them; the tests check targets, contents (resolved security rules, VXLAN
peers, DHCP hosts, router interfaces and floating IPs), tombstones and
revisions, then the calls and casts agents make to ``network-server``.
"""

from __future__ import annotations

import pytest

from tinystack.network import messages as m

from .support import HOST, NODE, settle

L2, DHCP, L3 = m.l2_target(HOST), m.dhcp_target(NODE), m.l3_target(NODE)


async def _report(cloud, host: str, agent_type: str, data_ip: str) -> None:
    await cloud.bus.cast(m.SERVER_TARGET, "report_agent", report=m.AgentReport(
        host=host, agent_type=agent_type, binary="test", data_ip=data_ip))
    await settle(cloud)


async def _bound_port(neutron, network_id: str, host: str = HOST, **attrs) -> dict:
    return await neutron.create("port", "admin", network_id=network_id,
                                project_id=await neutron.project("demo"),
                                device_owner="compute:nova", device_id="vm",
                                **{"binding:host_id": host}, **attrs)


@pytest.fixture
async def private(neutron):
    return await neutron.network_with_subnet(cidr="10.1.0.0/24")


async def test_a_bound_port_goes_to_its_hosts_l2_agent(neutron, agents, private):
    net, sub = private
    port = await _bound_port(neutron, net["id"])
    spec = agents.last("sync_port", port["id"], L2)
    assert spec.host == HOST and spec.device == m.tap_name(port["id"])
    assert spec.mac == port["mac_address"] and spec.device_id == "vm"
    assert spec.fixed_ips == [{"subnet_id": sub["id"], "ip_address": "10.1.0.3",
                               "cidr": "10.1.0.0/24", "gateway_ip": "10.1.0.1"}]
    assert spec.network.id == net["id"]
    assert spec.network.segment == m.Segment(network_type="vxlan", segmentation_id=1,
                                             mtu=1450)
    assert spec.port_security_enabled and spec.admin_state_up and not spec.deleted
    unbound = await neutron.create("port", network_id=net["id"])
    assert not [s for s in agents.specs("sync_port") if s.id == unbound["id"]]


async def test_security_rules_are_resolved_per_port(neutron, agents, private):
    net, _ = private
    first = await _bound_port(neutron, net["id"])
    rules = agents.last("sync_port", first["id"], L2).security_rules
    assert m.SecurityRule(direction="egress", ethertype="IPv4") in rules
    assert m.SecurityRule(direction="egress", ethertype="IPv6") in rules
    assert m.SecurityRule(direction="ingress", ethertype="IPv4",
                          remote_ip_prefixes=["10.1.0.3/32"]) in rules
    assert not [r for r in rules if r.direction == "ingress" and r.ethertype == "IPv6"], \
        "a remote group without IPv6 members must match nothing, not everything"
    second = await _bound_port(neutron, net["id"])
    assert m.SecurityRule(direction="ingress", ethertype="IPv4",
                          remote_ip_prefixes=["10.1.0.3/32", "10.1.0.4/32"]) in \
        agents.last("sync_port", first["id"], L2).security_rules, "a member joined the group"
    default = next(g for g in await neutron.listing("security-groups") if g["name"] == "default")
    agents.clear()
    await neutron.create("security_group_rule", security_group_id=default["id"],
                         direction="ingress", protocol="tcp", port_range_min=22,
                         port_range_max=22, remote_ip_prefix="0.0.0.0/0")
    for port in (first, second):
        assert m.SecurityRule(direction="ingress", ethertype="IPv4", protocol="tcp",
                              port_range_min=22, port_range_max=22) in \
            agents.last("sync_port", port["id"], L2).security_rules


async def test_renaming_a_port_recasts_only_that_port(neutron, agents, private):
    net, _ = private
    first = await _bound_port(neutron, net["id"])
    second = await _bound_port(neutron, net["id"])
    agents.clear()
    await neutron.put(f"/v2.0/ports/{first['id']}", {"port": {"name": "renamed"}})
    assert [s.id for s in agents.specs("sync_port")] == [first["id"]]
    agents.clear()
    await neutron.put(f"/v2.0/ports/{first['id']}", {"port": {"fixed_ips": [
        {"ip_address": "10.1.0.77"}]}})
    assert {s.id for s in agents.specs("sync_port")} == {first["id"], second["id"]}
    assert m.SecurityRule(direction="ingress", ethertype="IPv4",
                          remote_ip_prefixes=["10.1.0.4/32", "10.1.0.77/32"]) in \
        agents.last("sync_port", second["id"], L2).security_rules


async def test_a_remote_group_expands_to_its_members(neutron, agents, private):
    net, _ = private
    web = await neutron.create("security_group", name="web")
    db = await neutron.create("security_group", name="db")
    await neutron.create("security_group_rule", security_group_id=db["id"],
                         direction="ingress", protocol="tcp", port_range_min=5432,
                         port_range_max=5432, remote_group_id=web["id"])
    db_port = await _bound_port(neutron, net["id"], security_groups=[db["id"]])
    assert not [r for r in agents.last("sync_port", db_port["id"], L2).security_rules
                if r.protocol == "tcp"]
    await _bound_port(neutron, net["id"], security_groups=[web["id"]],
                      fixed_ips=[{"ip_address": "10.1.0.50"}])
    rules = agents.last("sync_port", db_port["id"], L2).security_rules
    assert m.SecurityRule(direction="ingress", ethertype="IPv4", protocol="tcp",
                          port_range_min=5432, port_range_max=5432,
                          remote_ip_prefixes=["10.1.0.50/32"]) in rules


async def test_no_port_security_means_no_rules(neutron, agents, private):
    net, _ = private
    port = await _bound_port(neutron, net["id"], port_security_enabled=False,
                             security_groups=[])
    spec = agents.last("sync_port", port["id"], L2)
    assert spec.port_security_enabled is False and spec.security_rules == []
    assert spec.allowed_address_pairs == []


async def test_revisions_grow_and_deletes_are_tombstones(neutron, agents, private):
    net, _ = private
    port = await _bound_port(neutron, net["id"])
    first = agents.last("sync_port", port["id"], L2).revision
    await neutron.put(f"/v2.0/ports/{port['id']}", {"port": {"admin_state_up": False}})
    second = agents.last("sync_port", port["id"], L2)
    assert second.revision > first and second.admin_state_up is False
    await neutron.delete(f"/v2.0/ports/{port['id']}")
    gone = agents.last("sync_port", port["id"], L2)
    assert gone.deleted and gone.revision > second.revision
    left = agents.last("sync_network", net["id"], L2)
    assert left.deleted, "compute1 has no port on the network any more"


async def test_moving_a_port_tells_both_hosts(neutron, agents, cloud, private):
    await agents.listen("compute2")
    net, _ = private
    port = await _bound_port(neutron, net["id"])
    await neutron.put(f"/v2.0/ports/{port['id']}", {"port": {"binding:host_id": "compute2"}},
                      "admin")
    assert agents.last("sync_port", port["id"], L2).deleted
    moved = agents.last("sync_port", port["id"], m.l2_target("compute2"))
    assert not moved.deleted and moved.host == "compute2"
    port_now = await neutron.show("ports", port["id"], "admin")
    assert port_now["port"]["status"] == "DOWN"


async def test_vxlan_peers_are_the_other_hosts_data_addresses(neutron, agents, cloud, private):
    await agents.listen("compute2")
    await _report(cloud, HOST, "Linux bridge agent", "192.0.2.11")
    await _report(cloud, "compute2", "Linux bridge agent", "192.0.2.12")
    await _report(cloud, NODE, "Linux bridge agent", "192.0.2.10")
    net, _ = private
    await _bound_port(neutron, net["id"])
    await _bound_port(neutron, net["id"], host="compute2")
    assert agents.last("sync_network", net["id"], L2).vxlan_peers == ["192.0.2.10",
                                                                      "192.0.2.12"]
    assert agents.last("sync_network", net["id"], m.l2_target(NODE)).vxlan_peers == [
        "192.0.2.11", "192.0.2.12"]
    agents.clear()
    await _report(cloud, "compute2", "Linux bridge agent", "192.0.2.22")
    assert agents.last("sync_network", net["id"], L2).vxlan_peers == ["192.0.2.10",
                                                                      "192.0.2.22"]


async def test_the_dhcp_agent_of_the_network_node_gets_every_address(neutron, agents, private):
    net, sub = private
    spec = agents.last("sync_dhcp", net["id"], DHCP)
    assert spec.dhcp_port is not None and spec.dhcp_port.fixed_ips[0]["ip_address"] == \
        "10.1.0.2"
    assert spec.dhcp_port.host == NODE and spec.dhcp_port.port_security_enabled is False
    assert [s.cidr for s in spec.subnets] == ["10.1.0.0/24"]
    assert spec.subnets[0].allocation_pools == [{"start": "10.1.0.2", "end": "10.1.0.254"}]
    assert spec.hosts == [] and spec.dns_domain == "openstacklocal" and spec.metadata
    port = await neutron.create("port", network_id=net["id"], device_id="vm-1")
    spec = agents.last("sync_dhcp", net["id"], DHCP)
    assert spec.hosts == [m.DhcpHost(
        port_id=port["id"], mac=port["mac_address"], ip_address="10.1.0.3",
        hostname="host-10-1-0-3", subnet_id=sub["id"], device_id="vm-1", device_owner="",
        project_id=await neutron.project("demo"))]
    assert agents.last("sync_port", spec.dhcp_port.id, m.l2_target(NODE)).device_owner == \
        "network:dhcp"
    await neutron.put(f"/v2.0/subnets/{sub['id']}", {"subnet": {"enable_dhcp": False}})
    assert agents.last("sync_dhcp", net["id"], DHCP).deleted


async def test_deleting_a_network_tombstones_its_dhcp(neutron, agents, private):
    net, _ = private
    await neutron.delete(f"/v2.0/networks/{net['id']}")
    assert agents.last("sync_dhcp", net["id"], DHCP).deleted


async def test_the_l3_agent_gets_the_whole_router(neutron, agents, private):
    net, sub = private
    public = await neutron.create("network", "admin", **{
        "router:external": True, "provider:network_type": "flat",
        "provider:physical_network": "public"})
    public_sub = await neutron.create("subnet", "admin", network_id=public["id"], ip_version=4,
                                      cidr="172.24.4.0/24", enable_dhcp=False)
    router = await neutron.create("router", external_gateway_info={"network_id": public["id"]})
    await neutron.put(f"/v2.0/routers/{router['id']}/add_router_interface",
                      {"subnet_id": sub["id"]})
    port = await _bound_port(neutron, net["id"])
    fip = await neutron.create("floatingip", floating_network_id=public["id"],
                               port_id=port["id"])
    await neutron.put(f"/v2.0/routers/{router['id']}", {"router": {"routes": [
        {"destination": "192.168.0.0/24", "nexthop": "10.1.0.9"}]}})
    spec = agents.last("sync_router", router["id"], L3)
    assert spec.gateway.ip_address == "172.24.4.2" and spec.gateway.cidr == "172.24.4.0/24"
    assert spec.gateway.subnet_id == public_sub["id"]
    assert spec.gateway.segment == m.Segment(network_type="flat", physical_network="public",
                                             mtu=1500)
    assert spec.external_gateway_ip == "172.24.4.1" and spec.enable_snat
    assert [(i.subnet_id, i.ip_address, i.cidr) for i in spec.interfaces] == [
        (sub["id"], "10.1.0.1", "10.1.0.0/24")]
    assert spec.floating_ips == [m.FloatingIpSpec(
        id=fip["id"], floating_ip_address=fip["floating_ip_address"],
        fixed_ip_address="10.1.0.3")]
    assert spec.routes == [{"destination": "192.168.0.0/24", "nexthop": "10.1.0.9"}]
    gateway_port = spec.gateway.port_id
    assert agents.last("sync_port", gateway_port, m.l2_target(NODE)).device_owner == \
        "network:router_gateway"
    await neutron.put(f"/v2.0/floatingips/{fip['id']}", {"floatingip": {"port_id": None}})
    assert agents.last("sync_router", router["id"], L3).floating_ips == []
    await neutron.put(f"/v2.0/routers/{router['id']}", {"router": {"routes": []}})
    await neutron.put(f"/v2.0/routers/{router['id']}/remove_router_interface",
                      {"subnet_id": sub["id"]})
    await neutron.delete(f"/v2.0/routers/{router['id']}")
    assert agents.last("sync_router", router["id"], L3).deleted
    assert agents.last("sync_port", gateway_port, m.l2_target(NODE)).deleted


async def test_a_router_interface_carries_its_subnets_ipv6_modes(neutron, agents, private):
    net, sub = private
    v6 = await neutron.create("subnet", network_id=net["id"], ip_version=6, cidr="fd00:31::/64",
                              ipv6_ra_mode="slaac", ipv6_address_mode="slaac")
    router = await neutron.create("router")
    for subnet in (sub, v6):
        await neutron.put(f"/v2.0/routers/{router['id']}/add_router_interface",
                          {"subnet_id": subnet["id"]})
    spec = agents.last("sync_router", router["id"], L3)
    by_subnet = {i.subnet_id: i for i in spec.interfaces}
    assert (by_subnet[v6["id"]].ip_version, by_subnet[v6["id"]].ip_address,
            by_subnet[v6["id"]].gateway_ip, by_subnet[v6["id"]].ipv6_ra_mode,
            by_subnet[v6["id"]].ipv6_address_mode) == (6, "fd00:31::1", "fd00:31::1", "slaac",
                                                       "slaac")
    assert (by_subnet[sub["id"]].ip_version, by_subnet[sub["id"]].ipv6_ra_mode) == (4, None)


async def test_a_network_going_down_takes_its_ports_down(neutron, agents, private):
    net, _ = private
    port = await _bound_port(neutron, net["id"])
    await neutron.put(f"/v2.0/networks/{net['id']}", {"network": {"admin_state_up": False}})
    assert agents.last("sync_port", port["id"], L2).admin_state_up is False


# -- what agents ask and say -------------------------------------------------------------


async def test_agent_state_is_everything_an_agent_should_hold(neutron, cloud, agents, private):
    net, _ = private
    port = await _bound_port(neutron, net["id"])
    router = await neutron.create("router")
    l2 = m.AgentState.model_validate(await cloud.bus.call(
        m.SERVER_TARGET, "agent_state", host=HOST, agent_type="Linux bridge agent"))
    assert [p.id for p in l2.ports] == [port["id"]]
    assert [n.id for n in l2.networks] == [net["id"]] and not l2.dhcp and not l2.routers
    dhcp = m.AgentState.model_validate(await cloud.bus.call(
        m.SERVER_TARGET, "agent_state", host=NODE, agent_type="DHCP agent"))
    assert [d.network_id for d in dhcp.dhcp] == [net["id"]] and not dhcp.routers
    l3 = m.AgentState.model_validate(await cloud.bus.call(
        m.SERVER_TARGET, "agent_state", host=NODE, agent_type="L3 agent"))
    assert [r.id for r in l3.routers] == [router["id"]]
    elsewhere = m.AgentState.model_validate(await cloud.bus.call(
        m.SERVER_TARGET, "agent_state", host=HOST, agent_type="DHCP agent"))
    assert not elsewhere.dhcp
    node_l2 = m.AgentState.model_validate(await cloud.bus.call(
        m.SERVER_TARGET, "agent_state", host=NODE, agent_type="Linux bridge agent"))
    assert [p.device_owner for p in node_l2.ports] == ["network:dhcp"]


async def test_a_wired_port_becomes_active(neutron, cloud, agents, private):
    net, _ = private
    port = await _bound_port(neutron, net["id"])
    await cloud.bus.cast(m.SERVER_TARGET, "report_port", report=m.PortReport(
        port_id=port["id"], host="elsewhere", revision=1, status="ACTIVE"))
    await settle(cloud)
    assert (await neutron.show("ports", port["id"]))["port"]["status"] == "DOWN"
    await cloud.bus.cast(m.SERVER_TARGET, "report_port", report=m.PortReport(
        port_id=port["id"], host=HOST, revision=1, status="ACTIVE"))
    await settle(cloud)
    assert (await neutron.show("ports", port["id"]))["port"]["status"] == "ACTIVE"


async def _status(neutron, port_id: str) -> str:
    return (await neutron.show("ports", port_id))["port"]["status"]


async def _wired(cloud, port_id: str, host: str = HOST, status: str = "ACTIVE") -> None:
    await cloud.bus.cast(m.SERVER_TARGET, "report_port", report=m.PortReport(
        port_id=port_id, host=host, revision=1, status=status))
    await settle(cloud)


async def _served(cloud, network_id: str, revision: int, *port_ids: str) -> None:
    await cloud.bus.cast(m.SERVER_TARGET, "report_dhcp", report=m.DhcpReport(
        network_id=network_id, host=NODE, revision=revision, port_ids=list(port_ids)))
    await settle(cloud)


async def test_a_port_is_active_once_wired_and_served_by_dhcp(neutron, cloud, agents, private):
    """Neutron's provisioning blocks: with a DHCP agent alive on the network node, the
    L2 agent's report alone leaves a port DOWN until the DHCP agent serves it, in
    either order; the network's own ports need only the L2 agent."""
    net, _ = private
    await _report(cloud, NODE, "DHCP agent", "192.0.2.10")
    first = await _bound_port(neutron, net["id"])
    await _wired(cloud, first["id"])
    assert await _status(neutron, first["id"]) == "DOWN", "DHCP does not serve it yet"
    await _served(cloud, net["id"], 10)
    assert await _status(neutron, first["id"]) == "DOWN", "a revision without it"
    await _served(cloud, net["id"], 11, first["id"])
    assert await _status(neutron, first["id"]) == "ACTIVE"

    second = await _bound_port(neutron, net["id"])
    await _served(cloud, net["id"], 12, first["id"], second["id"])
    assert await _status(neutron, second["id"]) == "DOWN", "not wired yet"
    await _wired(cloud, second["id"])
    assert await _status(neutron, second["id"]) == "ACTIVE"

    third = await _bound_port(neutron, net["id"])
    await _wired(cloud, third["id"])
    await _served(cloud, net["id"], 9, third["id"])
    assert await _status(neutron, third["id"]) == "DOWN", "an older DHCP report counts not"
    await _wired(cloud, third["id"], status="DOWN")
    await _served(cloud, net["id"], 13, first["id"], second["id"], third["id"])
    assert await _status(neutron, third["id"]) == "DOWN", "its device went away meanwhile"

    dhcp_port = (await neutron.listing("ports", "?device_owner=network:dhcp", "admin"))[0]
    await _wired(cloud, dhcp_port["id"], host=NODE)
    assert await _status(neutron, dhcp_port["id"]) == "ACTIVE", "network:* ports: L2 alone"


async def test_without_a_live_dhcp_agent_the_l2_report_suffices(neutron, cloud, agents):
    net, _ = await neutron.network_with_subnet(cidr="10.2.0.0/24", enable_dhcp=False)
    await _report(cloud, NODE, "DHCP agent", "192.0.2.10")
    port = await _bound_port(neutron, net["id"])
    await _wired(cloud, port["id"])
    assert await _status(neutron, port["id"]) == "ACTIVE", "no DHCP-enabled subnet"


async def test_the_metadata_proxy_finds_a_port_by_address(neutron, cloud, private):
    net, _ = private
    port = await _bound_port(neutron, net["id"])
    found = await cloud.bus.call(m.SERVER_TARGET, "port_by_address", network_id=net["id"],
                                 ip_address="10.1.0.3")
    assert found == {"port_id": port["id"], "device_id": "vm", "device_owner": "compute:nova",
                     "project_id": await neutron.project("demo")}
    assert await cloud.bus.call(m.SERVER_TARGET, "port_by_address", network_id=net["id"],
                                ip_address="10.1.0.99") is None


async def test_a_router_report_sets_floating_ip_status(neutron, cloud, agents, private):
    net, sub = private
    public = await neutron.create("network", "admin", **{"router:external": True})
    await neutron.create("subnet", "admin", network_id=public["id"], ip_version=4,
                         cidr="172.24.4.0/24", enable_dhcp=False)
    router = await neutron.create("router", external_gateway_info={"network_id": public["id"]})
    await neutron.put(f"/v2.0/routers/{router['id']}/add_router_interface",
                      {"subnet_id": sub["id"]})
    port = await _bound_port(neutron, net["id"])
    fip = await neutron.create("floatingip", floating_network_id=public["id"],
                               port_id=port["id"])
    await cloud.bus.cast(m.SERVER_TARGET, "report_router", report=m.RouterReport(
        router_id=router["id"], host=NODE, revision=1, status="ERROR",
        floating_ips={fip["id"]: "ERROR"}, detail="boom"))
    await settle(cloud)
    assert (await neutron.show("floatingips", fip["id"]))["floatingip"]["status"] == "ERROR"
    assert (await neutron.show("routers", router["id"]))["router"]["status"] == "ERROR"
    await cloud.bus.cast(m.SERVER_TARGET, "report_dhcp", report=m.DhcpReport(
        network_id=net["id"], host=NODE, revision=1))
    await settle(cloud)


async def test_a_new_dhcp_agent_becomes_the_network_node(neutron, cloud, agents, private):
    await agents.listen("netnode2")
    net, _ = private
    router = await neutron.create("router")
    await _report(cloud, NODE, "DHCP agent", "192.0.2.10")
    await _report(cloud, "netnode2", "DHCP agent", "192.0.2.20")
    dhcp_port = (await neutron.listing("ports", "?device_owner=network:dhcp", "admin"))[0]
    assert dhcp_port["binding:host_id"] == "netnode2"
    assert agents.last("sync_port", dhcp_port["id"], m.l2_target(NODE)).deleted
    assert not agents.last("sync_port", dhcp_port["id"], m.l2_target("netnode2")).deleted
    assert agents.last("sync_dhcp", net["id"], DHCP).deleted
    assert not agents.last("sync_dhcp", net["id"], m.dhcp_target("netnode2")).deleted
    assert agents.last("sync_router", router["id"], L3).deleted
    assert not agents.last("sync_router", router["id"], m.l3_target("netnode2")).deleted
