"""A turn's tools act only while its agent is as the turn started.

A turn read its agent and tool rows when it started and kept calling them until it
ended: an approval made `required`, a tool row disabled or an agent deleted from
another process (or this one) while a turn ran, and the turn's next call still ran
unapproved, through the disabled row. The check of the turn's lease, which every
call that writes makes in its own transaction, now also compares the agent's change
counter (bumped by every change of the row or its tool rows) with the one the turn
started with; a call after a change is not run, the model is told why, and it is
in the audit log as an error. The next turn runs with the agent as it is now.

The change is made by a second runtime (another process) while the model thinks
before its second call. SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
import sqlalchemy as sa

from chatwright.plugins.example import assistant as example
from chatwright.runtime import Runtime
from tests.conftest import MakeRuntime
from tests.hostile.test_lease_lost_calls import SENT, Plugin, started

CHANGED = "was changed while this turn ran"


@pytest.fixture(autouse=True)
def _empty_outbox() -> None:
    SENT.clear()


async def tool_id(runtime: Runtime, name: str) -> int:
    (row,) = [r for r in await runtime.storage.tools.list(example.AGENT) if r.name == name]
    return row.id


async def change(admin: Runtime, how: str, name: str) -> None:
    tools = admin.storage.tools
    if how == "approval required":
        await tools.update(await tool_id(admin, name), approval="required")
    elif how == "disabled":
        await tools.update(await tool_id(admin, name), is_active=False)
    else:  # another of the agent's tool rows
        await tools.update(await tool_id(admin, "list_notes"), description="Changed.")


@pytest.mark.parametrize("how", ["approval required", "disabled", "another row edited"])
async def test_a_call_that_acts_elsewhere_is_not_made_after_a_change(
    runtimes: MakeRuntime, how: str
) -> None:
    serving = await runtimes(Plugin())
    admin = await runtimes(Plugin())
    user = f"kim-{uuid.uuid4().hex[:6]}"
    chat, turn = await started(serving, user)  # "first" is sent; the model thinks 2 s
    await change(admin, how, "send_message")
    done = await turn
    assert SENT == ["first"]
    first, second = done.tool_calls
    assert (first.result, first.error) == ("sent", False)
    assert second.error and CHANGED in second.result, second
    assert done.response == "done"
    entries = await admin.storage.audit.list(user, chat_id=chat)
    refused = [e for e in entries if e.outcome == "error"]
    assert len(refused) == 1 and CHANGED in str(refused[0].error)
    assert refused[0].args == {"text": "second"}


async def tasks(runtime: Runtime, user: str) -> list[str]:
    """The user's tasks (the run's PostgreSQL database is shared with other tests)."""
    async with runtime.storage.read() as conn:  # type: ignore[attr-defined]
        query = sa.text("SELECT title FROM tasks WHERE user_id = :u ORDER BY id")
        return [r[0] for r in await conn.execute(query, {"u": user})]


def add(title: str, **extra: Any) -> dict[str, Any]:
    return {"tool_calls": [{"name": "add_task", "args": {"title": title}}], **extra}


@pytest.mark.parametrize("how", ["approval required", "disabled"])
async def test_a_write_after_a_change_is_not_made_and_the_next_turn_follows_it(
    runtimes: MakeRuntime, how: str
) -> None:
    serving = await runtimes()
    admin = await runtimes()
    storage = serving.storage
    await example.seed(storage, "scripted:x")
    script = [add("one"), add("two", sleep=2.0), {"content": "done"}, add("three")]
    script += [{"content": "held or gone"}]
    await storage.agents.update(example.AGENT, model_settings={"responses": script})
    user = f"lou-{uuid.uuid4().hex[:6]}"
    chat = (await storage.sessions.open(user, example.AGENT, chat_id=uuid.uuid4())).chat_id
    turn = asyncio.ensure_future(serving.chat(user, example.AGENT, chat, "add two"))
    for _ in range(100):  # until "one" is written and the model thinks again
        await asyncio.sleep(0.05)
        if await tasks(admin, user) == ["one"]:
            break
    await change(admin, how, "add_task")
    done = await turn
    assert await tasks(admin, user) == ["one"]
    assert done.tool_calls[1].error and CHANGED in done.tool_calls[1].result
    # The next turn is built as the agent is now: held for approval, or no such tool.
    after = await serving.chat(user, example.AGENT, chat, "add three")
    assert await tasks(admin, user) == ["one"]
    if how == "approval required":
        assert [p.tool_name for p in after.pending] == ["add_task"]
    else:
        assert after.tool_calls[0].error and "add_task" in after.tool_calls[0].result


async def test_an_agent_row_inserted_by_plain_sql_writes_as_any_other(
    runtimes: MakeRuntime,
) -> None:
    # Its created_at is the database's default (SQLite: CURRENT_TIMESTAMP, no fraction),
    # which the check must still find equal to itself.
    runtime = await runtimes()
    storage = runtime.storage
    await example.seed(storage, "scripted:x")
    async with storage.write() as conn:  # type: ignore[attr-defined]
        await conn.execute(
            sa.text("INSERT INTO agents (name, model, system_prompt) VALUES ('raw', 'x:y', 'Hi.')")
        )
        await conn.execute(
            sa.text(
                "INSERT INTO agent_tools (agent_id, name, type, config, description) "
                "SELECT (SELECT id FROM agents WHERE name = 'raw'), name, type, config, "
                "description FROM agent_tools WHERE name = 'add_task'"
            )
        )
    settings = {"responses": [add("by sql"), {"content": "done"}]}
    await storage.agents.update("raw", model="scripted:x", model_settings=settings)
    user = f"max-{uuid.uuid4().hex[:6]}"
    chat = (await storage.sessions.open(user, "raw", chat_id=uuid.uuid4())).chat_id
    done = await runtime.chat(user, "raw", chat, "add it")
    assert [c.error for c in done.tool_calls] == [False], done.tool_calls
    assert await tasks(runtime, user) == ["by sql"]
