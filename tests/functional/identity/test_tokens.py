"""Tokens: issue, validate, check, revoke and rescope, and what a token may reach.

Covers ``/identity``, ``/identity/v3``, ``/v3/auth/tokens`` (POST, GET, HEAD,
DELETE) and ``/v3/auth/{projects,domains,system,catalog}``, with the shapes
of Keystone's api-ref (authenticate-v3.inc). Revocation that must outlive a
restart, key rotation and the events that end a token early (disabled user,
lost role, changed password) are here too.
"""

from __future__ import annotations

import datetime as dt
import re

from .client import BASE_URL, UNAUTHORIZED, V3, Clock, KeystoneClient, client_for

TIME = "%Y-%m-%dT%H:%M:%S.%fZ"
HEX32 = re.compile(r"^[0-9a-f]{32}$")
AUDIT_ID = re.compile(r"^[A-Za-z0-9_-]{22}$")


def parse(value: str) -> dt.datetime:
    return dt.datetime.strptime(value, TIME)


def assert_identity_catalog(catalog: list[dict], api: KeystoneClient) -> None:
    """The catalog names the identity service on all three interfaces in RegionOne."""
    identity = [entry for entry in catalog if entry["type"] == "identity"]
    assert len(identity) == 1, catalog
    entry = identity[0]
    assert entry["name"] == "keystone"
    assert HEX32.match(entry["id"])
    assert sorted(e["interface"] for e in entry["endpoints"]) == ["admin", "internal", "public"]
    for endpoint in entry["endpoints"]:
        assert endpoint.keys() == {"id", "interface", "region_id", "region", "url"}
        assert endpoint["url"] == f"{api.cloud.settings.base_url}/identity"
        assert endpoint["region_id"] == endpoint["region"] == "RegionOne"
        assert HEX32.match(endpoint["id"])


# -- version documents ----------------------------------------------------------


async def test_version_list_is_a_300_with_v3(api: KeystoneClient):
    r = await api.http.get(BASE_URL)
    assert r.status_code == 300
    assert r.headers["content-type"] == "application/json"
    assert re.match(r"^req-[0-9a-f-]{36}$", r.headers["x-openstack-request-id"])
    (version,) = r.json()["versions"]["values"]
    assert version["id"].startswith("v3.")
    assert version["status"] == "stable"
    assert version["links"] == [{"rel": "self", "href": f"{V3}/"}]
    assert version["media-types"] == [
        {"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}]
    assert (await api.get("/")).json() == r.json()


async def test_v3_version_document(api: KeystoneClient):
    for path in ("/v3", "/v3/"):
        r = await api.get(path)
        assert r.status_code == 200
        version = r.json()["version"]
        assert version["status"] == "stable"
        assert version["links"] == [{"rel": "self", "href": f"{V3}/"}]
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", version["updated"])


# -- issuing ----------------------------------------------------------------------


async def test_password_token_scoped_to_a_project(api: KeystoneClient):
    before = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, microsecond=0)
    r = await api.login("admin", project="admin")
    assert r.status_code == 201
    assert r.headers["content-type"] == "application/json"
    assert r.headers["x-openstack-request-id"].startswith("req-")
    token_id = r.headers["X-Subject-Token"]
    assert token_id and len(token_id) <= 1024  # what the API accepts back
    token = r.json()["token"]
    assert token["methods"] == ["password"]
    assert token["user"]["name"] == "admin"
    assert token["user"]["domain"] == {"id": "default", "name": "Default"}
    assert token["user"]["password_expires_at"] is None
    assert HEX32.match(token["user"]["id"])
    assert len(token["audit_ids"]) == 1 and AUDIT_ID.match(token["audit_ids"][0])
    issued, expires = parse(token["issued_at"]), parse(token["expires_at"])
    assert before <= issued <= before + dt.timedelta(seconds=60)
    assert dt.timedelta(seconds=3599) <= expires - issued <= dt.timedelta(seconds=3600)
    assert token["project"]["name"] == "admin"
    assert token["project"]["domain"] == {"id": "default", "name": "Default"}
    assert token["is_domain"] is False
    assert sorted(role["name"] for role in token["roles"]) == ["admin", "member", "reader"]
    assert all(role.keys() == {"id", "name"} for role in token["roles"])
    assert "domain" not in token and "system" not in token
    assert_identity_catalog(token["catalog"], api)


async def test_user_and_project_by_id(api: KeystoneClient):
    user_id = await api.id_of("users", "demo")
    project_id = await api.id_of("projects", "demo")
    body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "id": user_id, "password": api.passwords["demo"]}}},
        "scope": {"project": {"id": project_id}}}}
    r = await api.post("/v3/auth/tokens", json=body)
    assert r.status_code == 201, r.text
    token = r.json()["token"]
    assert token["user"]["id"] == user_id
    assert token["project"] == {"id": project_id, "name": "demo",
                                "domain": {"id": "default", "name": "Default"}}
    assert sorted(role["name"] for role in token["roles"]) == ["member", "reader"]


async def test_user_domain_by_name(api: KeystoneClient):
    body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": "demo", "domain": {"name": "Default"}, "password": api.passwords["demo"]}}},
        "scope": {"project": {"name": "demo", "domain": {"name": "Default"}}}}}
    r = await api.post("/v3/auth/tokens", json=body)
    assert r.status_code == 201, r.text
    assert r.json()["token"]["project"]["name"] == "demo"


async def test_no_scope_means_the_default_project(api: KeystoneClient):
    r = await api.login("demo")
    assert r.status_code == 201
    assert r.json()["token"]["project"]["name"] == "demo"


async def test_explicitly_unscoped_token_has_no_roles_or_catalog(api: KeystoneClient):
    r = await api.login("admin", unscoped=True)
    assert r.status_code == 201
    token = r.json()["token"]
    assert token.keys() == {"methods", "user", "audit_ids", "expires_at", "issued_at"}


async def test_user_without_default_project_gets_an_unscoped_token(api: KeystoneClient):
    await api.make_user("loner", project="demo")
    r = await api.login("loner")
    assert r.status_code == 201
    assert "project" not in r.json()["token"]
    assert "catalog" not in r.json()["token"]


async def test_domain_scoped_token(api: KeystoneClient):
    user = await api.make_user("domain-admin")
    admin_role = await api.id_of("roles", "admin")
    await api.as_admin("PUT", f"/v3/domains/default/users/{user['id']}/roles/{admin_role}",
                       expect=204)
    r = await api.login("domain-admin", domain="default")
    assert r.status_code == 201, r.text
    token = r.json()["token"]
    assert token["domain"] == {"id": "default", "name": "Default"}
    assert "project" not in token and "is_domain" not in token
    assert sorted(role["name"] for role in token["roles"]) == ["admin", "member", "reader"]
    assert_identity_catalog(token["catalog"], api)


async def test_system_scoped_token(api: KeystoneClient):
    r = await api.login("admin", system=True)
    assert r.status_code == 201, r.text
    token = r.json()["token"]
    assert token["system"] == {"all": True}
    assert "project" not in token and "domain" not in token
    assert "admin" in {role["name"] for role in token["roles"]}
    assert_identity_catalog(token["catalog"], api)


async def test_scope_without_a_role_there_is_refused(api: KeystoneClient):
    for scope in ({"project": "admin"}, {"domain": "default"}, {"system": True}):
        r = await api.login("demo", **scope)
        assert r.status_code == 401, (scope, r.text)
        assert r.json() == UNAUTHORIZED


async def test_nocatalog_leaves_the_catalog_out(api: KeystoneClient):
    r = await api.login("demo", project="demo", query="?nocatalog")
    assert r.status_code == 201
    assert "catalog" not in r.json()["token"]
    assert r.json()["token"]["roles"]
    token = r.headers["X-Subject-Token"]
    validated = await api.validate(token, query="?nocatalog")
    assert validated.status_code == 200
    assert "catalog" not in validated.json()["token"]
    with_catalog = await api.validate(token)
    assert_identity_catalog(with_catalog.json()["token"]["catalog"], api)


# -- validating, checking, revoking --------------------------------------------------


async def test_validate_returns_the_token_and_its_catalog(api: KeystoneClient):
    issued = await api.login("demo", project="demo")
    subject = issued.headers["X-Subject-Token"]
    r = await api.validate(subject, await api.admin())
    assert r.status_code == 200
    assert r.headers["X-Subject-Token"] == subject
    assert r.json() == issued.json()
    assert_identity_catalog(r.json()["token"]["catalog"], api)


async def test_a_user_validates_their_own_token_but_not_anothers(api: KeystoneClient):
    demo = await api.token("demo", project="demo")
    alt = await api.token("alt_demo", project="alt_demo")
    assert (await api.validate(demo)).status_code == 200
    r = await api.validate(alt, demo)
    assert r.status_code == 403
    assert r.json()["error"]["code"] == 403
    assert r.json()["error"]["title"] == "Forbidden"


async def test_check_token_is_200_without_a_body(api: KeystoneClient):
    subject = await api.token("demo", project="demo")
    r = await api.head("/v3/auth/tokens", await api.admin(),
                       headers={"X-Subject-Token": subject})
    assert r.status_code == 200
    assert r.headers["X-Subject-Token"] == subject
    assert r.content == b""


async def test_validate_without_subject_or_with_garbage_is_404(api: KeystoneClient):
    admin = await api.admin()
    assert (await api.get("/v3/auth/tokens", admin)).status_code == 404
    for garbage in ("nonsense", "gAAAAAB" + "x" * 100, "x" * 5000, "é"):
        r = await api.get("/v3/auth/tokens", admin,
                          headers={"X-Subject-Token": garbage.encode("utf-8")})
        assert r.status_code == 404, garbage
        assert r.json()["error"]["code"] == 404


async def test_revoked_token_is_401_on_use_and_404_on_validate(api: KeystoneClient):
    subject = await api.token("demo", project="demo")
    admin = await api.admin()
    r = await api.delete("/v3/auth/tokens", admin, headers={"X-Subject-Token": subject})
    assert r.status_code == 204
    assert r.content == b""
    used = await api.get("/v3/auth/projects", subject)
    assert used.status_code == 401
    assert used.json() == UNAUTHORIZED
    assert (await api.validate(subject, admin)).status_code == 404
    check = await api.head("/v3/auth/tokens", admin, headers={"X-Subject-Token": subject})
    assert check.status_code == 404
    again = await api.delete("/v3/auth/tokens", admin, headers={"X-Subject-Token": subject})
    assert again.status_code == 404


async def test_a_user_revokes_their_own_token(api: KeystoneClient):
    subject = await api.token("demo", project="demo")
    other = await api.token("demo", project="demo")
    r = await api.delete("/v3/auth/tokens", subject, headers={"X-Subject-Token": subject})
    assert r.status_code == 204
    assert (await api.validate(subject, other)).status_code == 404
    assert (await api.validate(other)).status_code == 200


async def test_rescoping_with_a_token_keeps_its_expiry(api: KeystoneClient, clock: Clock):
    unscoped = await api.login("demo", unscoped=True)
    first = unscoped.json()["token"]
    clock.advance(seconds=600)
    body = {"auth": {"identity": {"methods": ["token"], "token": {
        "id": unscoped.headers["X-Subject-Token"]}},
        "scope": {"project": {"name": "demo", "domain": {"id": "default"}}}}}
    r = await api.post("/v3/auth/tokens", json=body)
    assert r.status_code == 201, r.text
    token = r.json()["token"]
    assert token["expires_at"] == first["expires_at"]
    later = parse(token["issued_at"]) - parse(first["issued_at"])
    assert dt.timedelta(seconds=600) <= later < dt.timedelta(seconds=601)
    assert len(token["audit_ids"]) == 2
    assert token["audit_ids"][1] == first["audit_ids"][0]
    assert "password" in token["methods"]
    assert token["project"]["name"] == "demo"
    assert_identity_catalog(token["catalog"], api)


async def test_rescoping_a_revoked_token_is_refused(api: KeystoneClient):
    subject = await api.token("demo", unscoped=True)
    await api.delete("/v3/auth/tokens", subject, headers={"X-Subject-Token": subject})
    body = {"auth": {"identity": {"methods": ["token"], "token": {"id": subject}},
                     "scope": {"project": {"name": "demo", "domain": {"id": "default"}}}}}
    r = await api.post("/v3/auth/tokens", json=body)
    assert r.status_code == 401
    assert r.json() == UNAUTHORIZED


async def test_expired_token_needs_allow_expired(api: KeystoneClient, clock: Clock):
    subject = await api.token("demo", project="demo")
    clock.advance(seconds=3601)
    admin = await api.token("admin", project="admin")
    assert (await api.get("/v3/auth/projects", subject)).status_code == 401
    assert (await api.validate(subject, admin)).status_code == 404
    r = await api.validate(subject, admin, query="?allow_expired=1")
    assert r.status_code == 200
    assert r.json()["token"]["project"]["name"] == "demo"
    clock.advance(days=3)
    admin = await api.token("admin", project="admin")
    assert (await api.validate(subject, admin, query="?allow_expired=1")).status_code == 404


# -- what ends a token early ----------------------------------------------------------


async def test_disabling_a_user_ends_their_tokens_at_once(api: KeystoneClient):
    user_id = await api.id_of("users", "demo")
    token = await api.token("demo", project="demo")
    assert (await api.get(f"/v3/users/{user_id}", token)).status_code == 200
    await api.as_admin("PATCH", f"/v3/users/{user_id}", json={"user": {"enabled": False}},
                       expect=200)
    r = await api.get(f"/v3/users/{user_id}", token)
    assert r.status_code == 401
    assert r.json() == UNAUTHORIZED
    assert (await api.validate(token, await api.admin())).status_code == 404
    assert (await api.login("demo", project="demo")).status_code == 401


async def test_removing_the_last_role_ends_project_tokens_at_once(api: KeystoneClient):
    user_id = await api.id_of("users", "demo")
    project_id = await api.id_of("projects", "demo")
    member = await api.id_of("roles", "member")
    token = await api.token("demo", project="demo")
    assert (await api.get(f"/v3/projects/{project_id}", token)).status_code == 200
    await api.as_admin("DELETE", f"/v3/projects/{project_id}/users/{user_id}/roles/{member}",
                       expect=204)
    r = await api.get(f"/v3/projects/{project_id}", token)
    assert r.status_code == 401
    assert r.json() == UNAUTHORIZED
    assert (await api.validate(token, await api.admin())).status_code == 404


async def test_changing_the_password_revokes_old_tokens(api: KeystoneClient, clock: Clock):
    clock.advance(seconds=0.7)  # a fraction of a second must not blur the revocation
    user_id = await api.id_of("users", "demo")
    old = await api.token("demo", project="demo")
    r = await api.post(f"/v3/users/{user_id}/password", json={"user": {
        "original_password": api.passwords["demo"], "password": "brand-new-secret"}})
    assert r.status_code == 204, r.text
    assert (await api.get("/v3/auth/projects", old)).status_code == 401
    clock.advance(seconds=0.1)
    assert (await api.login("demo", project="demo")).status_code == 401
    new = await api.token("demo", "brand-new-secret", project="demo")
    assert (await api.get("/v3/auth/projects", new)).status_code == 200


async def test_deleting_the_project_ends_its_tokens(api: KeystoneClient):
    await api.as_admin("POST", "/v3/projects", json={"project": {"name": "doomed"}}, expect=201)
    project_id = await api.id_of("projects", "doomed")
    await api.grant("member", await api.id_of("users", "demo"), "doomed")
    token = await api.token("demo", project="doomed")
    await api.as_admin("DELETE", f"/v3/projects/{project_id}", expect=204)
    assert (await api.get("/v3/auth/projects", token)).status_code == 401


# -- revocation and keys over time ------------------------------------------------------


async def test_revocation_survives_a_restart(api: KeystoneClient, make_cloud):
    revoked = await api.token("demo", project="demo")
    kept = await api.token("alt_demo", project="alt_demo")
    await api.delete("/v3/auth/tokens", revoked, headers={"X-Subject-Token": revoked})
    await api.cloud.stop()

    again = await make_cloud()
    async with client_for(again) as api2:
        assert api2.passwords == api.passwords
        r = await api2.get("/v3/auth/projects", revoked)
        assert r.status_code == 401
        assert r.json() == UNAUTHORIZED
        r = await api2.get("/v3/auth/projects", kept)
        assert r.status_code == 200
        assert [p["name"] for p in r.json()["projects"]] == ["alt_demo"]
        assert (await api2.validate(revoked, await api2.admin())).status_code == 404


async def test_tokens_outlive_key_rotation_until_their_key_is_dropped(api: KeystoneClient):
    keys = api.component.token_keys
    assert keys.max_active_keys == 3
    first = await api.token("demo", project="demo")
    keys.rotate()  # first's key is now secondary
    assert (await api.get("/v3/auth/projects", first)).status_code == 200
    second = await api.token("demo", project="demo")
    keys.rotate()  # first's key falls off; second's is secondary
    r = await api.get("/v3/auth/projects", first)
    assert r.status_code == 401
    assert r.json() == UNAUTHORIZED
    assert (await api.get("/v3/auth/projects", second)).status_code == 200
    third = await api.token("demo", project="demo")
    assert (await api.validate(first, third)).status_code == 404
    assert (await api.validate(second, third)).status_code == 200


# -- what a token may reach ----------------------------------------------------------------


async def test_auth_projects_lists_where_the_user_has_roles(api: KeystoneClient):
    token = await api.token("demo", unscoped=True)
    r = await api.get("/v3/auth/projects", token)
    assert r.status_code == 200
    body = r.json()
    assert [p["name"] for p in body["projects"]] == ["demo"]
    project = body["projects"][0]
    assert project["links"] == {"self": f"{V3}/projects/{project['id']}"}
    assert project["domain_id"] == "default" and project["enabled"] is True
    assert body["links"] == {"self": f"{V3}/auth/projects", "previous": None, "next": None}


async def test_auth_domains_lists_domain_roles_only(api: KeystoneClient):
    token = await api.token("admin", unscoped=True)
    r = await api.get("/v3/auth/domains", token)
    assert r.status_code == 200
    assert r.json()["domains"] == []
    user = await api.make_user("dom-reader")
    reader = await api.id_of("roles", "reader")
    await api.as_admin("PUT", f"/v3/domains/default/users/{user['id']}/roles/{reader}",
                       expect=204)
    r = await api.get("/v3/auth/domains", await api.token("dom-reader", unscoped=True))
    (domain,) = r.json()["domains"]
    assert domain["id"] == "default" and domain["name"] == "Default"
    assert domain["links"] == {"self": f"{V3}/domains/default"}


async def test_auth_system(api: KeystoneClient):
    r = await api.get("/v3/auth/system", await api.token("admin", unscoped=True))
    assert r.status_code == 200
    assert r.json()["system"] == [{"all": True}]
    assert r.json()["links"]["self"] == f"{V3}/auth/system"
    r = await api.get("/v3/auth/system", await api.token("demo", unscoped=True))
    assert r.json()["system"] == []


async def test_auth_catalog_needs_a_scoped_token(api: KeystoneClient):
    r = await api.get("/v3/auth/catalog", await api.token("demo", project="demo"))
    assert r.status_code == 200
    assert_identity_catalog(r.json()["catalog"], api)
    assert r.json()["links"]["self"] == f"{V3}/auth/catalog"
    r = await api.get("/v3/auth/catalog", await api.token("demo", unscoped=True))
    assert r.status_code == 403
    assert r.json()["error"]["code"] == 403
