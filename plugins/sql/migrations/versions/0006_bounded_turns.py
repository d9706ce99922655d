"""Bounded turns: per-agent limits, token usage, budgets, chat summaries.

1. ``agents``: ``turn_timeout``, ``max_model_calls``, ``max_tool_calls``,
   ``history_tokens`` (NULL: the setting of the same name) and ``summarize``.
   Changing them is an UPDATE of the agent row, so migration 0004's triggers
   bump ``config_version``.
2. ``token_usage``: one row per turn with its tokens; ``usage_totals``: each
   user's tokens per UTC day and month; ``usage_reservations``: what running
   turns are assumed to spend; ``user_budgets``: per-user budget overrides.
   These four are the framework's: closed to the Data API roles with no
   grant back, so that a user cannot rewrite what they spent.
3. ``chat_summaries``: a chat's summary of what fell out of its window; per-user
   data like the chat's messages.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from chatwright.plugins.sql.migrations.data_api import close_table
from chatwright.plugins.sql.schema import BigId, UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# (column, type, CHECK); SQLite adds each in place, its CHECK with it (no table
# rebuild, which would drop migration 0004's triggers on agents).
LIMITS = (
    ("turn_timeout", "FLOAT", "turn_timeout IS NULL OR turn_timeout > 0"),
    ("max_model_calls", "INTEGER", "max_model_calls IS NULL OR max_model_calls > 0"),
    ("max_tool_calls", "INTEGER", "max_tool_calls IS NULL OR max_tool_calls > 0"),
    ("history_tokens", "INTEGER", "history_tokens IS NULL OR history_tokens > 0"),
)
FRAMEWORK_TABLES = ("token_usage", "usage_totals", "usage_reservations", "user_budgets")


def upgrade() -> None:
    bind = op.get_bind()
    postgresql = bind.dialect.name == "postgresql"
    for column, type_, check in LIMITS:
        name = f"ck_agents_{column}_positive"
        if postgresql:
            op.execute(f"ALTER TABLE agents ADD COLUMN {column} {type_}")
            op.create_check_constraint(name, "agents", check)
        else:
            op.execute(
                f"ALTER TABLE agents ADD COLUMN {column} {type_} CONSTRAINT {name} CHECK ({check})"
            )
    default = "false" if postgresql else "0"
    op.execute(f"ALTER TABLE agents ADD COLUMN summarize BOOLEAN DEFAULT {default} NOT NULL")
    op.create_table(
        "token_usage",
        sa.Column("id", BigId, nullable=False, autoincrement=True),
        sa.Column("at", UTCDateTime(), nullable=False, server_default=sa.func.now()),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("agent_name", sa.String(200), nullable=False),
        sa.Column("chat_id", sa.Uuid, nullable=True),
        sa.Column("turn_id", sa.Uuid, nullable=True),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("model_calls", sa.Integer, nullable=False, server_default="0"),
        sa.Column("input_tokens", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("output_tokens", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("cached_tokens", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("cost", sa.Float, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_token_usage"),
    )
    op.create_index("ix_token_usage_user_id_at", "token_usage", ["user_id", "at"])
    op.create_index("ix_token_usage_at", "token_usage", ["at"])
    op.create_table(
        "usage_totals",
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("period", sa.String(8), nullable=False),
        sa.Column("starts", sa.Date, nullable=False),
        sa.Column("tokens", sa.BigInteger, nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("user_id", "period", "starts", name="pk_usage_totals"),
        sa.CheckConstraint("period IN ('day', 'month')", name="ck_usage_totals_period"),
    )
    op.create_table(
        "usage_reservations",
        sa.Column("turn_id", sa.Uuid, nullable=False),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("tokens", sa.BigInteger, nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("turn_id", name="pk_usage_reservations"),
    )
    op.create_index("ix_usage_reservations_user_id", "usage_reservations", ["user_id"])
    op.create_table(
        "user_budgets",
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("daily_tokens", sa.BigInteger, nullable=True),
        sa.Column("monthly_tokens", sa.BigInteger, nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("user_id", name="pk_user_budgets"),
        sa.CheckConstraint(
            "daily_tokens IS NULL OR daily_tokens >= -1", name="ck_user_budgets_daily_tokens"
        ),
        sa.CheckConstraint(
            "monthly_tokens IS NULL OR monthly_tokens >= -1",
            name="ck_user_budgets_monthly_tokens",
        ),
    )
    op.create_table(
        "chat_summaries",
        sa.Column("chat_id", sa.Uuid, nullable=False),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("through_id", sa.BigInteger, nullable=False),
        sa.Column("messages", sa.Integer, nullable=False, server_default="0"),
        sa.Column("updated_at", UTCDateTime(), nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("chat_id", name="pk_chat_summaries"),
    )
    op.create_index("ix_chat_summaries_user_id", "chat_summaries", ["user_id"])
    if not postgresql:
        return
    for table in FRAMEWORK_TABLES:
        close_table(bind, table)
    close_table(bind, "chat_summaries", own_rows=True)


def downgrade() -> None:
    bind = op.get_bind()
    for table in ("chat_summaries", "user_budgets", "usage_reservations", "usage_totals"):
        op.drop_table(table)
    op.drop_table("token_usage")
    if bind.dialect.name == "postgresql":
        for column, _, _ in LIMITS:
            op.drop_constraint(f"ck_agents_{column}_positive", "agents", type_="check")
    for column in ("summarize", *(c for c, _, _ in reversed(LIMITS))):
        op.execute(f"ALTER TABLE agents DROP COLUMN {column}")
