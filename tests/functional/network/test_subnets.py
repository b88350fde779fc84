"""Subnets: pools, gateway, DNS, host routes, DHCP port, IPv6, and Neutron's errors."""

from __future__ import annotations

import ipaddress

import pytest


def _error(body: dict) -> str:
    return body["NeutronError"]["type"]


async def test_a_subnet_gets_neutrons_defaults(neutron):
    net = await neutron.create("network")
    sub = await neutron.create("subnet", network_id=net["id"], ip_version=4,
                               cidr="10.0.0.0/26", name="private-subnet")
    assert sub["gateway_ip"] == "10.0.0.1"
    assert sub["allocation_pools"] == [{"start": "10.0.0.2", "end": "10.0.0.62"}]
    assert sub["enable_dhcp"] is True and sub["dns_nameservers"] == []
    assert sub["host_routes"] == [] and sub["ipv6_ra_mode"] is None
    assert sub["project_id"] == await neutron.project("demo")
    shown = await neutron.show("networks", net["id"])
    assert shown["network"]["subnets"] == [sub["id"]]
    assert shown["network"]["revision_number"] == 2


async def test_the_dhcp_port_takes_the_first_free_address(neutron):
    net, sub = await neutron.network_with_subnet(cidr="10.2.0.0/24")
    ports = await neutron.listing("ports", f"?network_id={net['id']}", "admin")
    assert [(p["device_owner"], p["fixed_ips"][0]["ip_address"]) for p in ports] == [
        ("network:dhcp", "10.2.0.2")]
    assert ports[0]["binding:host_id"] == "netnode"
    assert ports[0]["device_id"] == f"dhcp-{net['id']}"
    demo_view = await neutron.listing("ports", f"?network_id={net['id']}")
    assert len(demo_view) == 1


async def test_no_dhcp_no_dhcp_port_and_toggling_follows(neutron):
    net, sub = await neutron.network_with_subnet(enable_dhcp=False)
    assert await neutron.listing("ports", f"?network_id={net['id']}") == []
    r = await neutron.put(f"/v2.0/subnets/{sub['id']}", {"subnet": {"enable_dhcp": True}})
    assert r.status_code == 200
    assert len(await neutron.listing("ports", "?device_owner=network:dhcp")) == 1
    await neutron.put(f"/v2.0/subnets/{sub['id']}", {"subnet": {"enable_dhcp": False}})
    assert await neutron.listing("ports", f"?network_id={net['id']}") == []


async def test_given_pools_gateway_dns_and_routes(neutron):
    net = await neutron.create("network")
    sub = await neutron.create(
        "subnet", network_id=net["id"], ip_version=4, cidr="192.168.5.0/24",
        gateway_ip="192.168.5.254", enable_dhcp=False,
        allocation_pools=[{"start": "192.168.5.100", "end": "192.168.5.110"},
                          {"start": "192.168.5.10", "end": "192.168.5.20"}],
        dns_nameservers=["8.8.8.8", "1.1.1.1"],
        host_routes=[{"destination": "10.9.0.0/16", "nexthop": "192.168.5.1"}])
    assert sub["allocation_pools"] == [{"start": "192.168.5.10", "end": "192.168.5.20"},
                                       {"start": "192.168.5.100", "end": "192.168.5.110"}]
    assert sub["gateway_ip"] == "192.168.5.254"
    assert sub["dns_nameservers"] == ["8.8.8.8", "1.1.1.1"]
    assert sub["host_routes"] == [{"destination": "10.9.0.0/16", "nexthop": "192.168.5.1"}]
    r = await neutron.put(f"/v2.0/subnets/{sub['id']}", {"subnet": {
        "dns_nameservers": ["9.9.9.9"], "host_routes": [],
        "allocation_pools": [{"start": "192.168.5.30", "end": "192.168.5.40"}]}})
    updated = r.json()["subnet"]
    assert updated["dns_nameservers"] == ["9.9.9.9"] and updated["host_routes"] == []
    assert updated["allocation_pools"] == [{"start": "192.168.5.30", "end": "192.168.5.40"}]


async def test_no_gateway(neutron):
    net = await neutron.create("network")
    sub = await neutron.create("subnet", network_id=net["id"], ip_version=4,
                               cidr="10.3.0.0/29", gateway_ip=None)
    assert sub["gateway_ip"] is None
    assert sub["allocation_pools"] == [{"start": "10.3.0.1", "end": "10.3.0.6"}]


@pytest.mark.parametrize("attrs, kind, status", [
    ({"cidr": "10.0.0.1/24"}, "HTTPBadRequest", 400),
    ({"cidr": "10.0.0.0/24", "ip_version": 6}, "InvalidInput", 400),
    ({"cidr": "10.0.0.0/24", "allocation_pools": [{"start": "10.0.0.2", "end": "10.0.1.9"}]},
     "OutOfBoundsAllocationPool", 400),
    ({"cidr": "10.0.0.0/24", "allocation_pools": [{"start": "10.0.0.9", "end": "10.0.0.2"}]},
     "InvalidAllocationPool", 400),
    ({"cidr": "10.0.0.0/24", "allocation_pools": [{"start": "10.0.0.2", "end": "10.0.0.9"},
                                                  {"start": "10.0.0.5", "end": "10.0.0.20"}]},
     "OverlappingAllocationPools", 409),
    ({"cidr": "10.0.0.0/24", "gateway_ip": "10.0.0.5",
      "allocation_pools": [{"start": "10.0.0.2", "end": "10.0.0.9"}]},
     "GatewayConflictWithAllocationPools", 409),
    ({"cidr": "10.0.0.0/24", "dns_nameservers": [f"10.1.1.{i}" for i in range(6)]},
     "DNSNameServersExhausted", 400),
    ({"cidr": "10.0.0.0/24", "host_routes": [
        {"destination": f"10.{i}.0.0/16", "nexthop": "10.0.0.9"} for i in range(21)]},
     "HostRoutesExhausted", 400),
    ({"cidr": "10.0.0.0/24", "subnetpool_id": "8d4d8a38-0ba3-4c8d-a3b6-3c1c5b1f6f11"},
     "SubnetPoolNotFound", 404),
])
async def test_bad_subnets_are_refused_as_neutron_refuses_them(neutron, attrs, kind, status):
    net = await neutron.create("network")
    body = await neutron.create("subnet", expect=status, **{
        "network_id": net["id"], "ip_version": 4, **attrs})
    assert _error(body) == kind


async def test_overlapping_subnets_on_one_network(neutron):
    net, _ = await neutron.network_with_subnet(cidr="10.4.0.0/24")
    body = await neutron.create("subnet", expect=400, network_id=net["id"], ip_version=4,
                                cidr="10.4.0.128/25")
    assert body["NeutronError"]["message"] == (
        f"Invalid input for operation: Requested subnet with cidr: 10.4.0.128/25 for network: "
        f"{net['id']} overlaps with another subnet.")


async def test_a_subnet_with_ports_is_in_use(neutron):
    net, sub = await neutron.network_with_subnet()
    port = await neutron.create("port", network_id=net["id"])
    r = await neutron.delete(f"/v2.0/subnets/{sub['id']}")
    assert r.status_code == 409 and _error(r.json()) == "SubnetInUse"
    await neutron.delete(f"/v2.0/ports/{port['id']}")
    assert (await neutron.delete(f"/v2.0/subnets/{sub['id']}")).status_code == 204
    assert await neutron.listing("ports", f"?network_id={net['id']}", "admin") == []
    assert (await neutron.show("networks", net["id"]))["network"]["subnets"] == []


async def test_only_the_network_owner_adds_subnets(neutron):
    shared = await neutron.create("network", "admin", shared=True)
    body = await neutron.create("subnet", expect=403, network_id=shared["id"], ip_version=4,
                                cidr="10.5.0.0/24")
    assert _error(body) == "PolicyNotAuthorized"
    hidden = await neutron.create("network", "alt_demo")
    body = await neutron.create("subnet", expect=404, network_id=hidden["id"], ip_version=4,
                                cidr="10.5.0.0/24")
    assert _error(body) == "NetworkNotFound"


async def test_subnets_of_shared_networks_are_visible(neutron):
    shared = await neutron.create("network", "admin", shared=True)
    sub = await neutron.create("subnet", "admin", network_id=shared["id"], ip_version=4,
                               cidr="10.6.0.0/24")
    assert sub["id"] in [x["id"] for x in await neutron.listing("subnets", as_="alt_demo")]
    private = await neutron.create("network", "admin")
    hidden = await neutron.create("subnet", "admin", network_id=private["id"], ip_version=4,
                                  cidr="10.7.0.0/24")
    assert (await neutron.get(f"/v2.0/subnets/{hidden['id']}")).status_code == 404


async def test_ipv6_slaac_subnets_give_eui64_addresses(neutron):
    net = await neutron.create("network")
    v4 = await neutron.create("subnet", network_id=net["id"], ip_version=4, cidr="10.8.0.0/24")
    v6 = await neutron.create("subnet", network_id=net["id"], ip_version=6,
                              cidr="fd00:8::/64", ipv6_ra_mode="slaac",
                              ipv6_address_mode="slaac")
    assert v6["gateway_ip"] == "fd00:8::1"
    port = await neutron.create("port", network_id=net["id"])
    by_subnet = {f["subnet_id"]: f["ip_address"] for f in port["fixed_ips"]}
    octets = [int(x, 16) for x in port["mac_address"].split(":")]
    interface = bytes([octets[0] ^ 2, *octets[1:3], 0xFF, 0xFE, *octets[3:]])
    assert by_subnet[v4["id"]].startswith("10.8.0.")
    assert ipaddress.ip_address(by_subnet[v6["id"]]) == ipaddress.IPv6Address(
        int(ipaddress.IPv6Address("fd00:8::")) | int.from_bytes(interface, "big"))
    bad = await neutron.create("subnet", expect=400, network_id=net["id"], ip_version=6,
                               cidr="fd00:9::/64", ipv6_ra_mode="slaac",
                               ipv6_address_mode="dhcpv6-stateful")
    assert _error(bad) == "InvalidInput"


async def test_a_stateful_ipv6_subnet_hands_out_addresses(neutron):
    net = await neutron.create("network")
    v6 = await neutron.create("subnet", network_id=net["id"], ip_version=6, cidr="fd00:a::/120")
    assert v6["allocation_pools"] == [{"start": "fd00:a::2", "end": "fd00:a::ff"}]
    port = await neutron.create("port", network_id=net["id"])
    assert port["fixed_ips"] == [{"subnet_id": v6["id"], "ip_address": "fd00:a::3"}]
