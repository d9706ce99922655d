"""Config changes by ``TRUNCATE`` reach every process, as changes of rows do.

The triggers that bump ``agents.config_version`` (migration 0004) and NOTIFY
``chatwright_config`` (migration 0002) run for each row inserted, updated or
deleted; PostgreSQL's ``TRUNCATE`` fires no row trigger, so a process that had
built an agent kept running tool rows a ``TRUNCATE agent_tools`` had removed.
Two statement-level triggers on PostgreSQL, which run before the rows go:

- ``BEFORE TRUNCATE ON agent_tools`` bumps the counter of every agent that has
  tool rows: the next turn of each, in any process, rebuilds it from the rows
  as they are then, and the ``UPDATE`` of the agents' rows NOTIFYs their names
  through migration 0002's trigger, so processes that LISTEN drop their builds
  at once.
- ``BEFORE TRUNCATE ON agents`` NOTIFYs the name of every agent (a ``DELETE``
  of an agent row NOTIFYs its name already). With the row gone, a turn's
  version check finds no agent and refuses the turn as one of an unknown agent,
  whatever a process has cached.

The function runs as the caller, as migration 0004's does (only the tables'
owner may ``TRUNCATE`` them); nobody gets ``EXECUTE`` on it.

SQLite has no ``TRUNCATE``: a ``DELETE`` without ``WHERE`` fires the row
triggers (SQLite drops its truncate optimisation for a table with triggers),
so there is nothing to do there.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import op

from chatwright.plugins.sql.migrations.data_api import close_function

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

FUNCTION = "chatwright_config_truncated"

POSTGRESQL_FUNCTION = f"""
CREATE FUNCTION {FUNCTION}() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'agents' THEN
        PERFORM pg_notify('chatwright_config', name) FROM agents;
    ELSE
        UPDATE agents SET config_version = config_version + 1
        WHERE id IN (SELECT agent_id FROM agent_tools);
    END IF;
    RETURN NULL;
END
$$
"""

POSTGRESQL_TRIGGERS = {
    "agents": "BEFORE TRUNCATE ON agents FOR EACH STATEMENT",
    "agent_tools": "BEFORE TRUNCATE ON agent_tools FOR EACH STATEMENT",
}


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    op.execute(POSTGRESQL_FUNCTION)
    # Only ever run as a trigger, which needs no EXECUTE privilege: none for anyone
    # (Supabase grants new functions to its Data API roles, as it does tables).
    close_function(bind, f"{FUNCTION}()")
    for when in POSTGRESQL_TRIGGERS.values():
        op.execute(f"CREATE TRIGGER {FUNCTION} {when} EXECUTE FUNCTION {FUNCTION}()")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in POSTGRESQL_TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {FUNCTION} ON {table}")
    op.execute(f"DROP FUNCTION IF EXISTS {FUNCTION}()")
