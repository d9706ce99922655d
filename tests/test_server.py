"""The HTTP server, driven for real: an in-process uvicorn server on 127.0.0.1 and httpx.

Every test starts :func:`chatwright.plugins.server.app.create_app` under a real
uvicorn server on a free port (lifespan on, so the runtime starts, migrates and
runs its sweeper exactly as in ``chatwright serve``), and talks to it over TCP.
The example agent (``assistant`` on the ``offline`` model) is seeded once the
server has started; an inline plugin records the ``startup``, ``shutdown``,
``session_deactivated`` and ``executor_evicted`` hooks and registers an
``echo`` model that replies with the system prompt it was given.

What is checked:

1. every endpoint's happy path and JSON shape (sessions, turns, SSE streaming,
   message pages, agents with tool problems, customizations reaching the next
   turn's system prompt, config, health, Prometheus metrics, the web page);
2. 100 concurrent opens with one client_key give exactly one session, on
   SQLite and PostgreSQL;
3. the sweep deactivates only idle sessions and evicts exactly their agents
   (reason ``idle-session``), a later turn rebuilds; the background sweeper
   does it on its own while a heartbeating session stays active;
4. JWT auth (401/403, per-user isolation with 404, the sendBeacon body token)
   and the bind checks of ``chatwright serve``;
5. bad input is answered with 4xx JSON naming the problem, never a 500; a
   failing model gives 502 and keeps the human message;
6. startup and shutdown hooks fire once each around the lifespan;
7. ``serve --workers 2`` adds both workers' metrics up (PostgreSQL);
8. ``/docs`` and ``/redoc`` load nothing from other hosts.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from chatwright import __version__, testing
from chatwright.errors import ChatwrightError, UnknownNameError
from chatwright.plugins.example import assistant as example
from chatwright.plugins.server import shutdown
from chatwright.plugins.server.app import create_app
from chatwright.plugins.server.auth import check_bind
from chatwright.plugins.sql import schema
from chatwright.registry import LoadPolicy, Plugins
from chatwright.runtime import Runtime
from chatwright.sessions import sweep
from chatwright.settings import Settings
from tests.harness import (
    ACTIVE,
    DATA_TABLES,
    EchoModels,
    Recorder,
    pg_env,
    pg_storage_settings,
    run,
    uvicorn_serving,
)

pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")

AGENT = example.AGENT
SECRET = "chatwright-test-secret-of-at-least-32-bytes"
MILK = "add a task to buy milk"
SESSION_KEYS = {"id", "chat_id", "agent_name", "is_active", "created_at", "updated_at"}


# --------------------------------------------------------------------------- inline plugins


def make_plugins() -> tuple[Plugins, Recorder]:
    plugins = Plugins.load(LoadPolicy())
    recorder = Recorder()
    plugins.register(recorder, "test-recorder")
    plugins.register(EchoModels(), "test-echo")
    return plugins, recorder


# --------------------------------------------------------------------------- the server


@dataclass
class Running:
    app: FastAPI
    client: httpx.AsyncClient
    recorder: Recorder
    port: int

    @property
    def runtime(self) -> Runtime:
        runtime: Runtime = self.app.state.runtime
        return runtime

    async def sql(self, statement: str, **params: Any) -> list[dict[str, Any]]:
        async with self.runtime.storage.read() as conn:
            result = await conn.execute(sa.text(statement), params)
            return [dict(r._mapping) for r in result]


def merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = {**out.get(key, {}), **value} if isinstance(value, Mapping) else value
    return out


@contextlib.asynccontextmanager
async def serving(
    url: str, *, seed: bool = True, fresh_postgres: bool = False, **settings: Any
) -> AsyncIterator[Running]:
    """A real uvicorn server on a free loopback port, and a client for it."""
    storage = pg_storage_settings(url)
    values = merge({"storage": storage, "sessions": {"sweep_interval": 3600}}, settings)
    plugins, recorder = make_plugins()
    app = create_app(testing.settings(plugins, **values), plugins)
    async with uvicorn_serving(app) as port:
        storage = app.state.runtime.storage
        if fresh_postgres:
            async with storage.write() as conn:
                await conn.execute(sa.text("DROP TABLE IF EXISTS tasks, notes"))
                await conn.execute(
                    sa.text(f"TRUNCATE {', '.join(DATA_TABLES)} RESTART IDENTITY CASCADE")
                )
        if seed:
            await example.seed(storage, "offline:assistant")
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", timeout=30, limits=limits
        ) as client:
            yield Running(app, client, recorder, port)


Start = Callable[..., Awaitable[Running]]


@pytest.fixture
async def start(tmp_path: Path) -> AsyncIterator[Start]:
    """Start servers on SQLite files in tmp_path; all are stopped at the end of the test."""
    stack = contextlib.AsyncExitStack()
    count = 0

    async def start(url: str | None = None, **settings: Any) -> Running:
        nonlocal count
        count += 1
        url = url or f"sqlite+aiosqlite:///{tmp_path}/s{count}.db"
        return await stack.enter_async_context(serving(url, **settings))

    async with stack:
        yield start


@pytest.fixture
async def srv(start: Start) -> Running:
    """A local-auth server with the example seeded."""
    return await start()


# --------------------------------------------------------------------------- helpers


def token(sub: str, **claims: Any) -> str:
    payload = {"sub": sub, "aud": "authenticated", "exp": int(time.time()) + 86400, **claims}
    return jwt.encode(payload, SECRET, algorithm="HS256")


def bearer(sub: str, **claims: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(sub, **claims)}"}


JWT = {"server": {"auth": "jwt", "jwt_secret": SECRET}}


async def open_session(
    client: httpx.AsyncClient,
    agent: str = AGENT,
    headers: Mapping[str, str] | None = None,
    **body: Any,
) -> dict[str, Any]:
    response = await client.post(
        "/api/sessions", json={"agent_name": agent, **body}, headers=headers
    )
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


async def chat(
    client: httpx.AsyncClient,
    chat_id: str,
    message: str,
    agent: str = AGENT,
    headers: Mapping[str, str] | None = None,
) -> httpx.Response:
    return await client.post(
        "/api/chat",
        json={"agent_name": agent, "session_id": chat_id, "message": message},
        headers=headers,
    )


async def chat_ok(client: httpx.AsyncClient, chat_id: str, message: str, **kw: Any) -> Any:
    response = await chat(client, chat_id, message, **kw)
    assert response.status_code == 200, response.text
    return response.json()


def parse_sse(text: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((fields["event"], json.loads(fields["data"])))
    return events


def parse_metrics(text: str) -> dict[str, float]:
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


async def metrics(client: httpx.AsyncClient) -> dict[str, float]:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse_metrics(response.text)


def error_of(response: httpx.Response, status: int) -> str:
    """The JSON error of a refused request, checking its status."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert isinstance(body.get("error"), str) and body["error"], body
    message: str = body["error"]
    return message


async def wait_for(predicate: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


def parse_time(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    assert parsed.tzinfo is not None, f"{value} has no time zone"
    return parsed


# =========================================================================== 1. endpoints


async def test_sessions_open_resume_heartbeat_deactivate_and_list(srv: Running) -> None:
    client = srv.client
    await srv.runtime.storage.agents.create("echo", system_prompt="Echo.", model="echo:x")
    first = await open_session(client)
    assert set(first) == SESSION_KEYS
    assert first["agent_name"] == AGENT and first["is_active"] is True
    uuid.UUID(first["id"]), uuid.UUID(first["chat_id"])
    assert parse_time(first["created_at"]) == parse_time(first["updated_at"])

    # No chat_id: the latest chat of this user and agent is resumed, in a new session.
    resumed = await open_session(client)
    assert resumed["chat_id"] == first["chat_id"] and resumed["id"] != first["id"]
    # new: true starts a chat; the next open without a chat_id resumes it.
    explicit = await open_session(client, new=True)
    new_chat = explicit["chat_id"]
    assert new_chat != first["chat_id"]
    assert (await open_session(client))["chat_id"] == new_chat
    # The same client_key returns the same active session.
    keyed = await open_session(client, client_key="tab-1")
    assert (await open_session(client, client_key="tab-1"))["id"] == keyed["id"]
    # A chat_id names the chat: the key moves there (a tab going to a past chat), its
    # session on the other chat closed; a retry gets the moved session.
    moved = await open_session(client, chat_id=first["chat_id"], client_key="tab-1")
    assert moved["chat_id"] == first["chat_id"] != keyed["chat_id"]
    assert moved["id"] != keyed["id"]
    listed = {s["id"]: s for s in (await client.get("/api/sessions")).json()}
    assert listed[keyed["id"]]["is_active"] is False
    again = await open_session(client, chat_id=first["chat_id"], client_key="tab-1")
    assert again["id"] == moved["id"]
    # new: true with a key is a retry of that key's open: the same session.
    assert (await open_session(client, new=True, client_key="tab-1"))["id"] == moved["id"]
    # A chat of another agent is refused, naming both.
    refused = await client.post("/api/sessions", json={"agent_name": "echo", "chat_id": new_chat})
    assert "assistant" in error_of(refused, 422)

    await asyncio.sleep(0.01)
    beat = await client.post(f"/api/sessions/{first['id']}/heartbeat")
    assert beat.status_code == 200
    assert set(beat.json()) == SESSION_KEYS
    assert beat.json()["id"] == first["id"] and beat.json()["is_active"] is True
    assert parse_time(beat.json()["updated_at"]) > parse_time(first["updated_at"])
    assert beat.json()["created_at"] == first["created_at"]

    closed = await client.post(f"/api/sessions/{first['id']}/deactivate")
    assert closed.status_code == 200 and set(closed.json()) == SESSION_KEYS
    assert closed.json()["is_active"] is False
    # Idempotent, and the hook fired once, for the client's close.
    again = await client.post(f"/api/sessions/{first['id']}/deactivate")
    assert again.status_code == 200 and again.json()["is_active"] is False
    assert [(s.id, reason) for s, reason in srv.recorder.deactivated] == [
        (uuid.UUID(keyed["id"]), "client"),  # the key moved to another chat
        (uuid.UUID(first["id"]), "client"),
    ]

    everything = (await client.get("/api/sessions")).json()
    active = (await client.get("/api/sessions", params={"active": "true"})).json()
    inactive = (await client.get("/api/sessions", params={"active": "false"})).json()
    opened = {first["id"], resumed["id"], explicit["id"], keyed["id"], moved["id"]}
    closed_ids = {first["id"], keyed["id"]}
    assert all(set(s) == SESSION_KEYS for s in everything)
    assert {s["id"] for s in everything} >= opened
    assert {s["id"] for s in inactive} == closed_ids
    assert not closed_ids & {s["id"] for s in active}
    assert {s["id"] for s in active} | closed_ids == {s["id"] for s in everything}
    assert all(s["is_active"] for s in active)

    # Unknown sessions are not found.
    unknown = uuid.uuid4()
    error_of(await client.post(f"/api/sessions/{unknown}/heartbeat"), 404)
    error_of(await client.post(f"/api/sessions/{unknown}/deactivate"), 404)


async def test_chat_with_the_offline_example_agent(srv: Running) -> None:
    session = await open_session(srv.client)
    body = await chat_ok(srv.client, session["chat_id"], MILK)
    assert set(body) == {
        "session_id",
        "response",
        "tool_calls",
        "error",
        "turn_id",
        "status",
        "pending",
        "usage",
        "stopped",
    }
    assert body["stopped"] is None
    assert body["session_id"] == session["chat_id"]
    assert body["error"] is None
    assert (body["status"], body["pending"]) == ("done", [])
    uuid.UUID(body["turn_id"])
    assert "buy milk" in body["response"]
    assert body["tool_calls"] == [
        {
            "name": "add_task",
            "args": {"title": "buy milk"},
            "result": {
                "created": {"id": 1, "title": "buy milk", "status": "pending", "due_date": None}
            },
            "error": False,
        }
    ]
    tasks = await srv.sql("SELECT user_id, title, status FROM tasks")
    assert tasks == [{"user_id": "local", "title": "buy milk", "status": "pending"}]

    listed = await chat_ok(srv.client, session["chat_id"], "list my tasks")
    assert "buy milk" in listed["response"]
    assert [c["name"] for c in listed["tool_calls"]] == ["list_tasks"]


async def test_chat_stream_sends_tool_call_tool_result_tokens_then_done(srv: Running) -> None:
    session = await open_session(srv.client)
    response = await srv.client.post(
        "/api/chat/stream",
        json={"agent_name": AGENT, "session_id": session["chat_id"], "message": MILK},
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(response.text)
    names = [name for name, _ in events]
    # tool_call, tool_result, one or more tokens, done: in that order, nothing else.
    collapsed = [n for i, n in enumerate(names) if i == 0 or n != names[i - 1]]
    assert collapsed == ["tool_call", "tool_result", "token", "done"], names

    call, result = events[0][1], events[1][1]
    assert call["name"] == "add_task" and call["args"] == {"title": "buy milk"}
    assert result["id"] == call["id"] and result["name"] == "add_task"
    assert result["error"] is False
    assert result["result"]["created"]["title"] == "buy milk"

    done = events[-1][1]
    tokens = "".join(data["text"] for name, data in events if name == "token")
    assert done["session_id"] == session["chat_id"]
    assert tokens == done["response"] and "buy milk" in done["response"]
    assert [(c["name"], c["args"], c["error"]) for c in done["tool_calls"]] == [
        ("add_task", {"title": "buy milk"}, False)
    ]
    assert done["tool_calls"][0]["result"]["created"]["title"] == "buy milk"
    # The streamed turn was stored and ran its tool like any other.
    page = (await srv.client.get(f"/api/chats/{session['chat_id']}/messages")).json()
    assert [m["role"] for m in page["messages"]] == ["human", "ai", "tool", "ai"]
    assert await srv.sql("SELECT user_id, title FROM tasks") == [
        {"user_id": "local", "title": "buy milk"}
    ]


async def test_messages_endpoint_pages_with_limit_and_before(srv: Running) -> None:
    client = srv.client
    session = await open_session(client)
    chat_id = session["chat_id"]
    await chat_ok(client, chat_id, MILK)
    await chat_ok(client, chat_id, "list my tasks")

    whole = (await client.get(f"/api/chats/{chat_id}/messages")).json()
    assert set(whole) == {"chat_id", "agent_name", "messages", "more", "summary"}
    assert whole["summary"] is None
    assert whole["chat_id"] == chat_id and whole["agent_name"] == AGENT
    assert whole["more"] is False
    messages = whole["messages"]
    assert [m["role"] for m in messages] == ["human", "ai", "tool", "ai"] * 2
    ids = [m["id"] for m in messages]
    assert ids == sorted(ids) and len(set(ids)) == 8

    human, call, result, reply = messages[:4]
    assert set(human) == {"id", "role", "text", "created_at"}
    assert human["text"] == MILK
    assert call["text"] == ""
    assert [(c["name"], c["args"]) for c in call["tool_calls"]] == [
        ("add_task", {"title": "buy milk"})
    ]
    assert result["tool_call_id"] == call["tool_calls"][0]["id"]
    assert result["name"] == "add_task" and result["status"] == "success"
    assert json.loads(result["text"])["created"]["title"] == "buy milk"
    assert "tool_calls" not in reply and "buy milk" in reply["text"]
    assert messages[4]["text"] == "list my tasks"
    assert messages[5]["tool_calls"][0]["name"] == "list_tasks"
    parse_time(human["created_at"])

    # Newest page first; `before` walks back; together the pages are the whole chat.
    pages: list[list[dict[str, Any]]] = []
    params: dict[str, Any] = {"limit": 3}
    while True:
        page = (await client.get(f"/api/chats/{chat_id}/messages", params=params)).json()
        pages.append(page["messages"])
        if not page["more"]:
            break
        params = {"limit": 3, "before": page["messages"][0]["id"]}
    assert [[m["id"] for m in p] for p in pages] == [ids[5:8], ids[2:5], ids[0:2]]
    assert [m for p in reversed(pages) for m in p] == messages


async def test_agents_list_and_detail_show_tool_problems_to_local_admin(srv: Running) -> None:
    client = srv.client
    listed = (await client.get("/api/agents")).json()
    assert listed == [{"name": AGENT, "model": "offline:assistant", "history_window": 50}]

    detail = (await client.get(f"/api/agents/{AGENT}")).json()
    assert set(detail) == {"name", "model", "history_window", "tools"}
    assert [t["name"] for t in detail["tools"]] == [t["name"] for t in example.TOOLS]
    for tool in detail["tools"]:
        assert set(tool) == {
            "id",
            "name",
            "type",
            "description",
            "is_active",
            "approval",
            "approval_default",
            "digest",
            "ok",
            "problems",
        }
        assert (tool["approval"], tool["approval_default"]) == ("auto", "required")
        assert tool["ok"] is True and tool["problems"] == [] and tool["type"] == "crud"

    # A bad row added through the API, and one written by hand with broken JSON.
    bad = await srv.runtime.storage.tools.add(
        AGENT, "broken", type="crud", config={"table": "no_such_table", "operation": "read"}
    )
    async with srv.runtime.storage.write() as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO agent_tools (agent_id, name, type, description, config, is_active,"
                " position, created_at, updated_at) VALUES (:agent, 'garbled', 'crud', '',"
                " '{not json', 1, 99, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            ),
            {"agent": bad.agent_id},
        )
    tools = {t["name"]: t for t in (await client.get(f"/api/agents/{AGENT}")).json()["tools"]}
    assert tools["broken"]["ok"] is False
    assert any("no_such_table" in p for p in tools["broken"]["problems"])
    assert tools["garbled"]["ok"] is False
    assert any("not valid JSON" in p for p in tools["garbled"]["problems"])
    assert tools["add_task"]["ok"] is True
    # The agent still works without its bad rows.
    session = await open_session(client)
    assert "buy milk" in (await chat_ok(client, session["chat_id"], MILK))["response"]

    error_of(await client.get("/api/agents/nobody"), 404)


async def test_customizations_are_stored_listed_and_reach_the_next_system_prompt(
    srv: Running,
) -> None:
    client = srv.client
    storage = srv.runtime.storage
    await storage.agents.create(
        "echo", system_prompt="You echo.\n{custom_instructions}", model="echo:x"
    )
    assert (await client.get("/api/agents/echo/customizations")).json() == []
    session = await open_session(client, "echo")
    before = json.loads((await chat_ok(client, session["chat_id"], "hi", agent="echo"))["response"])
    assert before["system"] == "You echo."

    put = await client.put(
        "/api/agents/echo/customizations", json={"content": "Always answer in French."}
    )
    assert put.status_code == 200
    expected = {
        "kind": "instruction_set",
        "content": "Always answer in French.",
        "priority": 0,
        "is_active": True,
    }
    assert put.json() == [expected]
    assert (await client.get("/api/agents/echo/customizations")).json() == [expected]
    after = json.loads(
        (await chat_ok(client, session["chat_id"], "again", agent="echo"))["response"]
    )
    assert "Always answer in French." in after["system"]
    assert after["humans"] == ["hi", "again"]

    # A second kind, higher priority, comes first; the same kind is replaced, not added.
    await client.put(
        "/api/agents/echo/customizations",
        json={"kind": "tone", "content": "Be terse.", "priority": 5},
    )
    replaced = await client.put(
        "/api/agents/echo/customizations", json={"content": "Answer in German.", "priority": 1}
    )
    assert [(c["kind"], c["content"], c["priority"]) for c in replaced.json()] == [
        ("tone", "Be terse.", 5),
        ("instruction_set", "Answer in German.", 1),
    ]
    prompt = json.loads((await chat_ok(client, session["chat_id"], "3", agent="echo"))["response"])
    assert prompt["system"] == "You echo.\nBe terse.\n\nAnswer in German."
    # An inactive customization is listed but left out of the prompt.
    await client.put(
        "/api/agents/echo/customizations",
        json={"kind": "tone", "content": "Be terse.", "priority": 5, "is_active": False},
    )
    prompt = json.loads((await chat_ok(client, session["chat_id"], "4", agent="echo"))["response"])
    assert prompt["system"] == "You echo.\nAnswer in German."
    # None of this rebuilt the agent.
    assert srv.runtime.cache.stats.builds == 1

    error_of(await client.get("/api/agents/nobody/customizations"), 404)
    error_of(await client.put("/api/agents/nobody/customizations", json={"content": "x"}), 404)


async def test_config_health_page_and_openapi(srv: Running) -> None:
    client = srv.client
    assert (await client.get("/api/config")).json() == {
        "auth": "local",
        "heartbeat_interval": 60.0,
        "max_message_chars": 16_000,
        "version": __version__,
    }
    health = await client.get("/healthz")
    assert health.status_code == 200
    assert health.json() == {"status": "ok"}
    assert "sqlite" in (await client.get("/api/health")).json()["database"]
    page = await client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "chatwright" in page.text and "<html" in page.text
    assert "/api/chat/stream" in page.text and "sendBeacon" in page.text
    openapi = (await client.get("/openapi.json")).json()
    assert {"/api/chat", "/api/sessions", "/api/chats/{chat_id}/messages"} <= set(openapi["paths"])


async def test_healthz_answers_503_when_the_database_is_gone(srv: Running) -> None:
    before = await metrics(srv.client)
    assert before["chatwright_database_up"] == 1
    assert before["chatwright_active_sessions"] == 0
    await srv.runtime.storage.close()  # the engine is disposed: the next connect fails
    path = srv.runtime.storage.url.database  # type: ignore[attr-defined]
    os.remove(path)
    os.mkdir(path)  # a directory where the file was: SQLite cannot open it
    response = await srv.client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["status"] == "unavailable" and response.json()["error"]
    # The metrics are still scraped: all but what the database would have said.
    during = await metrics(srv.client)
    assert during["chatwright_database_up"] == 0
    assert "chatwright_active_sessions" not in during
    assert during["chatwright_cache_builds_total"] == before["chatwright_cache_builds_total"]
    os.rmdir(path)


async def test_health_and_metrics_answer_head(srv: Running) -> None:
    # Load balancers and probes that ask HEAD get the GET's status and headers, no body.
    for path, kind in (("/healthz", "application/json"), ("/metrics", "text/plain")):
        answer = await srv.client.head(path)
        assert answer.status_code == 200, (path, answer.status_code)
        assert answer.headers["content-type"].startswith(kind)
        assert answer.content == b""


async def test_metrics_count_cache_turns_sessions_and_evictions(srv: Running) -> None:
    client = srv.client
    initial = await metrics(client)
    text = (await client.get("/metrics")).text
    for name in (
        "chatwright_cache_hits_total",
        "chatwright_cache_misses_total",
        "chatwright_cache_builds_total",
        "chatwright_cache_evictions_total",
        "chatwright_active_sessions",
        "chatwright_turn_seconds",
    ):
        assert f"# TYPE {name} " in text
    assert initial["chatwright_cache_hits_total"] == 0
    assert initial["chatwright_cache_misses_total"] == 0
    assert initial["chatwright_cache_builds_total"] == 0
    assert initial["chatwright_active_sessions"] == 0
    assert initial["chatwright_turn_seconds_count"] == 0

    session = await open_session(client)
    other = await open_session(client, client_key="tab-2")
    assert (await metrics(client))["chatwright_active_sessions"] == 2
    await chat_ok(client, session["chat_id"], MILK)
    after_one = await metrics(client)
    assert after_one["chatwright_cache_misses_total"] == 1
    assert after_one["chatwright_cache_builds_total"] == 1
    assert after_one["chatwright_cache_hits_total"] == 0
    assert after_one["chatwright_cache_entries"] == 1
    assert after_one["chatwright_turn_seconds_count"] == 1
    assert after_one['chatwright_turns_total{outcome="ok"}'] == 1

    await chat_ok(client, session["chat_id"], "list my tasks")
    after_two = await metrics(client)
    assert after_two["chatwright_cache_hits_total"] == 1
    assert after_two["chatwright_cache_builds_total"] == 1
    assert after_two["chatwright_turn_seconds_count"] == 2
    assert after_two["chatwright_turn_seconds_sum"] > after_one["chatwright_turn_seconds_sum"] > 0
    buckets = [v for k, v in after_two.items() if k.startswith("chatwright_turn_seconds_bucket")]
    assert buckets == sorted(buckets) and buckets[-1] == 2
    assert after_two['chatwright_turn_seconds_bucket{le="+Inf"}'] == 2

    # Both sessions close; a sweep evicts the agent with reason idle-session.
    for s in (session, other):
        await client.post(f"/api/sessions/{s['id']}/deactivate")
    assert (await metrics(client))["chatwright_active_sessions"] == 0
    assert not any(k.startswith("chatwright_cache_evictions_total{") for k in after_two)
    await sweep(srv.runtime)
    swept = await metrics(client)
    assert swept['chatwright_cache_evictions_total{reason="idle-session"}'] == 1
    assert swept["chatwright_cache_entries"] == 0


# =========================================================================== 2. concurrent opens


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_100_concurrent_opens_with_one_client_key_give_one_session(
    backend: str, start: Start, request: pytest.FixtureRequest
) -> None:
    if backend == "postgresql":
        srv = await start(request.getfixturevalue("pg_url"), fresh_postgres=True)
    else:
        srv = await start()
    responses = await asyncio.gather(
        *(
            srv.client.post("/api/sessions", json={"agent_name": AGENT, "client_key": "tab-1"})
            for _ in range(100)
        )
    )
    assert [r.status_code for r in responses] == [200] * 100, {r.text for r in responses}
    bodies = [r.json() for r in responses]
    assert len({b["id"] for b in bodies}) == 1
    assert len({b["chat_id"] for b in bodies}) == 1
    rows = await srv.sql(
        f"SELECT id, {ACTIVE} FROM chat_sessions WHERE user_id = 'local' AND client_key = 'tab-1'"
    )
    assert len(rows) == 1 and rows[0]["is_active"]
    assert str(uuid.UUID(str(rows[0]["id"]))) == bodies[0]["id"]
    # Once it is closed, the same key opens a new session (in the same chat).
    await srv.client.post(f"/api/sessions/{bodies[0]['id']}/deactivate")
    reopened = await open_session(srv.client, client_key="tab-1")
    assert reopened["id"] != bodies[0]["id"] and reopened["chat_id"] == bodies[0]["chat_id"]


# =========================================================================== 3. sweeper + eviction


async def test_sweep_deactivates_only_the_idle_user_and_evicts_the_agent_when_no_one_uses_it(
    start: Start,
) -> None:
    srv = await start(**JWT)
    client, runtime, recorder = srv.client, srv.runtime, srv.recorder
    alice, bob = bearer("alice"), bearer("bob")
    alice_session = await open_session(client, headers=alice)
    bob_session = await open_session(client, headers=bob)
    await chat_ok(client, alice_session["chat_id"], MILK, headers=alice)
    await chat_ok(client, bob_session["chat_id"], MILK, headers=bob)
    # One build serves both users.
    assert AGENT in runtime.cache and runtime.cache.stats.builds == 1

    async def make_idle(user: str) -> None:
        sessions = schema.chat_sessions
        async with runtime.storage.write() as conn:
            await conn.execute(
                sessions.update()
                .where(sessions.c.user_id == user)
                .values(updated_at=datetime.now(UTC) - timedelta(hours=2))
            )

    # Only bob's session is older than idle_timeout: alice still uses the agent.
    await make_idle("bob")
    report = await sweep(runtime, keep_ids=True)
    assert (report.deactivated, report.ids) == (1, [uuid.UUID(bob_session["id"])])
    assert report.evicted == [] and recorder.evicted == []
    assert [(s.user_id, reason) for s, reason in recorder.deactivated] == [("bob", "idle")]
    assert AGENT in runtime.cache
    assert (await client.get("/api/sessions", headers=bob)).json()[0]["is_active"] is False
    assert (await client.get("/api/sessions", headers=alice)).json()[0]["is_active"] is True
    # A second pass finds nothing more to do.
    again = await sweep(runtime)
    assert again.deactivated == 0 and again.evicted == [] and again.ids is None

    # Bob comes back, resumes his chat, and his turn is a cache hit.
    hits = runtime.cache.stats.hits
    back = await open_session(client, headers=bob)
    assert back["chat_id"] == bob_session["chat_id"]
    listed = await chat_ok(client, back["chat_id"], "list my tasks", headers=bob)
    assert "buy milk" in listed["response"]
    assert runtime.cache.stats.builds == 1 and runtime.cache.stats.hits == hits + 1

    # Once nobody has an active session with the agent, its build goes.
    await make_idle("alice")
    await make_idle("bob")
    last = await sweep(runtime)
    assert last.deactivated == 2
    assert last.evicted == [(AGENT, "idle-session")]
    assert recorder.evicted == [(AGENT, "idle-session")]
    assert AGENT not in runtime.cache
    assert (await metrics(client))['chatwright_cache_evictions_total{reason="idle-session"}'] == 1


async def test_sweep_with_a_future_now_deactivates_by_idle_timeout(start: Start) -> None:
    srv = await start(sessions={"idle_timeout": 600})
    session = await open_session(srv.client)
    await chat_ok(srv.client, session["chat_id"], MILK)
    soon = await sweep(srv.runtime, now=datetime.now(UTC) + timedelta(seconds=590))
    assert soon.deactivated == 0 and soon.evicted == []
    later = await sweep(srv.runtime, now=datetime.now(UTC) + timedelta(seconds=610), keep_ids=True)
    assert later.ids == [uuid.UUID(session["id"])]
    assert later.evicted == [(AGENT, "idle-session")]


async def test_background_sweeper_deactivates_idle_sessions_and_spares_heartbeating_ones(
    start: Start,
) -> None:
    # The idle timeout is 40 heartbeats long, so that a loaded machine's stalls
    # cannot make the heartbeating session look idle.
    srv = await start(sessions={"sweep_interval": 0.05, "idle_timeout": 2.0})
    client = srv.client
    idle = await open_session(client, client_key="idle-tab")
    alive = await open_session(client, client_key="live-tab")
    beating = True

    async def heartbeat() -> None:
        while beating:
            response = await client.post(f"/api/sessions/{alive['id']}/heartbeat")
            assert response.status_code == 200
            await asyncio.sleep(0.05)

    # Heartbeats start before the turn: on a loaded machine a turn can outlast idle_timeout.
    beat = asyncio.create_task(heartbeat())
    await chat_ok(client, alive["chat_id"], MILK)

    async def state(session: dict[str, Any]) -> bool:
        rows = (await client.get("/api/sessions")).json()
        return bool(next(s["is_active"] for s in rows if s["id"] == session["id"]))

    async def idle_closed() -> bool:
        return not await state(idle)

    try:
        await wait_for(idle_closed, timeout=15)
        # Well past idle_timeout, the heartbeating session is still active, and since
        # a user still has an active session with the agent, its build stays cached.
        await asyncio.sleep(2.5)
        assert await state(alive)
        assert AGENT in srv.runtime.cache
        assert srv.recorder.evicted == []
        assert [(str(s.id), r) for s, r in srv.recorder.deactivated] == [(idle["id"], "idle")]
    finally:
        beating = False
        await beat

    # Heartbeats stop: the server closes that session too and evicts the agent.
    async def evicted() -> bool:
        return bool(srv.recorder.evicted)

    await wait_for(evicted, timeout=15)
    assert not await state(alive)
    assert srv.recorder.evicted == [(AGENT, "idle-session")]
    assert [r for _, r in srv.recorder.deactivated] == ["idle", "idle"]
    assert AGENT not in srv.runtime.cache
    counted = await metrics(client)
    assert counted["chatwright_sessions_swept_total"] == 2
    assert counted["chatwright_sweep_seconds_count"] >= 2  # a pass every sweep_interval


# =========================================================================== 4. auth


async def test_jwt_refuses_missing_invalid_expired_and_foreign_tokens(start: Start) -> None:
    srv = await start(**JWT)
    client = srv.client
    now = int(time.time())
    refused = {
        "missing": {},
        "not a bearer": {"Authorization": f"Basic {token('alice')}"},
        "garbage": {"Authorization": "Bearer not.a.jwt"},
        "wrong secret": {
            "Authorization": "Bearer "
            + jwt.encode(
                {"sub": "alice", "aud": "authenticated", "exp": now + 60}, "other", "HS256"
            )
        },
        "expired": {"Authorization": f"Bearer {token('alice', exp=now - 30)}"},
        "wrong audience": {"Authorization": f"Bearer {token('alice', aud='someone-else')}"},
        "no subject": {
            "Authorization": "Bearer "
            + jwt.encode({"aud": "authenticated", "exp": now + 60}, SECRET, "HS256")
        },
        "no expiry": {
            "Authorization": "Bearer "
            + jwt.encode({"sub": "alice", "aud": "authenticated"}, SECRET, "HS256")
        },
    }
    messages = {}
    for label, headers in refused.items():
        for method, path in (("GET", "/api/sessions"), ("GET", "/api/agents")):
            response = await client.request(method, path, headers=headers)
            messages[label] = error_of(response, 401)
    assert "missing bearer token" in messages["missing"]
    assert "expired" in messages["expired"]
    assert "audience" in messages["wrong audience"]
    assert "invalid token" in messages["garbage"]

    service = bearer("svc", role="service_role")
    assert "service-role" in error_of(await client.get("/api/sessions", headers=service), 403)
    posted = await client.post("/api/sessions", json={"agent_name": AGENT}, headers=service)
    error_of(posted, 403)
    # Refused requests left nothing behind.
    assert await srv.sql("SELECT id FROM chat_sessions") == []

    # Public endpoints need no token.
    assert (await client.get("/api/config")).json()["auth"] == "jwt"
    assert (await client.get("/healthz")).status_code == 200
    assert (await client.get("/metrics")).status_code == 200
    assert (await client.get("/")).status_code == 200
    assert (await client.get("/api/sessions", headers=bearer("alice"))).json() == []


async def test_jwt_users_cannot_touch_each_others_sessions_or_chats(start: Start) -> None:
    srv = await start(**JWT)
    client = srv.client
    alice, bob = bearer("alice"), bearer("bob")
    bobs = await open_session(client, headers=bob)
    await chat_ok(client, bobs["chat_id"], MILK, headers=bob)
    alices = await open_session(client, headers=alice)
    assert alices["chat_id"] != bobs["chat_id"]

    sid, cid = bobs["id"], bobs["chat_id"]
    error_of(await client.post(f"/api/sessions/{sid}/heartbeat", headers=alice), 404)
    error_of(await client.post(f"/api/sessions/{sid}/deactivate", headers=alice), 404)
    error_of(await client.get(f"/api/chats/{cid}/messages", headers=alice), 404)
    error_of(await chat(client, cid, "list my tasks", headers=alice), 404)
    streamed = await client.post(
        "/api/chat/stream",
        json={"agent_name": AGENT, "session_id": cid, "message": "list my tasks"},
        headers=alice,
    )
    error_of(streamed, 404)
    taken = await client.post(
        "/api/sessions", json={"agent_name": AGENT, "chat_id": cid}, headers=alice
    )
    error_of(taken, 404)
    assert [s["id"] for s in (await client.get("/api/sessions", headers=alice)).json()] == [
        alices["id"]
    ]
    # Bob's session, chat and tasks are untouched, and alice's turn sees only her rows.
    bobs_sessions = (await client.get("/api/sessions", headers=bob)).json()
    assert [(s["id"], s["is_active"]) for s in bobs_sessions] == [(sid, True)]
    page = (await client.get(f"/api/chats/{cid}/messages", headers=bob)).json()
    assert len(page["messages"]) == 4
    mine = await chat_ok(client, alices["chat_id"], "list my tasks", headers=alice)
    assert "buy milk" not in mine["response"]
    # Customizations are per user.
    await client.put(
        f"/api/agents/{AGENT}/customizations", json={"content": "Bob only."}, headers=bob
    )
    assert (await client.get(f"/api/agents/{AGENT}/customizations", headers=alice)).json() == []


async def test_jwt_deactivate_takes_the_token_from_the_body_for_send_beacon(
    start: Start,
) -> None:
    srv = await start(**JWT)
    client = srv.client
    session = await open_session(client, headers=bearer("alice"))
    path = f"/api/sessions/{session['id']}/deactivate"
    # No token anywhere, or another user's token in the body: refused.
    error_of(await client.post(path), 401)
    error_of(await client.post(path, content=b"not json"), 401)
    error_of(await client.post(path, json={"access_token": token("bob")}), 404)
    error_of(await client.post(path, json={"access_token": "garbage"}), 401)
    assert (await client.get("/api/sessions", headers=bearer("alice"))).json()[0]["is_active"]

    # sendBeacon(url, string) posts text/plain with the token in a JSON body.
    response = await client.post(
        path,
        content=json.dumps({"access_token": token("alice")}).encode(),
        headers={"Content-Type": "text/plain;charset=UTF-8"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["id"] == session["id"] and response.json()["is_active"] is False
    assert [(s.user_id, r) for s, r in srv.recorder.deactivated] == [("alice", "client")]


async def test_jwt_tool_problems_are_shown_to_admins_only(start: Start) -> None:
    srv = await start(**JWT)
    await srv.runtime.storage.tools.add(
        AGENT, "broken", type="crud", config={"table": "no_such_table", "operation": "read"}
    )
    user = (await srv.client.get(f"/api/agents/{AGENT}", headers=bearer("alice"))).json()
    assert all("problems" not in t and "ok" not in t for t in user["tools"])
    assert "broken" in [t["name"] for t in user["tools"]]
    admin_headers = bearer("root", chatwright_admin=True)
    admin = (await srv.client.get(f"/api/agents/{AGENT}", headers=admin_headers)).json()
    broken = next(t for t in admin["tools"] if t["name"] == "broken")
    assert broken["ok"] is False and "no_such_table" in broken["problems"][0]


def test_check_bind_refuses_unsafe_configurations() -> None:
    local = Settings()
    for host in ("127.0.0.1", "::1", "[::1]", "localhost", "127.0.0.2"):
        check_bind(local, host)
    for host in ("0.0.0.0", "::", "192.168.1.10", "example.com"):
        with pytest.raises(ChatwrightError, match="refusing to serve on") as caught:
            check_bind(local, host)
        assert host in str(caught.value) and "jwt" in str(caught.value)

    no_secret = testing.settings(server={"auth": "jwt"})
    for host in ("127.0.0.1", "0.0.0.0"):
        with pytest.raises(ChatwrightError, match="jwt_secret"):
            check_bind(no_secret, host)
    with_secret = testing.settings(server={"auth": "jwt", "jwt_secret": SECRET})
    check_bind(with_secret, "0.0.0.0")


def test_serve_refuses_a_public_bind_with_local_auth_without_starting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    started: list[dict[str, Any]] = []
    # Where serving begins: what would have started uvicorn is recorded instead.
    monkeypatch.setattr(
        shutdown,
        "run",
        lambda config, deadline: started.append(
            {
                "host": config.host,
                "port": config.port,
                "timeout_keep_alive": config.timeout_keep_alive,
            }
        ),
    )

    def serve(*args: str) -> Any:
        return run("serve", *args)

    for args, needle in (
        (["--host", "0.0.0.0"], "refusing to serve on 0.0.0.0"),
        (["--host", "10.1.2.3", "--port", "9000"], "refusing to serve on 10.1.2.3"),
    ):
        result = serve(*args)
        assert result.exit_code == 1, result.output
        assert isinstance(result.exception, SystemExit)
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error:"), result.stderr
        assert needle in lines[0]
        assert "Traceback" not in result.output
    monkeypatch.setenv("CHATWRIGHT_SERVER__AUTH", "jwt")
    result = serve()
    assert result.exit_code == 1 and "jwt_secret" in result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert started == []
    assert not (tmp_path / "chatwright.db").exists()

    # The control: a loopback bind gets as far as starting uvicorn.
    monkeypatch.delenv("CHATWRIGHT_SERVER__AUTH")
    result = serve("--host", "127.0.0.1", "--port", "8123")
    assert result.exit_code == 0, result.output
    # Idle connections outlive the clients' own idle timeouts (see server.timeout_keep_alive).
    assert started == [{"host": "127.0.0.1", "port": 8123, "timeout_keep_alive": 75}]
    monkeypatch.setenv("CHATWRIGHT_SERVER__TIMEOUT_KEEP_ALIVE", "120")
    assert serve("--port", "8124").exit_code == 0
    assert started[-1]["timeout_keep_alive"] == 120
    for bad in ("0", "-1", "forever", "86400", "1.5"):
        monkeypatch.setenv("CHATWRIGHT_SERVER__TIMEOUT_KEEP_ALIVE", bad)
        result = serve("--port", "8125")
        assert result.exit_code == 1 and "server.timeout_keep_alive" in result.stderr, bad
        assert "Traceback" not in result.output
    assert len(started) == 2


# =========================================================================== 5. bad input


async def test_bad_requests_get_422_json_naming_the_field(srv: Running) -> None:
    client = srv.client
    session = await open_session(client)
    cid = session["chat_id"]
    json_headers = {"Content-Type": "application/json"}

    async def refused(response: Awaitable[httpx.Response], *needles: str) -> None:
        message = error_of(await response, 422)
        for needle in needles:
            assert needle in message, f"{needle!r} not in {message!r}"

    await refused(
        client.post("/api/sessions", content=b'{"agent_name":', headers=json_headers), "JSON"
    )
    await refused(client.post("/api/chat", content=b"{nope}", headers=json_headers), "JSON")
    await refused(client.post("/api/sessions", json=[]), "body")
    await refused(client.post("/api/sessions", json="assistant"), "body")
    await refused(client.post("/api/sessions", content=b"", headers=json_headers), "body")
    await refused(client.post("/api/sessions", json={"agent_name": 5}), "agent_name")
    await refused(client.post("/api/sessions", json={"agent_name": ""}), "agent_name")
    await refused(client.post("/api/sessions", json={"agent_name": "x" * 201}), "agent_name")
    await refused(
        client.post("/api/sessions", json={"agent_name": AGENT, "chat_id": "nope"}), "chat_id"
    )
    await refused(
        client.post("/api/sessions", json={"agent_name": AGENT, "client_key": ""}), "client_key"
    )
    await refused(client.post("/api/sessions", json={"agent_name": AGENT, "bogus": 1}), "bogus")
    await refused(client.post("/api/sessions", json={}), "agent_name")
    await refused(client.post("/api/chat", json={}), "agent_name", "session_id", "message")
    await refused(
        client.post("/api/chat", json={"agent_name": AGENT, "session_id": cid}), "message"
    )
    await refused(
        client.post(
            "/api/chat", json={"agent_name": AGENT, "session_id": "chat-1", "message": "hi"}
        ),
        "session_id",
    )
    await refused(
        client.post("/api/chat", json={"agent_name": AGENT, "session_id": cid, "message": ""}),
        "message",
    )
    await refused(
        client.post("/api/chat", json={"agent_name": AGENT, "session_id": cid, "message": 42}),
        "message",
    )
    await refused(
        client.post(
            "/api/chat",
            json={"agent_name": AGENT, "session_id": cid, "message": "hi", "stream": True},
        ),
        "stream",
    )
    await refused(
        client.post("/api/chat/stream", json={"agent_name": AGENT, "session_id": cid}), "message"
    )
    await refused(
        client.put(f"/api/agents/{AGENT}/customizations", json={"content": "x", "extra": 1}),
        "extra",
    )
    await refused(
        client.put(f"/api/agents/{AGENT}/customizations", json={"content": "x", "priority": "hi"}),
        "priority",
    )
    await refused(client.put(f"/api/agents/{AGENT}/customizations", json={}), "content")
    # Paths and query strings.
    await refused(client.post("/api/sessions/not-a-uuid/heartbeat"), "session_id")
    await refused(client.post("/api/sessions/not-a-uuid/deactivate"), "session_id")
    await refused(client.get("/api/chats/not-a-uuid/messages"), "chat_id")
    await refused(client.get(f"/api/chats/{cid}/messages", params={"limit": 0}), "limit")
    await refused(client.get(f"/api/chats/{cid}/messages", params={"limit": "many"}), "limit")
    await refused(client.get(f"/api/chats/{cid}/messages", params={"limit": 501}), "limit")
    await refused(client.get(f"/api/chats/{cid}/messages", params={"before": 0}), "before")
    await refused(client.get("/api/sessions", params={"active": "maybe"}), "active")
    # Other statuses are JSON too.
    error_of(await client.delete("/api/sessions"), 405)
    error_of(await client.get("/api/nothing-here"), 404)
    # None of it changed anything.
    assert len(await srv.sql("SELECT id FROM chat_sessions")) == 1
    assert await srv.sql("SELECT id FROM chat_messages") == []


async def test_unknown_agents_and_chats_get_404(srv: Running) -> None:
    client = srv.client
    session = await open_session(client)
    unknown = str(uuid.uuid4())
    assert "nobody" in error_of(
        await client.post("/api/sessions", json={"agent_name": "nobody"}), 404
    )
    error_of(await chat(client, unknown, "hi"), 404)
    error_of(await chat(client, session["chat_id"], "hi", agent="nobody"), 404)
    streamed = await client.post(
        "/api/chat/stream", json={"agent_name": AGENT, "session_id": unknown, "message": "hi"}
    )
    error_of(streamed, 404)
    error_of(await client.get(f"/api/chats/{unknown}/messages"), 404)
    assert await srv.sql("SELECT id FROM chat_messages") == []


async def test_oversized_messages_and_bodies_get_413(start: Start) -> None:
    srv = await start(server={"max_message_chars": 50})
    client = srv.client
    session = await open_session(client)
    body = {"agent_name": AGENT, "session_id": session["chat_id"], "message": "x" * 51}
    assert "at most 50" in error_of(await client.post("/api/chat", json=body), 413)
    error_of(await client.post("/api/chat/stream", json=body), 413)
    # Exactly at the cap is fine.
    ok = await chat(client, session["chat_id"], "y" * 50)
    assert ok.status_code == 200
    assert (await client.get("/api/config")).json()["max_message_chars"] == 50

    # A body far beyond any message is refused before it is read.
    big = json.dumps({**body, "message": "z" * 30_000})
    assert "too large" in error_of(
        await client.post(
            "/api/chat", content=big.encode(), headers={"Content-Type": "application/json"}
        ),
        413,
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
    writer.write(
        b"POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000000000000\r\n\r\n"
    )
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(4096), 5)
    writer.close()
    head, _, payload = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413")
    assert b"content-type: application/json" in head.lower()
    assert "too large" in json.loads(payload)["error"]
    # Only the message at the cap was stored.
    stored = [
        m["text"]
        for m in (await client.get(f"/api/chats/{session['chat_id']}/messages")).json()["messages"]
        if m["role"] == "human"
    ]
    assert stored == ["y" * 50]


async def test_a_failing_model_gives_502_and_keeps_the_human_message(srv: Running) -> None:
    client = srv.client
    await srv.runtime.storage.agents.create(
        "broken", system_prompt="x", model="scripted:x", model_settings={"fail": "boom"}
    )
    session = await open_session(client, "broken")
    response = await chat(client, session["chat_id"], "are you there?", agent="broken")
    message = error_of(response, 502)
    assert "boom" in message and "kept" in message
    assert response.json() == {"error": message}
    page = (await client.get(f"/api/chats/{session['chat_id']}/messages")).json()
    assert [(m["role"], m["text"]) for m in page["messages"]] == [("human", "are you there?")]

    streamed = await client.post(
        "/api/chat/stream",
        json={"agent_name": "broken", "session_id": session["chat_id"], "message": "still?"},
    )
    assert streamed.status_code == 200
    events = parse_sse(streamed.text)
    assert [name for name, _ in events] == ["error"]
    assert "boom" in events[0][1]["error"] and events[0][1]["status"] == 502
    page = (await client.get(f"/api/chats/{session['chat_id']}/messages")).json()
    assert [m["text"] for m in page["messages"]] == ["are you there?", "still?"]
    counted = await metrics(client)
    assert counted['chatwright_turns_total{outcome="error"}'] == 2
    assert counted["chatwright_turn_seconds_count"] == 0


async def test_an_unbuildable_model_gives_503_naming_it_and_keeps_the_message(srv: Running) -> None:
    await srv.runtime.storage.agents.create("ghost", system_prompt="x", model="nosuch:model")
    session = await open_session(srv.client, "ghost")
    response = await chat(srv.client, session["chat_id"], "hello?", agent="ghost")
    assert "nosuch:model" in error_of(response, 503)
    # The human message is kept even though no model could be made.
    page = (await srv.client.get(f"/api/chats/{session['chat_id']}/messages")).json()
    assert [(m["role"], m["text"]) for m in page["messages"]] == [("human", "hello?")]
    streamed = await srv.client.post(
        "/api/chat/stream",
        json={"agent_name": "ghost", "session_id": session["chat_id"], "message": "hello?"},
    )
    events = parse_sse(streamed.text)
    assert [name for name, _ in events] == ["error"] and events[0][1]["status"] == 503
    assert "nosuch:model" in events[0][1]["error"]
    page = (await srv.client.get(f"/api/chats/{session['chat_id']}/messages")).json()
    assert [m["text"] for m in page["messages"]] == ["hello?", "hello?"]


async def test_out_of_range_integers_get_422_not_500(srv: Running) -> None:
    session = await open_session(srv.client)
    huge = 10**30
    statuses = [
        (
            await srv.client.put(
                f"/api/agents/{AGENT}/customizations", json={"content": "x", "priority": huge}
            )
        ).status_code,
        (
            await srv.client.get(
                f"/api/chats/{session['chat_id']}/messages", params={"before": huge}
            )
        ).status_code,
    ]
    assert statuses == [422, 422]


async def test_postgres_rejects_nul_and_out_of_range_values_with_422(
    start: Start, pg_url: str
) -> None:
    srv = await start(pg_url, fresh_postgres=True)
    client = srv.client
    session = await open_session(client)
    cid = session["chat_id"]
    statuses = {
        "nul message": (await chat(client, cid, "hi\x00there")).status_code,
        "nul client_key": (
            await client.post("/api/sessions", json={"agent_name": AGENT, "client_key": "a\x00"})
        ).status_code,
        "nul agent": (await client.post("/api/sessions", json={"agent_name": "a\x00"})).status_code,
        "nul content": (
            await client.put(f"/api/agents/{AGENT}/customizations", json={"content": "a\x00"})
        ).status_code,
        "int4 priority": (
            await client.put(
                f"/api/agents/{AGENT}/customizations", json={"content": "x", "priority": 2**40}
            )
        ).status_code,
        "int8 before": (
            await client.get(f"/api/chats/{cid}/messages", params={"before": 2**70})
        ).status_code,
    }
    assert all(400 <= s < 500 for s in statuses.values()), statuses


# =========================================================================== 6. lifespan hooks


async def test_startup_and_shutdown_fire_once_each_around_the_lifespan(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/life.db"
    async with serving(url) as srv:
        recorder = srv.recorder
        assert recorder.startups == [srv.runtime]
        assert recorder.shutdowns == []
        session = await open_session(srv.client)
        await chat_ok(srv.client, session["chat_id"], MILK)
        assert len(recorder.startups) == 1 and recorder.shutdowns == []
    assert recorder.startups == [srv.runtime]
    assert recorder.shutdowns == [srv.runtime]
    with pytest.raises(RuntimeError, match="not started"):
        srv.runtime.storage  # noqa: B018  (the storage was closed with the server)


async def test_the_collector_passes_young_objects_less_often_while_serving(tmp_path: Path) -> None:
    before = gc.get_threshold()
    url = f"sqlite+aiosqlite:///{tmp_path}/gc.db"
    async with serving(url) as srv:
        assert gc.get_threshold() == (10_000, *before[1:])
        session = await open_session(srv.client)
        await chat_ok(srv.client, session["chat_id"], MILK)
    assert gc.get_threshold() == before
    async with serving(url, server={"gc_threshold": 2_500}):
        assert gc.get_threshold() == (2_500, *before[1:])
    async with serving(url, server={"gc_threshold": 0}):
        assert gc.get_threshold() == before
    assert gc.get_threshold() == before


def test_the_modules_of_a_turn_are_imported_and_frozen_at_start_up(tmp_path: Path) -> None:
    # A fresh interpreter: in this one another test imported them long ago.
    script = f"""
import asyncio, gc, sys
from chatwright import testing
from chatwright.plugins.server.app import create_app
from chatwright.registry import LoadPolicy, Plugins

plugins = Plugins.load(LoadPolicy(allow=frozenset()))
settings = testing.settings(plugins, storage={{"url": "sqlite:///{tmp_path}/frozen.db"}})
app = create_app(settings, plugins)
assert "langchain.agents" not in sys.modules, "imported before start-up"

async def main():
    async with app.router.lifespan_context(app):
        module = sys.modules["langchain.agents"]
        tracked = {{id(o) for o in gc.get_objects()}}
        print(id(module.create_agent) in tracked, id(module.__dict__) in tracked)

asyncio.run(main())
"""
    ran = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.split() == ["False", "False"], ran.stdout


async def test_a_failed_startup_still_closes_the_runtime(tmp_path: Path) -> None:
    plugins, recorder = make_plugins()
    settings = Settings(
        storage={"url": f"sqlite+aiosqlite:///{tmp_path}/bad.db"},  # type: ignore[arg-type]
        cache={"policy": "no-such-policy"},  # type: ignore[arg-type]
    )
    app = create_app(settings, plugins)
    runtime: Runtime = app.state.runtime
    try:
        with pytest.raises(UnknownNameError, match="no-such-policy"):
            async with app.router.lifespan_context(app):
                pass
        assert len(recorder.startups) == 1
        assert recorder.shutdowns == [runtime]
    finally:
        await runtime.close()


# =========================================================================== 7. OpenAPI


def error_schema_of(openapi: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = openapi["components"]["schemas"]["ErrorBody"]
    assert schema["required"] == ["error"]
    assert schema["properties"]["error"]["type"] == "string"
    return schema


def check_error_body(
    openapi: dict[str, Any], method: str, path: str, response: httpx.Response
) -> None:
    """A refused request: its status is declared for its route, its body is the error schema."""
    declared = openapi["paths"][path][method.lower()]["responses"]
    status = str(response.status_code)
    assert status in declared, (method, path, status, sorted(declared))
    assert declared[status]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorBody"
    }
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    schema = error_schema_of(openapi)
    assert set(body) == set(schema["properties"]), body
    assert isinstance(body["error"], str) and body["error"], body


async def test_openapi_declares_every_answer_with_a_schema_and_errors_with_the_one_body(
    srv: Running,
) -> None:
    openapi = (await srv.client.get("/openapi.json")).json()
    error_schema_of(openapi)
    assert "HTTPValidationError" not in json.dumps(openapi)
    assert openapi["components"]["securitySchemes"]["HTTPBearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": openapi["components"]["securitySchemes"]["HTTPBearer"]["description"],
    }
    operations = {
        (method, path): operation
        for path, item in openapi["paths"].items()
        for method, operation in item.items()
    }
    # Every route is documented (the page too), and each operation is walked below.
    assert set(operations) == {
        ("get", "/"),
        ("get", "/api/config"),
        ("get", "/healthz"),
        ("get", "/api/health"),
        ("get", "/metrics"),
        ("post", "/api/sessions"),
        ("get", "/api/sessions"),
        ("post", "/api/sessions/{session_id}/heartbeat"),
        ("post", "/api/sessions/{session_id}/deactivate"),
        ("post", "/api/chat"),
        ("post", "/api/chat/stream"),
        ("get", "/api/chats/{chat_id}/messages"),
        ("get", "/api/chats"),
        ("get", "/api/agents"),
        ("get", "/api/agents/{name}"),
        ("get", "/api/agents/{name}/customizations"),
        ("put", "/api/agents/{name}/customizations"),
        ("get", "/api/pending"),
        ("get", "/api/pending/{action_id}"),
        ("post", "/api/pending/{action_id}/approve"),
        ("post", "/api/pending/{action_id}/deny"),
        ("put", "/api/tools/{tool_id}/approval"),
        ("get", "/api/audit"),
        ("post", "/api/chats/{chat_id}/undo"),
        ("get", "/api/usage"),
        ("post", "/api/agents"),
        ("patch", "/api/agents/{name}"),
        ("delete", "/api/agents/{name}"),
        ("post", "/api/agents/{name}/tools"),
        ("patch", "/api/tools/{tool_id}"),
        ("delete", "/api/tools/{tool_id}"),
        ("post", "/api/tools/{tool_id}/copy"),
        ("get", "/api/agents/{name}/export"),
        ("post", "/api/agents/import"),
        ("get", "/api/me/export"),
        ("delete", "/api/me"),
        ("delete", "/api/chats/{chat_id}"),
    }
    # A 409 or a 429 may carry more than the error (the actions that wait, the action asked
    # again, when the budget resets): those bodies are the error body and more.
    richer = {"PendingErrorBody", "PreviewChangedBody"}
    for name in [*richer, "BudgetErrorBody"]:
        schema = openapi["components"]["schemas"][name]
        assert schema["required"][0] == "error", name
        assert schema["properties"]["error"] == error_schema_of(openapi)["properties"]["error"]
    for (method, path), operation in operations.items():
        answers = operation["responses"]
        ok = [code for code in answers if code.startswith("2")]
        assert ok, (method, path)
        for code in ok:
            content = answers[code]["content"]
            assert content, (method, path, code)
            for media, declared in content.items():
                if media == "application/json":
                    assert "$ref" in declared["schema"] or "items" in declared["schema"], (
                        method,
                        path,
                    )
                else:
                    assert declared["schema"] == {"type": "string"}, (method, path, media)
        for code, answer in answers.items():
            if code[0] in "45":
                names = {"ErrorBody", *(richer if code == "409" else ())}
                names |= {"BudgetErrorBody"} if code == "429" else set()
                [(media_type, body)] = answer["content"].items()
                assert media_type == "application/json", (method, path, code)
                assert body["schema"]["$ref"].rsplit("/", 1)[1] in names, (method, path, code)
        if path.startswith("/api/") and path != "/api/config":
            assert operation["security"] == [{"HTTPBearer": []}], (method, path)
            assert {"401", "403", "503"} <= set(answers), (method, path)

    def codes(method: str, path: str) -> set[str]:
        return {c for c in operations[method, path]["responses"] if c[0] in "45"}

    # Every route may answer 400 (two Authorization headers), 422 (a query parameter
    # given twice) and 431 (a head over 16 KiB) before it runs.
    assert codes("post", "/api/chat") == {
        *("400", "401", "403", "404", "409", "413", "422", "431", "429", "502", "503", "504")
    }
    assert codes("post", "/api/chat/stream") == {
        *("400", "401", "403", "404", "413", "422", "431", "429", "503")
    }
    assert codes("get", "/api/usage") == {"400", "401", "403", "422", "431", "503"}
    assert codes("get", "/api/me/export") == {"400", "401", "403", "413", "422", "431", "503"}
    assert codes("delete", "/api/me") == {"400", "401", "403", "409", "422", "431", "503"}
    assert codes("delete", "/api/chats/{chat_id}") == {
        *("400", "401", "403", "404", "409", "422", "431", "503")
    }
    assert codes("get", "/api/agents/{name}") == {"400", "401", "403", "404", "422", "431", "503"}
    assert codes("get", "/healthz") == {"400", "422", "431", "503"}
    media = {
        path: set(
            operations["get" if path != "/api/chat/stream" else "post", path]["responses"]["200"][
                "content"
            ]
        )
        for path in ("/", "/metrics", "/api/chat/stream", "/api/sessions")
    }
    assert media == {
        "/": {"text/html"},
        "/metrics": {"text/plain; version=0.0.4"},
        "/api/chat/stream": {"text/event-stream"},
        "/api/sessions": {"application/json"},
    }
    events = operations["post", "/api/chat/stream"]["responses"]["200"]["description"]
    for event in ("token", "tool_call", "tool_result", "done", "error"):
        assert f"`{event}`" in events
    listed = operations["get", "/api/sessions"]["responses"]["200"]["content"]["application/json"]
    assert listed["schema"]["items"] == {"$ref": "#/components/schemas/Session"}
    request = openapi["components"]["schemas"]["ChatRequest"]["properties"]
    assert request["chat_id"]["format"] == "uuid"
    assert request["session_id"]["deprecated"] is True


async def test_real_error_answers_are_the_declared_error_body(start: Start) -> None:
    srv = await start(server={**JWT["server"], "max_message_chars": 50})
    client = srv.client
    openapi = (await client.get("/openapi.json")).json()
    alice = bearer("alice")
    await srv.runtime.storage.agents.create(
        "broken", system_prompt="x", model="scripted:x", model_settings={"fail": "boom"}
    )
    await srv.runtime.storage.agents.create("ghost", system_prompt="x", model="nosuch:model")
    broken = await open_session(client, "broken", headers=alice)
    ghost = await open_session(client, "ghost", headers=alice)
    session = await open_session(client, headers=alice)
    cid = session["chat_id"]
    refused: list[tuple[str, str, int, Awaitable[httpx.Response]]] = [
        ("GET", "/api/sessions", 401, client.get("/api/sessions")),
        (
            "GET",
            "/api/agents",
            403,
            client.get("/api/agents", headers=bearer("svc", role="service_role")),
        ),
        ("GET", "/api/agents/{name}", 404, client.get("/api/agents/nobody", headers=alice)),
        (
            "POST",
            "/api/sessions/{session_id}/heartbeat",
            404,
            client.post(f"/api/sessions/{uuid.uuid4()}/heartbeat", headers=alice),
        ),
        ("POST", "/api/sessions", 422, client.post("/api/sessions", json={}, headers=alice)),
        (
            "GET",
            "/api/chats/{chat_id}/messages",
            422,
            client.get(f"/api/chats/{cid}/messages", params={"limit": 0}, headers=alice),
        ),
        (
            "POST",
            "/api/chat",
            413,
            client.post(
                "/api/chat",
                json={"agent_name": AGENT, "chat_id": cid, "message": "x" * 51},
                headers=alice,
            ),
        ),
        (
            "POST",
            "/api/chat/stream",
            413,
            client.post(
                "/api/chat/stream",
                content=json.dumps({"message": "z" * 30_000}).encode(),
                headers={**alice, "Content-Type": "application/json"},
            ),
        ),
        (
            "POST",
            "/api/chat",
            502,
            client.post(
                "/api/chat",
                json={"agent_name": "broken", "chat_id": broken["chat_id"], "message": "hi"},
                headers=alice,
            ),
        ),
        (
            "POST",
            "/api/chat",
            503,
            client.post(
                "/api/chat",
                json={"agent_name": "ghost", "chat_id": ghost["chat_id"], "message": "hi"},
                headers=alice,
            ),
        ),
    ]
    for method, path, status, request in refused:
        response = await request
        assert response.status_code == status, (method, path, response.text)
        check_error_body(openapi, method, path, response)


# =========================================================================== 8. chat_id


async def test_chat_takes_chat_id_and_session_id_as_its_older_name(srv: Running) -> None:
    client = srv.client
    session = await open_session(client)
    cid = session["chat_id"]
    by_name = await client.post(
        "/api/chat", json={"agent_name": AGENT, "chat_id": cid, "message": MILK}
    )
    assert by_name.status_code == 200, by_name.text
    assert by_name.json()["session_id"] == cid
    assert [c["name"] for c in by_name.json()["tool_calls"]] == ["add_task"]
    by_alias = await chat_ok(client, cid, "list my tasks")
    assert by_alias["session_id"] == cid and "buy milk" in by_alias["response"]
    both = await client.post(
        "/api/chat",
        json={"agent_name": AGENT, "chat_id": cid, "session_id": cid, "message": "hello"},
    )
    assert both.status_code == 200, both.text
    streamed = await client.post(
        "/api/chat/stream", json={"agent_name": AGENT, "chat_id": cid, "message": "list my tasks"}
    )
    assert streamed.status_code == 200
    assert parse_sse(streamed.text)[-1][1]["session_id"] == cid
    # All four turns went to the one chat.
    page = (await client.get(f"/api/chats/{cid}/messages", params={"limit": 500})).json()
    humans = [m["text"] for m in page["messages"] if m["role"] == "human"]
    assert humans == [MILK, "list my tasks", "hello", "list my tasks"]

    other = str(uuid.uuid4())
    differing = await client.post(
        "/api/chat",
        json={"agent_name": AGENT, "chat_id": cid, "session_id": other, "message": "hi"},
    )
    assert "not both" in error_of(differing, 422)
    missing = error_of(
        await client.post("/api/chat", json={"agent_name": AGENT, "message": "hi"}), 422
    )
    assert "chat_id" in missing and "session_id" in missing
    invalid = await client.post(
        "/api/chat", json={"agent_name": AGENT, "chat_id": "chat-1", "message": "hi"}
    )
    assert "chat_id" in error_of(invalid, 422)
    unknown = await client.post(
        "/api/chat", json={"agent_name": AGENT, "chat_id": other, "message": "hi"}
    )
    error_of(unknown, 404)
    assert len(await srv.sql("SELECT id FROM chat_messages WHERE role = 'human'")) == 4


# =========================================================================== 7. serve --workers 2


@pytest.mark.postgresql
def test_two_workers_count_together_and_clean_up_their_metrics(tmp_path: Path) -> None:
    """Each scrape reaches one worker; with prometheus-client's multiprocess mode the
    counters are the server's: equal to the turns made, whichever worker answers."""
    import subprocess

    from tests.harness import CONSOLE_SCRIPT, clean_env, free_port
    from tests.test_multiprocess import fresh_database

    turns = 6
    metrics_dirs = tmp_path / "tmp"
    metrics_dirs.mkdir()
    with fresh_database(tmp_path / "work") as (_, url):
        port = free_port()
        log = (tmp_path / "serve.log").open("w", encoding="utf-8")
        proc = subprocess.Popen(
            [str(CONSOLE_SCRIPT), "serve", "--workers", "2", "--port", str(port)],
            cwd=tmp_path / "work",
            env=clean_env(
                **pg_env(url),
                CHATWRIGHT_SESSIONS__SWEEP_INTERVAL="3600",
                TMPDIR=str(metrics_dirs),
            ),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                assert proc.poll() is None, (tmp_path / "serve.log").read_text()
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                        break
                assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
                time.sleep(0.2)
            # A new connection per request, so that both workers answer some.
            opened = httpx.post(base + "/api/sessions", json={"agent_name": AGENT}, timeout=30)
            chat_id = opened.json()["chat_id"]
            for i in range(turns):
                body = {"agent_name": AGENT, "chat_id": chat_id, "message": f"add task {i}"}
                assert httpx.post(base + "/api/chat", json=body, timeout=30).status_code == 200
            seen = []
            for _ in range(10):
                scraped = parse_metrics(httpx.get(base + "/metrics", timeout=30).text)
                seen.append(scraped['chatwright_turns_total{outcome="ok"}'])
                assert scraped["chatwright_turn_seconds_count"] == turns
                assert (
                    scraped["chatwright_cache_hits_total"]
                    + scraped["chatwright_cache_misses_total"]
                    == turns
                )
            assert seen == [turns] * 10
            assert len(list(metrics_dirs.iterdir())) == 1  # the run's metrics directory
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            log.close()
    assert list(metrics_dirs.iterdir()) == []  # removed when serve stops


# =========================================================================== 8. docs pages


async def test_docs_pages_load_every_asset_from_the_server_itself(srv: Running) -> None:
    import re

    for path in ("/docs", "/redoc"):
        page = await srv.client.get(path)
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        # Nothing is fetched from another host: every src and href is a path of this server.
        links = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", page.text)
        assets = re.findall(r"""['"](/docs-assets/[^'"]+)['"]""", page.text)
        assert links and assets
        assert all(link.startswith("/") for link in links), links
        assert "http://" not in page.text.replace("http://127.0.0.1", "")
        assert "https://" not in page.text
        assert "/openapi.json" in page.text
        for asset in assets:
            loaded = await srv.client.get(asset)
            assert loaded.status_code == 200, asset
            assert len(loaded.content) > 1000, asset
