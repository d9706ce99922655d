"""Writes that would change a row's primary key.

A crud update mapping an argument to ``id`` was previewed (id 1 -> 1001) and
could be approved, then always failed with the false reason that rows were
added while it ran ("try again": it never could). A row's key is how its
preview, its audit entry and an undo find it again, so such a tool row is
refused where it is added (naming the argument), skipped where it was stored by
hand, and the record store refuses such a write from any tool type.
"""

from __future__ import annotations

import uuid

import pytest

from chatwright import catalog
from chatwright.approvals import Write
from chatwright.errors import InvalidInputError
from chatwright.plugins.example import assistant as example
from chatwright.runtime import Runtime
from tests.conftest import MakeRuntime
from tests.hostile.conftest import plant_tool

AGENT = example.AGENT
RENUMBER = {
    "table": "tasks",
    "operation": "update",
    "args": {"new_id": {"type": "integer", "column": "id", "required": True}},
    "filters": {"id": {"type": "integer", "required": True}},
}
UPSERT_ID = {
    "table": "tasks",
    "operation": "upsert",
    "args": {"id": {"type": "integer"}, "title": {"type": "string"}},
}


async def a_task(runtime: Runtime) -> tuple[str, int]:
    """The example's tables, and a task of a user of this test: the user and its id."""
    user = f"alice-{uuid.uuid4().hex[:8]}"
    await example.seed(runtime.storage, "scripted:x")
    task = await runtime.storage.records.insert(
        user, "tasks", {"user_id": user, "title": "t"}, returning=["id"]
    )
    return user, int(task["id"])


async def tasks_of(runtime: Runtime, user: str) -> list[dict[str, object]]:
    return await runtime.storage.records.select(
        user, "tasks", {"user_id": user}, columns=["id"], order_by=[], limit=10
    )


async def test_a_tool_row_writing_the_primary_key_is_refused_naming_its_argument(
    runtimes: MakeRuntime,
) -> None:
    runtime = await runtimes()
    await example.seed(runtime.storage, "scripted:x")
    before = [r.name for r in await runtime.storage.tools.list(AGENT)]
    for name, config, arg in (("renumber", RENUMBER, "new_id"), ("put", UPSERT_ID, "id")):
        with pytest.raises(InvalidInputError, match=f"config.args.{arg}.*primary key of 'tasks'"):
            await catalog.add_tool(runtime, AGENT, {"name": name, "type": "crud", "config": config})
    assert [r.name for r in await runtime.storage.tools.list(AGENT)] == before


async def test_a_stored_row_writing_the_primary_key_changes_nothing(
    runtimes: MakeRuntime,
) -> None:
    runtime = await runtimes()
    storage = runtime.storage
    user, task_id = await a_task(runtime)
    await plant_tool(runtime, "renumber", RENUMBER)
    call = {"name": "renumber", "args": {"id": task_id, "new_id": task_id + 1000}}
    script = {"responses": [{"tool_calls": [call]}, {"content": "ok"}]}
    await storage.agents.update(AGENT, model_settings=script)
    chat = (await storage.sessions.open(user, AGENT, chat_id=uuid.uuid4())).chat_id
    turn = await runtime.chat(user, AGENT, chat, "renumber it")
    (made,) = turn.tool_calls
    assert made.error and "renumber is not a valid tool" in str(made.result)
    assert await tasks_of(runtime, user) == [{"id": task_id}]


async def test_the_record_store_refuses_a_write_of_a_primary_key(runtimes: MakeRuntime) -> None:
    runtime = await runtimes()
    storage = runtime.storage
    user, task_id = await a_task(runtime)
    writes = [
        Write("tasks", "update", values={"id": 99_999}, where={"id": task_id}),
        Write(
            "tasks",
            "upsert",
            values={"id": 99_999, "user_id": user, "title": "u"},
            conflict=("user_id", "title"),
        ),
    ]
    for write in writes:
        with pytest.raises(InvalidInputError, match="'id' of 'tasks' is its primary key"):
            await storage.records.apply(user, write, cap=10)
    assert await tasks_of(runtime, user) == [{"id": task_id}]
