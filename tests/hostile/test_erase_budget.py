"""Erasing one's own data must not lift one's token budget.

``DELETE /api/me`` deleted the user's usage totals and their budget override with
everything else: a user who had spent their budget erased themselves and ran turns
again, as often as they liked, and the operator's usage records lost what was spent.
The user's own erasure now keeps what their budget counts (this day's and month's
totals, reservations not expired, the override), saying so in ``kept``; an operator's
``chatwright users erase`` deletes it all, or keeps it with ``--keep-budget``.
"""

from __future__ import annotations

from typing import Any

from chatwright.plugins.example import assistant as example
from chatwright.userdata import KEPT_BUDGET, KEPT_TOTALS
from tests.hostile.conftest import AGENT, Server, assert_error_body, bearer, open_chat
from tests.hostile.test_usage_attacks import on_model, report, turn

SPENDER = "spender"


async def refused(server: Server, user: str) -> str:
    session = await open_chat(server.client, user)
    body = {"agent_name": AGENT, "chat_id": session["chat_id"], "message": "go"}
    answer = await server.client.post("/api/chat", json=body, headers=bearer(user))
    return assert_error_body(answer, 429)


async def erase_self(server: Server, user: str) -> dict[str, Any]:
    answer = await server.client.delete("/api/me", params={"confirm": user}, headers=bearer(user))
    assert answer.status_code == 200, answer.text
    data: dict[str, Any] = answer.json()
    return data


async def test_erasing_oneself_keeps_the_budget_spent(make_server: Any) -> None:
    server = await make_server(budgets={"daily_tokens": 5000, "turn_estimate": 10})
    await on_model(server, "scripted:dear", {"input_tokens": 4000, "output_tokens": 4000})
    assert (await turn(server, SPENDER))["usage"]["total_tokens"] == 8000
    assert "daily token budget" in await refused(server, SPENDER)

    erased = await erase_self(server, SPENDER)
    assert erased["tables"]["chat_messages"] > 0 and erased["tables"]["token_usage"] == 1
    assert erased["kept"]["usage_totals"] == KEPT_TOTALS
    # Still spent: the next turn is refused, and the report says how much.
    assert "daily token budget" in await refused(server, SPENDER)
    (daily, _monthly) = (await report(server, SPENDER))["budgets"]
    assert daily["used"] == 8000


async def test_erasing_oneself_keeps_the_operators_override(make_server: Any) -> None:
    # The settings allow a lot; the operator gave this user less.
    server = await make_server(budgets={"daily_tokens": 1_000_000, "turn_estimate": 10})
    storage = server.runtime.storage
    await storage.usage.set_budget(SPENDER, daily_tokens=5000, monthly_tokens=None)
    await on_model(server, "scripted:dear", {"input_tokens": 4000, "output_tokens": 4000})
    await turn(server, SPENDER)
    erased = await erase_self(server, SPENDER)
    assert erased["kept"]["user_budgets"] == KEPT_BUDGET
    assert "daily token budget" in await refused(server, SPENDER)
    override = await storage.usage.budget(SPENDER)
    assert override is not None and override.daily_tokens == 5000


async def test_an_operators_erasure_deletes_it_all_unless_told_to_keep_the_budget(
    make_server: Any,
) -> None:
    server = await make_server(budgets={"daily_tokens": 5000, "turn_estimate": 10})
    usage = {"input_tokens": 4000, "output_tokens": 4000}
    await example.seed(server.runtime.storage, "scripted:dear")
    # Two replies: "gone" has a turn again after the erasure.
    settings = {"responses": [{"content": "ok", "usage": usage}] * 2}
    await server.runtime.storage.agents.update(AGENT, model_settings=settings)
    data = server.runtime.storage.user_data
    for user in ("kept", "gone"):
        await turn(server, user)
        assert "daily token budget" in await refused(server, user)
    kept = await data.erase("kept", requested_by="operator", keep_budget=True)
    assert "usage_totals" in kept.kept and not kept.skipped
    assert "daily token budget" in await refused(server, "kept")
    gone = await data.erase("gone", requested_by="operator")
    assert gone.tables["usage_totals"] == 2 and not gone.kept
    assert (await turn(server, "gone"))["usage"]["total_tokens"] == 8000
