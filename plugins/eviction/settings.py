"""The eviction policies' key of ``[cache]``: the idle time of the ``ttl`` policy."""

from __future__ import annotations

from pydantic import BaseModel, Field


class TTLSettings(BaseModel):
    ttl: float = Field(900.0, gt=0, description="Idle seconds before the ttl policy evicts.")
