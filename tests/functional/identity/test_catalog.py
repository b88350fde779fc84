"""The catalog: regions, services and endpoints, and the catalog tokens carry.

Shapes from Keystone's api-ref (regions-v3.inc, service-catalog.inc): an
endpoint shows both ``region_id`` and the older ``region``; a region may be
created with POST (generated or given id) or PUT on its id; deleting a
service deletes its endpoints. A catalog change shows in the next token.
"""

from __future__ import annotations

import re

from .client import V3, KeystoneClient, client_for

HEX32 = re.compile(r"^[0-9a-f]{32}$")


async def catalog_of(api: KeystoneClient) -> list[dict]:
    r = await api.get("/v3/auth/catalog", await api.token("demo", project="demo"))
    assert r.status_code == 200
    return r.json()["catalog"]


async def test_bootstrap_catalog(api: KeystoneClient):
    r = await api.as_admin("GET", "/v3/regions", expect=200)
    assert r.json()["regions"] == [{"id": "RegionOne", "description": "",
                                    "parent_region_id": None,
                                    "links": {"self": f"{V3}/regions/RegionOne"}}]
    r = await api.as_admin("GET", "/v3/services?type=identity", expect=200)
    (service,) = r.json()["services"]
    assert service == {"id": service["id"], "type": "identity", "name": "keystone",
                       "description": "Identity Service", "enabled": True,
                       "links": {"self": f"{V3}/services/{service['id']}"}}
    r = await api.as_admin("GET", f"/v3/endpoints?service_id={service['id']}", expect=200)
    endpoints = r.json()["endpoints"]
    assert sorted(e["interface"] for e in endpoints) == ["admin", "internal", "public"]
    for endpoint in endpoints:
        assert endpoint == {"id": endpoint["id"], "service_id": service["id"],
                            "interface": endpoint["interface"],
                            "url": f"{api.cloud.settings.base_url}/identity",
                            "region_id": "RegionOne", "region": "RegionOne", "enabled": True,
                            "links": {"self": f"{V3}/endpoints/{endpoint['id']}"}}


async def test_region_lifecycle(api: KeystoneClient):
    r = await api.as_admin("POST", "/v3/regions", json={"region": {
        "id": "RegionTwo", "description": "The second", "zone": "eu"}})
    assert r.status_code == 201, r.text
    region = r.json()["region"]
    assert region == {"id": "RegionTwo", "description": "The second", "zone": "eu",
                      "parent_region_id": None, "links": {"self": f"{V3}/regions/RegionTwo"}}
    r = await api.as_admin("POST", "/v3/regions", json={"region": {
        "parent_region_id": "RegionTwo"}}, expect=201)
    child = r.json()["region"]
    assert HEX32.match(child["id"])
    assert child["parent_region_id"] == "RegionTwo"
    r = await api.as_admin("PUT", "/v3/regions/RegionThree", json={"region": {
        "description": "by PUT"}}, expect=201)
    assert r.json()["region"]["id"] == "RegionThree"

    r = await api.as_admin("GET", "/v3/regions/RegionTwo", expect=200)
    assert r.json() == {"region": region}
    r = await api.as_admin("GET", "/v3/regions?parent_region_id=RegionTwo", expect=200)
    assert [x["id"] for x in r.json()["regions"]] == [child["id"]]
    r = await api.as_admin("PATCH", "/v3/regions/RegionThree", json={"region": {
        "description": "changed", "parent_region_id": "RegionTwo"}}, expect=200)
    assert r.json()["region"]["description"] == "changed"
    assert r.json()["region"]["parent_region_id"] == "RegionTwo"
    r = await api.as_admin("PATCH", "/v3/regions/RegionThree", json={"region": {
        "parent_region_id": "RegionThree"}})
    assert r.status_code == 400

    await api.as_admin("DELETE", "/v3/regions/RegionThree", expect=204)
    await api.as_admin("GET", "/v3/regions/RegionThree", expect=404)
    await api.as_admin("DELETE", "/v3/regions/RegionThree", expect=404)
    await api.as_admin("POST", "/v3/regions", json={"region": {"parent_region_id": "nowhere"}},
                       expect=404)


async def test_a_region_with_endpoints_stays(api: KeystoneClient):
    r = await api.as_admin("DELETE", "/v3/regions/RegionOne")
    assert r.status_code == 403
    assert r.json()["error"]["code"] == 403
    await api.as_admin("GET", "/v3/regions/RegionOne", expect=200)


async def test_service_and_endpoint_lifecycle(api: KeystoneClient):
    r = await api.as_admin("POST", "/v3/services", json={"service": {
        "type": "compute", "name": "nova", "description": "Compute Service"}})
    assert r.status_code == 201, r.text
    service = r.json()["service"]
    assert HEX32.match(service["id"])
    assert service == {"id": service["id"], "type": "compute", "name": "nova",
                       "description": "Compute Service", "enabled": True,
                       "links": {"self": f"{V3}/services/{service['id']}"}}
    r = await api.as_admin("GET", f"/v3/services/{service['id']}", expect=200)
    assert r.json() == {"service": service}

    r = await api.as_admin("POST", "/v3/endpoints", json={"endpoint": {
        "service_id": service["id"], "interface": "public", "region_id": "RegionOne",
        "url": "http://compute.example/v2.1"}})
    assert r.status_code == 201, r.text
    endpoint = r.json()["endpoint"]
    assert endpoint == {"id": endpoint["id"], "service_id": service["id"],
                        "interface": "public", "url": "http://compute.example/v2.1",
                        "region_id": "RegionOne", "region": "RegionOne", "enabled": True,
                        "links": {"self": f"{V3}/endpoints/{endpoint['id']}"}}
    r = await api.as_admin("GET", f"/v3/endpoints/{endpoint['id']}", expect=200)
    assert r.json() == {"endpoint": endpoint}
    r = await api.as_admin("GET", "/v3/endpoints?interface=public", expect=200)
    assert endpoint["id"] in {e["id"] for e in r.json()["endpoints"]}
    r = await api.as_admin("GET", "/v3/endpoints?interface=admin", expect=200)
    assert endpoint["id"] not in {e["id"] for e in r.json()["endpoints"]}

    (compute,) = [s for s in await catalog_of(api) if s["type"] == "compute"]
    assert compute == {"id": service["id"], "type": "compute", "name": "nova", "endpoints": [{
        "id": endpoint["id"], "interface": "public", "region_id": "RegionOne",
        "region": "RegionOne", "url": "http://compute.example/v2.1"}]}

    r = await api.as_admin("PATCH", f"/v3/endpoints/{endpoint['id']}", json={"endpoint": {
        "url": "http://compute2.example/v2.1"}}, expect=200)
    assert r.json()["endpoint"]["url"] == "http://compute2.example/v2.1"
    (compute,) = [s for s in await catalog_of(api) if s["type"] == "compute"]
    assert compute["endpoints"][0]["url"] == "http://compute2.example/v2.1"

    await api.as_admin("PATCH", f"/v3/endpoints/{endpoint['id']}",
                       json={"endpoint": {"enabled": False}}, expect=200)
    (compute,) = [s for s in await catalog_of(api) if s["type"] == "compute"]
    assert compute["endpoints"] == []
    r = await api.as_admin("PATCH", f"/v3/services/{service['id']}", json={"service": {
        "enabled": False, "name": "nova2"}}, expect=200)
    assert (r.json()["service"]["enabled"], r.json()["service"]["name"]) == (False, "nova2")
    assert [s for s in await catalog_of(api) if s["type"] == "compute"] == []

    await api.as_admin("DELETE", f"/v3/services/{service['id']}", expect=204)
    await api.as_admin("GET", f"/v3/services/{service['id']}", expect=404)
    await api.as_admin("GET", f"/v3/endpoints/{endpoint['id']}", expect=404)


async def test_endpoint_delete(api: KeystoneClient):
    service_id = (await api.find("services", "keystone"))["id"]
    r = await api.as_admin("POST", "/v3/endpoints", json={"endpoint": {
        "service_id": service_id, "interface": "internal", "url": "http://x/"}}, expect=201)
    endpoint_id = r.json()["endpoint"]["id"]
    assert r.json()["endpoint"]["region_id"] is None
    r = await api.as_admin("DELETE", f"/v3/endpoints/{endpoint_id}", expect=204)
    assert r.content == b""
    await api.as_admin("GET", f"/v3/endpoints/{endpoint_id}", expect=404)
    await api.as_admin("DELETE", f"/v3/endpoints/{endpoint_id}", expect=404)


async def test_endpoint_checks(api: KeystoneClient):
    service_id = (await api.find("services", "keystone"))["id"]
    base = {"service_id": service_id, "interface": "public", "url": "http://x/"}
    r = await api.as_admin("POST", "/v3/endpoints", json={"endpoint": {
        **base, "interface": "sideways"}})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == 400
    await api.as_admin("POST", "/v3/endpoints", json={"endpoint": {
        **base, "service_id": "0" * 32}}, expect=404)
    await api.as_admin("POST", "/v3/endpoints", json={"endpoint": {
        **base, "region_id": "nowhere"}}, expect=404)
    endpoint_id = (await api.as_admin("GET", "/v3/endpoints", expect=200)).json()[
        "endpoints"][0]["id"]
    await api.as_admin("PATCH", f"/v3/endpoints/{endpoint_id}", json={"endpoint": {
        "interface": "sideways"}}, expect=400)
    await api.as_admin("PATCH", f"/v3/endpoints/{endpoint_id}", json={"endpoint": {
        "service_id": "0" * 32}}, expect=404)


async def test_service_list_filters(api: KeystoneClient):
    await api.as_admin("POST", "/v3/services", json={"service": {"type": "image",
                                                                 "name": "glance"}}, expect=201)
    r = await api.as_admin("GET", "/v3/services", expect=200)
    assert r.json()["links"] == {"self": f"{V3}/services", "previous": None, "next": None}
    assert {"identity", "image"} <= {s["type"] for s in r.json()["services"]}
    r = await api.as_admin("GET", "/v3/services?type=image", expect=200)
    assert [s["name"] for s in r.json()["services"]] == ["glance"]
    r = await api.as_admin("GET", "/v3/services?name=glance", expect=200)
    assert [s["type"] for s in r.json()["services"]] == ["image"]


def normalized(catalog: list[dict]) -> list[dict]:
    return sorted(({**s, "endpoints": sorted(s["endpoints"], key=lambda e: e["id"])}
                   for s in catalog), key=lambda s: s["id"])


async def test_restart_keeps_the_catalog(api: KeystoneClient, make_cloud):
    before = await catalog_of(api)
    await api.cloud.stop()
    async with client_for(await make_cloud()) as again:
        assert normalized(await catalog_of(again)) == normalized(before)
