"""Quotas, agents, availability zones and RBAC policies."""

from __future__ import annotations

from tinystack.network import messages as m

from .support import settle

DEFAULTS = {"network": 100, "subnet": 100, "port": 500, "router": 10, "floatingip": 50,
            "security_group": 10, "security_group_rule": 100, "rbac_policy": 10,
            "subnetpool": -1}


def _error(r) -> tuple[int, str]:
    return r.status_code, r.json()["NeutronError"]["type"]


# -- quotas -------------------------------------------------------------------------------


async def test_quotas_show_defaults_details_update_reset(neutron):
    demo = await neutron.project("demo")
    r = await neutron.get(f"/v2.0/quotas/{demo}")
    assert r.status_code == 200 and r.json() == {"quota": DEFAULTS}
    assert (await neutron.get(f"/v2.0/quotas/{demo}/default")).json() == {"quota": DEFAULTS}
    await neutron.create("network")
    details = (await neutron.get(f"/v2.0/quotas/{demo}/details.json")).json()["quota"]
    assert details["network"] == {"limit": 100, "used": 1, "reserved": 0}
    assert (await neutron.get(f"/v2.0/quotas/{demo}/details")).json()["quota"] == details
    r = await neutron.put(f"/v2.0/quotas/{demo}", {"quota": {"port": 7, "router": -1}}, "admin")
    assert r.json()["quota"]["port"] == 7 and r.json()["quota"]["router"] == -1
    listed = (await neutron.get("/v2.0/quotas", "admin")).json()["quotas"]
    assert [(q["project_id"], q["port"]) for q in listed] == [(demo, 7)]
    assert (await neutron.delete(f"/v2.0/quotas/{demo}", "admin")).status_code == 204
    assert (await neutron.get(f"/v2.0/quotas/{demo}")).json() == {"quota": DEFAULTS}


async def test_quota_rules(neutron):
    demo = await neutron.project("demo")
    alt = await neutron.project("alt_demo")
    assert _error(await neutron.put(f"/v2.0/quotas/{demo}", {"quota": {"port": 1}})) == \
        (403, "PolicyNotAuthorized")
    assert _error(await neutron.get(f"/v2.0/quotas/{alt}")) == (403, "PolicyNotAuthorized")
    assert _error(await neutron.put(f"/v2.0/quotas/{demo}", {"quota": {"pets": 1}}, "admin")) \
        == (400, "HTTPBadRequest")
    assert _error(await neutron.put(f"/v2.0/quotas/{demo}", {"quota": {"port": -5}}, "admin")) \
        == (400, "HTTPBadRequest")
    await neutron.create("network")
    r = await neutron.put(f"/v2.0/quotas/{demo}", {"quota": {"network": 0, "check_limit": True}},
                          "admin")
    assert _error(r) == (400, "HTTPBadRequest")
    r = await neutron.put(f"/v2.0/quotas/{demo}", {"quota": {"network": 0, "force": True}},
                          "admin")
    assert r.status_code == 200


# -- agents and zones -------------------------------------------------------------------


async def _report(cloud, host: str, agent_type: str, zone: str = "nova",
                  data_ip: str = "192.0.2.1") -> None:
    report = m.AgentReport(host=host, agent_type=agent_type, binary="tinystack-agent",
                           availability_zone=zone, data_ip=data_ip,
                           configurations={"devices": 0})
    await cloud.bus.cast(m.SERVER_TARGET, "report_agent", report=report)
    await settle(cloud)


async def test_agents_appear_by_their_heartbeats(neutron, cloud):
    await _report(cloud, "netnode", "DHCP agent")
    await _report(cloud, "netnode", "L3 agent")
    await _report(cloud, "compute1", "Linux bridge agent")
    agents = await neutron.listing("agents", as_="admin")
    assert sorted((a["host"], a["agent_type"], a["alive"]) for a in agents) == [
        ("compute1", "Linux bridge agent", True), ("netnode", "DHCP agent", True),
        ("netnode", "L3 agent", True)]
    dhcp = next(a for a in agents if a["agent_type"] == "DHCP agent")
    assert dhcp["topic"] == "dhcp_agent" and dhcp["availability_zone"] == "nova"
    assert dhcp["configurations"] == {"devices": 0} and dhcp["admin_state_up"] is True
    assert len(dhcp["heartbeat_timestamp"]) == 19
    l2 = next(a for a in agents if a["agent_type"] == "Linux bridge agent")
    assert l2["availability_zone"] is None
    r = await neutron.put(f"/v2.0/agents/{dhcp['id']}", {"agent": {"admin_state_up": False,
                                                                   "description": "off"}},
                          "admin")
    assert r.json()["agent"]["admin_state_up"] is False
    assert _error(await neutron.get("/v2.0/agents")) == (403, "PolicyNotAuthorized")
    assert (await neutron.delete(f"/v2.0/agents/{l2['id']}", "admin")).status_code == 204
    assert _error(await neutron.get(f"/v2.0/agents/{l2['id']}", "admin")) == \
        (404, "AgentNotFound")


async def test_an_agent_not_heard_from_is_not_alive(neutron, cloud, monkeypatch):
    import datetime as dt

    await _report(cloud, "netnode", "DHCP agent")
    core = cloud.services["network"].core
    later = core.clock() + dt.timedelta(seconds=cloud.settings.network.agent_down_time + 1)
    monkeypatch.setattr(core, "clock", lambda: later)
    agents = await neutron.listing("agents", as_="admin")
    assert [a["alive"] for a in agents] == [False]
    zones = (await neutron.get("/v2.0/availability_zones")).json()["availability_zones"]
    assert zones == [{"name": "nova", "resource": "network", "state": "unavailable"}]


async def test_availability_zones_come_from_dhcp_and_l3_agents(neutron, cloud):
    assert (await neutron.get("/v2.0/availability_zones")).json() == {"availability_zones": []}
    await _report(cloud, "netnode", "DHCP agent")
    await _report(cloud, "netnode", "L3 agent", zone="az2")
    r = await neutron.get("/v2.0/availability_zones")
    assert r.json()["availability_zones"] == [
        {"name": "az2", "resource": "router", "state": "available"},
        {"name": "nova", "resource": "network", "state": "available"}]
    r = await neutron.get("/v2.0/availability_zones?resource=router")
    assert [z["name"] for z in r.json()["availability_zones"]] == ["az2"]
    net = await neutron.create("network")
    assert net["availability_zones"] == ["nova"]


# -- RBAC ---------------------------------------------------------------------------------


async def test_sharing_a_network_with_one_project(neutron):
    alt = await neutron.project("alt_demo")
    net, sub = await neutron.network_with_subnet()
    assert (await neutron.get(f"/v2.0/networks/{net['id']}", "alt_demo")).status_code == 404
    policy = await neutron.create("rbac_policy", object_type="network", object_id=net["id"],
                                  action="access_as_shared", target_tenant=alt)
    assert (policy["object_id"], policy["action"], policy["target_tenant"]) == \
        (net["id"], "access_as_shared", alt)
    assert policy["project_id"] == await neutron.project("demo")
    seen = (await neutron.show("networks", net["id"], "alt_demo"))["network"]
    assert seen["shared"] is True
    assert (await neutron.show("networks", net["id"]))["network"]["shared"] is False
    assert (await neutron.get(f"/v2.0/subnets/{sub['id']}", "alt_demo")).status_code == 200
    port = await neutron.create("port", "alt_demo", network_id=net["id"])
    dup = await neutron.post("/v2.0/rbac-policies", {"rbac_policy": {
        "object_type": "network", "object_id": net["id"], "action": "access_as_shared",
        "target_tenant": alt}})
    assert _error(dup) == (409, "DuplicateRbacPolicy")
    r = await neutron.delete(f"/v2.0/rbac-policies/{policy['id']}")
    assert _error(r) == (409, "RbacPolicyInUse")
    await neutron.delete(f"/v2.0/ports/{port['id']}", "alt_demo")
    assert (await neutron.delete(f"/v2.0/rbac-policies/{policy['id']}")).status_code == 204
    assert (await neutron.get(f"/v2.0/networks/{net['id']}", "alt_demo")).status_code == 404
    listed = await neutron.listing("rbac-policies")
    assert listed == []


async def test_rbac_rules(neutron):
    net = await neutron.create("network")
    r = await neutron.post("/v2.0/rbac-policies", {"rbac_policy": {
        "object_type": "network", "object_id": net["id"], "action": "access_as_shared",
        "target_tenant": "*"}})
    assert _error(r) == (403, "PolicyNotAuthorized")
    theirs = await neutron.create("network", "alt_demo")
    r = await neutron.post("/v2.0/rbac-policies", {"rbac_policy": {
        "object_type": "network", "object_id": theirs["id"], "action": "access_as_shared",
        "target_tenant": "x"}})
    assert _error(r) == (404, "NetworkNotFound")
    wildcard = await neutron.create("rbac_policy", "admin", object_type="network",
                                    object_id=net["id"], action="access_as_shared",
                                    target_tenant="*")
    assert (await neutron.show("networks", net["id"]))["network"]["shared"] is True
    entries = await neutron.listing("rbac-policies", as_="admin")
    assert [e["id"] for e in entries] == [wildcard["id"]]
    await neutron.delete(f"/v2.0/rbac-policies/{wildcard['id']}", "admin")
    assert (await neutron.show("networks", net["id"]))["network"]["shared"] is False


async def test_shared_flag_is_a_wildcard_rbac_entry(neutron):
    net = await neutron.create("network", "admin", shared=True, **{"router:external": True})
    entries = await neutron.listing("rbac-policies", f"?object_id={net['id']}", "admin")
    assert sorted((e["action"], e["target_tenant"]) for e in entries) == [
        ("access_as_external", "*"), ("access_as_shared", "*")]
    port = await neutron.create("port", "alt_demo", network_id=net["id"])
    r = await neutron.put(f"/v2.0/networks/{net['id']}", {"network": {"shared": False}},
                          "admin")
    assert _error(r) == (409, "InvalidSharedSetting")
    await neutron.delete(f"/v2.0/ports/{port['id']}", "alt_demo")
    r = await neutron.put(f"/v2.0/networks/{net['id']}", {"network": {
        "shared": False, "router:external": False}}, "admin")
    assert r.status_code == 200
    assert await neutron.listing("rbac-policies", f"?object_id={net['id']}", "admin") == []
