"""Placement on real claims: several fake nodes, groups, zones, and racing requests."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from tinystack.compute.models import Allocation, ComputeNode
from tinystack.compute.scheduler import RequestSpec

from .support import FakeAgent, settle

MV = "2.100"


async def _hosts(nova, ids):
    return [(await nova.server(i, user="admin"))["OS-EXT-SRV-ATTR:host"] for i in ids]


async def _group(nova, policy, mv=MV, **rules):
    body = {"name": f"g-{policy}", "policy": policy}
    if rules:
        body["rules"] = rules
    return (await nova.ok("POST", "/os-server-groups", mv=mv,
                          json={"server_group": body}))["server_group"]["id"]


async def test_the_spread_weigher_uses_both_nodes(nova, cloud, agent, image_id):
    await FakeAgent(cloud, "node2").start()
    ids = [(await nova.create_server(image_id, name=f"s{i}"))["server"]["id"] for i in range(2)]
    assert sorted(await _hosts(nova, ids)) == ["node1", "node2"]


async def test_anti_affinity_puts_members_on_different_nodes(nova, cloud, agent, image_id):
    await FakeAgent(cloud, "node2").start()
    group = await _group(nova, "anti-affinity")
    ids = [(await nova.create_server(image_id, name=f"s{i}",
                                     **{"os:scheduler_hints": {"group": group}}))
           ["server"]["id"] for i in range(2)]
    assert sorted(await _hosts(nova, ids)) == ["node1", "node2"]
    third = (await nova.create_server(image_id, name="s3",
                                      **{"os:scheduler_hints": {"group": group}}))
    server = await nova.server(third["server"]["id"])
    assert server["status"] == "ERROR"
    assert server["fault"]["message"].startswith("No valid host was found.")
    members = await nova.ok("GET", f"/os-server-groups/{group}", mv=MV)
    assert set(members["server_group"]["members"]) == {*ids, third["server"]["id"]}
    assert set((await nova.server(ids[0]))["server_groups"]) == {group}


async def test_anti_affinity_with_max_server_per_host(nova, cloud, agent, image_id):
    group = await _group(nova, "anti-affinity", max_server_per_host=2)
    ids = [(await nova.create_server(image_id, name=f"s{i}",
                                     **{"os:scheduler_hints": {"group": group}}))
           ["server"]["id"] for i in range(3)]
    statuses = [(await nova.server(i))["status"] for i in ids]
    assert statuses == ["ACTIVE", "ACTIVE", "ERROR"]


async def test_affinity_keeps_members_together(nova, cloud, agent, image_id):
    await FakeAgent(cloud, "node2").start()
    group = await _group(nova, "affinity")
    ids = [(await nova.create_server(image_id, name=f"s{i}",
                                     **{"os:scheduler_hints": {"group": group}}))
           ["server"]["id"] for i in range(3)]
    assert len(set(await _hosts(nova, ids))) == 1


async def test_soft_anti_affinity_spreads_but_never_fails(nova, cloud, agent, image_id):
    await FakeAgent(cloud, "node2").start()
    group = await _group(nova, "soft-anti-affinity")
    ids = [(await nova.create_server(image_id, name=f"s{i}",
                                     **{"os:scheduler_hints": {"group": group}}))
           ["server"]["id"] for i in range(3)]
    hosts = await _hosts(nova, ids)
    assert sorted(hosts[:2]) == ["node1", "node2"]
    assert hosts[2] in ("node1", "node2")


async def test_soft_policies_need_2_15(nova, agent):
    r = await nova.compute("POST", "/os-server-groups", mv="2.14", json={
        "server_group": {"name": "g", "policies": ["soft-affinity"]}})
    assert r.status_code == 400


async def test_availability_zone_is_honoured(nova, cloud, agent, image_id):
    await FakeAgent(cloud, "edge1", zone="edge").start()
    server_id = (await nova.create_server(image_id, availability_zone="edge"))["server"]["id"]
    server = await nova.server(server_id, user="admin")
    assert server["OS-EXT-SRV-ATTR:host"] == "edge1"
    assert server["OS-EXT-AZ:availability_zone"] == "edge"
    assert server["pinned_availability_zone"] == "edge"
    r = await nova.create_server(image_id, availability_zone="moon", expect=400)
    assert r["badRequest"]["message"] == "The requested availability zone is not available"


async def test_forced_host_is_for_admins(nova, cloud, agent, image_id):
    await FakeAgent(cloud, "node2").start()
    r = await nova.create_server(image_id, availability_zone="nova:node2", expect=403)
    assert "forced_host" in r["forbidden"]["message"]
    created = await nova.create_server(image_id, availability_zone="nova:node2",
                                       user="admin")
    assert (await _hosts(nova, [created["server"]["id"]])) == ["node2"]
    created = await nova.create_server(image_id, host="node1", user="admin")
    assert (await _hosts(nova, [created["server"]["id"]])) == ["node1"]
    r = await nova.create_server(image_id, host="node1", mv="2.73", user="admin",
                                 expect=400)


async def test_disabled_and_down_nodes_get_no_servers(nova, cloud, agent, image_id, clock):
    services = await nova.ok("GET", "/os-services?binary=nova-compute", user="admin", mv=MV)
    service_id = services["services"][0]["id"]
    await nova.ok("PUT", f"/os-services/{service_id}", user="admin", mv=MV,
                  json={"status": "disabled", "disabled_reason": "maintenance"})
    server_id = (await nova.create_server(image_id))["server"]["id"]
    assert (await nova.server(server_id))["status"] == "ERROR"
    await nova.ok("PUT", f"/os-services/{service_id}", user="admin", mv=MV,
                  json={"status": "enabled"})
    clock.advance(seconds=120)
    server_id = (await nova.create_server(image_id))["server"]["id"]
    assert (await nova.server(server_id))["status"] == "ERROR"
    await agent.heartbeat()
    server_id = (await nova.create_server(image_id))["server"]["id"]
    assert (await nova.server(server_id))["status"] == "ACTIVE"


async def test_image_properties_choose_the_node(nova, agent, image_id, glance):
    arm = glance.add(hw_architecture="aarch64")
    server_id = (await nova.create_server(arm))["server"]["id"]
    assert (await nova.server(server_id))["status"] == "ERROR"


@pytest.mark.slow
async def test_racing_claims_cannot_overcommit(cloud, agent, nova, image_id):
    """Many threads claim on one node with room for three: exactly three win."""
    compute = cloud.services["compute"]
    agent.memory_mb = 1000
    await agent.heartbeat()
    scheduler = compute.scheduler
    with compute.db.session() as s:
        state = next(h for h in scheduler.host_states(s) if h.host == "node1")
    state.ram_ratio = 1.0
    results: list[bool] = []
    barrier = threading.Barrier(8)

    def claim(i: int) -> None:
        barrier.wait()
        with compute.db.session() as s:
            results.append(scheduler.claim(s, state, RequestSpec(f"s{i}", 1, 300, 1)))

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(results) == [False] * 5 + [True] * 3
    with compute.db.session() as s:
        node = s.scalar(sa.select(ComputeNode).where(ComputeNode.host == "node1"))
        assert node.claimed_memory_mb == 900
        assert s.scalar(sa.select(sa.func.count()).select_from(Allocation)) == 3


@pytest.mark.slow
async def test_racing_creates_fill_a_node_exactly(nova, cloud, agent, image_id):
    """Creates racing through the API never place more than the node holds."""
    import asyncio

    agent.memory_mb = 512  # 768 MiB with the 1.5 ratio: room for four m1.nano (192 MiB)
    await agent.heartbeat()
    created = await asyncio.gather(*[
        nova.compute("POST", "/servers", mv=MV, json={"server": {
            "name": f"r{i}", "imageRef": image_id, "flavorRef": "42", "networks": "none"}})
        for i in range(6)])
    assert [r.status_code for r in created] == [202] * 6
    await settle(cloud)
    statuses = sorted([(await nova.server(r.json()["server"]["id"]))["status"]
                       for r in created])
    assert statuses == ["ACTIVE"] * 4 + ["ERROR"] * 2
