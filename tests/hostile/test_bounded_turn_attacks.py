"""Bounded turns against hostile models, values and clients.

- a scripted model that asks for 500 tool calls in one reply, or loops on tool
  calls forever with the default limits: the turn stops at the limit with a
  stored message, runs nothing beyond it, and leaves a valid history;
- a model whose tool-call arguments are not JSON: nothing runs, the user is told;
- limits of 0, negative, huge, NaN or not numbers through ``agents add/set``:
  one clear error each, and the agent is left as it was;
- a client that disconnects from a hung streamed turn: the turn still ends at
  its time limit, the human message is kept and the chat is free at once.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import httpx
import pytest
from langchain_core.messages import AIMessage, ToolMessage

from chatwright.history import to_model_input
from chatwright.plugins.example import assistant as example
from tests.harness import assert_error, ok, ok_json, run
from tests.openai_stub import OpenAIStub
from tests.test_bounded_turns import Make, new_chat, seed, stored, task_count
from tests.test_bounded_turns import make as make
from tests.test_runtime import assert_valid_history
from tests.test_turn_deadlines import (
    MARGIN,
    TURN_TIMEOUT,
    add_agent,
    open_chat,
    post_turn,
    server,
    set_model,
    stored_roles,
)

USER = "bounded-user"


async def test_500_parallel_tool_calls_run_none(make: Make) -> None:
    runtime = await make()  # the default max_tool_calls (50)
    flood = {"tool_calls": [{"name": "add_task", "args": {"title": "x"}}] * 500}
    await seed(runtime, "scripted:x", {"responses": [flood]})
    chat_id = await new_chat(runtime)
    turn = await runtime.chat(USER, example.AGENT, chat_id, "flood")
    assert turn.stopped == "max_tool_calls"
    assert await task_count(runtime) == 0
    messages = to_model_input(await stored(runtime, chat_id))
    results = [m for m in messages if isinstance(m, ToolMessage)]
    assert len(results) == 500 and all(m.text.startswith("Not run") for m in results)
    assert_valid_history(messages)


async def test_endless_tool_loop_stops_at_the_default_limit(make: Make) -> None:
    runtime = await make(turns={"max_tool_calls": 10_000})
    loop = [{"tool_calls": [{"name": "list_tasks", "args": {}}]}] * 325
    await seed(runtime, "scripted:x", {"responses": loop})
    chat_id = await new_chat(runtime)
    turn = await runtime.chat(USER, example.AGENT, chat_id, "loop")
    assert turn.stopped == "max_model_calls"
    assert len(turn.tool_calls) == runtime.settings.turns.max_model_calls
    # The chat goes on: the next turn answers.
    await runtime.storage.agents.update(
        example.AGENT, model_settings={"responses": [{"content": "done"}]}
    )
    nxt = await runtime.chat(USER + "-2", example.AGENT, await new_chat(runtime, USER + "-2"), "x")
    assert nxt.response == "done"


async def test_arguments_not_json_run_nothing(make: Make, openai_stub: OpenAIStub) -> None:
    runtime = await make()
    await seed(runtime, "openai:bad-args", openai_stub.model_settings())
    chat_id = await new_chat(runtime)
    turn = await runtime.chat(USER, example.AGENT, chat_id, "add a task")
    assert turn.stopped == "invalid_tool_call"
    assert turn.response and "nothing was run" in turn.response
    assert await task_count(runtime) == 0
    # Each call of the malformed reply, as OpenAI will be sent it, has its result.
    messages = to_model_input(await stored(runtime, chat_id))
    calls = {c["id"] for m in messages if isinstance(m, AIMessage) for c in m.invalid_tool_calls}
    results = {m.tool_call_id for m in messages if isinstance(m, ToolMessage)}
    assert calls and calls == results


@pytest.mark.usefixtures("workdir")
@pytest.mark.parametrize(
    ("option", "value", "needle"),
    [
        ("--max-model-calls", "0", "max_model_calls"),
        ("--max-model-calls", "-5", "max_model_calls"),
        ("--max-model-calls", "99999999999", "max_model_calls"),
        ("--max-tool-calls", "0", "max_tool_calls"),
        ("--max-tool-calls", "-1", "max_tool_calls"),
        ("--turn-timeout", "0", "turn_timeout"),
        ("--turn-timeout", "-1", "turn_timeout"),
        ("--turn-timeout", "1e12", "turn_timeout"),
        ("--turn-timeout", "nan", "turn_timeout"),
        ("--turn-timeout", "inf", "turn_timeout"),
        ("--history-tokens", "1", "history_tokens"),
    ],
)
def test_bad_limits_are_refused_and_change_nothing(option: str, value: str, needle: str) -> None:
    ok("db", "upgrade")
    ok("agents", "add", "kept", "--model", "offline:assistant", "--max-model-calls", "7")
    before = ok_json("agents", "show", "kept", "--json")
    assert_error(run("agents", "set", "kept", option, value), "kept", needle)
    assert ok_json("agents", "show", "kept", "--json") == before
    assert_error(run("agents", "add", "other", "--model", "offline:assistant", option, value))
    assert "other" not in ok("agents", "list").output


@pytest.mark.usefixtures("workdir")
@pytest.mark.parametrize("value", ["many", "1.5", ""])
def test_limits_that_are_not_numbers_are_usage_errors(value: str) -> None:
    ok("db", "upgrade")
    ok("agents", "add", "kept", "--model", "offline:assistant")
    result = run("agents", "set", "kept", "--max-tool-calls", value)
    assert result.exit_code == 2, result.output
    assert "--max-tool-calls" in result.stderr and "Traceback" not in result.output


async def test_client_leaving_a_hung_stream_still_frees_the_chat(
    tmp_path: Path, openai_stub: OpenAIStub
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/left.db"
    agent = f"left-{uuid.uuid4().hex[:8]}"
    await add_agent(url, agent, "openai:hang", openai_stub.model_settings())
    one = server(url, tmp_path / "srv")
    try:
        async with httpx.AsyncClient(timeout=60) as client:
            chat_id = await open_chat(client, one.url, agent)
            body = {"agent_name": agent, "session_id": chat_id, "message": "then gone"}
            async with client.stream("POST", one.url + "/api/chat/stream", json=body) as stream:
                assert stream.status_code == 200
                deadline = time.monotonic() + 30
                while not openai_stub.requests:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.05)
            # The client has left. The turn ends at its limit and frees the chat.
            await asyncio.sleep(TURN_TIMEOUT + 1)
            await set_model(url, agent, "openai:echo")
            response, took = await post_turn(client, one.url, agent, chat_id, "back")
            assert response.status_code == 200, f"{response.text}\n{one.log()}"
            assert took < MARGIN
        roles = [(r, t) for r, t in await stored_roles(url, chat_id)]
        assert roles[0] == ("human", "then gone")
        assert roles[-1] == ("ai", "echo: back")
    finally:
        one.stop()
