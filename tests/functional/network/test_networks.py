"""Networks: segments and MTU, sharing and external networks, visibility, listing, deleting."""

from __future__ import annotations

import uuid

import pytest


def _error(r) -> tuple[int, str]:
    return r.status_code, r.json()["NeutronError"]["type"]


async def test_a_tenant_network_is_vxlan_with_mtu_1450(neutron):
    net = await neutron.create("network", name="blue")
    assert net["mtu"] == 1450
    assert net["status"] == "ACTIVE" and net["admin_state_up"] is True
    assert net["shared"] is False and net["router:external"] is False
    assert net["project_id"] == net["tenant_id"] == await neutron.project("demo")
    assert net["subnets"] == [] and net["port_security_enabled"] is True
    assert net["revision_number"] == 1 and net["created_at"].endswith("Z")
    assert "provider:network_type" not in net
    seen = await neutron.show("networks", net["id"], "admin")
    assert seen["network"]["provider:network_type"] == "vxlan"
    assert seen["network"]["provider:segmentation_id"] == 1
    assert seen["network"]["provider:physical_network"] is None


async def test_vnis_come_from_the_range_and_never_repeat(neutron):
    vnis = []
    for _ in range(3):
        net = await neutron.create("network", "admin")
        vnis.append(net["provider:segmentation_id"])
    assert vnis == [1, 2, 3]
    await neutron.delete(f"/v2.0/networks/{net['id']}", "admin")
    again = await neutron.create("network", "admin")
    assert again["provider:segmentation_id"] == 3


async def test_the_vni_range_running_out_is_a_503(make_cloud):
    from .support import NeutronClient, client_for, load_passwords

    cloud = await make_cloud(vni_range=(7, 8))
    async with client_for(cloud) as http:
        neutron = NeutronClient(http=http, cloud=cloud, passwords=load_passwords(cloud))
        for vni in (7, 8):
            assert (await neutron.create("network", "admin"))["provider:segmentation_id"] == vni
        body = await neutron.create("network", expect=503)
        assert body["NeutronError"]["type"] == "NoNetworkAvailable"


async def test_admins_make_flat_and_given_vni_networks(neutron):
    flat = await neutron.create("network", "admin", name="ext", **{
        "provider:network_type": "flat", "provider:physical_network": "public",
        "router:external": True})
    assert flat["mtu"] == 1500 and flat["router:external"] is True
    assert flat["provider:segmentation_id"] is None
    again = await neutron.create("network", "admin", expect=409, **{
        "provider:network_type": "flat", "provider:physical_network": "public"})
    assert again["NeutronError"]["type"] == "FlatNetworkInUse"
    vx = await neutron.create("network", "admin", **{"provider:network_type": "vxlan",
                                                     "provider:segmentation_id": 4242})
    assert vx["provider:segmentation_id"] == 4242
    taken = await neutron.create("network", "admin", expect=409, **{
        "provider:network_type": "vxlan", "provider:segmentation_id": 4242})
    assert taken["NeutronError"]["type"] == "TunnelIdInUse"


@pytest.mark.parametrize("attrs, message", [
    ({"provider:network_type": "vlan"}, "network_type value 'vlan' not supported"),
    ({"provider:network_type": "flat", "provider:physical_network": "nowhere"},
     "physical_network 'nowhere' unknown for flat provider network"),
    ({"provider:network_type": "flat"}, "physical_network required for flat provider network"),
])
async def test_bad_provider_attributes_are_400s(neutron, attrs, message):
    body = await neutron.create("network", "admin", expect=400, **attrs)
    assert body["NeutronError"]["type"] == "InvalidInput"
    assert body["NeutronError"]["message"] == f"Invalid input for operation: {message}."


async def test_provider_attributes_shared_and_external_are_for_admins(neutron):
    for attrs in ({"shared": True}, {"router:external": True},
                  {"provider:network_type": "vxlan"}):
        body = await neutron.create("network", expect=403, **attrs)
        assert body["NeutronError"]["type"] == "PolicyNotAuthorized"
    rule = (await neutron.create("network", expect=403, shared=True))["NeutronError"]
    assert rule["message"] == "(rule:create_network:shared) is disallowed by policy"
    assert (await neutron.create("network", shared=False))["shared"] is False


async def test_a_network_of_another_project_is_not_found(neutron):
    net = await neutron.create("network", "alt_demo")
    r = await neutron.get(f"/v2.0/networks/{net['id']}")
    assert _error(r) == (404, "NetworkNotFound")
    assert r.json()["NeutronError"]["message"] == f"Network {net['id']} could not be found."
    assert _error(await neutron.put(f"/v2.0/networks/{net['id']}", {"network": {"name": "x"}})) \
        == (404, "NetworkNotFound")
    assert _error(await neutron.delete(f"/v2.0/networks/{net['id']}")) == (404, "NetworkNotFound")
    assert net["id"] not in [n["id"] for n in await neutron.listing("networks")]
    assert net["id"] in [n["id"] for n in await neutron.listing("networks", as_="admin")]


async def test_shared_and_external_networks_are_seen_by_everyone(neutron):
    shared = await neutron.create("network", "admin", name="everyone", shared=True)
    ext = await neutron.create("network", "admin", name="outside", **{"router:external": True})
    seen = {n["id"]: n for n in await neutron.listing("networks", as_="alt_demo")}
    assert seen[shared["id"]]["shared"] is True
    assert seen[ext["id"]]["router:external"] is True and seen[ext["id"]]["shared"] is False
    r = await neutron.put(f"/v2.0/networks/{shared['id']}", {"network": {"name": "mine"}},
                          "alt_demo")
    assert _error(r) == (403, "PolicyNotAuthorized")
    assert _error(await neutron.delete(f"/v2.0/networks/{shared['id']}", "alt_demo")) == \
        (403, "PolicyNotAuthorized")


async def test_update_changes_what_it_says_and_bumps_the_revision(neutron):
    net = await neutron.create("network", name="a")
    r = await neutron.put(f"/v2.0/networks/{net['id']}", {"network": {
        "name": "b", "description": "d", "admin_state_up": False, "mtu": 1400}})
    assert r.status_code == 200
    updated = r.json()["network"]
    assert (updated["name"], updated["description"], updated["admin_state_up"],
            updated["mtu"]) == ("b", "d", False, 1400)
    assert updated["revision_number"] == net["revision_number"] + 1
    too_big = await neutron.put(f"/v2.0/networks/{net['id']}", {"network": {"mtu": 1500}})
    assert _error(too_big) == (400, "InvalidInput")
    assert "maximum is 1450" in too_big.json()["NeutronError"]["message"]
    ro = await neutron.put(f"/v2.0/networks/{net['id']}", {"network": {"status": "DOWN"}})
    assert ro.json()["NeutronError"]["message"] == "Cannot update read-only attribute status"


async def test_a_network_with_ports_is_in_use(neutron):
    net, sub = await neutron.network_with_subnet()
    port = await neutron.create("port", network_id=net["id"])
    r = await neutron.delete(f"/v2.0/networks/{net['id']}")
    assert _error(r) == (409, "NetworkInUse")
    assert r.json()["NeutronError"]["message"] == (
        f"Unable to complete operation on network {net['id']}. There are one or more ports "
        "still in use on the network.")
    assert (await neutron.delete(f"/v2.0/ports/{port['id']}")).status_code == 204
    assert (await neutron.delete(f"/v2.0/networks/{net['id']}")).status_code == 204
    assert (await neutron.get(f"/v2.0/subnets/{sub['id']}")).status_code == 404
    assert await neutron.listing("ports", f"?network_id={net['id']}", "admin") == []


async def test_listing_filters_picks_fields_sorts_and_pages(neutron):
    names = ["c", "a", "b", "d"]
    for name in names:
        await neutron.create("network", name=name, admin_state_up=name != "d")
    assert [n["name"] for n in await neutron.listing("networks", "?name=a&name=c")] == ["c", "a"]
    assert [n["name"] for n in await neutron.listing("networks", "?admin_state_up=False")] \
        == ["d"]
    assert [n["name"] for n in await neutron.listing(
        "networks", "?sort_key=name&sort_dir=desc")] == ["d", "c", "b", "a"]
    only = await neutron.listing("networks", "?fields=id&fields=name&name=a")
    assert list(only[0]) == ["id", "name"]
    r = await neutron.get("/v2.0/networks?sort_key=name&sort_dir=asc&limit=2")
    body = r.json()
    assert [n["name"] for n in body["networks"]] == ["a", "b"]
    next_link = next(link for link in body["networks_links"] if link["rel"] == "next")
    r = await neutron.get(next_link["href"].replace("http://testserver/network", ""))
    assert [n["name"] for n in r.json()["networks"]] == ["c", "d"]
    bad = await neutron.get("/v2.0/networks?sort_key=colour")
    assert _error(bad) == (400, "HTTPBadRequest")
    tenant = await neutron.listing("networks", f"?tenant_id={uuid.uuid4().hex}")
    assert tenant == []


async def test_bulk_create_makes_every_network(neutron):
    r = await neutron.post("/v2.0/networks", {"networks": [{"name": "x"}, {"name": "y"}]})
    assert r.status_code == 201
    assert [n["name"] for n in r.json()["networks"]] == ["x", "y"]


async def test_readers_read_but_do_not_write(neutron):
    reader = await neutron.user_with("reader")
    net = await neutron.create("network", name="mine")
    assert net["id"] in [n["id"] for n in await neutron.listing("networks", as_=reader)]
    body = await neutron.create("network", reader, expect=403)
    assert body["NeutronError"]["message"] == "(rule:create_network) is disallowed by policy"
    r = await neutron.put(f"/v2.0/networks/{net['id']}", {"network": {"name": "x"}}, reader)
    assert _error(r) == (403, "PolicyNotAuthorized")


async def test_quota_on_networks(neutron):
    demo = await neutron.project("demo")
    r = await neutron.put(f"/v2.0/quotas/{demo}", {"quota": {"network": 1}}, "admin")
    assert r.status_code == 200 and r.json()["quota"]["network"] == 1
    await neutron.create("network")
    body = await neutron.create("network", expect=409)
    assert body["NeutronError"] == {"type": "OverQuota", "detail": "",
                                    "message": "Quota exceeded for resources: ['network']."}


async def test_tags_on_a_network(neutron):
    net = await neutron.create("network", name="tagged")
    other = await neutron.create("network", name="plain")
    path = f"/v2.0/networks/{net['id']}/tags"
    r = await neutron.put(path, {"tags": ["red", "blue"]})
    assert r.status_code == 200 and r.json() == {"tags": ["blue", "red"]}
    assert (await neutron.put(f"{path}/green")).status_code == 201
    assert (await neutron.get(f"{path}/green")).status_code == 204
    assert (await neutron.get(f"{path}/nope")).status_code == 404
    assert (await neutron.delete(f"{path}/red")).status_code == 204
    assert (await neutron.get(path)).json() == {"tags": ["blue", "green"]}
    shown = await neutron.show("networks", net["id"])
    assert shown["network"]["tags"] == ["blue", "green"]
    assert [n["name"] for n in await neutron.listing("networks", "?tags=blue,green")] == \
        ["tagged"]
    assert [n["name"] for n in await neutron.listing("networks", "?not-tags-any=blue")] == \
        ["plain"]
    assert (await neutron.delete(path)).status_code == 204
    assert (await neutron.get(path)).json() == {"tags": []}
    r = await neutron.put(f"/v2.0/networks/{other['id']}/tags/x", as_="alt_demo")
    assert r.status_code == 404
