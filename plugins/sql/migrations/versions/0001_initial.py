"""The framework tables: agents, tools, sessions, messages, customizations, memories.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

from chatwright.plugins.sql.schema import BigId, JSONValue, UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _timestamps() -> list[sa.Column[Any]]:
    return [
        sa.Column("created_at", UTCDateTime(), nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", UTCDateTime(), nullable=False, server_default=sa.func.now()),
    ]


def upgrade() -> None:
    op.create_table(
        "agents",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("system_prompt", sa.Text, nullable=False, server_default=""),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("model_settings", JSONValue(), nullable=False, server_default=sa.text("'{}'")),
        sa.Column("history_window", sa.Integer, nullable=False, server_default="50"),
        *_timestamps(),
        sa.CheckConstraint("history_window > 0", name="ck_agents_history_window_positive"),
        sa.PrimaryKeyConstraint("id", name="pk_agents"),
        sa.UniqueConstraint("name", name="uq_agents_name"),
    )
    op.create_table(
        "agent_tools",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("agent_id", sa.Integer, nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("type", sa.String(100), nullable=False),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("config", JSONValue(), nullable=False, server_default=sa.text("'{}'")),
        sa.Column("is_active", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("position", sa.Integer, nullable=False, server_default="0"),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name="pk_agent_tools"),
        sa.ForeignKeyConstraint(
            ["agent_id"], ["agents.id"], ondelete="CASCADE", name="fk_agent_tools_agent_id_agents"
        ),
        sa.UniqueConstraint("agent_id", "name", name="uq_agent_tools_agent_id_name"),
    )
    op.create_index("ix_agent_tools_agent_id_position", "agent_tools", ["agent_id", "position"])

    op.create_table(
        "chat_sessions",
        sa.Column("id", sa.Uuid, nullable=False),
        sa.Column("chat_id", sa.Uuid, nullable=False),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("agent_name", sa.String(200), nullable=False),
        sa.Column("is_active", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("client_key", sa.String(200), nullable=True),
        *_timestamps(),
        sa.Column("metadata", JSONValue(), nullable=False, server_default=sa.text("'{}'")),
        sa.PrimaryKeyConstraint("id", name="pk_chat_sessions"),
    )
    op.create_index(
        "ix_chat_sessions_active_stale",
        "chat_sessions",
        ["updated_at"],
        sqlite_where=sa.text("is_active"),
        postgresql_where=sa.text("is_active"),
    )
    op.create_index(
        "ix_chat_sessions_user_id_agent_name_is_active_created_at",
        "chat_sessions",
        ["user_id", "agent_name", "is_active", "created_at"],
    )
    op.create_index("ix_chat_sessions_chat_id", "chat_sessions", ["chat_id"])
    op.create_index(
        "ux_chat_sessions_client_key",
        "chat_sessions",
        ["user_id", "agent_name", "client_key"],
        unique=True,
        sqlite_where=sa.text("is_active AND client_key IS NOT NULL"),
        postgresql_where=sa.text("is_active AND client_key IS NOT NULL"),
    )

    op.create_table(
        "chat_messages",
        sa.Column("id", BigId, nullable=False, autoincrement=True),
        sa.Column("chat_id", sa.Uuid, nullable=False),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("content", JSONValue(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("id", name="pk_chat_messages"),
    )
    op.create_index("ix_chat_messages_chat_id_id", "chat_messages", ["chat_id", "id"])

    op.create_table(
        "prompt_customizations",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("agent_name", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(100), nullable=False, server_default="instruction_set"),
        sa.Column("content", sa.Text, nullable=False, server_default=""),
        sa.Column("is_active", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("priority", sa.Integer, nullable=False, server_default="0"),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name="pk_prompt_customizations"),
        sa.UniqueConstraint(
            "user_id", "agent_name", "kind", name="uq_prompt_customizations_user_id_agent_name_kind"
        ),
    )
    op.create_table(
        "agent_memories",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("agent_name", sa.String(200), nullable=False),
        sa.Column("notes", sa.Text, nullable=False, server_default=""),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name="pk_agent_memories"),
        sa.UniqueConstraint("user_id", "agent_name", name="uq_agent_memories_user_id_agent_name"),
    )


def downgrade() -> None:
    for table in (
        "agent_memories",
        "prompt_customizations",
        "chat_messages",
        "chat_sessions",
        "agent_tools",
        "agents",
    ):
        op.drop_table(table)
