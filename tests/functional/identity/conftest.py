"""Fixtures for the identity API tests: a started ``Cloud`` and a client that speaks Keystone.

- ``identity_db``: a database URL, once per configured database (ids sqlite,
  mysql, postgresql, from ``db_server`` in ``tests/conftest.py``). The schema
  stays for the session and the rows are reset before each test: migrating
  a fresh schema costs about 1.7 s per test on MariaDB, resetting the rows a
  few milliseconds.
- ``make_cloud(**identity)``: starts a ``Cloud`` on that database and a
  per-test data dir, both as the first start of the session left them (see
  its docstring); call it again after ``stop()`` to restart on the same
  database and data dir.
- ``fast_bcrypt`` (every test, from ``tests/functional/conftest.py``): bcrypt
  cost 4 instead of the shipped floor of 12, which
  ``test_security_compliance.py`` checks.
- ``cloud``: one started with the default settings; ``api``: a
  ``KeystoneClient`` on it (``await api.token("demo", project="demo")``...).
- ``clock``: stops identity's ``utcnow`` at a whole second; ``advance`` it.

Paths given to the client are relative to the identity prefix: ``/v3/users``.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tinystack import cloud as cloud_module
from tinystack.cloud import Cloud
from tinystack.common.db import Base, utcnow
from tinystack.identity import auth as auth_module
from tinystack.identity import credentials as credentials_module
from tinystack.identity import service as service_module
from tinystack.models import import_all

from ..conftest import CloudSettings, StartCloud, engine_for
from .client import Clock, KeystoneClient, client_for


Rows = dict[str, list[dict]]


def _tables(conn: sa.Connection) -> list[sa.Table]:
    """tinystack's tables present in the database, parents first."""
    import_all()
    present = set(sa.inspect(conn).get_table_names())
    return [t for t in Base.metadata.sorted_tables if t.name in present]


def _without_serial(table: sa.Table, row: dict) -> dict:
    """A row minus its autoincrement id, which the database hands out again."""
    serial = table.autoincrement_column
    return {k: v for k, v in row.items() if serial is None or k != serial.name}


def read_rows(engine: sa.Engine) -> Rows:
    with engine.connect() as conn:
        rows = {}
        for table in _tables(conn):
            query = table.select()
            if table.autoincrement_column is not None:
                query = query.order_by(table.autoincrement_column)
            rows[table.name] = [_without_serial(table, dict(r._mapping))
                                for r in conn.execute(query)]
        return rows


def reset_rows(engine: sa.Engine, rows: Rows | None = None) -> bool:
    """Make the tables hold exactly ``rows`` (none by default).

    False when a table of ``rows`` is missing (someone dropped the schema):
    the caller starts from an empty database instead.
    """
    with engine.begin() as conn:
        tables = _tables(conn)
        if rows and not set(rows) <= {t.name for t in tables}:
            return False
        if conn.dialect.name == "mysql":  # it checks a self-referencing key row by row
            conn.execute(sa.text("SET FOREIGN_KEY_CHECKS = 0"))
        for table in reversed(tables):
            conn.execute(table.delete())
        for table in tables:
            if rows and rows.get(table.name):
                conn.execute(table.insert(), rows[table.name])
        if conn.dialect.name == "mysql":
            conn.execute(sa.text("SET FOREIGN_KEY_CHECKS = 1"))
    return True


@dataclass
class Bootstrapped:
    """What a first start leaves: the rows and the data dir (keys, credentials.yaml)."""

    rows: Rows
    data_dir: Path


@pytest.fixture(scope="session")
def _bootstrapped() -> dict[str, Bootstrapped]:
    """Per database URL, the state right after the first bootstrap of the session."""
    return {}


@pytest.fixture
def identity_db(db_server, request: pytest.FixtureRequest) -> str:
    """The URL of this session's database for identity tests, once per configured database."""
    url = request.getfixturevalue("_sqlite_url") if db_server is None else db_server.url
    if db_server is not None and db_server.kind == "mysql" and "?" not in url:
        url += "?ssl_disabled=true"  # PyMySQL spends 50 ms of CPU on TLS per new connection
    engine_for(url, request.getfixturevalue("_engines"))
    return url


MakeCloud = Callable[..., Awaitable[Cloud]]


@pytest.fixture
def make_cloud(identity_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
               _engines: dict[str, sa.Engine], _bootstrapped: dict[str, Bootstrapped],
               tmp_path_factory: pytest.TempPathFactory, cloud_settings: CloudSettings,
               start_cloud: StartCloud) -> MakeCloud:
    """``await make_cloud(lockout_failure_attempts=3)``: a started Cloud, stopped after the test.

    Keyword arguments are identity settings. Every Cloud of one test shares
    the database and the data dir, so a second one is a restart. The Cloud is
    a controller serving identity alone: the other APIs and the node agents
    are left out, so their first-start work (an image build) stays out of
    these tests.

    The first start of the session bootstraps an empty database; its rows
    and data dir are kept, and every later test starts from a copy of them,
    which its own start then finds complete (a first bootstrap costs several
    times a later one).
    """
    monkeypatch.setattr(cloud_module, "CONTROLLER_SERVICES", [])
    engine = _engines[identity_db]
    data_dir = tmp_path / "data"
    known = _bootstrapped.get(identity_db)
    if known is not None and reset_rows(engine, known.rows):
        shutil.copytree(known.data_dir, data_dir)
    else:
        known = None
        reset_rows(engine)

    starts = 0

    async def make(**identity: Any) -> Cloud:
        nonlocal starts
        cloud = await start_cloud(cloud_settings(identity_db, data_dir=data_dir,
                                                 identity=identity))
        starts += 1
        if known is None and not identity and starts == 1:
            copy = tmp_path_factory.mktemp("bootstrapped") / "data"
            shutil.copytree(data_dir, copy)
            _bootstrapped[identity_db] = Bootstrapped(read_rows(engine), copy)
        return cloud

    return make


@pytest.fixture
async def cloud(make_cloud: MakeCloud) -> Cloud:
    return await make_cloud()


@pytest.fixture
async def api(cloud: Cloud) -> AsyncIterator[KeystoneClient]:
    async with client_for(cloud) as client:
        yield client


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """Identity's clock, stopped at a whole second of the real now (see ``Clock``)."""
    stopped = Clock(utcnow().replace(microsecond=0))
    for module in (auth_module, service_module, credentials_module):
        monkeypatch.setattr(module, "utcnow", stopped)
    return stopped
