"""A tool that raises is its call's failure, not the turn's.

A plugin's tool that raised anything but ``ToolException`` ended the whole
turn: the other calls of the same reply were cancelled half-way (a write that
had reached its side effect was never audited nor stored), the caller got 502
"the model ... failed" with the exception's text in it, and "try again"
repeated the write. Now the exception is the result of its call: the other
calls run to their end, ``after_write`` hears of the failure, the model gets
the tool's name and the exception's class (the server's log keeps its text),
and the turn goes on. SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import BaseModel, ConfigDict

from chatwright import hookimpl
from chatwright.approvals import WriteCall, WriteOutcome
from chatwright.plugins.example import assistant as example
from chatwright.registry import LoadPolicy, Plugins
from chatwright.runtime import Runtime
from chatwright.stores import ToolRow
from chatwright.tools import StrictTool, ToolContext, invalid_arguments
from tests.conftest import MakeRuntime
from tests.hostile.serving import serving, settings_for

DONE: list[str] = []
SECRET = "password=hunter2 at /etc/private"


class Mode(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mode: str


class Text(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str


class Flaky:
    """A write tool type: ``slow`` finishes its "write" after 0.3 s, ``raise`` raises an
    exception whose text must stay in the log."""

    config_model = Mode

    async def build(self, row: ToolRow, config: Any, context: ToolContext) -> Any:
        async def run(text: str) -> str:
            if config.mode == "raise":
                raise RuntimeError(f"cannot reach the backend ({SECRET})")
            if config.mode == "huge":
                return "z" * 1_000_000
            if config.mode == "blocks":
                return [{"type": "text", "text": "y" * 100_000}]  # type: ignore[return-value]
            await asyncio.sleep(0.3)
            DONE.append(text)
            return f"wrote {text}"

        return StrictTool.from_function(
            coroutine=run,
            name=row.name,
            description="write something",
            args_schema=Text,
            handle_validation_error=invalid_arguments,
            metadata={"chatwright_writes": True},
        )


class Plugin:
    def __init__(self) -> None:
        self.outcomes: list[tuple[str, WriteOutcome]] = []

    @hookimpl
    def register_tool_types(self, register: Any) -> None:
        register("flaky", Flaky())

    @hookimpl
    def after_write(self, call: WriteCall, outcome: WriteOutcome) -> None:
        self.outcomes.append((call.tool_name, outcome))


@pytest.fixture(autouse=True)
def _nothing_done() -> None:
    DONE.clear()


async def seeded(runtime: Runtime, script: list[dict[str, Any]]) -> uuid.UUID:
    storage = runtime.storage
    await example.seed(storage, "scripted:x")
    await storage.tools.add(example.AGENT, "save", type="flaky", config={"mode": "slow"})
    await storage.tools.add(example.AGENT, "boom", type="flaky", config={"mode": "raise"})
    await storage.tools.add(example.AGENT, "dump", type="flaky", config={"mode": "huge"})
    await storage.tools.add(example.AGENT, "blocks", type="flaky", config={"mode": "blocks"})
    await storage.agents.update(
        example.AGENT, model="scripted:x", model_settings={"responses": script}
    )
    user = f"fay-{uuid.uuid4().hex[:6]}"
    return (await storage.sessions.open(user, example.AGENT, chat_id=uuid.uuid4())).chat_id


async def test_a_raising_tool_does_not_cancel_the_other_calls_of_its_reply(
    runtimes: MakeRuntime, model_inputs: list[list[Any]], caplog: pytest.LogCaptureFixture
) -> None:
    plugin = Plugin()
    runtime = await runtimes(plugin)
    both = {
        "tool_calls": [
            {"name": "save", "args": {"text": "the note"}},
            {"name": "boom", "args": {"text": "x"}},
        ]
    }
    chat = await seeded(runtime, [both, {"content": "Saved the note; the other failed."}])
    user = (await runtime.storage.sessions.chat_owner(chat))[0]  # type: ignore[index]
    with caplog.at_level(logging.ERROR, logger="chatwright.writes"):
        turn = await runtime.chat(user, example.AGENT, chat, "save it twice")
    assert turn.response == "Saved the note; the other failed."
    assert DONE == ["the note"]  # ran to its end, not cancelled at its sleep
    results = {m.name: m for m in model_inputs[-1] if m.type == "tool"}
    assert results["save"].content == "wrote the note"
    failed = results["boom"]
    assert failed.status == "error"
    assert failed.content == (
        "Error: tool boom failed (RuntimeError); what it did before it failed is not known, "
        "and the server's log has the details"
    )
    # The exception's text is in the log, and nowhere the model or the caller sees.
    assert SECRET in caplog.text
    assert SECRET not in repr(turn) and SECRET not in repr(model_inputs)
    # Both writes were heard, the failure as one.
    heard = {name: outcome.ok for name, outcome in plugin.outcomes}
    assert heard == {"save": True, "boom": False}
    # Stored as they ran: the next turn reads both results.
    page = await runtime.storage.messages.page(user, chat, limit=20)
    assert [m.role for m in page] == ["human", "ai", "tool", "tool", "ai"]


async def test_a_raising_tool_over_http_is_a_reply_not_a_502(tmp_path: Path) -> None:
    """Before: 502 "the model of agent ... failed: ... (its text)"."""
    plugins = Plugins.load(LoadPolicy())
    plugins.register(Plugin(), "flaky")
    async with serving(settings_for(tmp_path, plugins), plugins) as served:
        script = [{"tool_calls": [{"name": "boom", "args": {"text": "x"}}]}, {"content": "No."}]
        await seeded(served.runtime, script)
        async with httpx.AsyncClient(base_url=served.url, timeout=60) as client:
            opened = await client.post("/api/sessions", json={"agent_name": example.AGENT})
            assert opened.status_code == 200, opened.text
            chat = opened.json()["chat_id"]
            body = {"agent_name": example.AGENT, "chat_id": chat, "message": "go"}
            answer = await client.post("/api/chat", json=body)
    assert answer.status_code == 200, answer.text
    assert answer.json()["response"] == "No."
    assert SECRET not in answer.text
    assert "RuntimeError" in answer.text  # the call's result names what failed


@pytest.mark.parametrize(
    ("tool", "start", "length"), [("dump", "zzz", 1_000_000), ("blocks", "yyy", 100_000)]
)
async def test_a_plugin_tools_long_result_is_cut_to_max_result_chars(
    runtimes: MakeRuntime, model_inputs: list[list[Any]], tool: str, start: str, length: int
) -> None:
    """Before: a tool type that did not cap its results itself had a million characters
    stored and sent to the model at every later turn of the chat; a result of content
    blocks was missed by the first fix."""
    runtime = await runtimes(Plugin())
    script = [{"tool_calls": [{"name": tool, "args": {"text": "x"}}]}, {"content": "Long."}]
    chat = await seeded(runtime, script)
    user = (await runtime.storage.sessions.chat_owner(chat))[0]  # type: ignore[index]
    await runtime.chat(user, example.AGENT, chat, "dump it")
    limit = runtime.settings.tools.max_result_chars
    (sent,) = [m for m in model_inputs[-1] if m.type == "tool"]
    assert isinstance(sent.content, str) and len(sent.content) <= limit
    assert sent.content.startswith(start)
    assert sent.content.endswith(
        f"[cut: the result had {length} characters, tools.max_result_chars is {limit}]"
    )
    page = await runtime.storage.messages.page(user, chat, limit=20)
    (stored,) = [m for m in page if m.role == "tool"]
    assert stored.content["data"]["content"] == sent.content


class Rival:
    """A second plugin registering the tool type ``flaky`` too."""

    @hookimpl
    def register_tool_types(self, register: Any) -> None:
        register("flaky", Flaky())


async def test_a_tool_type_two_plugins_register_leaves_the_other_tools_working(
    runtimes: MakeRuntime,
) -> None:
    """Before: "tool type 'flaky' is registered by both plugin ... and plugin ..." for
    every agent's every turn, crud tools included."""
    runtime = await runtimes(Plugin(), Rival())
    script = [{"tool_calls": [{"name": "add_task", "args": {"title": "milk"}}]}, {"content": "Ok."}]
    chat = await seeded(runtime, script)
    user = (await runtime.storage.sessions.chat_owner(chat))[0]  # type: ignore[index]
    turn = await runtime.chat(user, example.AGENT, chat, "add milk")
    assert turn.response == "Ok." and "created" in turn.tool_calls[0].result
    built = await runtime.agent_for(user, example.AGENT)
    reasons = {p.tool: p.reason for p in built.problems}
    assert set(reasons) == {"save", "boom", "dump", "blocks"}
    assert all("registered by both plugin" in r for r in reasons.values())


@pytest.mark.parametrize("kind", ["chatwright", "interrupt", "cancelled", "plain"])
async def test_what_must_stop_a_run_goes_through_the_fault_catcher(kind: str) -> None:
    from types import SimpleNamespace

    from langgraph.errors import GraphInterrupt

    from chatwright.errors import ChatBusyError
    from chatwright.writes import catch_tool_faults

    raised: BaseException = {
        "chatwright": ChatBusyError("the turn lost its chat"),
        "interrupt": GraphInterrupt(()),
        "cancelled": asyncio.CancelledError(),
        "plain": KeyError("x"),
    }[kind]

    async def handler(request: Any) -> Any:
        raise raised

    request = SimpleNamespace(tool_call={"name": "t", "args": {}, "id": "c1"})
    middleware = catch_tool_faults(100)
    if kind == "plain":
        result = await middleware.awrap_tool_call(request, handler)
        assert result.status == "error" and "(KeyError)" in result.content
        return
    with pytest.raises(type(raised)):
        await middleware.awrap_tool_call(request, handler)
