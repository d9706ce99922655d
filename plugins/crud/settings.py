"""The crud tool's key of ``[tools]``: tables it may use without a user scope."""

from __future__ import annotations

from pydantic import BaseModel, Field


class CrudSettings(BaseModel):
    unscoped_tables: list[str] = Field(
        default_factory=list,
        description="Tables a crud tool may use without a user scope column (shared data).",
    )
