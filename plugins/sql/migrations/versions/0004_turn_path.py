"""The turn path: a config version counter, turn leases, user data out of config notifications.

1. ``agents.config_version``, a counter that triggers bump on every change of
   the agent row or of any of its tool rows (through chatwright or plain SQL),
   so that a turn checks whether its cached build is current by reading one
   integer instead of digesting every row.
2. ``chat_leases``: one row per chat with a turn running, with its holder and
   an expiry. A turn takes the lease in the transaction that starts it and
   gives it back in the one that ends it, so turns of one chat run one at a
   time across processes without a connection held per turn (and through a
   transaction pooler); a crashed process's lease is taken over once it
   expires. Closed to the Data API roles like every framework table.
3. On PostgreSQL, memory and prompt customizations no longer NOTIFY
   ``chatwright_config``: they are a user's data, read by every turn, and never
   part of a built agent, so a change must not drop anyone's build.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from chatwright.plugins.sql.migrations.data_api import close_table
from chatwright.plugins.sql.schema import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

USER_DATA = ("prompt_customizations", "agent_memories")

POSTGRESQL_BUMP = """
CREATE FUNCTION chatwright_bump_config_version() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'agents' THEN
        -- Any change of the row that does not set the counter itself bumps it.
        IF NEW.config_version IS NOT DISTINCT FROM OLD.config_version THEN
            NEW.config_version := OLD.config_version + 1;
        END IF;
        RETURN NEW;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        UPDATE agents SET config_version = config_version + 1 WHERE id = OLD.agent_id;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        UPDATE agents SET config_version = config_version + 1
        WHERE id = NEW.agent_id AND (TG_OP = 'INSERT' OR NEW.agent_id <> OLD.agent_id);
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER chatwright_config_version BEFORE UPDATE ON agents
    FOR EACH ROW EXECUTE FUNCTION chatwright_bump_config_version();
CREATE TRIGGER chatwright_config_version AFTER INSERT OR UPDATE OR DELETE ON agent_tools
    FOR EACH ROW EXECUTE FUNCTION chatwright_bump_config_version();
"""

# SQLite: recursive triggers are off, so the agents trigger's own UPDATE does not
# fire it again; its WHEN clause lets an UPDATE that sets the counter stand.
SQLITE_BUMP = (
    """
    CREATE TRIGGER chatwright_agents_config_version AFTER UPDATE ON agents
    WHEN NEW.config_version IS OLD.config_version
    BEGIN
        UPDATE agents SET config_version = config_version + 1 WHERE id = NEW.id;
    END
    """,
    """
    CREATE TRIGGER chatwright_tools_inserted AFTER INSERT ON agent_tools
    BEGIN
        UPDATE agents SET config_version = config_version + 1 WHERE id = NEW.agent_id;
    END
    """,
    """
    CREATE TRIGGER chatwright_tools_updated AFTER UPDATE ON agent_tools
    BEGIN
        UPDATE agents SET config_version = config_version + 1
        WHERE id IN (OLD.agent_id, NEW.agent_id);
    END
    """,
    """
    CREATE TRIGGER chatwright_tools_deleted AFTER DELETE ON agent_tools
    BEGIN
        UPDATE agents SET config_version = config_version + 1 WHERE id = OLD.agent_id;
    END
    """,
)
SQLITE_TRIGGERS = (
    "chatwright_agents_config_version",
    "chatwright_tools_inserted",
    "chatwright_tools_updated",
    "chatwright_tools_deleted",
)


def upgrade() -> None:
    bind = op.get_bind()
    with op.batch_alter_table("agents") as batch:
        batch.add_column(
            sa.Column("config_version", sa.BigInteger, nullable=False, server_default="0")
        )
    op.create_table(
        "chat_leases",
        sa.Column("chat_id", sa.Uuid, nullable=False),
        sa.Column("holder", sa.String(64), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("chat_id", name="pk_chat_leases"),
    )
    if bind.dialect.name != "postgresql":
        for statement in SQLITE_BUMP:
            op.execute(statement)
        return
    op.execute(POSTGRESQL_BUMP)
    close_table(bind, "chat_leases")
    for table in USER_DATA:
        op.execute(f"DROP TRIGGER IF EXISTS chatwright_notify_config ON {table}")


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        for table in USER_DATA:
            op.execute(
                f"CREATE TRIGGER chatwright_notify_config AFTER INSERT OR UPDATE OR DELETE "
                f"ON {table} FOR EACH ROW EXECUTE FUNCTION chatwright_notify_config()"
            )
        op.execute("DROP TRIGGER IF EXISTS chatwright_config_version ON agent_tools")
        op.execute("DROP TRIGGER IF EXISTS chatwright_config_version ON agents")
        op.execute("DROP FUNCTION IF EXISTS chatwright_bump_config_version()")
    else:
        for name in SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    op.drop_table("chat_leases")
    with op.batch_alter_table("agents") as batch:
        batch.drop_column("config_version")
