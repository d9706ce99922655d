"""Attacks on token usage and budgets: another user's usage, hostile ranges and numbers.

- ``GET /api/usage`` answers the caller's own usage whatever the query says:
  another user's agent, model, tokens and budget never show, and a
  ``user_id`` in the query is ignored.
- ``since`` and ``until`` that are not dates, out of range, inverted, huge or
  with a NUL get 422 naming the parameter, never a 500.
- A model reporting absurd token counts (negative, huge) cannot lower a
  user's spending below what was really spent, nor break the usage report.
- ``chatwright budgets`` refuses garbage (negative, not a number, huge,
  control characters in a user id) with one error line and stores nothing.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from chatwright.plugins.example import assistant as example
from tests.harness import assert_error, run
from tests.hostile.conftest import (
    AGENT,
    Server,
    any_text,
    assert_error_body,
    bearer,
    open_chat,
)

VICTIM_MODEL = "scripted:victim-secret-model"


async def turn(server: Server, user: str) -> dict[str, Any]:
    session = await open_chat(server.client, user)
    body = {"agent_name": AGENT, "chat_id": session["chat_id"], "message": "go"}
    answer = await server.client.post("/api/chat", json=body, headers=bearer(user))
    assert answer.status_code == 200, answer.text
    data: dict[str, Any] = answer.json()
    return data


async def on_model(server: Server, model: str, usage: dict[str, Any]) -> None:
    await example.seed(server.runtime.storage, model)
    await server.runtime.storage.agents.update(
        AGENT, model=model, model_settings={"responses": [{"content": "ok", "usage": usage}]}
    )


async def report(server: Server, caller: str, **query: Any) -> dict[str, Any]:
    answer = await server.client.get("/api/usage", params=query, headers=bearer(caller))
    assert answer.status_code == 200, answer.text
    data: dict[str, Any] = answer.json()
    return data


async def test_another_users_usage_never_shows(make_server: Any) -> None:
    server = await make_server(budgets={"daily_tokens": 1_000_000})
    await on_model(server, VICTIM_MODEL, {"input_tokens": 7777, "output_tokens": 333})
    assert (await turn(server, "victim"))["usage"]["total_tokens"] == 8110

    for query in ({}, {"user_id": "victim"}, {"user": "victim"}, {"since": "2000-01-01"}):
        seen = await report(server, "mallory", **query)
        assert seen["rows"] == []
        assert seen["totals"]["total_tokens"] == 0
        assert [b["used"] for b in seen["budgets"]] == [0, 0]
        assert "victim" not in any_text(seen)
        assert "7777" not in any_text(seen)
    # The victim's own report has it all.
    mine = await report(server, "victim")
    assert mine["totals"]["total_tokens"] == 8110
    assert mine["rows"][0]["model"] == VICTIM_MODEL
    # No token, no usage.
    anonymous = await server.client.get("/api/usage")
    assert_error_body(anonymous, 401)


async def test_malformed_ranges_get_422_naming_the_parameter(make_server: Any) -> None:
    server = await make_server()
    user = bearer("mallory")
    bad = [
        "yesterday",
        "2026-13-01",
        "2026-02-30",
        "2026-11-30T25:00:00",
        "'; DROP TABLE token_usage; --",
        "2026-11-30\x00",
        "9" * 41,
        "-1",
        "0000-00-00",
        "2026-11-30T00:00:00+99:00",
    ]
    for name in ("since", "until"):
        for value in bad:
            answer = await server.client.get("/api/usage", params={name: value}, headers=user)
            message = assert_error_body(answer, 422)
            assert name in message, (value, message)
    # A date at the end of the calendar, as an end (the day after it does not exist).
    for name, value in (("until", "9999-12-31"), ("since", "0001-01-01T00:00:00+05:00")):
        answer = await server.client.get("/api/usage", params={name: value}, headers=user)
        message = assert_error_body(answer, 422)
        # It names the option and the range that works.
        assert name in message and "from 0001-01-01 to 9999-12-30" in message, message
    inverted = {"since": "2026-12-01", "until": "2026-11-01T00:00:00Z"}
    answer = await server.client.get("/api/usage", params=inverted, headers=user)
    message = assert_error_body(answer, 422)
    assert "since" in message and "until" in message
    # Extreme but valid ranges answer.
    wide = {"since": "0001-01-01", "until": "9999-12-30"}
    assert (await report(server, "mallory", **wide))["rows"] == []


async def test_absurd_token_counts_from_a_model(make_server: Any) -> None:
    server = await make_server(budgets={"daily_tokens": 1000})
    # A model (or a provider) reporting negative usage cannot buy back a spent budget.
    await on_model(server, "scripted:liar", {"input_tokens": -(10**9), "output_tokens": -5})
    answered = await turn(server, "liar")
    assert answered["usage"]["total_tokens"] >= 0
    spent = await report(server, "liar")
    assert spent["totals"]["total_tokens"] >= 0
    assert all(b["used"] >= 0 for b in spent["budgets"])

    # Huge but representable counts are recorded and refuse the next turn; nothing breaks.
    huge = 10**15
    await on_model(server, "scripted:huge", {"input_tokens": huge, "output_tokens": huge})
    assert (await turn(server, "whale"))["usage"]["total_tokens"] == 2 * huge
    whale = await report(server, "whale")
    assert whale["totals"]["total_tokens"] == 2 * huge
    day = whale["budgets"][0]
    assert (day["used"], day["remaining"]) == (2 * huge, 0)
    session = await open_chat(server.client, "whale")
    body = {"agent_name": AGENT, "chat_id": session["chat_id"], "message": "more"}
    refused = await server.client.post("/api/chat", json=body, headers=bearer("whale"))
    assert_error_body(refused, 429)
    assert int(refused.headers["Retry-After"]) >= 1


def test_budgets_cli_refuses_garbage_and_stores_nothing(workdir: Path) -> None:
    # On the zero-configuration database: the values are checked before it is opened.
    assert run("db", "upgrade").exit_code == 0
    for value in ("-1", "-0x10", "NaN", "inf", "1e3", "", " ", "10" * 20, "12abc", "1.5"):
        for option in ("--daily", "--monthly"):
            result = run("budgets", "set", "mallory", option, value)
            assert result.exit_code == 2, (value, result.output)
            assert option in result.stderr and "Traceback" not in result.output
    for user in ("", "a\x1b[2Jb", "x" * 300, "line\nbreak"):
        for command in (["set", user, "--daily", "5"], ["show", user], ["clear", user]):
            result = run("budgets", *command)
            assert_error(result, "USER")
    for bad in ("soon", "2026-02-30", "2026-11-30T99:00"):
        assert_error(run("usage", "--since", bad), "--since")
        assert_error(run("usage", "--until", bad), "--until")
    assert_error(run("usage", "--user", "x" * 300), "--user")
    listed = run("budgets", "list", "--json")
    assert listed.exit_code == 0, listed.output
    assert json.loads(listed.stdout)["overrides"] == []
    today = datetime.now(UTC).date().isoformat()
    assert run("usage", "--since", today).exit_code == 0
