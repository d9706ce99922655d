"""Review finding "cross-user overwrite through upsert", replayed end to end.

A ``crud`` upsert whose conflict target is ``["id"]`` (written into
``agent_tools`` with plain SQL, past ``tools add``) used to let bob's call take
alice's row: the ``ON CONFLICT … DO UPDATE`` rewrote ``user_id`` to bob and
returned her other columns. Here a scripted model makes that call for bob,
through the runtime and through the HTTP server with JWT auth; alice's row must
come out untouched and nothing of it may reach bob.
"""

from __future__ import annotations

from typing import Any

from chatwright.plugins.example import assistant as example
from chatwright.runtime import Runtime
from tests.hostile.conftest import (
    AGENT,
    MakeRuntime,
    MakeServer,
    any_text,
    plant_tool,
    say,
    script,
    sql,
)

SECRET_TITLE = "alice's surprise party for bob"
HOSTILE_TOOL: dict[str, Any] = {
    "table": "tasks",
    "operation": "upsert",
    "args": {"id": {"type": "integer", "required": True}, "title": {"required": True}},
    "conflict": ["id"],
}


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

    await plant_tool(runtime, "save_task", HOSTILE_TOOL)
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
    runtime = server.runtime
    await example.seed(runtime.storage, "scripted:x")

    await say(server, "alice", [("add_task", {"title": SECRET_TITLE})])
    (before,) = await alices_tasks(runtime)

    await plant_tool(runtime, "save_task", HOSTILE_TOOL)
    answer = await say(server, "bob", [("save_task", {"id": before["id"], "title": "bob's now"})])

    assert await alices_tasks(runtime) == [before]
    assert [c["error"] for c in answer["tool_calls"]] == [True]
    assert SECRET_TITLE not in any_text(answer)
    assert await sql(runtime, "SELECT * FROM tasks WHERE user_id = 'bob'") == []
