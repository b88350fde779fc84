"""Stored credentials, EC2 keys (OS-EC2) and application credentials.

Shapes from Keystone's api-ref (credentials.inc, application-credentials.inc
and the OS-EC2 extension): an application credential's secret is shown once,
on create; authenticating with it gives a token with only its roles on its
project, and the token ends when the credential does.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re

import sqlalchemy as sa

from tinystack.identity.models import Credential

from .client import UNAUTHORIZED, V3, Clock, KeystoneClient

HEX32 = re.compile(r"^[0-9a-f]{32}$")


# -- stored credentials ------------------------------------------------------------


async def test_credential_lifecycle(api: KeystoneClient):
    user_id = await api.id_of("users", "demo")
    project_id = await api.id_of("projects", "demo")
    r = await api.as_admin("POST", "/v3/credentials", json={"credential": {
        "user_id": user_id, "project_id": project_id, "type": "cert", "blob": "-----BEGIN"}})
    assert r.status_code == 201, r.text
    cred = r.json()["credential"]
    assert HEX32.match(cred["id"])
    assert cred == {"id": cred["id"], "user_id": user_id, "project_id": project_id,
                    "type": "cert", "blob": "-----BEGIN",
                    "links": {"self": f"{V3}/credentials/{cred['id']}"}}
    r = await api.as_admin("GET", f"/v3/credentials/{cred['id']}", expect=200)
    assert r.json() == {"credential": cred}
    r = await api.as_admin("GET", "/v3/credentials", expect=200)
    assert r.json()["credentials"] == [cred]
    assert r.json()["links"] == {"self": f"{V3}/credentials", "previous": None, "next": None}
    r = await api.as_admin("GET", "/v3/credentials?type=ec2", expect=200)
    assert r.json()["credentials"] == []
    r = await api.as_admin("GET", f"/v3/credentials?user_id={user_id}", expect=200)
    assert r.json()["credentials"] == [cred]

    r = await api.as_admin("PATCH", f"/v3/credentials/{cred['id']}", json={"credential": {
        "blob": "-----END"}}, expect=200)
    assert r.json()["credential"] == {**cred, "blob": "-----END"}
    r = await api.as_admin("DELETE", f"/v3/credentials/{cred['id']}", expect=204)
    assert r.content == b""
    await api.as_admin("GET", f"/v3/credentials/{cred['id']}", expect=404)
    await api.as_admin("DELETE", f"/v3/credentials/{cred['id']}", expect=404)
    await api.as_admin("PATCH", f"/v3/credentials/{cred['id']}",
                       json={"credential": {"blob": "x"}}, expect=404)


async def test_credential_blobs_are_encrypted_at_rest(api: KeystoneClient):
    user_id = await api.id_of("users", "demo")
    await api.as_admin("POST", "/v3/credentials", json={"credential": {
        "user_id": user_id, "type": "totp", "blob": "the-shared-secret"}}, expect=201)
    with api.cloud.db.session() as s:
        (stored,) = s.scalars(sa.select(Credential.encrypted_blob))
    assert "the-shared-secret" not in stored


async def test_an_ec2_credential_is_named_by_its_access_key(api: KeystoneClient):
    user_id = await api.id_of("users", "demo")
    project_id = await api.id_of("projects", "demo")
    blob = json.dumps({"access": "AKIA123", "secret": "s3"})
    r = await api.as_admin("POST", "/v3/credentials", json={"credential": {
        "user_id": user_id, "project_id": project_id, "type": "ec2", "blob": blob}},
        expect=201)
    assert r.json()["credential"]["id"] == hashlib.sha256(b"AKIA123").hexdigest()
    cred_path = f"/v3/credentials/{hashlib.sha256(b'AKIA123').hexdigest()}"
    r = await api.as_admin("POST", "/v3/credentials", json={"credential": {
        "user_id": user_id, "project_id": project_id, "type": "ec2", "blob": blob}})
    assert r.status_code == 409
    for new_blob in ("not json", json.dumps({"access": "other", "secret": "s"})):
        r = await api.as_admin("PATCH", cred_path, json={"credential": {"blob": new_blob}})
        assert r.status_code == 400, new_blob
    r = await api.as_admin("PATCH", cred_path, json={"credential": {
        "blob": json.dumps({"access": "AKIA123", "secret": "new"})}}, expect=200)
    r = await api.as_admin("GET", f"/v3/users/{user_id}/credentials/OS-EC2", expect=200)
    assert [(c["access"], c["secret"]) for c in r.json()["credentials"]] == [("AKIA123", "new")]
    for bad in ({"blob": "not json"}, {"blob": json.dumps({"secret": "s"})},
                {"blob": json.dumps({"access": 1, "secret": "s"})},
                {"blob": json.dumps(["access"])}, {"project_id": None}):
        body = {"user_id": user_id, "project_id": project_id, "type": "ec2", "blob": blob,
                **bad}
        r = await api.as_admin("POST", "/v3/credentials", json={"credential": body})
        assert r.status_code == 400, bad


async def test_users_manage_only_their_own_credentials(api: KeystoneClient):
    demo = await api.token("demo", project="demo")
    alt = await api.token("alt_demo", project="alt_demo")
    demo_id = await api.id_of("users", "demo")
    alt_id = await api.id_of("users", "alt_demo")
    r = await api.post("/v3/credentials", demo, json={"credential": {
        "user_id": demo_id, "type": "cert", "blob": "mine"}})
    assert r.status_code == 201
    mine = r.json()["credential"]
    r = await api.post("/v3/credentials", demo, json={"credential": {
        "user_id": alt_id, "type": "cert", "blob": "theirs"}})
    assert r.status_code == 403
    r = await api.post("/v3/credentials", alt, json={"credential": {
        "user_id": alt_id, "type": "cert", "blob": "theirs"}})
    theirs = r.json()["credential"]

    r = await api.get("/v3/credentials", demo)
    assert [c["id"] for c in r.json()["credentials"]] == [mine["id"]]
    r = await api.get(f"/v3/credentials?user_id={alt_id}", demo)
    assert [c["id"] for c in r.json()["credentials"]] == [mine["id"]]
    assert (await api.get(f"/v3/credentials/{mine['id']}", demo)).status_code == 200
    for method in ("GET", "DELETE"):
        r = await api.request(method, f"/v3/credentials/{theirs['id']}", demo)
        assert r.status_code == 403, method
    r = await api.patch(f"/v3/credentials/{theirs['id']}", demo,
                        json={"credential": {"blob": "mine now"}})
    assert r.status_code == 403
    r = await api.as_admin("GET", "/v3/credentials", expect=200)
    assert {c["id"] for c in r.json()["credentials"]} == {mine["id"], theirs["id"]}


# -- EC2 keys --------------------------------------------------------------------------


async def test_ec2_credentials(api: KeystoneClient):
    token = await api.token("demo", project="demo")
    user_id = await api.id_of("users", "demo")
    project_id = await api.id_of("projects", "demo")
    base = f"/v3/users/{user_id}/credentials/OS-EC2"
    r = await api.post(base, token, json={"tenant_id": project_id})
    assert r.status_code == 201, r.text
    cred = r.json()["credential"]
    assert HEX32.match(cred["access"]) and HEX32.match(cred["secret"])
    assert cred == {"user_id": user_id, "tenant_id": project_id, "access": cred["access"],
                    "secret": cred["secret"], "trust_id": None,
                    "links": {"self": f"{V3}{base[3:]}/{cred['access']}"}}
    r = await api.get(f"{base}/{cred['access']}", token)
    assert r.status_code == 200
    assert r.json() == {"credential": cred}
    r = await api.get(base, token)
    assert r.json()["credentials"] == [cred]
    assert r.json()["links"]["self"] == f"{V3}{base[3:]}"
    r = await api.get(f"/v3/credentials/{hashlib.sha256(cred['access'].encode()).hexdigest()}",
                      token)
    assert r.json()["credential"]["type"] == "ec2"

    alt = await api.token("alt_demo", project="alt_demo")
    assert (await api.get(f"{base}/{cred['access']}", alt)).status_code == 403
    assert (await api.get(base, alt)).status_code == 403
    assert (await api.post(base, alt, json={"tenant_id": project_id})).status_code == 403

    r = await api.delete(f"{base}/{cred['access']}", token)
    assert r.status_code == 204
    assert (await api.get(f"{base}/{cred['access']}", token)).status_code == 404
    assert (await api.delete(f"{base}/{cred['access']}", token)).status_code == 404
    assert (await api.post(base, token, json={"tenant_id": "0" * 32})).status_code == 404
    assert (await api.post(base, token, json={})).status_code == 400


# -- application credentials ---------------------------------------------------------------


async def make_app_cred(api: KeystoneClient, token: str, user_id: str, **fields) -> dict:
    r = await api.post(f"/v3/users/{user_id}/application_credentials", token,
                       json={"application_credential": {"name": "monitoring", **fields}})
    assert r.status_code == 201, r.text
    return r.json()["application_credential"]


def app_cred_auth(cred_id: str, secret: str) -> dict:
    return {"auth": {"identity": {"methods": ["application_credential"],
                                  "application_credential": {"id": cred_id, "secret": secret}}}}


async def test_application_credential_lifecycle(api: KeystoneClient):
    token = await api.token("demo", project="demo")
    user_id = await api.id_of("users", "demo")
    project_id = await api.id_of("projects", "demo")
    reader = await api.find("roles", "reader")
    member = await api.find("roles", "member")
    cred = await make_app_cred(api, token, user_id, description="For monitoring.")
    assert HEX32.match(cred["id"])
    assert len(cred["secret"]) >= 32
    base = f"/v3/users/{user_id}/application_credentials"
    assert cred == {
        "id": cred["id"], "name": "monitoring", "description": "For monitoring.",
        "user_id": user_id, "project_id": project_id, "expires_at": None,
        "unrestricted": False, "system": None, "access_rules": [], "secret": cred["secret"],
        "roles": cred["roles"], "links": {"self": f"{V3}{base[3:]}/{cred['id']}"}}
    assert sorted(cred["roles"], key=lambda r: r["name"]) == [
        {"id": r["id"], "name": r["name"], "domain_id": None} for r in (member, reader)]
    shown = {k: v for k, v in cred.items() if k != "secret"}

    r = await api.get(f"{base}/{cred['id']}", token)
    assert r.status_code == 200
    assert r.json() == {"application_credential": shown}
    r = await api.get(base, token)
    assert r.json()["application_credentials"] == [shown]
    assert r.json()["links"]["self"] == f"{V3}{base[3:]}"
    r = await api.get(f"{base}?name=other", token)
    assert r.json()["application_credentials"] == []

    r = await api.post(base, token, json={"application_credential": {"name": "monitoring"}})
    assert r.status_code == 409
    r = await api.delete(f"{base}/{cred['id']}", token)
    assert r.status_code == 204
    assert (await api.get(f"{base}/{cred['id']}", token)).status_code == 404
    assert (await api.delete(f"{base}/{cred['id']}", token)).status_code == 404


async def test_application_credential_gives_only_its_roles(api: KeystoneClient):
    token = await api.token("demo", project="demo")
    user_id = await api.id_of("users", "demo")
    project_id = await api.id_of("projects", "demo")
    cred = await make_app_cred(api, token, user_id, roles=[{"name": "reader"}],
                               secret="my-own-secret")
    assert cred["secret"] == "my-own-secret"
    r = await api.post("/v3/auth/tokens", json=app_cred_auth(cred["id"], "my-own-secret"))
    assert r.status_code == 201, r.text
    body = r.json()["token"]
    assert body["methods"] == ["application_credential"]
    assert body["project"]["id"] == project_id
    assert [role["name"] for role in body["roles"]] == ["reader"]
    assert body["application_credential"] == {"id": cred["id"], "name": "monitoring",
                                              "restricted": True}
    assert body["user"]["name"] == "demo"
    assert any(entry["type"] == "identity" for entry in body["catalog"])
    app_token = r.headers["X-Subject-Token"]
    assert (await api.get(f"/v3/projects/{project_id}", app_token)).status_code == 200

    r = await api.post(f"/v3/users/{user_id}/application_credentials", app_token,
                       json={"application_credential": {"name": "another"}})
    assert r.status_code == 403
    r = await api.delete(f"/v3/users/{user_id}/application_credentials/{cred['id']}",
                         app_token)
    assert r.status_code == 403
    by_name = {"auth": {"identity": {"methods": ["application_credential"],
                                     "application_credential": {
                                         "name": "monitoring", "secret": "my-own-secret",
                                         "user": {"name": "demo", "domain": {"id": "default"}}}}}}
    assert (await api.post("/v3/auth/tokens", json=by_name)).status_code == 201


async def test_application_credential_refusals(api: KeystoneClient):
    token = await api.token("demo", project="demo")
    user_id = await api.id_of("users", "demo")
    cred = await make_app_cred(api, token, user_id)
    for body in (app_cred_auth(cred["id"], "wrong"), app_cred_auth("0" * 32, cred["secret"])):
        r = await api.post("/v3/auth/tokens", json=body)
        assert r.status_code == 401
        assert r.json() == UNAUTHORIZED
    scoped = app_cred_auth(cred["id"], cred["secret"])
    scoped["auth"]["scope"] = {"project": {"name": "alt_demo", "domain": {"id": "default"}}}
    assert (await api.post("/v3/auth/tokens", json=scoped)).status_code == 401

    r = await api.post(f"/v3/users/{user_id}/application_credentials", token,
                       json={"application_credential": {"name": "x", "roles": [
                           {"name": "admin"}]}})
    assert r.status_code == 403
    r = await api.post(f"/v3/users/{user_id}/application_credentials", token,
                       json={"application_credential": {"name": "x", "roles": [
                           {"id": "0" * 32}]}})
    assert r.status_code == 404
    unscoped = await api.token("demo", unscoped=True)
    r = await api.post(f"/v3/users/{user_id}/application_credentials", unscoped,
                       json={"application_credential": {"name": "x"}})
    assert r.status_code == 403
    alt = await api.token("alt_demo", project="alt_demo")
    r = await api.get(f"/v3/users/{user_id}/application_credentials", alt)
    assert r.status_code == 403
    r = await api.post(f"/v3/users/{user_id}/application_credentials", alt,
                       json={"application_credential": {"name": "x"}})
    assert r.status_code == 403
    r = await api.as_admin("GET", f"/v3/users/{user_id}/application_credentials", expect=200)
    assert [c["id"] for c in r.json()["application_credentials"]] == [cred["id"]]


async def test_deleting_an_application_credential_ends_its_tokens(api: KeystoneClient):
    token = await api.token("demo", project="demo")
    user_id = await api.id_of("users", "demo")
    cred = await make_app_cred(api, token, user_id)
    r = await api.post("/v3/auth/tokens", json=app_cred_auth(cred["id"], cred["secret"]))
    app_token = r.headers["X-Subject-Token"]
    await api.delete(f"/v3/users/{user_id}/application_credentials/{cred['id']}", token)
    r = await api.get("/v3/auth/projects", app_token)
    assert r.status_code == 401
    assert r.json() == UNAUTHORIZED
    r = await api.post("/v3/auth/tokens", json=app_cred_auth(cred["id"], cred["secret"]))
    assert r.status_code == 401


async def test_an_application_credential_is_bounded_by_the_users_roles(api: KeystoneClient):
    token = await api.token("demo", project="demo")
    user_id = await api.id_of("users", "demo")
    project_id = await api.id_of("projects", "demo")
    cred = await make_app_cred(api, token, user_id)
    r = await api.post("/v3/auth/tokens", json=app_cred_auth(cred["id"], cred["secret"]))
    app_token = r.headers["X-Subject-Token"]
    member = await api.id_of("roles", "member")
    await api.as_admin("DELETE", f"/v3/projects/{project_id}/users/{user_id}/roles/{member}",
                       expect=204)
    assert (await api.get("/v3/auth/projects", app_token)).status_code == 401
    r = await api.post("/v3/auth/tokens", json=app_cred_auth(cred["id"], cred["secret"]))
    assert r.status_code == 401
    assert r.json() == UNAUTHORIZED


async def test_an_application_credential_dies_with_its_user(api: KeystoneClient):
    user = await api.make_user("robot", project="demo")
    token = await api.token("robot", project="demo")
    cred = await make_app_cred(api, token, user["id"])
    await api.as_admin("DELETE", f"/v3/users/{user['id']}", expect=204)
    r = await api.post("/v3/auth/tokens", json=app_cred_auth(cred["id"], cred["secret"]))
    assert r.status_code == 401


async def test_application_credential_expiry(api: KeystoneClient, clock: Clock):
    token = await api.token("demo", project="demo")
    user_id = await api.id_of("users", "demo")
    expires = (clock.now + dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S")
    cred = await make_app_cred(api, token, user_id, expires_at=expires)
    assert cred["expires_at"] == expires + ".000000"
    r = await api.post("/v3/auth/tokens", json=app_cred_auth(cred["id"], cred["secret"]))
    assert r.status_code == 201
    body = r.json()["token"]
    assert body["expires_at"] == expires + ".000000Z"  # never outlives its credential
    app_token = r.headers["X-Subject-Token"]
    clock.advance(hours=2)
    assert (await api.get("/v3/auth/projects", app_token)).status_code == 401
    r = await api.post("/v3/auth/tokens", json=app_cred_auth(cred["id"], cred["secret"]))
    assert r.status_code == 401
    token = await api.token("demo", project="demo")
    past = (clock.now - dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S")
    r = await api.post(f"/v3/users/{user_id}/application_credentials", token,
                       json={"application_credential": {"name": "late", "expires_at": past}})
    assert r.status_code == 400
