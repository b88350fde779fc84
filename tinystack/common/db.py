"""The SQL layer every service's ``models.py`` builds on.

``Base`` is the one declarative base (one metadata, so one Alembic history);
``Database`` owns the engine and hands out transactional sessions. The schema
is made only by the Alembic migrations in ``tinystack/migrations`` (see
``upgrade``, which leaves Alembic unloaded when the database is already at
the head revision), never by ``create_all``. SQLite is the default; MariaDB/MySQL and
PostgreSQL URLs are mapped to the drivers tinystack installs (PyMySQL,
psycopg 3). Services run their queries in worker threads; read
``identity/service.py`` for the way a service uses this.
"""

from __future__ import annotations

import ast
import contextlib
import datetime as dt
import logging
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

__all__ = ["Base", "Database", "new_id", "utcnow", "upgrade", "normalize_url", "at_head",
           "head_revisions", "current_revision"]

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent.parent / "migrations"
_REVISION_LINE = re.compile(r"^(revision|down_revision)\s*(?::[^=\n]*)?=(.*)$", re.MULTILINE)

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


def head_revisions(versions_dir: Path = MIGRATIONS_DIR / "versions") -> set[str] | None:
    """The head revisions of the migration files, read from their source without Alembic.

    None when a file does not say plainly, on one line each, what its
    ``revision`` and ``down_revision`` are; then only Alembic can tell.
    """
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in sorted(versions_dir.glob("*.py")):
        found: dict[str, object] = {}
        for name, value in _REVISION_LINE.findall(path.read_text()):
            try:
                found[name] = ast.literal_eval(value.split("#", 1)[0].strip())
            except (ValueError, SyntaxError):
                return None
        revision, down = found.get("revision"), found.get("down_revision", ...)
        if not isinstance(revision, str) or down is ...:
            return None
        revisions.add(revision)
        if isinstance(down, str):
            parents.add(down)
        elif isinstance(down, (tuple, list)):
            parents.update(down)
        elif down is not None:
            return None
    return revisions - parents or None


def at_head(db: Database) -> bool:
    """Whether the database records exactly the head revisions of the migration files."""
    heads = head_revisions()
    if heads is None:
        return False
    with db.engine.connect() as connection:
        if not sa.inspect(connection).has_table("alembic_version"):
            return False
        stored = set(connection.execute(sa.text("SELECT version_num FROM alembic_version"))
                     .scalars())
    return stored == heads


def upgrade(db: Database, revision: str = "head") -> None:
    """Bring the schema to ``revision`` with the Alembic migrations.

    A database already at the head is left as it is without loading Alembic
    (a second start saves its import and environment, a few tenths of a second).
    """
    if revision == "head" and at_head(db):
        log.debug("database schema already at the head revision")
        return
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with db.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def current_revision(db: Database) -> str | None:
    """The revision the database is at, or None before the first migration."""
    from alembic.runtime.migration import MigrationContext

    with db.engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()
