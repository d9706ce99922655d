"""A chat stays its first user's, whoever writes ``chat_sessions``.

A chat belongs to the user and agent of its first session
(``SQLSessionStore.owner``: the earliest ``created_at``). chatwright's own
open refuses a chat that has another user's session (``_claim``), but under
0002 ``authenticated`` could also insert and update its own rows of
``chat_sessions`` through Supabase's Data API, every column of them: a user
who knew another user's ``chat_id`` could insert a session of their own in
that chat dated in the past, become its owner, and lock its user out of it.

On PostgreSQL, where the role ``authenticated`` exists:

- ``UPDATE`` on ``chat_sessions`` is given back for ``updated_at`` alone (the
  one column chatwright changes as a user: a heartbeat, the end of a turn), so
  no user moves a session to another chat, user or agent, nor changes when it
  began;
- a row inserted as ``authenticated`` is refused (``insufficient_privilege``)
  when the chat has a session of another user or agent: a trigger, running as
  the table's owner so that row-level security hides nothing from it, takes
  the advisory lock chatwright's own open takes for the chat, then looks.
  Its function has no ``EXECUTE`` for anyone. chatwright's own open, which
  runs the insert as the user, has already checked the same under the same
  lock, so it is never refused by it.

Sessions inserted before this revision are left as they are. SQLite (no
roles, no Data API): nothing to do.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from chatwright.plugins.sql.migrations.data_api import close_function

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

FUNCTION = "chatwright_session_claim"
POSTGRESQL_FUNCTION = """
CREATE FUNCTION chatwright_session_claim() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = {schema}, pg_temp AS $$
BEGIN
    -- The lock chatwright's own open takes (plugins/sql/sessions.py).
    PERFORM pg_advisory_xact_lock(hashtextextended('chatwright:claim:' || NEW.chat_id::text, 0));
    IF EXISTS (
        SELECT 1 FROM chat_sessions
        WHERE chat_id = NEW.chat_id AND (user_id <> NEW.user_id OR agent_name <> NEW.agent_name)
    ) THEN
        RAISE EXCEPTION 'chat % is another user''s or agent''s', NEW.chat_id
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END
$$
"""
# Only for the users' role: the framework (the table's owner) checks its own
# opens, and imports of another system's sessions are the owner's to make.
POSTGRESQL_TRIGGER = (
    f"CREATE TRIGGER {FUNCTION} BEFORE INSERT ON chat_sessions FOR EACH ROW "
    f"WHEN (current_user = 'authenticated') EXECUTE FUNCTION {FUNCTION}()"
)


def _has_authenticated(bind: sa.Connection) -> bool:
    found = bind.scalar(sa.text("SELECT 1 FROM pg_roles WHERE rolname = 'authenticated'"))
    return found is not None


def _own_rows(bind: sa.Connection) -> bool:
    """Whether ``chat_sessions`` has the per-user policy, with which close_table gave
    ``authenticated`` its privileges on the table."""
    policy = bind.scalar(
        sa.text(
            "SELECT 1 FROM pg_policies WHERE schemaname = current_schema() "
            "AND tablename = 'chat_sessions' AND policyname = 'chatwright_own_rows'"
        )
    )
    return policy is not None


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql" or not _has_authenticated(bind):
        return
    if _own_rows(bind):
        op.execute("REVOKE UPDATE ON TABLE chat_sessions FROM authenticated")
        op.execute("GRANT UPDATE (updated_at) ON TABLE chat_sessions TO authenticated")
    schema = bind.dialect.identifier_preparer.quote(bind.scalar(sa.text("SELECT current_schema()")))
    op.execute(POSTGRESQL_FUNCTION.replace("{schema}", schema))
    close_function(bind, f"{FUNCTION}()")
    op.execute(POSTGRESQL_TRIGGER)


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    op.execute(f"DROP TRIGGER IF EXISTS {FUNCTION} ON chat_sessions")
    op.execute(f"DROP FUNCTION IF EXISTS {FUNCTION}()")
    if not _has_authenticated(bind):
        return
    # As 0013 left it (close_table's per-user grants), where the policy is there.
    if _own_rows(bind):
        op.execute("REVOKE UPDATE (updated_at) ON TABLE chat_sessions FROM authenticated")
        op.execute("GRANT UPDATE ON TABLE chat_sessions TO authenticated")
