"""The statements a turn's transactions make for budgets, usage and summaries (``sql``).

:meth:`.turns.SQLTurnStore.begin` reads the user's budget override with the
agent row (:func:`override_columns`) and calls :func:`check_budget`;
:meth:`~.turns.SQLTurnStore.finish` calls :func:`record_usage` and
:func:`upsert_summary`: all in the turn's own transactions, so a turn costs no
extra one for them. :class:`.usage.SQLUsageStore` does the same for callers
without a turn.

Concurrent checks for one user are serialised: on PostgreSQL by a
transaction-scoped advisory lock on the user (:func:`user_lock`, held until the
transaction ends, so it works through a transaction pooler, across
processes); on SQLite every write transaction is ``BEGIN IMMEDIATE`` and so
serialised already. The check then reads the user's totals and running turns'
reservations in one statement, so a user's spending passes a budget by at
most one turn: a turn is refused when a budget is spent, or when another turn
is running and this one's estimate would not fit beside it.
"""

from __future__ import annotations

import functools
import logging
import math
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from chatwright.errors import BudgetExceededError, InvalidInputError
from chatwright.plugins.sql import rows, schema
from chatwright.stores import ChatSummary, NewSummary
from chatwright.usage import (
    MAX_TOKENS,
    BudgetLimits,
    TurnUsage,
    day_of,
    effective,
    month_of,
    next_day,
    next_month,
)

log = logging.getLogger(__name__)

BUSY_RETRY = 5.0
"""Seconds a turn refused beside another running turn is told to wait."""


# -- the budget check (in a turn's first transaction) ------------------------------------


def override_columns(user_id: str | sa.ColumnElement[Any]) -> list[sa.ScalarSelect[Any]]:
    """The user's override, as two scalar subqueries to add to another statement."""
    b = schema.user_budgets
    return [
        sa.select(b.c.daily_tokens).where(b.c.user_id == user_id).scalar_subquery(),
        sa.select(b.c.monthly_tokens).where(b.c.user_id == user_id).scalar_subquery(),
    ]


def user_lock(dialect: str, user_id: str | sa.ColumnElement[Any]) -> sa.ColumnElement[Any] | None:
    """PostgreSQL: the expression taking the user's budget lock until the transaction ends.

    ``user_id`` may be an expression (a bound parameter of a statement built once).
    """
    if dialect != "postgresql":
        return None  # SQLite: write transactions are serialised already
    name: sa.ColumnElement[Any] = (
        sa.literal(f"chatwright:budget:{user_id}")
        if isinstance(user_id, str)
        else sa.literal("chatwright:budget:", sa.String) + user_id
    )
    key = sa.func.hashtextextended(name, 0)
    return sa.func.pg_advisory_xact_lock(key)


def limits_for(
    limits: BudgetLimits, daily: int | None, monthly: int | None
) -> tuple[int | None, int | None]:
    """The day and month budgets that apply given the user's override."""
    return effective(limits.daily, daily), effective(limits.monthly, monthly)


async def check_budget(
    conn: AsyncConnection,
    dialect: str,
    user_id: str,
    turn_id: uuid.UUID,
    limits: BudgetLimits,
    daily: int | None,
    monthly: int | None,
    *,
    locked: bool,
    at: datetime | None = None,
) -> bool:
    """Check the user's budgets and hold a reservation for the turn, on ``conn`` (framework).

    ``daily`` and ``monthly`` are the user's override (read by the caller, in a
    statement of its own); ``locked`` says whether the caller's statement took
    :func:`user_lock` already. Raises
    :class:`~chatwright.errors.BudgetExceededError` (the caller rolls back);
    returns whether a reservation was stored (False: no budget applies).
    """
    day_limit, month_limit = limits_for(limits, daily, monthly)
    if day_limit is None and month_limit is None:
        return False
    at = at or rows.now()
    lock = user_lock(dialect, user_id)
    if lock is not None and not locked:
        await conn.execute(sa.select(lock))
    t, r = schema.usage_totals, schema.usage_reservations

    def total(period: str, starts: date) -> sa.ScalarSelect[Any]:
        return (
            sa.select(t.c.tokens)
            .where(t.c.user_id == user_id, t.c.period == period, t.c.starts == starts)
            .scalar_subquery()
        )

    running = sa.and_(r.c.user_id == user_id, r.c.expires_at >= at, r.c.turn_id != turn_id)
    state = (
        await conn.execute(
            sa.select(
                total("day", day_of(at)),
                total("month", month_of(at)),
                sa.select(sa.func.coalesce(sa.func.sum(r.c.tokens), 0))
                .where(running)
                .scalar_subquery(),
                sa.select(sa.func.count()).where(running).scalar_subquery(),
                sa.select(sa.func.count())
                .where(r.c.user_id == user_id, r.c.expires_at < at)
                .scalar_subquery(),
            )
        )
    ).one()
    day_used, month_used = int(state[0] or 0), int(state[1] or 0)
    reserved, others, expired = int(state[2] or 0), int(state[3] or 0), int(state[4] or 0)
    periods = (
        ("daily", day_limit, day_used, next_day(at)),
        ("monthly", month_limit, month_used, next_month(at)),
    )
    for name, limit, used, resets in periods:
        if limit is not None and used >= limit:
            raise BudgetExceededError(
                f"{{your}} {name} token budget of {limit} tokens is spent ({used} used); it "
                f"resets at {resets:%Y-%m-%d %H:%M} UTC",
                resets_at=resets,
                retry_after=max((resets - at).total_seconds(), 1.0),
            )
    for name, limit, used, _ in periods:
        if limit is not None and others and used + reserved + limits.estimate > limit:
            # A turn whose process stopped holds its reservation until it lapses: say when.
            lapses = await conn.scalar(sa.select(sa.func.max(r.c.expires_at)).where(running))
            by = (
                f" (or was interrupted: its hold lapses by {lapses:%H:%M:%S} UTC)" if lapses else ""
            )
            raise BudgetExceededError(
                f"another turn of {{yours}} is running{by} and {{your}} {name} token budget is "
                "nearly spent; try again when it has finished",
                retry_after=BUSY_RETRY,
            )
    if expired:
        # A dead process's turns: their reservations no longer count.
        await conn.execute(r.delete().where(r.c.user_id == user_id, r.c.expires_at < at))
    await conn.execute(
        _insert(dialect, r)
        .values(
            turn_id=turn_id,
            user_id=user_id,
            tokens=limits.estimate,
            expires_at=at + timedelta(seconds=limits.hold),
        )
        .on_conflict_do_nothing(index_elements=["turn_id"])
    )
    return True


# -- the record (in a turn's last transaction) ---------------------------------------------


def _insert(dialect: str, table: sa.Table) -> Any:
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


def bounded(usage: TurnUsage) -> TurnUsage:
    """``usage`` with counts no model reports (negative, not whole, beyond any real turn)
    brought within bounds: a provider's bad report must not lose the turn it ends."""

    def count(name: str) -> int:
        value = getattr(usage, name)
        if isinstance(value, bool) or not isinstance(value, int):
            try:
                value = int(value)
            except (TypeError, ValueError, OverflowError):
                value = 0
        if not 0 <= value <= MAX_TOKENS:
            log.warning("usage %s %r of a turn is out of bounds; recorded as bounded", name, value)
        return min(max(value, 0), MAX_TOKENS)

    cost = usage.cost
    usable = isinstance(cost, int | float) and math.isfinite(cost) and 0 <= cost < MAX_TOKENS
    if cost is not None and not usable:
        log.warning("usage cost %r of a turn is out of bounds; not recorded", cost)
        cost = None
    return TurnUsage(
        str(usage.model)[:200],
        count("model_calls"),
        count("input_tokens"),
        count("output_tokens"),
        count("cached_tokens"),
        cost,
    )


@dataclass(frozen=True)
class UsageWrites:
    """What recording a turn's usage writes: the parameters of each statement that applies."""

    drop: dict[str, Any] | None
    """Dropping the turn's reservation (``turn_id``)."""
    record: dict[str, Any] | None
    """The ``token_usage`` row (its columns)."""
    totals: dict[str, Any] | None
    """Adding to the user's totals (``user_id``, ``day``, ``month``, ``tokens``)."""

    @property
    def shape(self) -> tuple[bool, bool, bool]:
        return self.drop is not None, self.record is not None, self.totals is not None


def usage_writes(
    user_id: str,
    agent_name: str,
    chat_id: uuid.UUID | None,
    turn_id: uuid.UUID | None,
    usage: TurnUsage | None,
    at: datetime | None = None,
    *,
    reserved: bool = True,
) -> UsageWrites:
    """The statements :func:`record_usage` makes, with their parameters.

    A turn that called no model records nothing; one that did records what it
    spent even when it failed or ran out of time.
    """
    at = at or rows.now()
    drop = {"turn_id": turn_id} if reserved and turn_id is not None else None
    if usage is None or usage.model_calls <= 0:
        return UsageWrites(drop, None, None)
    usage = bounded(usage)
    record = {
        "at": at,
        "user_id": user_id,
        "agent_name": agent_name,
        "chat_id": chat_id,
        "turn_id": turn_id,
        "model": usage.model,
        "model_calls": usage.model_calls,
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cached_tokens": usage.cached_tokens,
        "cost": usage.cost,
    }
    if usage.total <= 0:
        return UsageWrites(drop, record, None)
    totals = {"user_id": user_id, "day": day_of(at), "month": month_of(at), "tokens": usage.total}
    return UsageWrites(drop, record, totals)


async def record_usage(
    conn: AsyncConnection,
    dialect: str,
    user_id: str,
    agent_name: str,
    chat_id: uuid.UUID | None,
    turn_id: uuid.UUID | None,
    usage: TurnUsage | None,
    at: datetime | None = None,
    *,
    reserved: bool = True,
) -> None:
    """Drop the turn's reservation, record its usage and add it to the user's totals (framework).

    One statement each (see :func:`usage_writes`); a turn's last transaction on
    PostgreSQL makes them all in one (:mod:`.turn_statements`).
    """
    writes = usage_writes(user_id, agent_name, chat_id, turn_id, usage, at, reserved=reserved)
    if writes.drop is not None:
        await conn.execute(DROP_RESERVATION, writes.drop)
    if writes.record is not None:
        await conn.execute(_INSERT_USAGE, writes.record)
    if writes.totals is not None:
        await conn.execute(add_to_totals(dialect), writes.totals)


DROP_RESERVATION = schema.usage_reservations.delete().where(
    schema.usage_reservations.c.turn_id == sa.bindparam("turn_id")
)
_INSERT_USAGE = schema.token_usage.insert()


@functools.cache
def add_to_totals(dialect: str, user: str = "user_id") -> Any:
    """Add ``tokens`` to the totals of the ``day`` and the ``month`` of the user (the
    parameter named ``user``), built once."""
    t = schema.usage_totals
    user_id: sa.BindParameter[Any] = sa.bindparam(user, type_=t.c.user_id.type)
    tokens: sa.BindParameter[Any] = sa.bindparam("tokens", type_=t.c.tokens.type)
    if dialect == "postgresql":
        # From a SELECT: SQLAlchemy caches no statement with a multi-row VALUES.
        starts = t.c.starts.type
        rows = [
            sa.select(user_id, sa.literal(p), sa.bindparam(p, type_=starts), tokens)
            for p in ("day", "month")
        ]
        columns = ["user_id", "period", "starts", "tokens"]
        stmt = _insert(dialect, t).from_select(columns, sa.union_all(*rows))
    else:
        stmt = _insert(dialect, t).values(
            [
                {"user_id": user_id, "period": p, "starts": sa.bindparam(p), "tokens": tokens}
                for p in ("day", "month")
            ]
        )
    return stmt.on_conflict_do_update(
        index_elements=["user_id", "period", "starts"],
        set_={"tokens": t.c.tokens + stmt.excluded.tokens},
    )


async def upsert_summary(
    conn: AsyncConnection,
    dialect: str,
    user_id: str,
    chat_id: uuid.UUID,
    summary: NewSummary,
    at: datetime | None = None,
) -> sa.Row[Any] | None:
    """Store the chat's summary on ``conn`` (a user transaction); None if the chat is not
    the user's (its summary is another user's row, left as it is)."""
    if not isinstance(summary.through_id, int) or summary.through_id < 0:
        raise InvalidInputError(f"summary through_id {summary.through_id!r} is not a message id")
    if not isinstance(summary.messages, int) or not 0 <= summary.messages < 2**31:
        raise InvalidInputError(f"summary messages {summary.messages!r} is not a count")
    s = schema.chat_summaries
    stmt = _insert(dialect, s).values(
        chat_id=chat_id,
        user_id=user_id,
        text=summary.text,
        through_id=summary.through_id,
        messages=summary.messages,
        updated_at=at or rows.now(),
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["chat_id"],
        set_={
            "text": stmt.excluded.text,
            "through_id": stmt.excluded.through_id,
            "messages": stmt.excluded.messages,
            "updated_at": stmt.excluded.updated_at,
        },
        where=s.c.user_id == user_id,
    )
    row: sa.Row[Any] | None = (await conn.execute(stmt.returning(s))).first()
    return row


def summary_of(
    chat_id: uuid.UUID, user_id: str, text: str, through_id: int, messages: int, updated: Any
) -> ChatSummary:
    """A summary read back through a text column (the turn's union statement)."""
    at = updated if isinstance(updated, datetime) else datetime.fromisoformat(str(updated))
    at = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    return ChatSummary(chat_id, user_id, text, int(through_id), at, int(messages))
