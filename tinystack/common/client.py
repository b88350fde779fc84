"""What a service that calls another service's API over HTTP shares: one client, made late.

Each ``httpx.AsyncClient`` holds a TLS context of about a megabyte, and a
controller that never boots a server never calls the image or network API,
so the client is made on first use. Tests hand in a client of their own
(an ``httpx.ASGITransport`` on the app under test) by setting ``http``.

``bootstrap_project_id`` is for first-start work (the default image, the
bootstrap networks) that must know a bootstrap user's project: it logs in
with the password the bootstrap wrote, waiting for the API to answer.
"""

from __future__ import annotations

import asyncio

import httpx
import yaml

from tinystack.config import Settings

__all__ = ["ApiClient", "LOGIN_DEADLINE", "bootstrap_project_id"]

LOGIN_DEADLINE = 300.0
"""Seconds a first-start login waits for the identity API to answer."""


async def bootstrap_project_id(settings: Settings, user: str,
                               transport: httpx.AsyncBaseTransport | None = None,
                               deadline: float = LOGIN_DEADLINE) -> str:
    """The id of bootstrap user ``user``'s own project (``admin``, ``demo``), from a password
    login with the password in ``credentials.yaml``; waits for the API to answer."""
    known = yaml.safe_load((settings.data_dir / "credentials.yaml").read_text()) or {}
    body = {"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": user, "domain": {"id": "default"}, "password": known[user]}}},
        "scope": {"project": {"name": user, "domain": {"id": "default"}}}}}
    loop = asyncio.get_running_loop()
    give_up = loop.time() + deadline
    async with httpx.AsyncClient(base_url=settings.base_url, transport=transport,
                                 timeout=10.0) as client:
        while True:
            try:
                response = await client.post("/identity/v3/auth/tokens", json=body)
            except httpx.TransportError:
                if loop.time() > give_up:
                    raise
                await asyncio.sleep(0.5)
                continue
            if response.status_code != 201:
                raise RuntimeError(f"{user} login failed: HTTP {response.status_code} "
                                   f"{response.text[:200]}")
            return response.json()["token"]["project"]["id"]


class ApiClient:
    """Base of compute's image and network clients: ``http``, made on first use."""

    def __init__(self, *, timeout: float):
        self.timeout = timeout
        self._http: httpx.AsyncClient | None = None

    @property
    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self.timeout)
        return self._http

    @http.setter
    def http(self, client: httpx.AsyncClient) -> None:
        self._http = client

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
