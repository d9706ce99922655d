"""A user's messages go only into a chat of theirs, whoever writes ``chat_messages``.

Under the per-user policy (0002), ``authenticated`` may insert and update its
own rows of ``chat_messages`` through Supabase's Data API, every column of
them, ``chat_id`` included: a user who knew another user's chat id could put
rows of their own in it. The victim's turns never read them (a window is the
owner's rows), but the revision triggers of 0008 move the chat's revision for
any row of it: one insert and one delete made the chat's next turn read its
window whole, and kept it from being told of a write its stopped turn had
made (``audit_log.chat_revision``, 0015), whose call the model would then make
again.

On PostgreSQL, where the role ``authenticated`` exists, a row inserted or
updated as ``authenticated`` is refused (``insufficient_privilege``) when its
chat has a session of another user: a trigger, running as the table's owner
so that row-level security hides nothing from it. chatwright's own turns store
a chat's messages as its owner, so they are never refused by it.

Rows stored before this revision are left as they are. SQLite (no roles, no
Data API): nothing to do.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from chatwright.plugins.sql.migrations.data_api import close_function

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

FUNCTION = "chatwright_message_of_own_chat"
POSTGRESQL_FUNCTION = """
CREATE FUNCTION chatwright_message_of_own_chat() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = {schema}, pg_temp AS $$
BEGIN
    IF EXISTS (
        SELECT 1 FROM chat_sessions WHERE chat_id = NEW.chat_id AND user_id <> NEW.user_id
    ) THEN
        RAISE EXCEPTION 'chat % is another user''s', NEW.chat_id
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END
$$
"""
# Only for the users' role: the framework writes messages of a chat as its owner,
# and imports of another system's history are the table owner's to make.
POSTGRESQL_TRIGGER = (
    f"CREATE TRIGGER {FUNCTION} BEFORE INSERT OR UPDATE ON chat_messages FOR EACH ROW "
    f"WHEN (current_user = 'authenticated') EXECUTE FUNCTION {FUNCTION}()"
)


def _has_authenticated(bind: sa.Connection) -> bool:
    found = bind.scalar(sa.text("SELECT 1 FROM pg_roles WHERE rolname = 'authenticated'"))
    return found is not None


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql" or not _has_authenticated(bind):
        return
    schema = bind.dialect.identifier_preparer.quote(bind.scalar(sa.text("SELECT current_schema()")))
    op.execute(POSTGRESQL_FUNCTION.replace("{schema}", schema))
    close_function(bind, f"{FUNCTION}()")
    op.execute(POSTGRESQL_TRIGGER)


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    op.execute(f"DROP TRIGGER IF EXISTS {FUNCTION} ON chat_messages")
    op.execute(f"DROP FUNCTION IF EXISTS {FUNCTION}()")
