"""Bounded turns in the runtime: call limits, malformed tool calls, client timeouts, usage.

Driven with the real ``langchain-openai`` client against the local stub
(:mod:`tests.openai_stub`) and with the ``scripted`` model. What is checked: a
model that calls tools forever stops at ``max_model_calls`` / ``max_tool_calls``
with a stored message to the user and ``Turn.stopped`` set, the stored history
staying valid input for the next turn; a reply whose tool-call arguments are not
JSON ends the turn with a stored message naming the tool, nothing run; the model
client gives up after ``models.request_timeout`` (the stub records the hang-up);
streamed and non-streamed turns carry their usage.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from chatwright import testing
from chatwright.errors import ModelError, TurnTimeoutError
from chatwright.history import to_model_input, to_store
from chatwright.plugins.example import assistant as example
from chatwright.registry import LoadPolicy, Plugins
from chatwright.runtime import Runtime
from tests.harness import pg_storage_settings
from tests.openai_stub import OpenAIStub
from tests.test_runtime import assert_valid_history

USER = "bounded-user"
Make = Callable[..., Awaitable[Runtime]]


@pytest.fixture
async def make(tmp_path: Path) -> AsyncIterator[Make]:
    """Started runtimes with the given settings sections, closed at the end (``storage``
    keys are added to those that reach ``url``)."""
    made: list[Runtime] = []

    async def start(url: str | None = None, **sections: Any) -> Runtime:
        url = url or f"sqlite+aiosqlite:///{tmp_path}/b.db"
        plugins = Plugins.load(LoadPolicy())
        storage = {**pg_storage_settings(url), **sections.pop("storage", {})}
        settings = testing.settings(plugins, storage=storage, **sections)
        runtime = Runtime(settings, plugins)
        await runtime.start(upgrade=True)
        made.append(runtime)
        return runtime

    yield start
    for runtime in made:
        await runtime.close()


async def seed(runtime: Runtime, model: str, model_settings: dict[str, Any]) -> None:
    """The example agent (tables tasks and notes) on ``model``."""
    async with runtime.storage.write() as conn:
        for table in ("tasks", "notes"):
            await conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
    await example.seed(runtime.storage, model)
    await runtime.storage.agents.update(example.AGENT, model=model, model_settings=model_settings)


async def new_chat(runtime: Runtime, user: str = USER) -> uuid.UUID:
    session = await runtime.storage.sessions.open(user, example.AGENT, chat_id=uuid.uuid4())
    return session.chat_id


async def stored(runtime: Runtime, chat_id: uuid.UUID, user: str = USER) -> list[Any]:
    return await runtime.storage.messages.page(user, chat_id, limit=10_000)


async def task_count(runtime: Runtime) -> int:
    async with runtime.storage.read() as conn:
        return int((await conn.execute(sa.text("SELECT count(*) FROM tasks"))).scalar_one())


def add_task_forever(n: int) -> list[dict[str, Any]]:
    return [{"tool_calls": [{"name": "add_task", "args": {"title": f"t{i}"}}]} for i in range(n)]


# --------------------------------------------------------------------------- call limits


async def test_scripted_loop_of_325_calls_stops_at_max_model_calls(make: Make) -> None:
    runtime = await make(turns={"max_model_calls": 5, "max_tool_calls": 1000})
    await seed(runtime, "scripted:x", {"responses": add_task_forever(325)})
    chat_id = await new_chat(runtime)
    turn = await runtime.chat(USER, example.AGENT, chat_id, "add tasks")
    assert turn.stopped == "max_model_calls"
    assert "limit of 5 model calls" in turn.response
    assert await task_count(runtime) == 5
    messages = to_model_input(await stored(runtime, chat_id))
    assert messages[-1].text == turn.response
    assert sum(isinstance(m, AIMessage) and bool(m.tool_calls) for m in messages) == 5
    assert_valid_history(messages)


async def test_scripted_loop_stops_at_max_tool_calls_without_running_the_extra(
    make: Make,
) -> None:
    runtime = await make(turns={"max_model_calls": 100, "max_tool_calls": 3})
    await seed(runtime, "scripted:x", {"responses": add_task_forever(325)})
    chat_id = await new_chat(runtime)
    turn = await runtime.chat(USER, example.AGENT, chat_id, "add tasks")
    assert turn.stopped == "max_tool_calls"
    assert "limit of 3 tool calls" in turn.response
    assert await task_count(runtime) == 3
    messages = to_model_input(await stored(runtime, chat_id))
    not_run = [m for m in messages if isinstance(m, ToolMessage) and m.text.startswith("Not run")]
    assert len(not_run) == 1
    assert_valid_history(messages)


async def test_a_limit_of_one_tool_call_stops_a_parallel_reply_whole(make: Make) -> None:
    runtime = await make(turns={"max_tool_calls": 1})
    two = {"tool_calls": [{"name": "add_task", "args": {"title": "a"}}] * 2}
    await seed(runtime, "scripted:x", {"responses": [two]})
    chat_id = await new_chat(runtime)
    turn = await runtime.chat(USER, example.AGENT, chat_id, "add two")
    assert turn.stopped == "max_tool_calls"
    assert "calls were not run" in turn.response
    assert await task_count(runtime) == 0
    assert_valid_history(to_model_input(await stored(runtime, chat_id)))


async def test_recursion_limit_is_never_reached_first(make: Make) -> None:
    # LangGraph's own default (25 steps) is far below 40 model calls.
    runtime = await make(turns={"max_model_calls": 40, "max_tool_calls": 1000})
    await seed(runtime, "scripted:x", {"responses": add_task_forever(325)})
    turn = await runtime.chat(USER, example.AGENT, await new_chat(runtime), "add tasks")
    assert turn.stopped == "max_model_calls"
    assert await task_count(runtime) == 40


async def test_answer_within_the_limits_is_not_stopped(make: Make) -> None:
    runtime = await make(turns={"max_model_calls": 2, "max_tool_calls": 1})
    script = [*add_task_forever(1), {"content": "Added."}]
    await seed(runtime, "scripted:x", {"responses": script})
    turn = await runtime.chat(USER, example.AGENT, await new_chat(runtime), "add one")
    assert turn.stopped is None
    assert turn.response == "Added."


@pytest.mark.parametrize("stream", [False, True])
async def test_stub_loop_stops_at_the_limit_and_the_next_turn_works(
    make: Make, openai_stub: OpenAIStub, stream: bool
) -> None:
    runtime = await make(turns={"max_model_calls": 4, "max_tool_calls": 100})
    await seed(runtime, "openai:loop", openai_stub.model_settings())
    chat_id = await new_chat(runtime)
    tokens: list[str] = []

    async def on_token(text: str) -> None:
        tokens.append(text)

    turn = await runtime.chat(
        USER, example.AGENT, chat_id, "go", on_token=on_token if stream else None
    )
    assert turn.stopped == "max_model_calls"
    assert len(openai_stub.requests) == 4
    assert all(r.stream is stream for r in openai_stub.requests)
    assert turn.usage is not None and turn.usage.input_tokens > 0
    assert turn.usage.model_calls == 4  # the stop message is not one
    # The stored history is valid OpenAI input: the next turn (another model) answers.
    await runtime.storage.agents.update(example.AGENT, model="openai:echo")
    nxt = await runtime.chat(USER, example.AGENT, chat_id, "and now?")
    assert nxt.response == "echo: and now?"
    assert nxt.stopped is None
    assert_valid_history(to_model_input(await stored(runtime, chat_id)))


# --------------------------------------------------------------------------- malformed calls


@pytest.mark.parametrize("stream", [False, True])
async def test_arguments_not_json_end_the_turn_with_a_stored_message(
    make: Make, openai_stub: OpenAIStub, stream: bool
) -> None:
    runtime = await make()
    await seed(runtime, "openai:bad-args", openai_stub.model_settings())
    chat_id = await new_chat(runtime)

    async def on_token(text: str) -> None:
        pass

    turn = await runtime.chat(
        USER, example.AGENT, chat_id, "add milk", on_token=on_token if stream else None
    )
    assert turn.stopped == "invalid_tool_call"
    first_tool = openai_stub.requests[0].body["tools"][0]["function"]["name"]
    assert first_tool in turn.response and "not valid JSON" in turn.response
    assert "nothing was run" in turn.response
    assert len(openai_stub.requests) == 1
    messages = to_model_input(await stored(runtime, chat_id))
    assert messages[-1].text == turn.response
    # The next turn sends the history to OpenAI: every assistant tool call has its result.
    await runtime.storage.agents.update(example.AGENT, model="openai:echo")
    nxt = await runtime.chat(USER, example.AGENT, chat_id, "again")
    assert nxt.response == "echo: again"
    sent = openai_stub.requests[-1].body["messages"]
    called = {c["id"] for m in sent if m["role"] == "assistant" for c in m.get("tool_calls", [])}
    answered = {m["tool_call_id"] for m in sent if m["role"] == "tool"}
    assert called and called == answered


@pytest.mark.parametrize("model", ["openai:same-ids", "openai:same-ids-empty"])
async def test_calls_sharing_an_id_or_without_one_get_ids_of_their_own(
    make: Make, openai_stub: OpenAIStub, model: str
) -> None:
    """A reply whose two calls have one id (or none): each call runs once under an id of
    its own, answered by its own result, so the chat stays input a provider that holds
    ids unique takes, this turn and the next."""
    runtime = await make()
    await seed(runtime, model, openai_stub.model_settings())
    chat_id = await new_chat(runtime)
    turn = await runtime.chat(USER, example.AGENT, chat_id, "add two")
    assert turn.response == "done", turn
    assert await task_count(runtime) == 2
    history = to_model_input(await stored(runtime, chat_id))
    assert_valid_history(history)
    (reply,) = [m for m in history if isinstance(m, AIMessage) and m.tool_calls]
    ids = [c["id"] for c in reply.tool_calls]
    assert all(ids) and len(set(ids)) == 2
    results = [m for m in history if isinstance(m, ToolMessage)]
    assert sorted(m.tool_call_id for m in results) == sorted(ids)
    nxt = await runtime.chat(USER, example.AGENT, chat_id, "again")
    assert nxt.response == "done"  # the provider took the history back


# --------------------------------------------------------------------------- client options


async def test_model_client_gives_up_after_request_timeout(
    make: Make, openai_stub: OpenAIStub
) -> None:
    runtime = await make(models={"request_timeout": 0.5, "max_retries": 1}, turns={"timeout": 60})
    await seed(runtime, "openai:hang", openai_stub.model_settings())
    chat_id = await new_chat(runtime)
    started = time.monotonic()
    with pytest.raises(ModelError) as caught:
        await runtime.chat(USER, example.AGENT, chat_id, "hello")
    assert not isinstance(caught.value, TurnTimeoutError)
    assert time.monotonic() - started < 30
    assert len(openai_stub.requests) == 2  # one retry
    for request in openai_stub.requests:
        deadline = time.monotonic() + 5
        while request.closed is None and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert request.closed is not None
        assert 0.4 < request.closed - request.received < 10
        assert request.headers.get("x-stainless-read-timeout") == "0.5"
    assert [m.role for m in await stored(runtime, chat_id)] == ["human"]


async def test_model_settings_timeout_wins_over_the_setting(
    make: Make, openai_stub: OpenAIStub
) -> None:
    runtime = await make(models={"request_timeout": 300, "max_retries": 5})
    await seed(runtime, "openai:hang", openai_stub.model_settings(timeout=0.5, max_retries=0))
    with pytest.raises(ModelError):
        await runtime.chat(USER, example.AGENT, await new_chat(runtime), "hello")
    assert len(openai_stub.requests) == 1
    assert openai_stub.requests[0].headers.get("x-stainless-read-timeout") == "0.5"


@pytest.mark.parametrize("stream", [False, True])
async def test_turn_usage_comes_from_the_provider(
    make: Make, openai_stub: OpenAIStub, stream: bool
) -> None:
    runtime = await make()
    await seed(runtime, "openai:echo", openai_stub.model_settings())
    tokens: list[str] = []

    async def on_token(text: str) -> None:
        tokens.append(text)

    turn = await runtime.chat(
        USER,
        example.AGENT,
        await new_chat(runtime),
        "count me",
        on_token=on_token if stream else None,
    )
    assert turn.response == "echo: count me"
    (request,) = openai_stub.requests
    assert request.stream is stream
    if stream:
        assert request.body["stream_options"] == {"include_usage": True}
        assert "".join(tokens) == "echo: count me"
    reported = request.usage
    assert reported is not None
    assert turn.usage is not None
    assert turn.usage.input_tokens == reported["prompt_tokens"]
    assert turn.usage.output_tokens == reported["completion_tokens"]
    assert turn.usage.cached_tokens == reported["prompt_tokens_details"]["cached_tokens"]


# --------------------------------------------------------------------------- decisions


async def test_a_resumed_turn_is_bounded_and_counts_the_calls_before_it(make: Make) -> None:
    runtime = await make(turns={"timeout": 1.0, "max_model_calls": 2})
    script = [
        {"tool_calls": [{"name": "add_task", "args": {"title": "milk"}}]},
        {"content": "too late", "sleep": 30},
    ]
    await seed(runtime, "scripted:x", {"responses": script})
    for row in await runtime.storage.tools.list(example.AGENT):
        if row.name == "add_task":
            await runtime.storage.tools.update(row.id, approval="required")
    chat_id = await new_chat(runtime)
    turn = await runtime.chat(USER, example.AGENT, chat_id, "add milk")
    (action,) = turn.pending
    started = time.monotonic()
    with pytest.raises(TurnTimeoutError):
        await runtime.decide(USER, action.id, True)
    assert time.monotonic() - started < 15
    assert await task_count(runtime) == 1  # the approved call ran and is kept
    assert_valid_history(to_model_input(await stored(runtime, chat_id)))
    # The chat is free: a turn on it starts at once (a rebuilt agent replays its new script).
    await runtime.storage.agents.update(
        example.AGENT, model_settings={"responses": [{"content": "hello"}]}
    )
    started = time.monotonic()
    nxt = await runtime.chat(USER, example.AGENT, chat_id, "again")
    assert nxt.response == "hello"
    assert time.monotonic() - started < 15


async def held_add_task(runtime: Runtime) -> tuple[uuid.UUID, Any]:
    """A new chat whose turn holds ``add_task(milk)`` for approval: the chat and the action."""
    script = [{"tool_calls": [{"name": "add_task", "args": {"title": "milk"}}]}]
    await seed(runtime, "scripted:x", {"responses": [*script, {"content": "noted"}]})
    for row in await runtime.storage.tools.list(example.AGENT):
        if row.name == "add_task":
            await runtime.storage.tools.update(row.id, approval="required")
    chat_id = await new_chat(runtime)
    (action,) = (await runtime.chat(USER, example.AGENT, chat_id, "add milk")).pending
    return chat_id, action


async def test_an_approved_call_stopped_by_a_shutdown_says_the_server_stopped(
    make: Make, pg_storage: Any, pg_url: str
) -> None:
    """Not "it ran past the time limit of 300 s" after a second and a half."""
    import psycopg

    runtime = await make(pg_url, turns={"timeout": 300.0})
    _, action = await held_add_task(runtime)
    plain = pg_url.replace("postgresql+psycopg://", "postgresql://")
    async with await psycopg.AsyncConnection.connect(plain) as holder:
        await holder.execute("LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE")
        deciding = asyncio.create_task(runtime.decide(USER, action.id, True))
        for _ in range(100):
            ended = await runtime.storage.pending.get(USER, action.id)
            if ended is not None and ended.status == "approved":
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)  # the approved call waits on the lock
        assert runtime.stop_turns() >= 1
        with pytest.raises(TurnTimeoutError) as stopped:
            await deciding
        await holder.rollback()
    assert "was stopped because the server stopped" in str(stopped.value)
    assert "time limit" not in str(stopped.value)
    ended = await runtime.storage.pending.get(USER, action.id)
    assert ended is not None and ended.status == "failed"
    assert ended.result == (
        "error: add_task was stopped before it finished: the server stopped while it ran, "
        "and nothing it had not committed was written"
    )
    assert await task_count(runtime) == 0


async def test_an_approved_call_that_hangs_is_stopped_at_the_time_limit(
    make: Make, pg_storage: Any, pg_url: str
) -> None:
    """The approved call waits on a row lock held elsewhere: the agent's time limit ends it.

    On the run's PostgreSQL database emptied first (``pg_storage``): an agent row
    another test left there (one that summarises, say) would call the model more.
    """
    import psycopg

    runtime = await make(pg_url, turns={"timeout": 1.0})
    chat_id, action = await held_add_task(runtime)
    plain = pg_url.replace("postgresql+psycopg://", "postgresql://")
    async with await psycopg.AsyncConnection.connect(plain) as holder:
        await holder.execute("LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        with pytest.raises(TurnTimeoutError, match=r"add_task.*time limit of 1 s"):
            await runtime.decide(USER, action.id, True)
        assert time.monotonic() - started < 15
        await holder.rollback()
    assert await task_count(runtime) == 0  # the write was cancelled, not left behind
    ended = await runtime.storage.pending.get(USER, action.id)
    assert ended is not None and ended.status == "failed"
    history = await stored(runtime, chat_id)
    assert "ran past the time limit" in str(history[-1].content)
    assert_valid_history(to_model_input(history))
    # The chat is free at once, and its next turn sees what happened.
    await runtime.storage.agents.update(
        example.AGENT, model_settings={"responses": [{"content": "hello"}]}
    )
    nxt = await runtime.chat(USER, example.AGENT, chat_id, "again")
    assert nxt.response == "hello"


async def test_the_agent_row_limit_wins_over_the_setting(make: Make) -> None:
    runtime = await make(turns={"max_model_calls": 50})
    await seed(runtime, "scripted:x", {"responses": add_task_forever(100)})
    await runtime.storage.agents.update(example.AGENT, max_model_calls=2)
    turn = await runtime.chat(USER, example.AGENT, await new_chat(runtime), "go")
    assert turn.stopped == "max_model_calls"
    assert await task_count(runtime) == 2


# -- attacks: stored history a provider would refuse -------------------------------


def listing(call_id: str | None) -> dict[str, Any]:
    return {"name": "list_tasks", "args": {}, "id": call_id, "type": "tool_call"}


async def test_a_chat_whose_stored_replies_reuse_a_call_id_goes_on(
    make: Make, openai_stub: OpenAIStub
) -> None:
    """Attack: replies stored with one call id twice (a provider that numbers its calls
    from 0 in each reply, rows imported or stored before ids were made unique) reached a
    provider that holds ids unique, which refused every later turn of the chat."""
    runtime = await make()
    await seed(runtime, "openai:same-ids", openai_stub.model_settings())
    chat_id = await new_chat(runtime)
    old = [
        HumanMessage("list"),
        AIMessage("", tool_calls=[listing("call_0")]),
        ToolMessage("[]", tool_call_id="call_0", name="list_tasks"),
        AIMessage("nothing yet"),
        HumanMessage("list again"),
        AIMessage("", tool_calls=[listing("call_0")]),
        ToolMessage("[]", tool_call_id="call_0", name="list_tasks"),
        AIMessage("still nothing"),
    ]
    await runtime.storage.messages.append(USER, chat_id, to_store(old))
    turn = await runtime.chat(USER, example.AGENT, chat_id, "add two")
    assert turn.response == "done", turn
    sent = openai_stub.requests[-1].body["messages"]
    called = [c["id"] for m in sent if m["role"] == "assistant" for c in m.get("tool_calls") or []]
    answered = [m["tool_call_id"] for m in sent if m["role"] == "tool"]
    assert len(set(called[:2])) == 2 and answered[:2] == called[:2], (called, answered)
    # What is stored stays as it was.
    stored = await runtime.storage.messages.page(USER, chat_id, limit=100)
    ids = [c["id"] for m in stored for c in m.content["data"].get("tool_calls") or []]
    assert ids[:2] == ["call_0", "call_0"], ids


async def test_a_stored_call_without_an_id_is_sent_with_one_and_answered(
    make: Make, openai_stub: OpenAIStub
) -> None:
    """Attack: an imported reply whose call had no id was sent as it was (``"id": null``,
    no result), which providers refuse."""
    runtime = await make()
    await seed(runtime, "openai:echo", openai_stub.model_settings())
    chat_id = await new_chat(runtime)
    old = [HumanMessage("list"), AIMessage("", tool_calls=[listing(None)]), AIMessage("none")]
    await runtime.storage.messages.append(USER, chat_id, to_store(old))
    await runtime.chat(USER, example.AGENT, chat_id, "again")
    sent = openai_stub.requests[-1].body["messages"]
    called = [c["id"] for m in sent if m["role"] == "assistant" for c in m.get("tool_calls") or []]
    answered = [m["tool_call_id"] for m in sent if m["role"] == "tool"]
    assert called and all(isinstance(i, str) and i for i in called), called
    assert called == answered, (called, answered)


# -- attacks: a provider that stops, breaks or says too much ------------------------
async def stub_turn(
    make: Make, openai_stub: OpenAIStub, model: str, message: str, *, stream: bool
) -> tuple[Runtime, uuid.UUID, Any]:
    """A turn of the example agent on the stub's ``model``, streamed or not."""
    runtime = await make()
    await seed(runtime, f"openai:{model}", openai_stub.model_settings())
    chat_id = await new_chat(runtime)

    async def on_token(text: str) -> None:
        pass

    turn = await runtime.chat(
        USER, example.AGENT, chat_id, message, on_token=on_token if stream else None
    )
    return runtime, chat_id, turn


@pytest.mark.parametrize("model", ["cut-args", "ends-early"])
@pytest.mark.parametrize("stream", [False, True])
async def test_a_call_the_provider_cut_off_does_not_run(
    make: Make, openai_stub: OpenAIStub, model: str, stream: bool
) -> None:
    """Attack: a reply stopped at the provider's output limit in the middle of a tool
    call's arguments. Answered whole they are not JSON, and nothing ran; streamed,
    LangChain's lenient parser made a complete-looking call of what had come
    (``{"title": "transfer 100 EUR to acc"}``), and it ran. So did the call of a stream
    whose body simply ended there."""
    runtime, chat_id, turn = await stub_turn(make, openai_stub, model, "add a task", stream=stream)
    assert all(r.stream is stream for r in openai_stub.requests)
    assert await task_count(runtime) == 0
    assert turn.stopped == "invalid_tool_call"
    assert "cut off" in turn.response and "nothing was run" in turn.response, turn.response
    # The chat goes on: its stored history is valid input for the next turn.
    await runtime.storage.agents.update(example.AGENT, model="openai:echo")
    assert (await runtime.chat(USER, example.AGENT, chat_id, "and?")).response == "echo: and?"


async def test_a_stream_that_breaks_counts_what_it_streamed(
    make: Make, openai_stub: OpenAIStub
) -> None:
    """Attack: a streamed call that broke after 10,000 characters of reply reached the
    user counted nothing (no usage row), so budgets never saw it; it counts as a call cut
    off by the time limit does: its prompt and what it streamed."""
    runtime = await make(models={"max_retries": 0})
    await seed(runtime, "openai:breaks", openai_stub.model_settings())
    chat_id = await new_chat(runtime)
    got: list[str] = []

    async def on_token(text: str) -> None:
        got.append(text)

    with pytest.raises(ModelError) as failed:
        await runtime.chat(USER, example.AGENT, chat_id, "write a lot", on_token=on_token)
    streamed = sum(len(t) for t in got)
    assert streamed >= 5 * 1000
    spent = failed.value.usage
    assert spent is not None and spent.model_calls == 1
    assert spent.output_tokens >= streamed // 4 - 1, spent
    async with runtime.storage.read() as conn:
        query = "SELECT model_calls, output_tokens FROM token_usage"
        rows = [tuple(r) for r in await conn.execute(sa.text(query))]
    assert rows == [(1, spent.output_tokens)]
    # Answered whole, the same break comes before anything: a refused call, counted nothing.
    other = await new_chat(runtime)
    with pytest.raises(ModelError) as refused:
        await runtime.chat(USER, example.AGENT, other, "write a lot")
    assert refused.value.usage is None or refused.value.usage.model_calls == 0


async def test_a_provider_error_of_megabytes_is_cut_in_the_turns_error(
    make: Make, openai_stub: OpenAIStub
) -> None:
    """Attack: a provider's 2 MB error message was repeated whole in the turn's error (the
    502's body, the stream's error event)."""
    runtime = await make(models={"max_retries": 0})
    await seed(runtime, "openai:huge-error", openai_stub.model_settings())
    with pytest.raises(ModelError) as failed:
        await runtime.chat(USER, example.AGENT, await new_chat(runtime), "hi")
    said = str(failed.value)
    assert len(said) < 1000 and "yyyy…" in said, said[:300]
    assert said.endswith("; your message was kept, try again")


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("model", ["refuses", "filtered"])
async def test_a_refusal_or_a_filtered_reply_is_said_not_left_blank(
    make: Make, openai_stub: OpenAIStub, model: str, stream: bool
) -> None:
    """Attack: a model's refusal (its text in a field of its own) or a reply its
    provider's filter withheld ended the turn with an empty answer, and stored one."""
    from tests.openai_stub import REFUSAL

    runtime, chat_id, turn = await stub_turn(make, openai_stub, model, "something", stream=stream)
    if model == "refuses" and stream:
        # LangChain's OpenAI client drops a streamed refusal: nothing to say it with.
        assert turn.response == ""
        return
    said = REFUSAL if model == "refuses" else "(No answer: the provider stopped the reply, "
    assert turn.response.startswith(said), turn.response
    last = (await stored(runtime, chat_id))[-1]
    assert last.content["data"]["content"] == turn.response
