"""The conductor's side of the contract: reports, reconciliation, and nothing hanging."""

from __future__ import annotations

import uuid

from tinystack.compute.conductor import BUILD_TIMED_OUT
from tinystack.compute.messages import ServerSpec

from .support import settle

MV = "2.100"


async def _server(nova, image_id, **kw) -> str:
    return (await nova.create_server(image_id, **kw))["server"]["id"]


async def _watchdog(cloud) -> None:
    await cloud.services["compute"].watchdog.run_once()
    await settle(cloud)


async def test_a_stale_report_changes_nothing(nova, agent, image_id):
    server_id = await _server(nova, image_id)
    first = agent.for_server(server_id)[0]
    await nova.action(server_id, {"os-stop": None})
    await agent.report(first, "active", "running")
    await settle(nova.cloud)
    server = await nova.server(server_id)
    assert (server["status"], server["OS-EXT-STS:power_state"]) == ("SHUTOFF", 4)


async def test_a_guest_that_powers_itself_off_becomes_shutoff(nova, agent, image_id):
    server_id = await _server(nova, image_id)
    await agent.report(agent.servers[server_id], "stopped", "shutdown")
    await settle(nova.cloud)
    server = await nova.server(server_id)
    assert (server["status"], server["OS-EXT-STS:power_state"]) == ("SHUTOFF", 4)
    await nova.action(server_id, {"os-start": None})
    assert (await nova.server(server_id))["status"] == "ACTIVE"


async def test_a_report_for_an_unknown_server_gets_a_tombstone(nova, agent):
    stray = ServerSpec(id=str(uuid.uuid4()), name="old", revision=3)
    await agent.report(stray, "active", "running")
    await settle(nova.cloud)
    tombstone = agent.for_server(stray.id)[-1]
    assert tombstone.want == "deleted" and tombstone.revision > 3


async def test_a_heartbeat_reconciles_missing_and_stray_servers(nova, agent, image_id):
    server_id = await _server(nova, image_id)
    before = len(agent.for_server(server_id))
    stray = str(uuid.uuid4())
    await agent.heartbeat(servers=[stray])
    resent = agent.for_server(server_id)
    assert len(resent) == before + 1 and resent[-1].want == "active"
    assert agent.for_server(stray)[-1].want == "deleted"
    calm = len(agent.specs)
    await agent.heartbeat()
    assert len(agent.specs) == calm


async def test_a_silent_build_times_out_into_error(make_compute_cloud, nova, agent, image_id,
                                                  clock):
    agent.silent = True
    server_id = await _server(nova, image_id)
    clock.advance(seconds=299)
    await _watchdog(nova.cloud)
    assert (await nova.server(server_id))["status"] == "BUILD"
    clock.advance(seconds=2)
    await agent.heartbeat()
    await _watchdog(nova.cloud)
    server = await nova.server(server_id)
    assert server["status"] == "ERROR"
    assert server["fault"]["message"] == BUILD_TIMED_OUT
    detail = await nova.ok("GET", f"/servers/{server_id}/os-instance-actions", mv=MV)
    assert detail["instanceActions"][0]["message"] == "Error"


async def test_a_silent_action_is_dropped_after_the_timeout(nova, agent, image_id, clock):
    server_id = await _server(nova, image_id)
    agent.silent = True
    await nova.action(server_id, {"os-stop": None})
    sent = len(agent.for_server(server_id))
    clock.advance(seconds=301)
    await agent.heartbeat()
    await _watchdog(nova.cloud)
    server = await nova.server(server_id)
    assert (server["status"], server["OS-EXT-STS:task_state"]) == ("ACTIVE", None)
    reasserted = agent.for_server(server_id)
    assert len(reasserted) > sent and reasserted[-1].want == "active"
    actions = await nova.ok("GET", f"/servers/{server_id}/os-instance-actions", mv=MV)
    assert actions["instanceActions"][0]["message"] == "Error"


async def test_a_silent_resize_is_undone_after_the_timeout(nova, agent, image_id, clock):
    server_id = await _server(nova, image_id)
    agent.silent = True
    await nova.action(server_id, {"resize": {"flavorRef": "1"}})
    clock.advance(seconds=301)
    await agent.heartbeat()
    await _watchdog(nova.cloud)
    server = await nova.server(server_id)
    assert (server["status"], server["flavor"]["original_name"]) == ("ACTIVE", "m1.nano")
    assert agent.for_server(server_id)[-1].memory_mb == 192


async def test_delete_on_a_down_node_finishes_locally(nova, agent, image_id, clock):
    server_id = await _server(nova, image_id)
    clock.advance(seconds=120)
    r = await nova.compute("DELETE", f"/servers/{server_id}", mv=MV)
    assert r.status_code == 204
    assert (await nova.compute("GET", f"/servers/{server_id}", mv=MV)).status_code == 404
    assert agent.for_server(server_id)[-1].want == "deleted"


async def test_a_silent_delete_finishes_after_the_timeout(nova, agent, image_id, clock):
    server_id = await _server(nova, image_id)
    agent.silent = True
    await nova.compute("DELETE", f"/servers/{server_id}", mv=MV)
    await settle(nova.cloud)
    assert (await nova.server(server_id))["OS-EXT-STS:task_state"] == "deleting"
    clock.advance(seconds=301)
    await agent.heartbeat()
    await _watchdog(nova.cloud)
    assert (await nova.compute("GET", f"/servers/{server_id}", mv=MV)).status_code == 404


async def test_the_watchdog_keeps_the_controller_services_up(nova, cloud, clock):
    clock.advance(seconds=3600)
    await _watchdog(cloud)
    services = await nova.ok("GET", "/os-services", user="admin", mv=MV)
    assert {s["binary"]: s["state"] for s in services["services"]} == {
        "nova-scheduler": "up", "nova-conductor": "up"}
    assert {s["zone"] for s in services["services"]} == {"internal"}
