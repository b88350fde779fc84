"""Fixtures every service's functional tests share: an emptied database and started clouds.

- ``fast_bcrypt`` (every test): bcrypt cost ``FAST_ROUNDS`` instead of the
  shipped floor of 12 (a hash is 1 ms, not 250).
- ``_engines``: one SQLAlchemy engine per database URL for the whole session.
- ``empty_db``: a database URL with no rows, once per configured database
  (ids sqlite, mysql, postgresql); the schema stays between tests, because
  migrating afresh costs seconds per test.
- ``cloud_settings(db, **sections)``: the settings of a controller on that
  database with a per-test data dir and bcrypt cost ``FAST_ROUNDS``; each
  keyword is a settings section (``image={...}``), ``identity`` merged into
  the fast bcrypt cost.
- ``start_cloud(settings)``: a started ``Cloud``, stopped after the test.

Each service's own ``conftest.py`` builds its ``make_cloud`` from these.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tinystack import config
from tinystack.cloud import Cloud
from tinystack.common.db import Base, normalize_url
from tinystack.identity import passwords
from tinystack.models import import_all

FAST_ROUNDS = 4

CloudSettings = Callable[..., config.Settings]
StartCloud = Callable[[config.Settings], Awaitable[Cloud]]


def empty_rows(engine: sa.Engine) -> None:
    """Delete every row of every tinystack table present, keeping the schema."""
    import_all()
    with engine.begin() as conn:
        present = set(sa.inspect(conn).get_table_names())
        for table in reversed(Base.metadata.sorted_tables):
            if table.name in present:
                conn.execute(table.delete())


@pytest.fixture(autouse=True)
def fast_bcrypt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(passwords, "MIN_ROUNDS", FAST_ROUNDS)


@pytest.fixture(scope="session")
def _engines() -> Iterator[dict[str, sa.Engine]]:
    engines: dict[str, sa.Engine] = {}
    yield engines
    for engine in engines.values():
        engine.dispose()


@pytest.fixture(scope="session")
def _sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('functional-db') / 'tinystack.db'}"


def engine_for(url: str, engines: dict[str, sa.Engine]) -> sa.Engine:
    if url not in engines:
        engines[url] = sa.create_engine(normalize_url(url), pool_size=1)
    return engines[url]


@pytest.fixture
def empty_db(db_server, request: pytest.FixtureRequest,
             _engines: dict[str, sa.Engine]) -> str:
    url = request.getfixturevalue("_sqlite_url") if db_server is None else db_server.url
    empty_rows(engine_for(url, _engines))
    return url


@pytest.fixture
def cloud_settings(tmp_path: Path) -> CloudSettings:
    def settings(db: str, *, data_dir: Path | None = None, identity: dict | None = None,
                 **sections: Any) -> config.Settings:
        return config.load(
            data_dir=data_dir or tmp_path / "data", db=db,
            clouds_yaml=tmp_path / "clouds.yaml", roles=["controller"],
            identity={"password_hash_rounds": FAST_ROUNDS, **(identity or {})}, **sections)

    return settings


@pytest.fixture
async def start_cloud() -> AsyncIterator[StartCloud]:
    started: list[Cloud] = []

    async def start(settings: config.Settings) -> Cloud:
        cloud = Cloud(settings)
        await cloud.start()
        started.append(cloud)
        return cloud

    yield start
    for cloud in reversed(started):
        if cloud.started:
            await cloud.stop()
