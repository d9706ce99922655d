"""Write safety under attack: hostile tool arguments, other users' ids, rows taken away.

A scripted model plays the attacker (it says whatever a prompt injection
could make a real model say); the runtime is the one the server and the CLI
use. SQLite and PostgreSQL.
"""

from __future__ import annotations

import sys
import uuid
from typing import Any

import pytest

from chatwright.errors import NotFoundError
from chatwright.plugins.example import assistant as example
from chatwright.runtime import Runtime
from tests.conftest import MakeRuntime

ALICE, BOB = "alice", "bob"
AGENT = example.AGENT


@pytest.fixture(autouse=True)
def _users(monkeypatch: pytest.MonkeyPatch) -> None:
    """Users of this test only: application tables outlive a test on PostgreSQL."""
    suffix = uuid.uuid4().hex[:8]
    monkeypatch.setattr(sys.modules[__name__], "ALICE", f"alice-{suffix}")
    monkeypatch.setattr(sys.modules[__name__], "BOB", f"bob-{suffix}")


async def agent(runtime: Runtime, replies: list[dict[str, Any]]) -> None:
    """The example agent on a script, every writing tool in ``required`` mode."""
    await example.seed(runtime.storage, "scripted:x")
    await runtime.storage.agents.update(AGENT, model_settings={"responses": replies})
    for row in await runtime.storage.tools.list(AGENT):
        if not row.name.startswith(("list_", "read_")):
            await runtime.storage.tools.update(row.id, approval="required")


async def chat_of(runtime: Runtime, user: str) -> uuid.UUID:
    return (await runtime.storage.sessions.open(user, AGENT, chat_id=uuid.uuid4())).chat_id


async def titles(runtime: Runtime, user: str) -> list[str]:
    rows = await runtime.storage.records.select(
        user, "tasks", {"user_id": user}, columns=["title"], order_by=[], limit=100
    )
    return sorted(str(r["title"]) for r in rows)


def calls(*pairs: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    return {"tool_calls": [{"name": n, "args": a} for n, a in pairs]}


async def test_arguments_the_tool_would_refuse_are_never_held_for_approval(
    runtimes: MakeRuntime,
) -> None:
    runtime = await runtimes()
    hostile = calls(
        ("add_task", {"title": "x", "user_id": BOB}),  # the scope column
        ("add_task", {"title": "x" * 20_000}),  # beyond the longest string
        ("update_task", {"id": "1; DROP TABLE tasks"}),
        ("delete_task", {}),
        ("update_task", {"id": 1}),  # nothing to change
        ("no_such_tool", {"id": 1}),
    )
    await agent(runtime, [hostile, {"content": "I could not."}])
    chat = await chat_of(runtime, ALICE)
    turn = await runtime.chat(ALICE, AGENT, chat, "attack")
    assert (turn.status, turn.response) == ("done", "I could not.")
    assert turn.pending == [] and await runtime.pending(ALICE) == []
    assert all(c.error for c in turn.tool_calls), turn.tool_calls
    assert await titles(runtime, ALICE) == [] and await titles(runtime, BOB) == []
    # Each in the words a tool that needs no approval gives: named, never a validator's dump.
    results = [str(c.result) for c in turn.tool_calls]
    assert results[0].startswith("Invalid arguments: user_id: unknown argument"), results[0]
    assert results[3] == "Invalid arguments: id: required", results[3]
    assert not any("pydantic" in r or "'loc'" in r for r in results), results


async def test_another_users_row_is_neither_previewed_nor_written(runtimes: MakeRuntime) -> None:
    runtime = await runtimes()
    await agent(runtime, [])
    bobs = await runtime.storage.records.insert(
        BOB, "tasks", {"user_id": BOB, "title": "bob's secret"}, returning=["id"]
    )
    script = [
        calls(("update_task", {"id": bobs["id"], "title": "pwned"})),
        {"content": "Done."},
    ]
    await runtime.storage.agents.update(AGENT, model_settings={"responses": script})
    chat = await chat_of(runtime, ALICE)
    (action,) = (await runtime.chat(ALICE, AGENT, chat, "rename")).pending
    assert action.preview is not None and (action.preview.count, action.preview.rows) == (0, ())
    turn = await runtime.decide(ALICE, action.id, True)
    assert turn.tool_calls[0].error and "not found" in str(turn.tool_calls[0].result)
    assert await titles(runtime, BOB) == ["bob's secret"]
    # Nothing of Bob's appears anywhere Alice can read.
    stored = await runtime.storage.pending.get(ALICE, action.id)
    assert stored is not None and "secret" not in str(stored.as_dict())
    assert all("secret" not in str(e.as_dict()) for e in await runtime.storage.audit.list(ALICE))


async def test_other_users_ids_and_made_up_ids_are_not_found(runtimes: MakeRuntime) -> None:
    runtime = await runtimes()
    await agent(runtime, [calls(("add_task", {"title": "milk"}))])
    alices = await chat_of(runtime, ALICE)
    bobs = await chat_of(runtime, BOB)
    (action,) = (await runtime.chat(ALICE, AGENT, alices, "milk")).pending
    for user, action_id in ((BOB, action.id), (ALICE, uuid.uuid4()), (BOB, uuid.uuid4())):
        with pytest.raises(NotFoundError):
            await runtime.decide(user, action_id, True)
    with pytest.raises(NotFoundError):
        await runtime.undo(BOB, alices)
    with pytest.raises(NotFoundError):
        await runtime.undo(ALICE, uuid.uuid4())
    # Bob's chat is not Alice's to undo, whatever it holds.
    with pytest.raises(NotFoundError):
        await runtime.undo(ALICE, bobs)
    assert await runtime.storage.audit.list(BOB) == []
    assert await runtime.pending(BOB) == []


async def test_a_tool_row_removed_before_the_decision_fails_the_call_cleanly(
    runtimes: MakeRuntime,
) -> None:
    runtime = await runtimes()
    await agent(runtime, [calls(("add_task", {"title": "milk"})), {"content": "It failed."}])
    chat = await chat_of(runtime, ALICE)
    (action,) = (await runtime.chat(ALICE, AGENT, chat, "milk")).pending
    assert action.tool_id is not None
    await runtime.storage.tools.set_active(action.tool_id, False)
    turn = await runtime.decide(ALICE, action.id, True)
    assert turn.response == "It failed."
    assert turn.tool_calls[0].error and "add_task" in str(turn.tool_calls[0].result)
    assert await titles(runtime, ALICE) == []
    stored = await runtime.storage.pending.get(ALICE, action.id)
    assert stored is not None and stored.status == "failed"


async def test_odd_values_in_held_arguments_survive_the_round_trip(
    runtimes: MakeRuntime, sql_url: str
) -> None:
    if sql_url.startswith("postgresql"):
        pytest.skip("the script itself cannot hold NUL on PostgreSQL (JSONB), so no model says it")
    runtime = await runtimes()
    title = 'nul\x00 emoji 🧪 \u2028 quote" backslash\\'
    await agent(runtime, [calls(("add_task", {"title": title})), {"content": "ok"}])
    chat = await chat_of(runtime, ALICE)
    (action,) = (await runtime.chat(ALICE, AGENT, chat, "odd")).pending
    stored = await runtime.storage.pending.get(ALICE, action.id)
    assert stored is not None
    assert "emoji 🧪" in stored.args["title"] and "\x00" not in stored.args["title"]
    await runtime.decide(ALICE, action.id, True)
    (saved,) = await titles(runtime, ALICE)
    assert saved == stored.args["title"]
