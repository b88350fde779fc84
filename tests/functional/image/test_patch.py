"""PATCH /v2/images/{id}: Glance's JSON-patch media types, base and custom properties."""

from __future__ import annotations

import pytest

from .client import PATCH
from .test_images import error

V20 = "application/openstack-images-v2.0-json-patch"


async def test_replace_add_remove(glance):
    image = await glance.create(name="before", os_distro="debian")
    path = f"/v2/images/{image['id']}"

    r = await glance.patch(path, [
        {"op": "replace", "path": "/name", "value": "after"},
        {"op": "add", "path": "/hw_disk_bus", "value": "virtio"},
        {"op": "replace", "path": "/os_distro", "value": "ubuntu"},
        {"op": "add", "path": "/min_ram", "value": 128},
        {"op": "replace", "path": "/protected", "value": True},
        {"op": "replace", "path": "/tags", "value": ["x", "y"]},
    ])

    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["name"], body["min_ram"], body["protected"]) == ("after", 128, True)
    assert body["hw_disk_bus"] == "virtio" and body["os_distro"] == "ubuntu"
    assert body["tags"] == ["x", "y"]

    r = await glance.patch(path, [{"op": "remove", "path": "/os_distro"}])
    assert r.status_code == 200
    assert "os_distro" not in r.json()
    assert (await glance.image(image["id"])) == r.json()


async def test_add_replaces_an_existing_custom_property(glance):
    image = await glance.create(color="red")

    r = await glance.patch(f"/v2/images/{image['id']}",
                           [{"op": "add", "path": "/color", "value": "blue"}])

    assert r.json()["color"] == "blue"


async def test_draft_4_media_type(glance):
    image = await glance.create()

    r = await glance.patch(f"/v2/images/{image['id']}", [{"replace": "/name", "value": "v20"}],
                           content_type=V20)

    assert r.status_code == 200
    assert r.json()["name"] == "v20"


async def test_other_media_type_is_415_with_accept_patch(glance):
    image = await glance.create()

    r = await glance.patch(f"/v2/images/{image['id']}",
                           [{"op": "replace", "path": "/name", "value": "x"}],
                           content_type="application/json")

    assert r.status_code == 415
    assert r.headers["accept-patch"] == f"{V20}, {PATCH}"


@pytest.mark.parametrize(("ops", "code", "says"), [
    ([{"op": "replace", "path": "/status", "value": "active"}], 403,
     "Attribute 'status' is read-only."),
    ([{"op": "replace", "path": "/checksum", "value": "x"}], 403,
     "Attribute 'checksum' is read-only."),
    ([{"op": "add", "path": "/os_glance_x", "value": "x"}], 403,
     "Attribute 'os_glance_x' is reserved."),
    ([{"op": "add", "path": "/deleted", "value": "x"}], 403, "Attribute 'deleted' is reserved."),
    ([{"op": "remove", "path": "/name"}], 403, "Property name may not be removed."),
    ([{"op": "remove", "path": "/missing"}], 409, "Property missing does not exist."),
    ([{"op": "replace", "path": "/missing", "value": "x"}], 409,
     "Property missing does not exist."),
    ([{"op": "replace", "path": "/locations", "value": []}], 403,
     "It's not allowed to update locations if locations are invisible."),
    ([{"op": "move", "path": "/name"}], 400, "Invalid operation: `move`."),
    ([{"path": "/name", "value": "x"}], 400, "Unable to find `op` in JSON Schema change."),
    ([{"op": "replace", "value": "x"}], 400, "Unable to find 'path' in JSON Schema change"),
    ([{"op": "replace", "path": "/name"}], 400,
     'Operation "replace" requires a member named "value".'),
    ([{"op": "replace", "path": "name", "value": "x"}], 400, 'does not start with "/"'),
    ([{"op": "replace", "path": "/a/b", "value": "x"}], 400,
     "Invalid JSON pointer for this resource: '/a/b'"),
    ([{"op": "replace", "path": "/visibility", "value": "everyone"}], 400,
     "'everyone' is not one of"),
    ([{"op": "replace", "path": "/min_disk", "value": -1}], 400, "Cannot be a negative value"),
    ([{"op": "add", "path": "/color", "value": 3}], 400, "3 is not of type 'string'"),
    ({"op": "replace"}, 400, "Request body must be a JSON array of operation objects."),
    (["x"], 400, "Operations must be JSON objects."),
])
async def test_patch_errors(glance, ops, code, says):
    image = await glance.create()

    r = await glance.patch(f"/v2/images/{image['id']}", ops)

    assert r.status_code == code, r.text
    assert says in error(r)


async def test_formats_change_only_while_queued(glance):
    image = await glance.active()

    r = await glance.patch(f"/v2/images/{image['id']}",
                           [{"op": "replace", "path": "/disk_format", "value": "qcow2"}])

    assert r.status_code == 403
    assert error(r) == "Attribute disk_format can be only replaced for a queued image."


async def test_visibility_changes_follow_policy(glance):
    image = await glance.create()
    path = f"/v2/images/{image['id']}"

    r = await glance.patch(path, [{"op": "replace", "path": "/visibility", "value": "public"}])
    assert r.status_code == 403
    assert error(r) == "You are not authorized to complete publicize_image action."

    for visibility in ("community", "private", "shared"):
        r = await glance.patch(path, [{"op": "replace", "path": "/visibility",
                                       "value": visibility}])
        assert r.json()["visibility"] == visibility

    r = await glance.patch(path, [{"op": "replace", "path": "/visibility", "value": "public"}],
                           as_="admin")
    assert r.json()["visibility"] == "public"


async def test_owner_changes_only_by_admin(glance):
    image = await glance.create()
    other = await glance.project("alt_demo")
    path = f"/v2/images/{image['id']}"

    r = await glance.patch(path, [{"op": "replace", "path": "/owner", "value": other}])
    assert r.status_code == 403
    assert error(r) == "Owner can't be updated by non admin."

    r = await glance.patch(path, [{"op": "replace", "path": "/owner", "value": other}], "admin")
    assert r.json()["owner"] == other


async def test_only_the_owner_patches(glance):
    image = await glance.create("admin", visibility="public")

    r = await glance.patch(f"/v2/images/{image['id']}",
                           [{"op": "replace", "path": "/name", "value": "mine"}])

    assert r.status_code == 403
    assert error(r) == "You are not authorized to complete modify_image action."


async def test_patch_of_an_invisible_image_is_404(glance):
    image = await glance.create(visibility="private")

    r = await glance.patch(f"/v2/images/{image['id']}",
                           [{"op": "replace", "path": "/name", "value": "x"}], "alt_demo")

    assert r.status_code == 404


async def test_property_limit_is_413(glance, monkeypatch):
    from tinystack.image import service

    monkeypatch.setitem(service.LIMITS, "properties", 1)
    image = await glance.create(a="1")

    r = await glance.patch(f"/v2/images/{image['id']}",
                           [{"op": "add", "path": "/b", "value": "2"}])

    assert r.status_code == 413
    assert "Attempted: 2, Maximum: 1" in error(r)


async def test_pointer_escapes(glance):
    image = await glance.create()

    r = await glance.patch(f"/v2/images/{image['id']}",
                           [{"op": "add", "path": "/a~1b~0c", "value": "v"}])

    assert r.json()["a/b~c"] == "v"
