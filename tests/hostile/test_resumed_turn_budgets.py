"""Budgets and usage of a turn that resumes after a decision.

A tool row in approval mode ``required`` stops a turn at its call; deciding the
chat's last pending action (approve or deny) runs the model on. docs/usage.md:
that continuation "is a turn for budgets too: checked like a new turn and
refused the same way (429, saying the action was not decided and still
waits)", "a decision's reservation lasts for the approved call and the turn it
resumes", and every model call's usage is recorded with the turn and added to
the user's totals, "resumed turns ... included" in the metrics.

Attacked here, through :meth:`Runtime.decide` (SQLite and PostgreSQL) and
through ``POST /api/pending/{id}/approve|deny`` of a real server: the resumed
model calls are counted and charged; a user whose budget is spent gets no
model call by deciding; the reservation a resuming decision takes holds off
concurrent turns while it runs and is dropped however it ends (an answer, a
model error, its time limit, a cancellation).

The model is chatwright's ``scripted`` one.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from chatwright.errors import BudgetExceededError, ModelError, TurnTimeoutError
from chatwright.plugins.example import assistant as example
from chatwright.runtime import Runtime
from chatwright.usage import TurnUsage
from tests.hostile.conftest import sql
from tests.hostile.serving import Served, serving, settings_for
from tests.test_bounded_turns import Make, new_chat, seed
from tests.test_bounded_turns import make as make

AGENT = example.AGENT
MODEL = "scripted:x"
ADD_MILK = {
    "tool_calls": [{"name": "add_task", "args": {"title": "milk"}}],
    "usage": {"input_tokens": 10, "output_tokens": 5},
}
FIRST = 10 + 5  # what the turn spent before it stopped for the decision


def user_id() -> str:
    return f"decider-{uuid.uuid4().hex[:8]}"


async def require_approval(runtime: Runtime) -> None:
    for row in await runtime.storage.tools.list(AGENT):
        if row.name == "add_task":
            await runtime.storage.tools.update(row.id, approval="required")


async def stopped_turn(runtime: Runtime, user: str, script: list[dict[str, Any]]) -> Any:
    """A turn of ``user`` on a new chat that stops at ``add_task``; its pending action."""
    await seed(runtime, MODEL, {"responses": script})
    await require_approval(runtime)
    turn = await runtime.chat(user, AGENT, await new_chat(runtime, user), "add milk")
    assert turn.status == "approval_required"
    (action,) = turn.pending
    return action


async def spent_today(runtime: Runtime, user: str) -> int:
    return int((await runtime.storage.usage.spent(user, datetime.now(UTC))).day)


async def usage_rows(runtime: Runtime, user: str) -> list[dict[str, Any]]:
    return await sql(
        runtime,
        "SELECT turn_id, model_calls, input_tokens, output_tokens FROM token_usage "
        "WHERE user_id = :u ORDER BY id",
        u=user,
    )


async def reservations(runtime: Runtime, user: str) -> list[dict[str, Any]]:
    return await sql(runtime, "SELECT turn_id FROM usage_reservations WHERE user_id = :u", u=user)


async def reserved(runtime: Runtime, user: str, seconds: float = 20.0) -> None:
    """Until the user holds a reservation (a decision's resumed turn has begun)."""
    deadline = time.monotonic() + seconds
    while not await reservations(runtime, user):
        assert time.monotonic() < deadline, "the resumed turn took no reservation"
        await asyncio.sleep(0.02)


async def spend(runtime: Runtime, user: str, tokens: int) -> None:
    """Tokens the user spent in an earlier turn."""
    await runtime.storage.usage.record(
        user, AGENT, uuid.uuid4(), uuid.uuid4(), TurnUsage(MODEL, 1, tokens, 0), datetime.now(UTC)
    )


# -- through the runtime ---------------------------------------------------------------


@pytest.mark.parametrize("approve", [True, False], ids=["approved", "denied"])
async def test_the_resumed_model_calls_are_counted_and_charged(
    make: Make, sql_url: str, approve: bool
) -> None:
    user = user_id()
    runtime = await make(sql_url, budgets={"daily_tokens": 100_000, "turn_estimate": 100})
    resumed_reply = {"content": "done", "usage": {"input_tokens": 300, "output_tokens": 40}}
    action = await stopped_turn(runtime, user, [ADD_MILK, resumed_reply])
    assert await spent_today(runtime, user) == FIRST

    turn = await runtime.decide(user, action.id, approve)
    assert turn.status == "done" and turn.response == "done"
    assert turn.usage == TurnUsage(MODEL, 1, 300, 40, 0)
    # Charged to the user's day and month, and recorded under the turn.
    assert await spent_today(runtime, user) == FIRST + 340
    rows = await usage_rows(runtime, user)
    assert [(r["model_calls"], r["input_tokens"], r["output_tokens"]) for r in rows] == [
        (1, 10, 5),
        (1, 300, 40),
    ]
    assert {uuid.UUID(str(r["turn_id"])) for r in rows} == {action.turn_id}
    (line,) = await runtime.storage.usage.lines(user)
    assert (line.model_calls, line.input_tokens, line.output_tokens) == (2, 310, 45)
    assert await reservations(runtime, user) == []


async def test_a_resumed_turn_that_overspends_refuses_the_next_turn(
    make: Make, sql_url: str
) -> None:
    """A decision started with room left may spend past the budget (by that one turn): what
    it spent counts, and the user's next turn is refused before its model runs."""
    user = user_id()
    runtime = await make(sql_url, budgets={"daily_tokens": 1000, "turn_estimate": 100})
    costly = {"content": "costly", "usage": {"input_tokens": 4000, "output_tokens": 1000}}
    action = await stopped_turn(runtime, user, [ADD_MILK, costly, {"content": "never"}])
    turn = await runtime.decide(user, action.id, True)
    assert turn.response == "costly"
    assert await spent_today(runtime, user) == FIRST + 5000
    with pytest.raises(BudgetExceededError, match="daily token budget of 1000"):
        await runtime.chat(user, AGENT, await new_chat(runtime, user), "more")
    assert len(await usage_rows(runtime, user)) == 2


async def test_a_refused_decision_calls_no_model_and_holds_nothing(
    make: Make, sql_url: str
) -> None:
    """Refused for a spent budget, a decision leaves the action pending, calls no model,
    records no usage and leaves no reservation behind; both ways of deciding."""
    user = user_id()
    runtime = await make(sql_url, budgets={"daily_tokens": 1000, "turn_estimate": 100})
    action = await stopped_turn(runtime, user, [ADD_MILK, {"content": "resumed"}])
    await spend(runtime, user, 2000)
    rows = await usage_rows(runtime, user)
    for approve in (True, False, True):
        with pytest.raises(BudgetExceededError, match=r"was not decided .* and still waits"):
            await runtime.decide(user, action.id, approve)
    assert await usage_rows(runtime, user) == rows
    assert await reservations(runtime, user) == []
    stored = await runtime.storage.pending.get(user, action.id)
    assert stored is not None and stored.status == "pending"
    # The model never ran: once the budget has room, the script's next reply is the answer.
    await runtime.storage.usage.set_budget(user, daily_tokens=-1, monthly_tokens=None)
    assert (await runtime.decide(user, action.id, True)).response == "resumed"


async def test_a_resuming_decision_holds_a_reservation_while_it_runs(
    make: Make, sql_url: str
) -> None:
    """While the resumed model call runs, its reservation counts: a concurrent turn that
    would not fit beside it is refused; once it has ended the room is back."""
    user = user_id()
    runtime = await make(sql_url, budgets={"daily_tokens": 1000, "turn_estimate": 600})
    slow = {"content": "slow", "sleep": 5, "usage": {"input_tokens": 20, "output_tokens": 20}}
    action = await stopped_turn(runtime, user, [ADD_MILK, slow, {"content": "other"}])
    other_chat = await new_chat(runtime, user)
    deciding = asyncio.ensure_future(runtime.decide(user, action.id, True))
    try:
        await reserved(runtime, user)
        assert not deciding.done()
        assert [uuid.UUID(str(r["turn_id"])) for r in await reservations(runtime, user)] == [
            action.turn_id
        ]
        with pytest.raises(BudgetExceededError, match="another turn of yours is running"):
            await runtime.chat(user, AGENT, other_chat, "meanwhile")
        assert (await deciding).response == "slow"
    finally:
        deciding.cancel()
        await asyncio.gather(deciding, return_exceptions=True)
    assert await reservations(runtime, user) == []
    assert (await runtime.chat(user, AGENT, other_chat, "now")).response == "other"
    assert await spent_today(runtime, user) == FIRST + 40


async def test_a_resumed_turn_that_fails_records_what_it_spent_and_its_reservation_goes(
    make: Make, sql_url: str
) -> None:
    """The resumed model calls a tool (spending tokens), then fails: the call that answered
    is charged, the failed one is not, and no reservation is left."""
    user = user_id()
    runtime = await make(sql_url, budgets={"daily_tokens": 100_000, "turn_estimate": 100})
    listing = {
        "tool_calls": [{"name": "list_tasks", "args": {}}],
        "usage": {"input_tokens": 70, "output_tokens": 7},
    }
    action = await stopped_turn(runtime, user, [ADD_MILK, listing])  # then no reply left
    with pytest.raises(ModelError, match="no reply left") as failed:
        await runtime.decide(user, action.id, True)
    assert failed.value.usage == TurnUsage(MODEL, 1, 70, 7, 0)
    assert await reservations(runtime, user) == []
    assert await spent_today(runtime, user) == FIRST + 77
    assert [r["model_calls"] for r in await usage_rows(runtime, user)] == [1, 1]


async def test_a_resumed_turn_past_its_time_limit_is_charged_and_frees_its_reservation(
    make: Make, sql_url: str
) -> None:
    user = user_id()
    runtime = await make(
        sql_url, budgets={"daily_tokens": 100_000, "turn_estimate": 100}, turns={"timeout": 3.0}
    )
    action = await stopped_turn(runtime, user, [ADD_MILK, {"content": "late", "sleep": 30}])
    with pytest.raises(TurnTimeoutError):
        await runtime.decide(user, action.id, True)
    assert await reservations(runtime, user) == []
    _, cut_off = await usage_rows(runtime, user)
    # The call cut off has no report; it counts with its prompt's estimate.
    assert (cut_off["model_calls"], cut_off["output_tokens"]) == (1, 0)
    assert cut_off["input_tokens"] > 0
    assert await spent_today(runtime, user) == FIRST + cut_off["input_tokens"]


async def test_a_cancelled_decision_frees_its_reservation_and_is_charged(
    make: Make, sql_url: str
) -> None:
    user = user_id()
    runtime = await make(sql_url, budgets={"daily_tokens": 100_000, "turn_estimate": 100})
    action = await stopped_turn(runtime, user, [ADD_MILK, {"content": "late", "sleep": 30}])
    deciding = asyncio.ensure_future(runtime.decide(user, action.id, True))
    await reserved(runtime, user)
    # Begun: its model call (30 s) starts right after the reservation, within a few
    # milliseconds; 3 s leave room for a busy machine.
    await asyncio.sleep(3.0)
    assert len(await reservations(runtime, user)) == 1
    deciding.cancel()
    await asyncio.gather(deciding, return_exceptions=True)
    assert await reservations(runtime, user) == []
    (_, cut_off) = await usage_rows(runtime, user)
    assert cut_off["model_calls"] == 1 and cut_off["input_tokens"] > 0


# -- through the HTTP API ----------------------------------------------------------------


async def served_stop(served: Served, script: list[dict[str, Any]]) -> tuple[str, str]:
    """The example agent on ``script``, ``add_task`` waiting for approval, and a turn that
    stopped at it: the chat's id and the pending action's."""
    runtime = served.runtime
    await runtime.storage.agents.update(AGENT, model=MODEL, model_settings={"responses": script})
    await require_approval(runtime)
    async with httpx.AsyncClient(base_url=served.url, timeout=30) as client:
        chat_id = (await client.post("/api/sessions", json={"agent_name": AGENT})).json()["chat_id"]
        body = {"agent_name": AGENT, "chat_id": chat_id, "message": "add milk"}
        answer = (await client.post("/api/chat", json=body)).json()
    assert answer["status"] == "approval_required", answer
    (action,) = answer["pending"]
    return chat_id, str(action["id"])


def tokens_metric(metrics: str, kind: str) -> float:
    name = f'chatwright_tokens_total{{kind="{kind}",model="{MODEL}"}} '
    lines = [line for line in metrics.splitlines() if line.startswith(name)]
    return float(lines[0][len(name) :]) if lines else 0.0


@pytest.mark.parametrize("verb", ["approve", "deny"])
async def test_deciding_over_http_counts_the_resumed_turn(tmp_path: Path, verb: str) -> None:
    settings = settings_for(tmp_path, budgets={"daily_tokens": 100_000, "turn_estimate": 100})
    resumed = {"content": "done", "usage": {"input_tokens": 300, "output_tokens": 40}}
    async with serving(settings) as served:
        _, action_id = await served_stop(served, [ADD_MILK, resumed])
        async with httpx.AsyncClient(base_url=served.url, timeout=30) as client:
            decided = await client.post(f"/api/pending/{action_id}/{verb}")
            assert decided.status_code == 200, decided.text
            answer = decided.json()
            assert answer["response"] == "done"
            assert answer["usage"]["model_calls"] == 1
            assert (answer["usage"]["input_tokens"], answer["usage"]["output_tokens"]) == (300, 40)
            usage = (await client.get("/api/usage")).json()
            assert usage["totals"]["input_tokens"] == 310
            assert usage["totals"]["output_tokens"] == 45
            (day, _) = usage["budgets"]
            assert day["used"] == FIRST + 340
            metrics = (await client.get("/metrics")).text
        assert tokens_metric(metrics, "input") == 310
        assert tokens_metric(metrics, "output") == 45
        assert await reservations(served.runtime, "local") == []


@pytest.mark.parametrize("verb", ["approve", "deny"])
async def test_deciding_over_http_with_the_budget_spent_is_429_and_the_action_waits(
    tmp_path: Path, verb: str
) -> None:
    settings = settings_for(tmp_path, budgets={"daily_tokens": 1000, "turn_estimate": 100})
    async with serving(settings) as served:
        _, action_id = await served_stop(served, [ADD_MILK, {"content": "resumed"}])
        await spend(served.runtime, "local", 2000)
        before = await usage_rows(served.runtime, "local")
        async with httpx.AsyncClient(base_url=served.url, timeout=30) as client:
            refused = await client.post(f"/api/pending/{action_id}/{verb}")
            assert refused.status_code == 429, refused.text
            body = refused.json()
            assert "still waits" in body["error"]
            assert body["resets_at"] is not None
            assert int(refused.headers["Retry-After"]) >= 1
            # The route says so in its OpenAPI, with the time limit's 504.
            paths = (await client.get("/openapi.json")).json()["paths"]
            declared = paths["/api/pending/{action_id}/" + verb]["post"]["responses"]
            assert {"429", "504"} <= set(declared), sorted(declared)
            waiting = (await client.get(f"/api/pending/{action_id}")).json()
            assert waiting["status"] == "pending"
            # Nothing else gets the model either: the chat still waits for the decision.
            listed = (await client.get("/api/pending")).json()["actions"]
            assert [a["id"] for a in listed] == [action_id]
        assert await usage_rows(served.runtime, "local") == before
        assert await reservations(served.runtime, "local") == []


async def test_a_resumed_turn_that_fails_over_http_is_counted_in_the_metrics(
    tmp_path: Path,
) -> None:
    """docs/usage.md: the token metrics count "resumed turns, and turns that failed
    part-way, included", as token_usage does."""
    settings = settings_for(tmp_path, budgets={"daily_tokens": 100_000, "turn_estimate": 100})
    listing = {
        "tool_calls": [{"name": "list_tasks", "args": {}}],
        "usage": {"input_tokens": 70, "output_tokens": 7},
    }
    async with serving(settings) as served:
        _, action_id = await served_stop(served, [ADD_MILK, listing])  # then no reply left
        async with httpx.AsyncClient(base_url=served.url, timeout=30) as client:
            failed = await client.post(f"/api/pending/{action_id}/approve")
            assert failed.status_code == 502, failed.text
            usage = (await client.get("/api/usage")).json()
            assert usage["totals"]["input_tokens"] == 10 + 70
            metrics = (await client.get("/metrics")).text
        assert tokens_metric(metrics, "input") == 10 + 70
        assert tokens_metric(metrics, "output") == 5 + 7
