"""Active sessions written by the framework only: no ``INSERT`` or ``UPDATE`` for users.

Under 0009, ``authenticated`` (a Supabase user, through chatwright's user
transactions or the Data API) could insert and update their own rows of
``active_sessions``, as of every per-user table. Nothing of a user's needs to:
opening a session inserts its active row as the connecting role, the trigger
of 0009 keeps its ``updated_at`` (as the table's owner), and closing one
deletes it (which users keep, with ``SELECT``, on their own rows). With those
privileges a user could rename their active row's ``client_key`` (and open the
same key again: two active sessions of one key), push its ``updated_at`` past
every sweep, and tell from the error of an insert naming another user's session
whether that session is active (its primary key refuses before its foreign key
does). PostgreSQL only, and only where the role exists.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def _has_authenticated(bind: sa.Connection) -> bool:
    found = bind.scalar(sa.text("SELECT 1 FROM pg_roles WHERE rolname = 'authenticated'"))
    return found is not None


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql" or not _has_authenticated(bind):
        return
    op.execute("REVOKE INSERT, UPDATE ON TABLE active_sessions FROM authenticated")


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql" or not _has_authenticated(bind):
        return
    # As 0009 left it (close_table's per-user grants), where the policy is there.
    policy = bind.scalar(
        sa.text(
            "SELECT 1 FROM pg_policies WHERE schemaname = current_schema() "
            "AND tablename = 'active_sessions' AND policyname = 'chatwright_own_rows'"
        )
    )
    if policy is not None:
        op.execute("GRANT INSERT, UPDATE ON TABLE active_sessions TO authenticated")
