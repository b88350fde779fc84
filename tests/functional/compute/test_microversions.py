"""Microversion headers, the version documents, and the shapes that change with versions."""

from __future__ import annotations

import pytest

from tinystack.compute.microversions import MAX


async def test_version_documents(nova):
    r = await nova.http.get("/compute")
    assert r.status_code == 200
    versions = r.json()["versions"]
    assert [(v["id"], v["status"], v["min_version"], v["version"]) for v in versions] == \
        [("v2.1", "CURRENT", "2.1", str(MAX))]
    assert versions[0]["links"] == [{"rel": "self",
                                     "href": "http://testserver/compute/v2.1/"}]
    for path in ("/compute/v2.1", "/compute/v2.1/"):
        r = await nova.http.get(path)
        assert r.status_code == 200, path
        assert r.json()["version"]["version"] == str(MAX)


async def test_no_header_means_2_1(nova):
    r = await nova.compute("GET", "/flavors/1")
    assert r.headers["OpenStack-API-Version"] == "compute 2.1"
    assert r.headers["X-OpenStack-Nova-API-Version"] == "2.1"
    assert "OpenStack-API-Version" in r.headers["Vary"]
    assert "description" not in r.json()["flavor"]


@pytest.mark.parametrize("headers, answered", [
    ({"OpenStack-API-Version": "compute 2.55"}, "2.55"),
    ({"X-OpenStack-Nova-API-Version": "2.60"}, "2.60"),
    ({"OpenStack-API-Version": "compute latest"}, str(MAX)),
    ({"OpenStack-API-Version": "image 2.5, compute 2.61"}, "2.61"),
    ({"OpenStack-API-Version": "image 2.5"}, "2.1"),
    ({"OpenStack-API-Version": "compute 2.30", "X-OpenStack-Nova-API-Version": "2.40"},
     "2.30"),
])
async def test_both_headers_are_understood(nova, headers, answered):
    r = await nova.compute("GET", "/flavors/1", headers=headers)
    assert r.status_code == 200
    assert r.headers["X-OpenStack-Nova-API-Version"] == answered


async def test_bad_and_unsupported_versions(nova):
    r = await nova.compute("GET", "/flavors/1", headers={"OpenStack-API-Version": "compute 2"})
    assert r.status_code == 400
    assert r.json() == {"badRequest": {"code": 400, "message": (
        "API Version String 2 is of invalid format. Must be of format MajorNum.MinorNum.")}}
    r = await nova.compute("GET", "/flavors/1", mv="2.999")
    assert r.status_code == 406
    assert r.json() == {"computeFault": {"code": 406, "message": (
        f"Version 2.999 is not supported by the API. Minimum is 2.1 and maximum is {MAX}.")}}
    assert "X-Openstack-Request-Id" in r.headers
    r = await nova.compute("GET", "/flavors/1", mv="3.0")
    assert r.status_code == 406


async def test_errors_have_novas_shape_and_a_request_id(nova):
    r = await nova.http.get("/compute/v2.1/servers")
    assert r.status_code == 401
    assert r.json() == {"unauthorized": {"code": 401, "message": (
        "The request you have made requires authentication.")}}
    r = await nova.compute("GET", "/no-such-thing")
    assert r.status_code == 404 and "itemNotFound" in r.json()
    assert r.headers["X-Openstack-Request-Id"].startswith("req-")


@pytest.mark.parametrize("mv, present, absent", [
    ("2.1", {"flavor", "image"}, {"locked", "description", "tags", "server_groups"}),
    ("2.9", {"locked"}, {"description"}),
    ("2.19", {"description"}, {"tags"}),
    ("2.26", {"tags"}, {"trusted_image_certificates"}),
    ("2.63", {"trusted_image_certificates"}, {"server_groups"}),
    ("2.71", {"server_groups"}, {"locked_reason"}),
    ("2.73", {"locked_reason"}, {"pinned_availability_zone"}),
    ("2.96", {"pinned_availability_zone"}, {"scheduler_hints"}),
    ("2.100", {"scheduler_hints"}, set()),
])
async def test_server_show_shape_by_version(nova, agent, image_id, mv, present, absent):
    server_id = (await nova.create_server(image_id))["server"]["id"]
    server = await nova.server(server_id, mv=mv)
    assert present <= set(server)
    assert not absent & set(server)


async def test_embedded_flavor_and_image_properties(nova, agent, glance):
    image = glance.add(os_distro="debian", hw_architecture="x86_64")
    server_id = (await nova.create_server(image))["server"]["id"]
    old = await nova.server(server_id, mv="2.46")
    assert old["flavor"] == {"id": "42", "links": [
        {"rel": "bookmark", "href": "http://testserver/compute/flavors/42"}]}
    new = await nova.server(server_id, mv="2.47")
    assert new["flavor"] == {"vcpus": 1, "ram": 192, "disk": 1, "ephemeral": 0, "swap": 0,
                             "original_name": "m1.nano",
                             "extra_specs": {"hw_rng:allowed": "True"}}
    assert "properties" not in (await nova.server(server_id, mv="2.97"))["image"]
    assert (await nova.server(server_id, mv="2.98"))["image"]["properties"] == {
        "os_distro": "debian", "hw_architecture": "x86_64"}


async def test_hostname_is_visible_to_users_from_2_90(nova, agent, image_id):
    server_id = (await nova.create_server(image_id, name="My Web_Server"))["server"]["id"]
    assert "OS-EXT-SRV-ATTR:hostname" not in await nova.server(server_id, mv="2.89")
    assert (await nova.server(server_id, mv="2.90"))["OS-EXT-SRV-ATTR:hostname"] == \
        "my-web-server"
    admin = await nova.server(server_id, mv="2.3", user="admin")
    assert admin["OS-EXT-SRV-ATTR:hostname"] == "my-web-server"
    assert "OS-EXT-SRV-ATTR:hostname" not in await nova.server(server_id, mv="2.1",
                                                                user="admin")


async def test_fields_a_version_does_not_have_are_refused(nova, agent, image_id):
    r = await nova.create_server(image_id, mv="2.18", description="x", expect=400)
    assert r["badRequest"]["message"] == ("Invalid input for field/attribute description. "
                                          "Additional properties are not allowed "
                                          "('description' was unexpected)")
    await nova.create_server(image_id, mv="2.51", tags=["a"], expect=400)
    await nova.create_server(image_id, mv="2.89", hostname="h", expect=400)
    await nova.create_server(image_id, personality=[{"path": "/x", "contents": ""}],
                             expect=400)
    await nova.create_server(image_id, mv="2.56", personality=[])


async def test_hostnames_may_be_fqdns_from_2_94(nova, agent, image_id):
    await nova.create_server(image_id, mv="2.93", hostname="web.example.org", expect=400)
    created = await nova.create_server(image_id, mv="2.94", hostname="web.example.org")
    server = await nova.server(created["server"]["id"])
    assert server["OS-EXT-SRV-ATTR:hostname"] == "web.example.org"
    await nova.create_server(image_id, mv="2.94", hostname="bad_-", expect=400)
