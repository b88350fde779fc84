"""Fixtures every test tier shares: the databases and the broker tests run against.

A plain ``pytest`` runs everything: each test that takes ``db_url`` runs once
per database (SQLite, MariaDB, PostgreSQL) and tests that take ``amqp_url``
or ``bus_url`` use RabbitMQ. Narrow it with options or environment:

``--dbs`` / ``TINYSTACK_TEST_DBS``
    Comma-separated; ``sqlite`` and/or server URLs whose user may create
    databases. Default: ``sqlite``, MariaDB and PostgreSQL on 127.0.0.1.
``--amqp-url`` / ``TINYSTACK_TEST_AMQP_URL``
    RabbitMQ URL; empty skips the tests that need it. Default: guest on 127.0.0.1.

A server in the list that does not answer is an error, not a skip: take it
out of the list if you mean to run without it. Each server gets one fresh
database ``tinystack_test_<random>`` per test session, emptied before every
test and dropped at the end; SQLite is a new file per test. The e2e fixtures
(a real ``tinystack up``) are in ``tests/e2e/conftest.py``.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from tinystack.common.db import normalize_url

DEFAULT_DBS = "sqlite,mysql://root@127.0.0.1:3306/test,postgresql://postgres@127.0.0.1:5432/test"
DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
TIERS = ("unit", "functional", "e2e")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("tinystack")
    group.addoption(
        "--dbs", default=os.environ.get("TINYSTACK_TEST_DBS", DEFAULT_DBS),
        help="comma-separated databases for db_url: sqlite and/or server URLs "
        "(env TINYSTACK_TEST_DBS; default: %(default)s)",
    )
    group.addoption(
        "--amqp-url", default=os.environ.get("TINYSTACK_TEST_AMQP_URL", DEFAULT_AMQP_URL),
        help="RabbitMQ for amqp_url and bus_url; empty skips those tests "
        "(env TINYSTACK_TEST_AMQP_URL; default: %(default)s)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "unit: pure logic, no I/O beyond temp files")
    config.addinivalue_line("markers", "functional: one API in-process over ASGI")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test with its tier (the folder it lives in), so ``-m e2e`` selects."""
    for item in items:
        parts = item.path.parts
        for tier in TIERS:
            if tier in parts:
                item.add_marker(getattr(pytest.mark, tier))
                break


def configured_dbs(config: pytest.Config) -> list[str]:
    return [db.strip() for db in config.getoption("dbs").split(",") if db.strip()]


def db_id(url: str) -> str:
    """A short test id for a database entry: sqlite, mysql, postgresql."""
    if url == "sqlite" or url.startswith("sqlite"):
        return "sqlite"
    scheme = urlsplit(url).scheme.split("+")[0]
    return {"mariadb": "mysql", "postgres": "postgresql"}.get(scheme, scheme)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "db_server" in metafunc.fixturenames:
        dbs = configured_dbs(metafunc.config)
        metafunc.parametrize("db_server", dbs, ids=[db_id(d) for d in dbs],
                             indirect=True, scope="session")
    if "bus_url" in metafunc.fixturenames:
        metafunc.parametrize("bus_kind", ["memory", "amqp"], indirect=True)


# -- databases ------------------------------------------------------------------


@dataclass
class ScratchDatabase:
    """One fresh database on a server, made for this test session."""

    url: str
    """Plain URL (mysql://, postgresql://) a tinystack setting takes."""
    engine: sa.Engine
    """An admin engine on that database, used to empty it between tests."""

    @property
    def kind(self) -> str:
        return db_id(self.url)

    def empty(self) -> None:
        """Drop every table (and PostgreSQL type and sequence) in the database."""
        with self.engine.connect() as conn:
            if self.kind == "postgresql":
                conn.execute(sa.text("SET lock_timeout = '10s'"))
                conn.execute(sa.text("DROP SCHEMA public CASCADE"))
                conn.execute(sa.text("CREATE SCHEMA public"))
            else:
                tables = sa.inspect(conn).get_table_names()
                if tables:
                    conn.execute(sa.text("SET SESSION lock_wait_timeout = 10"))
                    conn.execute(sa.text("SET FOREIGN_KEY_CHECKS = 0"))
                    for table in tables:
                        conn.execute(sa.text(f"DROP TABLE `{table}`"))
                    conn.execute(sa.text("SET FOREIGN_KEY_CHECKS = 1"))
            conn.commit()


def _assert_answers(url: str, what: str) -> None:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or {"mysql": 3306, "postgresql": 5432, "amqp": 5672}.get(db_id(url), 0)
    try:
        socket.create_connection((host, port), timeout=3).close()
    except OSError as exc:
        pytest.fail(
            f"{what} at {host}:{port} does not answer ({exc}); ./run-tests.sh starts it, "
            "or leave it out with TINYSTACK_TEST_DBS / TINYSTACK_TEST_AMQP_URL",
            pytrace=False,
        )


def create_database(
    server_url: str, prefix: str = "tinystack_test"
) -> tuple[ScratchDatabase, Callable[[], None]]:
    """A new empty database on the server of ``server_url``, and the function that drops it."""
    _assert_answers(server_url, db_id(server_url))
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(normalize_url(server_url), isolation_level="AUTOCOMMIT",
                             poolclass=sa.NullPool)
    with admin.connect() as conn:
        if db_id(server_url) == "mysql":
            conn.execute(sa.text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
        else:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
    engine = sa.create_engine(normalize_url(url), poolclass=sa.NullPool)

    def drop() -> None:
        engine.dispose()
        with admin.connect() as conn:
            if db_id(server_url) == "mysql":
                conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{name}`"))
            else:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return ScratchDatabase(url=url, engine=engine), drop


@pytest.fixture(scope="session")
def make_database() -> Iterator[Callable[[str], ScratchDatabase]]:
    """Factory: ``make_database(server_url)`` gives a fresh database, dropped at session end."""
    drops: list[Callable[[], None]] = []

    def make(server_url: str) -> ScratchDatabase:
        database, drop = create_database(server_url)
        drops.append(drop)
        return database

    yield make
    for drop in reversed(drops):
        drop()


@pytest.fixture(scope="session")
def db_server(request: pytest.FixtureRequest, make_database) -> ScratchDatabase | None:
    """One entry of ``--dbs``: None for SQLite, else this session's database on that server."""
    if request.param == "sqlite":
        return None
    return make_database(request.param)


@pytest.fixture
def db_url(db_server: ScratchDatabase | None, tmp_path) -> str:
    """A URL to an empty database, once per configured database (ids sqlite/mysql/postgresql).

    Give it to ``tinystack.common.db.Database`` or as the ``db`` setting; the
    schema is yours to make (``upgrade``). Dispose your engines at the end.
    """
    if db_server is None:
        return f"sqlite:///{tmp_path / 'tinystack.db'}"
    db_server.empty()
    return db_server.url


# -- message bus ------------------------------------------------------------------


@pytest.fixture(scope="session")
def amqp_url(pytestconfig: pytest.Config) -> str:
    """The RabbitMQ URL tests may use; skips the test when none is configured."""
    url = pytestconfig.getoption("amqp_url")
    if not url:
        pytest.skip("no RabbitMQ configured (TINYSTACK_TEST_AMQP_URL is empty)")
    _assert_answers(url, "RabbitMQ")
    return url


@pytest.fixture
def bus_kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def bus_url(bus_kind: str, request: pytest.FixtureRequest) -> str:
    """The bus setting, once in-process (``memory://``) and once on RabbitMQ (ids memory/amqp)."""
    if bus_kind == "memory":
        return "memory://"
    return request.getfixturevalue("amqp_url")
