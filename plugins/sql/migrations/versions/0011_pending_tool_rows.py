"""Pending actions keep the tool row they were asked about; tool call ids of any length.

1. ``pending_actions.tool_digest``: a digest of the tool row (its id, type and
   configuration) as it was when the call was held. Approving runs the call
   only while the row is still that row (see ``chatwright.decisions``); before,
   only a call with a preview noticed a changed row. Null on actions held
   before this revision: they are checked by the row's id alone.
2. ``pending_actions.tool_call_id`` becomes ``TEXT``: the id is the model's,
   kept as the model gave it (the reply that called it is stored with it), and
   a model may give ids of any length. On PostgreSQL, a longer id than 200
   characters made storing the held call fail, and with it the end of its turn.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("pending_actions") as batch:
        batch.add_column(sa.Column("tool_digest", sa.String(64), nullable=True))
        batch.alter_column(
            "tool_call_id", existing_type=sa.String(200), type_=sa.Text, existing_nullable=False
        )


def downgrade() -> None:
    with op.batch_alter_table("pending_actions") as batch:
        batch.alter_column(
            "tool_call_id", existing_type=sa.Text, type_=sa.String(200), existing_nullable=False
        )
        batch.drop_column("tool_digest")
