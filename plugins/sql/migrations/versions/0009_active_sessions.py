"""Active sessions in a table of their own: deactivating a session deletes a row.

``chat_sessions.is_active`` goes; a session is active while ``active_sessions``
holds a row for it (``session_id``, with the session's ``user_id``,
``agent_name`` and ``client_key``, and its ``updated_at``). Until now the
sweeper deactivated an idle session by updating the flag, and PostgreSQL wrote
a new version of the row with a new entry in every index of ``chat_sessions``
that was not partial on the flag: a million idle sessions took about 20 s on a
small machine. Deleting the same rows from a narrow table touches no index and
took about 0.6 s there.

- The sweeper's index (``updated_at``) and the idempotent open's unique
  ``(user_id, agent_name, client_key)`` move to ``active_sessions``;
  ``chat_sessions`` keeps ``(chat_id, created_at)`` (whose a chat is: its
  first session's) and ``(user_id, agent_name, created_at)`` (resuming the
  latest chat), and gains
  a unique index on ``(id, user_id, agent_name)``, which the foreign key of
  ``active_sessions`` refers to: an active row is its own session's, of its
  own user and agent, whoever writes it (deleting the session deletes it).
- ``updated_at`` is written on ``chat_sessions`` as before (a heartbeat, the
  end of a turn); a trigger copies every change of it to the session's
  active row, so the sweeper reads it there and a session swept keeps the time
  it was last used.
- On PostgreSQL the table gets row-level security like the other per-user
  tables (``chatwright_own_rows``), and the trigger's function runs as its
  owner, with no ``EXECUTE`` for anyone.

Building the indexes and moving the active sessions happens in the upgrade's
transaction: writes of sessions wait while it runs (``chatwright db upgrade``).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from chatwright.plugins.sql.migrations.data_api import close_function, close_table
from chatwright.plugins.sql.schema import UTCDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

TRIGGER = "chatwright_session_touched"

POSTGRESQL_FUNCTION = """
CREATE FUNCTION chatwright_session_touched() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = {schema}, pg_temp AS $$
BEGIN
    UPDATE active_sessions SET updated_at = NEW.updated_at WHERE session_id = NEW.id;
    RETURN NULL;
END
$$
"""
POSTGRESQL_TRIGGER = (
    f"CREATE TRIGGER {TRIGGER} AFTER UPDATE OF updated_at ON chat_sessions FOR EACH ROW "
    "WHEN (NEW.updated_at IS DISTINCT FROM OLD.updated_at) "
    "EXECUTE FUNCTION chatwright_session_touched()"
)
SQLITE_TRIGGER = (
    f"CREATE TRIGGER {TRIGGER} AFTER UPDATE OF updated_at ON chat_sessions "
    "WHEN NEW.updated_at IS NOT OLD.updated_at BEGIN "
    "UPDATE active_sessions SET updated_at = NEW.updated_at WHERE session_id = NEW.id; END"
)

OLD_INDEXES = (
    "ix_chat_sessions_active_stale",
    "ux_chat_sessions_client_key",
    "ix_chat_sessions_user_id_agent_name_is_active_created_at",
)
OWNER_INDEX = "ux_chat_sessions_id_user_id_agent_name"
# Whose a chat is (its first session's), found without a sort: the other index
# of chat_sessions that begins with user_id no longer loses to it for lack of
# statistics.
OWNER_INDEX_BY_CHAT = "ix_chat_sessions_chat_id_created_at"


def upgrade() -> None:
    bind = op.get_bind()
    op.create_index(OWNER_INDEX, "chat_sessions", ["id", "user_id", "agent_name"], unique=True)
    op.create_table(
        "active_sessions",
        sa.Column("session_id", sa.Uuid, nullable=False),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("agent_name", sa.String(200), nullable=False),
        sa.Column("client_key", sa.String(200), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("session_id", name="pk_active_sessions"),
        sa.ForeignKeyConstraint(
            ["session_id", "user_id", "agent_name"],
            ["chat_sessions.id", "chat_sessions.user_id", "chat_sessions.agent_name"],
            name="fk_active_sessions_session_id_chat_sessions",
            ondelete="CASCADE",
        ),
    )
    op.execute(
        "INSERT INTO active_sessions (session_id, user_id, agent_name, client_key, updated_at) "
        "SELECT id, user_id, agent_name, client_key, updated_at FROM chat_sessions WHERE is_active"
    )
    op.create_index("ix_active_sessions_updated_at", "active_sessions", ["updated_at"])
    op.create_index(
        "ix_active_sessions_user_id_agent_name", "active_sessions", ["user_id", "agent_name"]
    )
    op.create_index(
        "ux_active_sessions_client_key",
        "active_sessions",
        ["user_id", "agent_name", "client_key"],
        unique=True,
        sqlite_where=sa.text("client_key IS NOT NULL"),
        postgresql_where=sa.text("client_key IS NOT NULL"),
    )
    for name in OLD_INDEXES:
        op.drop_index(name, "chat_sessions")
    op.create_index(
        "ix_chat_sessions_user_id_agent_name_created_at",
        "chat_sessions",
        ["user_id", "agent_name", "created_at"],
    )
    op.drop_index("ix_chat_sessions_chat_id", "chat_sessions")
    op.create_index(OWNER_INDEX_BY_CHAT, "chat_sessions", ["chat_id", "created_at"])
    op.drop_column("chat_sessions", "is_active")
    if bind.dialect.name != "postgresql":
        op.execute(SQLITE_TRIGGER)
        return
    close_table(bind, "active_sessions", own_rows=True)
    schema = bind.dialect.identifier_preparer.quote(bind.scalar(sa.text("SELECT current_schema()")))
    op.execute(POSTGRESQL_FUNCTION.replace("{schema}", schema))
    # Only ever run as a trigger, which needs no EXECUTE privilege: none for anyone.
    close_function(bind, "chatwright_session_touched()")
    op.execute(POSTGRESQL_TRIGGER)


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.execute(f"DROP TRIGGER IF EXISTS {TRIGGER} ON chat_sessions")
        op.execute("DROP FUNCTION IF EXISTS chatwright_session_touched()")
    else:
        op.execute(f"DROP TRIGGER IF EXISTS {TRIGGER}")
    op.add_column(
        "chat_sessions",
        sa.Column("is_active", sa.Boolean, nullable=False, server_default=sa.true()),
    )
    op.execute(
        "UPDATE chat_sessions SET is_active = (id IN (SELECT session_id FROM active_sessions))"
    )
    # The active rows' keys, unique among them, for 0008's unique index of active keys
    # (the key a session opened with may since have been written on its active row).
    op.execute(
        "UPDATE chat_sessions SET client_key = (SELECT a.client_key FROM active_sessions a "
        "WHERE a.session_id = chat_sessions.id) "
        "WHERE id IN (SELECT session_id FROM active_sessions)"
    )
    op.drop_index("ix_chat_sessions_user_id_agent_name_created_at", "chat_sessions")
    op.drop_index(OWNER_INDEX_BY_CHAT, "chat_sessions")
    op.create_index("ix_chat_sessions_chat_id", "chat_sessions", ["chat_id"])
    op.drop_table("active_sessions")
    op.drop_index(OWNER_INDEX, "chat_sessions")
    op.create_index(
        "ix_chat_sessions_active_stale",
        "chat_sessions",
        ["updated_at"],
        sqlite_where=sa.text("is_active"),
        postgresql_where=sa.text("is_active"),
    )
    op.create_index(
        "ix_chat_sessions_user_id_agent_name_is_active_created_at",
        "chat_sessions",
        ["user_id", "agent_name", "is_active", "created_at"],
    )
    op.create_index(
        "ux_chat_sessions_client_key",
        "chat_sessions",
        ["user_id", "agent_name", "client_key"],
        unique=True,
        sqlite_where=sa.text("is_active AND client_key IS NOT NULL"),
        postgresql_where=sa.text("is_active AND client_key IS NOT NULL"),
    )
