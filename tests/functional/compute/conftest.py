"""Fixtures for the compute API tests: a controller-only ``Cloud`` with fakes around it.

- ``compute_db``: a database URL with no rows, once per configured database
  (ids sqlite, mysql, postgresql); the schema stays between tests, as in the
  identity tests, because migrating afresh costs seconds per test.
- ``make_compute_cloud(**compute_settings)``: a started ``Cloud`` with the
  controller role only (no real agent), bcrypt cost 4, no default image,
  its compute service reading images from a ``FakeGlance`` and reaching the
  cloud's own network service; ``networks`` runs that service's first-start
  bootstrap (``public``, and ``private`` with ``router1`` for demo).
- ``cloud``, ``nova`` (a ``NovaClient``), ``glance`` (the ``FakeGlance``),
  ``agent`` (a ``FakeAgent`` on host ``node1``, registered by a heartbeat),
  ``image_id`` (a 16 MiB active image), ``clock`` (the compute clock, frozen).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from tinystack.cloud import Cloud
from tinystack.common.db import utcnow

from ..conftest import CloudSettings, StartCloud
from .support import FakeAgent, FakeGlance, NovaClient


@pytest.fixture
def compute_db(empty_db: str) -> str:
    return empty_db


@pytest.fixture
def glance() -> FakeGlance:
    return FakeGlance()


class Clock:
    """The compute service's clock, frozen; ``advance`` moves it."""

    def __init__(self, now: dt.datetime):
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += dt.timedelta(**delta)


MakeCloud = Callable[..., Awaitable[Cloud]]


@pytest.fixture
def make_compute_cloud(compute_db: str, glance: FakeGlance, cloud_settings: CloudSettings,
                       start_cloud: StartCloud) -> MakeCloud:

    async def make(**compute: Any) -> Cloud:
        cloud = await start_cloud(cloud_settings(
            compute_db, image={"default_image": False}, network={"bootstrap": False},
            compute=compute))
        images = cloud.services["compute"].images
        await images.http.aclose()
        images.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=glance.app()),
                                        base_url="http://testserver")
        images.root = "http://testserver/image"
        network = cloud.services["compute"].network
        network.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=cloud.asgi),
                                         base_url="http://testserver")
        network.root = "http://testserver/network/v2.0"
        network.identity_url = "http://testserver/identity/v3/auth/tokens"
        return cloud

    return make


@pytest.fixture
async def cloud(make_compute_cloud: MakeCloud) -> Cloud:
    return await make_compute_cloud()


@pytest.fixture
def clock(cloud: Cloud) -> Clock:
    frozen = Clock(utcnow().replace(microsecond=0))
    cloud.services["compute"].core.clock = frozen
    return frozen


@pytest.fixture
async def nova(cloud: Cloud) -> AsyncIterator[NovaClient]:
    client = NovaClient(cloud)
    yield client
    await client.aclose()


@pytest.fixture
async def agent(cloud: Cloud, clock: Clock) -> AsyncIterator[FakeAgent]:
    fake = await FakeAgent(cloud, "node1").start()
    yield fake
    await fake.close()


@pytest.fixture
async def networks(cloud: Cloud) -> None:
    from tinystack.network.bootstrap import ensure_bootstrap

    await ensure_bootstrap(cloud.services["network"],
                           transport=httpx.ASGITransport(app=cloud.asgi))


@pytest.fixture
def image_id(glance: FakeGlance) -> str:
    return glance.add()
