"""GET /v2/images: who sees what, every filter, sorting and marker pagination."""

from __future__ import annotations

import datetime as dt
from urllib.parse import parse_qs, urlsplit

import pytest

from .test_images import error


async def test_list_shape(glance):
    await glance.create(name="one")

    r = await glance.get("/v2/images")

    body = r.json()
    assert set(body) == {"images", "first", "schema"}
    assert body["first"] == "/v2/images" and body["schema"] == "/v2/schemas/images"
    assert [i["name"] for i in body["images"]] == ["one"]


async def test_visibility_rules_in_lists(glance):
    demo = {"private": await glance.create(name="private", visibility="private"),
            "shared": await glance.create(name="shared"),
            "community": await glance.create(name="community", visibility="community")}
    await glance.create("admin", name="public", visibility="public")
    await glance.create("alt_demo", name="alt-private", visibility="private")

    assert sorted(await glance.names()) == ["community", "private", "public", "shared"]
    assert sorted(await glance.names(as_="alt_demo")) == ["alt-private", "public"]
    assert sorted(await glance.names("?visibility=community", "alt_demo")) == ["community"]
    assert sorted(await glance.names("?visibility=all", "alt_demo")) == [
        "alt-private", "community", "public"]
    assert sorted(await glance.names(as_="admin")) == ["alt-private", "private", "public",
                                                      "shared"]
    assert sorted(await glance.names("?visibility=private")) == ["private"]
    assert demo["shared"]["visibility"] == "shared"


async def test_shared_images_follow_member_status(glance):
    image = await glance.create(name="shared")
    alt = await glance.project("alt_demo")
    members = f"/v2/images/{image['id']}/members"
    assert (await glance.post(members, json={"member": alt})).status_code == 200

    assert await glance.names(as_="alt_demo") == []
    assert await glance.names("?member_status=pending", "alt_demo") == ["shared"]
    assert await glance.names("?member_status=all", "alt_demo") == ["shared"]
    assert await glance.names("?visibility=shared&member_status=pending", "alt_demo") == [
        "shared"]

    r = await glance.put(f"{members}/{alt}", "alt_demo", json={"status": "accepted"})
    assert r.status_code == 200
    assert await glance.names(as_="alt_demo") == ["shared"]
    assert await glance.names("?member_status=pending", "alt_demo") == []


async def test_hidden_images_only_on_request(glance):
    await glance.create(name="seen")
    await glance.create(name="hidden", os_hidden=True)

    assert await glance.names() == ["seen"]
    assert await glance.names("?os_hidden=true") == ["hidden"]
    r = await glance.get("/v2/images?os_hidden=maybe")
    assert r.status_code == 400
    assert error(r) == ("Invalid value 'maybe' for 'os_hidden' filter. Valid values are "
                        "'true' or 'false'.")


async def test_filters(glance):
    small = await glance.active(name="small", data=b"x" * 10, tags=["a", "b"], os_distro="deb")
    await glance.active(name="big", data=b"y" * 1000, tags=["a"], protected=True)
    await glance.create(name="empty, really", disk_format="qcow2")

    assert await glance.names("?name=small") == ["small"]
    assert sorted(await glance.names('?name=in:small,"empty, really"')) == [
        "empty, really", "small"]
    assert sorted(await glance.names("?status=active")) == ["big", "small"]
    assert await glance.names("?status=in:queued,saving") == ["empty, really"]
    assert await glance.names("?disk_format=qcow2") == ["empty, really"]
    assert await glance.names(f"?id={small['id']}") == ["small"]
    assert await glance.names("?size_min=100") == ["big"]
    assert await glance.names("?size_max=100") == ["small"]
    assert await glance.names("?size_min=5&size_max=20") == ["small"]
    assert sorted(await glance.names("?tag=a")) == ["big", "small"]
    assert await glance.names("?tag=a&tag=b") == ["small"]
    assert await glance.names("?os_distro=deb") == ["small"]
    assert await glance.names("?protected=true") == ["big"]
    assert len(await glance.names(f"?owner={await glance.project('demo')}")) == 3
    assert await glance.names(f"?checksum={small['checksum']}") == ["small"]


async def test_time_filters(glance):
    image = await glance.create(name="now")
    created = dt.datetime.strptime(image["created_at"], "%Y-%m-%dT%H:%M:%SZ")
    before = (created - dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    after = (created + dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")

    assert await glance.names(f"?created_at=gt:{before}") == ["now"]
    assert await glance.names(f"?created_at=lt:{before}") == []
    assert await glance.names(f"?updated_at=lte:{after}") == ["now"]
    assert await glance.names(f"?created_at=gte:{after}") == []
    assert await glance.names(f"?created_at=neq:{after}") == ["now"]


@pytest.mark.parametrize(("query", "says"), [
    ("?limit=x", "limit param must be an integer"),
    ("?limit=-1", "limit param must be positive"),
    ("?sort_key=color", "Invalid sort key: color."),
    ("?sort_dir=up", "Invalid sort direction: up"),
    ("?sort=name:up", "Invalid sort direction: up"),
    ("?sort=name&sort_key=name", "Old and new sorting syntax cannot be combined"),
    ("?sort_key=name&sort_key=id&sort_dir=asc&sort_dir=desc&sort_dir=asc",
     "Number of sort dirs does not match the number of sort keys"),
    ("?visibility=everyone", "Invalid visibility value: everyone"),
    ("?member_status=maybe", "Invalid status: maybe"),
    ("?changes-since=2020-01-01", 'The "changes-since" filter is no longer available on v2.'),
    ("?size_min=big", "Unable to filter on a range with a non-numeric value."),
    ("?created_at=gt:yesterday", 'Bad "created_at" query filter format.'),
    ("?created_at=about:2020-01-01T00:00:00", "Unable to filter by unknown operator 'about'."),
    ("?name=like:foo", "Unable to filter by unknown operator 'like'."),
    ("?protected=maybe", "Invalid value 'maybe' for 'protected' filter."),
    ("?marker=00000000-0000-0000-0000-000000000000",
     "No image found with ID 00000000-0000-0000-0000-000000000000"),
])
async def test_bad_queries_are_400(glance, query, says):
    r = await glance.get(f"/v2/images{query}")

    assert r.status_code == 400, r.text
    assert says in error(r)


async def test_sorting(glance):
    for name, size in (("b", 30), ("a", 10), ("c", 20)):
        await glance.active(name=name, data=b"z" * size)
    await glance.create(name=None)

    assert await glance.names("?sort_key=name&sort_dir=asc") == [None, "a", "b", "c"]
    assert await glance.names("?sort=name:desc") == ["c", "b", "a", None]
    assert await glance.names("?sort=size:asc,name") == [None, "a", "c", "b"]
    assert await glance.names("?sort_key=size&sort_key=name&sort_dir=desc") == [
        "b", "c", "a", None]
    default = await glance.names()
    assert default[0] is None  # newest first


async def test_pagination_follows_next_links(glance):
    for i in range(7):
        await glance.create(name=f"img{i}", tags=["paged"])

    seen, url, pages = [], "/v2/images?limit=3&sort=name:asc&tag=paged", 0
    while url:
        body = (await glance.get(url)).json()
        pages += 1
        seen += [i["name"] for i in body["images"]]
        assert body["first"] == "/v2/images?limit=3&sort=name%3Aasc&tag=paged"
        url = body.get("next")
        if url:
            query = parse_qs(urlsplit(url).query)
            assert query["limit"] == ["3"] and query["tag"] == ["paged"]
    assert seen == [f"img{i}" for i in range(7)]
    assert pages == 3


async def test_pagination_with_ties_and_nulls(glance):
    for _ in range(5):
        await glance.create(name=None)
    for _ in range(3):
        await glance.create(name="same")

    seen, url = [], "/v2/images?limit=2&sort_key=name&sort_dir=asc"
    while url:
        body = (await glance.get(url)).json()
        seen += [i["id"] for i in body["images"]]
        url = body.get("next")
    assert len(seen) == len(set(seen)) == 8


async def test_default_and_maximum_limits(glance):
    for i in range(27):
        await glance.create(name=f"i{i}")

    body = (await glance.get("/v2/images")).json()
    assert len(body["images"]) == 25 and "next" in body
    body = (await glance.get("/v2/images?limit=5000")).json()
    assert len(body["images"]) == 27 and "next" not in body
    body = (await glance.get("/v2/images?limit=0")).json()
    assert body["images"] == []
