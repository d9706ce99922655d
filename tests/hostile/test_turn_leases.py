"""Attacks on the turn path: chat leases, one build shared by every user, its settings.

A chat's turns take a lease row, and one built agent serves every user of an
agent, the user reaching the tools only when they are called. So: another
user's chat must answer "not found" at once even while its owner's turn runs
(not "busy", not after waiting: either would tell that the chat exists);
concurrent turns of many users on one build must each reach their own rows
only; and the new settings refuse nonsense with a message naming them.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import pytest

from chatwright.plugins.example import assistant as example
from tests.harness import assert_error, run
from tests.hostile.conftest import (
    MakeServer,
    assert_error_body,
    bearer,
    open_chat,
)

AGENT = example.AGENT


async def test_another_users_chat_is_not_found_at_once_while_its_turn_runs(
    make_server: MakeServer,
) -> None:
    server = await make_server(storage={"turn_wait": 30})
    await example.seed(server.runtime.storage, "scripted:x")
    slow = {"responses": [{"sleep": 4, "content": "Done, slowly."}]}
    await server.runtime.storage.agents.update(AGENT, model_settings=slow)
    client = server.client
    alices = (await open_chat(client, "alice"))["chat_id"]
    body = {"agent_name": AGENT, "chat_id": alices, "message": "take your time"}
    running = asyncio.create_task(client.post("/api/chat", json=body, headers=bearer("alice")))
    # Until the lease row exists, alice's turn is not yet running.
    for _ in range(200):
        if await leases(server):
            break
        await asyncio.sleep(0.02)
    assert await leases(server) == [alices]

    fresh = str(uuid.uuid4())
    answers = []
    for chat_id in (alices, fresh):
        started = time.monotonic()
        probe = {"agent_name": AGENT, "chat_id": chat_id, "message": "mine now"}
        response = await client.post("/api/chat", json=probe, headers=bearer("bob"))
        answers.append((response.status_code, response.text.replace(chat_id, "<id>")))
        # Answered before alice's turn ends (4 s): nothing waited on her lease.
        assert time.monotonic() - started < 2.5, response.text
        assert_error_body(response, 404)
    assert answers[0] == answers[1]
    assert not running.done()

    finished = await running
    assert finished.status_code == 200, finished.text
    assert finished.json()["response"] == "Done, slowly."
    assert await leases(server) == []
    # Bob's attempts left nothing in alice's chat.
    messages = await server.runtime.storage.messages.page("alice", uuid.UUID(alices), limit=10)
    assert [m.content["data"]["content"] for m in messages] == ["take your time", "Done, slowly."]


async def test_turns_queued_behind_a_long_turn_of_their_chat_are_refused_after_turn_wait(
    make_server: MakeServer,
) -> None:
    """Requests piling up on one chat in one process (a client retrying, a script
    looping) wait for it at most ``storage.turn_wait``, as a request reaching another
    process does, not for every turn queued before them: 409, nothing of theirs stored.
    The turn that holds the chat ends as it would have."""
    server = await make_server(storage={"turn_wait": 1})
    await example.seed(server.runtime.storage, "scripted:x")
    slow = {"responses": [{"sleep": 3, "content": "Done, slowly."}] * 4}
    await server.runtime.storage.agents.update(AGENT, model_settings=slow)
    client = server.client
    chat_id = (await open_chat(client, "alice"))["chat_id"]

    async def post(text: str) -> tuple[float, int, str]:
        body = {"agent_name": AGENT, "chat_id": chat_id, "message": text}
        started = time.monotonic()
        response = await client.post("/api/chat", json=body, headers=bearer("alice"))
        return time.monotonic() - started, response.status_code, response.text

    first = asyncio.create_task(post("first"))
    await asyncio.sleep(0.3)  # the first holds the chat
    queued = await asyncio.gather(*(post(f"queued {n}") for n in range(3)))
    for took, status, text in queued:
        assert status == 409, text
        assert "turn_wait" not in text and "running" in text, text
        # Refused after the wait, not after the turns before them (3 s each).
        assert 0.8 < took < 2.8, took
    took, status, text = await first
    assert status == 200, text
    messages = await server.runtime.storage.messages.page("alice", uuid.UUID(chat_id), limit=10)
    assert [m.content["data"]["content"] for m in messages] == ["first", "Done, slowly."]


async def leases(server: object) -> list[str]:
    from tests.hostile.conftest import sql

    rows = await sql(server.runtime, "SELECT chat_id FROM chat_leases")  # type: ignore[attr-defined]
    return [str(uuid.UUID(str(r["chat_id"]))) for r in rows]


async def test_concurrent_turns_of_many_users_on_one_build_reach_only_their_own_rows(
    make_server: MakeServer,
) -> None:
    server = await make_server()
    runtime = server.runtime
    await example.seed(runtime.storage, "scripted:x")
    # Every user's script: add a task named after nobody in particular, then list.
    # The model cannot name a user; the tools must find it at call time.
    plan = [
        {"tool_calls": [{"name": "add_task", "args": {"title": "mine"}}]},
        {"tool_calls": [{"name": "list_tasks", "args": {}}]},
        {"content": "Listed."},
    ]
    await runtime.storage.agents.update(AGENT, model_settings={"responses": plan})
    users = [f"user{n}" for n in range(12)]
    chats = {u: (await open_chat(server.client, u))["chat_id"] for u in users}

    async def turn(user: str) -> dict[str, object]:
        body = {"agent_name": AGENT, "chat_id": chats[user], "message": "go"}
        response = await server.client.post("/api/chat", json=body, headers=bearer(user))
        assert response.status_code == 200, response.text
        data: dict[str, object] = response.json()
        return data

    results = await asyncio.gather(*(turn(u) for u in users))
    assert runtime.cache.stats.builds == 1
    owners = {r["id"]: r["user_id"] for r in await _rows(server, "SELECT id, user_id FROM tasks")}
    assert sorted(owners.values()) == sorted(users)
    for user, result in zip(users, results, strict=True):
        calls = result["tool_calls"]
        assert isinstance(calls, list)
        created = calls[0]["result"]["created"]
        assert owners[created["id"]] == user
        [_, listing] = calls
        rows = listing["result"]["rows"]
        assert [owners[r["id"]] for r in rows] == [user], (user, rows)


async def _rows(server: object, statement: str) -> list[dict[str, object]]:
    from tests.hostile.conftest import sql

    return await sql(server.runtime, statement)  # type: ignore[attr-defined]


def test_turn_and_sweep_settings_refuse_nonsense_by_name(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for section, key, value in (
        ("storage", "turn_lease", "0"),
        ("storage", "turn_lease", "-5"),
        ("storage", "turn_lease", "soon"),
        ("storage", "turn_wait", "0"),
        ("storage", "turn_wait", "nan"),
        ("sessions", "sweep_batch", "0"),
        ("sessions", "sweep_batch", "100000000000"),
        ("sessions", "sweep_batch", "all"),
        ("tools", "approval_timeout", "0"),
        ("tools", "approval_timeout", "1e12"),
        ("tools", "approval_timeout", "a day"),
        ("tools", "preview_rows", "0"),
        ("tools", "preview_rows", "100000"),
        ("tools", "preview_rows", "some"),
    ):
        with monkeypatch.context() as env:
            env.setenv(f"CHATWRIGHT_{section.upper()}__{key.upper()}", value)
            assert_error(run("agents", "list"), f"{section}.{key}")
