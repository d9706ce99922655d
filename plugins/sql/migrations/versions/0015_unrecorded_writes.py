"""Each audit entry of a chat knows where in the chat its write was made.

``audit_log.after_message_id``: the id of the chat's newest message when the
write was made, and ``audit_log.chat_revision``: the revision of the chat's
messages (migration 0008) as the turn making it started (both NULL outside a
chat's turn, and for entries made before this revision). A turn stores a
tool's call and its result after the tool's write has committed; when the
turn stops in between (its process killed, or cut off mid-way through a round
of tool calls), the write is in the audit log but not in the chat. The chat's
next turn finds such writes, as the entries of the chat made while its newest
message was what it still is, and tells the model about them before the new
message (``chatwright.history.recovered_writes``), so that it does not make
them again; only while the chat's revision has not moved since (a deleted
message moves it, and SQLite gives a deleted message's id out again).

The index on ``(chat_id, after_message_id)`` keeps that lookup to the chat's
newest entries, however many the chat has.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

INDEX = "ix_audit_log_chat_id_after_message_id"


def upgrade() -> None:
    with op.batch_alter_table("audit_log") as batch:
        batch.add_column(sa.Column("after_message_id", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("chat_revision", sa.BigInteger, nullable=True))
    op.create_index(INDEX, "audit_log", ["chat_id", "after_message_id"])


def downgrade() -> None:
    op.drop_index(INDEX, table_name="audit_log")
    with op.batch_alter_table("audit_log") as batch:
        batch.drop_column("chat_revision")
        batch.drop_column("after_message_id")
