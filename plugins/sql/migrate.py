"""Schema migrations of the ``sql`` backend: Alembic, run on the storage's own connection.

The migration scripts live in :mod:`chatwright.plugins.sql.migrations`; there is
no ``alembic.ini``, because the database URL comes from chatwright's settings.
These functions run inside ``AsyncConnection.run_sync``.
"""

from __future__ import annotations

import functools

import sqlalchemy as sa
from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
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
def _scripts() -> ScriptDirectory:
    # Loaded once per process: reading the scripts compiles every one of them, which
    # every command and server start would otherwise pay for several times over.
    return ScriptDirectory.from_config(_alembic_config())


@functools.cache
def head() -> str | None:
    """The revision the code expects: the newest migration script."""
    return _scripts().get_current_head()


# How current() joins the revisions of a version table that holds several.
SEVERAL = ", "


def current(sync_conn: Connection) -> str | None:
    """The revision the database is at (None before the first migration).

    A version table with several rows (a newer chatwright's branched history, or
    rows added by hand) gives them all, joined by :data:`SEVERAL`, for
    :func:`unknown` to name; Alembic's own call would raise.
    """
    context = MigrationContext.configure(sync_conn, opts={"version_table": schema.VERSION_TABLE})
    heads = context.get_current_heads()
    return SEVERAL.join(sorted(heads)) if heads else None


def _known(revision: str) -> bool:
    try:
        return _scripts().get_revision(revision) is not None
    except Exception:  # Alembic's errors for an unknown or malformed revision
        return False


def unknown(revision: str | None) -> str | None:
    """Why the database's ``revision`` cannot be used (a revision no migration script
    of this version has: the database was migrated by a newer chatwright; or several
    revisions at once), or None."""
    if revision is None:
        return None
    revisions = revision.split(SEVERAL) if SEVERAL in revision else [revision]
    strange = [r for r in revisions if not _known(r)]
    if not strange and len(revisions) == 1:
        return None
    if not strange:
        return (
            f"is at several schema revisions at once ({revision}) in its table "
            f"{schema.VERSION_TABLE}, which holds one: it was changed by hand. Use a backup "
            "from before that, or leave only the row of the revision the schema is at"
        )
    named = ", ".join(repr(r) for r in strange)
    plural = "s" if len(strange) > 1 else ""
    return (
        f"is at schema revision{plural} {named}, which this version of chatwright does not "
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
    revision = current(sync_conn)
    problem = unknown(revision)
    if problem is not None:
        raise StorageError(f"the database {problem}")
    if revision == head():
        return
    config = _alembic_config()
    config.attributes["connection"] = sync_conn
    scripts = _scripts()

    def steps(at: object, context: object) -> object:
        # What Alembic's ``upgrade`` command runs, on the scripts loaded once. A private
        # method of Alembic's: the migration tests fail first if it ever changes.
        return scripts._upgrade_revs("head", at)  # type: ignore[arg-type]

    with EnvironmentContext(config, scripts, fn=steps, destination_rev="head"):
        scripts.run_env()
