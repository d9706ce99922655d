"""Schema migrations of the ``sql`` backend: Alembic, run on the storage's own connection.

The migration scripts live in :mod:`chatwright.plugins.sql.migrations`; there is
no ``alembic.ini``, because the database URL comes from chatwright's settings.
These functions run inside ``AsyncConnection.run_sync``.
"""

from __future__ import annotations

import functools

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from chatwright.errors import StorageError
from chatwright.plugins.sql import schema

MIGRATIONS = "chatwright.plugins.sql:migrations"
# Any constant works; it only has to be the same in every process.
_UPGRADE_LOCK_KEY = 0x63687477_0001


@functools.cache
def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", MIGRATIONS)
    return config


@functools.cache
def head() -> str | None:
    """The revision the code expects: the newest migration script."""
    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


def current(sync_conn: Connection) -> str | None:
    """The revision the database is at (None before the first migration)."""
    context = MigrationContext.configure(sync_conn, opts={"version_table": schema.VERSION_TABLE})
    return context.get_current_revision()


def unknown(revision: str | None) -> str | None:
    """Why the database's ``revision`` cannot be used (a revision no migration script
    of this version has: the database was migrated by a newer chatwright), or None."""
    if revision is None:
        return None
    try:
        known = ScriptDirectory.from_config(_alembic_config()).get_revision(revision)
    except Exception:  # Alembic's errors for an unknown or malformed revision
        known = None
    if known is not None:
        return None
    return (
        f"is at schema revision {revision!r}, which this version of chatwright does not "
        f"know (it knows revisions up to {head()}): a newer chatwright migrated it. "
        "Install that version (or newer), or use a backup from before it"
    )


def upgrade(sync_conn: Connection) -> None:
    """Migrate to the head revision, in the transaction of ``sync_conn``.

    :raises StorageError: the database is at a revision this version does not know.
    """
    if sync_conn.dialect.name == "postgresql":
        # Several processes starting at once migrate one after the other.
        sync_conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _UPGRADE_LOCK_KEY})
    problem = unknown(current(sync_conn))
    if problem is not None:
        raise StorageError(f"the database {problem}")
    config = _alembic_config()
    config.attributes["connection"] = sync_conn
    command.upgrade(config, "head")
