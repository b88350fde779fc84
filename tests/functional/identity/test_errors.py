"""What goes wrong, answered the way Keystone answers it, and never with a 500.

Malformed JSON and missing or mistyped fields are 400, duplicates 409,
unknown ids 404, all in Keystone's ``{"error": {"code", "title",
"message"}}`` body. Every failed authentication is the same 401 body,
whatever was wrong, so a caller learns nothing about which users exist.
"""

from __future__ import annotations

import pytest

from .client import UNAUTHORIZED, KeystoneClient

TITLES = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
          405: "Method Not Allowed", 409: "Conflict"}


def assert_error(r, code: int, message: str | None = None) -> None:
    assert r.status_code == code, (r.request.method, r.request.url, r.status_code, r.text)
    assert r.headers["content-type"] == "application/json"
    error = r.json()["error"]
    assert error.keys() == {"code", "title", "message"}
    assert (error["code"], error["title"]) == (code, TITLES[code])
    assert error["message"]
    if message is not None:
        assert message in error["message"], error["message"]


BODY_ROUTES = [
    ("POST", "/v3/domains"), ("PATCH", "/v3/domains/x"),
    ("POST", "/v3/projects"), ("PATCH", "/v3/projects/x"),
    ("POST", "/v3/users"), ("PATCH", "/v3/users/x"), ("POST", "/v3/users/x/password"),
    ("POST", "/v3/groups"), ("PATCH", "/v3/groups/x"),
    ("POST", "/v3/roles"), ("PATCH", "/v3/roles/x"),
    ("POST", "/v3/regions"), ("PUT", "/v3/regions/x"), ("PATCH", "/v3/regions/x"),
    ("POST", "/v3/services"), ("PATCH", "/v3/services/x"),
    ("POST", "/v3/endpoints"), ("PATCH", "/v3/endpoints/x"),
    ("POST", "/v3/credentials"),
    ("POST", "/v3/users/{admin}/credentials/OS-EC2"),
    ("POST", "/v3/users/{admin}/application_credentials"),
    ("POST", "/v3/auth/tokens"),
]


@pytest.mark.slow
async def test_malformed_bodies_are_400(api: KeystoneClient):
    admin = await api.id_of("users", "admin")
    for method, path in BODY_ROUTES:
        path = path.format(admin=admin)
        for raw in (b"{not json", b"", b"[1, 2]", b'"text"', b"null", b"\xff\xfe"):
            r = await api.as_admin(method, path, content=raw,
                                   headers={"Content-Type": "application/json"})
            assert_error(r, 400)


async def test_missing_required_fields_are_400(api: KeystoneClient):
    cases = [
        ("/v3/domains", {}, "'domain' is a required property"),
        ("/v3/domains", {"domain": {}}, "'name' is a required property"),
        ("/v3/projects", {"project": {"description": "no name"}},
         "'name' is a required property"),
        ("/v3/users", {"user": {"password": "x"}}, "'name' is a required property"),
        ("/v3/groups", {"group": {}}, "'name' is a required property"),
        ("/v3/roles", {"role": {}}, "'name' is a required property"),
        ("/v3/services", {"service": {"name": "x"}}, "'type' is a required property"),
        ("/v3/endpoints", {"endpoint": {"interface": "public", "url": "http://x"}},
         "'service_id' is a required property"),
        ("/v3/endpoints", {"endpoint": {"interface": "public", "service_id": "x"}},
         "'url' is a required property"),
        ("/v3/credentials", {"credential": {"type": "cert", "blob": "x"}},
         "'user_id' is a required property"),
    ]
    for path, body, message in cases:
        assert_error(await api.as_admin("POST", path, json=body), 400, message)


async def test_mistyped_fields_are_400(api: KeystoneClient):
    cases = [
        ("/v3/domains", {"domain": {"name": 42}}),
        ("/v3/domains", {"domain": {"name": "d", "enabled": "yes"}}),
        ("/v3/domains", {"domain": {"name": ""}}),
        ("/v3/domains", {"domain": {"name": "n" * 256}}),
        ("/v3/projects", {"project": {"name": "p", "tags": "not-a-list"}}),
        ("/v3/projects", {"project": {"name": "p", "enabled": 1}}),
        ("/v3/users", {"user": {"name": ["list"]}}),
        ("/v3/users", {"user": {"name": "u", "enabled": "false"}}),
        ("/v3/users", {"user": {"name": "u", "options": "x"}}),
        ("/v3/roles", {"role": {"name": None}}),
        ("/v3/services", {"service": {"type": "t", "enabled": "no"}}),
        ("/v3/endpoints", {"endpoint": "not-an-object"}),
    ]
    for path, body in cases:
        assert_error(await api.as_admin("POST", path, json=body), 400)
    user_id = await api.id_of("users", "demo")
    assert_error(await api.as_admin("PATCH", f"/v3/users/{user_id}",
                                    json={"user": {"enabled": "no"}}), 400)
    role_id = await api.id_of("roles", "reader")
    for path, body in ((f"/v3/users/{user_id}", {"user": {"name": None}}),
                       ("/v3/domains/default", {"domain": {"name": None}}),
                       (f"/v3/roles/{role_id}", {"role": {"options": None}})):
        assert_error(await api.as_admin("PATCH", path, json=body), 400, "may not be null")
    r = await api.as_admin("PATCH", "/v3/domains/default", json={"domain": {
        "description": None}}, expect=200)
    assert r.json()["domain"]["description"] == ""
    assert_error(await api.as_admin("GET", "/v3/users?enabled=perhaps"), 400)


async def test_bad_auth_requests_are_400(api: KeystoneClient):
    password = {"user": {"name": "demo", "domain": {"id": "default"}, "password": "x"}}
    cases = [
        {},
        {"auth": {}},
        {"auth": None},
        {"auth": {"identity": {}}},
        {"auth": {"identity": {"methods": []}}},
        {"auth": {"identity": {"methods": "password"}}},
        {"auth": {"identity": {"methods": ["password"]}}},
        {"auth": {"identity": {"methods": ["password"], "password": {}}}},
        {"auth": {"identity": {"methods": ["password"], "password": {"user": {
            "name": "demo", "password": "x"}}}}},
        {"auth": {"identity": {"methods": ["token"], "token": {}}}},
        {"auth": {"identity": {"methods": ["application_credential"],
                               "application_credential": {"id": "x"}}}},
        {"auth": {"identity": {"methods": ["password"], "password": password},
                  "scope": {"project": {"id": "x"}, "domain": {"id": "default"}}}},
        {"auth": {"identity": {"methods": ["password"], "password": password},
                  "scope": {"project": {"name": "demo"}}}},
        {"auth": {"identity": {"methods": ["password"], "password": password},
                  "scope": {"system": {"all": False}}}},
        {"auth": {"identity": {"methods": ["password"], "password": password},
                  "scope": {"galaxy": {"id": "x"}}}},
    ]
    for body in cases:
        r = await api.post("/v3/auth/tokens", json=body)
        assert r.status_code == 400, body
        assert_error(r, 400)


async def test_duplicates_are_409(api: KeystoneClient):
    cases = [
        ("/v3/domains", {"domain": {"name": "Default"}}),
        ("/v3/projects", {"project": {"name": "demo"}}),
        ("/v3/users", {"user": {"name": "demo"}}),
        ("/v3/roles", {"role": {"name": "member"}}),
        ("/v3/regions", {"region": {"id": "RegionOne"}}),
    ]
    for path, body in cases:
        assert_error(await api.as_admin("POST", path, json=body), 409, "Conflict occurred")
    await api.as_admin("POST", "/v3/groups", json={"group": {"name": "g"}}, expect=201)
    assert_error(await api.as_admin("POST", "/v3/groups", json={"group": {"name": "g"}}), 409)
    r = await api.as_admin("POST", "/v3/domains", json={"domain": {"name": "other"}}, expect=201)
    other = r.json()["domain"]["id"]
    for path, key in (("/v3/projects", "project"), ("/v3/users", "user"),
                      ("/v3/groups", "group")):
        await api.as_admin("POST", path, json={key: {"name": "demo", "domain_id": other}},
                           expect=201)  # the same name in another domain is fine


async def test_renaming_onto_an_existing_name_is_409(api: KeystoneClient):
    r = await api.as_admin("POST", "/v3/domains", json={"domain": {"name": "d2"}}, expect=201)
    domain_id = r.json()["domain"]["id"]
    r = await api.as_admin("POST", "/v3/roles", json={"role": {"name": "r2"}}, expect=201)
    role_id = r.json()["role"]["id"]
    r = await api.as_admin("POST", "/v3/groups", json={"group": {"name": "g1"}}, expect=201)
    await api.as_admin("POST", "/v3/groups", json={"group": {"name": "g2"}}, expect=201)
    group_id = r.json()["group"]["id"]
    cases = [
        (f"/v3/domains/{domain_id}", {"domain": {"name": "Default"}}),
        (f"/v3/projects/{await api.id_of('projects', 'demo')}", {"project": {"name": "admin"}}),
        (f"/v3/users/{await api.id_of('users', 'demo')}", {"user": {"name": "admin"}}),
        (f"/v3/roles/{role_id}", {"role": {"name": "member"}}),
        (f"/v3/groups/{group_id}", {"group": {"name": "g2"}}),
    ]
    for path, body in cases:
        assert_error(await api.as_admin("PATCH", path, json=body), 409)


async def test_unknown_ids_are_404(api: KeystoneClient):
    missing = "0123456789abcdef0123456789abcdef"
    for kind, collection in (("domain", "domains"), ("project", "projects"),
                             ("user", "users"), ("group", "groups"), ("role", "roles"),
                             ("region", "regions"), ("service", "services"),
                             ("endpoint", "endpoints"), ("credential", "credentials")):
        path = f"/v3/{collection}/{missing}"
        r = await api.as_admin("GET", path)
        assert_error(r, 404, f"Could not find {kind}: {missing}.")
        patch = {kind: {"description": "x"}}
        if kind in ("credential",):
            patch = {kind: {"blob": "x"}}
        assert_error(await api.as_admin("PATCH", path, json=patch), 404)
        assert_error(await api.as_admin("DELETE", path), 404)
    for path in (f"/v3/users/{missing}/groups", f"/v3/groups/{missing}/users",
                 f"/v3/users/{missing}/application_credentials",
                 f"/v3/roles/{missing}/implies"):
        assert_error(await api.as_admin("GET", path), 404)


async def test_unknown_routes_and_methods(api: KeystoneClient):
    assert_error(await api.as_admin("GET", "/v3/nonsense"), 404)
    assert_error(await api.get("/v2.0/tokens"), 404)
    assert_error(await api.as_admin("PUT", "/v3/users"), 405)
    assert_error(await api.as_admin("POST", "/v3/users/x"), 405)


async def test_every_failed_login_is_the_same_401(api: KeystoneClient):
    await api.make_user("off", "pw", enabled=False, project="demo")
    r = await api.as_admin("POST", "/v3/domains", json={"domain": {
        "name": "closed", "enabled": False}}, expect=201)
    closed = r.json()["domain"]["id"]
    await api.as_admin("POST", "/v3/users", json={"user": {
        "name": "inside", "domain_id": closed, "password": "pw"}}, expect=201)
    demo_id = await api.id_of("users", "demo")
    attempts = [
        api.password_auth("demo", "wrong password", project="demo"),
        api.password_auth("nobody", "wrong password", project="demo"),
        api.password_auth("demo", "wrong password", user_domain="nowhere"),
        api.password_auth("off", "pw"),
        api.password_auth("inside", "pw", user_domain=closed),
        {"auth": {"identity": {"methods": ["password"], "password": {"user": {
            "id": "0" * 32, "password": "x"}}}}},
        {"auth": {"identity": {"methods": ["password"], "password": {"user": {
            "id": demo_id, "password": "x"}}}}},
        {"auth": {"identity": {"methods": ["password"], "password": {"user": {
            "id": demo_id}}}}},
        api.password_auth("demo", api.passwords["demo"], project="nonexistent"),
        api.password_auth("demo", api.passwords["demo"], domain="nowhere"),
        {"auth": {"identity": {"methods": ["token"], "token": {"id": "not-a-token"}}}},
        {"auth": {"identity": {"methods": ["application_credential"],
                               "application_credential": {"id": "x", "secret": "y"}}}},
        {"auth": {"identity": {"methods": ["totp"], "totp": {}}}},
    ]
    for body in attempts:
        r = await api.post("/v3/auth/tokens", json=body)
        assert r.status_code == 401, (body, r.text)
        assert r.json() == UNAUTHORIZED, body
        assert "x-subject-token" not in r.headers


WEIRD = [1, -1, 1.5, True, None, "", "é" * 300, "x" * 70000, "\x00", [], {}, [None], {"a": 1}]


def _auth_bodies():
    def pw(user=None, password=None, scope=None):
        body = {"auth": {"identity": {"methods": ["password"], "password": {
            "user": {"name": "demo", "domain": {"id": "default"}, "password": "x"}
            if user is None else user}}}}
        if password is not None:
            body["auth"]["identity"]["password"]["user"]["password"] = password
        if scope is not None:
            body["auth"]["scope"] = scope
        return body

    for value in WEIRD:
        yield {"auth": value}
        yield {"auth": {"identity": value}}
        yield {"auth": {"identity": {"methods": value}}}
        yield {"auth": {"identity": {"methods": [value]}}}
        yield pw(user=value)
        yield pw(user={"id": value, "password": "x"})
        yield pw(user={"name": value, "domain": {"id": "default"}, "password": "x"})
        yield pw(user={"name": "demo", "domain": value, "password": "x"})
        yield pw(user={"name": "demo", "domain": {"id": value}, "password": "x"})
        yield pw(user={"name": "demo", "domain": {"name": value}, "password": "x"})
        yield pw(password=value)
        yield pw(scope=value)
        yield pw(scope={"project": value})
        yield pw(scope={"project": {"id": value}})
        yield pw(scope={"project": {"name": value, "domain": {"id": "default"}}})
        yield pw(scope={"project": {"name": "demo", "domain": value}})
        yield pw(scope={"domain": {"id": value}})
        yield pw(scope={"domain": {"name": value}})
        yield pw(scope={"system": value})
        yield {"auth": {"identity": {"methods": ["token"], "token": value}}}
        yield {"auth": {"identity": {"methods": ["token"], "token": {"id": value}}}}
        yield {"auth": {"identity": {"methods": ["application_credential"],
                                     "application_credential": value}}}
        for field in ("id", "secret", "name"):
            cred = {"id": "x", "secret": "y", field: value}
            yield {"auth": {"identity": {"methods": ["application_credential"],
                                         "application_credential": cred}}}
        yield {"auth": {"identity": {"methods": ["application_credential"],
                                     "application_credential": {
                                         "name": "n", "secret": "s", "user": value}}}}


@pytest.mark.slow
async def test_weird_auth_requests_never_500(api: KeystoneClient):
    wrong = []
    for body in _auth_bodies():
        r = await api.post("/v3/auth/tokens", json=body)
        if r.status_code not in (400, 401):
            wrong.append((body if len(repr(body)) < 300 else repr(body)[:300], r.status_code))
        elif r.status_code == 401:
            assert r.json() == UNAUTHORIZED
    assert wrong == [], "\n".join(map(repr, wrong))


# resource -> (collection, a valid create body, fields to spoil)
RESOURCES = {
    "domain": ("domains", {"name": "d"}, ("name", "description", "enabled")),
    "project": ("projects", {"name": "p"},
                ("name", "description", "enabled", "tags", "domain_id", "parent_id")),
    "user": ("users", {"name": "u"},
             ("name", "password", "enabled", "default_project_id", "options", "domain_id")),
    "group": ("groups", {"name": "g"}, ("name", "description", "domain_id")),
    "role": ("roles", {"name": "r"}, ("name", "description", "options", "domain_id")),
    "region": ("regions", {}, ("id", "description", "parent_region_id")),
    "service": ("services", {"type": "t"}, ("type", "name", "description", "enabled")),
    "endpoint": ("endpoints", {"interface": "public", "url": "http://x"},
                 ("service_id", "interface", "url", "region_id", "enabled")),
    "credential": ("credentials", {"type": "cert", "blob": "b"},
                   ("user_id", "project_id", "type", "blob")),
}
ODD = [7, None, "é" * 300]


@pytest.mark.slow
async def test_odd_resource_fields_never_500(api: KeystoneClient):
    """Each field of each create and update given an odd value: a 4xx or a success."""
    service_id = (await api.find("services", "keystone"))["id"]
    user_id = await api.id_of("users", "demo")
    wrong = []
    for key, (collection, valid, fields) in RESOURCES.items():
        valid = {**valid, **({"service_id": service_id} if key == "endpoint" else {}),
                 **({"user_id": user_id} if key == "credential" else {})}
        r = await api.as_admin("POST", f"/v3/{collection}", json={key: {
            **valid, **({"name": "target"} if "name" in valid else {})}}, expect=201)
        target = f"/v3/{collection}/{r.json()[key]['id']}"
        for field in fields:
            for value in ODD:
                r = await api.as_admin("POST", f"/v3/{collection}",
                                       json={key: {**valid, field: value}})
                if r.status_code >= 500:
                    wrong.append(("POST", key, field, repr(value)[:20], r.status_code))
                r = await api.as_admin("PATCH", target, json={key: {field: value}})
                if r.status_code >= 500:
                    wrong.append(("PATCH", key, field, repr(value)[:20], r.status_code))
    assert wrong == [], "\n".join(map(repr, wrong))


async def test_nul_characters_are_400(api: KeystoneClient):
    for path in ("/v3/users/%00", "/v3/users?name=%00", "/v3/projects/a%00b"):
        assert_error(await api.as_admin("GET", path), 400)
    assert_error(await api.as_admin("POST", "/v3/users", json={"user": {"name": "a\x00"}}), 400)
    body = api.password_auth("demo\x00", "x")
    assert_error(await api.post("/v3/auth/tokens", json=body), 400)
