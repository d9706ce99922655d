"""Token usage, budgets and chat summaries on the sql backend (SQLite and PostgreSQL).

Turns record what they spent in the transaction that ends them; a turn is
checked against the user's budgets, with a reservation held while it runs, in
the transaction that starts it. The time is injected by replacing
``chatwright.plugins.sql.rows.now`` (what the usage statements read; leases
keep the real clock). "Two processes" are two storages or runtimes, each with
its own engine, on one database. Every test uses user ids of its own.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event

from chatwright import testing
from chatwright.errors import BudgetExceededError
from chatwright.plugins.sql import rows, schema
from chatwright.plugins.sql.storage import SQLStorage
from chatwright.registry import LoadPolicy, Plugins
from chatwright.runtime import Runtime
from chatwright.stores import NewMessage, NewSummary
from chatwright.turns import TurnStart
from chatwright.usage import UNLIMITED, BudgetLimits, TurnUsage, next_day, next_month
from tests.harness import pg_storage_settings, storage_for

AGENT = "metered"
MODEL = "scripted:metered"
DAY = datetime(2026, 3, 14, 23, 0, tzinfo=UTC)


def new_user() -> str:
    return f"u-{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def storage(sql_url: str) -> AsyncIterator[SQLStorage]:
    storage = storage_for(sql_url)
    await storage.upgrade()
    if await storage.agents.get(AGENT) is None:
        await storage.agents.create(AGENT, system_prompt="p", model=MODEL)
    yield storage
    await storage.close()


class Clock:
    """The time the usage statements see; moved by the test."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, at: datetime) -> None:
        self.at = at
        monkeypatch.setattr(rows, "now", lambda: self.at)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    return Clock(monkeypatch, DAY)


def human(text: str = "hi") -> NewMessage:
    return NewMessage(role="human", content={"type": "human", "content": text})


async def new_chat(storage: SQLStorage, user: str, agent: str = AGENT) -> uuid.UUID:
    return (await storage.sessions.open(user, agent, chat_id=uuid.uuid4())).chat_id


async def begin(
    storage: SQLStorage, user: str, chat: uuid.UUID, budget: BudgetLimits | None, **kw: Any
) -> TurnStart:
    return await storage.turns.begin(
        user, kw.pop("agent", AGENT), chat, human(), turn_id=uuid.uuid4(), budget=budget, **kw
    )


async def spend(
    storage: SQLStorage,
    user: str,
    tokens: int,
    *,
    budget: BudgetLimits | None = None,
    agent: str = AGENT,
    model: str = MODEL,
    chat: uuid.UUID | None = None,
) -> None:
    """One whole turn that spent ``tokens`` (two thirds input, the rest output)."""
    chat = chat or await new_chat(storage, user, agent)
    start = await begin(storage, user, chat, budget, agent=agent)
    inputs = tokens * 2 // 3
    usage = TurnUsage(model, 1, inputs, tokens - inputs, inputs // 2, 0.5)
    await storage.turns.finish(start, [], touch=True, usage=usage)


async def count(storage: SQLStorage, table: sa.Table, **where: Any) -> int:
    """How many rows of ``table`` have the given column values."""
    stmt = sa.select(sa.func.count()).select_from(table).filter_by(**where)
    async with storage.read() as conn:
        return int(await conn.scalar(stmt) or 0)


@contextmanager
def transactions(storage: SQLStorage) -> Iterator[list[str]]:
    begun: list[str] = []

    def began(conn: Any) -> None:
        begun.append("begin")

    engine = storage.engine.sync_engine
    event.listen(engine, "begin", began)
    try:
        yield begun
    finally:
        event.remove(engine, "begin", began)


# --------------------------------------------------------------------------- agents


async def test_agent_limits_round_trip_and_bump_the_config_version(storage: SQLStorage) -> None:
    name = f"limited-{uuid.uuid4().hex[:6]}"
    agent = await storage.agents.create(
        name,
        system_prompt="p",
        model=MODEL,
        turn_timeout=12.5,
        max_model_calls=4,
        max_tool_calls=9,
        history_tokens=2000,
        summarize=True,
    )
    assert (agent.turn_timeout, agent.max_model_calls, agent.max_tool_calls) == (12.5, 4, 9)
    assert (agent.history_tokens, agent.summarize) == (2000, True)
    first = await storage.agents.config_version(name)
    for change in (
        {"turn_timeout": 30},
        {"max_model_calls": 2},
        {"max_tool_calls": None},
        {"history_tokens": None},
        {"summarize": False},
    ):
        await storage.agents.update(name, **change)
        now = await storage.agents.config_version(name)
        assert now != first, change
        first = now
    agent = await storage.agents.get(name)  # type: ignore[assignment]
    assert agent is not None
    assert (agent.turn_timeout, agent.max_model_calls, agent.max_tool_calls) == (30.0, 2, None)
    assert (agent.history_tokens, agent.summarize) == (None, False)
    # None sets every limit back to its setting; summarize None is off.
    await storage.agents.update(name, turn_timeout=None, max_model_calls=None, summarize=None)
    agent = await storage.agents.get(name)  # type: ignore[assignment]
    assert agent is not None
    assert (agent.turn_timeout, agent.max_model_calls, agent.summarize) == (None, None, False)
    plain = await storage.agents.get(AGENT)
    assert plain is not None and plain.turn_timeout is None and plain.summarize is False


# --------------------------------------------------------------------------- usage


async def test_turns_record_usage_and_totals_per_day_and_month(
    storage: SQLStorage, clock: Clock
) -> None:
    alice, bob = new_user(), new_user()
    other = f"other-{uuid.uuid4().hex[:6]}"
    await storage.agents.create(other, system_prompt="p", model="scripted:other")
    await spend(storage, alice, 300)
    clock.at = DAY + timedelta(minutes=30)  # 23:30 UTC: the same UTC day
    await spend(storage, alice, 30)
    await spend(storage, alice, 60, agent=other, model="scripted:other")
    await spend(storage, bob, 900)
    clock.at = DAY + timedelta(hours=2)  # the next UTC day, the same month
    await spend(storage, alice, 600)
    clock.at = datetime(2026, 4, 1, 0, 5, tzinfo=UTC)  # the next month
    await spend(storage, alice, 90)

    spent = await storage.usage.spent(alice, DAY)
    assert (spent.day, spent.month) == (390, 990)
    spent = await storage.usage.spent(alice, DAY + timedelta(hours=2))
    assert (spent.day, spent.month) == (600, 990)
    spent = await storage.usage.spent(alice, clock.at)
    assert (spent.day, spent.month) == (90, 90)
    assert (await storage.usage.spent(bob, DAY)).day == 900

    lines = await storage.usage.lines(alice)
    got = [(str(x.day), x.agent_name, x.model, x.turns, x.total) for x in lines]
    assert got == [
        ("2026-03-14", AGENT, MODEL, 2, 330),
        ("2026-03-14", other, "scripted:other", 1, 60),
        ("2026-03-15", AGENT, MODEL, 1, 600),
        ("2026-04-01", AGENT, MODEL, 1, 90),
    ]
    first = lines[0]
    assert first.user_id == alice
    assert (first.model_calls, first.input_tokens, first.output_tokens) == (2, 220, 110)
    assert first.cached_tokens == 100 + 10
    assert first.cost == pytest.approx(1.0)
    # Filters: a period (since inclusive, until exclusive) and an agent.
    march = await storage.usage.lines(
        alice, since=DAY - timedelta(days=1), until=datetime(2026, 4, 1, tzinfo=UTC)
    )
    assert [x.total for x in march] == [330, 60, 600]
    assert [x.total for x in await storage.usage.lines(alice, agent_name=other)] == [60]
    everyone = await storage.usage.lines(None, until=DAY + timedelta(hours=1))
    assert {(x.user_id, x.total) for x in everyone} >= {(alice, 330), (alice, 60), (bob, 900)}


async def test_a_failed_turn_records_what_it_spent_and_a_turn_without_a_model_nothing(
    storage: SQLStorage,
) -> None:
    user = new_user()
    chat = await new_chat(storage, user)
    start = await begin(storage, user, chat, None)
    # The runtime ends a failed or timed-out turn the same way, with what it spent.
    await storage.turns.finish(start, [], touch=False, usage=TurnUsage(MODEL, 2, 70, 0))
    start = await begin(storage, user, chat, None)
    await storage.turns.finish(start, [], touch=False, usage=TurnUsage(MODEL, 0, 0, 0))
    start = await begin(storage, user, chat, None)
    await storage.turns.finish(start, [], touch=False)
    (line,) = await storage.usage.lines(user)
    assert (line.turns, line.model_calls, line.total) == (1, 2, 70)
    assert (await storage.usage.spent(user, datetime.now(UTC))).day == 70


async def test_real_turns_record_the_usage_the_model_reported(sql_url: str) -> None:
    runtime = await start_runtime(sql_url)
    try:
        user = new_user()
        reply = {"content": "ok", "usage": {"input_tokens": 30, "output_tokens": 12, "cached": 5}}
        await runtime.storage.agents.create(
            f"scripted-{user}",
            system_prompt="p",
            model=MODEL,
            model_settings={"responses": [reply] * 3},
        )
        chat = await new_chat(runtime.storage, user, f"scripted-{user}")  # type: ignore[arg-type]
        for _ in range(2):
            turn = await runtime.chat(user, f"scripted-{user}", chat, "hello")
            assert turn.usage is not None and turn.usage.total == 42
        (line,) = await runtime.storage.usage.lines(user)
        assert (line.turns, line.model_calls, line.input_tokens) == (2, 2, 60)
        assert (line.output_tokens, line.cached_tokens, line.model) == (24, 10, MODEL)
    finally:
        await runtime.close()


# --------------------------------------------------------------------------- budgets


async def test_a_spent_budget_refuses_the_turn_until_it_resets(
    storage: SQLStorage, clock: Clock
) -> None:
    user = new_user()
    limits = BudgetLimits(daily=1000, monthly=1500, estimate=100)
    await spend(storage, user, 1000, budget=limits)
    chat = await new_chat(storage, user)
    messages = await count(storage, schema.chat_messages, chat_id=chat)
    with pytest.raises(BudgetExceededError) as refused:
        await begin(storage, user, chat, limits)
    error = refused.value
    assert error.http_status == 429
    assert error.resets_at == next_day(DAY) == datetime(2026, 3, 15, tzinfo=UTC)
    assert error.retry_after == pytest.approx(3600)
    assert "daily" in str(error) and "1000" in str(error) and "2026-03-15 00:00" in str(error)
    # Rolled back: no message stored, no lease taken, no reservation held.
    assert await count(storage, schema.chat_messages, chat_id=chat) == messages
    assert await count(storage, schema.chat_leases, chat_id=chat) == 0
    assert await count(storage, schema.usage_reservations, user_id=user) == 0

    # The next UTC day, the daily budget is back; the month has 500 left.
    clock.at = DAY + timedelta(hours=1, minutes=1)
    await spend(storage, user, 600, budget=limits, chat=chat)
    with pytest.raises(BudgetExceededError) as refused:
        await begin(storage, user, chat, limits)
    assert "monthly" in str(refused.value) and "1500" in str(refused.value)
    assert refused.value.resets_at == next_month(clock.at) == datetime(2026, 4, 1, tzinfo=UTC)
    clock.at = datetime(2026, 4, 1, 0, 0, 1, tzinfo=UTC)
    start = await begin(storage, user, chat, limits)
    await storage.turns.finish(start, [], touch=False)
    # Without a budget to check (none given) the same spent user is not refused either.
    clock.at = DAY + timedelta(hours=2)
    start = await begin(storage, user, chat, None)
    await storage.turns.finish(start, [], touch=False)


async def test_overrides_replace_the_settings_and_minus_one_lifts_them(
    storage: SQLStorage, clock: Clock
) -> None:
    user, other = new_user(), new_user()
    limits = BudgetLimits(daily=500, monthly=None, estimate=10)
    await spend(storage, user, 500)
    chat = await new_chat(storage, user)
    with pytest.raises(BudgetExceededError):
        await begin(storage, user, chat, limits)
    stored = await storage.usage.set_budget(user, daily_tokens=UNLIMITED, monthly_tokens=None)
    assert (stored.daily_tokens, stored.monthly_tokens) == (-1, None)
    start = await begin(storage, user, chat, limits)
    await storage.turns.finish(start, [], touch=False)
    # An override lower than the setting refuses where the setting would not.
    await storage.usage.set_budget(other, daily_tokens=None, monthly_tokens=50)
    await spend(storage, other, 60)
    with pytest.raises(BudgetExceededError, match="monthly token budget of 50"):
        await begin(storage, other, await new_chat(storage, other), limits)
    # And with no setting at all, an override alone applies.
    with pytest.raises(BudgetExceededError):
        await begin(storage, other, await new_chat(storage, other), BudgetLimits(None, None, 1))

    listed = {b.user_id: b for b in await storage.usage.budgets()}
    assert (listed[user].daily_tokens, listed[other].monthly_tokens) == (-1, 50)
    assert (await storage.usage.budget(other)) == listed[other]
    assert await storage.usage.clear_budget(user) is True
    assert await storage.usage.clear_budget(user) is False
    assert await storage.usage.budget(user) is None
    with pytest.raises(BudgetExceededError):
        await begin(storage, user, chat, limits)


async def test_a_dead_turns_reservation_expires(storage: SQLStorage, clock: Clock) -> None:
    user = new_user()
    limits = BudgetLimits(daily=1000, monthly=None, estimate=100, hold=60)
    await spend(storage, user, 850)
    # A turn that never ends (its process died): its reservation holds 100 tokens.
    await begin(storage, user, await new_chat(storage, user), limits)
    clock.at = DAY + timedelta(seconds=30)
    with pytest.raises(BudgetExceededError) as refused:
        await begin(storage, user, await new_chat(storage, user), limits)
    assert refused.value.resets_at is None
    assert 0 < refused.value.retry_after <= 10
    # Its process may have stopped: when its hold lapses is said (its expiry, 60 s in).
    assert (
        "another turn of yours is running (or was interrupted: its hold lapses by 23:01:00 "
        "UTC) and your daily"
    ) in str(refused.value)
    # Said of the user to someone who acts for them (an operator's decision): theirs.
    assert refused.value.about_them().startswith(
        "another turn of theirs is running (or was interrupted"
    )
    clock.at = DAY + timedelta(seconds=61)
    start = await begin(storage, user, await new_chat(storage, user), limits)
    # The expired one was removed by the check; the new turn's is the only one.
    assert await count(storage, schema.usage_reservations, user_id=user) == 1
    await storage.turns.finish(start, [], touch=False, usage=TurnUsage(MODEL, 1, 50, 50))
    assert await count(storage, schema.usage_reservations, user_id=user) == 0


async def test_a_budgeted_turn_keeps_its_two_transactions(storage: SQLStorage) -> None:
    user = new_user()
    chat = await new_chat(storage, user)
    limits = BudgetLimits(daily=10**6, monthly=10**7, estimate=100)
    with transactions(storage) as begun:
        start = await begin(storage, user, chat, limits)
        await storage.turns.finish(start, [], touch=True, usage=TurnUsage(MODEL, 1, 5, 5))
    assert len(begun) == 2, begun
    assert (await storage.usage.spent(user, datetime.now(UTC))).day == 10


# --------------------------------------------------------------------------- concurrency


async def test_concurrent_begins_at_the_budget_edge_start_exactly_one(sql_url: str) -> None:
    """Eight turns of one user on eight chats, from two "processes", 50 tokens from the limit."""
    first, second = storage_for(sql_url), storage_for(sql_url)
    await first.upgrade()
    try:
        if await first.agents.get(AGENT) is None:
            await first.agents.create(AGENT, system_prompt="p", model=MODEL)
        user = new_user()
        limits = BudgetLimits(daily=1000, monthly=None, estimate=100)
        await spend(first, user, 950)
        chats = [await new_chat(first, user) for _ in range(8)]
        stores = [first, second] * 4

        async def attempt(store: SQLStorage, chat: uuid.UUID) -> TurnStart | BudgetExceededError:
            try:
                return await begin(store, user, chat, limits)
            except BudgetExceededError as error:
                return error

        results = await asyncio.gather(*(attempt(s, c) for s, c in zip(stores, chats, strict=True)))
        started = [r for r in results if isinstance(r, TurnStart)]
        assert len(started) == 1, results
        assert all(r.resets_at is None for r in results if isinstance(r, BudgetExceededError))
        (start,) = started
        store = stores[results.index(start)]
        await store.turns.finish(start, [], touch=False, usage=TurnUsage(MODEL, 1, 150, 50))
        # Over the budget by at most the one turn that started.
        assert (await first.usage.spent(user, datetime.now(UTC))).day == 1150

        # Far from the edge, every concurrent turn starts.
        roomy = BudgetLimits(daily=10**6, monthly=None, estimate=100)
        starts = await asyncio.gather(
            *(begin(s, user, c, roomy) for s, c in zip(stores, chats, strict=True))
        )
        assert await count(first, schema.usage_reservations, user_id=user) == 8
        for s, start in zip(stores, starts, strict=True):
            await s.turns.finish(start, [], touch=False, usage=TurnUsage(MODEL, 1, 1, 1))
        assert await count(first, schema.usage_reservations, user_id=user) == 0
    finally:
        await first.close()
        await second.close()


async def start_runtime(sql_url: str, **budgets: Any) -> Runtime:
    plugins = Plugins.load(LoadPolicy())
    settings = testing.settings(plugins, storage=pg_storage_settings(sql_url), budgets=budgets)
    runtime = Runtime(settings, plugins)
    await runtime.start(upgrade=True)
    return runtime


async def test_two_runtimes_at_the_budget_edge_run_exactly_one_turn(sql_url: str) -> None:
    runtimes = [
        await start_runtime(sql_url, daily_tokens=1000, turn_estimate=100) for _ in range(2)
    ]
    try:
        user = new_user()
        agent = f"edge-{user}"
        reply = {"content": "ok", "usage": {"input_tokens": 100, "output_tokens": 100}}
        storage = runtimes[0].storage
        await storage.agents.create(
            agent, system_prompt="p", model=MODEL, model_settings={"responses": [reply] * 20}
        )
        await storage.usage.record(
            user, agent, uuid.uuid4(), uuid.uuid4(), TurnUsage(MODEL, 1, 900, 50), datetime.now(UTC)
        )
        chats = [await new_chat(storage, user, agent) for _ in range(8)]  # type: ignore[arg-type]

        async def attempt(runtime: Runtime, chat: uuid.UUID) -> Any:
            try:
                return await runtime.chat(user, agent, chat, "go")
            except BudgetExceededError as error:
                return error

        results = await asyncio.gather(
            *(attempt(runtimes[n % 2], chat) for n, chat in enumerate(chats))
        )
        done = [r for r in results if not isinstance(r, BudgetExceededError)]
        assert len(done) == 1, results
        assert (await storage.usage.spent(user, datetime.now(UTC))).day == 950 + 200
        # Spent now: every later turn is refused with when the budget resets.
        with pytest.raises(BudgetExceededError) as refused:
            await runtimes[1].chat(user, agent, chats[0], "again")
        assert refused.value.resets_at == next_day(datetime.now(UTC))
    finally:
        for runtime in runtimes:
            await runtime.close()


# --------------------------------------------------------------------------- summaries


async def test_summaries_are_stored_by_finish_and_read_by_begin(storage: SQLStorage) -> None:
    user = new_user()
    name = f"summing-{user}"
    await storage.agents.create(name, system_prompt="p", model=MODEL, summarize=True)
    chat = await new_chat(storage, user, name)
    start = await begin(storage, user, chat, None, agent=name)
    assert start.summary is None
    summary = NewSummary("they talked about tea", through_id=7, messages=4)
    await storage.turns.finish(start, [], touch=False, summary=summary)
    start = await begin(storage, user, chat, None, agent=name)
    assert start.summary is not None
    assert (start.summary.text, start.summary.through_id, start.summary.messages) == (
        "they talked about tea",
        7,
        4,
    )
    assert start.summary.chat_id == chat and start.summary.user_id == user
    assert abs(start.summary.updated_at - datetime.now(UTC)) < timedelta(minutes=5)
    assert start.summary == await storage.summaries.get(user, chat)
    await storage.turns.finish(start, [], touch=False, summary=NewSummary("tea, then coffee", 9, 6))
    # An agent without summarize does not read it.
    await storage.agents.update(name, summarize=False)
    start = await begin(storage, user, chat, None, agent=name)
    assert start.summary is None
    await storage.turns.finish(start, [], touch=False)
    stored = await storage.summaries.get(user, chat)
    assert stored is not None and (stored.text, stored.messages) == ("tea, then coffee", 6)
    put = await storage.summaries.put(user, chat, NewSummary("shorter", 9, 6))
    assert put.text == "shorter" == (await storage.summaries.get(user, chat)).text  # type: ignore[union-attr]
