"""A tool that acts outside the storage is not called once its turn lost the chat.

A ``crud`` tool's write checks the turn's lease in its own transaction (see
test_lease_lost.py). A tool of another type (an HTTP request, an MCP server's
tool) acts where no transaction of chatwright's reaches: a turn that stalled past
its lease, its chat taken over or its user erased meanwhile, still sent its
request. Now the runtime reads the lease before each call of such a write tool,
and a turn that lost it makes no further call: the caller gets 409.

The lease is taken over by writing another holder into ``chat_leases``, as
another process's turn would. SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from chatwright import hookimpl
from chatwright.errors import ChatBusyError
from chatwright.plugins.example import assistant as example
from chatwright.plugins.sql import schema
from chatwright.registry import Plugins
from chatwright.runtime import Runtime
from chatwright.stores import ToolRow
from chatwright.tools import StrictTool, ToolContext, invalid_arguments
from tests.conftest import MakeRuntime
from tests.hostile.conftest import Backend, drop_app_tables, hostile_settings
from tests.hostile.test_lease_lost import expire_lease

SENT: list[str] = []


class Nothing(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str


class Outbox:
    """A tool type whose one tool "sends" a message: it keeps it in :data:`SENT` (a
    subclass: in its own ``sent``, its tools carrying its ``metadata`` too)."""

    config_model = Nothing
    sent: list[str] = SENT
    metadata: dict[str, Any] = {}

    async def build(self, row: ToolRow, config: Any, context: ToolContext) -> Any:
        async def send(text: str) -> str:
            self.sent.append(text)
            return "sent"

        return StrictTool.from_function(
            coroutine=send,
            name=row.name,
            description="send a message",
            args_schema=Message,
            handle_validation_error=invalid_arguments,
            metadata={"chatwright_writes": True, **self.metadata},
        )


class Plugin:
    @hookimpl
    def register_tool_types(self, register: Any) -> None:
        register("outbox", Outbox())


def send(text: str, **extra: Any) -> dict[str, Any]:
    return {"tool_calls": [{"name": "send_message", "args": {"text": text}}], **extra}


async def started(runtime: Runtime, user: str) -> tuple[uuid.UUID, asyncio.Future[Any]]:
    """A turn sending two messages, its model thinking 2 s before the second."""
    storage = runtime.storage
    await example.seed(storage, "scripted:x")
    await storage.tools.add(example.AGENT, "send_message", type="outbox", config={})
    script = [send("first"), send("second", sleep=2.0), {"content": "done"}]
    await storage.agents.update(example.AGENT, model_settings={"responses": script})
    chat = (await storage.sessions.open(user, example.AGENT, chat_id=uuid.uuid4())).chat_id
    turn = asyncio.ensure_future(runtime.chat(user, example.AGENT, chat, "send two"))
    for _ in range(100):  # until the first is sent and the model thinks again
        await asyncio.sleep(0.05)
        if SENT == ["first"]:
            break
    assert SENT == ["first"]
    return chat, turn


@pytest.fixture(autouse=True)
def _empty_outbox() -> None:
    SENT.clear()


async def test_a_call_after_the_chat_was_taken_over_is_not_made(runtimes: MakeRuntime) -> None:
    runtime = await runtimes(Plugin())
    user = f"gus-{uuid.uuid4().hex[:6]}"
    chat, turn = await started(runtime, user)
    leases = schema.chat_leases
    async with runtime.storage.write() as conn:  # type: ignore[attr-defined]
        # Another process's turn takes the expired lease over.
        await conn.execute(
            leases.update().where(leases.c.chat_id == chat).values(holder="another process")
        )
    with pytest.raises(ChatBusyError, match="lost the chat's turn") as lost:
        await turn
    assert lost.value.http_status == 409
    assert SENT == ["first"]


async def test_a_call_after_its_user_was_erased_is_not_made(runtimes: MakeRuntime) -> None:
    serving = await runtimes(Plugin())
    admin = await runtimes(Plugin())
    user = f"hal-{uuid.uuid4().hex[:6]}"
    chat, turn = await started(serving, user)
    await expire_lease(admin, chat)
    await admin.storage.user_data.erase(user, requested_by="test")
    with pytest.raises(ChatBusyError, match="lost the chat's turn"):
        await turn
    assert SENT == ["first"]
    # Nor did the late turn record anything of the erased user.
    after = await admin.storage.user_data.export(user)
    assert {k: len(v) for k, v in after.tables.items() if v} == {}


async def test_a_lease_that_expired_unnoticed_but_was_not_taken_still_lets_the_call_run(
    runtimes: MakeRuntime,
) -> None:
    """As for a write: the lease must be the turn's, expired or not."""
    runtime = await runtimes(Plugin())
    user = f"ida-{uuid.uuid4().hex[:6]}"
    chat, turn = await started(runtime, user)
    await expire_lease(runtime, chat)
    done = await turn
    assert done.response == "done"
    assert SENT == ["first", "second"]


async def test_a_call_while_its_turn_holds_the_chat_is_made_on_every_backend(
    backend: Backend,
) -> None:
    """The lease is read as the framework reads it: on Supabase, where the users' role
    may not read ``chat_leases``, a turn holding its chat still makes its calls."""
    plugins = Plugins.load()
    plugins.register(Plugin(), "outbox")
    runtime = Runtime(hostile_settings(backend, plugins), plugins)
    await runtime.start(upgrade=True)
    try:
        await drop_app_tables(runtime)
        storage = runtime.storage
        await example.seed(storage, "scripted:x")
        await storage.tools.add(example.AGENT, "send_message", type="outbox", config={})
        script = [send("hello"), {"content": "done"}]
        await storage.agents.update(example.AGENT, model_settings={"responses": script})
        user = f"jo-{uuid.uuid4().hex[:6]}"
        chat = (await storage.sessions.open(user, example.AGENT, chat_id=uuid.uuid4())).chat_id
        turn = await runtime.chat(user, example.AGENT, chat, "send it")
        assert [c.result for c in turn.tool_calls] == ["sent"], turn.tool_calls
        assert turn.response == "done"
        assert SENT == ["hello"]
    finally:
        await runtime.close()
