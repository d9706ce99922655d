"""The window's index on PostgreSQL: ``chat_messages (chat_id, user_id, id)``.

A turn reads its chat's last messages of its user, newest first. On a table
PostgreSQL has no statistics for (a new database, until autovacuum's first
analyse; a table whose statistics say it is small), the planner combined the
``chat_id`` and ``user_id`` indexes and sorted the whole chat instead of
walking ``(chat_id, id)`` backwards: about 10 ms a turn on a chat of a few
thousand messages, growing with the chat. With both conditions and the order
in one index, the plan walks it backwards and stops at the window, with or
without statistics. SQLite's planner already walks ``(chat_id, id)``; the
index is PostgreSQL's only.

Building it takes a lock that makes writes of chat messages wait while it is
built (``chatwright db upgrade``), as every index built in a transaction does.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

NAME = "ix_chat_messages_chat_id_user_id_id"


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.create_index(NAME, "chat_messages", ["chat_id", "user_id", "id"])


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index(NAME, "chat_messages")
