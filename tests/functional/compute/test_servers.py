"""Servers through the API: create, list, show, update, delete, metadata, tags, addresses."""

from __future__ import annotations

import base64

import pytest

from .support import settle

MV = "2.100"


async def test_create_reaches_active_on_the_node(nova, agent, image_id):
    created = await nova.create_server(image_id, name="web-1")
    body = created["server"]
    assert set(body) == {"id", "links", "OS-DCF:diskConfig", "security_groups", "adminPass"}
    assert body["security_groups"] == [{"name": "default"}]
    server = await nova.server(body["id"])
    assert server["status"] == "ACTIVE"
    assert server["OS-EXT-STS:power_state"] == 1
    assert server["OS-EXT-STS:task_state"] is None
    assert server["flavor"]["original_name"] == "m1.nano"
    spec = agent.for_server(body["id"])[0]
    assert (spec.vcpus, spec.memory_mb, spec.root_gb, spec.want) == (1, 192, 1, "active")
    assert spec.image.id == image_id
    assert spec.image.download_url.endswith(f"/image/v2/images/{image_id}/file")
    assert spec.token == await nova.token("demo")


async def test_create_answers_while_the_server_builds(nova, agent, image_id):
    agent.silent = True
    created = await nova.create_server(image_id)
    server = await nova.server(created["server"]["id"])
    assert server["status"] == "BUILD"
    assert server["OS-EXT-STS:task_state"] == "spawning"
    assert server["OS-EXT-STS:vm_state"] == "building"


async def test_create_without_networks_is_refused_from_2_37(nova, agent, image_id):
    body = {"server": {"name": "vm", "imageRef": image_id, "flavorRef": "42"}}
    r = await nova.compute("POST", "/servers", mv="2.37", json=body)
    assert r.status_code == 400
    assert "'networks' is a required property" in r.json()["badRequest"]["message"]
    r = await nova.compute("POST", "/servers", mv="2.36", json=body)
    assert r.status_code == 202


async def test_flavor_too_small_for_the_image_is_novas_400(nova, agent, glance):
    big = glance.add(size=2 * 1024 ** 3)
    r = await nova.create_server(big, flavor="42", expect=400)
    assert r == {"badRequest": {"code": 400, "message": (
        "Flavor's disk is too small for requested image. Flavor disk is 1073741824 bytes, "
        "image is 2147483648 bytes.")}}
    needs = glance.add(min_disk=5)
    r = await nova.create_server(needs, flavor="42", expect=400)
    assert r["badRequest"]["message"] == (
        "Flavor's disk is smaller than the minimum size specified in image metadata. Flavor "
        "disk is 1073741824 bytes, minimum size is 5368709120 bytes.")
    hungry = glance.add(min_ram=1024)
    r = await nova.create_server(hungry, flavor="42", expect=400)
    assert r["badRequest"]["message"] == "Flavor's memory is too small for requested image."


async def test_unknown_image_flavor_and_key_are_400(nova, agent, image_id, glance):
    r = await nova.create_server("a6c7f1a5-58b3-4b0e-9e8b-1c7d40b2c1aa", expect=400)
    assert r["badRequest"]["message"] == \
        "Image a6c7f1a5-58b3-4b0e-9e8b-1c7d40b2c1aa could not be found."
    r = await nova.create_server(image_id, flavor="nope", expect=400)
    assert r["badRequest"]["message"] == "Flavor nope could not be found."
    r = await nova.create_server(image_id, key_name="missing", expect=400)
    assert r["badRequest"]["message"] == "Invalid key_name provided."
    queued = glance.add(status="queued")
    r = await nova.create_server(queued, expect=400)
    assert r["badRequest"]["message"] == f"Image {queued} is not active."


async def test_boot_from_image_block_device(nova, agent, image_id):
    bdm = [{"boot_index": 0, "uuid": image_id, "source_type": "image",
            "destination_type": "local", "delete_on_termination": True}]
    created = await nova.create_server("", block_device_mapping_v2=bdm)
    server = await nova.server(created["server"]["id"])
    assert server["status"] == "ACTIVE"
    assert server["image"]["id"] == image_id
    volume = [{"boot_index": 0, "uuid": image_id, "source_type": "image",
               "destination_type": "volume", "volume_size": 1}]
    r = await nova.create_server("", block_device_mapping_v2=volume, expect=400)
    assert "Block storage is not available yet" in r["badRequest"]["message"]


async def test_no_valid_host_ends_in_error_with_the_fault(nova, cloud, image_id):
    created = await nova.create_server(image_id)
    server = await nova.server(created["server"]["id"])
    assert server["status"] == "ERROR"
    assert server["fault"]["message"] == (
        "No valid host was found. There are not enough hosts available.")
    assert server["fault"]["code"] == 500
    assert "details" not in server["fault"]
    admin_view = await nova.server(created["server"]["id"], user="admin")
    assert "details" in admin_view["fault"]


async def test_min_and_max_count_make_numbered_servers(nova, agent, image_id):
    created = await nova.create_server(image_id, name="batch", min_count=3, max_count=3,
                                       return_reservation_id=True)
    reservation = created["reservation_id"]
    listed = await nova.ok("GET", f"/servers/detail?reservation_id={reservation}", mv=MV)
    assert sorted(s["name"] for s in listed["servers"]) == ["batch-1", "batch-2", "batch-3"]
    assert {s["status"] for s in listed["servers"]} == {"ACTIVE"}


@pytest.mark.slow
async def test_user_data_metadata_key_and_config_drive_reach_the_node(nova, agent, image_id):
    key = await nova.ok("POST", "/os-keypairs", mv="2.91", expect=201,
                        json={"keypair": {"name": "k1"}})
    user_data = base64.b64encode(b"#!/bin/sh\necho hi\n").decode()
    created = await nova.create_server(image_id, key_name="k1", user_data=user_data,
                                       metadata={"role": "web"}, config_drive=True)
    server_id = created["server"]["id"]
    spec = agent.for_server(server_id)[0]
    assert spec.config_drive is True
    files = spec.metadata_files
    assert files["openstack/latest/user_data"] == "#!/bin/sh\necho hi\n"
    import json

    meta = json.loads(files["openstack/latest/meta_data.json"])
    assert meta["uuid"] == server_id
    assert meta["meta"] == {"role": "web"}
    assert meta["public_keys"] == {"k1": key["keypair"]["public_key"]}
    server = await nova.server(server_id)
    assert server["config_drive"] == "True"
    assert server["key_name"] == "k1"
    assert server["metadata"] == {"role": "web"}


async def test_list_show_and_paging(nova, agent, image_id, clock):
    ids = []
    for name in ("a", "b", "c"):
        ids.append((await nova.create_server(image_id, name=name))["server"]["id"])
        clock.advance(seconds=1)
    listed = await nova.ok("GET", "/servers", mv=MV)
    assert [s["name"] for s in listed["servers"]] == ["c", "b", "a"]
    assert set(listed["servers"][0]) == {"id", "name", "links"}
    page = await nova.ok("GET", "/servers?limit=2", mv=MV)
    assert [s["name"] for s in page["servers"]] == ["c", "b"]
    next_href = page["servers_links"][0]["href"]
    assert "marker=" in next_href
    rest = await nova.ok("GET", f"/servers?limit=2&marker={page['servers'][-1]['id']}", mv=MV)
    assert [s["name"] for s in rest["servers"]] == ["a"]
    r = await nova.compute("GET", "/servers?marker=nope", mv=MV)
    assert r.status_code == 400
    named = await nova.ok("GET", "/servers/detail?name=^b$", mv=MV)
    assert [s["id"] for s in named["servers"]] == [ids[1]]
    by_status = await nova.ok("GET", "/servers/detail?status=ACTIVE", mv=MV)
    assert len(by_status["servers"]) == 3
    r = await nova.compute("GET", "/servers?status=WRONG", mv=MV)
    assert r.status_code == 400 and r.json()["badRequest"]["message"] == "Invalid status value"
    r = await nova.compute("GET", "/servers?status=WRONG", mv="2.37")
    assert r.status_code == 200
    r = await nova.compute("GET", "/servers?bogus=1", mv=MV)
    assert r.status_code == 400
    r = await nova.compute("GET", "/servers?bogus=1", mv="2.74")
    assert r.status_code == 200
    by_flavor = await nova.ok("GET", "/servers?flavor=1", mv=MV)
    assert by_flavor["servers"] == []
    sorted_ = await nova.ok("GET", "/servers?sort_key=display_name&sort_dir=asc", mv=MV)
    assert [s["name"] for s in sorted_["servers"]] == ["a", "b", "c"]


async def test_projects_do_not_see_each_other(nova, agent, image_id):
    created = await nova.create_server(image_id)
    server_id = created["server"]["id"]
    r = await nova.compute("GET", f"/servers/{server_id}", user="alt_demo", mv=MV)
    assert r.status_code == 404
    assert r.json() == {"itemNotFound": {"code": 404,
                                         "message": f"Instance {server_id} could not be found."}}
    alt = await nova.ok("GET", "/servers", user="alt_demo", mv=MV)
    assert alt["servers"] == []
    mine_only = await nova.ok("GET", "/servers?all_tenants=1", user="alt_demo", mv=MV)
    assert mine_only["servers"] == []
    everyone = await nova.ok("GET", "/servers?all_tenants=1", user="admin", mv=MV)
    assert [s["id"] for s in everyone["servers"]] == [server_id]


async def test_admin_sees_extended_attributes(nova, agent, image_id):
    server_id = (await nova.create_server(image_id))["server"]["id"]
    admin = await nova.server(server_id, user="admin")
    assert admin["OS-EXT-SRV-ATTR:host"] == "node1"
    assert admin["OS-EXT-SRV-ATTR:hypervisor_hostname"] == "node1"
    assert admin["host_status"] == "UP"
    demo = await nova.server(server_id)
    assert "OS-EXT-SRV-ATTR:host" not in demo
    assert "host_status" not in demo


async def test_update_name_description_hostname(nova, agent, image_id):
    server_id = (await nova.create_server(image_id))["server"]["id"]
    body = await nova.ok("PUT", f"/servers/{server_id}", mv=MV, json={"server": {
        "name": "renamed", "description": "a web server", "hostname": "web"}})
    assert body["server"]["name"] == "renamed"
    assert body["server"]["description"] == "a web server"
    assert body["server"]["OS-EXT-SRV-ATTR:hostname"] == "web"
    old = await nova.ok("PUT", f"/servers/{server_id}", mv="2.74",
                        json={"server": {"name": "again"}})
    assert "OS-EXT-STS:vm_state" not in old["server"]
    r = await nova.compute("PUT", f"/servers/{server_id}", mv="2.18",
                           json={"server": {"description": "x"}})
    assert r.status_code == 400


async def test_delete_reaches_the_node_and_frees_the_quota(nova, agent, image_id):
    server_id = (await nova.create_server(image_id))["server"]["id"]
    r = await nova.compute("DELETE", f"/servers/{server_id}", mv=MV)
    assert r.status_code == 204
    await settle(nova.cloud)
    assert agent.for_server(server_id)[-1].want == "deleted"
    r = await nova.compute("GET", f"/servers/{server_id}", mv=MV)
    assert r.status_code == 404
    limits = await nova.ok("GET", "/limits", mv=MV)
    assert limits["limits"]["absolute"]["totalInstancesUsed"] == 0
    node = (await nova.ok("GET", "/os-hypervisors/detail", user="admin",
                          mv="2.87"))["hypervisors"][0]
    assert node["running_vms"] == 0


async def test_delete_while_building(nova, agent, image_id):
    agent.silent = True
    server_id = (await nova.create_server(image_id))["server"]["id"]
    r = await nova.compute("DELETE", f"/servers/{server_id}", mv=MV)
    assert r.status_code == 204
    deleting = await nova.server(server_id)
    assert deleting["OS-EXT-STS:task_state"] == "deleting"
    agent.silent = False
    await agent.sync_server(agent.for_server(server_id)[-1].model_dump())
    await settle(nova.cloud)
    r = await nova.compute("GET", f"/servers/{server_id}", mv=MV)
    assert r.status_code == 404


async def test_delete_of_a_server_with_no_host_is_immediate(nova, cloud, image_id):
    server_id = (await nova.create_server(image_id))["server"]["id"]
    r = await nova.compute("DELETE", f"/servers/{server_id}", mv=MV)
    assert r.status_code == 204
    r = await nova.compute("GET", f"/servers/{server_id}", mv=MV)
    assert r.status_code == 404
    deleted = await nova.ok("GET", "/servers/detail?changes-since=2000-01-01T00:00:00Z", mv=MV)
    assert [s["status"] for s in deleted["servers"]] == ["DELETED"]


async def test_metadata_items(nova, agent, image_id):
    server_id = (await nova.create_server(image_id, metadata={"a": "1"}))["server"]["id"]
    base = f"/servers/{server_id}/metadata"
    assert await nova.ok("GET", base, mv=MV) == {"metadata": {"a": "1"}}
    assert await nova.ok("POST", base, mv=MV, json={"metadata": {"b": "2"}}) == \
        {"metadata": {"a": "1", "b": "2"}}
    assert await nova.ok("PUT", base, mv=MV, json={"metadata": {"c": "3"}}) == \
        {"metadata": {"c": "3"}}
    assert await nova.ok("PUT", f"{base}/d", mv=MV, json={"meta": {"d": "4"}}) == \
        {"meta": {"d": "4"}}
    assert await nova.ok("GET", f"{base}/d", mv=MV) == {"meta": {"d": "4"}}
    r = await nova.compute("PUT", f"{base}/d", mv=MV, json={"meta": {"e": "5"}})
    assert r.json()["badRequest"]["message"] == "Request body and URI mismatch"
    r = await nova.compute("DELETE", f"{base}/d", mv=MV)
    assert r.status_code == 204
    r = await nova.compute("GET", f"{base}/d", mv=MV)
    assert r.status_code == 404
    too_many = {f"k{i}": "v" for i in range(129)}
    r = await nova.compute("PUT", base, mv=MV, json={"metadata": too_many})
    assert r.status_code == 403
    assert r.json()["forbidden"]["message"] == "Maximum number of metadata items exceeds 128"


async def test_tags(nova, agent, image_id):
    server_id = (await nova.create_server(image_id, tags=["blue"]))["server"]["id"]
    base = f"/servers/{server_id}/tags"
    assert await nova.ok("GET", base, mv=MV) == {"tags": ["blue"]}
    r = await nova.compute("PUT", f"{base}/red", mv=MV)
    assert r.status_code == 201 and r.headers["Location"].endswith(f"{base}/red")
    r = await nova.compute("PUT", f"{base}/red", mv=MV)
    assert r.status_code == 204
    r = await nova.compute("GET", f"{base}/red", mv=MV)
    assert r.status_code == 204
    tagged = await nova.ok("GET", "/servers?tags=red,blue", mv=MV)
    assert [s["id"] for s in tagged["servers"]] == [server_id]
    assert (await nova.ok("GET", "/servers?not-tags-any=red", mv=MV))["servers"] == []
    assert await nova.ok("PUT", base, mv=MV, json={"tags": ["x", "y"]}) == {"tags": ["x", "y"]}
    r = await nova.compute("DELETE", f"{base}/red", mv=MV)
    assert r.status_code == 404
    r = await nova.compute("DELETE", base, mv=MV)
    assert r.status_code == 204
    assert (await nova.server(server_id))["tags"] == []
    r = await nova.compute("GET", base, mv="2.25")
    assert r.status_code == 404
    r = await nova.compute("PUT", base, mv=MV, json={"tags": [f"t{i}" for i in range(51)]})
    assert r.status_code == 400


async def test_addresses_without_networks(nova, agent, image_id):
    server_id = (await nova.create_server(image_id))["server"]["id"]
    assert await nova.ok("GET", f"/servers/{server_id}/ips", mv=MV) == {"addresses": {}}
    r = await nova.compute("GET", f"/servers/{server_id}/ips/private", mv=MV)
    assert r.status_code == 404
    assert r.json()["itemNotFound"]["message"] == \
        "Instance is not a member of specified network"


async def test_node_error_ends_the_build_in_error(nova, agent, image_id):
    agent.fail_on = {"spawn"}
    server_id = (await nova.create_server(image_id))["server"]["id"]
    server = await nova.server(server_id)
    assert server["status"] == "ERROR"
    assert "qemu exited" in server["fault"]["message"]
    actions = await nova.ok("GET", f"/servers/{server_id}/os-instance-actions", mv=MV)
    assert actions["instanceActions"][0]["message"] == "Error"
