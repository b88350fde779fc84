"""Ports: addresses (never one twice, even when racing), MACs, binding, security, errors."""

from __future__ import annotations

import asyncio
import ipaddress

from .support import HOST


def _error(r) -> tuple[int, str]:
    return r.status_code, r.json()["NeutronError"]["type"]


async def test_a_port_gets_an_address_a_mac_and_the_default_group(neutron):
    net, sub = await neutron.network_with_subnet(cidr="10.1.0.0/24")
    port = await neutron.create("port", network_id=net["id"], name="p", device_id="vm-1",
                                device_owner="compute:nova")
    assert port["fixed_ips"] == [{"subnet_id": sub["id"], "ip_address": "10.1.0.3"}]
    assert port["mac_address"].startswith("fa:16:3e:")
    assert port["status"] == "DOWN" and port["admin_state_up"] is True
    assert (port["device_id"], port["device_owner"]) == ("vm-1", "compute:nova")
    assert port["port_security_enabled"] is True and port["allowed_address_pairs"] == []
    groups = await neutron.listing("security-groups")
    default = next(g for g in groups if g["name"] == "default")
    assert port["security_groups"] == [default["id"]]
    assert "binding:host_id" not in port and port["binding:vnic_type"] == "normal"


async def test_a_requested_address_and_mac(neutron):
    net, sub = await neutron.network_with_subnet(cidr="10.1.0.0/24")
    port = await neutron.create("port", network_id=net["id"], mac_address="FA:16:3E:00:00:01",
                                fixed_ips=[{"subnet_id": sub["id"], "ip_address": "10.1.0.77"}])
    assert port["mac_address"] == "fa:16:3e:00:00:01"
    assert port["fixed_ips"][0]["ip_address"] == "10.1.0.77"
    by_ip = await neutron.create("port", network_id=net["id"],
                                 fixed_ips=[{"ip_address": "10.1.0.78"}])
    assert by_ip["fixed_ips"] == [{"subnet_id": sub["id"], "ip_address": "10.1.0.78"}]
    r = await neutron.post("/v2.0/ports", {"port": {
        "network_id": net["id"], "fixed_ips": [{"ip_address": "10.1.0.77"}]}})
    assert _error(r) == (409, "IpAddressAlreadyAllocated")
    assert r.json()["NeutronError"]["message"] == (
        f"IP address 10.1.0.77 already allocated in subnet {sub['id']}")
    r = await neutron.post("/v2.0/ports", {"port": {"network_id": net["id"],
                                                    "mac_address": "fa:16:3e:00:00:01"}})
    assert _error(r) == (409, "MacAddressInUse")
    r = await neutron.post("/v2.0/ports", {"port": {
        "network_id": net["id"], "fixed_ips": [{"subnet_id": sub["id"], "ip_address": "10.9.9.9"}]}})
    assert _error(r) == (400, "InvalidIpForSubnet")
    r = await neutron.post("/v2.0/ports", {"port": {
        "network_id": net["id"], "fixed_ips": [{"ip_address": "10.9.9.9"}]}})
    assert _error(r) == (400, "InvalidIpForNetwork")
    gateway = await neutron.create("port", network_id=net["id"],
                                   fixed_ips=[{"ip_address": "10.1.0.1"}])
    assert gateway["fixed_ips"][0]["ip_address"] == "10.1.0.1"


async def test_an_empty_pool_is_ip_address_generation_failure(neutron):
    net, sub = await neutron.network_with_subnet(
        cidr="10.2.0.0/24", enable_dhcp=False,
        allocation_pools=[{"start": "10.2.0.10", "end": "10.2.0.11"}])
    for _ in range(2):
        await neutron.create("port", network_id=net["id"])
    r = await neutron.post("/v2.0/ports", {"port": {"network_id": net["id"]}})
    assert _error(r) == (409, "IpAddressGenerationFailure")
    assert r.json()["NeutronError"]["message"] == \
        f"No more IP addresses available on network {net['id']}."


async def test_concurrent_creates_never_share_an_address(neutron):
    net, sub = await neutron.network_with_subnet(cidr="10.3.0.0/27", enable_dhcp=False)

    async def one():
        return await neutron.http.post("/v2.0/ports", json={"port": {"network_id": net["id"]}},
                                       headers={"X-Auth-Token": (await neutron.login("demo"))[0]})

    answers = await asyncio.gather(*(one() for _ in range(24)))
    assert [r.status_code for r in answers] == [201] * 24, [r.text for r in answers
                                                            if r.status_code != 201]
    addresses = [r.json()["port"]["fixed_ips"][0]["ip_address"] for r in answers]
    macs = [r.json()["port"]["mac_address"] for r in answers]
    assert len(set(addresses)) == 24 and len(set(macs)) == 24
    assert all(ipaddress.ip_address(a) in ipaddress.ip_network("10.3.0.0/27") for a in addresses)


async def test_racing_for_the_last_addresses_some_win_none_share(neutron):
    net, sub = await neutron.network_with_subnet(
        cidr="10.4.0.0/24", enable_dhcp=False,
        allocation_pools=[{"start": "10.4.0.10", "end": "10.4.0.14"}])
    token = (await neutron.login("demo"))[0]
    answers = await asyncio.gather(*(neutron.http.post(
        "/v2.0/ports", json={"port": {"network_id": net["id"]}},
        headers={"X-Auth-Token": token}) for _ in range(9)))
    won = [r for r in answers if r.status_code == 201]
    lost = [r for r in answers if r.status_code != 201]
    assert len(won) == 5
    assert {r.json()["NeutronError"]["type"] for r in lost} == {"IpAddressGenerationFailure"}
    assert sorted(r.json()["port"]["fixed_ips"][0]["ip_address"] for r in won) == [
        f"10.4.0.{i}" for i in range(10, 15)]


async def test_racing_for_one_requested_address(neutron):
    net, sub = await neutron.network_with_subnet(cidr="10.5.0.0/24", enable_dhcp=False)
    token = (await neutron.login("demo"))[0]
    answers = await asyncio.gather(*(neutron.http.post(
        "/v2.0/ports", json={"port": {"network_id": net["id"],
                                      "fixed_ips": [{"ip_address": "10.5.0.50"}]}},
        headers={"X-Auth-Token": token}) for _ in range(6)))
    assert sorted(r.status_code for r in answers) == [201] + [409] * 5


async def test_binding_to_a_host_is_for_the_compute_service(neutron):
    net, _ = await neutron.network_with_subnet()
    body = await neutron.create("port", expect=403, network_id=net["id"],
                                **{"binding:host_id": HOST})
    assert body["NeutronError"]["message"] == \
        "(rule:create_port:binding) is disallowed by policy"
    port = await neutron.create("port", "admin", network_id=net["id"], project_id=(
        await neutron.project("demo")), **{"binding:host_id": HOST})
    assert port["binding:host_id"] == HOST and port["binding:vif_type"] == "tap"
    assert port["binding:vif_details"] == {"bridge_name": "tsbr" + net["id"].replace("-", "")[:11],
                                           "tap_name": "tap" + port["id"].replace("-", "")[:11]}
    as_demo = (await neutron.show("ports", port["id"]))["port"]
    assert "binding:vif_type" not in as_demo and "binding:host_id" not in as_demo
    unbound = await neutron.create("port", "admin", network_id=net["id"])
    assert unbound["binding:vif_type"] == "unbound" and unbound["binding:vif_details"] == {}
    r = await neutron.put(f"/v2.0/ports/{unbound['id']}", {"port": {"binding:host_id": HOST}},
                          "admin")
    assert r.json()["port"]["binding:vif_type"] == "tap"


async def test_a_service_user_binds_ports(neutron):
    service = await neutron.user_with("service")
    net = await neutron.create("network", "admin", shared=True)
    await neutron.create("subnet", "admin", network_id=net["id"], ip_version=4,
                         cidr="10.6.0.0/24")
    port = await neutron.create("port", service, network_id=net["id"],
                                **{"binding:host_id": HOST})
    assert port["binding:vif_type"] == "tap"


async def test_port_security_groups_and_address_pairs(neutron):
    net, _ = await neutron.network_with_subnet()
    port = await neutron.create("port", network_id=net["id"], allowed_address_pairs=[
        {"ip_address": "10.1.0.200"}, {"ip_address": "10.9.0.0/24", "mac_address":
                                       "fa:16:3e:aa:bb:cc"}])
    assert port["allowed_address_pairs"] == [
        {"ip_address": "10.1.0.200", "mac_address": port["mac_address"]},
        {"ip_address": "10.9.0.0/24", "mac_address": "fa:16:3e:aa:bb:cc"}]
    r = await neutron.put(f"/v2.0/ports/{port['id']}", {"port": {"port_security_enabled": False}})
    assert _error(r) == (409, "PortSecurityPortHasSecurityGroup")
    r = await neutron.put(f"/v2.0/ports/{port['id']}", {"port": {
        "port_security_enabled": False, "security_groups": [], "allowed_address_pairs": []}})
    assert r.status_code == 200
    open_port = r.json()["port"]
    assert open_port["port_security_enabled"] is False and open_port["security_groups"] == []
    r = await neutron.post("/v2.0/ports", {"port": {"network_id": net["id"],
                                                    "port_security_enabled": False,
                                                    "security_groups": []}})
    assert r.status_code == 201 and r.json()["port"]["security_groups"] == []
    r = await neutron.post("/v2.0/ports", {"port": {"network_id": net["id"],
                                                    "port_security_enabled": False}})
    assert r.json()["port"]["security_groups"] == []
    r = await neutron.post("/v2.0/ports", {"port": {
        "network_id": net["id"], "allowed_address_pairs": [{"ip_address": "10.1.0.9"},
                                                           {"ip_address": "10.1.0.9"}]}})
    assert _error(r) == (400, "DuplicateAddressPairInRequest")
    alien = await neutron.create("security_group", "alt_demo", name="theirs")
    r = await neutron.post("/v2.0/ports", {"port": {"network_id": net["id"],
                                                    "security_groups": [alien["id"]]}})
    assert _error(r) == (404, "SecurityGroupNotFound")


async def test_update_fixed_ips_keeps_frees_and_adds(neutron):
    net, sub = await neutron.network_with_subnet(cidr="10.7.0.0/24", enable_dhcp=False)
    port = await neutron.create("port", network_id=net["id"], fixed_ips=[
        {"ip_address": "10.7.0.10"}, {"ip_address": "10.7.0.11"}])
    r = await neutron.put(f"/v2.0/ports/{port['id']}", {"port": {"fixed_ips": [
        {"ip_address": "10.7.0.11"}, {"subnet_id": sub["id"], "ip_address": "10.7.0.12"}]}})
    assert [f["ip_address"] for f in r.json()["port"]["fixed_ips"]] == ["10.7.0.11", "10.7.0.12"]
    other = await neutron.create("port", network_id=net["id"],
                                 fixed_ips=[{"ip_address": "10.7.0.10"}])
    assert other["fixed_ips"][0]["ip_address"] == "10.7.0.10"
    assert r.json()["port"]["revision_number"] == 2


async def test_ports_on_others_networks(neutron):
    private = await neutron.create("network", "alt_demo")
    r = await neutron.post("/v2.0/ports", {"port": {"network_id": private["id"]}})
    assert _error(r) == (404, "NetworkNotFound")
    shared = await neutron.create("network", "admin", shared=True)
    sub = await neutron.create("subnet", "admin", network_id=shared["id"], ip_version=4,
                               cidr="10.8.0.0/24")
    mine = await neutron.create("port", network_id=shared["id"])
    assert mine["project_id"] == await neutron.project("demo")
    r = await neutron.post("/v2.0/ports", {"port": {
        "network_id": shared["id"], "fixed_ips": [{"subnet_id": sub["id"],
                                                   "ip_address": "10.8.0.99"}]}})
    assert _error(r) == (403, "PolicyNotAuthorized")
    r = await neutron.post("/v2.0/ports", {"port": {"network_id": shared["id"],
                                                    "device_owner": "network:dhcp"}})
    assert _error(r) == (403, "PolicyNotAuthorized")
    assert [p["id"] for p in await neutron.listing("ports", as_="alt_demo")] == []
    external = await neutron.create("network", "admin", **{"router:external": True})
    r = await neutron.post("/v2.0/ports", {"port": {"network_id": external["id"]}})
    assert _error(r) == (403, "PolicyNotAuthorized")


async def test_listing_ports_by_fixed_ip_and_device(neutron):
    net, sub = await neutron.network_with_subnet(cidr="10.9.0.0/24", enable_dhcp=False)
    a = await neutron.create("port", network_id=net["id"], device_id="vm-a",
                             fixed_ips=[{"ip_address": "10.9.0.5"}])
    b = await neutron.create("port", network_id=net["id"], device_id="vm-b",
                             fixed_ips=[{"ip_address": "10.9.0.6"}])
    assert [p["id"] for p in await neutron.listing(
        "ports", "?fixed_ips=ip_address%3D10.9.0.6")] == [b["id"]]
    assert [p["id"] for p in await neutron.listing(
        "ports", f"?fixed_ips=subnet_id%3D{sub['id']}&fixed_ips=ip_address%3D10.9.0.5")] == \
        [a["id"]]
    assert [p["id"] for p in await neutron.listing("ports", "?device_id=vm-a")] == [a["id"]]


async def test_deleting_a_port_frees_its_address(neutron):
    net, sub = await neutron.network_with_subnet(cidr="10.10.0.0/24", enable_dhcp=False)
    port = await neutron.create("port", network_id=net["id"], fixed_ips=[{"ip_address":
                                                                           "10.10.0.5"}])
    assert (await neutron.delete(f"/v2.0/ports/{port['id']}")).status_code == 204
    assert _error(await neutron.get(f"/v2.0/ports/{port['id']}")) == (404, "PortNotFound")
    again = await neutron.create("port", network_id=net["id"],
                                 fixed_ips=[{"ip_address": "10.10.0.5"}])
    assert again["fixed_ips"][0]["ip_address"] == "10.10.0.5"
    assert _error(await neutron.delete(f"/v2.0/ports/{port['id']}")) == (404, "PortNotFound")


async def test_bulk_port_create_is_all_or_nothing(neutron):
    net, sub = await neutron.network_with_subnet(cidr="10.11.0.0/24", enable_dhcp=False)
    r = await neutron.post("/v2.0/ports", {"ports": [
        {"network_id": net["id"], "fixed_ips": [{"ip_address": "10.11.0.5"}]},
        {"network_id": net["id"], "fixed_ips": [{"ip_address": "10.11.0.5"}]}]})
    assert _error(r) == (409, "IpAddressAlreadyAllocated")
    assert await neutron.listing("ports", f"?network_id={net['id']}") == []
    r = await neutron.post("/v2.0/ports", {"ports": [{"network_id": net["id"]}] * 3})
    assert r.status_code == 201 and len(r.json()["ports"]) == 3


async def test_ports_racing_a_network_delete_never_break_it(neutron):
    net, sub = await neutron.network_with_subnet(cidr="10.12.0.0/24", enable_dhcp=False)
    token = (await neutron.login("demo"))[0]
    headers = {"X-Auth-Token": token}
    answers = await asyncio.gather(
        *(neutron.http.post("/v2.0/ports", json={"port": {"network_id": net["id"]}},
                            headers=headers) for _ in range(6)),
        neutron.http.delete(f"/v2.0/networks/{net['id']}", headers=headers))
    made, deleted = answers[:-1], answers[-1]
    assert {r.status_code for r in made} <= {201, 404}, [r.text for r in made]
    if deleted.status_code == 204:
        assert all(r.status_code == 404 for r in made)
    else:
        assert deleted.status_code == 409 and any(r.status_code == 201 for r in made)
        ports = await neutron.listing("ports", f"?network_id={net['id']}")
        assert len(ports) == sum(r.status_code == 201 for r in made)
