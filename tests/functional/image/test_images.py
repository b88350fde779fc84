"""Image records over the API: create, show, delete, (de|re)activate, tags, and their errors."""

from __future__ import annotations

import re
import uuid

import pytest

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
BASE_KEYS = {"name", "disk_format", "container_format", "visibility", "size", "virtual_size",
             "status", "checksum", "protected", "min_ram", "min_disk", "owner", "os_hidden",
             "os_hash_algo", "os_hash_value", "id", "created_at", "updated_at", "tags", "self",
             "file", "schema"}


def error(response) -> str:
    body = response.json()
    code = response.status_code
    assert body["code"].startswith(f"{code} "), body
    assert set(body) == {"message", "code", "title"}, body
    return body["message"]


# -- versions, schemas, errors --------------------------------------------------------


async def test_root_lists_versions_with_300(glance):
    r = await glance.get("/", as_=None)

    assert r.status_code == 300
    versions = r.json()["versions"]
    assert versions[0] == {"id": "v2.15", "status": "CURRENT", "links": [
        {"rel": "self", "href": "http://testserver/image/v2/"}]}
    assert {v["id"] for v in versions} >= {"v2.0", "v2.6", "v2.9"}


async def test_bare_prefix_lists_versions_too(glance):
    r = await glance.http.get("http://testserver/image")

    assert r.status_code == 300
    assert r.json()["versions"][0]["links"][0]["href"] == "http://testserver/image/v2/"


async def test_versions_answers_200(glance):
    r = await glance.get("/versions", as_=None)

    assert r.status_code == 200
    assert r.json()["versions"][0]["id"] == "v2.15"


@pytest.mark.parametrize("name", ["image", "images", "member", "members"])
async def test_schemas_are_served(glance, name):
    r = await glance.get(f"/v2/schemas/{name}")

    assert r.status_code == 200
    body = r.json()
    assert body["name"] == name
    if name == "image":
        assert body["additionalProperties"] == {"type": "string"}
        assert body["properties"]["visibility"]["enum"] == ["community", "public", "private",
                                                            "shared"]
        assert None in body["properties"]["disk_format"]["enum"]
        assert body["properties"]["kernel_id"]["is_base"] is False
    if name == "images":
        assert body["properties"]["images"]["items"]["name"] == "image"
        assert {link["rel"] for link in body["links"]} == {"first", "next", "describedby"}
    if name == "members":
        assert body["properties"]["members"]["items"]["name"] == "member"


async def test_unknown_schema_is_404(glance):
    r = await glance.get("/v2/schemas/nothing")

    assert r.status_code == 404
    assert error(r)


async def test_no_token_is_401_as_keystonemiddleware_says(glance):
    r = await glance.get("/v2/images", as_=None)

    assert r.status_code == 401
    assert r.json() == {"error": {"code": 401, "title": "Unauthorized",
                                  "message": "The request you have made requires "
                                             "authentication."}}
    assert r.headers["x-openstack-request-id"].startswith("req-")


async def test_bad_token_is_401(glance):
    r = await glance.http.get("/v2/images", headers={"X-Auth-Token": "nonsense"})

    assert r.status_code == 401


async def test_wrong_method_is_405(glance):
    r = await glance.request("POST", "/v2/images/abc")

    assert r.status_code == 405
    assert error(r)


# -- create ---------------------------------------------------------------------------


async def test_create_with_defaults(glance):
    r = await glance.post("/v2/images", json={})

    assert r.status_code == 201
    image = r.json()
    assert set(image) == BASE_KEYS
    assert UUID.match(image["id"])
    assert image["status"] == "queued"
    assert image["visibility"] == "shared"
    assert image["owner"] == await glance.project("demo")
    assert image["name"] is None and image["disk_format"] is None
    assert image["size"] is None and image["checksum"] is None
    assert image["protected"] is False and image["os_hidden"] is False
    assert image["min_ram"] == 0 and image["min_disk"] == 0
    assert image["tags"] == []
    assert image["self"] == f"/v2/images/{image['id']}"
    assert image["file"] == f"/v2/images/{image['id']}/file"
    assert image["schema"] == "/v2/schemas/image"
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", image["created_at"])
    assert r.headers["location"] == f"http://testserver/image/v2/images/{image['id']}"
    assert r.headers["openstack-image-import-methods"] == "glance-direct,web-download"
    assert r.headers["openstack-image-store-ids"] == "file"


async def test_create_with_everything(glance):
    image_id = str(uuid.uuid4())
    image = await glance.create(
        id=image_id, name="cirros", disk_format="qcow2", container_format="bare",
        visibility="private", protected=True, min_ram=64, min_disk=1, tags=["b", "a", "b"],
        os_distro="cirros", hw_disk_bus="virtio", os_hidden=True)

    assert image["id"] == image_id
    assert (image["name"], image["disk_format"], image["visibility"]) == ("cirros", "qcow2",
                                                                          "private")
    assert image["protected"] is True and image["os_hidden"] is True
    assert (image["min_ram"], image["min_disk"]) == (64, 1)
    assert image["tags"] == ["a", "b"]
    assert image["os_distro"] == "cirros" and image["hw_disk_bus"] == "virtio"
    assert set(list(image)[:2]) == {"os_distro", "hw_disk_bus"}  # custom properties first


@pytest.mark.parametrize("field", ["status", "checksum", "size", "virtual_size", "created_at",
                                   "updated_at", "os_hash_value", "self", "file", "schema",
                                   "direct_url", "stores"])
async def test_create_refuses_read_only_attributes(glance, field):
    r = await glance.post("/v2/images", json={field: "x" if field != "size" else 1})

    assert r.status_code in (400, 403)
    if r.status_code == 403:
        assert error(r) == f"Attribute '{field}' is read-only."


@pytest.mark.parametrize("field", ["location", "deleted", "os_glance_import_task"])
async def test_create_refuses_reserved_attributes(glance, field):
    r = await glance.post("/v2/images", json={field: "x"})

    assert r.status_code == 403
    assert error(r) == f"Attribute '{field}' is reserved."


@pytest.mark.parametrize(("body", "says"), [
    ({"disk_format": "floppy"}, "'floppy' is not one of"),
    ({"container_format": "zip"}, "'zip' is not one of"),
    ({"visibility": "everyone"}, "'everyone' is not one of"),
    ({"protected": "yes"}, "'yes' is not of type 'boolean'"),
    ({"min_ram": "1"}, "'1' is not of type 'integer'"),
    ({"name": "x" * 256}, "is too long"),
    ({"tags": ["x" * 256]}, "is too long"),
    ({"id": "not-a-uuid"}, "does not match"),
    ({"kernel_id": "not-a-uuid"}, "does not match"),
    ({"my_property": 5}, "5 is not of type 'string'"),
])
async def test_create_validates_against_the_schema(glance, body, says):
    r = await glance.post("/v2/images", json=body)

    assert r.status_code == 400
    message = error(r)
    assert message.startswith("Provided object does not match schema 'image': ")
    assert says in message


async def test_create_refuses_a_body_that_is_not_an_object(glance):
    assert (await glance.post("/v2/images", json=[1])).status_code == 400
    r = await glance.post("/v2/images", content=b"{nope", headers={"Content-Type":
                                                                    "application/json"})
    assert r.status_code == 400


async def test_create_refuses_long_property_names_and_negative_sizes(glance):
    r = await glance.post("/v2/images", json={"k" * 256: "v"})
    assert r.status_code == 400
    assert error(r) == "Custom property should not be greater than 255 characters."

    r = await glance.post("/v2/images", json={"min_disk": -1})
    assert r.status_code == 400
    assert "Cannot be a negative value" in error(r)


async def test_create_with_a_taken_id_is_409(glance):
    image = await glance.create()

    r = await glance.post("/v2/images", json={"id": image["id"]})

    assert r.status_code == 409
    assert error(r) == f"Image with identifier {image['id']} already exists!"


async def test_member_may_not_make_public_images_but_admin_may(glance):
    r = await glance.post("/v2/images", json={"visibility": "public"})
    assert r.status_code == 403
    assert error(r) == "You are not authorized to complete publicize_image action."

    image = await glance.create("admin", visibility="public")
    assert image["visibility"] == "public"


async def test_member_may_make_community_images(glance):
    image = await glance.create(visibility="community")

    assert image["visibility"] == "community"


async def test_member_may_not_create_for_another_project(glance):
    other = await glance.project("alt_demo")

    r = await glance.post("/v2/images", json={"owner": other})
    assert r.status_code == 403

    image = await glance.create("admin", owner=other)
    assert image["owner"] == other


# -- show and delete ----------------------------------------------------------------------


async def test_show_unknown_image_is_404(glance):
    missing = str(uuid.uuid4())

    r = await glance.get(f"/v2/images/{missing}")

    assert r.status_code == 404
    assert error(r) == f"No image found with ID {missing}"


@pytest.mark.parametrize(("visibility", "alt_sees"), [
    ("private", False), ("shared", False), ("public", True), ("community", True)])
async def test_who_sees_an_image(glance, visibility, alt_sees):
    image = await glance.create("admin" if visibility == "public" else "demo",
                                visibility=visibility)

    r = await glance.get(f"/v2/images/{image['id']}", "alt_demo")

    assert r.status_code == (200 if alt_sees else 404)
    assert (await glance.get(f"/v2/images/{image['id']}", "admin")).status_code == 200


async def test_delete_removes_the_image_and_its_data(glance):
    image = await glance.active()
    store = glance.component.store
    assert store.stored_ids() == {image["id"]}

    r = await glance.delete(f"/v2/images/{image['id']}")

    assert r.status_code == 204
    assert (await glance.get(f"/v2/images/{image['id']}")).status_code == 404
    assert store.stored_ids() == set()


async def test_delete_protected_image_is_403(glance):
    image = await glance.create(protected=True)

    r = await glance.delete(f"/v2/images/{image['id']}")

    assert r.status_code == 403
    assert error(r) == f"Image {image['id']} is protected and cannot be deleted."


async def test_delete_someone_elses_image(glance):
    private = await glance.create(visibility="private")
    public = await glance.create("admin", visibility="public")

    assert (await glance.delete(f"/v2/images/{private['id']}", "alt_demo")).status_code == 404
    r = await glance.delete(f"/v2/images/{public['id']}", "alt_demo")
    assert r.status_code == 403
    assert error(r) == "You are not authorized to complete delete_image action."
    assert (await glance.delete(f"/v2/images/{private['id']}", "admin")).status_code == 204


# -- deactivate and reactivate --------------------------------------------------------------


async def test_deactivate_and_reactivate(glance):
    image = await glance.active(data=b"payload")
    path = f"/v2/images/{image['id']}"

    assert (await glance.post(f"{path}/actions/deactivate")).status_code == 204
    assert (await glance.image(image["id"]))["status"] == "deactivated"
    assert (await glance.post(f"{path}/actions/deactivate")).status_code == 204  # no-op

    r = await glance.get(f"{path}/file")
    assert r.status_code == 403
    assert error(r) == ("The requested image has been deactivated. Image data download is "
                        "forbidden.")
    assert (await glance.get(f"{path}/file", "admin")).content == b"payload"

    assert (await glance.post(f"{path}/actions/reactivate")).status_code == 204
    assert (await glance.image(image["id"]))["status"] == "active"
    assert (await glance.get(f"{path}/file")).content == b"payload"


async def test_deactivate_a_queued_image_is_403(glance):
    image = await glance.create()

    r = await glance.post(f"/v2/images/{image['id']}/actions/deactivate")

    assert r.status_code == 403
    assert error(r) == "Not allowed to deactivate image in status 'queued'"
    r = await glance.post(f"/v2/images/{image['id']}/actions/reactivate")
    assert r.status_code == 403


async def test_only_the_owner_deactivates(glance):
    image = await glance.active("admin", visibility="public")

    r = await glance.post(f"/v2/images/{image['id']}/actions/deactivate", "demo")

    assert r.status_code == 403


# -- tags -------------------------------------------------------------------------------------


async def test_add_and_delete_tags(glance):
    image = await glance.create()
    path = f"/v2/images/{image['id']}/tags"

    assert (await glance.put(f"{path}/blue")).status_code == 204
    assert (await glance.put(f"{path}/blue")).status_code == 204
    assert (await glance.put(f"{path}/Red")).status_code == 204
    assert (await glance.image(image["id"]))["tags"] == ["Red", "blue"]

    assert (await glance.delete(f"{path}/blue")).status_code == 204
    r = await glance.delete(f"{path}/blue")
    assert r.status_code == 404
    assert (await glance.image(image["id"]))["tags"] == ["Red"]


async def test_tag_errors(glance):
    image = await glance.create()
    path = f"/v2/images/{image['id']}/tags"

    assert (await glance.put(f"{path}/{'x' * 256}")).status_code == 400
    assert (await glance.put(f"{path}/blue", "alt_demo")).status_code == 404
    assert (await glance.put(f"/v2/images/{uuid.uuid4()}/tags/x")).status_code == 404


async def test_tag_limit_is_413(glance, monkeypatch):
    from tinystack.image import service

    monkeypatch.setitem(service.LIMITS, "tags", 2)
    image = await glance.create(tags=["a", "b"])

    r = await glance.put(f"/v2/images/{image['id']}/tags/c")

    assert r.status_code == 413
    assert "Maximum: 2" in error(r)


async def test_reader_may_look_but_not_touch(glance, cloud):
    """A project reader (no member role) lists and shows but cannot create or change."""
    from tinystack.common.policy import Credentials

    image = await glance.create()
    demo = await glance.project("demo")
    reader = Credentials(user_id="u", user_domain_id="default", roles=frozenset({"reader"}),
                         project_id=demo)

    async def check(token: str) -> Credentials:
        return reader

    component = glance.component
    real = component.token_check
    component.token_check = check
    try:
        headers = {"X-Auth-Token": "reader"}
        assert (await glance.http.get("/v2/images", headers=headers)).status_code == 200
        r = await glance.http.get(f"/v2/images/{image['id']}", headers=headers)
        assert r.status_code == 200
        assert (await glance.http.post("/v2/images", json={},
                                       headers=headers)).status_code == 403
        r = await glance.http.delete(f"/v2/images/{image['id']}", headers=headers)
        assert r.status_code == 403
        r = await glance.http.put(f"/v2/images/{image['id']}/file", content=b"x",
                                  headers={**headers, "Content-Type": "application/octet-stream"})
        assert r.status_code == 403
    finally:
        component.token_check = real
