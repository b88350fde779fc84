"""What a service that calls another service's API over HTTP shares: one client, made late.

Each ``httpx.AsyncClient`` holds a TLS context of about a megabyte, and a
controller that never boots a server never calls the image or network API,
so the client is made on first use. Tests hand in a client of their own
(an ``httpx.ASGITransport`` on the app under test) by setting ``http``.
"""

from __future__ import annotations

import httpx

__all__ = ["ApiClient"]


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
