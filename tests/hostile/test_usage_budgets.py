"""Token usage, budgets, agent limits and chat summaries under attack, on every backend.

A user must not see another's usage or summary, nor lower what they spent; a
model reporting absurd usage must neither lose the turn nor wrap the totals
around; budget overrides and agent limits of the wrong kind are refused by
name (and the database's CHECK constraints refuse them when written past the
stores); no ``crud`` tool reaches the usage tables.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa

from chatwright.errors import BudgetExceededError, InvalidInputError, NotFoundError
from chatwright.plugins.sql.budgets import MAX_TOKENS
from chatwright.runtime import Runtime
from chatwright.stores import NewSummary
from tests.hostile.conftest import MakeRuntime, sql

MODEL = "scripted:hostile"


async def scripted(runtime: Runtime, name: str, *replies: dict[str, Any]) -> None:
    await runtime.storage.agents.create(
        name, system_prompt="p", model=MODEL, model_settings={"responses": list(replies)}
    )


async def chat_of(runtime: Runtime, user: str, agent: str) -> uuid.UUID:
    return (await runtime.storage.sessions.open(user, agent, chat_id=uuid.uuid4())).chat_id


def used(tokens_in: int, tokens_out: int) -> dict[str, Any]:
    return {"content": "ok", "usage": {"input_tokens": tokens_in, "output_tokens": tokens_out}}


async def test_usage_and_summaries_stay_with_their_user(make_runtime: MakeRuntime) -> None:
    runtime = await make_runtime()
    await scripted(runtime, "meter", used(40, 2), used(40, 2))
    alices = await chat_of(runtime, "alice", "meter")
    bobs = await chat_of(runtime, "bob", "meter")
    await runtime.chat("alice", "meter", alices, "secret question")
    await runtime.chat("bob", "meter", bobs, "hi")
    await runtime.storage.summaries.put("alice", alices, NewSummary("alice's secret", 1, 1))

    (line,) = await runtime.storage.usage.lines("bob")
    assert (line.user_id, line.total) == ("bob", 42)
    assert {x.user_id for x in await runtime.storage.usage.lines("alice")} == {"alice"}
    assert await runtime.storage.usage.lines("mallory") == []
    assert await runtime.storage.summaries.get("bob", alices) is None
    # Bob writing a summary into alice's chat: refused (not found without RLS; refused by
    # the policy with it), and hers is as it was.
    with pytest.raises((NotFoundError, InvalidInputError)):
        await runtime.storage.summaries.put("bob", alices, NewSummary("planted", 1, 1))
    kept = await runtime.storage.summaries.get("alice", alices)
    assert kept is not None and kept.text == "alice's secret"


async def test_absurd_usage_from_a_model_is_bounded_and_never_lowers_the_spending(
    make_runtime: MakeRuntime,
) -> None:
    runtime = await make_runtime(budgets={"daily_tokens": 10**6, "turn_estimate": 10})
    await scripted(
        runtime,
        "liar",
        used(500, 500),
        used(-(10**9), -5),  # "refunds"
        used(10**20, 10**20),  # past BIGINT
        used(1, 1),
    )
    chat = await chat_of(runtime, "mallory", "liar")
    await runtime.chat("mallory", "liar", chat, "one")
    turn = await runtime.chat("mallory", "liar", chat, "two")
    assert turn.response == "ok"  # the turn and its messages are kept
    spent = await runtime.storage.usage.spent("mallory", datetime.now(UTC))
    assert spent.day == 1000  # nothing taken off
    await runtime.chat("mallory", "liar", chat, "three")
    spent = await runtime.storage.usage.spent("mallory", datetime.now(UTC))
    assert spent.day == 1000 + 2 * MAX_TOKENS
    with pytest.raises(BudgetExceededError):
        await runtime.chat("mallory", "liar", chat, "four")
    history = await runtime.storage.messages.window("mallory", chat, 50)
    assert [m.role for m in history].count("human") == 3  # the refused one stored nothing


@pytest.mark.parametrize("value", [-2, MAX_TOKENS + 1, True, "5", 1.5, float("nan")], ids=repr)
async def test_budget_overrides_of_the_wrong_kind_are_refused(
    make_runtime: MakeRuntime, value: Any
) -> None:
    runtime = await make_runtime()
    usage = runtime.storage.usage
    with pytest.raises(InvalidInputError, match="daily_tokens"):
        await usage.set_budget("alice", daily_tokens=value, monthly_tokens=None)
    with pytest.raises(InvalidInputError, match="monthly_tokens"):
        await usage.set_budget("alice", daily_tokens=None, monthly_tokens=value)
    assert await usage.budget("alice") is None


async def test_the_database_refuses_bad_overrides_and_limits_written_past_the_stores(
    make_runtime: MakeRuntime,
) -> None:
    runtime = await make_runtime()
    for user in ("", "x" * 256):
        with pytest.raises(InvalidInputError, match="user id"):
            await runtime.storage.usage.set_budget(user, daily_tokens=1, monthly_tokens=1)
    with pytest.raises(sa.exc.IntegrityError):
        await sql(runtime, "INSERT INTO user_budgets (user_id, daily_tokens) VALUES ('a', -2)")
    await runtime.storage.agents.create("bounded", system_prompt="p", model=MODEL)
    for column in ("turn_timeout", "max_model_calls", "max_tool_calls", "history_tokens"):
        with pytest.raises(sa.exc.IntegrityError):
            await sql(runtime, f"UPDATE agents SET {column} = 0 WHERE name = 'bounded'")


@pytest.mark.parametrize(
    "change",
    [
        {"turn_timeout": 0},
        {"turn_timeout": -1},
        {"turn_timeout": float("inf")},
        {"turn_timeout": "10"},
        {"max_model_calls": 0},
        {"max_model_calls": 2.5},
        {"max_tool_calls": -3},
        {"max_tool_calls": True},
        {"history_tokens": 2**40},
        {"summarize": "yes"},
        {"budget": 5},
    ],
    ids=repr,
)
async def test_agent_limits_of_the_wrong_kind_are_refused_by_name(
    make_runtime: MakeRuntime, change: dict[str, Any]
) -> None:
    runtime = await make_runtime()
    agents = runtime.storage.agents
    (key,) = change
    with pytest.raises(InvalidInputError, match=key):
        await agents.create("fresh", system_prompt="p", model=MODEL, **change)
    assert await agents.get("fresh") is None
    before = await agents.create("kept", system_prompt="p", model=MODEL, max_model_calls=3)
    with pytest.raises(InvalidInputError, match=key):
        await agents.update("kept", **change)
    assert await agents.get("kept") == before


@pytest.mark.parametrize(
    "table", ["token_usage", "USAGE_TOTALS", "public.usage_reservations", "user_budgets"]
)
async def test_no_crud_statement_reaches_the_usage_tables(
    make_runtime: MakeRuntime, table: str
) -> None:
    runtime = await make_runtime()
    records = runtime.storage.records
    with pytest.raises(InvalidInputError, match="belongs to chatwright"):
        await records.select("mallory", table, {}, columns=["user_id"], limit=5)
    with pytest.raises(InvalidInputError, match="belongs to chatwright"):
        await records.update("mallory", table, {"user_id": "mallory"}, {"tokens": 0}, returning=[])
