"""Alembic environment: migrations run on the connection ``common/db.upgrade`` gives.

Every service's models import into one metadata (``common.db.Base``); the
revision files in ``versions/`` are the only thing that creates or changes the
schema. To write a new one after changing models::

    tinystack db revision -m "what changed"
"""

from alembic import context

from tinystack.common.db import Base
from tinystack.models import import_all

import_all()
target_metadata = Base.metadata


def run() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("migrations run through tinystack.common.db.upgrade")
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run()
