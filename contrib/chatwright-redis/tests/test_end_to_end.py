"""chatwright with ``sessions.store = "redis"``: sessions in Redis, messages in SQLite.

The plugin is found through its entry point once the distribution is
installed; in a checkout where it is not, it is registered inline.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import chatwright_redis
import httpx
import pytest
import redis.asyncio as aioredis
from chatwright_redis.store import RedisSessionStore
from fastapi import FastAPI

from chatwright.conversations import owner_lost
from chatwright.plugins.example import assistant as example
from chatwright.plugins.server.app import create_app
from chatwright.registry import LoadPolicy, Plugins
from chatwright.runtime import Runtime
from chatwright.sessions import sweep
from chatwright.settings import Settings

AGENT = example.AGENT


@pytest.fixture
def plugins() -> Plugins:
    loaded = Plugins.load(LoadPolicy())
    if "redis" not in {info.name for info in loaded.infos()}:
        loaded.register(chatwright_redis, "redis")
    return loaded


@pytest.fixture
def settings(
    tmp_path: Path, redis_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    monkeypatch.setenv("CHATWRIGHT_REDIS_URL", redis_url)
    monkeypatch.setenv("CHATWRIGHT_REDIS_PREFIX", prefix)
    return Settings(  # type: ignore[call-arg]
        storage={"url": f"sqlite+aiosqlite:///{tmp_path}/r.db"},  # type: ignore[arg-type]
        sessions={"store": "redis"},  # type: ignore[arg-type]
    )


@asynccontextmanager
async def serving(
    settings: Settings, plugins: Plugins
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The server app, started, and a client calling it in this process."""
    app = create_app(settings, plugins)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://localhost"
        ) as client,
    ):
        yield app, client


def sqlite_rows(path: Path, query: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as db:
        return db.execute(query).fetchall()


async def test_a_turn_through_the_runtime(
    settings: Settings, plugins: Plugins, raw: aioredis.Redis, prefix: str, tmp_path: Path
) -> None:
    runtime = Runtime(settings, plugins)
    await runtime.start(upgrade=True)
    try:
        assert isinstance(runtime.storage.sessions, RedisSessionStore)
        await example.seed(runtime.storage, "offline:assistant")
        session = await runtime.storage.sessions.open("alice", AGENT)
        turn = await runtime.chat("alice", AGENT, session.chat_id, "add a task to buy milk")
        assert "Added task" in turn.response
        assert [c.name for c in turn.tool_calls] == ["add_task"]

        stored = await raw.hgetall(f"{prefix}session:{session.id}")
        assert stored["chat_id"] == str(session.chat_id) and stored["is_active"] == "1"
        assert int(stored["updated_at"]) > int(stored["created_at"])  # touched by the turn
        assert await raw.zrange(f"{prefix}active", 0, -1) == [f"alice:{AGENT}:{session.id}"]
        window = await runtime.storage.messages.window("alice", session.chat_id, 10)
        assert [m.role for m in window] == ["human", "ai", "tool", "ai"]

        # The sweeper deactivates the idle session in Redis, then evicts the built agent.
        report = await sweep(runtime, datetime.now(UTC) + timedelta(hours=1), keep_ids=True)
        assert (report.deactivated, report.ids) == (1, [session.id])
        assert report.evicted == [(AGENT, "idle-session")]  # the key is the agent
        assert await raw.hget(f"{prefix}session:{session.id}", "is_active") == "0"
    finally:
        await runtime.close()

    database = tmp_path / "r.db"
    assert sqlite_rows(database, "SELECT count(*) FROM chat_sessions") == [(0,)]
    assert sqlite_rows(database, "SELECT user_id, count(*) FROM chat_messages GROUP BY 1") == [
        ("alice", 4)
    ]


async def test_a_turn_through_the_server(
    settings: Settings, plugins: Plugins, raw: aioredis.Redis, prefix: str, tmp_path: Path
) -> None:
    async with serving(settings, plugins) as (app, client):
        await example.seed(app.state.runtime.storage, "offline:assistant")
        body = {"agent_name": AGENT, "client_key": "tab-1"}
        opened = await client.post("/api/sessions", json=body)
        assert opened.status_code == 200, opened.text
        session = opened.json()
        assert (await client.post("/api/sessions", json=body)).json()["id"] == session["id"]

        said = await client.post(
            "/api/chat",
            json={
                "agent_name": AGENT,
                "session_id": session["chat_id"],
                "message": "add a task to buy milk",
            },
        )
        assert said.status_code == 200, said.text
        assert said.json()["error"] is None
        assert "Added task" in said.json()["response"]

        key = f"{prefix}session:{session['id']}"
        assert (await raw.hgetall(key))["user_id"] == "local"
        assert await raw.get(f"{prefix}chat:{session['chat_id']}") == f"local:{AGENT}"
        assert await raw.get(f"{prefix}key:local:{AGENT}:tab-1") == session["id"]
        metrics = (await client.get("/metrics")).text.splitlines()
        assert "chatwright_active_sessions 1" in metrics

        page = await client.get(f"/api/chats/{session['chat_id']}/messages")
        assert page.status_code == 200, page.text
        assert [m["role"] for m in page.json()["messages"]] == ["human", "ai", "tool", "ai"]

        closed = await client.post(f"/api/sessions/{session['id']}/deactivate")
        assert closed.status_code == 200 and closed.json()["is_active"] is False
        assert await raw.hget(key, "is_active") == "0"
        assert await raw.zcard(f"{prefix}active") == 0
        assert await raw.exists(f"{prefix}key:local:{AGENT}:tab-1") == 0

    assert sqlite_rows(tmp_path / "r.db", "SELECT count(*) FROM chat_sessions") == [(0,)]


async def test_an_unreachable_redis_is_a_503_that_describes_nothing_of_the_deployment(
    settings: Settings,
    plugins: Plugins,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A password given in the query (the only way for a unix:// socket) is a secret too.
    monkeypatch.setenv("CHATWRIGHT_REDIS_URL", "redis://127.0.0.1:1/0?password=hunter2")
    async with serving(settings, plugins) as (app, client):
        await example.seed(app.state.runtime.storage, "offline:assistant")
        opened = await client.post("/api/sessions", json={"agent_name": AGENT})
        assert opened.status_code == 503
        error = opened.json()["error"]
        assert error.startswith("the session store (Redis) cannot be reached")
        assert "127.0.0.1" not in error and "hunter2" not in error
        # The operator finds where, and what to change, in the server log.
        assert "127.0.0.1:1" in caplog.text and "CHATWRIGHT_REDIS_URL" in caplog.text
        assert "hunter2" not in caplog.text


async def test_chats_are_listed_with_their_agents_from_redis(
    settings: Settings, plugins: Plugins
) -> None:
    """Sessions live in Redis, so the SQL messages know no agent: the owner fills it in."""
    from chatwright.conversations import list_chats, transcript

    runtime = Runtime(settings, plugins)
    await runtime.start(upgrade=True)
    try:
        storage = runtime.storage
        await example.seed(storage, "offline:assistant")
        await storage.agents.create("helper", system_prompt="Help.", model="offline:assistant")
        chats = []
        for user, agent, message in (
            ("alice", AGENT, "list my tasks"),
            ("alice", "helper", "hello"),
            ("bob", AGENT, "bob's own"),
        ):
            session = await storage.sessions.open(user, agent)
            await runtime.chat(user, agent, session.chat_id, message)
            chats.append(session.chat_id)

        raw = await storage.messages.chats("alice", limit=5)
        assert [c.agent_name for c in raw] == [None, None]  # no session of theirs in SQL
        page = await list_chats(storage, "alice")
        assert [(c.chat_id, c.agent_name) for c in page.chats] == [
            (chats[1], "helper"),
            (chats[0], AGENT),
        ]
        assert [c.title for c in page.chats] == ["hello", "list my tasks"]
        only = await list_chats(storage, "alice", agent_name=AGENT)
        assert [c.chat_id for c in only.chats] == [chats[0]]
        assert [c.chat_id for c in (await list_chats(storage, "bob")).chats] == [chats[2]]
        assert (await transcript(storage, chats[1], "alice")).agent_name == "helper"
    finally:
        await runtime.close()


async def test_a_chat_whose_owner_redis_lost_is_reopened_by_its_user_only(
    settings: Settings, plugins: Plugins, raw: aioredis.Redis, prefix: str
) -> None:
    """Redis restarted without persistence: the chat's owner is gone, its messages are
    not. Its user reopens it by its id and sees it again; another user cannot."""
    async with serving(settings, plugins) as (app, client):
        runtime = app.state.runtime
        await example.seed(runtime.storage, "offline:assistant")
        opened = await client.post("/api/sessions", json={"agent_name": AGENT})
        chat_id = opened.json()["chat_id"]
        said = await client.post(
            "/api/chat",
            json={"agent_name": AGENT, "session_id": chat_id, "message": "add a task"},
        )
        assert said.status_code == 200, said.text
        for key in await raw.keys(f"{prefix}*"):
            await raw.delete(key)
        lost = await client.get(f"/api/chats/{chat_id}/messages")
        assert lost.status_code == 404, lost.text
        # Only the user whose messages are stored under the id may claim it back.
        assert not await owner_lost(runtime.storage, "mallory", uuid.UUID(chat_id))
        assert await owner_lost(runtime.storage, "local", uuid.UUID(chat_id))
        again = await client.post("/api/sessions", json={"agent_name": AGENT, "chat_id": chat_id})
        assert again.status_code == 200, again.text
        assert again.json()["chat_id"] == chat_id
        page = await client.get(f"/api/chats/{chat_id}/messages")
        assert page.status_code == 200, page.text
        assert [m["role"] for m in page.json()["messages"]][:2] == ["human", "ai"]
