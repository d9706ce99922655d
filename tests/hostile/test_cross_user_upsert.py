"""Review finding "cross-user overwrite through upsert", replayed end to end.

A ``crud`` upsert whose conflict target is ``["id"]`` (written into
``agent_tools`` with plain SQL, past ``tools add``) used to let bob's call take
alice's row: the ``ON CONFLICT … DO UPDATE`` rewrote ``user_id`` to bob and
returned her other columns. Here a scripted model makes that call for bob,
through the runtime and through the HTTP server with JWT auth; alice's row must
come out untouched and nothing of it may reach bob.
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa

from chatwright.plugins.example import assistant as example
from chatwright.runtime import Runtime
from tests.hostile.conftest import MakeRuntime, MakeServer, any_text, bearer

AGENT = example.AGENT
SECRET_TITLE = "alice's surprise party for bob"
HOSTILE_TOOL: dict[str, Any] = {
    "table": "tasks",
    "operation": "upsert",
    "args": {"id": {"type": "integer", "required": True}, "title": {"required": True}},
    "conflict": ["id"],
}


def script(*calls: tuple[str, dict[str, Any]], reply: str = "Done.") -> dict[str, Any]:
    """model_settings of a scripted model: one turn making ``calls``, then ``reply``."""
    tool_calls = [{"name": name, "args": args} for name, args in calls]
    return {"responses": [{"tool_calls": tool_calls}, {"content": reply}]}


async def sql(runtime: Runtime, statement: str, **params: Any) -> list[dict[str, Any]]:
    async with runtime.storage.write() as conn:  # type: ignore[attr-defined]
        result = await conn.execute(sa.text(statement), params)
        return [dict(r._mapping) for r in result] if result.returns_rows else []


async def plant_hostile_tool(runtime: Runtime) -> None:
    """The hostile row, written by hand into agent_tools (validation never sees it)."""
    await sql(
        runtime,
        "INSERT INTO agent_tools (agent_id, name, type, config) "
        "SELECT id, 'save_task', 'crud', :config FROM agents WHERE name = :agent",
        config=json.dumps(HOSTILE_TOOL),
        agent=AGENT,
    )


async def alices_tasks(runtime: Runtime) -> list[dict[str, Any]]:
    return await sql(runtime, "SELECT * FROM tasks WHERE user_id = 'alice' ORDER BY id")


async def test_bobs_scripted_upsert_with_alices_id_through_the_runtime(
    make_runtime: MakeRuntime,
) -> None:
    runtime = await make_runtime()
    await example.seed(runtime.storage, "scripted:x")
    storage = runtime.storage
    await storage.agents.update(AGENT, model_settings=script(("add_task", {"title": SECRET_TITLE})))
    alice_chat = (await storage.sessions.open("alice", AGENT)).chat_id
    added = await runtime.chat("alice", AGENT, alice_chat, "remind me of the party")
    assert [c.error for c in added.tool_calls] == [False]
    (before,) = await alices_tasks(runtime)

    await plant_hostile_tool(runtime)
    attack = ("save_task", {"id": before["id"], "title": "bob's now"})
    await storage.agents.update(AGENT, model_settings=script(attack))
    bob_chat = (await storage.sessions.open("bob", AGENT)).chat_id
    turn = await runtime.chat("bob", AGENT, bob_chat, "save task")

    assert await alices_tasks(runtime) == [before]
    (call,) = turn.tool_calls
    assert call.name == "save_task"
    assert call.error
    assert SECRET_TITLE not in any_text([call.result, turn.response])
    assert await sql(runtime, "SELECT * FROM tasks WHERE user_id = 'bob'") == []


async def test_bobs_scripted_upsert_with_alices_id_through_the_server(
    make_server: MakeServer,
) -> None:
    server = await make_server()
    runtime, client = server.runtime, server.client
    await example.seed(runtime.storage, "scripted:x")

    async def say(user: str, text: str) -> dict[str, Any]:
        opened = await client.post(
            "/api/sessions", json={"agent_name": AGENT}, headers=bearer(user)
        )
        assert opened.status_code == 200, opened.text
        body = {"agent_name": AGENT, "session_id": opened.json()["chat_id"], "message": text}
        response = await client.post("/api/chat", json=body, headers=bearer(user))
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()
        return data

    await runtime.storage.agents.update(
        AGENT, model_settings=script(("add_task", {"title": SECRET_TITLE}))
    )
    await say("alice", "remind me of the party")
    (before,) = await alices_tasks(runtime)

    await plant_hostile_tool(runtime)
    attack = ("save_task", {"id": before["id"], "title": "bob's now"})
    await runtime.storage.agents.update(AGENT, model_settings=script(attack))
    answer = await say("bob", "save task")

    assert await alices_tasks(runtime) == [before]
    assert [c["error"] for c in answer["tool_calls"]] == [True]
    assert SECRET_TITLE not in any_text(answer)
    assert await sql(runtime, "SELECT * FROM tasks WHERE user_id = 'bob'") == []
