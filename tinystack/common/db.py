"""The SQL layer every service's ``models.py`` builds on.

``Base`` is the one declarative base (one metadata, so one Alembic history);
``Database`` owns the engine and hands out transactional sessions. The schema
is made only by the Alembic migrations in ``tinystack/migrations`` (see
``upgrade``), never by ``create_all``. SQLite is the default; MariaDB/MySQL and
PostgreSQL URLs are mapped to the drivers tinystack installs (PyMySQL,
psycopg 3). Services run their queries in worker threads; read
``identity/service.py`` for the way a service uses this.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

__all__ = ["Base", "Database", "new_id", "utcnow", "upgrade", "normalize_url"]

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING)


def new_id() -> str:
    """A 32-hex-digit id, the form Keystone and Neutron use."""
    return uuid.uuid4().hex


def utcnow() -> dt.datetime:
    """Naive UTC now: every database here stores naive UTC timestamps."""
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def normalize_url(url: str) -> str:
    """Pick the installed driver for a plain mysql:// or postgresql:// URL."""
    for plain, driver in (
        ("mysql://", "mysql+pymysql://"),
        ("mariadb://", "mysql+pymysql://"),
        ("postgresql://", "postgresql+psycopg://"),
        ("postgres://", "postgresql+psycopg://"),
    ):
        if url.startswith(plain):
            return driver + url[len(plain):]
    return url


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


class Database:
    """An engine and a session factory for one database URL."""

    def __init__(self, url: str) -> None:
        self.url = normalize_url(url)
        kwargs: dict = {"future": True}
        if self.url.startswith("sqlite"):
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 10}
            path = self.url.split("///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
        else:
            kwargs.update(pool_pre_ping=True, pool_recycle=3600, pool_size=10)
            if self.url.startswith("mysql"):
                kwargs["connect_args"] = {"connect_timeout": 10, "charset": "utf8mb4"}
            else:
                kwargs["connect_args"] = {"connect_timeout": 10}
        self.engine: Engine = sa.create_engine(self.url, **kwargs)
        if self.url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """A session whose work commits on success and rolls back on error."""
        with self._sessions.begin() as session:
            yield session

    def dispose(self) -> None:
        self.engine.dispose()


def upgrade(db: Database, revision: str = "head") -> None:
    """Bring the schema to ``revision`` with the Alembic migrations."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent.parent / "migrations"))
    with db.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def current_revision(db: Database) -> str | None:
    """The revision the database is at, or None before the first migration."""
    from alembic.runtime.migration import MigrationContext

    with db.engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()
