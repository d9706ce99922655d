"""On PostgreSQL: every framework table closed to the Data API roles ``anon`` and ``authenticated``.

Migration 0002 turned row-level security on for the per-user tables only, so
on a Supabase project — which grants every new ``public`` table and sequence to
``anon`` and ``authenticated`` — ``agents`` (model settings, API keys
included), ``agent_tools`` and the schema-version table were readable and
writable by anyone holding the public anon key. Here every framework table gets
row-level security with no policy for those roles, and their privileges (and
``PUBLIC``'s) on the tables and sequences are revoked, whatever default
privileges the database has; ``authenticated`` keeps on the per-user tables
what the ``supabase`` backend's user transactions need (see
:mod:`chatwright.plugins.sql.migrations.data_api`). Application tables that
backend secured earlier (they carry its ``chatwright_own_rows`` policy) are
closed the same way, since they got the same default grants. SQLite: nothing
to do.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from chatwright.plugins.sql.migrations.data_api import OWN_ROWS_POLICY, close_table
from chatwright.plugins.sql.schema import VERSION_TABLE

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

ADMIN_TABLES = ("agents", "agent_tools", VERSION_TABLE)
USER_TABLES = ("chat_sessions", "chat_messages", "prompt_customizations", "agent_memories")


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    for table in ADMIN_TABLES:
        close_table(bind, table)
    secured = bind.scalars(
        sa.text(
            "SELECT tablename FROM pg_policies WHERE schemaname = current_schema() "
            "AND policyname = :policy ORDER BY tablename"
        ),
        {"policy": OWN_ROWS_POLICY},
    )
    for table in dict.fromkeys([*USER_TABLES, *secured]):
        close_table(bind, table, own_rows=True)


def downgrade() -> None:
    # Row-level security goes back to 0002's state; the revoked privileges stay
    # revoked, since nothing chatwright runs ever needed them.
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in ADMIN_TABLES:
        op.execute(f'ALTER TABLE "{table}" DISABLE ROW LEVEL SECURITY')
