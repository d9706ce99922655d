"""Token usage, per-user budgets and chat summaries on the ``sql`` backend: the stores.

The budget check and the usage record live in the turn's own transactions
(:mod:`.budgets`); the stores here read what was recorded, keep the per-user
overrides, and do the same two things for callers without a turn
(:meth:`SQLUsageStore.reserve` and :meth:`SQLUsageStore.record`).

``token_usage``, ``usage_totals``, ``usage_reservations`` and ``user_budgets``
are framework tables: every statement on them runs as the framework (never in
a user transaction), and migration 0006 closes them to the Data API roles, so
a user cannot rewrite what they spent. ``chat_summaries`` are the user's own
rows, like the chat's messages. Usage lines are added up per UTC day, user,
agent and model (the day taken in UTC on both databases).
"""

from __future__ import annotations

import builtins
import uuid
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa

from chatwright.errors import InvalidInputError, NotFoundError
from chatwright.plugins.sql import rows, schema
from chatwright.plugins.sql.budgets import (
    check_budget,
    override_columns,
    record_usage,
    upsert_summary,
    user_lock,
)
from chatwright.plugins.sql.rows import from_row
from chatwright.plugins.sql.stores import BoundStore
from chatwright.stores import ChatSummary, NewSummary
from chatwright.usage import (
    MAX_TOKENS,
    UNLIMITED,
    BudgetLimits,
    Spent,
    TurnUsage,
    UsageLine,
    UserBudget,
    day_of,
    month_of,
)


def _tokens_override(name: str, value: int | None) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not -1 <= value <= MAX_TOKENS:
        raise InvalidInputError(
            f"{name} {value!r} is not a token count: give a whole number from 0 to "
            f"{MAX_TOKENS}, {UNLIMITED} for no limit, or nothing to follow the setting"
        )
    return value


class SQLUsageStore(BoundStore):
    """:class:`chatwright.usage.UsageStore` on the framework tables (see the module)."""

    async def reserve(
        self, user_id: str, turn_id: uuid.UUID, limits: BudgetLimits, at: datetime
    ) -> None:
        dialect = self.db.dialect
        lock = user_lock(dialect, user_id)
        async with self.db.write() as conn:
            columns = override_columns(user_id)
            if lock is not None:
                columns.append(lock)  # type: ignore[arg-type]
            row = (await conn.execute(sa.select(*columns))).one()
            await check_budget(
                conn, dialect, user_id, turn_id, limits, row[0], row[1], locked=True, at=at
            )

    async def record(
        self,
        user_id: str,
        agent_name: str,
        chat_id: uuid.UUID,
        turn_id: uuid.UUID,
        usage: TurnUsage | None,
        at: datetime,
    ) -> None:
        async with self.db.write() as conn:
            await record_usage(
                conn, self.db.dialect, user_id, agent_name, chat_id, turn_id, usage, at
            )

    def _day(self) -> sa.ColumnElement[Any]:
        at = schema.token_usage.c.at
        if self.db.dialect == "postgresql":
            return sa.cast(sa.func.timezone("UTC", at), sa.Date)
        return sa.func.date(at)  # stored as naive UTC text

    async def lines(
        self,
        user_id: str | None,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        agent_name: str | None = None,
    ) -> builtins.list[UsageLine]:
        u = schema.token_usage
        day = self._day().label("day")
        stmt = sa.select(
            day,
            u.c.user_id,
            u.c.agent_name,
            u.c.model,
            sa.func.count().label("turns"),
            sa.func.sum(u.c.model_calls).label("model_calls"),
            sa.func.sum(u.c.input_tokens).label("input_tokens"),
            sa.func.sum(u.c.output_tokens).label("output_tokens"),
            sa.func.sum(u.c.cached_tokens).label("cached_tokens"),
            sa.func.sum(u.c.cost).label("cost"),
        )
        if user_id is not None:
            stmt = stmt.where(u.c.user_id == user_id)
        if since is not None:
            stmt = stmt.where(u.c.at >= since)
        if until is not None:
            stmt = stmt.where(u.c.at < until)
        if agent_name is not None:
            stmt = stmt.where(u.c.agent_name == agent_name)
        keys = (day, u.c.user_id, u.c.agent_name, u.c.model)
        stmt = stmt.group_by(*keys).order_by(*keys)
        async with self.db.read() as conn:
            rows = (await conn.execute(stmt)).all()
        return [
            UsageLine(
                day=r.day if isinstance(r.day, date) else date.fromisoformat(r.day),
                user_id=r.user_id,
                agent_name=r.agent_name,
                model=r.model,
                turns=int(r.turns),
                model_calls=int(r.model_calls or 0),
                input_tokens=int(r.input_tokens or 0),
                output_tokens=int(r.output_tokens or 0),
                cached_tokens=int(r.cached_tokens or 0),
                cost=None if r.cost is None else float(r.cost),
            )
            for r in rows
        ]

    async def spent(self, user_id: str, at: datetime) -> Spent:
        t = schema.usage_totals
        stmt = sa.select(t.c.period, t.c.tokens).where(
            t.c.user_id == user_id,
            sa.or_(
                sa.and_(t.c.period == "day", t.c.starts == day_of(at)),
                sa.and_(t.c.period == "month", t.c.starts == month_of(at)),
            ),
        )
        async with self.db.read() as conn:
            found = {r.period: int(r.tokens) for r in await conn.execute(stmt)}
        return Spent(found.get("day", 0), found.get("month", 0))

    async def budget(self, user_id: str) -> UserBudget | None:
        b = schema.user_budgets
        async with self.db.read() as conn:
            row = (await conn.execute(sa.select(b).where(b.c.user_id == user_id))).first()
        return from_row(UserBudget, row) if row else None

    async def set_budget(
        self, user_id: str, *, daily_tokens: int | None, monthly_tokens: int | None
    ) -> UserBudget:
        if not isinstance(user_id, str) or not 0 < len(user_id) <= 255:
            raise InvalidInputError(f"user id {user_id!r} must be 1 to 255 characters")
        values = {
            "user_id": user_id,
            "daily_tokens": _tokens_override("daily_tokens", daily_tokens),
            "monthly_tokens": _tokens_override("monthly_tokens", monthly_tokens),
            "updated_at": rows.now(),
        }
        row = await self.db.upsert(schema.user_budgets, values, keys=["user_id"])
        return from_row(UserBudget, row)

    async def clear_budget(self, user_id: str) -> bool:
        b = schema.user_budgets
        async with self.db.write() as conn:
            result = await conn.execute(b.delete().where(b.c.user_id == user_id))
        return bool(result.rowcount)

    async def budgets(self) -> builtins.list[UserBudget]:
        b = schema.user_budgets
        async with self.db.read() as conn:
            rows = await conn.execute(sa.select(b).order_by(b.c.user_id))
        return [from_row(UserBudget, r) for r in rows]


class SQLSummaryStore(BoundStore):
    """Chats' summaries (:class:`chatwright.stores.SummaryStore`), the users' own rows."""

    async def get(self, user_id: str, chat_id: uuid.UUID) -> ChatSummary | None:
        s = schema.chat_summaries
        async with self.db.read(user_id) as conn:
            row = (
                await conn.execute(
                    sa.select(s).where(s.c.chat_id == chat_id, s.c.user_id == user_id)
                )
            ).first()
        return from_row(ChatSummary, row) if row else None

    async def put(self, user_id: str, chat_id: uuid.UUID, summary: NewSummary) -> ChatSummary:
        async with self.db.write(user_id) as conn:
            row = await upsert_summary(conn, self.db.dialect, user_id, chat_id, summary)
        if row is None:
            raise NotFoundError(f"chat {chat_id} not found")
        return from_row(ChatSummary, row)
