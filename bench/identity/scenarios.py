"""The four load figures, expressed once and pointed at either server.

Given admin credentials (auth_url ending in /v3), `prepare()` gets the tokens
the requests need and makes sure a few extra projects exist, and
`build_requests()` returns the exact HTTP request each figure repeats.  Every
request is sent once with a plain client first (`preflight`) so that a
figure is never a measurement of error responses.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from common import BenchError, http
from loadgen import Request

# name -> (label, expected status)
SCENARIOS = {
    "password": ("password token issue", 201),
    "rescope": ("token re-scope (token method)", 201),
    "validate": ("token validation", 200),
    "projects": ("project listing (admin)", 200),
}
BENCH_PROJECT_PREFIX = "bench-project-"


def password_auth(creds: dict, scoped: bool) -> dict:
    auth = {"identity": {"methods": ["password"], "password": {"user": {
        "name": creds["username"], "domain": {"id": creds["user_domain_id"]},
        "password": creds["password"]}}}}
    if scoped:
        auth["scope"] = {"project": {"name": creds["project_name"],
                                     "domain": {"id": creds["project_domain_id"]}}}
    return {"auth": auth}


def rescope_auth(token: str, project_id: str) -> dict:
    return {"auth": {"identity": {"methods": ["token"], "token": {"id": token}},
                     "scope": {"project": {"id": project_id}}}}


def issue(url: str, body: dict) -> tuple[str, dict]:
    r = http("POST", f"{url}/auth/tokens", body=body)
    if r.status != 201 or "x-subject-token" not in r.headers:
        raise BenchError(f"POST {url}/auth/tokens answered {r.status}: {r.body[:300]!r}")
    return r.headers["x-subject-token"], r.json()["token"]


@dataclass
class Fixtures:
    admin_token: str
    project_id: str
    unscoped_token: str
    subject_token: str
    projects_listed: int


def prepare(creds: dict, extra_projects: int = 10) -> Fixtures:
    url = creds["auth_url"]
    admin_token, tok = issue(url, password_auth(creds, scoped=True))
    project = tok.get("project") or {}
    if not project.get("id"):
        raise BenchError("the admin token is not project-scoped")
    unscoped, _ = issue(url, password_auth(creds, scoped=False))
    subject, _ = issue(url, password_auth(creds, scoped=True))

    hdr = {"X-Auth-Token": admin_token}
    r = http("GET", f"{url}/projects", headers=hdr)
    if r.status != 200:
        raise BenchError(f"GET /v3/projects answered {r.status}: {r.body[:300]!r}")
    names = {p["name"] for p in r.json()["projects"]}
    for i in range(extra_projects):
        name = f"{BENCH_PROJECT_PREFIX}{i:02d}"
        if name in names:
            continue
        body = {"project": {"name": name, "domain_id": creds["project_domain_id"],
                            "description": "identity benchmark", "enabled": True}}
        c = http("POST", f"{url}/projects", body=body, headers=hdr)
        if c.status not in (201, 409):
            raise BenchError(f"POST /v3/projects answered {c.status}: {c.body[:300]!r}")
    listed = len(http("GET", f"{url}/projects", headers=hdr).json()["projects"])
    return Fixtures(admin_token, project["id"], unscoped, subject, listed)


def build_requests(creds: dict, fx: Fixtures) -> dict[str, Request]:
    url = creds["auth_url"]
    js = {"Content-Type": "application/json", "Accept": "application/json"}

    def dump(body: dict) -> bytes:
        return json.dumps(body, separators=(",", ":")).encode()

    return {
        "password": Request("POST", f"{url}/auth/tokens", dict(js),
                            dump(password_auth(creds, scoped=True))),
        "rescope": Request("POST", f"{url}/auth/tokens", dict(js),
                           dump(rescope_auth(fx.unscoped_token, fx.project_id))),
        "validate": Request("GET", f"{url}/auth/tokens",
                            {"Accept": "application/json", "X-Auth-Token": fx.admin_token,
                             "X-Subject-Token": fx.subject_token}),
        "projects": Request("GET", f"{url}/projects",
                            {"Accept": "application/json", "X-Auth-Token": fx.admin_token}),
    }


def preflight(name: str, req: Request) -> None:
    expected = SCENARIOS[name][1]
    r = http(req.method, req.url, body=req.body,
             headers={k: v for k, v in req.headers.items() if k != "Content-Type"})
    if r.status != expected:
        raise BenchError(f"{name}: {req.method} {req.url} answered {r.status}, expected "
                         f"{expected}: {r.body[:300]!r}")
