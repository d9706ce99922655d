"""Write safety: approval modes on tool rows, users' choices, pending actions, the audit log.

1. ``agent_tools.approval`` (``auto``, ``required`` or ``user``) and
   ``agent_tools.approval_default`` (what a ``user``-mode row asks of users who
   have not chosen). Existing rows become ``auto``: they ran unattended before.
   Changing either is an UPDATE of the tool row, so migration 0004's triggers
   bump ``agents.config_version`` and running processes rebuild the agent.
2. ``tool_approval_choices``: a user's own choice for a ``user``-mode row.
3. ``pending_actions``: tool calls held for their user's decision.
4. ``audit_log``: every write a tool made, append-only for the application.

On PostgreSQL the three new tables are closed to the Data API roles like every
framework table (see :mod:`chatwright.plugins.sql.migrations.data_api`).
``tool_approval_choices`` and ``pending_actions`` are per-user data: the
``supabase`` backend's ``authenticated`` role keeps what its user transactions
need, limited to the request's own rows. ``audit_log`` is append-only for it:
``SELECT`` and ``INSERT`` of its own rows only, no ``UPDATE``, ``DELETE`` or
``TRUNCATE``; and a trigger refuses those to every role but the table's owner
(and superusers), which covers roles a hosted database grants everything to by
default (Supabase's ``service_role``). Retention is the owner's business.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from chatwright.plugins.sql.migrations.data_api import OWN_ROWS, OWN_ROWS_POLICY, close_table
from chatwright.plugins.sql.schema import BigId, JSONValue, UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


APPROVAL_MODE = "approval IN ('auto', 'required', 'user')"
APPROVAL_DEFAULT = "approval_default IN ('auto', 'required')"

# SQLite adds a column with its own CHECK in place (no table rebuild, which
# would drop migration 0004's triggers on agent_tools) and drops it the same way.
SQLITE_ADD = (
    "ALTER TABLE agent_tools ADD COLUMN approval VARCHAR(16) DEFAULT 'auto' NOT NULL "
    f"CONSTRAINT ck_agent_tools_approval_mode CHECK ({APPROVAL_MODE})",
    "ALTER TABLE agent_tools ADD COLUMN approval_default VARCHAR(16) DEFAULT 'required' "
    f"NOT NULL CONSTRAINT ck_agent_tools_approval_default CHECK ({APPROVAL_DEFAULT})",
)

POSTGRESQL_APPEND_ONLY = """
CREATE FUNCTION chatwright_audit_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF pg_has_role(current_user, (SELECT relowner FROM pg_class WHERE oid = TG_RELID), 'USAGE')
    THEN
        IF TG_OP = 'UPDATE' THEN
            RETURN NEW;
        END IF;
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit_log is append-only: % refused for role %', TG_OP, current_user
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER chatwright_audit_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION chatwright_audit_append_only();
CREATE TRIGGER chatwright_audit_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION chatwright_audit_append_only();
"""


def upgrade() -> None:
    bind = op.get_bind()
    postgresql = bind.dialect.name == "postgresql"
    if postgresql:
        op.add_column(
            "agent_tools",
            sa.Column("approval", sa.String(16), nullable=False, server_default="auto"),
        )
        op.add_column(
            "agent_tools",
            sa.Column("approval_default", sa.String(16), nullable=False, server_default="required"),
        )
        op.create_check_constraint("ck_agent_tools_approval_mode", "agent_tools", APPROVAL_MODE)
        op.create_check_constraint(
            "ck_agent_tools_approval_default", "agent_tools", APPROVAL_DEFAULT
        )
    else:
        for statement in SQLITE_ADD:
            op.execute(statement)
    op.create_table(
        "tool_approval_choices",
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("tool_id", sa.Integer, nullable=False),
        sa.Column("choice", sa.String(16), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("user_id", "tool_id", name="pk_tool_approval_choices"),
        sa.ForeignKeyConstraint(
            ["tool_id"],
            ["agent_tools.id"],
            ondelete="CASCADE",
            name="fk_tool_approval_choices_tool_id_agent_tools",
        ),
        sa.CheckConstraint(
            "choice IN ('auto', 'required')", name="ck_tool_approval_choices_choice"
        ),
    )
    op.create_table(
        "pending_actions",
        sa.Column("id", sa.Uuid, nullable=False),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("agent_name", sa.String(200), nullable=False),
        sa.Column("chat_id", sa.Uuid, nullable=False),
        sa.Column("turn_id", sa.Uuid, nullable=False),
        sa.Column("tool_id", sa.Integer, nullable=True),
        sa.Column("tool_name", sa.String(200), nullable=False),
        sa.Column("tool_call_id", sa.String(200), nullable=False),
        sa.Column("args", JSONValue(), nullable=False),
        sa.Column("preview", JSONValue(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False, server_default="pending"),
        sa.Column("created_at", UTCDateTime(), nullable=False, server_default=sa.func.now()),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("decided_at", UTCDateTime(), nullable=True),
        sa.Column("decided_by", sa.String(255), nullable=True),
        sa.Column("result", sa.Text, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_pending_actions"),
        sa.CheckConstraint(
            "status IN ('pending', 'approved', 'denied', 'expired', 'done', 'failed')",
            name="ck_pending_actions_status",
        ),
    )
    op.create_index("ix_pending_actions_user_id_status", "pending_actions", ["user_id", "status"])
    op.create_index("ix_pending_actions_chat_id_status", "pending_actions", ["chat_id", "status"])
    op.create_table(
        "audit_log",
        sa.Column("id", BigId, nullable=False, autoincrement=True),
        sa.Column("at", UTCDateTime(), nullable=False, server_default=sa.func.now()),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("agent_name", sa.String(200), nullable=False),
        sa.Column("chat_id", sa.Uuid, nullable=True),
        sa.Column("turn_id", sa.Uuid, nullable=True),
        sa.Column("tool_id", sa.Integer, nullable=True),
        sa.Column("tool_name", sa.String(200), nullable=False),
        sa.Column("operation", sa.String(32), nullable=False),
        sa.Column("table_name", sa.String(200), nullable=True),
        sa.Column("args", JSONValue(), nullable=False, server_default=sa.text("'{}'")),
        sa.Column("row_ids", JSONValue(), nullable=False, server_default=sa.text("'[]'")),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("approval", sa.String(16), nullable=True),
        sa.Column("decided_by", sa.String(255), nullable=True),
        sa.Column("pending_id", sa.Uuid, nullable=True),
        sa.Column("changes", JSONValue(), nullable=False, server_default=sa.text("'[]'")),
        sa.Column("undo_of", sa.Uuid, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_audit_log"),
    )
    op.create_index("ix_audit_log_user_id_id", "audit_log", ["user_id", "id"])
    op.create_index("ix_audit_log_chat_id_turn_id", "audit_log", ["chat_id", "turn_id"])
    if not postgresql:
        return
    close_table(bind, "tool_approval_choices", own_rows=True)
    close_table(bind, "pending_actions", own_rows=True)
    _secure_audit_log(bind)


def _secure_audit_log(bind: sa.Connection) -> None:
    """Closed like every table, then SELECT and INSERT of own rows back to ``authenticated``.

    The policy is the per-user one every user table has (so the deployment
    check of docs/deploy.md knows it); the grants are what make it append-only.
    """
    close_table(bind, "audit_log")
    op.execute(
        f"CREATE POLICY {OWN_ROWS_POLICY} ON audit_log FOR ALL TO authenticated "
        f"USING ({OWN_ROWS}) WITH CHECK ({OWN_ROWS})"
    )
    op.execute("GRANT SELECT, INSERT ON TABLE audit_log TO authenticated")
    op.execute("GRANT USAGE ON SEQUENCE audit_log_id_seq TO authenticated")
    has_service_role = bind.scalar(sa.text("SELECT 1 FROM pg_roles WHERE rolname = 'service_role'"))
    if has_service_role:
        op.execute("REVOKE UPDATE, DELETE, TRUNCATE ON TABLE audit_log FROM service_role")
    op.execute(POSTGRESQL_APPEND_ONLY)


def downgrade() -> None:
    bind = op.get_bind()
    op.drop_table("audit_log")
    op.drop_table("pending_actions")
    op.drop_table("tool_approval_choices")
    if bind.dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS chatwright_audit_append_only()")
        op.drop_constraint("ck_agent_tools_approval_default", "agent_tools", type_="check")
        op.drop_constraint("ck_agent_tools_approval_mode", "agent_tools", type_="check")
        op.drop_column("agent_tools", "approval_default")
        op.drop_column("agent_tools", "approval")
        return
    op.execute("ALTER TABLE agent_tools DROP COLUMN approval_default")
    op.execute("ALTER TABLE agent_tools DROP COLUMN approval")
