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
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tinystack import config
from tinystack.cloud import Cloud
from tinystack.common.db import Base, normalize_url, utcnow
from tinystack.identity import passwords
from tinystack.models import import_all

from .support import FakeAgent, FakeGlance, NovaClient

FAST_ROUNDS = 4


def empty_rows(url: str) -> None:
    """Delete every row of every tinystack table present, keeping the schema."""
    import_all()
    engine = sa.create_engine(normalize_url(url), poolclass=sa.NullPool)
    try:
        with engine.begin() as conn:
            present = set(sa.inspect(conn).get_table_names())
            for table in reversed(Base.metadata.sorted_tables):
                if table.name in present:
                    conn.execute(table.delete())
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def _compute_sqlite(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('compute-db') / 'tinystack.db'}"


@pytest.fixture
def compute_db(db_server, request: pytest.FixtureRequest) -> str:
    url = request.getfixturevalue("_compute_sqlite") if db_server is None else db_server.url
    empty_rows(url)
    return url


@pytest.fixture
def fast_bcrypt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(passwords, "MIN_ROUNDS", FAST_ROUNDS)


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
async def make_compute_cloud(compute_db: str, tmp_path: Path, glance: FakeGlance,
                             fast_bcrypt) -> AsyncIterator[MakeCloud]:
    started: list[Cloud] = []

    async def make(**compute: Any) -> Cloud:
        settings = config.load(
            data_dir=tmp_path / "data", db=compute_db, clouds_yaml=tmp_path / "clouds.yaml",
            roles=["controller"], identity={"password_hash_rounds": FAST_ROUNDS},
            image={"default_image": False}, network={"bootstrap": False}, compute=compute)
        cloud = Cloud(settings)
        await cloud.start()
        started.append(cloud)
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

    yield make
    for cloud in reversed(started):
        if cloud.started:
            await cloud.stop()


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
