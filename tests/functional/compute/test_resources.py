"""Flavors, key pairs, limits, quotas, server groups, hypervisors, services and zones."""

from __future__ import annotations

import pytest

MV = "2.100"


# -- flavors --------------------------------------------------------------------------------


async def test_devstack_flavors_exist_on_first_start(nova):
    flavors = (await nova.ok("GET", "/flavors/detail", mv=MV))["flavors"]
    by_name = {f["name"]: f for f in flavors}
    assert list(by_name) == ["m1.tiny", "m1.small", "m1.medium", "m1.large", "m1.nano",
                             "m1.xlarge", "m1.micro"]  # sorted by id, as strings
    nano = by_name["m1.nano"]
    assert (nano["id"], nano["ram"], nano["vcpus"], nano["disk"]) == ("42", 192, 1, 1)
    assert nano["extra_specs"] == {"hw_rng:allowed": "True"}
    assert (by_name["m1.small"]["ram"], by_name["m1.small"]["disk"]) == (2048, 20)


async def test_flavor_shapes_follow_the_microversion(nova):
    old = (await nova.ok("GET", "/flavors/1", mv="2.1"))["flavor"]
    assert old["swap"] == "" and "description" not in old and "extra_specs" not in old
    new = (await nova.ok("GET", "/flavors/1", mv=MV))["flavor"]
    assert new["swap"] == 0 and new["description"] is None and new["extra_specs"] == {}
    brief = (await nova.ok("GET", "/flavors", mv=MV))["flavors"][0]
    assert set(brief) == {"id", "name", "links", "description"}


async def test_flavor_create_update_delete_are_for_admins(nova):
    body = {"flavor": {"name": "m2.test", "ram": 256, "vcpus": 2, "disk": 3, "id": "t1",
                       "description": "for tests"}}
    r = await nova.compute("POST", "/flavors", mv=MV, json=body)
    assert r.status_code == 403
    assert r.json()["forbidden"]["message"] == \
        "Policy doesn't allow os_compute_api:os-flavor-manage:create to be performed."
    created = await nova.ok("POST", "/flavors", user="admin", mv=MV, json=body)
    assert created["flavor"]["description"] == "for tests"
    r = await nova.compute("POST", "/flavors", user="admin", mv=MV, json=body)
    assert r.status_code == 409
    assert r.json()["conflictingRequest"]["message"] == "Flavor with name m2.test already exists."
    updated = await nova.ok("PUT", "/flavors/t1", user="admin", mv=MV,
                            json={"flavor": {"description": "changed"}})
    assert updated["flavor"]["description"] == "changed"
    r = await nova.compute("POST", "/flavors", user="admin", mv="2.54", json=body)
    assert r.status_code == 400
    r = await nova.compute("DELETE", "/flavors/t1", user="admin", mv=MV)
    assert r.status_code == 202
    r = await nova.compute("GET", "/flavors/t1", mv=MV)
    assert r.json() == {"itemNotFound": {"code": 404,
                                         "message": "Flavor t1 could not be found."}}


async def test_generated_flavor_id_and_filters(nova):
    created = await nova.ok("POST", "/flavors", user="admin", mv=MV, json={"flavor": {
        "name": "big", "ram": 65536, "vcpus": 16, "disk": 500}})
    assert len(created["flavor"]["id"]) == 36
    big = await nova.ok("GET", "/flavors?minRam=60000", mv=MV)
    assert [f["name"] for f in big["flavors"]] == ["big"]
    page = await nova.ok("GET", "/flavors?limit=2", mv=MV)
    assert len(page["flavors"]) == 2 and "flavors_links" in page


async def test_extra_specs(nova):
    base = "/flavors/1/os-extra_specs"
    r = await nova.compute("POST", base, mv=MV, json={"extra_specs": {"hw:cpu_policy": "x"}})
    assert r.status_code == 403
    r = await nova.compute("POST", base, user="admin", mv=MV,
                           json={"extra_specs": {"hw:cpu_policy": "sideways"}})
    assert r.status_code == 400 and "not a valid value" in r.json()["badRequest"]["message"]
    r = await nova.compute("POST", base, user="admin", mv=MV,
                           json={"extra_specs": {"hw:made_up": "1"}})
    assert r.status_code == 400
    r = await nova.compute("POST", base, user="admin", mv="2.85",
                           json={"extra_specs": {"hw:made_up": "1"}})
    assert r.status_code == 200
    body = await nova.ok("POST", base, user="admin", mv=MV,
                         json={"extra_specs": {"hw:cpu_policy": "shared", "custom": "yes"}})
    assert body == {"extra_specs": {"hw:cpu_policy": "shared", "custom": "yes"}}
    assert await nova.ok("GET", f"{base}/custom", mv=MV) == {"custom": "yes"}
    assert await nova.ok("PUT", f"{base}/custom", user="admin", mv=MV,
                         json={"custom": "no"}) == {"custom": "no"}
    r = await nova.compute("PUT", f"{base}/custom", user="admin", mv=MV, json={"other": "1"})
    assert r.json()["badRequest"]["message"] == "Request body and URI mismatch"
    r = await nova.compute("DELETE", f"{base}/custom", user="admin", mv=MV)
    assert r.status_code == 202
    r = await nova.compute("GET", f"{base}/custom", mv=MV)
    assert r.status_code == 404
    listed = await nova.ok("GET", base, mv=MV)
    assert listed["extra_specs"] == {"hw:cpu_policy": "shared", "hw:made_up": "1"}


async def test_private_flavor_access(nova, agent, image_id):
    await nova.ok("POST", "/flavors", user="admin", mv=MV, json={"flavor": {
        "name": "secret", "ram": 128, "vcpus": 1, "disk": 1, "id": "p1",
        "os-flavor-access:is_public": False}})
    r = await nova.compute("GET", "/flavors/p1", mv=MV)
    assert r.status_code == 404
    assert "secret" not in [f["name"] for f in (await nova.ok("GET", "/flavors", mv=MV))["flavors"]]
    r = await nova.create_server(image_id, flavor="p1", expect=400)
    demo = await nova.project_id("demo")
    access = await nova.ok("POST", "/flavors/p1/action", user="admin", mv=MV,
                           json={"addTenantAccess": {"tenant": demo}})
    assert access == {"flavor_access": [{"flavor_id": "p1", "tenant_id": demo}]}
    assert "secret" in [f["name"] for f in (await nova.ok("GET", "/flavors", mv=MV))["flavors"]]
    created = await nova.create_server(image_id, flavor="p1")
    assert (await nova.server(created["server"]["id"]))["status"] == "ACTIVE"
    listed = await nova.ok("GET", "/flavors/p1/os-flavor-access", user="admin", mv=MV)
    assert listed["flavor_access"][0]["tenant_id"] == demo
    r = await nova.compute("POST", "/flavors/1/action", user="admin", mv=MV,
                           json={"addTenantAccess": {"tenant": demo}})
    assert r.status_code == 409
    assert r.json()["conflictingRequest"]["message"] == "Can not add access to a public flavor."
    await nova.ok("POST", "/flavors/p1/action", user="admin", mv=MV,
                  json={"removeTenantAccess": {"tenant": demo}})
    assert (await nova.compute("GET", "/flavors/p1", mv=MV)).status_code == 404
    private = await nova.ok("GET", "/flavors?is_public=false", user="admin", mv=MV)
    assert [f["id"] for f in private["flavors"]] == ["p1"]
    everything = await nova.ok("GET", "/flavors?is_public=none", user="admin", mv=MV)
    assert len(everything["flavors"]) == 8


# -- key pairs ------------------------------------------------------------------------------

PUBLIC_KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMcpGnXMXL8Y6G2kJeZ9pZd2xTnn1tj1FWYGuR41Y0Jb"
              " test@example")


async def test_keypair_import_show_list_delete(nova):
    created = await nova.ok("POST", "/os-keypairs", mv=MV, expect=201, json={
        "keypair": {"name": "mykey", "public_key": PUBLIC_KEY}})
    key = created["keypair"]
    assert key["fingerprint"].count(":") == 15 and "private_key" not in key
    assert key["type"] == "ssh"
    listed = await nova.ok("GET", "/os-keypairs", mv=MV)
    assert [k["keypair"]["name"] for k in listed["keypairs"]] == ["mykey"]
    shown = await nova.ok("GET", "/os-keypairs/mykey", mv=MV)
    assert shown["keypair"]["public_key"] == PUBLIC_KEY and shown["keypair"]["deleted"] is False
    r = await nova.compute("POST", "/os-keypairs", mv=MV,
                           json={"keypair": {"name": "mykey", "public_key": PUBLIC_KEY}})
    assert r.status_code == 409
    assert r.json()["conflictingRequest"]["message"] == "Key pair 'mykey' already exists."
    r = await nova.compute("GET", "/os-keypairs/mykey", user="alt_demo", mv=MV)
    assert r.status_code == 404
    r = await nova.compute("DELETE", "/os-keypairs/mykey", mv=MV)
    assert r.status_code == 204
    r = await nova.compute("DELETE", "/os-keypairs/mykey", mv="2.1")
    assert r.status_code == 404


@pytest.mark.slow
async def test_keypair_generation_and_its_microversions(nova):
    r = await nova.compute("POST", "/os-keypairs", mv="2.1", json={"keypair": {"name": "g1"}})
    assert r.status_code == 200
    body = r.json()["keypair"]
    assert body["private_key"].startswith("-----BEGIN RSA PRIVATE KEY-----")
    assert body["public_key"].startswith("ssh-rsa ") and "type" not in body
    r = await nova.compute("POST", "/os-keypairs", mv="2.92", json={"keypair": {"name": "g2"}})
    assert r.status_code == 400
    x509 = await nova.ok("POST", "/os-keypairs", mv="2.91", expect=201,
                         json={"keypair": {"name": "cert", "type": "x509"}})
    assert x509["keypair"]["public_key"].startswith("-----BEGIN CERTIFICATE-----")
    r = await nova.compute("POST", "/os-keypairs", mv="2.91", json={
        "keypair": {"name": "a@b.c", "public_key": PUBLIC_KEY}})
    assert r.status_code == 400
    assert r.json()["badRequest"]["message"] == \
        "Keypair data is invalid: Keypair name contains unsafe characters"
    r = await nova.compute("POST", "/os-keypairs", mv="2.92", json={
        "keypair": {"name": "a@b.c", "public_key": PUBLIC_KEY}})
    assert r.status_code == 201
    r = await nova.compute("POST", "/os-keypairs", mv=MV, json={
        "keypair": {"name": "bad", "public_key": "ssh-rsa notbase64"}})
    assert r.json()["badRequest"]["message"] == \
        "Keypair data is invalid: failed to generate fingerprint"


async def test_admin_manages_another_users_keypairs(nova):
    demo_user = (await nova.http.get("/identity/v3/auth/tokens", headers={
        "X-Auth-Token": await nova.token("demo"),
        "X-Subject-Token": await nova.token("demo")})).json()["token"]["user"]["id"]
    await nova.ok("POST", "/os-keypairs", user="admin", mv=MV, expect=201, json={
        "keypair": {"name": "given", "public_key": PUBLIC_KEY, "user_id": demo_user}})
    mine = await nova.ok("GET", "/os-keypairs", mv=MV)
    assert [k["keypair"]["name"] for k in mine["keypairs"]] == ["given"]
    r = await nova.compute("GET", f"/os-keypairs?user_id={demo_user}", user="alt_demo", mv=MV)
    assert r.status_code == 403


async def test_keypair_quota(nova):
    await nova.ok("PUT", f"/os-quota-sets/{await nova.project_id()}", user="admin", mv=MV,
                  json={"quota_set": {"key_pairs": 1}})
    await nova.ok("POST", "/os-keypairs", mv=MV, expect=201,
                  json={"keypair": {"name": "one", "public_key": PUBLIC_KEY}})
    r = await nova.compute("POST", "/os-keypairs", mv=MV,
                           json={"keypair": {"name": "two", "public_key": PUBLIC_KEY}})
    assert r.status_code == 403
    assert r.json()["forbidden"]["message"] == "Quota exceeded, too many key pairs."


# -- quotas and limits ----------------------------------------------------------------------


async def test_instances_quota_gives_novas_403(nova, agent, image_id):
    project = await nova.project_id()
    await nova.ok("PUT", f"/os-quota-sets/{project}", user="admin", mv=MV,
                  json={"quota_set": {"instances": 1}})
    await nova.create_server(image_id)
    r = await nova.create_server(image_id, expect=403)
    assert r == {"forbidden": {"code": 403, "message": (
        "Quota exceeded for instances: Requested 1, but already used 1 of 1 instances")}}


async def test_cores_and_ram_quota_message(nova, agent, image_id):
    project = await nova.project_id()
    await nova.ok("PUT", f"/os-quota-sets/{project}", user="admin", mv=MV,
                  json={"quota_set": {"cores": 2, "ram": 300}})
    r = await nova.create_server(image_id, min_count=2, max_count=3, expect=403)
    assert r["forbidden"]["message"] == (
        "Quota exceeded for cores, ram: Requested 1, 192, but already used 0, 0 of 2, 300 "
        "cores, ram")
    created = await nova.create_server(image_id, min_count=1, max_count=3,
                                       return_reservation_id=True)
    listed = await nova.ok("GET", f"/servers?reservation_id={created['reservation_id']}",
                           mv=MV)
    assert len(listed["servers"]) == 1


async def test_quota_sets_and_limits(nova, agent, image_id):
    project = await nova.project_id()
    shown = await nova.ok("GET", f"/os-quota-sets/{project}", mv=MV)
    assert shown["quota_set"] == {
        "id": project, "instances": 10, "cores": 20, "ram": 51200, "metadata_items": 128,
        "key_pairs": 100, "server_groups": 10, "server_group_members": 10}
    legacy = await nova.ok("GET", f"/os-quota-sets/{project}", mv="2.1")
    assert legacy["quota_set"]["floating_ips"] == 10
    assert legacy["quota_set"]["injected_files"] == 5
    await nova.create_server(image_id)
    detail = await nova.ok("GET", f"/os-quota-sets/{project}/detail", mv=MV)
    assert detail["quota_set"]["ram"] == {"in_use": 192, "limit": 51200, "reserved": 0}
    r = await nova.compute("PUT", f"/os-quota-sets/{project}", mv=MV,
                           json={"quota_set": {"instances": 50}})
    assert r.status_code == 403
    updated = await nova.ok("PUT", f"/os-quota-sets/{project}", user="admin", mv=MV,
                            json={"quota_set": {"instances": 50}})
    assert updated["quota_set"]["instances"] == 50 and "id" not in updated["quota_set"]
    r = await nova.compute("PUT", f"/os-quota-sets/{project}", user="admin", mv=MV,
                           json={"quota_set": {"ram": 1}})
    assert r.status_code == 400
    limits = (await nova.ok("GET", "/limits", mv=MV))["limits"]
    assert limits["rate"] == []
    assert limits["absolute"]["maxTotalInstances"] == 50
    assert limits["absolute"]["totalRAMUsed"] == 192
    assert "maxImageMeta" not in limits["absolute"]
    assert "maxSecurityGroups" in (await nova.ok("GET", "/limits", mv="2.1"))["limits"][
        "absolute"]
    r = await nova.compute("DELETE", f"/os-quota-sets/{project}", user="admin", mv=MV)
    assert r.status_code == 202
    assert (await nova.ok("GET", f"/os-quota-sets/{project}", mv=MV))["quota_set"][
        "instances"] == 10
    defaults = await nova.ok("GET", f"/os-quota-sets/{project}/defaults", mv=MV)
    assert defaults["quota_set"]["cores"] == 20


async def test_quota_class_default(nova):
    body = await nova.ok("PUT", "/os-quota-class-sets/default", user="admin", mv=MV,
                         json={"quota_class_set": {"instances": 7}})
    assert body["quota_class_set"]["instances"] == 7
    shown = await nova.ok("GET", "/os-quota-class-sets/default", user="admin", mv=MV)
    assert shown["quota_class_set"]["id"] == "default"
    assert "server_groups" in shown["quota_class_set"]
    assert (await nova.ok("GET", f"/os-quota-sets/{await nova.project_id()}", mv=MV)
            )["quota_set"]["instances"] == 7


# -- server groups --------------------------------------------------------------------------


async def test_server_group_shapes(nova):
    new = await nova.ok("POST", "/os-server-groups", mv=MV, json={"server_group": {
        "name": "g", "policy": "anti-affinity", "rules": {"max_server_per_host": 2}}})
    group = new["server_group"]
    assert set(group) == {"id", "name", "policy", "rules", "members", "project_id", "user_id"}
    old = await nova.ok("GET", f"/os-server-groups/{group['id']}", mv="2.1")
    assert old["server_group"]["policies"] == ["anti-affinity"]
    assert "project_id" not in old["server_group"]
    r = await nova.compute("POST", "/os-server-groups", mv=MV, json={"server_group": {
        "name": "g2", "policy": "affinity", "rules": {"max_server_per_host": 2}}})
    assert r.status_code == 400
    r = await nova.compute("POST", "/os-server-groups", mv="2.63", json={"server_group": {
        "name": "g2", "policy": "affinity"}})
    assert r.status_code == 400
    listed = await nova.ok("GET", "/os-server-groups", mv=MV)
    assert [g["id"] for g in listed["server_groups"]] == [group["id"]]
    assert (await nova.ok("GET", "/os-server-groups", user="alt_demo", mv=MV)
            )["server_groups"] == []
    everyone = await nova.ok("GET", "/os-server-groups?all_projects=true", user="admin", mv=MV)
    assert len(everyone["server_groups"]) == 1
    r = await nova.compute("DELETE", f"/os-server-groups/{group['id']}", mv=MV)
    assert r.status_code == 204
    r = await nova.compute("GET", f"/os-server-groups/{group['id']}", mv=MV)
    assert r.status_code == 404


async def test_server_group_quota(nova):
    await nova.ok("PUT", f"/os-quota-sets/{await nova.project_id()}", user="admin", mv=MV,
                  json={"quota_set": {"server_groups": 1}})
    await nova.ok("POST", "/os-server-groups", mv=MV,
                  json={"server_group": {"name": "a", "policy": "affinity"}})
    r = await nova.compute("POST", "/os-server-groups", mv=MV,
                           json={"server_group": {"name": "b", "policy": "affinity"}})
    assert r.status_code == 403
    assert r.json()["forbidden"]["message"] == "Quota exceeded, too many server groups."


# -- hypervisors, services, zones -----------------------------------------------------------


@pytest.mark.slow
async def test_hypervisors_show_what_the_node_reported(nova, agent, image_id):
    server_id = (await nova.create_server(image_id))["server"]["id"]
    await agent.heartbeat()
    r = await nova.compute("GET", "/os-hypervisors", mv=MV)
    assert r.status_code == 403
    listed = await nova.ok("GET", "/os-hypervisors", user="admin", mv=MV)
    brief = listed["hypervisors"][0]
    assert set(brief) == {"id", "hypervisor_hostname", "state", "status"}
    assert (brief["hypervisor_hostname"], brief["state"], brief["status"]) == \
        ("node1", "up", "enabled")
    detail = (await nova.ok("GET", "/os-hypervisors/detail", user="admin", mv="2.87")
              )["hypervisors"][0]
    assert (detail["vcpus"], detail["memory_mb"], detail["local_gb"]) == (4, 8192, 100)
    assert (detail["vcpus_used"], detail["memory_mb_used"], detail["running_vms"]) == (1, 192, 1)
    assert detail["hypervisor_type"] == "QEMU" and detail["hypervisor_version"] == 7002000
    assert detail["cpu_info"]["accelerator"] == "tcg"
    new = await nova.ok("GET", f"/os-hypervisors/{brief['id']}?with_servers=true",
                        user="admin", mv=MV)
    assert "vcpus" not in new["hypervisor"]
    assert new["hypervisor"]["uptime"] == " 10:00:00 up 1 day"
    assert new["hypervisor"]["servers"][0]["uuid"] == server_id
    stats = await nova.ok("GET", "/os-hypervisors/statistics", user="admin", mv="2.87")
    assert stats["hypervisor_statistics"]["count"] == 1
    r = await nova.compute("GET", "/os-hypervisors/statistics", user="admin", mv=MV)
    assert r.status_code == 404
    legacy = await nova.ok("GET", "/os-hypervisors/detail", user="admin", mv="2.27")
    assert isinstance(legacy["hypervisors"][0]["cpu_info"], str)
    assert isinstance(legacy["hypervisors"][0]["id"], int)
    search = await nova.ok("GET", "/os-hypervisors/node/search", user="admin", mv="2.52")
    assert search["hypervisors"][0]["hypervisor_hostname"] == "node1"


async def test_services_enable_disable_and_state(nova, agent, clock):
    services = (await nova.ok("GET", "/os-services", user="admin", mv=MV))["services"]
    binaries = sorted(s["binary"] for s in services)
    assert binaries == ["nova-compute", "nova-conductor", "nova-scheduler"]
    compute = next(s for s in services if s["binary"] == "nova-compute")
    assert (compute["host"], compute["zone"], compute["state"], compute["status"]) == \
        ("node1", "nova", "up", "enabled")
    assert len(compute["id"]) == 36 and compute["forced_down"] is False
    body = await nova.ok("PUT", f"/os-services/{compute['id']}", user="admin", mv=MV,
                         json={"status": "disabled", "disabled_reason": "repairs"})
    assert (body["service"]["status"], body["service"]["disabled_reason"]) == \
        ("disabled", "repairs")
    legacy = await nova.ok("PUT", "/os-services/enable", user="admin", mv="2.52",
                           json={"host": "node1", "binary": "nova-compute"})
    assert legacy == {"service": {"host": "node1", "binary": "nova-compute",
                                  "status": "enabled"}}
    await nova.ok("PUT", f"/os-services/{compute['id']}", user="admin", mv=MV,
                  json={"forced_down": True})
    down = await nova.ok("GET", "/os-services?binary=nova-compute", user="admin", mv=MV)
    assert down["services"][0]["state"] == "down"
    await nova.ok("PUT", f"/os-services/{compute['id']}", user="admin", mv=MV,
                  json={"forced_down": False})
    clock.advance(seconds=61)
    stale = await nova.ok("GET", "/os-services?binary=nova-compute", user="admin", mv=MV)
    assert stale["services"][0]["state"] == "down"
    old_ids = await nova.ok("GET", "/os-services", user="admin", mv="2.52")
    assert all(isinstance(s["id"], int) for s in old_ids["services"])


async def test_availability_zones(nova, cloud, agent):
    from .support import FakeAgent

    await FakeAgent(cloud, "edge1", zone="edge").start()
    zones = await nova.ok("GET", "/os-availability-zone", mv=MV)
    assert zones == {"availabilityZoneInfo": [
        {"zoneName": "edge", "zoneState": {"available": True}, "hosts": None},
        {"zoneName": "nova", "zoneState": {"available": True}, "hosts": None}]}
    detail = await nova.ok("GET", "/os-availability-zone/detail", user="admin", mv=MV)
    names = [z["zoneName"] for z in detail["availabilityZoneInfo"]]
    assert names == ["edge", "internal", "nova"]
    nova_zone = detail["availabilityZoneInfo"][2]
    assert nova_zone["hosts"]["node1"]["nova-compute"]["available"] is True
