"""Token usage and budgets as users meet them: turn answers, GET /api/usage, the CLI, metrics.

Turns run on a real server (uvicorn on 127.0.0.1, JWT auth) with an agent on
the ``scripted`` model, whose replies report the usage a provider would; a
price table gives them a cost. Each test runs on SQLite and PostgreSQL, with
user ids of its own (usage rows outlive a test on PostgreSQL). A new UTC day
is simulated by moving the user's recorded totals to yesterday.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import sqlalchemy as sa

from chatwright import testing
from chatwright.plugins.server.app import create_app
from chatwright.registry import LoadPolicy, Plugins
from chatwright.runtime import Runtime
from tests.harness import assert_error, pg_storage_settings, run, uvicorn_serving

pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")

SECRET = "chatwright-usage-tests-secret-of-32-bytes"
AGENT = "counter"
MODEL = "scripted:priced"
PRICES = {MODEL: {"input": 2.0, "output": 10.0, "cached_input": 1.0}}
# Each user's turns replay these from the start: one model call per turn.
REPLIES = [
    {"content": "one", "usage": {"input_tokens": 1000, "output_tokens": 200, "cached": 400}},
    {"content": "two", "usage": {"input_tokens": 500, "output_tokens": 100}},
    {"content": "three", "usage": {"input_tokens": 10, "output_tokens": 5}},
    {"content": "four", "usage": {"input_tokens": 10, "output_tokens": 5}},
]
# (600 fresh * 2 + 400 cached * 1 + 200 out * 10) / 1e6, and (500 * 2 + 100 * 10) / 1e6
FIRST_COST = 0.0036
SECOND_COST = 0.002


def bearer(user: str) -> dict[str, str]:
    payload = {"sub": user, "aud": "authenticated", "exp": int(time.time()) + 86400}
    return {"Authorization": f"Bearer {jwt.encode(payload, SECRET, algorithm='HS256')}"}


def new_user(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:10]}"


def next_midnight() -> datetime:
    today = datetime.now(UTC).date()
    return datetime.combine(today + timedelta(days=1), datetime.min.time(), UTC)


def parse_metrics(text: str) -> dict[str, float]:
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


@dataclass
class Served:
    runtime: Runtime
    client: httpx.AsyncClient
    url: str
    """The database URL, for the CLI."""

    async def open_chat(self, user: str) -> str:
        body = {"agent_name": AGENT, "new": True}
        opened = await self.client.post("/api/sessions", json=body, headers=bearer(user))
        assert opened.status_code == 200, opened.text
        chat_id: str = opened.json()["chat_id"]
        return chat_id

    async def turn(self, user: str, chat_id: str, message: str = "go") -> httpx.Response:
        body = {"agent_name": AGENT, "chat_id": chat_id, "message": message}
        return await self.client.post("/api/chat", json=body, headers=bearer(user))

    async def usage(self, user: str, **query: str) -> dict[str, Any]:
        answer = await self.client.get("/api/usage", params=query, headers=bearer(user))
        assert answer.status_code == 200, answer.text
        data: dict[str, Any] = answer.json()
        return data

    async def metrics(self) -> dict[str, float]:
        return parse_metrics((await self.client.get("/metrics")).text)

    async def sql(self, statement: str, **params: Any) -> list[dict[str, Any]]:
        async with self.runtime.storage.write() as conn:  # type: ignore[attr-defined]
            result = await conn.execute(sa.text(statement), params)
            return [dict(r._mapping) for r in result] if result.returns_rows else []


Serve = Callable[..., Awaitable[Served]]


@pytest.fixture
async def serve(sql_url: str) -> AsyncIterator[Serve]:
    """``await serve(budgets={...})``: the server on the test's database, the agent on it."""
    stack = contextlib.AsyncExitStack()

    async def start(**sections: Any) -> Served:
        plugins = Plugins.load(LoadPolicy())
        base: dict[str, Any] = {
            "storage": pg_storage_settings(sql_url),
            "sessions": {"sweep_interval": 3600},
            "server": {"auth": "jwt", "jwt_secret": SECRET},
            "usage": {"prices": PRICES, "currency": "EUR"},
        }
        base.update(sections)
        app = create_app(testing.settings(plugins, **base), plugins)
        port = await stack.enter_async_context(uvicorn_serving(app))
        client = await stack.enter_async_context(
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60)
        )
        runtime: Runtime = app.state.runtime
        if await runtime.storage.agents.get(AGENT) is None:
            await runtime.storage.agents.create(
                AGENT,
                system_prompt="You count.",
                model=MODEL,
                model_settings={"responses": REPLIES},
            )
        return Served(runtime, client, sql_url)

    async with stack:
        yield start


async def cli(url: str, *args: str) -> Any:
    """A CLI command on the test's database, as an operator runs it (its own event loop)."""
    return await asyncio.to_thread(run, "--database", url, *args)


async def cli_json(url: str, *args: str) -> Any:
    result = await cli(url, *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


# -- the scripted model ---------------------------------------------------------------


def test_scripted_replies_report_their_usage() -> None:
    from chatwright.plugins.models.scripted import ScriptedChatModel

    model = ScriptedChatModel.from_settings(
        {"responses": [REPLIES[0], REPLIES[1], {"content": "no usage"}]}
    )
    assert model.invoke("hi").usage_metadata == {
        "input_tokens": 1000,
        "output_tokens": 200,
        "total_tokens": 1200,
        "input_token_details": {"cache_read": 400},
    }
    assert model.invoke("hi").usage_metadata == {
        "input_tokens": 500,
        "output_tokens": 100,
        "total_tokens": 600,
    }
    assert model.invoke("hi").usage_metadata is None


# -- usage in answers, GET /api/usage, the CLI and metrics ------------------------------


async def test_usage_of_turns_in_answers_report_cli_and_metrics(
    serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = await serve()
    alice, bob = new_user("alice"), new_user("bob")
    chat = await served.open_chat(alice)

    answer = await served.turn(alice, chat)
    assert answer.status_code == 200, answer.text
    assert answer.json()["usage"] == {
        "model": MODEL,
        "model_calls": 1,
        "input_tokens": 1000,
        "output_tokens": 200,
        "cached_tokens": 400,
        "total_tokens": 1200,
        "cost": FIRST_COST,
    }

    # The stream's done event carries the same.
    body = {"agent_name": AGENT, "chat_id": chat, "message": "again"}
    async with served.client.stream(
        "POST", "/api/chat/stream", json=body, headers=bearer(alice)
    ) as streamed:
        assert streamed.status_code == 200
        text = "".join([part async for part in streamed.aiter_text()])
    done = text.split("event: done\ndata: ")[1].split("\n")[0]
    assert json.loads(done)["usage"] == {
        "model": MODEL,
        "model_calls": 1,
        "input_tokens": 500,
        "output_tokens": 100,
        "cached_tokens": 0,
        "total_tokens": 600,
        "cost": SECOND_COST,
    }
    # Bob's turn is his own: it is in no report of Alice's.
    assert (await served.turn(bob, await served.open_chat(bob))).status_code == 200

    report = await served.usage(alice)
    today = datetime.now(UTC).date().isoformat()
    expected = {
        "turns": 2,
        "model_calls": 2,
        "input_tokens": 1500,
        "output_tokens": 300,
        "cached_tokens": 400,
        "total_tokens": 1800,
    }
    assert report["currency"] == "EUR"
    assert len(report["rows"]) == 1
    row = report["rows"][0]
    assert row == {
        "day": today,
        "agent_name": AGENT,
        "model": MODEL,
        **expected,
        "cost": pytest.approx(FIRST_COST + SECOND_COST),
    }
    assert report["totals"] == {**expected, "cost": pytest.approx(FIRST_COST + SECOND_COST)}
    by_period = {b["period"]: b for b in report["budgets"]}
    assert by_period["day"] == {
        "period": "day",
        "limit": None,
        "used": 1800,
        "remaining": None,
        "resets_at": next_midnight().isoformat(),
    }
    assert by_period["month"]["used"] == 1800
    assert by_period["month"]["limit"] is None

    # A range that leaves today out has no rows; one ending today (a date: included) has.
    yesterday = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    assert (await served.usage(alice, until=yesterday))["rows"] == []
    assert (await served.usage(alice, since=yesterday, until=today))["totals"]["turns"] == 2
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    assert (await served.usage(alice, since=tomorrow))["totals"]["total_tokens"] == 0

    # The server's counters: tokens by kind and model, and the cost.
    counted = await served.metrics()
    assert counted[f'chatwright_tokens_total{{kind="input",model="{MODEL}"}}'] == 1500 + 1000
    assert counted[f'chatwright_tokens_total{{kind="output",model="{MODEL}"}}'] == 300 + 200
    assert counted[f'chatwright_tokens_total{{kind="cached",model="{MODEL}"}}'] == 400 + 400
    assert counted[f'chatwright_cost_total{{model="{MODEL}"}}'] == pytest.approx(
        2 * FIRST_COST + SECOND_COST
    )

    # The operator's view: every user, or one; the cost in the currency of the settings.
    monkeypatch.setenv("CHATWRIGHT_USAGE__CURRENCY", "EUR")
    mine = await cli_json(served.url, "usage", "--user", alice)
    assert mine["currency"] == "EUR"
    assert [(line["user_id"], line["total_tokens"]) for line in mine["lines"]] == [(alice, 1800)]
    assert mine["totals"]["cost"] == pytest.approx(FIRST_COST + SECOND_COST)
    everyone = await cli_json(served.url, "usage", "--since", today)
    users = {line["user_id"]: line["total_tokens"] for line in everyone["lines"]}
    assert users[alice] == 1800
    assert users[bob] == 1200
    table = await cli(served.url, "usage", "--user", bob, "--agent", AGENT)
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert "cost (EUR)" in lines[0]
    assert lines[1].split()[:4] == [today, bob, AGENT, MODEL]
    assert lines[1].split()[-2:] == ["1,200", f"{FIRST_COST:.4f}"]
    assert lines[-1].split()[0] == "total"
    assert (await cli(served.url, "usage", "--agent", "no-such-agent")).stdout.startswith(
        "No usage recorded"
    )


async def test_a_turn_without_a_price_has_no_cost(serve: Serve) -> None:
    served = await serve(usage={"prices": {}})
    user = new_user("free")
    answer = await served.turn(user, await served.open_chat(user))
    assert answer.json()["usage"]["cost"] is None
    assert answer.json()["usage"]["total_tokens"] == 1200
    report = await served.usage(user)
    assert report["currency"] == "USD"
    assert report["totals"]["cost"] is None
    assert report["rows"][0]["cost"] is None


async def test_an_absurd_usage_report_is_capped_alike_everywhere(serve: Serve) -> None:
    """A provider reporting more tokens than anything holds (10**400, a JSON integer as
    good as any): the turn is stored and answered, priced, counted in the metrics and
    in the report as the same capped number, and the chat goes on."""
    from chatwright.usage import MAX_TOKENS

    served = await serve()
    await served.runtime.storage.agents.update(
        AGENT,
        model_settings={
            "responses": [
                {"content": "huge", "usage": {"input_tokens": 10**400, "output_tokens": 10**20}},
                {"content": "next"},
            ]
        },
    )
    alice = new_user("alice")
    chat = await served.open_chat(alice)
    answer = await served.turn(alice, chat)
    assert answer.status_code == 200, answer.text
    usage = answer.json()["usage"]
    assert (usage["input_tokens"], usage["output_tokens"]) == (MAX_TOKENS, MAX_TOKENS)
    expected = MAX_TOKENS * (2.0 + 10.0) / 1_000_000
    assert usage["cost"] == pytest.approx(expected)
    report = await served.usage(alice)
    assert report["totals"]["total_tokens"] == 2 * MAX_TOKENS
    counted = await served.metrics()
    assert counted[f'chatwright_tokens_total{{kind="input",model="{MODEL}"}}'] == MAX_TOKENS
    following = await served.turn(alice, chat)
    assert following.status_code == 200, following.text
    assert following.json()["response"] == "next"


# -- budgets ---------------------------------------------------------------------------


async def test_a_spent_budget_refuses_turns_with_429_until_it_resets(serve: Serve) -> None:
    served = await serve(budgets={"daily_tokens": 1000})
    user = new_user("spender")
    chat = await served.open_chat(user)
    # Alone and within the budget, the turn runs; it spends past it (1200 of 1000).
    assert (await served.turn(user, chat)).status_code == 200
    stored = await served.runtime.storage.messages.page(user, uuid.UUID(chat), limit=100)

    refused = await served.turn(user, chat, "more")
    assert refused.status_code == 429, refused.text
    body = refused.json()
    assert set(body) == {"error", "resets_at", "retry_after"}
    assert "budget" in body["error"]
    assert body["resets_at"] == next_midnight().isoformat()
    wait = int(refused.headers["Retry-After"])
    assert wait == body["retry_after"]
    assert 0 < wait <= 86400
    assert abs(wait - (next_midnight() - datetime.now(UTC)).total_seconds()) < 120
    # Nothing of the refused turn was stored.
    assert await served.runtime.storage.messages.page(user, uuid.UUID(chat), limit=100) == stored

    # The stream refuses before it starts: a status, not an event.
    request = {"agent_name": AGENT, "chat_id": chat, "message": "more"}
    streamed = await served.client.post("/api/chat/stream", json=request, headers=bearer(user))
    assert streamed.status_code == 429
    assert streamed.headers["content-type"].startswith("application/json")
    assert streamed.json()["resets_at"] == body["resets_at"]
    assert int(streamed.headers["Retry-After"]) > 0

    budgets = {b["period"]: b for b in (await served.usage(user))["budgets"]}
    assert budgets["day"]["limit"] == 1000
    assert budgets["day"]["used"] == 1200
    assert budgets["day"]["remaining"] == 0
    assert (await served.metrics())['chatwright_turns_total{outcome="refused"}'] == 2

    # A new UTC day: yesterday's spending no longer counts against today's budget.
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    moved = await served.sql(
        "UPDATE usage_totals SET starts = :yesterday "
        "WHERE user_id = :user AND period = 'day' RETURNING tokens",
        yesterday=yesterday,
        user=user,
    )
    assert moved == [{"tokens": 1200}]
    answer = await served.turn(user, chat, "a new day")
    assert answer.status_code == 200, answer.text
    assert answer.json()["response"] == "two"


async def test_an_override_lifts_or_tightens_a_users_budget(serve: Serve) -> None:
    served = await serve(budgets={"daily_tokens": 1000})
    user, other = new_user("vip"), new_user("plain")
    result = await cli(served.url, "budgets", "set", user, "--daily", "unlimited")
    assert result.exit_code == 0, result.output
    chat = await served.open_chat(user)
    for _ in range(3):
        assert (await served.turn(user, chat)).status_code == 200
    # Tightened to nothing: refused at once, before any model runs.
    assert (await cli(served.url, "budgets", "set", other, "--daily", "0")).exit_code == 0
    refused = await served.turn(other, await served.open_chat(other))
    assert refused.status_code == 429, refused.text
    # Cleared: the setting applies again, and the vip's 1,815 tokens are past it.
    assert (await cli(served.url, "budgets", "clear", user)).exit_code == 0
    assert (await served.turn(user, chat)).status_code == 429


async def test_budgets_commands_set_show_list_and_clear(
    serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The server and the commands read the same settings, from the environment here.
    monkeypatch.setenv("CHATWRIGHT_BUDGETS__DAILY_TOKENS", "50000")
    monkeypatch.setenv("CHATWRIGHT_BUDGETS__MONTHLY_TOKENS", "900000")
    served = await serve()
    user = new_user("carol")
    assert (await served.turn(user, await served.open_chat(user))).status_code == 200
    url = served.url

    shown = await cli_json(url, "budgets", "show", user)
    assert shown["override"] is None
    day, month = shown["budgets"]
    assert (day["period"], day["limit"], day["used"], day["remaining"]) == (
        "day",
        50_000,
        1200,
        48_800,
    )
    assert day["resets_at"] == next_midnight().isoformat()
    assert (month["period"], month["limit"], month["used"]) == ("month", 900_000, 1200)

    set_ = await cli(url, "budgets", "set", user, "--daily", "5000")
    assert set_.exit_code == 0, set_.output
    assert "daily 5,000, monthly default" in set_.stdout
    # A period not given keeps what the user has.
    assert (await cli(url, "budgets", "set", user, "--monthly", "unlimited")).exit_code == 0
    shown = await cli_json(url, "budgets", "show", user)
    assert shown["override"]["daily_tokens"] == 5000
    assert shown["override"]["monthly_tokens"] == -1
    assert [b["limit"] for b in shown["budgets"]] == [5000, None]
    assert shown["budgets"][0]["remaining"] == 3800
    text = (await cli(url, "budgets", "show", user)).stdout
    assert "an override" in text and "3,800" in text
    # The month's override lifts the limit: said so, as the other commands say it.
    assert re.search(r"^month\s+unlimited\s+1,200\s+-\s", text, re.M), text

    listed = await cli_json(url, "budgets", "list")
    assert listed["settings"] == {"daily_tokens": 50_000, "monthly_tokens": 900_000}
    mine = [o for o in listed["overrides"] if o["user_id"] == user]
    assert [(o["daily_tokens"], o["monthly_tokens"]) for o in mine] == [(5000, -1)]
    assert user in (await cli(url, "budgets", "list")).stdout

    assert (await cli(url, "budgets", "set", user, "--daily", "default")).exit_code == 0
    assert (await cli_json(url, "budgets", "show", user))["budgets"][0]["limit"] == 50_000

    cleared = await cli(url, "budgets", "clear", user)
    assert cleared.exit_code == 0 and "follows the budgets settings" in cleared.stdout
    assert (await cli_json(url, "budgets", "show", user))["override"] is None
    again = await cli(url, "budgets", "clear", user)
    assert again.exit_code == 0 and "had no override" in again.stdout


def test_bad_usage_and_budget_options_are_one_clear_error(workdir: Path) -> None:
    assert_error(run("usage", "--since", "last tuesday"), "--since", "ISO 8601")
    assert_error(run("usage", "--until", "2026-02-30"), "--until")
    assert_error(run("usage", "--since", "2026-12-01", "--until", "2026-11-01"), "ends before")
    for bad, needle in (("-5", "negative"), ("lots", "not a number"), ("1e40", "not a number")):
        result = run("budgets", "set", "someone", "--daily", bad)
        assert result.exit_code == 2, result.output
        assert needle in result.stderr and "--daily" in result.stderr
        assert "Traceback" not in result.output
    assert run("budgets", "set", "someone").exit_code == 2
    assert not (workdir / "chatwright.db").exists()  # refused before the database was opened


# -- the contract of the API -----------------------------------------------------------


def test_openapi_declares_429_with_retry_after_on_both_turn_routes(tmp_path: Path) -> None:
    plugins = Plugins.load(LoadPolicy())
    settings = testing.settings(plugins, storage={"url": f"sqlite+aiosqlite:///{tmp_path}/a.db"})
    schema = create_app(settings, plugins).openapi()
    for path in ("/api/chat", "/api/chat/stream"):
        refused = schema["paths"][path]["post"]["responses"]["429"]
        assert "Retry-After" in refused["headers"]
        ref = refused["content"]["application/json"]["schema"]["$ref"]
        assert ref.endswith("/BudgetErrorBody")
    body = schema["components"]["schemas"]["BudgetErrorBody"]
    assert set(body["properties"]) == {"error", "resets_at", "retry_after"}
    usage = schema["paths"]["/api/usage"]["get"]
    assert {p["name"] for p in usage["parameters"]} == {"since", "until"}
    assert "usage" in schema["components"]["schemas"]["ChatTurn"]["properties"]


# -- metrics in multiprocess mode ------------------------------------------------------

WORKER = textwrap.dedent(
    """
    from chatwright.plugins.server.metrics import ServerMetrics
    from chatwright.usage import TurnUsage
    metrics = ServerMetrics()
    metrics.ended("ok", TurnUsage("m:1", 1, 100, 10, 40, 0.5))
    metrics.turns.labels("refused").inc()
    """
)
SCRAPE = textwrap.dedent(
    """
    from chatwright.plugins.server.metrics import ServerMetrics
    print(ServerMetrics().render(active_sessions=0))
    """
)


def test_token_counters_add_up_every_worker(tmp_path: Path) -> None:
    """Under ``serve --workers N`` each worker counts in files of its own; a scrape adds up."""
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}

    def python(code: str) -> str:
        done = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    python(WORKER)
    python(WORKER)
    counted = parse_metrics(python(SCRAPE))
    assert counted['chatwright_tokens_total{kind="input",model="m:1"}'] == 200
    assert counted['chatwright_tokens_total{kind="output",model="m:1"}'] == 20
    assert counted['chatwright_tokens_total{kind="cached",model="m:1"}'] == 80
    assert counted['chatwright_cost_total{model="m:1"}'] == 1.0
    assert counted['chatwright_turns_total{outcome="refused"}'] == 2
    assert counted['chatwright_turns_total{outcome="ok"}'] == 2


def test_chat_prints_the_usage_of_each_reply_when_asked(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHATWRIGHT_USAGE__PRICES", json.dumps(PRICES))
    monkeypatch.setenv("CHATWRIGHT_USAGE__CURRENCY", "EUR")
    replies = json.dumps(REPLIES)
    assert run("db", "upgrade").exit_code == 0
    added = run("agents", "add", AGENT, "--prompt", "You count.", "--model", MODEL)
    assert added.exit_code == 0, added.output
    assert run("agents", "set", AGENT, "--setting", f"responses={replies}").exit_code == 0
    counted = run("chat", AGENT, "--new", "--usage", "-m", "hello")
    assert counted.exit_code == 0, counted.output
    assert counted.stdout == "one\n"
    assert counted.stderr.strip() == (
        "usage: 1,200 tokens (1,000 in, 400 of them cached, 200 out), 1 model call, "
        f"cost {FIRST_COST:.4f} EUR"
    )
    # Without --usage nothing is added.
    quiet = run("chat", AGENT, "--new", "-m", "hello")
    assert quiet.exit_code == 0, quiet.output
    assert quiet.stdout == "one\n"  # each run replays the script from its start
    assert quiet.stderr == ""


async def test_a_turn_beside_a_running_one_is_refused_when_both_would_not_fit(
    serve: Serve,
) -> None:
    served = await serve(budgets={"daily_tokens": 5000, "turn_estimate": 4000})
    small = {"input_tokens": 10, "output_tokens": 5}
    slow = [{"content": "slow", "sleep": 3, "usage": small}, {"content": "after", "usage": small}]
    await served.runtime.storage.agents.update(AGENT, model_settings={"responses": slow})
    user = new_user("eager")
    first, second = await served.open_chat(user), await served.open_chat(user)
    running = asyncio.create_task(served.turn(user, first))
    # The first turn holds its reservation while its model sleeps.
    deadline = time.monotonic() + 30
    while not await served.sql("SELECT 1 FROM usage_reservations WHERE user_id = :user", user=user):
        assert time.monotonic() < deadline, "the first turn never started"
        await asyncio.sleep(0.05)
    refused = await served.turn(user, second)
    assert refused.status_code == 429, refused.text
    assert refused.json()["resets_at"] is None
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert (await running).status_code == 200
    # Once it has ended, its 15 tokens leave room: the next turn runs.
    assert (await served.turn(user, second)).status_code == 200


async def test_a_turn_that_fails_part_way_counts_what_it_spent(serve: Serve) -> None:
    """A turn stopped by its time limit during its second model call: stored and counted
    alike, the first call as reported, the second (cut off, unreported) from its prompt."""
    served = await serve()
    await served.runtime.storage.agents.update(
        AGENT,
        turn_timeout=1,
        model_settings={
            "responses": [
                {
                    "tool_calls": [{"name": "look_up", "args": {}}],
                    "usage": {"input_tokens": 700, "output_tokens": 70, "cached": 7},
                },
                {"content": "too late", "sleep": 30},
            ]
        },
    )
    alice = new_user("alice")
    chat = await served.open_chat(alice)
    answer = await served.turn(alice, chat)
    assert answer.status_code == 504, answer.text
    counted = await served.metrics()
    inputs = counted[f'chatwright_tokens_total{{kind="input",model="{MODEL}"}}']
    assert 700 < inputs < 700 + 1000  # the cut-off call's prompt: some hundred characters
    assert counted[f'chatwright_tokens_total{{kind="output",model="{MODEL}"}}'] == 70
    assert counted[f'chatwright_tokens_total{{kind="cached",model="{MODEL}"}}'] == 7
    assert counted['chatwright_turns_total{outcome="error"}'] == 1
    assert (await served.usage(alice))["totals"]["total_tokens"] == inputs + 70


@pytest.mark.parametrize(
    ("cost", "shown"),
    [
        (0.000036, "0.000036"),  # 80 tokens in, 40 out at 0.15 and 0.60 a million
        (0.00000001, "0.00000001"),
        (0.0009, "0.0009"),
        (1.5, "1.5000"),
        (0.0, "0.0000"),
    ],
)
def test_a_small_cost_is_shown_to_its_last_decimal_not_as_zero(cost: float, shown: str) -> None:
    from chatwright.commands.usage import usage_line
    from chatwright.usage import TurnUsage

    line = usage_line(TurnUsage("m:1", 1, 80, 40, 0, cost), "USD")
    assert line.endswith(f", cost {shown} USD"), line
