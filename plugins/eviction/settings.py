"""The eviction policies' key of ``[cache]``: the idle time of the ``ttl`` policy."""

from __future__ import annotations

from pydantic import BaseModel, Field

from chatwright.settings import WEEK


class TTLSettings(BaseModel):
    ttl: float = Field(
        900.0, gt=0, le=WEEK, description="Idle seconds before the ttl policy evicts."
    )
