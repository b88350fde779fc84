"""The network API's front door: version documents, extensions, tokens and error bodies."""

from __future__ import annotations

from tinystack.network.extensions import EXTENSIONS

UNAUTHORIZED = {"error": {"code": 401, "title": "Unauthorized",
                          "message": "The request you have made requires authentication."}}


async def test_the_root_lists_v2_without_a_token(neutron):
    r = await neutron.get("/", as_=None)
    assert r.status_code == 200
    assert r.json() == {"versions": [{"id": "v2.0", "status": "CURRENT", "links": [
        {"rel": "self", "href": "http://testserver/network/v2.0/"}]}]}


async def test_v2_lists_the_collections(neutron):
    r = await neutron.get("/v2.0")
    assert r.status_code == 200
    resources = {x["collection"]: x for x in r.json()["resources"]}
    assert {"networks", "subnets", "ports", "routers", "floatingips", "security_groups",
            "security_group_rules", "rbac_policies", "agents"} <= set(resources)
    assert resources["networks"]["links"][0]["href"] == \
        "http://testserver/network/v2.0/networks"


async def test_the_catalog_names_the_network_service(neutron):
    r = await neutron.http.post("http://testserver/identity/v3/auth/tokens", json={"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": "demo", "domain": {"id": "default"}, "password": neutron.passwords["demo"]}}},
        "scope": {"project": {"name": "demo", "domain": {"id": "default"}}}}})
    services = {s["type"]: s for s in r.json()["token"]["catalog"]}
    assert services["network"]["name"] == "neutron"
    assert services["network"]["endpoints"][0]["url"].endswith("/network")


async def test_extensions_list_only_what_is_implemented(neutron):
    r = await neutron.get("/v2.0/extensions")
    assert r.status_code == 200
    extensions = {e["alias"]: e for e in r.json()["extensions"]}
    assert set(extensions) == {alias for alias, _, _ in EXTENSIONS}
    for wanted in ("router", "external-net", "provider", "binding", "security-group",
                   "quotas", "agent", "availability_zone", "rbac-policies",
                   "allowed-address-pairs", "port-security", "extraroute", "ext-gw-mode"):
        assert wanted in extensions
    assert extensions["availability_zone"]["name"] == "Availability Zone"
    assert "dvr" not in extensions and "l3-ha" not in extensions
    one = await neutron.get("/v2.0/extensions/router")
    assert one.json()["extension"]["name"] == "Neutron L3 Router"


async def test_an_unknown_extension_is_a_neutron_404(neutron):
    r = await neutron.get("/v2.0/extensions/dvr")
    assert r.status_code == 404
    assert r.json() == {"NeutronError": {
        "type": "ExtensionNotFound", "message": "Extension with alias dvr does not exist",
        "detail": ""}}


async def test_no_token_is_keystonemiddlewares_401(neutron):
    for path in ("/v2.0/networks", "/v2.0/extensions", "/v2.0"):
        r = await neutron.get(path, as_=None)
        assert r.status_code == 401
        assert r.json() == UNAUTHORIZED
    r = await neutron.request("GET", "/v2.0/networks", None, headers={"X-Auth-Token": "bogus"})
    assert r.status_code == 401


async def test_every_answer_carries_a_request_id(neutron):
    r = await neutron.get("/v2.0/networks")
    assert r.headers["x-openstack-request-id"].startswith("req-")


async def test_malformed_bodies_are_400s(neutron):
    r = await neutron.request("POST", "/v2.0/networks", "demo", content=b"{nope",
                              headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert r.json()["NeutronError"]["type"] == "HTTPBadRequest"
    r = await neutron.post("/v2.0/networks", {"net": {}})
    assert r.status_code == 400
    assert r.json()["NeutronError"]["message"] == "Unable to find 'network' in request body"
    r = await neutron.post("/v2.0/networks", {"network": {"name": "x", "color": "red"}})
    assert r.status_code == 400
    assert r.json()["NeutronError"]["message"] == "Unrecognized attribute(s) 'color'"
    r = await neutron.post("/v2.0/networks", {"network": {"status": "DOWN"}})
    assert r.json()["NeutronError"]["message"] == "Attribute 'status' not allowed in POST"
    r = await neutron.post("/v2.0/networks", {"network": {"admin_state_up": "maybe"}})
    assert r.status_code == 400
    assert r.json()["NeutronError"]["message"] == (
        "Invalid input for admin_state_up. Reason: 'maybe' cannot be converted to boolean.")


async def test_an_unknown_path_is_a_404(neutron):
    r = await neutron.get("/v2.0/flavors_of_the_day")
    assert r.status_code == 404
    assert r.json()["NeutronError"]["type"] == "HTTPNotFound"
