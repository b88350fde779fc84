"""A Keystone-speaking client for the identity tests, and a clock to drive identity's rules.

``KeystoneClient`` wraps an ``httpx.AsyncClient`` on a ``Cloud``'s ASGI app
(paths relative to the identity prefix: ``/v3/users``), knows the bootstrap
passwords from ``<data_dir>/credentials.yaml`` and has shortcuts for tokens
(``token("demo", project="demo")``), admin calls and setup (``make_user``).
``Clock`` replaces identity's ``utcnow``; ``conftest.py`` installs it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import httpx
import yaml

from tinystack.cloud import Cloud
from tinystack.identity import passwords

__all__ = ["KeystoneClient", "Clock", "client_for", "BASE_URL", "V3", "UNAUTHORIZED",
           "PRODUCTION_MIN_ROUNDS"]

PRODUCTION_MIN_ROUNDS = passwords.MIN_ROUNDS
"""The bcrypt floor as shipped, read before any test lowers it."""

BASE_URL = "http://testserver/identity"
V3 = f"{BASE_URL}/v3"
UNAUTHORIZED = {"error": {"code": 401, "title": "Unauthorized",
                          "message": "The request you have made requires authentication."}}


@dataclass
class KeystoneClient:
    """httpx on a Cloud's ASGI app, with the bootstrap passwords and a few shortcuts."""

    http: httpx.AsyncClient
    cloud: Cloud
    passwords: dict[str, str]
    _tokens: dict[tuple, str] = field(default_factory=dict)

    @property
    def component(self):
        return self.cloud.services["identity"]

    async def request(self, method: str, path: str, token: str | None = None,
                      headers: dict | None = None, **kwargs: Any) -> httpx.Response:
        headers = dict(headers or {})
        if token is not None:
            headers["X-Auth-Token"] = token
        return await self.http.request(method, path, headers=headers, **kwargs)

    async def get(self, path, token=None, **kw):
        return await self.request("GET", path, token, **kw)

    async def head(self, path, token=None, **kw):
        return await self.request("HEAD", path, token, **kw)

    async def post(self, path, token=None, **kw):
        return await self.request("POST", path, token, **kw)

    async def put(self, path, token=None, **kw):
        return await self.request("PUT", path, token, **kw)

    async def patch(self, path, token=None, **kw):
        return await self.request("PATCH", path, token, **kw)

    async def delete(self, path, token=None, **kw):
        return await self.request("DELETE", path, token, **kw)

    # -- tokens ------------------------------------------------------------

    @staticmethod
    def password_auth(user: str, password: str, *, project: str | None = None,
                      domain: str | None = None, system: bool = False,
                      unscoped: bool = False, user_domain: str = "default") -> dict:
        """The body of POST /v3/auth/tokens, users and projects named in ``user_domain``."""
        auth: dict = {"identity": {"methods": ["password"], "password": {"user": {
            "name": user, "domain": {"id": user_domain}, "password": password}}}}
        if project is not None:
            auth["scope"] = {"project": {"name": project, "domain": {"id": user_domain}}}
        elif domain is not None:
            auth["scope"] = {"domain": {"id": domain}}
        elif system:
            auth["scope"] = {"system": {"all": True}}
        elif unscoped:
            auth["scope"] = "unscoped"
        return {"auth": auth}

    async def login(self, user: str, password: str | None = None, *, query: str = "",
                    **scope: Any) -> httpx.Response:
        """POST /v3/auth/tokens with a password; the response, whatever it is."""
        password = self.passwords[user] if password is None else password
        return await self.post(f"/v3/auth/tokens{query}",
                               json=self.password_auth(user, password, **scope))

    async def token(self, user: str, password: str | None = None, **scope: Any) -> str:
        """A new token id for ``user`` (scope: project=, domain=, system=, unscoped=)."""
        r = await self.login(user, password, **scope)
        assert r.status_code == 201, r.text
        return r.headers["X-Subject-Token"]

    async def admin(self, fresh: bool = False) -> str:
        """A cached admin token scoped to the admin project."""
        if fresh or ("admin",) not in self._tokens:
            self._tokens[("admin",)] = await self.token("admin", project="admin")
        return self._tokens[("admin",)]

    async def as_admin(self, method: str, path: str, expect: int | None = None,
                       **kwargs: Any) -> httpx.Response:
        """The request with an admin token, a new one if the cached one ran out."""
        r = await self.request(method, path, await self.admin(), **kwargs)
        if r.status_code == 401:
            r = await self.request(method, path, await self.admin(fresh=True), **kwargs)
        if expect is not None:
            assert r.status_code == expect, (method, path, r.status_code, r.text)
        return r

    async def validate(self, subject: str, token: str | None = None,
                       query: str = "") -> httpx.Response:
        """GET /v3/auth/tokens for ``subject``, as ``token`` (default: the subject itself)."""
        return await self.get(f"/v3/auth/tokens{query}", token or subject,
                              headers={"X-Subject-Token": subject})

    # -- lookups and setup -------------------------------------------------

    async def find(self, collection: str, name: str) -> dict:
        r = await self.as_admin("GET", f"/v3/{collection}", params={"name": name}, expect=200)
        found = r.json()[collection]
        assert len(found) == 1, found
        return found[0]

    async def id_of(self, collection: str, name: str) -> str:
        return (await self.find(collection, name))["id"]

    async def make_user(self, name: str, password: str = "secret-1", *,
                        project: str | None = None, role: str = "member",
                        **fields: Any) -> dict:
        """A new user in the default domain, with ``role`` on ``project`` when given."""
        body = {"name": name, "password": password, "domain_id": "default", **fields}
        r = await self.as_admin("POST", "/v3/users", json={"user": body}, expect=201)
        user = r.json()["user"]
        self.passwords[name] = password
        if project is not None:
            await self.grant(role, user["id"], project)
        return user

    async def grant(self, role: str, user_id: str, project: str) -> None:
        role_id = await self.id_of("roles", role)
        project_id = await self.id_of("projects", project)
        await self.as_admin("PUT", f"/v3/projects/{project_id}/users/{user_id}/roles/{role_id}",
                            expect=204)


def client_for(cloud: Cloud) -> "_ClientContext":
    return _ClientContext(cloud)


class _ClientContext:
    def __init__(self, cloud: Cloud):
        self.cloud = cloud
        self.http: httpx.AsyncClient | None = None

    async def __aenter__(self) -> KeystoneClient:
        transport = httpx.ASGITransport(app=self.cloud.asgi, raise_app_exceptions=False)
        self.http = httpx.AsyncClient(transport=transport,
                                      base_url=BASE_URL)
        credentials = self.cloud.settings.data_dir / "credentials.yaml"
        return KeystoneClient(self.http, self.cloud, yaml.safe_load(credentials.read_text()))

    async def __aexit__(self, *exc) -> None:
        await self.http.aclose()


class Clock:
    """Identity's clock in tests: naive UTC that moves only when told to.

    Each reading adds a microsecond, as real time would between two calls,
    so a token issued just after a revocation is not taken for one issued
    at the same instant. ``advance`` jumps ahead.
    """

    def __init__(self, now: dt.datetime):
        self.now = now

    def __call__(self) -> dt.datetime:
        self.now += dt.timedelta(microseconds=1)
        return self.now

    def advance(self, **delta: float) -> dt.datetime:
        self.now += dt.timedelta(**delta)
        return self.now
