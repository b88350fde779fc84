"""A Glance-speaking client for the image tests.

``GlanceClient`` wraps an ``httpx.AsyncClient`` on a ``Cloud``'s ASGI app
(paths relative to the image prefix: ``/v2/images``). Every request names
the user it is made as (``as_="demo"``, ``"alt_demo"``, ``"admin"``, each
scoped to the project of the same name; ``None`` sends no token); tokens and
project ids come from the identity API of the same cloud, with the bootstrap
passwords in ``<data_dir>/credentials.yaml``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import yaml

from tinystack.cloud import Cloud

__all__ = ["GlanceClient", "client_for", "PATCH"]

PATCH = "application/openstack-images-v2.1-json-patch"


@dataclass
class GlanceClient:
    http: httpx.AsyncClient
    cloud: Cloud
    passwords: dict[str, str]
    _tokens: dict[str, tuple[str, str]] = field(default_factory=dict)

    @property
    def component(self):
        return self.cloud.services["image"]

    async def login(self, user: str) -> tuple[str, str]:
        """(token, project id) for ``user`` scoped to its own project."""
        if user not in self._tokens:
            body = {"auth": {
                "identity": {"methods": ["password"], "password": {"user": {
                    "name": user, "domain": {"id": "default"},
                    "password": self.passwords[user]}}},
                "scope": {"project": {"name": user, "domain": {"id": "default"}}}}}
            r = await self.http.post("http://testserver/identity/v3/auth/tokens", json=body)
            assert r.status_code == 201, r.text
            self._tokens[user] = (r.headers["X-Subject-Token"], r.json()["token"]["project"]["id"])
        return self._tokens[user]

    async def project(self, user: str) -> str:
        return (await self.login(user))[1]

    async def request(self, method: str, path: str, as_: str | None = "demo",
                      headers: dict | None = None, **kwargs: Any) -> httpx.Response:
        headers = dict(headers or {})
        if as_ is not None:
            headers["X-Auth-Token"] = (await self.login(as_))[0]
        return await self.http.request(method, path, headers=headers, **kwargs)

    async def get(self, path: str, as_: str | None = "demo", **kw) -> httpx.Response:
        return await self.request("GET", path, as_, **kw)

    async def post(self, path: str, as_: str | None = "demo", **kw) -> httpx.Response:
        return await self.request("POST", path, as_, **kw)

    async def put(self, path: str, as_: str | None = "demo", **kw) -> httpx.Response:
        return await self.request("PUT", path, as_, **kw)

    async def delete(self, path: str, as_: str | None = "demo", **kw) -> httpx.Response:
        return await self.request("DELETE", path, as_, **kw)

    async def patch(self, path: str, ops: Any, as_: str | None = "demo",
                    content_type: str = PATCH, **kw) -> httpx.Response:
        return await self.request("PATCH", path, as_, json=ops,
                                  headers={"Content-Type": content_type}, **kw)

    # -- shortcuts ---------------------------------------------------------------

    async def create(self, as_: str = "demo", expect: int = 201, **body: Any) -> dict:
        body.setdefault("disk_format", "raw")
        body.setdefault("container_format", "bare")
        r = await self.post("/v2/images", as_, json=body)
        assert r.status_code == expect, r.text
        return r.json()

    async def upload(self, image_id: str, data: Any, as_: str = "demo",
                     expect: int = 204) -> httpx.Response:
        r = await self.put(f"/v2/images/{image_id}/file", as_, content=data,
                           headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == expect, r.text
        return r

    async def image(self, image_id: str, as_: str = "demo") -> dict:
        r = await self.get(f"/v2/images/{image_id}", as_)
        assert r.status_code == 200, r.text
        return r.json()

    async def active(self, as_: str = "demo", data: bytes = b"tinystack" * 100,
                     **body: Any) -> dict:
        """A new image with ``data`` uploaded."""
        image = await self.create(as_, **body)
        await self.upload(image["id"], data, as_)
        return await self.image(image["id"], as_)

    async def names(self, query: str = "", as_: str = "demo") -> list[str]:
        r = await self.get(f"/v2/images{query}", as_)
        assert r.status_code == 200, r.text
        return [i["name"] for i in r.json()["images"]]


@contextlib.asynccontextmanager
async def client_for(cloud: Cloud) -> AsyncIterator[GlanceClient]:
    passwords = yaml.safe_load((cloud.settings.data_dir / "credentials.yaml").read_text())
    transport = httpx.ASGITransport(app=cloud.asgi)
    async with httpx.AsyncClient(transport=transport,
                                 base_url="http://testserver/image") as http:
        yield GlanceClient(http=http, cloud=cloud, passwords=passwords)
