"""Who may call what: Keystone's default roles against the identity API.

Personas: the cloud admin (admin on the admin project), a system reader, a
domain reader (reader on the default domain, domain-scoped), a project
member (demo), a project reader and an unscoped token; and no token at all,
which is a 401 with Keystone's body on every protected route.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pytest

from .client import UNAUTHORIZED, KeystoneClient

PERSONAS = ("admin", "sysreader", "domreader", "member", "reader", "unscoped")


@dataclass
class World:
    api: KeystoneClient
    tokens: dict[str, str]
    demo_user: str
    admin_user: str
    demo_project: str
    group: str
    member_role: str
    counter: itertools.count

    def fresh(self, prefix: str) -> str:
        return f"{prefix}-{next(self.counter)}"


async def make_world(api: KeystoneClient) -> World:
    sysreader = await api.make_user("sysreader")
    domreader = await api.make_user("domreader")
    await api.make_user("rdr", project="demo", role="reader")
    reader_role = await api.id_of("roles", "reader")
    await api.as_admin("PUT", f"/v3/system/users/{sysreader['id']}/roles/{reader_role}",
                       expect=204)
    await api.as_admin("PUT", f"/v3/domains/default/users/{domreader['id']}/roles/{reader_role}",
                       expect=204)
    r = await api.as_admin("POST", "/v3/groups", json={"group": {"name": "staff"}}, expect=201)
    tokens = {
        "admin": await api.admin(),
        "sysreader": await api.token("sysreader", system=True),
        "domreader": await api.token("domreader", domain="default"),
        "member": await api.token("demo", project="demo"),
        "reader": await api.token("rdr", project="demo"),
        "unscoped": await api.token("demo", unscoped=True),
    }
    return World(api, tokens, await api.id_of("users", "demo"),
                 await api.id_of("users", "admin"), await api.id_of("projects", "demo"),
                 r.json()["group"]["id"], await api.id_of("roles", "member"),
                 itertools.count())


Request = Callable[[World], Awaitable[tuple[str, str, dict | None]]]


def plain(method: str, path: str, body: dict | None = None) -> Request:
    async def make(w: World):
        return method, path.format(w=w), body
    return make


async def new_user(w: World):
    return "POST", "/v3/users", {"user": {"name": w.fresh("u")}}


async def new_project(w: World):
    return "POST", "/v3/projects", {"project": {"name": w.fresh("p")}}


async def new_region(w: World):
    return "POST", "/v3/regions", {"region": {"id": w.fresh("r")}}


async def delete_project(w: World):
    r = await w.api.as_admin("POST", "/v3/projects", json={"project": {"name": w.fresh("d")}},
                             expect=201)
    return "DELETE", f"/v3/projects/{r.json()['project']['id']}", None


async def grant(w: World):
    r = await w.api.as_admin("POST", "/v3/users", json={"user": {"name": w.fresh("g")}},
                             expect=201)
    user_id = r.json()["user"]["id"]
    return "PUT", f"/v3/projects/{w.demo_project}/users/{user_id}/roles/{w.member_role}", None


A, S, D, M, R, U = PERSONAS
# expected status for each persona, in the order of PERSONAS; None: not asserted
CASES: list[tuple[Request, tuple[int | None, ...]]] = [
    (plain("GET", "/v3/users"), (200, 200, 200, 403, 403, 403)),
    (new_user, (201, 403, 403, 403, 403, 403)),
    (plain("GET", "/v3/users/{w.demo_user}"), (200, 200, 200, 200, 403, 200)),
    (plain("PATCH", "/v3/users/{w.demo_user}", {"user": {"description": "x"}}),
     (200, 403, 403, 403, 403, 403)),
    (plain("GET", "/v3/users/{w.demo_user}/projects"), (200, 200, 200, 200, 403, 200)),
    (plain("GET", "/v3/users/{w.demo_user}/groups"), (200, 200, 200, 200, 403, 200)),
    (plain("GET", "/v3/projects"), (200, 200, 200, 403, 403, 403)),
    (new_project, (201, 403, 403, 403, 403, 403)),
    (plain("GET", "/v3/projects/{w.demo_project}"), (200, 200, 200, 200, 200, 403)),
    (delete_project, (204, 403, 403, 403, 403, 403)),
    (plain("GET", "/v3/domains"), (200, 200, 403, 403, 403, 403)),
    (plain("GET", "/v3/domains/default"), (200, 200, 200, 200, 200, 403)),
    (plain("POST", "/v3/domains", {"domain": {"name": "nope"}}),
     (None, 403, 403, 403, 403, 403)),
    (plain("GET", "/v3/groups"), (200, 200, 200, 403, 403, 403)),
    (plain("GET", "/v3/groups/{w.group}"), (200, 200, 200, 403, 403, 403)),
    (plain("GET", "/v3/groups/{w.group}/users"), (200, 200, 200, 403, 403, 403)),
    (plain("HEAD", "/v3/groups/{w.group}/users/{w.demo_user}"), (404, 404, 404, 403, 403, 403)),
    (plain("GET", "/v3/roles"), (200, 200, 403, 403, 403, 403)),
    (plain("POST", "/v3/roles", {"role": {"name": "nope"}}), (None, 403, 403, 403, 403, 403)),
    (plain("GET", "/v3/role_inferences"), (200, 200, 403, 403, 403, 403)),
    (grant, (204, 403, 403, 403, 403, 403)),
    (plain("GET", "/v3/system/users/{w.admin_user}/roles"), (200, 200, 403, 403, 403, 403)),
    (plain("GET", "/v3/role_assignments?scope.project.id={w.demo_project}"),
     (200, 200, 200, 200, 200, 403)),
    (plain("GET", "/v3/role_assignments"), (200, 200, 200, 403, 403, 403)),
    (plain("GET", "/v3/regions"), (200, 200, 200, 200, 200, 200)),
    (new_region, (201, 403, 403, 403, 403, 403)),
    (plain("GET", "/v3/services"), (200, 200, 403, 403, 403, 403)),
    (plain("GET", "/v3/endpoints"), (200, 200, 403, 403, 403, 403)),
    (plain("POST", "/v3/services", {"service": {"type": "x"}}),
     (None, 403, 403, 403, 403, 403)),
    (plain("GET", "/v3/credentials"), (200, 200, 200, 200, 200, 200)),
    (plain("GET", "/v3/users/{w.demo_user}/application_credentials"),
     (200, 200, 403, 200, 403, 200)),
    (plain("GET", "/v3/users/{w.demo_user}/credentials/OS-EC2"),
     (200, 200, 403, 200, 403, 200)),
    (plain("GET", "/v3/auth/projects"), (200, 200, 200, 200, 200, 200)),
    (plain("GET", "/v3/auth/catalog"), (200, 200, 200, 200, 200, 403)),
]


@pytest.mark.slow
async def test_default_roles(api: KeystoneClient):
    w = await make_world(api)
    wrong = []
    for make, expected in CASES:
        for persona, want in zip(PERSONAS, expected):
            method, path, body = await make(w)
            r = await api.request(method, path, w.tokens[persona], json=body)
            if want is not None and r.status_code != want:
                wrong.append((persona, method, path, want, r.status_code))
            if r.status_code == 403 and method != "HEAD":
                assert r.json()["error"]["code"] == 403
                assert r.json()["error"]["title"] == "Forbidden"
    assert wrong == [], "\n".join(map(repr, wrong))


async def test_a_domain_reader_lists_only_their_domain(api: KeystoneClient):
    w = await make_world(api)
    r = await api.as_admin("POST", "/v3/domains", json={"domain": {"name": "other"}}, expect=201)
    other = r.json()["domain"]["id"]
    await api.as_admin("POST", "/v3/users", json={"user": {
        "name": "outsider", "domain_id": other}}, expect=201)
    token = w.tokens["domreader"]
    r = await api.get("/v3/users", token)
    assert "outsider" not in {u["name"] for u in r.json()["users"]}
    assert (await api.get(f"/v3/users?domain_id={other}", token)).status_code == 403
    assert (await api.get(f"/v3/domains/{other}", token)).status_code == 403
    r = await api.as_admin("GET", "/v3/users", expect=200)
    assert "outsider" in {u["name"] for u in r.json()["users"]}


async def test_a_system_admin_token_is_the_cloud_admin(api: KeystoneClient):
    token = await api.token("admin", system=True)
    r = await api.post("/v3/users", token, json={"user": {"name": "by-system"}})
    assert r.status_code == 201
    assert (await api.get("/v3/domains", token)).status_code == 200


PROTECTED = [
    ("GET", "/v3/auth/tokens"), ("HEAD", "/v3/auth/tokens"), ("DELETE", "/v3/auth/tokens"),
    ("GET", "/v3/auth/projects"), ("GET", "/v3/auth/domains"), ("GET", "/v3/auth/system"),
    ("GET", "/v3/auth/catalog"),
    *[(m, f"/v3/{c}") for c in ("domains", "projects", "users", "groups", "roles", "regions",
                                 "services", "endpoints", "credentials")
      for m in ("GET", "POST")],
    *[(m, f"/v3/{c}/x") for c in ("domains", "projects", "users", "groups", "roles", "regions",
                                   "services", "endpoints", "credentials")
      for m in ("GET", "PATCH", "DELETE")],
    ("PUT", "/v3/regions/x"),
    ("GET", "/v3/users/x/projects"), ("GET", "/v3/users/x/groups"),
    ("GET", "/v3/groups/x/users"), ("PUT", "/v3/groups/x/users/y"),
    ("HEAD", "/v3/groups/x/users/y"), ("DELETE", "/v3/groups/x/users/y"),
    ("GET", "/v3/roles/x/implies"), ("PUT", "/v3/roles/x/implies/y"),
    ("GET", "/v3/roles/x/implies/y"), ("DELETE", "/v3/roles/x/implies/y"),
    ("GET", "/v3/role_inferences"), ("GET", "/v3/role_assignments"),
    ("GET", "/v3/projects/x/users/y/roles"), ("PUT", "/v3/projects/x/users/y/roles/z"),
    ("HEAD", "/v3/projects/x/groups/y/roles/z"), ("DELETE", "/v3/domains/x/users/y/roles/z"),
    ("GET", "/v3/domains/x/groups/y/roles"), ("PUT", "/v3/system/users/y/roles/z"),
    ("GET", "/v3/system/groups/y/roles"),
    ("PUT", "/v3/OS-INHERIT/domains/x/users/y/roles/z/inherited_to_projects"),
    ("GET", "/v3/OS-INHERIT/projects/x/groups/y/roles/inherited_to_projects"),
    ("GET", "/v3/users/x/credentials/OS-EC2"), ("POST", "/v3/users/x/credentials/OS-EC2"),
    ("GET", "/v3/users/x/credentials/OS-EC2/y"), ("DELETE", "/v3/users/x/credentials/OS-EC2/y"),
    ("GET", "/v3/users/x/application_credentials"),
    ("POST", "/v3/users/x/application_credentials"),
    ("GET", "/v3/users/x/application_credentials/y"),
    ("DELETE", "/v3/users/x/application_credentials/y"),
]


@pytest.mark.slow
async def test_no_token_or_a_bad_one_is_401_everywhere(api: KeystoneClient):
    wrong = []
    for token in (None, "", "garbage", (await api.admin())[:-4] + "AAAA"):
        for method, path in PROTECTED:
            headers = {} if token is None else {"X-Auth-Token": token}
            r = await api.request(method, path, headers=headers, json={})
            body = r.json() if method != "HEAD" else UNAUTHORIZED
            if r.status_code != 401 or body != UNAUTHORIZED:
                wrong.append((token and token[:8], method, path, r.status_code))
    assert wrong == [], "\n".join(map(repr, wrong))


async def test_public_routes_need_no_token(api: KeystoneClient):
    assert (await api.get("/")).status_code == 300
    assert (await api.get("/v3")).status_code == 200
    r = await api.login("demo", project="demo")
    assert r.status_code == 201
