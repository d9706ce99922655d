"""The JSON of a user's data over HTTP: the archive of ``GET /api/me/export`` and the
counts of ``DELETE /api/me`` and ``DELETE /api/chats/{chat_id}``.

The archive's shape is :class:`chatwright.userdata.UserArchive`'s, versioned by
its ``format`` and ``version`` fields (docs/privacy.md describes it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

if TYPE_CHECKING:
    from chatwright.userdata import ErasureReport, UserArchive


class AppTableOut(BaseModel):
    """The caller's rows of one application table that CRUD tool rows scope to users."""

    scope_column: str | None = Field(description="The column holding the user id.")
    rows: list[dict[str, Any]]


class UserArchiveOut(BaseModel):
    """Everything of the caller's, one list of rows per table."""

    format: Literal["chatwright.user-archive"]
    version: int = Field(description="Bumped when the shape changes; 1 today.")
    user_id: str
    exported_at: str = Field(description="ISO 8601, UTC.")
    tables: dict[str, list[dict[str, Any]]] = Field(
        description="The caller's rows of each framework table: chat_sessions, chat_messages "
        "(tool calls and results included), chat_summaries, prompt_customizations, "
        "agent_memories, tool_approval_choices, pending_actions, audit_log, token_usage, "
        "usage_totals, usage_reservations, user_budgets."
    )
    app_tables: dict[str, AppTableOut]
    skipped: dict[str, str] = Field(
        description="Application tables left out, each with why (an operator handles them)."
    )

    @classmethod
    def of(cls, archive: UserArchive) -> UserArchiveOut:
        return cls.model_validate(archive.as_dict())


class ErasureOut(BaseModel):
    """Rows deleted, per table."""

    user_id: str
    total: int
    tables: dict[str, int]
    app_tables: dict[str, int] = Field(description="Per application table scoped to users.")
    skipped: dict[str, str] = Field(description="Application tables left alone, with why.")
    kept: dict[str, str] = Field(
        default_factory=dict,
        description="Tables some of whose rows were kept on purpose, with why: what the "
        "caller's token budget counts.",
    )

    @classmethod
    def of(cls, report: ErasureReport) -> ErasureOut:
        return cls.model_validate(report.as_dict())
