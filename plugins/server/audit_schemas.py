"""The JSON of the audit log, of undo and of a user's approval choices.

Write safety's other shapes (pending actions and their previews) are part of a
turn's answer and live with it in :mod:`chatwright.plugins.server.schemas`.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from chatwright.plugins.server.schemas import RowChangeOut, Timestamp, _Body

if TYPE_CHECKING:
    from chatwright.approvals import AuditEntry, UndoReport


class UndoRequest(_Body):
    turn_id: uuid.UUID | None = Field(
        None, description="The turn to undo; without it, the chat's latest turn that changed rows."
    )


class ApprovalChoice(_Body):
    choice: Literal["auto", "required"] | None = Field(
        description="auto: run the tool's calls at once; required: ask first; null: the row's "
        "default (approval_default)."
    )
    digest: str | None = Field(
        default=None,
        max_length=64,
        description="The row as you saw it (the digest of its entry in GET /api/agents/{name}): "
        "when the row has changed since, 409 and nothing is stored. Without it, the choice is "
        "for the row as it is now.",
    )


class AuditEntryOut(BaseModel):
    """One write a tool made (or an undo), as recorded in the audit log."""

    id: int
    at: Timestamp | None
    agent_name: str
    chat_id: uuid.UUID | None
    turn_id: uuid.UUID | None
    tool_id: int | None
    tool_name: str
    operation: str = Field(
        description="create, update, delete, upsert, undo, or a tool's own word."
    )
    table: str | None
    args: dict[str, Any]
    row_ids: list[Any]
    outcome: str = Field(description="ok, error, vetoed, denied or expired.")
    error: str | None
    approval: str | None = Field(description="auto, approved, denied or expired.")
    decided_by: str | None
    pending_id: uuid.UUID | None
    undo_of: uuid.UUID | None = Field(description="For an undo: the turn it reverted.")
    changes: list[RowChangeOut] = Field(description="The rows' values before and after.")

    @classmethod
    def of(cls, entry: AuditEntry) -> AuditEntryOut:
        data = entry.as_dict(images=True)
        del data["user_id"]
        return cls.model_validate(data)


class AuditPage(BaseModel):
    entries: list[AuditEntryOut] = Field(description="Newest first.")
    more: bool = Field(description="Whether older entries exist (pass the last id as before).")


class UndoOut(BaseModel):
    turn_id: uuid.UUID = Field(description="The turn whose writes were reverted.")
    entries: list[int] = Field(description="The audit entries reverted.")
    changes: list[RowChangeOut] = Field(
        description="The rows restored: before is what the turn left, after what they are now."
    )
    message: str

    @classmethod
    def of(cls, report: UndoReport) -> UndoOut:
        count = len(report.changes)
        return cls(
            turn_id=report.turn_id,
            entries=list(report.entries),
            changes=[
                RowChangeOut(
                    key=dict(c.key),
                    before=dict(c.before) if c.before is not None else None,
                    after=dict(c.after) if c.after is not None else None,
                )
                for c in report.changes
            ],
            message=f"Undone: {count} row change{'s' if count != 1 else ''} of turn "
            f"{report.turn_id} reverted.",
        )


class ApprovalOut(BaseModel):
    tool_id: int
    approval: str = Field(description="The row's mode: auto, required or user.")
    approval_default: str = Field(description="For user mode: what applies without a choice.")
    choice: Literal["auto", "required"] | None = Field(
        description="The caller's own choice; null: the row's default applies."
    )
