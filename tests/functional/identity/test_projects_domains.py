"""Domains and projects: create, show, list with filters, update, delete, hierarchy.

Shapes from Keystone's api-ref (domains.inc, projects.inc): each resource has
``links.self``; a top-level project's ``parent_id`` is its domain; a domain
must be disabled before it is deleted.
"""

from __future__ import annotations

import re

from .client import UNAUTHORIZED, V3, KeystoneClient

HEX32 = re.compile(r"^[0-9a-f]{32}$")


async def test_domain_lifecycle(api: KeystoneClient):
    r = await api.as_admin("POST", "/v3/domains", json={"domain": {
        "name": "acme", "description": "Acme Corp", "color": "blue"}})
    assert r.status_code == 201
    domain = r.json()["domain"]
    assert HEX32.match(domain["id"])
    assert domain == {"id": domain["id"], "name": "acme", "description": "Acme Corp",
                      "enabled": True, "color": "blue", "tags": [], "options": {},
                      "links": {"self": f"{V3}/domains/{domain['id']}"}}

    r = await api.as_admin("GET", f"/v3/domains/{domain['id']}", expect=200)
    assert r.json() == {"domain": domain}

    r = await api.as_admin("PATCH", f"/v3/domains/{domain['id']}", json={"domain": {
        "name": "acme-2", "description": "renamed"}}, expect=200)
    assert r.json()["domain"]["name"] == "acme-2"
    assert r.json()["domain"]["description"] == "renamed"
    assert r.json()["domain"]["color"] == "blue"

    r = await api.as_admin("DELETE", f"/v3/domains/{domain['id']}")
    assert r.status_code == 403
    assert r.json()["error"] == {"code": 403, "title": "Forbidden", "message":
                                 "Cannot delete a domain that is enabled, please disable it "
                                 "first."}
    await api.as_admin("PATCH", f"/v3/domains/{domain['id']}",
                       json={"domain": {"enabled": False}}, expect=200)
    r = await api.as_admin("DELETE", f"/v3/domains/{domain['id']}", expect=204)
    assert r.content == b""
    r = await api.as_admin("GET", f"/v3/domains/{domain['id']}", expect=404)
    assert r.json()["error"]["code"] == 404
    assert r.json()["error"]["title"] == "Not Found"


async def test_domain_list_and_filters(api: KeystoneClient):
    await api.as_admin("POST", "/v3/domains", json={"domain": {"name": "on"}}, expect=201)
    await api.as_admin("POST", "/v3/domains", json={"domain": {"name": "off", "enabled": False}},
                       expect=201)
    r = await api.as_admin("GET", "/v3/domains", expect=200)
    body = r.json()
    assert sorted(d["name"] for d in body["domains"]) == ["Default", "off", "on"]
    assert body["links"] == {"self": f"{V3}/domains", "previous": None, "next": None}
    r = await api.as_admin("GET", "/v3/domains?enabled=false", expect=200)
    assert [d["name"] for d in r.json()["domains"]] == ["off"]
    r = await api.as_admin("GET", "/v3/domains?name=on", expect=200)
    assert [d["name"] for d in r.json()["domains"]] == ["on"]
    assert r.json()["links"]["self"] == f"{V3}/domains?name=on"


async def test_the_default_domain_stays_enabled(api: KeystoneClient):
    r = await api.as_admin("PATCH", "/v3/domains/default", json={"domain": {"enabled": False}})
    assert r.status_code == 403
    assert (await api.login("demo", project="demo")).status_code == 201


async def test_deleting_a_domain_deletes_what_is_in_it(api: KeystoneClient):
    r = await api.as_admin("POST", "/v3/domains", json={"domain": {"name": "gone"}}, expect=201)
    domain_id = r.json()["domain"]["id"]
    r = await api.as_admin("POST", "/v3/projects", json={"project": {
        "name": "p", "domain_id": domain_id}}, expect=201)
    project_id = r.json()["project"]["id"]
    r = await api.as_admin("POST", "/v3/users", json={"user": {
        "name": "u", "domain_id": domain_id, "password": "pw"}}, expect=201)
    user_id = r.json()["user"]["id"]
    r = await api.as_admin("POST", "/v3/groups", json={"group": {
        "name": "g", "domain_id": domain_id}}, expect=201)
    group_id = r.json()["group"]["id"]
    member = await api.id_of("roles", "member")
    await api.as_admin("PUT", f"/v3/projects/{project_id}/users/{user_id}/roles/{member}",
                       expect=204)
    token = await api.token("u", "pw", project="p", user_domain=domain_id)

    await api.as_admin("PATCH", f"/v3/domains/{domain_id}", json={"domain": {"enabled": False}},
                       expect=200)
    assert (await api.get("/v3/auth/projects", token)).status_code == 401
    await api.as_admin("DELETE", f"/v3/domains/{domain_id}", expect=204)
    for path in (f"/v3/projects/{project_id}", f"/v3/users/{user_id}",
                 f"/v3/groups/{group_id}"):
        await api.as_admin("GET", path, expect=404)
    r = await api.as_admin("GET", f"/v3/role_assignments?user.id={user_id}", expect=200)
    assert r.json()["role_assignments"] == []


async def test_disabled_domain_refuses_its_users(api: KeystoneClient):
    r = await api.as_admin("POST", "/v3/domains", json={"domain": {"name": "d"}}, expect=201)
    domain_id = r.json()["domain"]["id"]
    await api.as_admin("POST", "/v3/users", json={"user": {
        "name": "u", "domain_id": domain_id, "password": "pw"}}, expect=201)
    assert (await api.login("u", "pw", user_domain=domain_id)).status_code == 201
    await api.as_admin("PATCH", f"/v3/domains/{domain_id}", json={"domain": {"enabled": False}},
                       expect=200)
    r = await api.login("u", "pw", user_domain=domain_id)
    assert r.status_code == 401
    assert r.json() == UNAUTHORIZED


async def test_project_lifecycle(api: KeystoneClient):
    r = await api.as_admin("POST", "/v3/projects", json={"project": {
        "name": "web", "description": "The web team", "tags": ["a", "b"], "owner": "ops"}})
    assert r.status_code == 201, r.text
    project = r.json()["project"]
    assert project == {"id": project["id"], "name": "web", "description": "The web team",
                       "domain_id": "default", "parent_id": "default", "enabled": True,
                       "is_domain": False, "tags": ["a", "b"], "options": {}, "owner": "ops",
                       "links": {"self": f"{V3}/projects/{project['id']}"}}
    r = await api.as_admin("GET", f"/v3/projects/{project['id']}", expect=200)
    assert r.json() == {"project": project}

    r = await api.as_admin("PATCH", f"/v3/projects/{project['id']}", json={"project": {
        "name": "www", "enabled": False, "tags": ["c"]}}, expect=200)
    updated = r.json()["project"]
    assert (updated["name"], updated["enabled"], updated["tags"]) == ("www", False, ["c"])
    assert updated["description"] == "The web team"
    r = await api.as_admin("GET", f"/v3/projects/{project['id']}", expect=200)
    assert r.json()["project"] == updated

    r = await api.as_admin("DELETE", f"/v3/projects/{project['id']}", expect=204)
    assert r.content == b""
    await api.as_admin("GET", f"/v3/projects/{project['id']}", expect=404)
    await api.as_admin("DELETE", f"/v3/projects/{project['id']}", expect=404)


async def test_project_list_filters(api: KeystoneClient):
    r = await api.as_admin("POST", "/v3/domains", json={"domain": {"name": "other"}}, expect=201)
    other = r.json()["domain"]["id"]
    for body in ({"name": "p1", "tags": ["x"]}, {"name": "p2", "enabled": False},
                 {"name": "p3", "domain_id": other}):
        await api.as_admin("POST", "/v3/projects", json={"project": body}, expect=201)

    async def names(query: str) -> list[str]:
        r = await api.as_admin("GET", f"/v3/projects{query}", expect=200)
        return sorted(p["name"] for p in r.json()["projects"])

    assert await names("") == ["admin", "alt_demo", "demo", "p1", "p2", "p3", "service"]
    assert await names("?domain_id=default") == ["admin", "alt_demo", "demo", "p1", "p2", "service"]
    assert await names(f"?domain_id={other}") == ["p3"]
    assert await names("?name=p1") == ["p1"]
    assert await names("?enabled=false") == ["p2"]
    assert await names("?tags=x") == ["p1"]
    assert await names(f"?parent_id={other}") == ["p3"]
    assert await names("?is_domain=true") == []
    r = await api.as_admin("GET", "/v3/projects?name=p1", expect=200)
    assert r.json()["links"] == {"self": f"{V3}/projects?name=p1", "previous": None,
                                 "next": None}


async def test_project_hierarchy(api: KeystoneClient):
    r = await api.as_admin("POST", "/v3/projects", json={"project": {"name": "parent"}},
                           expect=201)
    parent = r.json()["project"]
    r = await api.as_admin("POST", "/v3/projects", json={"project": {
        "name": "child", "parent_id": parent["id"]}}, expect=201)
    child = r.json()["project"]
    assert child["parent_id"] == parent["id"]
    assert child["domain_id"] == "default"
    r = await api.as_admin("GET", f"/v3/projects?parent_id={parent['id']}", expect=200)
    assert [p["name"] for p in r.json()["projects"]] == ["child"]

    r = await api.as_admin("DELETE", f"/v3/projects/{parent['id']}")
    assert r.status_code == 403
    assert r.json()["error"]["code"] == 403
    await api.as_admin("DELETE", f"/v3/projects/{child['id']}", expect=204)
    await api.as_admin("DELETE", f"/v3/projects/{parent['id']}", expect=204)


async def test_a_child_stays_in_its_parents_domain(api: KeystoneClient):
    r = await api.as_admin("POST", "/v3/domains", json={"domain": {"name": "elsewhere"}},
                           expect=201)
    other = r.json()["domain"]["id"]
    parent_id = await api.id_of("projects", "demo")
    r = await api.as_admin("POST", "/v3/projects", json={"project": {
        "name": "stray", "parent_id": parent_id, "domain_id": other}})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == 400
    r = await api.as_admin("POST", "/v3/projects", json={"project": {
        "name": "orphan", "parent_id": "f" * 32}})
    assert r.status_code == 404


async def test_project_domain_and_parent_cannot_change(api: KeystoneClient):
    project_id = await api.id_of("projects", "demo")
    for change in ({"domain_id": "other"}, {"parent_id": "other"}, {"is_domain": True}):
        r = await api.as_admin("PATCH", f"/v3/projects/{project_id}",
                               json={"project": change})
        assert r.status_code == 400, change


async def test_projects_acting_as_domains_are_refused(api: KeystoneClient):
    r = await api.as_admin("POST", "/v3/projects", json={"project": {
        "name": "dom", "is_domain": True}})
    assert r.status_code == 400
    assert r.json()["error"]["title"] == "Bad Request"


async def test_a_disabled_project_cannot_be_used(api: KeystoneClient):
    project_id = await api.id_of("projects", "demo")
    token = await api.token("demo", project="demo")
    await api.as_admin("PATCH", f"/v3/projects/{project_id}",
                       json={"project": {"enabled": False}}, expect=200)
    r = await api.get(f"/v3/projects/{project_id}", token)
    assert r.status_code == 401
    assert r.json() == UNAUTHORIZED
    assert (await api.login("demo", project="demo")).status_code == 401
    r = await api.get("/v3/auth/projects", await api.token("demo", unscoped=True))
    assert r.json()["projects"] == []


async def test_member_sees_own_project_but_not_others(api: KeystoneClient):
    token = await api.token("demo", project="demo")
    demo = await api.id_of("projects", "demo")
    alt = await api.id_of("projects", "alt_demo")
    r = await api.get(f"/v3/projects/{demo}", token)
    assert r.status_code == 200
    assert r.json()["project"]["name"] == "demo"
    assert (await api.get(f"/v3/projects/{alt}", token)).status_code == 403
    assert (await api.get("/v3/projects", token)).status_code == 403
