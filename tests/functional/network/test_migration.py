"""The network migration makes exactly the tables the models describe, on every database."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from tinystack.common.db import Base, Database, current_revision, upgrade
from tinystack.models import import_all


def test_the_schema_matches_the_models(db_url):
    import_all()
    db = Database(db_url)
    try:
        upgrade(db)
        assert current_revision(db) is not None
        with db.engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            diff = compare_metadata(context, Base.metadata)
        ours = [d for d in diff if "network_" in repr(d)]
        assert ours == []
    finally:
        db.dispose()
