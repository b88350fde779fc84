"""Servers on networks: compute asks the network service for ports, binds them to the
chosen host, shows their addresses, follows floating IPs and releases the ports."""

from __future__ import annotations

import pytest

from .support import settle

MV = "2.100"


class Neutron:
    """The cloud's own network API, as the test's users."""

    def __init__(self, nova):
        self.nova = nova

    async def call(self, method: str, path: str, *, user: str = "demo", expect: int = 200,
                   **kwargs):
        r = await self.nova.http.request(method, f"/network/v2.0{path}", headers={
            "X-Auth-Token": await self.nova.token(user)}, **kwargs)
        assert r.status_code == expect, (method, path, r.status_code, r.text)
        result = r.json() if r.content else None
        await settle(self.nova.cloud)
        return result

    async def network_id(self, name: str, user: str = "admin") -> str:
        found = await self.call("GET", "/networks", user=user, params={"name": name})
        return found["networks"][0]["id"]

    async def ports_of(self, server_id: str) -> list[dict]:
        found = await self.call("GET", "/ports", user="admin", params={"device_id": server_id})
        return found["ports"]


@pytest.fixture
def neutron(nova, networks) -> Neutron:
    return Neutron(nova)


async def test_auto_gets_a_port_on_the_projects_network_bound_to_the_node(
        nova, neutron, agent, image_id):
    created = await nova.create_server(image_id, networks="auto")
    server_id = created["server"]["id"]
    server = await nova.server(server_id)
    assert server["status"] == "ACTIVE"
    [port] = await neutron.ports_of(server_id)
    assert port["network_id"] == await neutron.network_id("private")
    assert port["device_owner"] == "compute:nova"
    assert port["binding:host_id"] == "node1"
    assert port["binding:vif_type"] == "tap"
    address = port["fixed_ips"][0]["ip_address"]
    assert server["addresses"] == {"private": [{
        "version": 4, "addr": address, "OS-EXT-IPS:type": "fixed",
        "OS-EXT-IPS-MAC:mac_addr": port["mac_address"]}]}
    [nic] = agent.servers[server_id].ports
    details = port["binding:vif_details"]
    assert (nic.port_id, nic.mac, nic.device, nic.bridge, nic.mtu) == (
        port["id"], port["mac_address"], details["tap_name"], details["bridge_name"], 1450)
    groups = await neutron.call("GET", "/security-groups", params={"name": "default"})
    assert port["security_groups"] == [groups["security_groups"][0]["id"]]


async def test_deleting_the_server_deletes_its_ports_but_not_one_the_user_made(
        nova, neutron, agent, image_id):
    private = await neutron.network_id("private")
    mine = (await neutron.call("POST", "/ports", expect=201, json={
        "port": {"network_id": private, "name": "mine"}}))["port"]
    created = await nova.create_server(image_id, networks=[{"port": mine["id"]},
                                                           {"uuid": private}])
    server_id = created["server"]["id"]
    ports = await neutron.ports_of(server_id)
    assert len(ports) == 2 and mine["id"] in {p["id"] for p in ports}
    addresses = (await nova.server(server_id))["addresses"]["private"]
    assert [a["addr"] for a in addresses] == [
        mine["fixed_ips"][0]["ip_address"],
        next(p for p in ports if p["id"] != mine["id"])["fixed_ips"][0]["ip_address"]]
    await nova.ok("DELETE", f"/servers/{server_id}", expect=204)
    await settle(nova.cloud)
    assert await neutron.ports_of(server_id) == []
    kept = (await neutron.call("GET", f"/ports/{mine['id']}", user="admin"))["port"]
    assert (kept["device_id"], kept["device_owner"], kept["binding:host_id"]) == ("", "", "")


async def test_a_floating_ip_shows_in_the_servers_addresses_and_goes_again(
        nova, neutron, agent, image_id):
    created = await nova.create_server(image_id, networks="auto")
    server_id = created["server"]["id"]
    [port] = await neutron.ports_of(server_id)
    public = await neutron.network_id("public")
    fip = (await neutron.call("POST", "/floatingips", expect=201, json={"floatingip": {
        "floating_network_id": public, "port_id": port["id"]}}))["floatingip"]
    addresses = (await nova.server(server_id))["addresses"]["private"]
    assert [(a["addr"], a["OS-EXT-IPS:type"]) for a in addresses] == [
        (port["fixed_ips"][0]["ip_address"], "fixed"), (fip["floating_ip_address"], "floating")]
    await neutron.call("PUT", f"/floatingips/{fip['id']}",
                       json={"floatingip": {"port_id": None}})
    addresses = (await nova.server(server_id))["addresses"]["private"]
    assert [a["OS-EXT-IPS:type"] for a in addresses] == ["fixed"]


async def test_requested_networks_are_checked_as_nova_checks_them(
        nova, neutron, agent, image_id):
    missing = "7b1ee68b-4a7a-4d89-b1f8-6d3f1d6c1a2e"
    r = await nova.create_server(image_id, networks=[{"uuid": missing}], expect=400)
    assert r["badRequest"]["message"] == f"Network {missing} could not be found."
    r = await nova.create_server(image_id, networks=[{"port": missing}], expect=400)
    assert r["badRequest"]["message"] == f"Port id {missing} could not be found."
    r = await nova.create_server(image_id, networks="auto", user="alt_demo", expect=400)
    assert r["badRequest"]["message"].startswith(
        "Unable to automatically allocate a network for project")
    r = await nova.create_server(image_id, networks="auto",
                                 security_groups=[{"name": "nope"}], expect=400)
    assert r["badRequest"]["message"] == "Security group nope not found."
    private = await neutron.network_id("private")
    taken = await nova.create_server(image_id, networks=[{"uuid": private}])
    [port] = await neutron.ports_of(taken["server"]["id"])
    r = await nova.create_server(image_id, networks=[{"port": port["id"]}], expect=409)
    assert r["conflictingRequest"]["message"] == f"Port {port['id']} is still in use."
    await neutron.call("POST", "/networks", expect=201, json={"network": {"name": "second"}})
    r = await nova.create_server(image_id, networks="auto", expect=409)
    assert r["conflictingRequest"]["message"].startswith("Multiple possible networks found")


async def test_a_port_the_network_refuses_ends_the_build_in_error(
        nova, neutron, agent, image_id):
    private = await neutron.network_id("private")
    taken = await nova.create_server(image_id, networks=[{"uuid": private}])
    [port] = await neutron.ports_of(taken["server"]["id"])
    address = port["fixed_ips"][0]["ip_address"]
    created = await nova.create_server(image_id, networks=[{"uuid": private,
                                                            "fixed_ip": address}])
    server = await nova.server(created["server"]["id"])
    assert server["status"] == "ERROR"
    assert server["fault"]["message"].startswith(
        f"Build of instance {server['id']} aborted: ")
    assert address in server["fault"]["message"]
    assert await neutron.ports_of(server["id"]) == []


async def test_adding_and_removing_a_security_group_changes_the_servers_ports(
        nova, neutron, agent, image_id):
    created = await nova.create_server(image_id, networks="auto")
    server_id = created["server"]["id"]
    web = (await neutron.call("POST", "/security-groups", expect=201, json={
        "security_group": {"name": "web"}}))["security_group"]["id"]
    default = (await neutron.call("GET", "/security-groups", params={"name": "default"})
               )["security_groups"][0]["id"]
    await nova.action(server_id, {"addSecurityGroup": {"name": "web"}})
    [port] = await neutron.ports_of(server_id)
    assert sorted(port["security_groups"]) == sorted([web, default])
    await nova.action(server_id, {"removeSecurityGroup": {"name": "default"}})
    [port] = await neutron.ports_of(server_id)
    assert port["security_groups"] == [web]
    r = await nova.compute("POST", f"/servers/{server_id}/action", mv=MV,
                           json={"addSecurityGroup": {"name": "nope"}})
    assert r.status_code == 404
    assert r.json()["itemNotFound"]["message"] == "Security group nope not found."
    assert [g["name"] for g in (await nova.server(server_id))["security_groups"]] == ["web"]


async def test_each_server_of_a_multiple_create_gets_its_own_port(
        nova, neutron, agent, image_id):
    await nova.create_server(image_id, networks="auto", min_count=3, name="many")
    servers = (await nova.ok("GET", "/servers/detail", mv=MV, params={"name": "many"})
               )["servers"]
    assert sorted(s["status"] for s in servers) == ["ACTIVE"] * 3
    addresses = set()
    for server in servers:
        [port] = await neutron.ports_of(server["id"])
        assert server["addresses"]["private"][0]["addr"] == port["fixed_ips"][0]["ip_address"]
        addresses.add(port["fixed_ips"][0]["ip_address"])
    assert len(addresses) == 3
