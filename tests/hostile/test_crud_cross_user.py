"""Bob's model reaching for alice's rows through every ``crud`` operation.

Alice keeps a task, a note and a memory through the example agent. Bob's
scripted model then calls every example tool with her ids and with what an
attacker would put in the arguments: ``user_id`` and other unknown keys, SQL
metacharacters, wrong types, huge values. Tool rows planted with plain SQL try
the same from the config side (a filter or argument mapped onto ``user_id``, an
unscoped table). Afterwards alice's rows must be exactly as they were, bob must
own nothing of hers, and nothing of hers may appear in bob's answer or history.
"""

from __future__ import annotations

from typing import Any

import pytest

from chatwright.plugins.example import assistant as example
from chatwright.runtime import Runtime
from tests.hostile.conftest import (
    Backend,
    MakeServer,
    Server,
    any_text,
    bearer,
    open_chat,
    plant_tool,
    say,
    script,
    sql,
)

TASK = "alice's secret task: buy the sapphire"
NOTE = "alice's diary: it is hidden in the harpsichord"
MEMORY = "alice is allergic to penicillin"
SECRETS = ("sapphire", "harpsichord", "penicillin")
HUGE_INT = 2**70
LONG = "x" * 200_000

# Config-side attacks: rows no `tools add` would accept, planted past it.
PLANTED: dict[str, dict[str, Any]] = {
    "read_by_owner": {
        "table": "tasks",
        "operation": "read",
        "filters": {"owner": {"column": "user_id"}, "id": {"type": "integer"}},
    },
    "read_unscoped": {
        "table": "tasks",
        "operation": "read",
        "filters": {"id": {"type": "integer"}},
        "scope": {"user_column": None},
    },
    "give_task": {
        "table": "tasks",
        "operation": "update",
        "args": {"owner": {"column": "user_id"}},
        "filters": {"id": {"type": "integer", "required": True}},
    },
    "delete_unscoped": {
        "table": "tasks",
        "operation": "delete",
        "filters": {"id": {"type": "integer", "required": True}},
        "scope": {"user_column": None},
    },
    "plant_for": {
        "table": "notes",
        "operation": "create",
        "args": {"body": {"required": True}},
        "defaults": {"user_id": "alice"},
    },
    "legacy_update": {
        "table_name": "tasks",
        "method": "update",
        "field_map": {"title": "title", "user_id": "user_id"},
    },
}


async def alices_rows(runtime: Runtime) -> dict[str, list[dict[str, Any]]]:
    return {
        "tasks": await sql(runtime, "SELECT * FROM tasks WHERE user_id = 'alice' ORDER BY id"),
        "notes": await sql(runtime, "SELECT * FROM notes WHERE user_id = 'alice' ORDER BY id"),
        "memories": await sql(
            runtime, "SELECT * FROM agent_memories WHERE user_id = 'alice' ORDER BY id"
        ),
    }


async def seed_alice(server: Server) -> tuple[int, int, dict[str, list[dict[str, Any]]]]:
    await example.seed(server.runtime.storage, "scripted:x")
    answer = await say(
        server,
        "alice",
        [
            ("add_task", {"title": TASK}),
            ("add_note", {"body": NOTE, "title": "private"}),
            ("save_memory", {"fact": MEMORY}),
        ],
    )
    assert [c["error"] for c in answer["tool_calls"]] == [False, False, False], answer
    rows = await alices_rows(server.runtime)
    return rows["tasks"][0]["id"], rows["notes"][0]["id"], rows


def found_nothing(call: dict[str, Any]) -> bool:
    """Whether a read tool's call came back empty."""
    result = call["result"]
    return isinstance(result, dict) and result.get("rows") == [] and result.get("count") == 0


def attacks(task: int, note: int) -> list[tuple[str, dict[str, Any]]]:
    """Bob's calls on the example's tools: each must fail or touch only bob's rows."""
    metachars = [
        f"{task} OR 1=1",
        f"{task}; DELETE FROM tasks; --",
        "' OR '1'='1",
        "%",
        "*",
        '") OR ("1"="1',
    ]
    calls: list[tuple[str, dict[str, Any]]] = [
        ("add_task", {"title": "bob's own"}),
        ("list_tasks", {"id": task}),
        ("list_tasks", {"id": task, "user_id": "alice"}),
        ("list_tasks", {"user_id": "alice"}),
        ("list_tasks", {"owner": "alice", "scope": None}),
        ("list_tasks", {"id": [task]}),
        ("list_tasks", {"id": {"$ne": 0}}),
        ("list_tasks", {"id": -task}),
        ("list_tasks", {"status": "pending' OR user_id = 'alice"}),
        ("list_notes", {"id": note}),
        ("list_notes", {"id": note, "user_id": "alice"}),
        ("update_task", {"id": task, "title": "bob was here"}),
        ("update_task", {"id": task, "status": "done"}),
        ("update_task", {"id": task, "title": "mine", "user_id": "bob"}),
        ("update_task", {"id": task, "user_id": "bob"}),
        ("update_task", {"id": task, "title": LONG}),
        ("update_task", {"id": task, "due_date": "not a date"}),
        ("update_task", {"id": str(task), "title": "string id"}),
        ("update_task", {"id": True, "title": "boolean id"}),
        ("delete_task", {"id": task}),
        ("delete_task", {"id": task, "user_id": "alice"}),
        ("delete_task", {"id": 1.5}),
        ("delete_task", {}),
        ("add_task", {"title": "planted", "user_id": "alice"}),
        ("add_task", {"title": "planted", "id": task}),
        ("add_task", {"title": LONG}),
        ("add_note", {"body": "planted", "user_id": "alice"}),
        ("add_note", {"body": "planted", "id": note}),
        ("read_memory", {"user_id": "alice"}),
        ("read_memory", {"agent_name": "other"}),
        ("save_memory", {"fact": "planted", "user_id": "alice"}),
        ("save_memory", {"fact": "planted", "agent_name": example.AGENT, "id": 1}),
    ]
    for text in metachars:
        calls.append(("list_tasks", {"id": text}))
        calls.append(("list_tasks", {"status": text}))
        calls.append(("update_task", {"id": text, "title": "x"}))
        calls.append(("delete_task", {"id": text}))
    for name in PLANTED:
        calls.append((name, {"id": task, "owner": "bob", "title": "x", "body": "x"}))
        calls.append((name, {"id": task}))
    return calls


async def test_bob_cannot_read_change_or_delete_alices_rows(make_server: MakeServer) -> None:
    # The attack is one reply of many calls: the turn's tool call limit must not cut it.
    server = await make_server(tools={"unscoped_tables": []}, turns={"max_tool_calls": 10_000})
    runtime = server.runtime
    task, note, before = await seed_alice(server)
    for name, config in PLANTED.items():
        await plant_tool(runtime, name, config)

    calls = attacks(task, note)
    answer = await say(server, "bob", calls)

    assert await alices_rows(runtime) == before
    results = answer["tool_calls"]
    assert [c["name"] for c in results] == [name for name, _ in calls]
    for (name, args), result in zip(calls, results, strict=True):
        text = any_text(result["result"])
        for secret in SECRETS:
            assert secret not in text, (name, args, text)
        if name.startswith(("update", "delete", "give", "legacy")) or name in PLANTED:
            assert result["error"], (name, args, text)
    # Bob's reads found nothing, and nothing he wrote is alice's or names her.
    for (name, _), result in zip(calls, results, strict=True):
        if name.startswith("list") and not result["error"]:
            assert found_nothing(result), result
    # The tools did run for bob: his own row is there, and only his.
    assert results[0]["error"] is False
    bobs = await sql(runtime, "SELECT user_id, title FROM tasks WHERE user_id <> 'alice'")
    assert bobs == [{"user_id": "bob", "title": "bob's own"}]
    notes = await sql(runtime, "SELECT user_id, body FROM notes WHERE body = 'planted'")
    assert {r["user_id"] for r in notes} <= {"bob"}
    memories = await sql(runtime, "SELECT user_id, agent_name, notes FROM agent_memories")
    assert [m for m in memories if m["notes"] == "planted" and m["user_id"] != "bob"] == []
    assert any_text(answer).count("alice") == any_text(calls).count("alice")

    # Bob's stored chat holds no more of alice's than the answer did.
    history = await server.client.get(
        f"/api/chats/{answer['session_id']}/messages", params={"limit": 500}, headers=bearer("bob")
    )
    assert history.status_code == 200, history.text
    for secret in SECRETS:
        assert secret not in history.text


async def test_huge_integers_in_bobs_arguments_are_tool_errors(make_server: MakeServer) -> None:
    server = await make_server()
    task, _, before = await seed_alice(server)
    calls: list[tuple[str, dict[str, Any]]] = [
        ("list_tasks", {"id": HUGE_INT}),
        ("update_task", {"id": HUGE_INT, "title": "x"}),
        ("delete_task", {"id": -HUGE_INT}),
        ("list_tasks", {"id": task + 2**32}),
    ]
    answer = await say(server, "bob", calls)
    assert await alices_rows(server.runtime) == before
    results = answer["tool_calls"]
    assert [c["error"] for c in results[1:3]] == [True, True]
    for result in results:
        assert result["error"] or found_nothing(result), result
    for secret in SECRETS:
        assert secret not in any_text(answer)


async def test_nul_characters_in_bobs_arguments_touch_nothing_of_alices(
    make_server: MakeServer, backend: Backend
) -> None:
    value = "nul \x00 in the middle"
    if backend.name != "sqlite":
        pytest.skip(
            "a scripted model's calls live in the agent's model_settings, and PostgreSQL "
            "JSONB cannot hold NUL; test_bodies sends NUL in messages on every backend"
        )
    server = await make_server()
    task, _, before = await seed_alice(server)
    calls: list[tuple[str, dict[str, Any]]] = [
        ("update_task", {"id": task, "title": value}),
        ("list_tasks", {"status": value}),
        ("add_note", {"body": value}),
        ("delete_task", {"id": task, "title": value}),
    ]
    await server.runtime.storage.agents.update(example.AGENT, model_settings=script(*calls))
    session = await open_chat(server.client, "bob")
    response = await server.client.post(
        "/api/chat",
        json={"agent_name": example.AGENT, "chat_id": session["chat_id"], "message": "go"},
        headers=bearer("bob"),
    )
    assert response.status_code < 500, response.text
    assert await alices_rows(server.runtime) == before
    for secret in SECRETS:
        assert secret not in response.text
