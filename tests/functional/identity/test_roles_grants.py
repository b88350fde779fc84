"""Roles, implied roles, grants on every actor and target, and ``/v3/role_assignments``.

Shapes from Keystone's api-ref (roles.inc, inherit.inc): grant calls answer
204 with no body; an implied-role rule is a ``role_inference`` with
``prior_role`` and ``implies``; role assignments carry ``links.assignment``
and, when listed effectively, ``membership`` and ``prior_role`` links.
"""

from __future__ import annotations

import re

import pytest

from .client import V3, KeystoneClient

HEX32 = re.compile(r"^[0-9a-f]{32}$")


def ref(role: dict) -> dict:
    return {"id": role["id"], "name": role["name"],
            "links": {"self": f"{V3}/roles/{role['id']}"}}


async def test_bootstrap_roles(api: KeystoneClient):
    r = await api.as_admin("GET", "/v3/roles", expect=200)
    roles = r.json()["roles"]
    assert sorted(role["name"] for role in roles) == ["admin", "member", "reader", "service"]
    for role in roles:
        assert role["domain_id"] is None
        assert role["options"] == {"immutable": True}
        assert role["links"] == {"self": f"{V3}/roles/{role['id']}"}
    assert r.json()["links"] == {"self": f"{V3}/roles", "previous": None, "next": None}


async def test_role_lifecycle(api: KeystoneClient):
    r = await api.as_admin("POST", "/v3/roles", json={"role": {
        "name": "auditor", "description": "Reads the books"}})
    assert r.status_code == 201, r.text
    role = r.json()["role"]
    assert HEX32.match(role["id"])
    assert role == {"id": role["id"], "name": "auditor", "description": "Reads the books",
                    "domain_id": None, "options": {},
                    "links": {"self": f"{V3}/roles/{role['id']}"}}
    r = await api.as_admin("GET", f"/v3/roles/{role['id']}", expect=200)
    assert r.json() == {"role": role}
    r = await api.as_admin("GET", "/v3/roles?name=auditor", expect=200)
    assert r.json()["roles"] == [role]
    r = await api.as_admin("PATCH", f"/v3/roles/{role['id']}", json={"role": {
        "name": "auditor2", "description": "new"}}, expect=200)
    assert (r.json()["role"]["name"], r.json()["role"]["description"]) == ("auditor2", "new")
    r = await api.as_admin("DELETE", f"/v3/roles/{role['id']}", expect=204)
    assert r.content == b""
    await api.as_admin("GET", f"/v3/roles/{role['id']}", expect=404)


async def test_immutable_roles_stay(api: KeystoneClient):
    admin = await api.id_of("roles", "admin")
    r = await api.as_admin("DELETE", f"/v3/roles/{admin}")
    assert r.status_code == 403
    assert r.json()["error"]["code"] == 403
    r = await api.as_admin("PATCH", f"/v3/roles/{admin}", json={"role": {"name": "boss"}})
    assert r.status_code == 403
    await api.as_admin("GET", f"/v3/roles/{admin}", expect=200)


async def test_domain_specific_roles(api: KeystoneClient):
    r = await api.as_admin("POST", "/v3/roles", json={"role": {
        "name": "member", "domain_id": "default"}}, expect=201)
    role = r.json()["role"]
    assert role["domain_id"] == "default"
    r = await api.as_admin("GET", "/v3/roles?domain_id=default", expect=200)
    assert [x["id"] for x in r.json()["roles"]] == [role["id"]]
    r = await api.as_admin("GET", "/v3/roles", expect=200)
    assert role["id"] not in {x["id"] for x in r.json()["roles"]}
    r = await api.as_admin("POST", "/v3/roles", json={"role": {
        "name": "x", "domain_id": "f" * 32}})
    assert r.status_code == 404


async def test_implied_roles(api: KeystoneClient):
    r = await api.as_admin("POST", "/v3/roles", json={"role": {"name": "auditor"}}, expect=201)
    auditor = r.json()["role"]
    reader = await api.find("roles", "reader")
    member = await api.find("roles", "member")
    admin = await api.find("roles", "admin")

    rule = f"/v3/roles/{auditor['id']}/implies/{reader['id']}"
    r = await api.as_admin("PUT", rule, expect=201)
    assert r.json() == {"role_inference": {"prior_role": ref(auditor), "implies": ref(reader)},
                        "links": {"self": f"{V3}{rule[3:]}"}}
    r = await api.as_admin("GET", rule, expect=200)
    assert r.json()["role_inference"] == {"prior_role": ref(auditor), "implies": ref(reader)}
    r = await api.as_admin("HEAD", rule, expect=204)
    assert r.content == b""

    r = await api.as_admin("GET", f"/v3/roles/{admin['id']}/implies", expect=200)
    assert r.json()["role_inference"] == {"prior_role": ref(admin), "implies": [ref(member)]}

    r = await api.as_admin("GET", "/v3/role_inferences", expect=200)
    rules = {i["prior_role"]["name"]: sorted(x["name"] for x in i["implies"])
             for i in r.json()["role_inferences"]}
    assert rules == {"admin": ["member"], "member": ["reader"], "auditor": ["reader"]}

    r = await api.as_admin("PUT", f"/v3/roles/{reader['id']}/implies/{admin['id']}")
    assert r.status_code == 403  # reader -> admin -> member -> reader would be a loop
    r = await api.as_admin("PUT", f"/v3/roles/{admin['id']}/implies/{admin['id']}")
    assert r.status_code == 403

    await api.as_admin("DELETE", rule, expect=204)
    await api.as_admin("GET", rule, expect=404)
    await api.as_admin("HEAD", rule, expect=404)
    await api.as_admin("DELETE", rule, expect=404)
    await api.as_admin("PUT", f"/v3/roles/{auditor['id']}/implies/{'0' * 32}", expect=404)
    await api.as_admin("GET", f"/v3/roles/{'0' * 32}/implies", expect=404)


async def test_implied_roles_reach_tokens(api: KeystoneClient):
    r = await api.as_admin("POST", "/v3/roles", json={"role": {"name": "auditor"}}, expect=201)
    auditor = r.json()["role"]
    r = await api.as_admin("POST", "/v3/roles", json={"role": {"name": "viewer"}}, expect=201)
    viewer = r.json()["role"]
    user = await api.make_user("eve", project="demo", role="auditor")
    r = await api.login("eve", project="demo")
    assert [role["name"] for role in r.json()["token"]["roles"]] == ["auditor"]
    await api.as_admin("PUT", f"/v3/roles/{auditor['id']}/implies/{viewer['id']}", expect=201)
    r = await api.login("eve", project="demo")
    assert [role["name"] for role in r.json()["token"]["roles"]] == ["auditor", "viewer"]
    await api.as_admin("DELETE", f"/v3/roles/{auditor['id']}", expect=204)
    assert (await api.login("eve", project="demo")).status_code == 401
    r = await api.as_admin("GET", f"/v3/role_assignments?user.id={user['id']}", expect=200)
    assert r.json()["role_assignments"] == []


PATHS = {
    ("user", "project"): "/v3/projects/{target}/users/{actor}/roles",
    ("group", "project"): "/v3/projects/{target}/groups/{actor}/roles",
    ("user", "domain"): "/v3/domains/{target}/users/{actor}/roles",
    ("group", "domain"): "/v3/domains/{target}/groups/{actor}/roles",
    ("user", "system"): "/v3/system/users/{actor}/roles",
    ("group", "system"): "/v3/system/groups/{actor}/roles",
}


@pytest.mark.slow
async def test_grants_on_every_actor_and_target(api: KeystoneClient):
    user_id = (await api.make_user("granted"))["id"]
    r = await api.as_admin("POST", "/v3/groups", json={"group": {"name": "g"}}, expect=201)
    group_id = r.json()["group"]["id"]
    project_id = await api.id_of("projects", "alt_demo")
    reader = await api.find("roles", "reader")
    for (actor, target), template in PATHS.items():
        base = template.format(actor=user_id if actor == "user" else group_id,
                               target=project_id if target == "project" else "default")
        one = f"{base}/{reader['id']}"
        await api.as_admin("HEAD", one, expect=404)
        r = await api.as_admin("PUT", one, expect=204)
        assert r.content == b""
        await api.as_admin("PUT", one, expect=204)
        await api.as_admin("HEAD", one, expect=204)
        await api.as_admin("GET", one, expect=204)
        r = await api.as_admin("GET", base, expect=200)
        assert [role["id"] for role in r.json()["roles"]] == [reader["id"]], (actor, target)
        assert r.json()["roles"][0]["links"] == {"self": f"{V3}/roles/{reader['id']}"}
        assert r.json()["links"]["self"] == f"{V3}{base[3:]}"
        await api.as_admin("DELETE", one, expect=204)
        await api.as_admin("HEAD", one, expect=404)
        await api.as_admin("DELETE", one, expect=404)
        r = await api.as_admin("GET", base, expect=200)
        assert r.json()["roles"] == []


async def test_grants_with_unknown_parts_are_404(api: KeystoneClient):
    user_id = await api.id_of("users", "demo")
    project_id = await api.id_of("projects", "demo")
    reader = await api.id_of("roles", "reader")
    nobody = "0" * 32
    for path in (f"/v3/projects/{nobody}/users/{user_id}/roles/{reader}",
                 f"/v3/projects/{project_id}/users/{nobody}/roles/{reader}",
                 f"/v3/projects/{project_id}/users/{user_id}/roles/{nobody}",
                 f"/v3/projects/{project_id}/groups/{nobody}/roles/{reader}",
                 f"/v3/domains/{nobody}/users/{user_id}/roles/{reader}",
                 f"/v3/system/users/{nobody}/roles/{reader}"):
        r = await api.as_admin("PUT", path)
        assert r.status_code == 404, path
        assert r.json()["error"]["code"] == 404
    await api.as_admin("GET", f"/v3/projects/{nobody}/users/{user_id}/roles", expect=404)


async def test_inherited_grants_reach_projects_below(api: KeystoneClient):
    user = await api.make_user("heir")
    reader = await api.find("roles", "reader")
    r = await api.as_admin("POST", "/v3/projects", json={"project": {"name": "top"}}, expect=201)
    top = r.json()["project"]["id"]
    await api.as_admin("POST", "/v3/projects", json={"project": {
        "name": "below", "parent_id": top}}, expect=201)

    on_top = f"/v3/OS-INHERIT/projects/{top}/users/{user['id']}/roles/{reader['id']}" \
             "/inherited_to_projects"
    await api.as_admin("PUT", on_top, expect=204)
    await api.as_admin("HEAD", on_top, expect=204)
    assert (await api.login("heir", "secret-1", project="top")).status_code == 401
    r = await api.login("heir", "secret-1", project="below")
    assert r.status_code == 201
    assert [role["name"] for role in r.json()["token"]["roles"]] == ["reader"]
    r = await api.as_admin("GET", f"/v3/OS-INHERIT/projects/{top}/users/{user['id']}/roles"
                           "/inherited_to_projects", expect=200)
    assert [role["name"] for role in r.json()["roles"]] == ["reader"]
    await api.as_admin("DELETE", on_top, expect=204)
    assert (await api.login("heir", "secret-1", project="below")).status_code == 401

    on_domain = f"/v3/OS-INHERIT/domains/default/users/{user['id']}/roles/{reader['id']}" \
                "/inherited_to_projects"
    await api.as_admin("PUT", on_domain, expect=204)
    for project in ("demo", "top", "below"):
        assert (await api.login("heir", "secret-1", project=project)).status_code == 201
    assert (await api.login("heir", "secret-1", domain="default")).status_code == 401
    r = await api.as_admin("GET", f"/v3/role_assignments?user.id={user['id']}", expect=200)
    (assignment,) = r.json()["role_assignments"]
    assert assignment == {
        "role": {"id": reader["id"]}, "user": {"id": user["id"]},
        "scope": {"domain": {"id": "default"}, "OS-INHERIT:inherited_to": "projects"},
        "links": {"assignment": f"{V3}/OS-INHERIT/domains/default/users/{user['id']}"
                                f"/roles/{reader['id']}/inherited_to_projects"}}
    r = await api.as_admin("GET", "/v3/role_assignments?scope.OS-INHERIT:inherited_to=projects",
                           expect=200)
    assert len(r.json()["role_assignments"]) == 1


async def test_inherited_grants_to_groups(api: KeystoneClient):
    user = await api.make_user("via-group")
    r = await api.as_admin("POST", "/v3/groups", json={"group": {"name": "heirs"}}, expect=201)
    group_id = r.json()["group"]["id"]
    await api.as_admin("PUT", f"/v3/groups/{group_id}/users/{user['id']}", expect=204)
    reader = await api.id_of("roles", "reader")
    project_id = await api.id_of("projects", "demo")
    r = await api.as_admin("POST", "/v3/projects", json={"project": {
        "name": "sub", "parent_id": project_id}}, expect=201)
    for target, login in (("domains/default", "alt_demo"), (f"projects/{project_id}", "sub")):
        base = f"/v3/OS-INHERIT/{target}/groups/{group_id}/roles"
        one = f"{base}/{reader}/inherited_to_projects"
        await api.as_admin("HEAD", one, expect=404)
        await api.as_admin("PUT", one, expect=204)
        await api.as_admin("GET", one, expect=204)
        r = await api.as_admin("GET", f"{base}/inherited_to_projects", expect=200)
        assert [role["id"] for role in r.json()["roles"]] == [reader]
        assert (await api.login("via-group", "secret-1", project=login)).status_code == 201
        await api.as_admin("DELETE", one, expect=204)
        assert (await api.login("via-group", "secret-1", project=login)).status_code == 401


async def test_role_assignments_listing(api: KeystoneClient):
    admin_id = await api.id_of("users", "admin")
    demo_id = await api.id_of("users", "demo")
    demo_project = await api.id_of("projects", "demo")
    admin_role = await api.id_of("roles", "admin")
    member_role = await api.id_of("roles", "member")

    r = await api.as_admin("GET", "/v3/role_assignments", expect=200)
    body = r.json()
    assert body["links"] == {"self": f"{V3}/role_assignments", "previous": None, "next": None}
    assignments = body["role_assignments"]
    assert len(assignments) == 5  # admin on admin and on the system, demo, alt_demo, nova
    assert {"role": {"id": admin_role}, "user": {"id": admin_id},
            "scope": {"system": {"all": True}},
            "links": {"assignment": f"{V3}/system/users/{admin_id}/roles/{admin_role}"}
            } in assignments

    r = await api.as_admin("GET", f"/v3/role_assignments?scope.project.id={demo_project}",
                           expect=200)
    assert r.json()["role_assignments"] == [{
        "role": {"id": member_role}, "user": {"id": demo_id},
        "scope": {"project": {"id": demo_project}},
        "links": {"assignment": f"{V3}/projects/{demo_project}/users/{demo_id}"
                                f"/roles/{member_role}"}}]
    r = await api.as_admin("GET", f"/v3/role_assignments?user.id={admin_id}", expect=200)
    assert len(r.json()["role_assignments"]) == 2
    r = await api.as_admin("GET", "/v3/role_assignments?scope.system=all", expect=200)
    assert [a["user"]["id"] for a in r.json()["role_assignments"]] == [admin_id]
    r = await api.as_admin("GET", f"/v3/role_assignments?role.id={member_role}", expect=200)
    assert len(r.json()["role_assignments"]) == 2


async def test_role_assignments_with_names(api: KeystoneClient):
    demo_project = await api.id_of("projects", "demo")
    r = await api.as_admin("GET", f"/v3/role_assignments?scope.project.id={demo_project}"
                           "&include_names", expect=200)
    (assignment,) = r.json()["role_assignments"]
    default = {"id": "default", "name": "Default"}
    assert assignment["role"]["name"] == "member"
    assert assignment["user"]["name"] == "demo"
    assert assignment["user"]["domain"] == default
    assert assignment["scope"]["project"] == {"id": demo_project, "name": "demo",
                                              "domain": default}


async def test_effective_role_assignments(api: KeystoneClient):
    user = await api.make_user("eff")
    r = await api.as_admin("POST", "/v3/groups", json={"group": {"name": "crew"}}, expect=201)
    group_id = r.json()["group"]["id"]
    project_id = await api.id_of("projects", "alt_demo")
    member = await api.id_of("roles", "member")
    reader = await api.id_of("roles", "reader")
    await api.as_admin("PUT", f"/v3/groups/{group_id}/users/{user['id']}", expect=204)
    await api.as_admin("PUT", f"/v3/projects/{project_id}/groups/{group_id}/roles/{member}",
                       expect=204)

    r = await api.as_admin("GET", f"/v3/role_assignments?user.id={user['id']}", expect=200)
    assert r.json()["role_assignments"] == []
    r = await api.as_admin("GET", f"/v3/role_assignments?user.id={user['id']}&effective",
                           expect=200)
    found = {a["role"]["id"]: a for a in r.json()["role_assignments"]}
    assert set(found) == {member, reader}
    grant_link = f"{V3}/projects/{project_id}/groups/{group_id}/roles/{member}"
    membership = f"{V3}/groups/{group_id}/users/{user['id']}"
    assert found[member] == {
        "role": {"id": member}, "user": {"id": user["id"]},
        "scope": {"project": {"id": project_id}},
        "links": {"assignment": grant_link.replace(f"groups/{group_id}",
                                                   f"users/{user['id']}"),
                  "membership": membership}}
    assert found[reader]["links"]["prior_role"] == f"{V3}/roles/{member}"
    assert found[reader]["links"]["membership"] == membership
    assert "group" not in found[reader]


async def test_a_member_lists_assignments_of_their_project_only(api: KeystoneClient):
    token = await api.token("demo", project="demo")
    demo_project = await api.id_of("projects", "demo")
    alt_project = await api.id_of("projects", "alt_demo")
    r = await api.get(f"/v3/role_assignments?scope.project.id={demo_project}", token)
    assert r.status_code == 200
    assert len(r.json()["role_assignments"]) == 1
    r = await api.get(f"/v3/role_assignments?scope.project.id={alt_project}", token)
    assert r.status_code == 403
    assert (await api.get("/v3/role_assignments", token)).status_code == 403
