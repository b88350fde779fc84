"""Security groups and rules: the default group, Neutron's rule checks, in-use groups."""

from __future__ import annotations

import pytest


def _error(r) -> tuple[int, str]:
    return r.status_code, r.json()["NeutronError"]["type"]


def _shape(rule: dict) -> tuple:
    return (rule["direction"], rule["ethertype"], rule["protocol"], rule["port_range_min"],
            rule["port_range_max"], rule["remote_ip_prefix"], rule["remote_group_id"])


async def test_the_default_group_appears_on_first_use_with_neutrons_rules(neutron):
    groups = await neutron.listing("security-groups")
    assert [g["name"] for g in groups] == ["default"]
    default = groups[0]
    assert default["description"] == "Default security group"
    assert default["project_id"] == await neutron.project("demo")
    assert sorted(_shape(r) for r in default["security_group_rules"]) == sorted([
        ("egress", "IPv4", None, None, None, None, None),
        ("egress", "IPv6", None, None, None, None, None),
        ("ingress", "IPv4", None, None, None, None, default["id"]),
        ("ingress", "IPv6", None, None, None, None, default["id"])])
    again = await neutron.listing("security-groups")
    assert [g["id"] for g in again] == [default["id"]]
    rules = await neutron.listing("security-group-rules", f"?security_group_id={default['id']}")
    assert len(rules) == 4 and all(r["security_group_id"] == default["id"] for r in rules)


async def test_the_default_group_stays_and_keeps_its_name(neutron):
    default = (await neutron.listing("security-groups"))[0]
    r = await neutron.delete(f"/v2.0/security-groups/{default['id']}")
    assert _error(r) == (409, "SecurityGroupCannotRemoveDefault")
    r = await neutron.put(f"/v2.0/security-groups/{default['id']}",
                          {"security_group": {"name": "other"}})
    assert _error(r) == (409, "SecurityGroupCannotUpdateDefault")
    r = await neutron.post("/v2.0/security-groups", {"security_group": {"name": "default"}})
    assert _error(r) == (409, "SecurityGroupDefaultAlreadyExists")
    r = await neutron.put(f"/v2.0/security-groups/{default['id']}",
                          {"security_group": {"description": "ours"}})
    assert r.status_code == 200


async def test_a_new_group_allows_egress_only(neutron):
    group = await neutron.create("security_group", name="web", description="www")
    assert (group["name"], group["description"], group["stateful"]) == ("web", "www", True)
    assert sorted(_shape(r) for r in group["security_group_rules"]) == [
        ("egress", "IPv4", None, None, None, None, None),
        ("egress", "IPv6", None, None, None, None, None)]


async def test_rules_are_made_as_the_clients_send_them(neutron):
    group = await neutron.create("security_group", name="web")
    ssh = await neutron.create("security_group_rule", security_group_id=group["id"],
                               direction="ingress", ethertype="IPv4", protocol="tcp",
                               port_range_min=22, port_range_max=22,
                               remote_ip_prefix="0.0.0.0/0")
    assert _shape(ssh) == ("ingress", "IPv4", "tcp", 22, 22, "0.0.0.0/0", None)
    icmp = await neutron.create("security_group_rule", security_group_id=group["id"],
                                direction="ingress", protocol="icmp")
    assert _shape(icmp) == ("ingress", "IPv4", "icmp", None, None, None, None)
    ping6 = await neutron.create("security_group_rule", security_group_id=group["id"],
                                 direction="ingress", ethertype="IPv6", protocol="icmp",
                                 port_range_min=128, port_range_max=0)
    assert ping6["protocol"] == "ipv6-icmp"
    peer = await neutron.create("security_group_rule", security_group_id=group["id"],
                                direction="ingress", protocol="udp", port_range_min=53,
                                remote_group_id=group["id"])
    assert _shape(peer) == ("ingress", "IPv4", "udp", 53, 53, None, group["id"])
    dup = await neutron.post("/v2.0/security-group-rules", {"security_group_rule": {
        "security_group_id": group["id"], "direction": "ingress", "protocol": "icmp",
        "remote_ip_prefix": "0.0.0.0/0"}})
    assert _error(dup) == (409, "SecurityGroupRuleExists")
    assert dup.json()["NeutronError"]["message"] == \
        f"Security group rule already exists. Rule id is {icmp['id']}."
    shown = (await neutron.show("security-groups", group["id"]))["security_group"]
    assert len(shown["security_group_rules"]) == 6
    assert (await neutron.delete(f"/v2.0/security-group-rules/{ssh['id']}")).status_code == 204
    assert _error(await neutron.get(f"/v2.0/security-group-rules/{ssh['id']}")) == \
        (404, "SecurityGroupRuleNotFound")


@pytest.mark.parametrize("attrs, kind, status", [
    ({"protocol": "bogus"}, "SecurityGroupRuleInvalidProtocol", 400),
    ({"protocol": "300"}, "SecurityGroupRuleInvalidProtocol", 400),
    ({"protocol": "tcp", "port_range_min": 90, "port_range_max": 80},
     "SecurityGroupInvalidPortRange", 400),
    ({"protocol": "tcp", "port_range_min": 0, "port_range_max": 80},
     "SecurityGroupInvalidPortValue", 400),
    ({"protocol": "udp", "port_range_min": 1, "port_range_max": 70000},
     "SecurityGroupInvalidPortValue", 400),
    ({"protocol": "icmp", "port_range_min": 300}, "SecurityGroupInvalidIcmpValue", 400),
    ({"protocol": "icmp", "port_range_max": 3}, "SecurityGroupMissingIcmpType", 400),
    ({"protocol": "gre", "port_range_min": 1, "port_range_max": 2}, "InvalidInput", 400),
    ({"remote_ip_prefix": "10.0.0.0/8", "remote_group_id": "SELF"},
     "SecurityGroupRemoteGroupAndRemoteIpPrefix", 400),
    ({"ethertype": "IPv6", "remote_ip_prefix": "10.0.0.0/8"},
     "SecurityGroupRuleParameterConflict", 400),
    ({"remote_group_id": "6c2f5c5e-8f1e-4c1b-9f3e-55e2d7d7e111"}, "SecurityGroupNotFound",
     404),
    ({"direction": "sideways"}, "HTTPBadRequest", 400),
])
async def test_bad_rules_are_refused_as_neutron_refuses_them(neutron, attrs, kind, status):
    group = await neutron.create("security_group", name="g")
    attrs = {k: (group["id"] if v == "SELF" else v) for k, v in attrs.items()}
    body = {"security_group_id": group["id"], "direction": "ingress", **attrs}
    r = await neutron.post("/v2.0/security-group-rules", {"security_group_rule": body})
    assert _error(r) == (status, kind), r.text


async def test_a_group_in_use_stays(neutron):
    group = await neutron.create("security_group", name="g")
    net, _ = await neutron.network_with_subnet()
    port = await neutron.create("port", network_id=net["id"], security_groups=[group["id"]])
    r = await neutron.delete(f"/v2.0/security-groups/{group['id']}")
    assert _error(r) == (409, "SecurityGroupInUse")
    await neutron.put(f"/v2.0/ports/{port['id']}", {"port": {"security_groups": []}})
    assert (await neutron.delete(f"/v2.0/security-groups/{group['id']}")).status_code == 204


async def test_groups_of_other_projects_are_hidden(neutron):
    theirs = await neutron.create("security_group", "alt_demo", name="theirs")
    assert _error(await neutron.get(f"/v2.0/security-groups/{theirs['id']}")) == \
        (404, "SecurityGroupNotFound")
    r = await neutron.post("/v2.0/security-group-rules", {"security_group_rule": {
        "security_group_id": theirs["id"], "direction": "ingress"}})
    assert _error(r) == (404, "SecurityGroupNotFound")
    names = {g["name"] for g in await neutron.listing("security-groups", as_="admin")}
    assert {"theirs", "default"} <= names


async def test_rule_quota(neutron):
    demo = await neutron.project("demo")
    await neutron.listing("security-groups")
    await neutron.put(f"/v2.0/quotas/{demo}", {"quota": {"security_group_rule": 6}}, "admin")
    group = await neutron.create("security_group", name="g")
    r = await neutron.post("/v2.0/security-group-rules", {"security_group_rule": {
        "security_group_id": group["id"], "direction": "ingress", "protocol": "tcp",
        "port_range_min": 80, "port_range_max": 80}})
    assert _error(r) == (409, "OverQuota")
