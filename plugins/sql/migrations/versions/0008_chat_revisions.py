"""Chat revisions: a counter per chat that every edit or deletion of its messages moves.

``chat_revisions`` holds, for each chat whose messages were ever updated or
deleted, a counter that triggers move on every such change, through chatwright
or plain SQL, a REPLACE on SQLite included (a chat without a row is at 0). A
turn reads it with its agent row and, when it has not moved since the chat's
previous turn in the process, reads only the messages newer than the window it
read then
(:mod:`chatwright.plugins.sql.windows`). Inserting messages does not move it:
the turn reads what is newer anyway, and turns insert messages all the time.

Rows are never deleted, so that a counter never starts again from a number a
process may have kept.

On PostgreSQL the triggers run once per statement, and their function runs as
its owner (``SECURITY DEFINER``): the users of the ``supabase`` backend change
their messages under row-level security, and the table is the framework's,
closed to the Data API roles. ``TRUNCATE`` of the messages moves the row of the
nil chat id, which every turn adds to its chat's: every chat's, with or
without a row of its own.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from chatwright.plugins.sql.migrations.data_api import close_function, close_table

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# The changed rows' chats in order, so that statements changing several chats
# take their counters' locks in one order.
POSTGRESQL_FUNCTION = """
CREATE FUNCTION chatwright_revise_chats() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = {schema}, pg_temp AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        -- Every chat, those without a row too: a turn adds this row's counter to its chat's.
        INSERT INTO chat_revisions AS r (chat_id, revision)
        VALUES ('00000000-0000-0000-0000-000000000000', 1)
        ON CONFLICT (chat_id) DO UPDATE SET revision = r.revision + 1;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO chat_revisions AS r (chat_id, revision)
        SELECT DISTINCT chat_id, 1 FROM old_rows ORDER BY chat_id
        ON CONFLICT (chat_id) DO UPDATE SET revision = r.revision + 1;
    ELSE
        -- An update may move a message to another chat: both chats move.
        INSERT INTO chat_revisions AS r (chat_id, revision)
        SELECT chat_id, 1 FROM (SELECT chat_id FROM old_rows UNION SELECT chat_id FROM new_rows) c
        ORDER BY chat_id
        ON CONFLICT (chat_id) DO UPDATE SET revision = r.revision + 1;
    END IF;
    RETURN NULL;
END
$$
"""

POSTGRESQL_TRIGGERS = {
    "chatwright_revise_updated": "AFTER UPDATE ON chat_messages "
    "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT",
    "chatwright_revise_deleted": "AFTER DELETE ON chat_messages "
    "REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT",
    "chatwright_revise_truncated": "AFTER TRUNCATE ON chat_messages FOR EACH STATEMENT",
}

_SQLITE_BUMP = """
        INSERT INTO chat_revisions (chat_id, revision) VALUES ({chat}, 1)
        ON CONFLICT (chat_id) DO UPDATE SET revision = revision + 1;"""

# SQLite has row triggers only; DELETE without WHERE fires them too (SQLite
# drops its truncate optimisation for a table with triggers). A REPLACE deletes
# the row it replaces without firing delete triggers (recursive triggers are
# off, as migration 0004's triggers need): the insert that replaces moves the
# chat of the row it replaces.
SQLITE_TRIGGERS = {
    "chatwright_revise_replaced": (
        "BEFORE INSERT ON chat_messages "
        "WHEN EXISTS (SELECT 1 FROM chat_messages WHERE id = NEW.id) BEGIN"
        """
        INSERT INTO chat_revisions (chat_id, revision)
        SELECT chat_id, 1 FROM chat_messages WHERE id = NEW.id
        ON CONFLICT (chat_id) DO UPDATE SET revision = revision + 1;"""
        " END"
    ),
    "chatwright_revise_updated": (
        "AFTER UPDATE ON chat_messages BEGIN"
        + _SQLITE_BUMP.format(chat="OLD.chat_id")
        + _SQLITE_BUMP.format(chat="NEW.chat_id")
        + " END"
    ),
    "chatwright_revise_deleted": (
        "AFTER DELETE ON chat_messages BEGIN" + _SQLITE_BUMP.format(chat="OLD.chat_id") + " END"
    ),
}


def upgrade() -> None:
    bind = op.get_bind()
    op.create_table(
        "chat_revisions",
        sa.Column("chat_id", sa.Uuid, nullable=False),
        sa.Column("revision", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("chat_id", name="pk_chat_revisions"),
    )
    if bind.dialect.name != "postgresql":
        for name, body in SQLITE_TRIGGERS.items():
            op.execute(f"CREATE TRIGGER {name} {body}")
        return
    close_table(bind, "chat_revisions")
    schema = bind.dialect.identifier_preparer.quote(bind.scalar(sa.text("SELECT current_schema()")))
    op.execute(POSTGRESQL_FUNCTION.replace("{schema}", schema))
    # Only ever run as a trigger, which needs no EXECUTE privilege: none for anyone
    # (Supabase grants new functions to its Data API roles, as it does tables).
    close_function(bind, "chatwright_revise_chats()")
    for name, when in POSTGRESQL_TRIGGERS.items():
        op.execute(f"CREATE TRIGGER {name} {when} EXECUTE FUNCTION chatwright_revise_chats()")


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        for name in POSTGRESQL_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name} ON chat_messages")
        op.execute("DROP FUNCTION IF EXISTS chatwright_revise_chats()")
    else:
        for name in SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    op.drop_table("chat_revisions")
