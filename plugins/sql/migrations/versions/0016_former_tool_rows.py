"""A user's rows stay covered by export and erasure after the tool row that scoped them.

Which application tables hold a user's rows, and by which column, is read from
the ``crud`` tool rows (``chatwright.userdata.crud_scopes``). Once the row
that scoped a table was removed (``tools remove``, ``agents delete``, an
import with ``--prune``) or pointed elsewhere, ``users export`` left the
table out and ``users erase`` said it had erased everything while the user's
rows stayed.

``former_tool_rows`` keeps the type and configuration of every ``crud`` tool
row as it was before it was deleted or its configuration changed, by
triggers, whatever deletes or changes it (chatwright, a cascade from its
agent, plain SQL; on PostgreSQL a ``TRUNCATE`` too, which keeps every ``crud``
row of the table first). Export and erasure read these with the current rows. It is
the framework's, closed to the Data API roles; on PostgreSQL the trigger's
function runs as its owner.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from chatwright.plugins.sql.migrations.data_api import close_function, close_table
from chatwright.plugins.sql.schema import JSONValue, UTCDateTime

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

TABLE = "former_tool_rows"
FUNCTION = "chatwright_keep_former_tool_row"
POSTGRESQL_FUNCTION = """
CREATE FUNCTION chatwright_keep_former_tool_row() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = {schema}, pg_temp AS $$
BEGIN
    INSERT INTO former_tool_rows (tool_id, type, config) VALUES (OLD.id, OLD.type, OLD.config);
    RETURN NULL;
END
$$
"""
TRUNCATE_FUNCTION = "chatwright_keep_truncated_tool_rows"
POSTGRESQL_TRUNCATE_FUNCTION = """
CREATE FUNCTION chatwright_keep_truncated_tool_rows() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = {schema}, pg_temp AS $$
BEGIN
    INSERT INTO former_tool_rows (tool_id, type, config)
    SELECT id, type, config FROM agent_tools WHERE type = 'crud' ORDER BY id;
    RETURN NULL;
END
$$
"""
# IS NOT: SQLite's IS DISTINCT FROM is 3.39's; both say "differs, NULL included".
CHANGED = "OLD.type = 'crud' AND (OLD.config {differs} NEW.config OR NEW.type <> 'crud')"
POSTGRESQL_TRIGGERS = {
    "chatwright_former_tool_deleted": "AFTER DELETE ON agent_tools FOR EACH ROW "
    "WHEN (OLD.type = 'crud')",
    "chatwright_former_tool_changed": "AFTER UPDATE ON agent_tools FOR EACH ROW "
    f"WHEN ({CHANGED.format(differs='IS DISTINCT FROM')})",
}
TRUNCATE_TRIGGER = "chatwright_former_tools_truncated"
_SQLITE_KEEP = (
    " BEGIN INSERT INTO former_tool_rows (tool_id, type, config) "
    "VALUES (OLD.id, OLD.type, OLD.config); END"
)
SQLITE_TRIGGERS = {
    "chatwright_former_tool_deleted": "AFTER DELETE ON agent_tools WHEN OLD.type = 'crud'"
    + _SQLITE_KEEP,
    "chatwright_former_tool_changed": "AFTER UPDATE ON agent_tools "
    f"WHEN {CHANGED.format(differs='IS NOT')}" + _SQLITE_KEEP,
}


def upgrade() -> None:
    bind = op.get_bind()
    op.create_table(
        TABLE,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("tool_id", sa.Integer, nullable=False),
        sa.Column("type", sa.String(100), nullable=False),
        sa.Column("config", JSONValue(), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("id", name="pk_former_tool_rows"),
    )
    if bind.dialect.name != "postgresql":
        for name, body in SQLITE_TRIGGERS.items():
            op.execute(f"CREATE TRIGGER {name} {body}")
        return
    close_table(bind, TABLE)
    schema = bind.dialect.identifier_preparer.quote(bind.scalar(sa.text("SELECT current_schema()")))
    op.execute(POSTGRESQL_FUNCTION.replace("{schema}", schema))
    op.execute(POSTGRESQL_TRUNCATE_FUNCTION.replace("{schema}", schema))
    # Only ever run as triggers: no EXECUTE for anyone.
    close_function(bind, f"{FUNCTION}()")
    close_function(bind, f"{TRUNCATE_FUNCTION}()")
    for name, when in POSTGRESQL_TRIGGERS.items():
        op.execute(f"CREATE TRIGGER {name} {when} EXECUTE FUNCTION {FUNCTION}()")
    op.execute(
        f"CREATE TRIGGER {TRUNCATE_TRIGGER} BEFORE TRUNCATE ON agent_tools "
        f"FOR EACH STATEMENT EXECUTE FUNCTION {TRUNCATE_FUNCTION}()"
    )


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        for name in [*POSTGRESQL_TRIGGERS, TRUNCATE_TRIGGER]:
            op.execute(f"DROP TRIGGER IF EXISTS {name} ON agent_tools")
        op.execute(f"DROP FUNCTION IF EXISTS {FUNCTION}()")
        op.execute(f"DROP FUNCTION IF EXISTS {TRUNCATE_FUNCTION}()")
    else:
        for name in SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    op.drop_table(TABLE)
