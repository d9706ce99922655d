"""Budgets attacked by the order of things: a decision that resumes the model, and a turn
that runs longer than the setting's time limit because its agent allows it.

SQLite and PostgreSQL; the model is chatwright's ``scripted`` one.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from chatwright.errors import BudgetExceededError, TurnTimeoutError
from chatwright.plugins.example import assistant as example
from chatwright.plugins.sql import rows
from chatwright.usage import TurnUsage
from tests.openai_stub import OpenAIStub
from tests.test_bounded_turns import Make, new_chat, seed
from tests.test_bounded_turns import make as make


async def spend(runtime: Any, user: str, tokens: int) -> None:
    usage = TurnUsage("scripted:x", 1, tokens, 0)
    await runtime.storage.usage.record(
        user, example.AGENT, uuid.uuid4(), uuid.uuid4(), usage, datetime.now(UTC)
    )


async def spent(runtime: Any, user: str) -> int:
    return int((await runtime.storage.usage.spent(user, datetime.now(UTC))).day)


async def test_a_decision_that_would_resume_the_model_is_refused_once_the_budget_is_spent(
    make: Make, sql_url: str
) -> None:
    user = f"spender-{uuid.uuid4().hex[:8]}"
    runtime = await make(sql_url, budgets={"daily_tokens": 1000, "turn_estimate": 100})
    script = [
        {
            "tool_calls": [{"name": "add_task", "args": {"title": "milk"}}],
            "usage": {"input_tokens": 10, "output_tokens": 10},
        },
        {"content": "expensive", "usage": {"input_tokens": 50_000, "output_tokens": 50_000}},
    ]
    await seed(runtime, "scripted:x", {"responses": script})
    for row in await runtime.storage.tools.list(example.AGENT):
        if row.name == "add_task":
            await runtime.storage.tools.update(row.id, approval="required")
    chat_id = await new_chat(runtime, user)
    (action,) = (await runtime.chat(user, example.AGENT, chat_id, "add milk")).pending
    await spend(runtime, user, 5000)
    before = await spent(runtime, user)
    for approve in (True, False):
        with pytest.raises(BudgetExceededError, match="daily token budget"):
            await runtime.decide(user, action.id, approve)
    assert await spent(runtime, user) == before
    stored = await runtime.storage.pending.get(user, action.id)
    assert stored is not None and stored.status == "pending"
    # With room again (the user's override lifts the budget), the same decision goes on.
    await runtime.storage.usage.set_budget(user, daily_tokens=-1, monthly_tokens=None)
    resumed = await runtime.decide(user, action.id, True)
    assert resumed.response == "expensive"


async def test_a_turn_of_an_agent_with_a_longer_time_limit_keeps_its_reservation(
    make: Make, sql_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The setting's limit is 10 s (a reservation of 70 s); the agent allows 600 s. At 71 s
    on the database's clock the first turn still runs and must still count."""
    user = f"spender-{uuid.uuid4().hex[:8]}"
    runtime = await make(
        sql_url, budgets={"daily_tokens": 1000, "turn_estimate": 600}, turns={"timeout": 10}
    )
    await seed(runtime, "scripted:x", {"responses": [{"content": "slow", "sleep": 30}] * 4})
    await runtime.storage.agents.update(example.AGENT, turn_timeout=600)
    first = asyncio.ensure_future(
        runtime.chat(user, example.AGENT, await new_chat(runtime, user), "a")
    )
    second_chat = await new_chat(runtime, user)
    try:
        await asyncio.sleep(1.0)  # the first turn runs, holding 600 of the 1000 tokens
        with pytest.raises(BudgetExceededError, match="another turn of yours is running"):
            await runtime.chat(user, example.AGENT, second_chat, "b")
        real_now = rows.now
        monkeypatch.setattr(rows, "now", lambda: real_now() + timedelta(seconds=71))
        with pytest.raises(BudgetExceededError, match="another turn of yours is running"):
            await runtime.chat(user, example.AGENT, second_chat, "b")
    finally:
        first.cancel()
        await asyncio.gather(first, return_exceptions=True)


async def test_turns_that_always_run_out_of_time_are_held_by_the_budget(
    make: Make, sql_url: str, openai_stub: OpenAIStub
) -> None:
    """A provider reports a call's tokens when it ends: a call a time limit stops has no
    report, yet it was charged. It counts with its prompt's approximate tokens and the
    text it had streamed, so a user cannot spend past a budget by never finishing."""
    user = f"spender-{uuid.uuid4().hex[:8]}"
    runtime = await make(
        sql_url, budgets={"daily_tokens": 60, "turn_estimate": 10}, turns={"timeout": 1.0}
    )
    await seed(runtime, "openai:slow", openai_stub.model_settings())
    pieces: list[str] = []

    async def on_token(text: str) -> None:
        pieces.append(text)

    prompt = "write " + "very " * 60 + "long"
    with pytest.raises(TurnTimeoutError):
        await runtime.chat(
            user, example.AGENT, await new_chat(runtime, user), prompt, on_token=on_token
        )
    assert pieces, "the model streamed text before it was stopped"
    (row,) = await usage_rows(runtime, user)
    assert row["model_calls"] == 1
    assert row["input_tokens"] >= len(prompt) // 4
    assert row["output_tokens"] >= 1
    # Spent past the budget by that one turn: the next one is refused.
    with pytest.raises(BudgetExceededError, match="daily token budget"):
        await runtime.chat(user, example.AGENT, await new_chat(runtime, user), prompt)
    assert len(openai_stub.requests) == 1


async def test_a_call_cut_off_while_streaming_tool_arguments_counts_them(
    make: Make, sql_url: str, openai_stub: OpenAIStub
) -> None:
    """A model can stream a tool call's arguments for as long as a turn lasts, with no
    text at all: those count as the text would, four characters to a token."""
    user = f"arguer-{uuid.uuid4().hex[:8]}"
    runtime = await make(sql_url, turns={"timeout": 1.0})
    await seed(runtime, "openai:slow-args", openai_stub.model_settings())
    pieces: list[str] = []

    async def on_token(text: str) -> None:
        pieces.append(text)

    with pytest.raises(TurnTimeoutError):
        await runtime.chat(
            user, example.AGENT, await new_chat(runtime, user), "add one", on_token=on_token
        )
    assert pieces == [], "the model streamed no text, only a tool call's arguments"
    (row,) = await usage_rows(runtime, user)
    assert row["model_calls"] == 1
    # About 5 characters of arguments, at one every 0.2 s, before the 1 s limit.
    assert row["output_tokens"] >= 1, row


async def test_a_cancelled_turn_counts_the_model_call_it_was_waiting_for(
    make: Make, sql_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chatwright.plugins.models.scripted import ScriptedChatModel

    # Cancelled once the model has been called, however long the turn took to get there.
    called = asyncio.Event()
    delay = ScriptedChatModel._delay

    def calling(self: ScriptedChatModel) -> float:
        called.set()
        return delay(self)

    monkeypatch.setattr(ScriptedChatModel, "_delay", calling)
    user = f"spender-{uuid.uuid4().hex[:8]}"
    runtime = await make(sql_url)
    await seed(runtime, "scripted:x", {"responses": [{"content": "late", "sleep": 30}]})
    turn = asyncio.ensure_future(
        runtime.chat(user, example.AGENT, await new_chat(runtime, user), "x" * 400)
    )
    await asyncio.wait_for(called.wait(), 25)
    turn.cancel()
    await asyncio.gather(turn, return_exceptions=True)
    (row,) = await usage_rows(runtime, user)
    assert row["model_calls"] == 1 and row["output_tokens"] == 0
    assert row["input_tokens"] >= 100


async def test_a_turn_whose_usage_cannot_be_counted_is_stored_and_gives_the_chat_back(
    make: Make, sql_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Counting a turn's usage runs before its end: should it fail, the end still
    stores the reply and gives the chat back (it is logged, not charged)."""
    import chatwright.usage

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("cannot count")

    user = f"spender-{uuid.uuid4().hex[:8]}"
    runtime = await make(sql_url)
    await seed(runtime, "scripted:x", {"responses": [{"content": "one"}, {"content": "two"}]})
    chat = await new_chat(runtime, user)
    with monkeypatch.context() as patched:
        patched.setattr(chatwright.usage, "usage_of", broken)
        turn = await runtime.chat(user, example.AGENT, chat, "first")
    assert turn.response == "one"
    following = await runtime.chat(user, example.AGENT, chat, "second")
    assert following.response == "two"
    history = await runtime.storage.messages.page(user, chat, limit=10)
    assert [m.role for m in history] == ["human", "ai", "human", "ai"]


async def test_a_model_that_fails_is_not_charged_an_estimate(make: Make, sql_url: str) -> None:
    """Only a call that was cut off is counted unanswered: one the provider refused (an
    error answer) reports nothing and is charged nothing."""
    from chatwright.errors import ModelError

    user = f"spender-{uuid.uuid4().hex[:8]}"
    runtime = await make(sql_url)
    await seed(runtime, "scripted:x", {"responses": [], "fail": "provider down"})
    with pytest.raises(ModelError):
        await runtime.chat(user, example.AGENT, await new_chat(runtime, user), "x" * 400)
    assert await spent(runtime, user) == 0


async def usage_rows(runtime: Any, user: str) -> list[dict[str, Any]]:
    from tests.hostile.conftest import sql

    return await sql(
        runtime,
        "SELECT model_calls, input_tokens, output_tokens FROM token_usage WHERE user_id = :u",
        u=user,
    )


async def test_with_the_budget_spent_only_the_decision_that_resumes_the_model_is_refused(
    make: Make, sql_url: str
) -> None:
    """Deciding one of two pending actions runs no model: it is not refused for a budget
    (the chat would be stuck until the actions expired). The last one is, saying so."""
    user = f"spender-{uuid.uuid4().hex[:8]}"
    runtime = await make(sql_url, budgets={"daily_tokens": 1000, "turn_estimate": 100})
    two = {
        "tool_calls": [
            {"name": "add_task", "args": {"title": "first"}},
            {"name": "add_task", "args": {"title": "second"}},
        ]
    }
    await seed(runtime, "scripted:x", {"responses": [two, {"content": "done"}]})
    for row in await runtime.storage.tools.list(example.AGENT):
        if row.name == "add_task":
            await runtime.storage.tools.update(row.id, approval="required")
    chat_id = await new_chat(runtime, user)
    first, second = (await runtime.chat(user, example.AGENT, chat_id, "add two")).pending
    await spend(runtime, user, 5000)
    denied = await runtime.decide(user, first.id, False)
    assert denied.status == "approval_required"
    stored = await runtime.storage.pending.get(user, first.id)
    assert stored is not None and stored.status == "denied"
    with pytest.raises(BudgetExceededError, match=r"was not decided .* and still waits"):
        await runtime.decide(user, second.id, True)
    stored = await runtime.storage.pending.get(user, second.id)
    assert stored is not None and stored.status == "pending"
    # Decided already: told so (409), not refused for the budget.
    from chatwright.errors import AlreadyDecidedError

    with pytest.raises(AlreadyDecidedError):
        await runtime.decide(user, first.id, True)


async def test_a_decisions_reservation_lasts_for_its_call_and_the_turn_it_resumes(
    make: Make, sql_url: str
) -> None:
    """An approved call and the turn it resumes each get the time limit (10 s here): the
    reservation must outlast both (2 x 10 s + a minute), not one turn's 70 s."""
    from tests.hostile.conftest import sql

    user = f"spender-{uuid.uuid4().hex[:8]}"
    runtime = await make(
        sql_url, budgets={"daily_tokens": 100_000, "turn_estimate": 100}, turns={"timeout": 10}
    )
    call = {"tool_calls": [{"name": "add_task", "args": {"title": "milk"}}]}
    await seed(runtime, "scripted:x", {"responses": [call, {"content": "slow", "sleep": 5}]})
    for row in await runtime.storage.tools.list(example.AGENT):
        if row.name == "add_task":
            await runtime.storage.tools.update(row.id, approval="required")
    chat_id = await new_chat(runtime, user)
    (action,) = (await runtime.chat(user, example.AGENT, chat_id, "add milk")).pending
    deciding = asyncio.ensure_future(runtime.decide(user, action.id, True))
    try:
        await asyncio.sleep(1.0)  # the approved call ran; the resumed model call sleeps
        (held,) = await sql(
            runtime, "SELECT expires_at FROM usage_reservations WHERE user_id = :u", u=user
        )
        expires = held["expires_at"]
        if isinstance(expires, str):
            expires = datetime.fromisoformat(expires)
        if expires.tzinfo is None:
            expires = expires.replace(tzinfo=UTC)
        assert (expires - datetime.now(UTC)).total_seconds() > 75
    finally:
        deciding.cancel()
        await asyncio.gather(deciding, return_exceptions=True)
