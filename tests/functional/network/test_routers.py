"""Routers and floating IPs: gateways, interfaces, routes, association, and what is in use."""

from __future__ import annotations

import pytest


def _error(r) -> tuple[int, str]:
    return r.status_code, r.json()["NeutronError"]["type"]


@pytest.fixture
async def public(neutron):
    """A flat external network with DevStack's public subnet, made by admin."""
    net = await neutron.create("network", "admin", name="public", **{
        "router:external": True, "provider:network_type": "flat",
        "provider:physical_network": "public"})
    sub = await neutron.create("subnet", "admin", network_id=net["id"], ip_version=4,
                               cidr="172.24.4.0/24", enable_dhcp=False, name="public-subnet")
    return net, sub


async def _router_with_private(neutron, public, cidr="10.0.0.0/26"):
    net, sub = await neutron.network_with_subnet(cidr=cidr)
    router = await neutron.create("router", name="router1",
                                  external_gateway_info={"network_id": public[0]["id"]})
    r = await neutron.put(f"/v2.0/routers/{router['id']}/add_router_interface",
                          {"subnet_id": sub["id"]})
    assert r.status_code == 200, r.text
    return router, net, sub


async def test_a_router_with_a_gateway_gets_an_external_address(neutron, public):
    router = await neutron.create("router", name="r", external_gateway_info={
        "network_id": public[0]["id"]})
    info = router["external_gateway_info"]
    assert info["network_id"] == public[0]["id"] and info["enable_snat"] is True
    assert info["external_fixed_ips"] == [{"subnet_id": public[1]["id"],
                                           "ip_address": "172.24.4.2"}]
    assert router["status"] == "ACTIVE" and router["routes"] == []
    gateway_ports = await neutron.listing("ports", f"?device_id={router['id']}", "admin")
    assert [(p["device_owner"], p["project_id"], p["binding:host_id"])
            for p in gateway_ports] == [("network:router_gateway", "", "netnode")]
    r = await neutron.put(f"/v2.0/routers/{router['id']}",
                          {"router": {"external_gateway_info": {}}})
    assert r.json()["router"]["external_gateway_info"] is None
    assert await neutron.listing("ports", f"?device_id={router['id']}", "admin") == []


async def test_gateway_rules(neutron, public):
    net = await neutron.create("network")
    r = await neutron.post("/v2.0/routers", {"router": {"external_gateway_info": {
        "network_id": net["id"]}}})
    assert _error(r) == (400, "BadRequest")
    assert r.json()["NeutronError"]["message"] == \
        f"Bad router request: Network {net['id']} is not an external network."
    r = await neutron.post("/v2.0/routers", {"router": {"external_gateway_info": {
        "network_id": public[0]["id"], "enable_snat": False}}})
    assert _error(r) == (403, "PolicyNotAuthorized")
    admin = await neutron.create("router", "admin", external_gateway_info={
        "network_id": public[0]["id"], "enable_snat": False,
        "external_fixed_ips": [{"ip_address": "172.24.4.100"}]})
    assert admin["external_gateway_info"]["enable_snat"] is False
    assert admin["external_gateway_info"]["external_fixed_ips"][0]["ip_address"] == \
        "172.24.4.100"


async def test_interfaces_by_subnet_and_by_port(neutron, public):
    router, net, sub = await _router_with_private(neutron, public)
    ports = await neutron.listing("ports", f"?device_id={router['id']}&device_owner="
                                  "network:router_interface")
    assert [p["fixed_ips"][0]["ip_address"] for p in ports] == ["10.0.0.1"]
    again = await neutron.put(f"/v2.0/routers/{router['id']}/add_router_interface",
                              {"subnet_id": sub["id"]})
    assert _error(again) == (400, "BadRequest")
    net2, sub2 = await neutron.network_with_subnet(cidr="10.0.1.0/24")
    port = await neutron.create("port", network_id=net2["id"],
                                fixed_ips=[{"ip_address": "10.0.1.1"}])
    r = await neutron.put(f"/v2.0/routers/{router['id']}/add_router_interface",
                          {"port_id": port["id"]})
    assert r.json() == {"id": router["id"], "tenant_id": router["project_id"],
                        "project_id": router["project_id"], "port_id": port["id"],
                        "subnet_id": sub2["id"], "subnet_ids": [sub2["id"]],
                        "network_id": net2["id"]}
    r = await neutron.put(f"/v2.0/routers/{router['id']}/add_router_interface",
                          {"port_id": port["id"]})
    assert _error(r) == (409, "PortInUse")
    r = await neutron.delete(f"/v2.0/ports/{port['id']}")
    assert _error(r) == (409, "L3PortInUse")
    overlapping_net, overlapping = await neutron.network_with_subnet(cidr="10.0.0.0/24")
    r = await neutron.put(f"/v2.0/routers/{router['id']}/add_router_interface",
                          {"subnet_id": overlapping["id"]})
    assert _error(r) == (400, "BadRequest") and "overlaps" in r.text
    r = await neutron.put(f"/v2.0/routers/{router['id']}/remove_router_interface",
                          {"port_id": port["id"]})
    assert r.status_code == 200 and r.json()["port_id"] == port["id"]
    assert _error(await neutron.get(f"/v2.0/ports/{port['id']}")) == (404, "PortNotFound")
    r = await neutron.put(f"/v2.0/routers/{router['id']}/remove_router_interface",
                          {"subnet_id": sub2["id"]})
    assert _error(r) == (404, "RouterInterfaceNotFoundForSubnet")
    r = await neutron.put(f"/v2.0/routers/{router['id']}/remove_router_interface", {})
    assert _error(r) == (400, "BadRequest")


async def test_a_router_with_interfaces_is_in_use(neutron, public):
    router, net, sub = await _router_with_private(neutron, public)
    r = await neutron.delete(f"/v2.0/routers/{router['id']}")
    assert _error(r) == (409, "RouterInUse")
    assert r.json()["NeutronError"]["message"] == f"Router {router['id']} still has ports"
    r = await neutron.delete(f"/v2.0/subnets/{sub['id']}")
    assert _error(r) == (409, "SubnetInUse")
    await neutron.put(f"/v2.0/routers/{router['id']}/remove_router_interface",
                      {"subnet_id": sub["id"]})
    assert (await neutron.delete(f"/v2.0/routers/{router['id']}")).status_code == 204
    assert await neutron.listing("ports", "?device_owner=network:router_gateway", "admin") == []
    r = await neutron.delete(f"/v2.0/networks/{public[0]['id']}", "admin")
    assert r.status_code == 204


async def test_static_routes(neutron, public):
    router, net, sub = await _router_with_private(neutron, public)
    path = f"/v2.0/routers/{router['id']}"
    r = await neutron.put(path, {"router": {"routes": [
        {"destination": "192.168.100.0/24", "nexthop": "10.0.0.5"}]}})
    assert r.json()["router"]["routes"] == [{"destination": "192.168.100.0/24",
                                             "nexthop": "10.0.0.5"}]
    r = await neutron.put(path, {"router": {"routes": [
        {"destination": "192.168.100.0/24", "nexthop": "10.99.0.5"}]}})
    assert _error(r) == (400, "InvalidRoutes")
    assert "the nexthop is not connected with router" in r.text
    r = await neutron.put(path, {"router": {"routes": [
        {"destination": "192.168.100.0/24", "nexthop": "10.0.0.1"}]}})
    assert _error(r) == (400, "InvalidRoutes")
    r = await neutron.put(f"{path}/remove_router_interface", {"subnet_id": sub["id"]})
    assert _error(r) == (409, "RouterInterfaceInUseByRoute")
    r = await neutron.put(f"{path}/add_extraroutes", {"router": {"routes": [
        {"destination": "192.168.200.0/24", "nexthop": "10.0.0.6"}]}})
    assert [x["destination"] for x in r.json()["router"]["routes"]] == [
        "192.168.100.0/24", "192.168.200.0/24"]
    r = await neutron.put(f"{path}/remove_extraroutes", {"router": {"routes": [
        {"destination": "192.168.100.0/24", "nexthop": "10.0.0.5"}]}})
    assert r.json()["router"]["routes"] == [{"destination": "192.168.200.0/24",
                                             "nexthop": "10.0.0.6"}]


async def test_routers_of_other_projects_are_hidden(neutron, public):
    router = await neutron.create("router", "alt_demo")
    assert _error(await neutron.get(f"/v2.0/routers/{router['id']}")) == (404, "RouterNotFound")
    assert await neutron.listing("routers") == []


# -- floating IPs -------------------------------------------------------------------------


async def test_a_floating_ip_follows_a_port(neutron, public):
    router, net, sub = await _router_with_private(neutron, public)
    port = await neutron.create("port", network_id=net["id"], device_owner="compute:nova",
                                device_id="vm-1")
    fip = await neutron.create("floatingip", floating_network_id=public[0]["id"])
    assert fip["floating_ip_address"] == "172.24.4.3"
    assert (fip["port_id"], fip["fixed_ip_address"], fip["router_id"], fip["status"]) == \
        (None, None, None, "DOWN")
    assert fip["port_details"] is None
    r = await neutron.put(f"/v2.0/floatingips/{fip['id']}", {"floatingip": {
        "port_id": port["id"]}})
    assert r.status_code == 200, r.text
    bound = r.json()["floatingip"]
    assert bound["fixed_ip_address"] == port["fixed_ips"][0]["ip_address"]
    assert bound["router_id"] == router["id"] and bound["status"] == "ACTIVE"
    assert bound["port_details"]["device_id"] == "vm-1"
    assert bound["port_details"]["mac_address"] == port["mac_address"]
    listed = await neutron.listing("floatingips", f"?port_id={port['id']}")
    assert [f["id"] for f in listed] == [fip["id"]]
    r = await neutron.put(f"/v2.0/floatingips/{fip['id']}", {"floatingip": {"port_id": None}})
    assert (r.json()["floatingip"]["port_id"], r.json()["floatingip"]["router_id"]) == (None,
                                                                                        None)
    assert (await neutron.delete(f"/v2.0/floatingips/{fip['id']}")).status_code == 204
    again = await neutron.create("floatingip", floating_network_id=public[0]["id"])
    assert again["floating_ip_address"] == "172.24.4.3"


async def test_creating_associated_and_what_is_in_use(neutron, public):
    router, net, sub = await _router_with_private(neutron, public)
    port = await neutron.create("port", network_id=net["id"])
    fip = await neutron.create("floatingip", floating_network_id=public[0]["id"],
                               port_id=port["id"])
    assert fip["router_id"] == router["id"]
    second = await neutron.post("/v2.0/floatingips", {"floatingip": {
        "floating_network_id": public[0]["id"], "port_id": port["id"]}})
    assert _error(second) == (409, "FloatingIPPortAlreadyAssociated")
    path = f"/v2.0/routers/{router['id']}"
    r = await neutron.put(f"{path}/remove_router_interface", {"subnet_id": sub["id"]})
    assert _error(r) == (409, "RouterInterfaceInUseByFloatingIP")
    r = await neutron.put(path, {"router": {"external_gateway_info": None}})
    assert _error(r) == (409, "RouterExternalGatewayInUseByFloatingIp")
    r = await neutron.delete(f"/v2.0/networks/{public[0]['id']}", "admin")
    assert _error(r) == (409, "NetworkInUse")
    await neutron.delete(f"/v2.0/ports/{port['id']}")
    left = (await neutron.show("floatingips", fip["id"]))["floatingip"]
    assert (left["port_id"], left["router_id"], left["status"]) == (None, None, "DOWN")


async def test_floating_ip_errors(neutron, public):
    net, sub = await neutron.network_with_subnet()
    port = await neutron.create("port", network_id=net["id"])
    r = await neutron.post("/v2.0/floatingips", {"floatingip": {
        "floating_network_id": public[0]["id"], "port_id": port["id"]}})
    assert _error(r) == (404, "ExternalGatewayForFloatingIPNotFound")
    r = await neutron.post("/v2.0/floatingips", {"floatingip": {"floating_network_id": net["id"]}})
    assert _error(r) == (400, "BadRequest")
    r = await neutron.post("/v2.0/floatingips", {"floatingip": {
        "floating_network_id": public[0]["id"], "floating_ip_address": "172.24.4.50"}})
    assert _error(r) == (403, "PolicyNotAuthorized")
    chosen = await neutron.create("floatingip", "admin", floating_network_id=public[0]["id"],
                                  floating_ip_address="172.24.4.50")
    assert chosen["floating_ip_address"] == "172.24.4.50"
    r = await neutron.post("/v2.0/floatingips", {"floatingip": {
        "floating_network_id": public[0]["id"], "floating_ip_address": "172.24.4.50"}},
        "admin")
    assert _error(r) == (409, "IpAddressAlreadyAllocated")
    theirs = await neutron.create("floatingip", "alt_demo", floating_network_id=public[0]["id"])
    assert _error(await neutron.get(f"/v2.0/floatingips/{theirs['id']}")) == \
        (404, "FloatingIPNotFound")
    r = await neutron.put(f"/v2.0/floatingips/{theirs['id']}", {"floatingip": {
        "port_id": port["id"]}}, "alt_demo")
    assert _error(r) == (404, "PortNotFound")
