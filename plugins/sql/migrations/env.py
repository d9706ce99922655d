"""Alembic environment of the ``sql`` backend.

Migrations always run on a connection handed over by
:meth:`SQLStorage.upgrade <chatwright.plugins.sql.storage.SQLStorage.upgrade>`
(``config.attributes["connection"]``), never from an ``alembic.ini``: the
database URL comes from chatwright's settings.
"""

from __future__ import annotations

from alembic import context

from chatwright.plugins.sql.schema import VERSION_TABLE, metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=VERSION_TABLE,
    render_as_batch=connection.dialect.name == "sqlite",
    transaction_per_migration=False,
)
with context.begin_transaction():
    context.run_migrations()
