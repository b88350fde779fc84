"""First start: DevStack's public network, and private + router1 for demo, ping and SSH open.

The bootstrap logs in through the cloud's own identity API; here it goes over
ASGI instead of the (not listening) HTTP port.
"""

from __future__ import annotations

import httpx

from tinystack.network import messages as m
from tinystack.network.bootstrap import ensure_bootstrap

from .support import NODE


async def _run(neutron, **kwargs) -> bool:
    transport = httpx.ASGITransport(app=neutron.cloud.asgi)
    return await ensure_bootstrap(neutron.component, transport=transport, **kwargs)


async def test_bootstrap_makes_devstacks_networks(neutron, agents):
    assert await _run(neutron) is True
    admin, demo = await neutron.project("admin"), await neutron.project("demo")
    nets = {n["name"]: n for n in await neutron.listing("networks", as_="admin")}
    public, private = nets["public"], nets["private"]
    assert (public["project_id"], public["router:external"], public["mtu"]) == (admin, True, 1500)
    assert (public["provider:network_type"], public["provider:physical_network"]) == \
        ("flat", "public")
    assert (private["project_id"], private["provider:network_type"], private["mtu"]) == \
        (demo, "vxlan", 1450)
    subnets = {s["name"]: s for s in await neutron.listing("subnets", as_="admin")}
    pub = subnets["public-subnet"]
    assert (pub["cidr"], pub["gateway_ip"], pub["enable_dhcp"]) == ("172.24.4.0/24",
                                                                    "172.24.4.1", False)
    assert pub["allocation_pools"] == [{"start": "172.24.4.2", "end": "172.24.4.254"}]
    priv = subnets["private-subnet"]
    assert (priv["cidr"], priv["gateway_ip"], priv["enable_dhcp"], priv["project_id"]) == (
        "10.0.0.0/26", "10.0.0.1", True, demo)
    routers = await neutron.listing("routers")
    assert [r["name"] for r in routers] == ["router1"]
    router = routers[0]
    assert router["external_gateway_info"]["network_id"] == public["id"]
    assert router["external_gateway_info"]["external_fixed_ips"][0]["ip_address"] == \
        "172.24.4.2"
    interfaces = await neutron.listing("ports", f"?device_id={router['id']}&device_owner="
                                       "network:router_interface")
    assert [p["fixed_ips"][0]["ip_address"] for p in interfaces] == ["10.0.0.1"]
    default = next(g for g in await neutron.listing("security-groups") if g["name"] == "default")
    ingress = {(r["protocol"], r["port_range_min"], r["remote_ip_prefix"])
               for r in default["security_group_rules"] if r["direction"] == "ingress"}
    assert {("icmp", None, "0.0.0.0/0"), ("tcp", 22, "0.0.0.0/0")} <= ingress
    spec = agents.last("sync_router", router["id"], m.l3_target(NODE))
    assert spec.gateway.ip_address == "172.24.4.2"
    assert [i.ip_address for i in spec.interfaces] == ["10.0.0.1"]
    assert not agents.last("sync_dhcp", private["id"], m.dhcp_target(NODE)).deleted


async def test_bootstrap_runs_once_and_never_doubles_anything(neutron):
    assert await _run(neutron) is True
    assert await _run(neutron) is False
    assert await _run(neutron, force=True) is True
    assert sorted(n["name"] for n in await neutron.listing("networks", as_="admin")) == [
        "private", "public"]
    assert len(await neutron.listing("routers", as_="admin")) == 1
    default = next(g for g in await neutron.listing("security-groups") if g["name"] == "default")
    assert len(default["security_group_rules"]) == 6


async def test_a_demo_port_gets_an_address_from_private(neutron):
    await _run(neutron)
    private = (await neutron.listing("networks", "?name=private"))[0]
    port = await neutron.create("port", network_id=private["id"])
    assert port["fixed_ips"][0]["ip_address"] == "10.0.0.3"
