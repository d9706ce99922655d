"""Token usage and per-user budgets: the records, the store protocol, the arithmetic.

Every model call of a turn reports its usage (LangChain's ``usage_metadata``
on the AI message: input, output and cached input tokens), streamed or not.
The runtime adds them up per turn (:class:`TurnUsage`, with the model spec and
a cost when ``usage.prices`` names the model) and the storage records the
turn's usage in the transaction that ends the turn, adding it to the user's
totals for the UTC day and the calendar month.

A budget limits the tokens (input + output) a user spends per day and per
month, over all agents: the ``budgets`` settings, or a per-user override
stored in the database (``chatwright budgets set``). A turn is refused before
its model runs when the user's spending has reached a budget
(:class:`~chatwright.errors.BudgetExceededError`, HTTP 429, with when it
resets). Concurrent turns of one user are counted too: each running turn
holds a reservation of ``budgets.turn_estimate`` tokens until it ends, and a
turn that would not fit beside the running ones is refused, so a user can
overspend by at most one turn (see :meth:`UsageStore` and ``docs/usage.md``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from chatwright.settings import Price, Settings

UNLIMITED = -1
MAX_TOKENS = 10**15
"""The most tokens one count holds: a provider's report above it counts this many (a
budget, a total, what the CLI takes), so that an absurd report neither overflows a
cost nor goes into a column or a metric as a number nothing can hold."""
"""A per-user budget override that lifts the budget for that user."""
HOLD_MARGIN = 60.0
"""Seconds a turn's budget reservation outlasts the longest the turn may run (its wait
for the chat, its end)."""


@dataclass(frozen=True)
class TurnUsage:
    """The tokens one turn spent, over all its model calls."""

    model: str
    model_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    """Of ``input_tokens``, those the provider served from its cache."""
    cost: float | None = None

    @property
    def total(self) -> int:
        """What budgets count: input and output tokens."""
        return self.input_tokens + self.output_tokens

    def plus(self, other: TurnUsage) -> TurnUsage:
        return TurnUsage(
            self.model,
            self.model_calls + other.model_calls,
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cached_tokens + other.cached_tokens,
            None
            if self.cost is None and other.cost is None
            else (self.cost or 0) + (other.cost or 0),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "model_calls": self.model_calls,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cached_tokens": self.cached_tokens,
            "total_tokens": self.total,
            "cost": self.cost,
        }


def usage_of(
    model: str, messages: Iterable[Any], prices: Mapping[str, Price] | None = None
) -> TurnUsage:
    """The usage of the AI messages among ``messages`` (one model call each)."""
    calls = inputs = outputs = cached = 0
    for message in messages:
        if getattr(message, "type", None) not in {"ai", "AIMessageChunk"}:
            continue
        calls += 1
        meta = getattr(message, "usage_metadata", None) or {}
        inputs += _count(meta.get("input_tokens"))
        outputs += _count(meta.get("output_tokens"))
        details = meta.get("input_token_details") or {}
        cached += _count(details.get("cache_read") if isinstance(details, Mapping) else None)
    usage = TurnUsage(model, calls, inputs, outputs, min(cached, inputs))
    return priced(usage, prices)


def prompt_tokens(request: Any) -> int:
    """About how many input tokens a model call's request sends (its system message and
    messages, counted as the window counts them: characters over four)."""
    from langchain_core.messages.utils import count_tokens_approximately

    system = getattr(request, "system_message", None)
    messages = [*([system] if system is not None else []), *getattr(request, "messages", [])]
    return count_tokens_approximately(messages) if messages else 0


def cut_off_call(model: str, requests: list[Any], answered: int, streamed: int) -> TurnUsage:
    """The usage of a turn's model call cut off before it answered, as far as it is known.

    A provider reports a call's tokens when it ends, so a call a time limit or a
    cancellation stopped has no report; its provider still charges for it. It counts
    as one call with its prompt's approximate tokens (:func:`prompt_tokens` of its
    request: ``requests`` has one per call started, of which ``answered`` answered)
    and what it had streamed, text and tool-call arguments (``streamed`` characters,
    four to a token). None started and unanswered: nothing.
    """
    if len(requests) <= answered:
        return TurnUsage(model)
    return TurnUsage(model, 1, prompt_tokens(requests[answered]), -(-streamed // 4))


def _count(value: Any) -> int:
    """A token count as a provider reported it: what cannot be one (negative, not a
    number) counts 0, so a bad report neither breaks the turn nor gives tokens back;
    one above :data:`MAX_TOKENS` counts that many."""
    if isinstance(value, bool):
        return 0
    try:
        return min(max(int(value or 0), 0), MAX_TOKENS)
    except (TypeError, ValueError, OverflowError):
        return 0


def priced(usage: TurnUsage, prices: Mapping[str, Price] | None) -> TurnUsage:
    """``usage`` with its cost, when ``prices`` has the model."""
    price = (prices or {}).get(usage.model)
    if price is None:
        return usage
    cached_price = price.cached_input if price.cached_input is not None else price.input
    fresh = max(usage.input_tokens - usage.cached_tokens, 0)
    # In floats: the counts of a turn of many calls may add up past any one report's cap.
    cost = (
        float(fresh) * price.input
        + float(usage.cached_tokens) * cached_price
        + float(usage.output_tokens) * price.output
    ) / 1_000_000
    return TurnUsage(
        usage.model,
        usage.model_calls,
        usage.input_tokens,
        usage.output_tokens,
        usage.cached_tokens,
        round(cost, 8),
    )


# -- periods -----------------------------------------------------------------


def day_of(at: datetime) -> date:
    return at.astimezone(UTC).date()


def month_of(at: datetime) -> date:
    return day_of(at).replace(day=1)


def next_day(at: datetime) -> datetime:
    """When the daily budget resets: the next UTC midnight."""
    start = datetime.combine(day_of(at), datetime.min.time(), UTC)
    return start + timedelta(days=1)


def next_month(at: datetime) -> datetime:
    """When the monthly budget resets: the first of next month, UTC midnight."""
    first = month_of(at)
    year, month = (first.year + 1, 1) if first.month == 12 else (first.year, first.month + 1)
    return datetime(year, month, 1, tzinfo=UTC)


def bound(name: str, value: str, *, end: bool = False) -> datetime:
    """``since`` or ``until`` of a usage query: an ISO 8601 date or time (UTC when no zone).

    A date as the ``end`` of a range means through that day (the next UTC
    midnight, which the range does not include); as its start, its midnight.

    :raises InvalidInputError: naming ``name``, when ``value`` is neither.
    """
    from chatwright.errors import InvalidInputError

    text = value.strip()
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            start = datetime.combine(day, datetime.min.time(), UTC)
            return start + timedelta(days=1) if end else start
        parsed = datetime.fromisoformat(text)
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)
    except OverflowError:
        raise InvalidInputError(
            f"{name} {value[:40]!r} is out of range: give a date or time from "
            "0001-01-01 to 9999-12-30 (UTC)"
        ) from None
    except ValueError:
        raise InvalidInputError(
            f"{name} {value[:40]!r} is not a date or a time: give an ISO 8601 date "
            "(2026-11-30) or time (2026-11-30T12:00:00Z)"
        ) from None


def check_range(since: datetime | None, until: datetime | None, names: str) -> None:
    """A usage range must not end before it starts (``names``: how the caller calls them)."""
    from chatwright.errors import InvalidInputError

    if since is not None and until is not None and until < since:
        raise InvalidInputError(f"{names}: the range ends before it starts")


# -- budgets -----------------------------------------------------------------


@dataclass(frozen=True)
class BudgetLimits:
    """The budget settings a turn is checked against (a user's override replaces them)."""

    daily: int | None
    monthly: int | None
    estimate: int
    """Tokens a running turn is assumed to spend (``budgets.turn_estimate``)."""
    hold: float = 600.0
    """Seconds a turn's reservation lasts at most (a dead process's expires then)."""
    spans: int = 1
    """How many time limits the turn may run for in a row: 2 for a decision, whose
    approved call and the turn it resumes each get the agent's limit."""

    @classmethod
    def of(cls, settings: Settings, hold: float) -> BudgetLimits:
        budgets = settings.budgets
        return cls(budgets.daily_tokens, budgets.monthly_tokens, budgets.turn_estimate, hold)

    def for_agent(self, turn_timeout: float | None) -> BudgetLimits:
        """These limits for a turn of an agent whose own ``turn_timeout`` may be longer
        than the setting's: its reservation lasts as long as such a turn can."""
        if turn_timeout is None or self.spans * turn_timeout + HOLD_MARGIN <= self.hold:
            return self
        return replace(self, hold=self.spans * turn_timeout + HOLD_MARGIN)


@dataclass(frozen=True)
class UserBudget:
    """A user's override of the budget settings; None keeps the setting, -1 is no limit."""

    user_id: str
    daily_tokens: int | None
    monthly_tokens: int | None
    updated_at: datetime


def effective(setting: int | None, override: int | None) -> int | None:
    """The budget that applies: the override when set (-1: none), else the setting."""
    if override is None:
        return setting
    return None if override == UNLIMITED else override


@dataclass(frozen=True)
class BudgetState:
    """One period's budget for a user, as ``GET /api/usage`` and ``budgets show`` give it."""

    period: str
    """``day`` or ``month``."""
    limit: int | None
    used: int
    resets_at: datetime

    @property
    def remaining(self) -> int | None:
        return None if self.limit is None else max(self.limit - self.used, 0)


@dataclass(frozen=True)
class UsageLine:
    """Usage added up per UTC day, user, agent and model."""

    day: date
    user_id: str
    agent_name: str
    model: str
    turns: int
    model_calls: int
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    cost: float | None

    @property
    def total(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True)
class Spent:
    """A user's tokens spent this UTC day and this month."""

    day: int
    month: int


class UsageStore(Protocol):
    """Token usage per turn and per-user budgets.

    Turns record their usage through the turn store (``finish(usage=…)``), and
    the budget check with its reservation happens in ``begin(budget=…)``: both
    in the turn's own transactions. This store reads them and keeps overrides.
    """

    async def reserve(
        self, user_id: str, turn_id: uuid.UUID, limits: BudgetLimits, at: datetime
    ) -> None:
        """Check the user's budgets and hold a reservation for the turn, atomically.

        Refuses (:class:`~chatwright.errors.BudgetExceededError`) when a budget
        is spent, or when the user's running turns' reservations plus this one
        would pass it (and at least one other turn is running). Concurrent calls
        for one user are serialised, across processes. Used by backends without
        a turn store of their own; the ``sql`` backend does it inside ``begin``.
        The refusal's text speaks to the user and marks where it names them with
        ``{your}`` / ``{yours}`` ("{your} daily token budget ..."), so that an
        operator deciding for them reads "their" (``about_them()``).
        """
        ...

    async def record(
        self,
        user_id: str,
        agent_name: str,
        chat_id: uuid.UUID,
        turn_id: uuid.UUID,
        usage: TurnUsage | None,
        at: datetime,
    ) -> None:
        """Record a turn's usage (when given), add it to the totals and drop its reservation."""
        ...

    async def lines(
        self,
        user_id: str | None,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        agent_name: str | None = None,
    ) -> list[UsageLine]:
        """Usage per day, user, agent and model, oldest day first (``user_id`` None: all)."""
        ...

    async def spent(self, user_id: str, at: datetime) -> Spent:
        """What the user spent in the UTC day and the month of ``at``."""
        ...

    async def budget(self, user_id: str) -> UserBudget | None:
        """The user's override, if any."""
        ...

    async def set_budget(
        self, user_id: str, *, daily_tokens: int | None, monthly_tokens: int | None
    ) -> UserBudget:
        """Store the user's override (None: that period follows the setting; -1: no limit)."""
        ...

    async def clear_budget(self, user_id: str) -> bool:
        """Remove the user's override; False when there was none."""
        ...

    async def budgets(self) -> list[UserBudget]:
        """Every override, by user id."""
        ...


async def budget_states(
    store: UsageStore, settings: Settings, user_id: str, at: datetime
) -> list[BudgetState]:
    """The user's day and month budgets as of ``at`` (limits None when unlimited)."""
    override = await store.budget(user_id)
    spent = await store.spent(user_id, at)
    return [
        BudgetState(
            "day",
            effective(settings.budgets.daily_tokens, override.daily_tokens if override else None),
            spent.day,
            next_day(at),
        ),
        BudgetState(
            "month",
            effective(
                settings.budgets.monthly_tokens, override.monthly_tokens if override else None
            ),
            spent.month,
            next_month(at),
        ),
    ]
