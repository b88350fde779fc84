"""Server actions: each one's state transitions, what the node is told, and its records."""

from __future__ import annotations

import pytest

from tinystack.compute.models import Allocation, ComputeNode

from .support import settle

MV = "2.100"


async def _active(nova, image_id, **fields) -> str:
    return (await nova.create_server(image_id, **fields))["server"]["id"]


async def _state(nova, server_id):
    server = await nova.server(server_id)
    return (server["status"], server["OS-EXT-STS:vm_state"], server["OS-EXT-STS:task_state"],
            server["OS-EXT-STS:power_state"])


@pytest.mark.parametrize("steps", [
    [("os-stop", ("SHUTOFF", "stopped", 4), "stopped"),
     ("os-start", ("ACTIVE", "active", 1), "active")],
    [("pause", ("PAUSED", "paused", 3), "paused"),
     ("unpause", ("ACTIVE", "active", 1), "active")],
    [("suspend", ("SUSPENDED", "suspended", 7), "suspended"),
     ("resume", ("ACTIVE", "active", 1), "active")],
])
async def test_power_actions(nova, agent, image_id, steps):
    server_id = await _active(nova, image_id)
    for action, (status, vm_state, power), want in steps:
        await nova.action(server_id, {action: None})
        assert await _state(nova, server_id) == (status, vm_state, None, power)
        assert agent.for_server(server_id)[-1].want == want
    revisions = [s.revision for s in agent.for_server(server_id)]
    assert revisions == sorted(set(revisions))


@pytest.mark.parametrize("action, task, status", [
    ("os-stop", "powering-off", "ACTIVE"), ("pause", "pausing", "ACTIVE"),
    ("suspend", "suspending", "ACTIVE"),
])
async def test_task_state_shows_while_the_node_works(nova, agent, image_id, action, task,
                                                     status):
    server_id = await _active(nova, image_id)
    agent.silent = True
    await nova.action(server_id, {action: None})
    assert await _state(nova, server_id) == (status, "active", task, 1)


async def test_actions_in_the_wrong_state_are_409(nova, agent, image_id):
    server_id = await _active(nova, image_id)
    r = await nova.compute("POST", f"/servers/{server_id}/action", mv=MV,
                           json={"os-start": None})
    assert r.status_code == 409
    assert r.json() == {"conflictingRequest": {"code": 409, "message": (
        f"Cannot 'start' instance {server_id} while it is in vm_state active")}}
    agent.silent = True
    await nova.action(server_id, {"os-stop": None})
    r = await nova.compute("POST", f"/servers/{server_id}/action", mv=MV,
                           json={"pause": None})
    assert r.json()["conflictingRequest"]["message"] == (
        f"Cannot 'pause' instance {server_id} while it is in task_state powering-off")


async def test_reboot_soft_and_hard(nova, agent, image_id):
    server_id = await _active(nova, image_id)
    agent.silent = True
    await nova.action(server_id, {"reboot": {"type": "SOFT"}})
    assert (await nova.server(server_id))["status"] == "REBOOT"
    agent.silent = False
    await agent.sync_server(agent.for_server(server_id)[-1].model_dump())
    await settle(nova.cloud)
    assert (await nova.server(server_id))["status"] == "ACTIVE"
    agent.silent = True
    await nova.action(server_id, {"reboot": {"type": "HARD"}})
    assert (await nova.server(server_id))["status"] == "HARD_REBOOT"
    assert [s.reboot for s in agent.for_server(server_id)][-2:] == ["soft", "hard"]
    r = await nova.compute("POST", f"/servers/{server_id}/action", mv=MV,
                           json={"reboot": {"type": "SIDEWAYS"}})
    assert r.status_code == 400


async def test_hard_reboot_starts_a_stopped_server(nova, agent, image_id):
    server_id = await _active(nova, image_id)
    await nova.action(server_id, {"os-stop": None})
    r = await nova.compute("POST", f"/servers/{server_id}/action", mv=MV,
                           json={"reboot": {"type": "SOFT"}})
    assert r.status_code == 409
    await nova.action(server_id, {"reboot": {"type": "HARD"}})
    assert (await _state(nova, server_id))[:2] == ("ACTIVE", "active")


async def test_failed_reboot_ends_in_error(nova, agent, image_id):
    server_id = await _active(nova, image_id)
    agent.fail_on = {"reboot"}
    await nova.action(server_id, {"reboot": {"type": "HARD"}})
    server = await nova.server(server_id)
    assert server["status"] == "ERROR"
    assert "qemu exited" in server["fault"]["message"]


async def test_lock_and_unlock(nova, agent, image_id):
    server_id = await _active(nova, image_id)
    await nova.action(server_id, {"lock": {"locked_reason": "maintenance"}})
    server = await nova.server(server_id)
    assert server["locked"] is True and server["locked_reason"] == "maintenance"
    r = await nova.compute("POST", f"/servers/{server_id}/action", mv=MV,
                           json={"os-stop": None})
    assert r.status_code == 409
    assert r.json()["conflictingRequest"]["message"] == f"Instance {server_id} is locked"
    r = await nova.compute("DELETE", f"/servers/{server_id}", mv=MV)
    assert r.status_code == 409
    await nova.action(server_id, {"os-stop": None}, user="admin")
    r = await nova.compute("POST", f"/servers/{server_id}/action", mv="2.72",
                           json={"lock": {"locked_reason": "x"}})
    assert r.status_code == 400
    await nova.action(server_id, {"unlock": None})
    assert (await nova.server(server_id))["locked"] is False
    await nova.action(server_id, {"lock": None}, user="admin")
    r = await nova.compute("POST", f"/servers/{server_id}/action", mv=MV,
                           json={"unlock": None})
    assert r.status_code == 403


async def test_rebuild(nova, agent, image_id, glance):
    server_id = await _active(nova, image_id, metadata={"old": "1"})
    other = glance.add(name="other")
    agent.silent = True
    body = await nova.action(server_id, {"rebuild": {
        "imageRef": other, "name": "rebuilt", "metadata": {"new": "2"},
        "description": "fresh"}})
    assert body["server"]["status"] == "REBUILD"
    assert body["server"]["image"]["id"] == other
    assert body["server"]["metadata"] == {"new": "2"}
    assert "adminPass" in body["server"]
    spec = agent.for_server(server_id)[-1]
    assert spec.rebuild is True and spec.image.id == other
    agent.silent = False
    await agent.sync_server(spec.model_dump())
    await settle(nova.cloud)
    server = await nova.server(server_id)
    assert (server["status"], server["name"], server["description"]) == \
        ("ACTIVE", "rebuilt", "fresh")
    big = glance.add(size=5 * 1024 ** 3)
    r = await nova.compute("POST", f"/servers/{server_id}/action", mv=MV,
                           json={"rebuild": {"imageRef": big}})
    assert r.status_code == 400 and "too small" in r.json()["badRequest"]["message"]


async def test_rebuild_keeps_a_stopped_server_stopped(nova, agent, image_id):
    server_id = await _active(nova, image_id)
    await nova.action(server_id, {"os-stop": None})
    await nova.action(server_id, {"rebuild": {"imageRef": image_id}})
    assert (await _state(nova, server_id))[:2] == ("SHUTOFF", "stopped")
    assert agent.for_server(server_id)[-1].want == "stopped"


async def test_resize_then_confirm(nova, agent, image_id):
    server_id = await _active(nova, image_id)
    agent.silent = True
    await nova.action(server_id, {"resize": {"flavorRef": "1"}})
    assert (await nova.server(server_id))["status"] == "RESIZE"
    spec = agent.for_server(server_id)[-1]
    assert (spec.memory_mb, spec.vcpus) == (512, 1)
    agent.silent = False
    await agent.sync_server(spec.model_dump())
    await settle(nova.cloud)
    server = await nova.server(server_id)
    assert server["status"] == "VERIFY_RESIZE"
    assert server["flavor"]["original_name"] == "m1.tiny"
    await agent.heartbeat()
    node = (await nova.ok("GET", "/os-hypervisors/detail", user="admin", mv="2.87")
            )["hypervisors"][0]
    assert node["memory_mb_used"] == 512
    await nova.action(server_id, {"confirmResize": None}, expect=204)
    assert (await nova.server(server_id))["status"] == "ACTIVE"
    with nova.cloud.services["compute"].db.session() as s:
        assert [a.kind for a in s.query(Allocation).all()] == ["server"]
        assert s.query(ComputeNode).one().claimed_memory_mb == 512


async def test_resize_then_revert(nova, agent, image_id):
    server_id = await _active(nova, image_id)
    await nova.action(server_id, {"resize": {"flavorRef": "1"}})
    assert (await nova.server(server_id))["status"] == "VERIFY_RESIZE"
    agent.silent = True
    await nova.action(server_id, {"revertResize": None})
    assert (await nova.server(server_id))["status"] == "REVERT_RESIZE"
    spec = agent.for_server(server_id)[-1]
    assert spec.memory_mb == 192
    agent.silent = False
    await agent.sync_server(spec.model_dump())
    await settle(nova.cloud)
    server = await nova.server(server_id)
    assert (server["status"], server["flavor"]["original_name"]) == ("ACTIVE", "m1.nano")
    with nova.cloud.services["compute"].db.session() as s:
        assert s.query(ComputeNode).one().claimed_memory_mb == 192


async def test_resize_refusals(nova, agent, image_id):
    server_id = await _active(nova, image_id, flavor="1")
    r = await nova.compute("POST", f"/servers/{server_id}/action", mv=MV,
                           json={"resize": {"flavorRef": "1"}})
    assert r.json()["badRequest"]["message"] == "When resizing, instances must change flavor!"
    await nova.ok("POST", "/flavors", user="admin", mv=MV, json={"flavor": {
        "name": "no-disk", "ram": 256, "vcpus": 1, "disk": 0, "id": "nd"}})
    r = await nova.compute("POST", f"/servers/{server_id}/action", mv=MV,
                           json={"resize": {"flavorRef": "nd"}})
    assert r.json()["badRequest"]["message"] == "Resize error: Unable to resize disk down."
    project_id = await nova.project_id()
    await nova.ok("PUT", f"/os-quota-sets/{project_id}", user="admin", mv=MV,
                  json={"quota_set": {"cores": 4}})
    r = await nova.compute("POST", f"/servers/{server_id}/action", mv=MV,
                           json={"resize": {"flavorRef": "5"}})
    assert r.status_code == 403
    assert r.json()["forbidden"]["message"] == (
        "Quota exceeded for cores: Requested 7, but already used 1 of 4 cores")
    await nova.ok("PUT", f"/os-quota-sets/{project_id}", user="admin", mv=MV,
                  json={"quota_set": {"cores": 100, "ram": 1000000}})
    r = await nova.compute("POST", f"/servers/{server_id}/action", mv=MV,
                           json={"resize": {"flavorRef": "5"}})
    assert r.status_code == 400
    assert r.json()["badRequest"]["message"].startswith("No valid host was found.")
    assert (await nova.server(server_id))["status"] == "ACTIVE"


async def test_create_image_hands_the_snapshot_to_the_node(nova, agent, image_id, glance):
    server_id = await _active(nova, image_id)
    body = await nova.action(server_id, {"createImage": {"name": "snap",
                                                         "metadata": {"purpose": "test"}}})
    image = glance.images[body["image_id"]]
    assert image["name"] == "snap" and image["image_type"] == "snapshot"
    assert image["instance_uuid"] == server_id and image["purpose"] == "test"
    assert agent.snapshots[0]["image_id"] == body["image_id"]
    assert agent.snapshots[0]["upload_url"].endswith(f"/v2/images/{body['image_id']}/file")
    server = await nova.server(server_id)
    assert server["OS-EXT-STS:task_state"] is None
    r = await nova.compute("POST", f"/servers/{server_id}/action", mv="2.44",
                           json={"createImage": {"name": "old-style"}})
    assert r.status_code == 202 and "/images/" in r.headers["Location"]
    await settle(nova.cloud)


async def test_failed_snapshot_removes_the_image(nova, agent, image_id, glance):
    server_id = await _active(nova, image_id)
    agent.fail_on = {"snapshot"}
    body = await nova.action(server_id, {"createImage": {"name": "snap"}})
    assert body["image_id"] in glance.deleted
    actions = await nova.ok("GET", f"/servers/{server_id}/os-instance-actions", mv=MV)
    snapshot = actions["instanceActions"][0]
    assert (snapshot["action"], snapshot["message"]) == ("createImage", "Error")
    assert (await nova.server(server_id))["status"] == "ACTIVE"


async def test_console_output(nova, agent, image_id):
    server_id = await _active(nova, image_id)
    body = await nova.action(server_id, {"os-getConsoleOutput": {"length": 1}}, expect=200)
    assert body == {"output": "login: ready\n"}
    body = await nova.action(server_id, {"os-getConsoleOutput": {"length": -1}}, expect=200)
    assert body["output"].startswith("tinystack guest booting")
    agent.fail_on = {"console"}
    r = await nova.compute("POST", f"/servers/{server_id}/action", mv=MV,
                           json={"os-getConsoleOutput": {}})
    assert r.status_code == 404


async def test_security_groups(nova, agent, image_id):
    server_id = await _active(nova, image_id)
    r = await nova.http.post("/network/v2.0/security-groups", json={
        "security_group": {"name": "web"}}, headers={"X-Auth-Token": await nova.token()})
    assert r.status_code == 201
    await nova.action(server_id, {"addSecurityGroup": {"name": "web"}})
    server = await nova.server(server_id)
    assert server["security_groups"] == [{"name": "default"}, {"name": "web"}]
    r = await nova.compute("POST", f"/servers/{server_id}/action", mv=MV,
                           json={"addSecurityGroup": {"name": "web"}})
    assert r.status_code == 400
    await nova.action(server_id, {"removeSecurityGroup": {"name": "default"}})
    assert (await nova.server(server_id))["security_groups"] == [{"name": "web"}]
    r = await nova.compute("POST", f"/servers/{server_id}/action", mv=MV,
                           json={"removeSecurityGroup": {"name": "default"}})
    assert r.status_code == 400


async def test_unknown_and_unsupported_actions(nova, agent, image_id):
    server_id = await _active(nova, image_id)
    r = await nova.compute("POST", f"/servers/{server_id}/action", mv=MV,
                           json={"fly": None})
    assert r.json()["badRequest"]["message"] == "There is no such action: fly"
    r = await nova.compute("POST", f"/servers/{server_id}/action", mv=MV,
                           json={"shelve": None})
    assert "not supported" in r.json()["badRequest"]["message"]


async def test_instance_actions_and_events(nova, agent, image_id):
    server_id = await _active(nova, image_id)
    await nova.action(server_id, {"os-stop": None})
    listed = await nova.ok("GET", f"/servers/{server_id}/os-instance-actions", mv=MV)
    names = [a["action"] for a in listed["instanceActions"]]
    assert names == ["stop", "create"]
    stop = listed["instanceActions"][0]
    assert set(stop) == {"action", "instance_uuid", "message", "project_id", "request_id",
                         "start_time", "user_id", "updated_at"}
    detail = await nova.ok("GET", f"/servers/{server_id}/os-instance-actions/"
                                  f"{stop['request_id']}", mv=MV)
    events = detail["instanceAction"]["events"]
    assert [(e["event"], e["result"]) for e in events] == [("compute_stop_instance",
                                                            "Success")]
    assert "traceback" not in events[0] and "host" not in events[0]
    assert "hostId" in events[0] and "details" in events[0]
    admin = await nova.ok("GET", f"/servers/{server_id}/os-instance-actions/"
                                 f"{stop['request_id']}", user="admin", mv=MV)
    assert admin["instanceAction"]["events"][0]["host"] == "node1"
    create = await nova.ok("GET", f"/servers/{server_id}/os-instance-actions/"
                                  f"{listed['instanceActions'][1]['request_id']}", mv=MV)
    assert [e["event"] for e in create["instanceAction"]["events"]] == [
        "conductor_schedule_and_build_instances", "compute__do_build_and_run_instance"]
    old = await nova.ok("GET", f"/servers/{server_id}/os-instance-actions/"
                               f"{stop['request_id']}", mv="2.50")
    assert "events" not in old["instanceAction"]
    r = await nova.compute("DELETE", f"/servers/{server_id}", mv=MV)
    await settle(nova.cloud)
    after = await nova.ok("GET", f"/servers/{server_id}/os-instance-actions", mv=MV)
    assert after["instanceActions"][0]["action"] == "delete"
    r = await nova.compute("GET", f"/servers/{server_id}/os-instance-actions", mv="2.20")
    assert r.status_code == 404


async def test_reset_state_is_for_admins(nova, agent, image_id):
    server_id = await _active(nova, image_id)
    r = await nova.compute("POST", f"/servers/{server_id}/action", mv=MV,
                           json={"os-resetState": {"state": "error"}})
    assert r.status_code == 403
    await nova.action(server_id, {"os-resetState": {"state": "error"}}, user="admin")
    assert (await nova.server(server_id))["status"] == "ERROR"


async def test_a_server_that_never_got_a_node_is_not_ready(nova, cloud, image_id):
    server_id = (await nova.create_server(image_id))["server"]["id"]
    assert (await nova.server(server_id))["status"] == "ERROR"
    r = await nova.compute("POST", f"/servers/{server_id}/action", mv=MV,
                           json={"os-stop": None})
    assert r.status_code == 409
    assert r.json()["conflictingRequest"]["message"] == f"Instance {server_id} is not ready"
    assert (await nova.server(server_id))["OS-EXT-STS:task_state"] is None
