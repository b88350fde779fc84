"""The network API through the real ``openstack`` CLI and openstacksdk, as a person uses it.

Clouds: ``tinystack`` is demo, ``tinystack-alt`` alt_demo, ``tinystack-admin``
the admin. The first start made DevStack's networks (``public``, and
``private`` + ``router1`` for demo); these tests add their own resources with
names unique to the test and delete them again. Packets are the data-plane
tests' business; here the clients' requests and the answers they understand.
"""

from __future__ import annotations

import json
import time
import uuid

import openstack
import pytest


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def as_json(result):
    return json.loads(result.stdout)


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)
    return value


@pytest.fixture(scope="module")
def bootstrapped(tinystack_up):
    """The instance once its first-start networks are in place (made in the background)."""
    ts = tinystack_up
    wait_for(lambda: "router1" in ts.openstack("router", "list", "-f", "value", "-c", "Name",
                                               cloud="tinystack").stdout,
             120, "the bootstrap networks")
    return ts


def test_devstacks_networks_are_there(bootstrapped):
    ts = bootstrapped
    nets = {n["Name"]: n for n in as_json(ts.openstack("network", "list", "-f", "json",
                                                       cloud="tinystack"))}
    assert {"public", "private"} <= set(nets)
    public = as_json(ts.openstack("network", "show", "public", "-f", "json"))
    assert public["router:external"] is True and public["provider:network_type"] == "flat"
    assert public["mtu"] == 1500
    private = as_json(ts.openstack("network", "show", "private", "-f", "json",
                                   cloud="tinystack"))
    assert private["mtu"] == 1450
    subnet = as_json(ts.openstack("subnet", "show", "private-subnet", "-f", "json",
                                  cloud="tinystack"))
    assert subnet["cidr"] == "10.0.0.0/26" and subnet["gateway_ip"] == "10.0.0.1"
    router = as_json(ts.openstack("router", "show", "router1", "-f", "json", cloud="tinystack"))
    assert router["external_gateway_info"]["network_id"] == public["id"]
    rules = as_json(ts.openstack("security", "group", "rule", "list", "default", "--ingress",
                                 "-f", "json", cloud="tinystack"))
    assert {(r["IP Protocol"], r["Port Range"]) for r in rules} >= {("icmp", ""),
                                                                    ("tcp", "22:22")}


def test_a_tenant_builds_a_network_a_router_and_a_floating_ip(bootstrapped):
    ts = bootstrapped
    demo = {"cloud": "tinystack"}
    net, sub, router = unique("net"), unique("sub"), unique("router")
    ts.openstack("network", "create", net, **demo)
    made = as_json(ts.openstack("subnet", "create", "--network", net, "--subnet-range",
                                "10.77.0.0/24", "--dns-nameserver", "192.0.2.53", sub,
                                "-f", "json", **demo))
    assert made["allocation_pools"] == [{"start": "10.77.0.2", "end": "10.77.0.254"}]
    port = as_json(ts.openstack("port", "create", "--network", net, "--fixed-ip",
                                f"subnet={sub},ip-address=10.77.0.40", unique("port"),
                                "-f", "json", **demo))
    assert port["fixed_ips"] == [{"subnet_id": made["id"], "ip_address": "10.77.0.40"}]
    assert port["mac_address"].startswith("fa:16:3e:")
    clash = ts.openstack("port", "create", "--network", net, "--fixed-ip",
                         "ip-address=10.77.0.40", unique("port"), check=False, **demo)
    assert clash.returncode != 0 and "already allocated" in clash.stderr
    ts.openstack("router", "create", router, **demo)
    ts.openstack("router", "set", "--external-gateway", "public", router, **demo)
    ts.openstack("router", "add", "subnet", router, sub, **demo)
    fip = as_json(ts.openstack("floating", "ip", "create", "public", "-f", "json", **demo))
    ts.openstack("floating", "ip", "set", "--port", port["id"], fip["floating_ip_address"],
                 **demo)
    shown = as_json(ts.openstack("floating", "ip", "show", fip["id"], "-f", "json", **demo))
    assert shown["fixed_ip_address"] == "10.77.0.40"
    assert shown["router_id"] == as_json(ts.openstack("router", "show", router, "-f", "json",
                                                      **demo))["id"]
    busy = ts.openstack("network", "delete", net, check=False, **demo)
    assert busy.returncode != 0 and "still in use" in busy.stderr
    ts.openstack("floating", "ip", "delete", fip["id"], **demo)
    ts.openstack("port", "delete", port["id"], **demo)
    ts.openstack("router", "remove", "subnet", router, sub, **demo)
    ts.openstack("router", "delete", router, **demo)
    ts.openstack("network", "delete", net, **demo)
    assert net not in ts.openstack("network", "list", "-f", "value", "-c", "Name", **demo).stdout


def test_security_groups_quotas_zones_and_extensions(bootstrapped):
    ts = bootstrapped
    demo = {"cloud": "tinystack"}
    group = unique("web")
    ts.openstack("security", "group", "create", group, **demo)
    rule = as_json(ts.openstack("security", "group", "rule", "create", "--protocol", "tcp",
                                "--dst-port", "80", group, "-f", "json", **demo))
    assert (rule["port_range_min"], rule["port_range_max"]) == (80, 80)
    again = ts.openstack("security", "group", "rule", "create", "--protocol", "tcp",
                         "--dst-port", "80", group, check=False, **demo)
    assert again.returncode != 0 and "already exists" in again.stderr
    ts.openstack("security", "group", "delete", group, **demo)
    quota = as_json(ts.openstack("quota", "show", "--network", "demo", "-f", "json"))
    limits = {q["Resource"]: q["Limit"] for q in quota} if isinstance(quota, list) else quota
    assert limits.get("networks") == 100 and limits.get("ports") == 500
    aliases = ts.openstack("extension", "list", "--network", "-f", "value", "-c", "Alias").stdout
    assert {"router", "external-net", "security-group", "binding"} <= set(aliases.split())
    agents = wait_for(lambda: as_json(ts.openstack("network", "agent", "list", "-f", "json")),
                      60, "network agents")
    assert all(a["Alive"] for a in agents)


def test_the_sdk_sees_the_same(bootstrapped, monkeypatch):
    ts = bootstrapped
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(ts.clouds_yaml))
    conn = openstack.connect(cloud="tinystack")
    try:
        private = conn.network.find_network("private", ignore_missing=False)
        assert private.mtu == 1450
        assert conn.network.find_extension("Availability Zone") is not None
        names = {g.name for g in conn.network.security_groups()}
        assert "default" in names
        details = conn.network.get_quota(conn.current_project_id, details=True)
        assert details.networks["limit"] == 100
    finally:
        conn.close()
