"""The JSON of ``GET /api/usage``: the caller's tokens per day and agent, and their budgets.

A turn's own usage is part of its answer and lives with it in
:mod:`chatwright.plugins.server.schemas`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field

from chatwright.plugins.server.schemas import Timestamp

if TYPE_CHECKING:
    from chatwright.usage import BudgetState, UsageLine


class UsageRow(BaseModel):
    """The caller's turns of one UTC day with one agent and model."""

    day: dt.date
    agent_name: str
    model: str
    turns: int
    model_calls: int
    input_tokens: int
    output_tokens: int
    cached_tokens: int = Field(description="Of input_tokens, those the provider had cached.")
    total_tokens: int = Field(description="Input and output tokens: what budgets count.")
    cost: float | None = Field(description="Null when none of these turns had a price.")

    @classmethod
    def of(cls, line: UsageLine) -> UsageRow:
        return cls(
            day=line.day,
            agent_name=line.agent_name,
            model=line.model,
            turns=line.turns,
            model_calls=line.model_calls,
            input_tokens=line.input_tokens,
            output_tokens=line.output_tokens,
            cached_tokens=line.cached_tokens,
            total_tokens=line.total,
            cost=line.cost,
        )


class UsageTotals(BaseModel):
    turns: int
    model_calls: int
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    total_tokens: int
    cost: float | None = Field(description="Of the priced turns; null when none was priced.")

    @classmethod
    def of(cls, rows: Sequence[UsageRow]) -> UsageTotals:
        costs = [r.cost for r in rows if r.cost is not None]
        return cls(
            turns=sum(r.turns for r in rows),
            model_calls=sum(r.model_calls for r in rows),
            input_tokens=sum(r.input_tokens for r in rows),
            output_tokens=sum(r.output_tokens for r in rows),
            cached_tokens=sum(r.cached_tokens for r in rows),
            total_tokens=sum(r.total_tokens for r in rows),
            cost=round(sum(costs), 8) if costs else None,
        )


class BudgetOut(BaseModel):
    """One period's budget of the caller, as of now."""

    period: Literal["day", "month"] = Field(description="The UTC day or the calendar month.")
    limit: int | None = Field(description="Tokens allowed in the period; null: no limit.")
    used: int = Field(description="Tokens (input + output) spent in the period so far.")
    remaining: int | None = Field(description="Null when there is no limit.")
    resets_at: Timestamp = Field(description="When the period ends and the count starts over.")

    @classmethod
    def of(cls, state: BudgetState) -> BudgetOut:
        return cls(
            period="day" if state.period == "day" else "month",
            limit=state.limit,
            used=state.used,
            remaining=state.remaining,
            resets_at=state.resets_at.isoformat(),
        )


class UsageReport(BaseModel):
    since: Timestamp | None = Field(description="The range's start, included (null: all).")
    until: Timestamp | None = Field(description="The range's end, excluded (null: now).")
    currency: str = Field(description="What costs are in (usage.currency).")
    rows: list[UsageRow] = Field(description="Oldest day first.")
    totals: UsageTotals
    budgets: list[BudgetOut] = Field(description="The day's and the month's budget, as of now.")
