"""The tables of the ``sql`` backend, as SQLAlchemy Core metadata.

The migrations in ``migrations/versions`` create exactly this schema; a test
compares the two. Column types that differ between SQLite and PostgreSQL are
wrapped here: :class:`JSONValue` (JSONB on PostgreSQL, text on SQLite, where a
row inserted by hand may hold text that does not parse) and
:class:`UTCDateTime` (always timezone-aware UTC in Python).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

from chatwright.stores import InvalidJSON

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

VERSION_TABLE = "chatwright_schema_version"


class JSONValue(TypeDecorator[Any]):
    """JSON that survives bad rows: unparseable text reads back as :class:`InvalidJSON`."""

    impl = sa.Text
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.JSONB())
        return dialect.type_descriptor(sa.Text())

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if dialect.name == "postgresql" or value is None:
            return value
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if dialect.name == "postgresql":
            return value
        return decode_json(value)


def decode_json(text: str | None) -> Any:
    """JSON text as stored (SQLite), or read as text (PostgreSQL); :class:`InvalidJSON`
    when it does not parse."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError as exc:
        return InvalidJSON(text=text, error=str(exc))


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every dialect (SQLite stores them naive)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use an aware UTC datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite rowid needs INTEGER


def _timestamps() -> list[sa.Column[Any]]:
    return [
        sa.Column("created_at", UTCDateTime(), nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", UTCDateTime(), nullable=False, server_default=sa.func.now()),
    ]


metadata = sa.MetaData(naming_convention=NAMING)

agents = sa.Table(
    "agents",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(200), nullable=False, unique=True),
    sa.Column("system_prompt", sa.Text, nullable=False, server_default=""),
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("model_settings", JSONValue(), nullable=False, server_default=sa.text("'{}'")),
    sa.Column("history_window", sa.Integer, nullable=False, server_default="50"),
    *_timestamps(),
    # Bumped by triggers on every change of the row or its tool rows (migration 0004),
    # a TRUNCATE of the tool rows included (migration 0012).
    sa.Column("config_version", sa.BigInteger, nullable=False, server_default="0"),
    # The bounds of a turn (migration 0006); NULL: the setting of the same name.
    sa.Column("turn_timeout", sa.Float, nullable=True),
    sa.Column("max_model_calls", sa.Integer, nullable=True),
    sa.Column("max_tool_calls", sa.Integer, nullable=True),
    sa.Column("history_tokens", sa.Integer, nullable=True),
    sa.Column("summarize", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.CheckConstraint("history_window > 0", name="history_window_positive"),
    sa.CheckConstraint("turn_timeout IS NULL OR turn_timeout > 0", name="turn_timeout_positive"),
    sa.CheckConstraint(
        "max_model_calls IS NULL OR max_model_calls > 0", name="max_model_calls_positive"
    ),
    sa.CheckConstraint(
        "max_tool_calls IS NULL OR max_tool_calls > 0", name="max_tool_calls_positive"
    ),
    sa.CheckConstraint(
        "history_tokens IS NULL OR history_tokens > 0", name="history_tokens_positive"
    ),
)

agent_tools = sa.Table(
    "agent_tools",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column(
        "agent_id",
        sa.Integer,
        sa.ForeignKey("agents.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("type", sa.String(100), nullable=False),
    sa.Column("description", sa.Text, nullable=False, server_default=""),
    sa.Column("config", JSONValue(), nullable=False, server_default=sa.text("'{}'")),
    sa.Column("is_active", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("position", sa.Integer, nullable=False, server_default="0"),
    *_timestamps(),
    # Write safety (migration 0005): see chatwright.approvals.
    sa.Column("approval", sa.String(16), nullable=False, server_default="auto"),
    sa.Column("approval_default", sa.String(16), nullable=False, server_default="required"),
    sa.UniqueConstraint("agent_id", "name"),
    sa.Index(None, "agent_id", "position"),
    sa.CheckConstraint("approval IN ('auto', 'required', 'user')", name="approval_mode"),
    sa.CheckConstraint("approval_default IN ('auto', 'required')", name="approval_default"),
)

chat_sessions = sa.Table(
    "chat_sessions",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("chat_id", sa.Uuid, nullable=False),
    sa.Column("user_id", sa.String(255), nullable=False),
    sa.Column("agent_name", sa.String(200), nullable=False),
    sa.Column("client_key", sa.String(200), nullable=True),
    *_timestamps(),
    sa.Column("metadata", JSONValue(), nullable=False, server_default=sa.text("'{}'")),
    # Resuming the latest chat.
    sa.Index(None, "user_id", "agent_name", "created_at"),
    # Whose a chat is: its first session's.
    sa.Index(None, "chat_id", "created_at"),
    # What active_sessions' foreign key refers to: an active row is its session's user's.
    sa.Index("ux_chat_sessions_id_user_id_agent_name", "id", "user_id", "agent_name", unique=True),
)

# The sessions that are active, one row each (migration 0009): deactivating a
# session deletes its row, which touches no index, where an update of a flag
# in chat_sessions would add an entry to each of its indexes. ``updated_at``
# follows the session's (a trigger copies it on every change of chat_sessions').
active_sessions = sa.Table(
    "active_sessions",
    metadata,
    sa.Column("session_id", sa.Uuid, primary_key=True),
    sa.Column("user_id", sa.String(255), nullable=False),
    sa.Column("agent_name", sa.String(200), nullable=False),
    sa.Column("client_key", sa.String(200), nullable=True),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(
        ["session_id", "user_id", "agent_name"],
        ["chat_sessions.id", "chat_sessions.user_id", "chat_sessions.agent_name"],
        ondelete="CASCADE",
    ),
    # The sweeper's "active and stale" scan.
    sa.Index(None, "updated_at"),
    # A user's active sessions (and the row-level security policy's column).
    sa.Index(None, "user_id", "agent_name"),
    # Idempotent open: one active session per (user, agent, client_key).
    sa.Index(
        "ux_active_sessions_client_key",
        "user_id",
        "agent_name",
        "client_key",
        unique=True,
        sqlite_where=sa.text("client_key IS NOT NULL"),
        postgresql_where=sa.text("client_key IS NOT NULL"),
    ),
)

# One row per chat with a turn running: turns of a chat take turns across processes.
chat_leases = sa.Table(
    "chat_leases",
    metadata,
    sa.Column("chat_id", sa.Uuid, primary_key=True),
    sa.Column("holder", sa.String(64), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=False),
)

# Each chat's count of changes to its messages, kept by triggers (migration 0008):
# a turn reads only the messages newer than the window it read before when the
# count moved by exactly as many.
chat_revisions = sa.Table(
    "chat_revisions",
    metadata,
    sa.Column("chat_id", sa.Uuid, primary_key=True),
    sa.Column("revision", sa.BigInteger, nullable=False),
)

# The crud tool rows as they were before they were deleted or their configuration
# changed, kept by triggers (migration 0016): the application tables they scoped
# to users stay covered by export and erasure.
former_tool_rows = sa.Table(
    "former_tool_rows",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("tool_id", sa.Integer, nullable=False),
    sa.Column("type", sa.String(100), nullable=False),
    sa.Column("config", JSONValue(), nullable=False),
    sa.Column("at", UTCDateTime(), nullable=False, server_default=sa.func.now()),
)

chat_messages = sa.Table(
    "chat_messages",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("chat_id", sa.Uuid, nullable=False),
    sa.Column("user_id", sa.String(255), nullable=False),
    sa.Column("role", sa.String(32), nullable=False),
    sa.Column("content", JSONValue(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False, server_default=sa.func.now()),
    sa.Index(None, "chat_id", "id"),
    # The row-level-security policy column (migration 0002).
    sa.Index(None, "user_id"),
    # A turn's window on PostgreSQL (migration 0007): without statistics (a new
    # table) the planner would combine the two indexes above and sort the chat.
    sa.Index(None, "chat_id", "user_id", "id").ddl_if(dialect="postgresql"),
)

prompt_customizations = sa.Table(
    "prompt_customizations",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("user_id", sa.String(255), nullable=False),
    sa.Column("agent_name", sa.String(200), nullable=False),
    sa.Column("kind", sa.String(100), nullable=False, server_default="instruction_set"),
    sa.Column("content", sa.Text, nullable=False, server_default=""),
    sa.Column("is_active", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("priority", sa.Integer, nullable=False, server_default="0"),
    *_timestamps(),
    sa.UniqueConstraint("user_id", "agent_name", "kind"),
)

agent_memories = sa.Table(
    "agent_memories",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("user_id", sa.String(255), nullable=False),
    sa.Column("agent_name", sa.String(200), nullable=False),
    sa.Column("notes", sa.Text, nullable=False, server_default=""),
    *_timestamps(),
    sa.UniqueConstraint("user_id", "agent_name"),
)


# -- write safety (migration 0005) ---------------------------------------------

# A user's choice for a tool row in "user" approval mode.
tool_approval_choices = sa.Table(
    "tool_approval_choices",
    metadata,
    sa.Column("user_id", sa.String(255), primary_key=True),
    sa.Column(
        "tool_id",
        sa.Integer,
        sa.ForeignKey("agent_tools.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("choice", sa.String(16), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False, server_default=sa.func.now()),
    # The tool row as it was when chosen (``chatwright.approvals.tool_digest``; 0013).
    sa.Column("tool_digest", sa.String(64), nullable=True),
    sa.CheckConstraint("choice IN ('auto', 'required')", name="choice"),
)

# A tool call held for its user's decision.
pending_actions = sa.Table(
    "pending_actions",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("user_id", sa.String(255), nullable=False),
    sa.Column("agent_name", sa.String(200), nullable=False),
    sa.Column("chat_id", sa.Uuid, nullable=False),
    sa.Column("turn_id", sa.Uuid, nullable=False),
    # Not a foreign key: the action outlives a deleted tool row (it then fails, said so).
    sa.Column("tool_id", sa.Integer, nullable=True),
    sa.Column("tool_name", sa.String(200), nullable=False),
    # As the model gave it: any length (migration 0011).
    sa.Column("tool_call_id", sa.Text, nullable=False),
    sa.Column("args", JSONValue(), nullable=False),
    sa.Column("preview", JSONValue(), nullable=True),
    # The tool row as it was when the call was held (``chatwright.approvals.tool_digest``).
    sa.Column("tool_digest", sa.String(64), nullable=True),
    sa.Column("status", sa.String(16), nullable=False, server_default="pending"),
    sa.Column("created_at", UTCDateTime(), nullable=False, server_default=sa.func.now()),
    sa.Column("expires_at", UTCDateTime(), nullable=False),
    sa.Column("decided_at", UTCDateTime(), nullable=True),
    sa.Column("decided_by", sa.String(255), nullable=True),
    sa.Column("result", sa.Text, nullable=True),
    sa.Index(None, "user_id", "status"),
    sa.Index(None, "chat_id", "status"),
    sa.CheckConstraint(
        "status IN ('pending', 'approved', 'denied', 'expired', 'done', 'failed')",
        name="status",
    ),
)

# Every write a tool made: append-only for the application (migration 0005's grants).
audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
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
    # Before/after images: [{"key": {...}, "before": {...}|null, "after": {...}|null}, ...]
    sa.Column("changes", JSONValue(), nullable=False, server_default=sa.text("'[]'")),
    sa.Column("undo_of", sa.Uuid, nullable=True),
    # The chat's newest message when the write was made, and the revision of its
    # messages as its turn started (migration 0015).
    sa.Column("after_message_id", sa.BigInteger, nullable=True),
    sa.Column("chat_revision", sa.BigInteger, nullable=True),
    sa.Index(None, "user_id", "id"),
    sa.Index(None, "chat_id", "turn_id"),
    sa.Index(None, "chat_id", "after_message_id"),
)


# -- bounded turns (migration 0006) --------------------------------------------

# One row per turn that called a model: its tokens (framework-written, read-only to users).
token_usage = sa.Table(
    "token_usage",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
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
    sa.Index(None, "user_id", "at"),
    sa.Index(None, "at"),
)

# A user's tokens per UTC day (period 'day') and calendar month ('month'), kept with each turn.
usage_totals = sa.Table(
    "usage_totals",
    metadata,
    sa.Column("user_id", sa.String(255), primary_key=True),
    sa.Column("period", sa.String(8), primary_key=True),
    sa.Column("starts", sa.Date, primary_key=True),
    sa.Column("tokens", sa.BigInteger, nullable=False, server_default="0"),
    sa.CheckConstraint("period IN ('day', 'month')", name="period"),
)

# What running turns are assumed to spend, until they end (or their reservation expires).
usage_reservations = sa.Table(
    "usage_reservations",
    metadata,
    sa.Column("turn_id", sa.Uuid, primary_key=True),
    sa.Column("user_id", sa.String(255), nullable=False),
    sa.Column("tokens", sa.BigInteger, nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=False),
    sa.Index(None, "user_id"),
)

# Per-user overrides of the budgets settings: NULL follows the setting, -1 is no limit.
user_budgets = sa.Table(
    "user_budgets",
    metadata,
    sa.Column("user_id", sa.String(255), primary_key=True),
    sa.Column("daily_tokens", sa.BigInteger, nullable=True),
    sa.Column("monthly_tokens", sa.BigInteger, nullable=True),
    sa.Column("updated_at", UTCDateTime(), nullable=False, server_default=sa.func.now()),
    sa.CheckConstraint("daily_tokens IS NULL OR daily_tokens >= -1", name="daily_tokens"),
    sa.CheckConstraint("monthly_tokens IS NULL OR monthly_tokens >= -1", name="monthly_tokens"),
)

# A chat's summary of the messages that fell out of its window (agents with summarize).
chat_summaries = sa.Table(
    "chat_summaries",
    metadata,
    sa.Column("chat_id", sa.Uuid, primary_key=True),
    sa.Column("user_id", sa.String(255), nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("through_id", sa.BigInteger, nullable=False),
    sa.Column("messages", sa.Integer, nullable=False, server_default="0"),
    sa.Column("updated_at", UTCDateTime(), nullable=False, server_default=sa.func.now()),
    sa.Index(None, "user_id"),
)
