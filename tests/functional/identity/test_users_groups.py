"""Users, groups, memberships and passwords.

Shapes from Keystone's api-ref (users.inc, groups.inc): a user never shows
its password; ``password_expires_at`` is null unless passwords expire;
membership calls answer 204; changing one's own password needs the
original and needs no token.
"""

from __future__ import annotations

import re

from .client import UNAUTHORIZED, V3, KeystoneClient

HEX32 = re.compile(r"^[0-9a-f]{32}$")


async def test_user_lifecycle(api: KeystoneClient):
    project_id = await api.id_of("projects", "demo")
    r = await api.as_admin("POST", "/v3/users", json={"user": {
        "name": "alice", "password": "s3cret", "email": "alice@example.com",
        "default_project_id": project_id, "description": "first"}})
    assert r.status_code == 201, r.text
    user = r.json()["user"]
    assert HEX32.match(user["id"])
    assert user == {"id": user["id"], "name": "alice", "domain_id": "default", "enabled": True,
                    "email": "alice@example.com", "description": "first",
                    "default_project_id": project_id, "password_expires_at": None,
                    "options": {}, "links": {"self": f"{V3}/users/{user['id']}"}}
    r = await api.as_admin("GET", f"/v3/users/{user['id']}", expect=200)
    assert r.json() == {"user": user}

    r = await api.as_admin("PATCH", f"/v3/users/{user['id']}", json={"user": {
        "name": "alice2", "email": "a2@example.com", "enabled": False}}, expect=200)
    updated = r.json()["user"]
    assert (updated["name"], updated["email"], updated["enabled"]) == (
        "alice2", "a2@example.com", False)
    assert "password" not in updated

    r = await api.as_admin("DELETE", f"/v3/users/{user['id']}", expect=204)
    assert r.content == b""
    await api.as_admin("GET", f"/v3/users/{user['id']}", expect=404)
    await api.as_admin("PATCH", f"/v3/users/{user['id']}", json={"user": {"name": "x"}},
                       expect=404)
    await api.as_admin("DELETE", f"/v3/users/{user['id']}", expect=404)


async def test_user_list_and_filters(api: KeystoneClient):
    await api.make_user("zed", enabled=False)
    r = await api.as_admin("GET", "/v3/users", expect=200)
    body = r.json()
    assert sorted(u["name"] for u in body["users"]) == ["admin", "alt_demo", "demo", "nova", "zed"]
    assert body["links"] == {"self": f"{V3}/users", "previous": None, "next": None}
    for user in body["users"]:
        assert "password" not in user
        assert user["links"] == {"self": f"{V3}/users/{user['id']}"}
    r = await api.as_admin("GET", "/v3/users?enabled=false", expect=200)
    assert [u["name"] for u in r.json()["users"]] == ["zed"]
    r = await api.as_admin("GET", "/v3/users?name=demo&domain_id=default", expect=200)
    assert [u["name"] for u in r.json()["users"]] == ["demo"]
    r = await api.as_admin("GET", "/v3/users?domain_id=nowhere", expect=200)
    assert r.json()["users"] == []


async def test_a_user_reads_themself_but_not_others(api: KeystoneClient):
    token = await api.token("demo", project="demo")
    me = await api.id_of("users", "demo")
    other = await api.id_of("users", "alt_demo")
    r = await api.get(f"/v3/users/{me}", token)
    assert r.status_code == 200
    assert r.json()["user"]["name"] == "demo"
    assert (await api.get(f"/v3/users/{other}", token)).status_code == 403
    unscoped = await api.token("demo", unscoped=True)
    assert (await api.get(f"/v3/users/{me}", unscoped)).status_code == 200


async def test_deleting_a_user_ends_their_tokens(api: KeystoneClient):
    user = await api.make_user("temp", project="demo")
    token = await api.token("temp", project="demo")
    await api.as_admin("DELETE", f"/v3/users/{user['id']}", expect=204)
    r = await api.get("/v3/auth/projects", token)
    assert r.status_code == 401
    assert r.json() == UNAUTHORIZED


async def test_admin_sets_a_new_password(api: KeystoneClient):
    user = await api.make_user("bob", "old-pass", project="demo")
    token = await api.token("bob", project="demo")
    await api.as_admin("PATCH", f"/v3/users/{user['id']}", json={"user": {
        "password": "new-pass"}}, expect=200)
    assert (await api.get("/v3/auth/projects", token)).status_code == 401
    assert (await api.login("bob", "old-pass")).status_code == 401
    assert (await api.login("bob", "new-pass", project="demo")).status_code == 201


async def test_change_own_password(api: KeystoneClient):
    user = await api.make_user("carol", "first-pass", project="demo")
    path = f"/v3/users/{user['id']}/password"
    r = await api.post(path, json={"user": {"original_password": "wrong",
                                            "password": "second-pass"}})
    assert r.status_code == 401
    assert r.json() == UNAUTHORIZED
    r = await api.post(path, json={"user": {"original_password": "first-pass",
                                            "password": "second-pass"}})
    assert r.status_code == 204
    assert r.content == b""
    assert (await api.login("carol", "first-pass")).status_code == 401
    assert (await api.login("carol", "second-pass", project="demo")).status_code == 201


async def test_change_password_of_an_unknown_user_is_the_same_401(api: KeystoneClient):
    r = await api.post("/v3/users/" + "0" * 32 + "/password", json={"user": {
        "original_password": "x", "password": "y"}})
    assert r.status_code == 401
    assert r.json() == UNAUTHORIZED


async def test_change_password_needs_both_fields(api: KeystoneClient):
    user_id = await api.id_of("users", "demo")
    for body in ({"user": {"password": "x"}}, {"user": {"original_password": "x"}},
                 {"user": {"original_password": api.passwords["demo"], "password": ""}}):
        r = await api.post(f"/v3/users/{user_id}/password", json=body)
        assert r.status_code == 400, body
        assert r.json()["error"]["code"] == 400


async def test_user_without_password_cannot_log_in(api: KeystoneClient):
    r = await api.as_admin("POST", "/v3/users", json={"user": {"name": "nopw"}}, expect=201)
    assert r.json()["user"]["password_expires_at"] is None
    for password in ("", "anything"):
        r = await api.login("nopw", password)
        assert r.status_code == 401
        assert r.json() == UNAUTHORIZED


async def test_user_projects(api: KeystoneClient):
    user_id = await api.id_of("users", "demo")
    token = await api.token("demo", project="demo")
    r = await api.get(f"/v3/users/{user_id}/projects", token)
    assert r.status_code == 200
    assert [p["name"] for p in r.json()["projects"]] == ["demo"]
    assert r.json()["links"]["self"] == f"{V3}/users/{user_id}/projects"
    other = await api.id_of("users", "alt_demo")
    assert (await api.get(f"/v3/users/{other}/projects", token)).status_code == 403
    await api.as_admin("GET", f"/v3/users/{'0' * 32}/projects", expect=404)


async def test_group_lifecycle(api: KeystoneClient):
    r = await api.as_admin("POST", "/v3/groups", json={"group": {
        "name": "devs", "description": "Developers"}})
    assert r.status_code == 201, r.text
    group = r.json()["group"]
    assert group == {"id": group["id"], "name": "devs", "description": "Developers",
                     "domain_id": "default", "links": {"self": f"{V3}/groups/{group['id']}"}}
    r = await api.as_admin("GET", f"/v3/groups/{group['id']}", expect=200)
    assert r.json() == {"group": group}
    r = await api.as_admin("GET", "/v3/groups", expect=200)
    assert [g["name"] for g in r.json()["groups"]] == ["devs"]
    assert r.json()["links"] == {"self": f"{V3}/groups", "previous": None, "next": None}
    r = await api.as_admin("GET", "/v3/groups?name=nope", expect=200)
    assert r.json()["groups"] == []
    r = await api.as_admin("PATCH", f"/v3/groups/{group['id']}", json={"group": {
        "name": "developers", "description": "All developers"}}, expect=200)
    assert r.json()["group"]["name"] == "developers"
    assert r.json()["group"]["description"] == "All developers"
    r = await api.as_admin("DELETE", f"/v3/groups/{group['id']}", expect=204)
    assert r.content == b""
    await api.as_admin("GET", f"/v3/groups/{group['id']}", expect=404)


async def test_group_membership(api: KeystoneClient):
    r = await api.as_admin("POST", "/v3/groups", json={"group": {"name": "ops"}}, expect=201)
    group_id = r.json()["group"]["id"]
    user_id = await api.id_of("users", "demo")
    member = f"/v3/groups/{group_id}/users/{user_id}"
    await api.as_admin("HEAD", member, expect=404)
    r = await api.as_admin("PUT", member, expect=204)
    assert r.content == b""
    await api.as_admin("PUT", member, expect=204)  # again: still a member, no error
    await api.as_admin("HEAD", member, expect=204)
    await api.as_admin("GET", member, expect=204)

    r = await api.as_admin("GET", f"/v3/groups/{group_id}/users", expect=200)
    assert [u["name"] for u in r.json()["users"]] == ["demo"]
    assert r.json()["links"]["self"] == f"{V3}/groups/{group_id}/users"
    r = await api.as_admin("GET", f"/v3/users/{user_id}/groups", expect=200)
    assert [g["name"] for g in r.json()["groups"]] == ["ops"]
    own = await api.get(f"/v3/users/{user_id}/groups", await api.token("demo", project="demo"))
    assert own.status_code == 200
    assert [g["name"] for g in own.json()["groups"]] == ["ops"]

    await api.as_admin("DELETE", member, expect=204)
    await api.as_admin("HEAD", member, expect=404)
    await api.as_admin("DELETE", member, expect=404)
    await api.as_admin("PUT", f"/v3/groups/{group_id}/users/{'0' * 32}", expect=404)
    await api.as_admin("PUT", f"/v3/groups/{'0' * 32}/users/{user_id}", expect=404)
    await api.as_admin("GET", f"/v3/groups/{'0' * 32}/users", expect=404)


async def test_roles_through_a_group(api: KeystoneClient):
    user = await api.make_user("grouped")
    r = await api.as_admin("POST", "/v3/groups", json={"group": {"name": "team"}}, expect=201)
    group_id = r.json()["group"]["id"]
    project_id = await api.id_of("projects", "alt_demo")
    reader = await api.id_of("roles", "reader")
    await api.as_admin("PUT", f"/v3/groups/{group_id}/users/{user['id']}", expect=204)
    await api.as_admin("PUT", f"/v3/projects/{project_id}/groups/{group_id}/roles/{reader}",
                       expect=204)
    r = await api.login("grouped", project="alt_demo")
    assert r.status_code == 201, r.text
    assert [role["name"] for role in r.json()["token"]["roles"]] == ["reader"]
    token = r.headers["X-Subject-Token"]

    await api.as_admin("DELETE", f"/v3/groups/{group_id}/users/{user['id']}", expect=204)
    assert (await api.get("/v3/auth/projects", token)).status_code == 401
    assert (await api.login("grouped", project="alt_demo")).status_code == 401

    await api.as_admin("PUT", f"/v3/groups/{group_id}/users/{user['id']}", expect=204)
    token = await api.token("grouped", project="alt_demo")
    await api.as_admin("DELETE", f"/v3/groups/{group_id}", expect=204)
    assert (await api.get("/v3/auth/projects", token)).status_code == 401
