"""Fixtures for the image API tests: a started ``Cloud`` and a client that speaks Glance.

- ``image_db``: a database URL, once per configured database (ids sqlite,
  mysql, postgresql); the schema stays between tests, the rows are emptied
  before each one.
- ``make_cloud(**image)``: starts a controller-only ``Cloud`` on it (no
  compute or network agents) with a per-test data dir (bcrypt cost 4, no
  default guest image); keyword arguments are image settings
  (``user_storage_quota=...``).
- ``cloud`` and ``glance``: one started with the defaults, and a
  ``GlanceClient`` on it with tokens for ``demo``, ``alt_demo`` and ``admin``.

Paths given to the client are relative to the image prefix: ``/v2/images``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tinystack import config
from tinystack.cloud import Cloud
from tinystack.common.db import Base, normalize_url
from tinystack.identity import passwords
from tinystack.models import import_all

from .client import GlanceClient, client_for

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
def _sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('image-db') / 'tinystack.db'}"


@pytest.fixture
def image_db(db_server, request: pytest.FixtureRequest) -> str:
    """A database with no rows in it, once per configured database."""
    url = request.getfixturevalue("_sqlite_url") if db_server is None else db_server.url
    empty_rows(url)
    return url


@pytest.fixture(autouse=True)
def fast_bcrypt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(passwords, "MIN_ROUNDS", FAST_ROUNDS)


MakeCloud = Callable[..., Awaitable[Cloud]]


@pytest.fixture
async def make_cloud(image_db: str, tmp_path: Path) -> AsyncIterator[MakeCloud]:
    """``await make_cloud(image_size_cap=100)``: a started Cloud, stopped after the test."""
    started: list[Cloud] = []

    async def make(**image: Any) -> Cloud:
        settings = config.load(
            data_dir=tmp_path / "data", db=image_db, clouds_yaml=tmp_path / "clouds.yaml",
            roles=["controller"], identity={"password_hash_rounds": FAST_ROUNDS},
            image={"default_image": False, "guest_cache_dir": str(tmp_path / "guest"), **image})
        cloud = Cloud(settings)
        await cloud.start()
        started.append(cloud)
        return cloud

    yield make
    for cloud in reversed(started):
        if cloud.started:
            await cloud.stop()


@pytest.fixture
async def cloud(make_cloud: MakeCloud) -> Cloud:
    return await make_cloud()


@pytest.fixture
async def glance(cloud: Cloud) -> AsyncIterator[GlanceClient]:
    async with client_for(cloud) as client:
        yield client
