"""/v2/images/{id}/members: sharing between projects, accept and reject, as Glance enforces it."""

from __future__ import annotations

import uuid

from .test_images import error


async def shared(glance, **body) -> tuple[dict, str, str]:
    image = await glance.active(**body)
    alt = await glance.project("alt_demo")
    return image, alt, f"/v2/images/{image['id']}/members"


async def test_share_accept_and_use(glance):
    image, alt, members = await shared(glance, data=b"shared bytes")

    r = await glance.post(members, json={"member": alt})
    assert r.status_code == 200
    member = r.json()
    assert set(member) == {"member_id", "image_id", "status", "created_at", "updated_at",
                           "schema"}
    assert (member["member_id"], member["image_id"], member["status"]) == (alt, image["id"],
                                                                           "pending")
    assert member["schema"] == "/v2/schemas/member"

    # a pending member may already read the image by id, and download it
    assert (await glance.get(f"/v2/images/{image['id']}", "alt_demo")).status_code == 200
    r = await glance.get(f"/v2/images/{image['id']}/file", "alt_demo")
    assert r.content == b"shared bytes"

    r = await glance.put(f"{members}/{alt}", "alt_demo", json={"status": "accepted"})
    assert r.status_code == 200
    assert r.json()["status"] == "accepted"
    assert [i["id"] for i in (await glance.get("/v2/images", "alt_demo")).json()["images"]] == [
        image["id"]]

    r = await glance.get(members)
    assert r.json() == {"members": [r.json()["members"][0]], "schema": "/v2/schemas/members"}
    assert r.json()["members"][0]["status"] == "accepted"


async def test_reject_hides_from_the_list_but_not_by_id(glance):
    image, alt, members = await shared(glance)
    await glance.post(members, json={"member": alt})

    r = await glance.put(f"{members}/{alt}", "alt_demo", json={"status": "rejected"})

    assert r.json()["status"] == "rejected"
    assert await glance.names(as_="alt_demo") == []
    assert await glance.names("?member_status=rejected", "alt_demo") == [image["name"]]
    assert (await glance.get(f"/v2/images/{image['id']}", "alt_demo")).status_code == 200


async def test_owner_may_not_answer_for_the_member(glance):
    image, alt, members = await shared(glance)
    await glance.post(members, json={"member": alt})

    r = await glance.put(f"{members}/{alt}", json={"status": "accepted"})

    assert r.status_code == 403
    assert error(r) == "You are not permitted to modify 'status' on this image member."


async def test_member_may_not_add_or_remove_members(glance):
    image, alt, members = await shared(glance)
    await glance.post(members, json={"member": alt})

    r = await glance.post(members, "alt_demo", json={"member": alt})
    assert r.status_code == 403
    r = await glance.delete(f"{members}/{alt}", "alt_demo")
    assert r.status_code == 403


async def test_member_sees_only_its_own_membership(glance):
    image, alt, members = await shared(glance)
    await glance.post(members, json={"member": alt})
    await glance.post(members, json={"member": "third-project"})

    assert len((await glance.get(members)).json()["members"]) == 2
    listed = (await glance.get(members, "alt_demo")).json()["members"]
    assert [m["member_id"] for m in listed] == [alt]
    assert (await glance.get(f"{members}/{alt}", "alt_demo")).status_code == 200
    r = await glance.get(f"{members}/third-project", "alt_demo")
    assert r.status_code == 404
    assert error(r) == (f"third-project not found in the member list of the image "
                        f"{image['id']}.")


async def test_only_shared_images_have_members(glance):
    for visibility in ("private", "community"):
        image = await glance.create(visibility=visibility)
        r = await glance.post(f"/v2/images/{image['id']}/members", json={"member": "x"})
        assert r.status_code == 403
        assert error(r) == "Only shared images have members."
        r = await glance.get(f"/v2/images/{image['id']}/members")
        assert r.status_code == 403


async def test_remove_member_revokes_access(glance):
    image, alt, members = await shared(glance)
    await glance.post(members, json={"member": alt})

    assert (await glance.delete(f"{members}/{alt}")).status_code == 204

    assert (await glance.get(f"/v2/images/{image['id']}", "alt_demo")).status_code == 404
    assert (await glance.delete(f"{members}/{alt}")).status_code == 404


async def test_member_errors(glance):
    image, alt, members = await shared(glance)

    r = await glance.post(members, json={})
    assert (r.status_code, error(r)) == (400, "Member to be added not specified")
    r = await glance.post(members, json={"member": ""})
    assert (r.status_code, error(r)) == (400, "Member can't be empty")
    assert (await glance.post(members, json={"member": alt})).status_code == 200
    r = await glance.post(members, json={"member": alt})
    assert (r.status_code, error(r)) == (409, f"Member {alt} is duplicated for image "
                                              f"{image['id']}")
    r = await glance.put(f"{members}/{alt}", "alt_demo", json={})
    assert (r.status_code, error(r)) == (400, "Status not specified")
    r = await glance.put(f"{members}/{alt}", "alt_demo", json={"status": "maybe"})
    assert r.status_code == 400
    assert 'Status must be "pending", "accepted" or "rejected".' in error(r)
    r = await glance.put(f"{members}/nobody", json={"status": "accepted"})
    assert r.status_code == 404
    r = await glance.get(f"/v2/images/{uuid.uuid4()}/members")
    assert r.status_code == 404


async def test_stranger_cannot_see_members_of_a_shared_image(glance):
    image, alt, members = await shared(glance)

    r = await glance.get(members, "alt_demo")

    assert r.status_code == 404


async def test_member_limit_is_413(glance, monkeypatch):
    from tinystack.image import service

    monkeypatch.setitem(service.LIMITS, "members", 1)
    image, alt, members = await shared(glance)
    await glance.post(members, json={"member": alt})

    r = await glance.post(members, json={"member": "another"})

    assert r.status_code == 413


async def test_admin_manages_any_membership(glance):
    image, alt, members = await shared(glance)

    assert (await glance.post(members, "admin", json={"member": alt})).status_code == 200
    r = await glance.put(f"{members}/{alt}", "admin", json={"status": "accepted"})
    assert r.json()["status"] == "accepted"
    assert (await glance.delete(f"{members}/{alt}", "admin")).status_code == 204


async def test_deleting_an_image_forgets_its_members(glance):
    image, alt, members = await shared(glance)
    await glance.post(members, json={"member": alt})

    assert (await glance.delete(f"/v2/images/{image['id']}")).status_code == 204

    assert await glance.names("?member_status=all", "alt_demo") == []
