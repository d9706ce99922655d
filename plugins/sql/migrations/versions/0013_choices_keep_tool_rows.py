"""Users' approval choices keep the tool row they were made for.

``tool_approval_choices.tool_digest``: a digest of the tool row (its id, type
and configuration, ``chatwright.approvals.tool_digest``) as it was when the
user chose. A user's ``auto`` lets the row's calls run unattended; before this
revision it went on counting after an admin changed what the row does (a read
turned into a delete ran unattended for every user who had trusted the read).
Now an ``auto`` counts only while the row has the digest it was chosen for;
``required`` counts whatever the row became.

The choices stored before this revision get the digest of their rows as they
are now, so they count as they did until the rows next change.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from chatwright.approvals import digest_of
from chatwright.plugins.sql.schema import JSONValue

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tool_approval_choices") as batch:
        batch.add_column(sa.Column("tool_digest", sa.String(64), nullable=True))
    bind = op.get_bind()
    tools = sa.table(
        "agent_tools",
        sa.column("id", sa.Integer),
        sa.column("type"),
        sa.column("config", JSONValue()),
    )
    choices = sa.table(
        "tool_approval_choices", sa.column("tool_id", sa.Integer), sa.column("tool_digest")
    )
    chosen = sa.select(choices.c.tool_id).distinct().scalar_subquery()
    rows = bind.execute(sa.select(tools).where(tools.c.id.in_(chosen))).all()
    for row in rows:
        bind.execute(
            choices.update()
            .where(choices.c.tool_id == row.id)
            .values(tool_digest=digest_of(row.id, row.type, row.config))
        )


def downgrade() -> None:
    with op.batch_alter_table("tool_approval_choices") as batch:
        batch.drop_column("tool_digest")
