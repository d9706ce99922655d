"""Chat turns in the runtime: isolation, serialisation, persistence, the executor cache.

Most tests drive :meth:`Runtime.chat` with one of two fake chat models:

``echo`` (an inline plugin from :mod:`tests.harness`)
    replies with a JSON object holding the system prompt and the human texts it
    was given, and the type of every message, so a test can see exactly what
    history a turn received. It sleeps a little first, so that concurrent turns
    really interleave.
``scripted`` (bundled)
    replays AI messages, tool calls included, so that tools run for real.

What is checked: concurrent chats of one user and agent never see each other's
messages and share one built agent; turns of one chat run one at a time; a turn
with tool calls is stored whole, in order, in one append, and reloads as valid
model input; only the history window is read, with one indexed LIMIT query,
even from a chat of 10,000 messages; config changes (tool rows through plain
SQL, the system prompt, customizations, memory) show on the next turn, and only
the first two rebuild; single flight of the cache; a failing model keeps the
human message and every complete tool exchange; chats of other users or agents
are not found; the eviction policies; the offline quickstart; and, on SQLite and
PostgreSQL, that a scripted model cannot reach another user's rows.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatResult
from sqlalchemy import event

from chatwright import testing
from chatwright.cache import ExecutorCache, Key
from chatwright.errors import ModelError, NotFoundError, StorageError, UnknownNameError
from chatwright.history import to_model_input, to_store
from chatwright.plugins.eviction import IdleSessionPolicy, LRUPolicy, TTLPolicy
from chatwright.plugins.example import assistant as example
from chatwright.plugins.models.scripted import ScriptedChatModel
from chatwright.registry import LoadPolicy, Plugins
from chatwright.runtime import Runtime, Turn
from chatwright.settings import Settings
from chatwright.stores import Message
from tests.harness import EchoModels, Recorder, pg_storage_settings

USER = "alice"
ECHO = "echo"
ECHO_PROMPT = "You echo. Memory: {memory}. Instructions: {custom_instructions}"


def seen(turn: Turn) -> dict[str, Any]:
    """What the echo model was given in a turn."""
    data: dict[str, Any] = json.loads(turn.response)
    return data


# --------------------------------------------------------------------------- fixtures


Make = Callable[..., Awaitable[tuple[Runtime, Recorder]]]


@pytest.fixture
async def make_runtime(tmp_path: Path) -> AsyncIterator[Make]:
    """Started runtimes (with the echo model and an eviction recorder), closed at the end."""
    made: list[Runtime] = []

    async def make(url: str | None = None, **settings: Any) -> tuple[Runtime, Recorder]:
        url = url or f"sqlite+aiosqlite:///{tmp_path}/r.db"
        plugins = Plugins.load(LoadPolicy())
        plugins.register(EchoModels(delay=0.01), "test-echo")
        recorder = Recorder()
        plugins.register(recorder, "test-evictions")
        storage = pg_storage_settings(url)
        runtime = Runtime(testing.settings(plugins, storage=storage, **settings), plugins)
        await runtime.start(upgrade=True)
        made.append(runtime)
        return runtime, recorder

    yield make
    for runtime in made:
        await runtime.close()


@pytest.fixture
async def rt(make_runtime: Make) -> tuple[Runtime, Recorder]:
    runtime, recorder = await make_runtime()
    await runtime.storage.agents.create(ECHO, system_prompt=ECHO_PROMPT, model="echo:x")
    return runtime, recorder


@pytest.fixture
def runtime(rt: tuple[Runtime, Recorder]) -> Runtime:
    return rt[0]


async def new_chat(runtime: Runtime, user: str, agent: str) -> uuid.UUID:
    session = await runtime.storage.sessions.open(user, agent, chat_id=uuid.uuid4())
    return session.chat_id


async def stored(runtime: Runtime, user: str, chat_id: uuid.UUID) -> list[Message]:
    return await runtime.storage.messages.page(user, chat_id, limit=100_000)


async def seed_scripted(runtime: Runtime, responses: list[dict[str, Any]]) -> None:
    """The example (tables tasks and notes, agent assistant) on the scripted model."""
    async with runtime.storage.write() as conn:
        for table in ("tasks", "notes"):
            await conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
    await example.seed(runtime.storage, "scripted:x")
    await runtime.storage.agents.update(example.AGENT, model_settings={"responses": responses})


async def rows(runtime: Runtime, sql: str, **params: Any) -> list[dict[str, Any]]:
    async with runtime.storage.read() as conn:
        result = await conn.execute(sa.text(sql), params)
        return [dict(r._mapping) for r in result]


def assert_valid_history(messages: list[BaseMessage]) -> None:
    """Every tool result follows the call that asked for it, and every call has its result."""
    pending: set[str] = set()
    for message in messages:
        if isinstance(message, AIMessage):
            assert not pending, f"tool calls {pending} have no result before the next AI message"
            pending = {str(c["id"]) for c in message.tool_calls}
        elif isinstance(message, ToolMessage):
            assert message.tool_call_id in pending, "a tool result without its call"
            pending.discard(message.tool_call_id)
        else:
            assert not pending, f"tool calls {pending} have no result"
    assert not pending, f"dangling tool calls {pending}"


def call(name: str, **args: Any) -> dict[str, Any]:
    return {"name": name, "args": args}


# --------------------------------------------------------------------------- 1. isolation


async def test_concurrent_chats_of_one_user_and_agent_stay_apart(runtime: Runtime) -> None:
    first, second = await new_chat(runtime, USER, ECHO), await new_chat(runtime, USER, ECHO)
    sent: dict[uuid.UUID, list[str]] = {first: [], second: []}
    for n in range(4):
        texts = {first: f"first chat, message {n}", second: f"second chat, message {n}"}
        for chat_id, text in texts.items():
            sent[chat_id].append(text)
        turns = await asyncio.gather(
            *(runtime.chat(USER, ECHO, chat_id, text) for chat_id, text in texts.items())
        )
        for turn in turns:
            # Each reply holds exactly its own chat's messages, in order.
            assert seen(turn)["humans"] == sent[turn.chat_id]
    for chat_id, texts in sent.items():
        humans = [m.content["data"]["content"] for m in await stored(runtime, USER, chat_id)]
        assert humans[::2] == texts
    # Both chats ran on one built agent.
    assert runtime.cache.stats.builds == 1
    assert len(runtime.cache) == 1


# --------------------------------------------------------------------------- 2. serialisation


async def test_turns_on_one_chat_are_serialised(runtime: Runtime) -> None:
    chat_id = await new_chat(runtime, USER, ECHO)
    texts = [f"message {n}" for n in range(6)]
    turns = await asyncio.gather(*(runtime.chat(USER, ECHO, chat_id, t) for t in texts))

    messages = await stored(runtime, USER, chat_id)
    assert [m.role for m in messages] == ["human", "ai"] * len(texts)
    humans = [m.content["data"]["content"] for m in messages[::2]]
    assert sorted(humans) == sorted(texts)
    # Each stored reply saw every human message stored before it and nothing else:
    # no turn read the history while another was between its read and its append.
    for i, reply in enumerate(messages[1::2]):
        assert json.loads(reply.content["data"]["content"])["humans"] == humans[: i + 1]
    # And each turn's own answer ends with its own message.
    for text, turn in zip(texts, turns, strict=True):
        assert seen(turn)["humans"][-1] == text


# --------------------------------------------------------------------------- 3. persistence


async def test_turn_with_tool_call_is_stored_step_by_step(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The human message when the turn starts, the tool exchange as it completes,
    # the reply when the turn ends (with the touch).
    await seed_scripted(
        runtime, [{"tool_calls": [call("add_task", title="milk")]}, {"content": "Added."}]
    )
    chat_id = await new_chat(runtime, USER, example.AGENT)
    writes: list[tuple[str, int]] = []
    turns = runtime.turns
    begin, append, finish = turns.begin, turns.append, turns.finish

    async def spy_begin(*args: Any, **kwargs: Any) -> Any:
        writes.append(("begin", 1))
        return await begin(*args, **kwargs)

    async def spy_append(start: Any, new: Sequence[Any]) -> None:
        writes.append(("append", len(new)))
        await append(start, new)

    async def spy_finish(start: Any, new: Sequence[Any], *, touch: bool, **kwargs: Any) -> Any:
        writes.append(("finish" if touch else "finish untouched", len(new)))
        return await finish(start, new, touch=touch, **kwargs)

    monkeypatch.setattr(turns, "begin", spy_begin)
    monkeypatch.setattr(turns, "append", spy_append)
    monkeypatch.setattr(turns, "finish", spy_finish)
    turn = await runtime.chat(USER, example.AGENT, chat_id, "please add milk")

    assert writes == [("begin", 1), ("append", 2), ("finish", 1)]
    messages = await stored(runtime, USER, chat_id)
    assert [m.role for m in messages] == ["human", "ai", "tool", "ai"]
    assert messages[0].content["data"]["content"] == "please add milk"
    assert [c["name"] for c in messages[1].content["data"]["tool_calls"]] == ["add_task"]
    assert messages[3].content["data"]["content"] == "Added."

    reloaded = to_model_input(messages)
    assert [type(m) for m in reloaded] == [HumanMessage, AIMessage, ToolMessage, AIMessage]
    assert_valid_history(reloaded)
    tool_message = reloaded[2]
    assert isinstance(tool_message, ToolMessage)
    assert tool_message.tool_call_id == reloaded[1].tool_calls[0]["id"]  # type: ignore[attr-defined]

    assert turn.response == "Added."
    [record] = turn.tool_calls
    assert record.name == "add_task"
    assert record.args == {"title": "milk"}
    assert not record.error
    assert record.result["created"]["title"] == "milk"
    task = await rows(runtime, "SELECT id, user_id, title FROM tasks")
    assert task == [{"id": record.result["created"]["id"], "user_id": USER, "title": "milk"}]


# --------------------------------------------------------------------------- 4. the window


async def test_history_window_is_respected_and_begins_with_a_human(runtime: Runtime) -> None:
    await runtime.storage.agents.update(ECHO, history_window=4)
    chat_id = await new_chat(runtime, USER, ECHO)
    for n in range(5):
        turn = await runtime.chat(USER, ECHO, chat_id, f"t{n}")
    # The last 4 stored messages (2 turns) plus the new one.
    assert seen(turn)["humans"] == ["t2", "t3", "t4"]
    assert seen(turn)["types"] == ["system", "human", "ai", "human", "ai", "human"]

    # An odd window starts inside a turn: the reply that opens it is dropped.
    await runtime.storage.agents.update(ECHO, history_window=3)
    turn = await runtime.chat(USER, ECHO, chat_id, "t5")
    assert seen(turn)["types"] == ["system", "human", "ai", "human"]
    assert seen(turn)["humans"] == ["t4", "t5"]


async def test_window_trims_a_turn_cut_in_the_middle_of_a_tool_exchange(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = [{"tool_calls": [call("add_task", title="a")]}, {"content": "done a"}] * 3
    await seed_scripted(runtime, script)
    await runtime.storage.agents.update(example.AGENT, history_window=6)
    given: list[list[BaseMessage]] = []
    original = ScriptedChatModel._agenerate

    async def recording(
        self: ScriptedChatModel, messages: list[BaseMessage], *a: Any, **k: Any
    ) -> ChatResult:
        given.append(list(messages))
        return await original(self, messages, *a, **k)

    monkeypatch.setattr(ScriptedChatModel, "_agenerate", recording)
    chat_id = await new_chat(runtime, USER, example.AGENT)
    for n in range(3):
        await runtime.chat(USER, example.AGENT, chat_id, f"turn {n}")
    # The third turn's first model call: the window (last 6 of 8 stored) starts at the
    # first turn's tool result, which must not reach the model without its call.
    first_call_of_third_turn = given[4]
    assert [m.type for m in first_call_of_third_turn] == [
        "system",
        "human",
        "ai",
        "tool",
        "ai",
        "human",
    ]
    assert_valid_history(first_call_of_third_turn[1:])


async def test_history_read_fetches_only_the_window_of_10000_messages(
    runtime: Runtime,
) -> None:
    window = 20
    await runtime.storage.agents.update(ECHO, history_window=window)
    chat_id = await new_chat(runtime, USER, ECHO)
    history: list[BaseMessage] = []
    for n in range(5_000):
        history += [HumanMessage(f"old {n}"), AIMessage(f"reply {n}")]
    await runtime.storage.messages.append(USER, chat_id, to_store(history))
    count = await rows(runtime, "SELECT count(*) AS n FROM chat_messages")
    assert count == [{"n": 10_000}]

    statements: list[tuple[str, Any]] = []

    def record(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
    ) -> None:
        statements.append((statement, parameters))

    engine = runtime.storage.engine.sync_engine  # type: ignore[attr-defined]
    event.listen(engine, "before_cursor_execute", record)
    try:
        turn = await runtime.chat(USER, ECHO, chat_id, "new")
    finally:
        event.remove(engine, "before_cursor_execute", record)

    # The window is the last 20 messages: ten exchanges, then the new message.
    assert seen(turn)["humans"] == [f"old {n}" for n in range(4_990, 5_000)] + ["new"]
    reads = [
        (s, p)
        for s, p in statements
        if "FROM chat_messages" in s and s.lstrip().upper().startswith("SELECT")
    ]
    assert len(reads) == 1, reads
    statement, params = reads[0]
    assert "LIMIT" in statement.upper()
    assert window in tuple(params)
    assert "ORDER BY chat_messages.id DESC" in statement
    # No statement anywhere reads chat_messages without a LIMIT.
    for s, _ in statements:
        if "FROM chat_messages" in s:
            assert "LIMIT" in s.upper(), s
    # And the window walks the (chat_id, id) index backwards and stops: no scan, no
    # sort of the whole chat. (The statement is the turn's reads in one: the sorts it
    # has are of its few result rows, outside the window's subquery.)
    async with runtime.storage.read() as conn:  # type: ignore[attr-defined]
        plan = (await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", tuple(params))).all()
    details = " ".join(str(row[-1]) for row in plan)
    assert "SCAN chat_messages" not in details, details
    walk = "SEARCH chat_messages USING INDEX ix_chat_messages_chat_id_id (chat_id=? AND id>?)"
    (subquery,) = [row[1] for row in plan if row[-1] == walk]
    assert str(next(row[-1] for row in plan if row[0] == subquery)).startswith("CO-ROUTINE")
    assert not [row for row in plan if row[1] == subquery and "TEMP B-TREE" in row[-1]], plan


# --------------------------------------------------------------------------- 5. config changes


async def test_config_changes_show_on_the_next_turn_and_rebuild_only_when_needed(
    rt: tuple[Runtime, Recorder],
) -> None:
    runtime, recorder = rt
    storage = runtime.storage
    # (a) a scripted agent with one tool; its script calls add_note, which it lacks.
    await seed_scripted(runtime, [])
    await storage.agents.create(
        "scripty",
        system_prompt="",
        model="scripted:x",
        model_settings={
            "responses": [{"tool_calls": [call("add_note", body="hello")]}, {"content": "noted"}]
        },
    )
    list_notes = next(t for t in example.TOOLS if t["name"] == "list_notes")
    await storage.tools.add("scripty", "list_notes", type="crud", config=list_notes["config"])
    scripty = await new_chat(runtime, USER, "scripty")
    before = await runtime.chat(USER, "scripty", scripty, "note hello")
    assert before.tool_calls[0].error
    assert "add_note is not a valid tool" in str(before.tool_calls[0].result)
    assert runtime.cache.stats.builds == 1

    add_note = next(t for t in example.TOOLS if t["name"] == "add_note")
    async with storage.write() as conn:  # type: ignore[attr-defined]
        await conn.execute(
            sa.text(
                "INSERT INTO agent_tools (agent_id, name, type, description, config) "
                "VALUES ((SELECT id FROM agents WHERE name = 'scripty'), 'add_note', 'crud', "
                "'Write a note.', :config)"
            ),
            {"config": json.dumps(add_note["config"])},
        )
    after = await runtime.chat(USER, "scripty", scripty, "note hello again")
    [record] = after.tool_calls
    assert not record.error, record.result
    assert record.result["created"]["body"] == "hello"
    assert after.response == "noted"
    assert await rows(runtime, "SELECT user_id, body FROM notes") == [
        {"user_id": USER, "body": "hello"}
    ]
    assert runtime.cache.stats.builds == 2
    assert recorder.evicted == [("scripty", "config-changed")]

    # (b) the system prompt, edited in the store, is what the model sees next turn.
    chat_id = await new_chat(runtime, USER, ECHO)
    first = await runtime.chat(USER, ECHO, chat_id, "hi")
    assert seen(first)["system"] == "You echo. Memory: (nothing yet). Instructions:"
    builds = runtime.cache.stats.builds
    await storage.agents.update(ECHO, system_prompt="Version 2. {memory} | {custom_instructions}")
    second = await runtime.chat(USER, ECHO, chat_id, "hi again")
    assert seen(second)["system"] == "Version 2. (nothing yet) |"
    assert runtime.cache.stats.builds == builds + 1
    assert recorder.evicted[1:] == [(ECHO, "config-changed")]

    # (c) customizations and memory show next turn, without a rebuild.
    builds = runtime.cache.stats.builds
    await storage.customizations.put(USER, ECHO, "style", "Answer in French.")
    third = await runtime.chat(USER, ECHO, chat_id, "bonjour")
    assert seen(third)["system"] == "Version 2. (nothing yet) | Answer in French."
    await storage.memories.put(USER, ECHO, "Likes tea.")
    fourth = await runtime.chat(USER, ECHO, chat_id, "tea?")
    assert seen(fourth)["system"] == "Version 2. Likes tea. | Answer in French."
    # Another user's memory and instructions stay theirs.
    other = await new_chat(runtime, "bob", ECHO)
    bobs = await runtime.chat("bob", ECHO, other, "hi")
    assert seen(bobs)["system"] == "Version 2. (nothing yet) |"
    # One build serves both users; user data changes neither it nor the version.
    assert runtime.cache.stats.builds == builds
    assert len(recorder.evicted) == 2


# --------------------------------------------------------------------------- 6. single flight


async def test_concurrent_first_turns_build_once(runtime: Runtime) -> None:
    chats = [await new_chat(runtime, USER, ECHO) for _ in range(10)]
    turns = await asyncio.gather(*(runtime.chat(USER, ECHO, c, f"hi {c}") for c in chats))
    stats = runtime.cache.stats
    assert stats.builds == 1
    assert stats.build_failures == 0
    assert stats.hits + stats.misses == 10
    assert stats.misses >= 1
    for chat_id, turn in zip(chats, turns, strict=True):
        assert seen(turn)["humans"] == [f"hi {chat_id}"]


def fake_cache(
    build: Callable[[Key], Awaitable[Any]],
    policy: Any = None,
    clock: Callable[[], float] | None = None,
) -> tuple[ExecutorCache, list[tuple[Key, str]]]:
    evicted: list[tuple[Key, str]] = []
    cache = ExecutorCache(
        build,
        policy or LRUPolicy(100),
        on_evict=lambda key, reason: evicted.append((key, reason)),
        clock=clock or (lambda: 0.0),
    )
    return cache, evicted


async def test_cache_single_flight_builds_once_for_concurrent_gets() -> None:
    calls: list[Key] = []

    async def build(key: Key) -> object:
        calls.append(key)
        await asyncio.sleep(0.05)
        return object()

    cache, _ = fake_cache(build)
    entries = await asyncio.gather(*(cache.get(("u", "a"), "v1") for _ in range(10)))
    assert calls == [("u", "a")]
    assert all(e is entries[0] for e in entries)
    assert cache.stats.builds == 1
    assert cache.stats.misses == 10
    assert (await cache.get(("u", "a"), "v1")) is entries[0]
    assert cache.stats.hits == 1
    # A new version builds again and replaces the entry.
    newer = await cache.get(("u", "a"), "v2")
    assert newer.value is not entries[0].value
    assert len(calls) == 2
    assert cache.stats.evictions == {"config-changed": 1}


async def test_cache_failed_build_reaches_every_waiter_and_is_retried() -> None:
    calls = 0

    async def build(key: Key) -> str:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.02)
        if calls == 1:
            raise RuntimeError("build broke")
        return "built"

    cache, _ = fake_cache(build)
    results = await asyncio.gather(
        *(cache.get(("u", "a"), "v1") for _ in range(5)), return_exceptions=True
    )
    assert all(isinstance(r, RuntimeError) and str(r) == "build broke" for r in results)
    assert calls == 1
    assert cache.stats.build_failures == 1
    assert ("u", "a") not in cache
    entry = await cache.get(("u", "a"), "v1")
    assert entry.value == "built"
    assert calls == 2
    assert cache.stats.builds == 1


async def test_cache_cancelled_waiter_does_not_cancel_the_build() -> None:
    release = asyncio.Event()
    finished: list[bool] = []

    async def build(key: Key) -> str:
        await release.wait()
        finished.append(True)
        return "built"

    cache, _ = fake_cache(build)
    quitter = asyncio.create_task(cache.get(("u", "a"), "v1"))
    stayer = asyncio.create_task(cache.get(("u", "a"), "v1"))
    await asyncio.sleep(0.01)
    quitter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await quitter
    release.set()
    entry = await asyncio.wait_for(stayer, 1)
    assert entry.value == "built"
    assert finished == [True]
    assert cache.stats.builds == 1
    assert cache.peek(("u", "a")) is entry


# --------------------------------------------------------------------------- 7. model failures


async def test_model_failure_keeps_the_human_message_and_the_next_turn_works(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = runtime.storage
    await storage.agents.create(
        "flaky", system_prompt="", model="scripted:x", model_settings={"fail": "boom"}
    )
    chat_id = await new_chat(runtime, USER, "flaky")
    with pytest.raises(ModelError) as caught:
        await runtime.chat(USER, "flaky", chat_id, "are you there?")
    assert "'flaky'" in str(caught.value)
    assert "boom" in str(caught.value)
    messages = await stored(runtime, USER, chat_id)
    assert [(m.role, m.content["data"]["content"]) for m in messages] == [
        ("human", "are you there?")
    ]

    given: list[list[BaseMessage]] = []
    original = ScriptedChatModel._agenerate

    async def recording(
        self: ScriptedChatModel, messages: list[BaseMessage], *a: Any, **k: Any
    ) -> ChatResult:
        given.append(list(messages))
        return await original(self, messages, *a, **k)

    monkeypatch.setattr(ScriptedChatModel, "_agenerate", recording)
    await storage.agents.update("flaky", model_settings={"responses": [{"content": "ok"}]})
    turn = await runtime.chat(USER, "flaky", chat_id, "hello?")
    assert turn.response == "ok"
    [model_input] = given
    assert [(m.type, m.text) for m in model_input[1:]] == [
        ("human", "are you there?"),
        ("human", "hello?"),
    ]
    assert [m.role for m in await stored(runtime, USER, chat_id)] == ["human", "human", "ai"]


async def test_failure_after_a_tool_exchange_keeps_the_exchange(runtime: Runtime) -> None:
    # One tool call, then the script runs out: the second model call fails.
    await seed_scripted(runtime, [{"tool_calls": [call("add_task", title="milk")]}])
    chat_id = await new_chat(runtime, USER, example.AGENT)
    with pytest.raises(ModelError, match="no reply left"):
        await runtime.chat(USER, example.AGENT, chat_id, "add milk")
    messages = await stored(runtime, USER, chat_id)
    assert [m.role for m in messages] == ["human", "ai", "tool"]
    reloaded = to_model_input(messages)
    assert_valid_history(reloaded)
    assert reloaded[2].status == "success"  # type: ignore[attr-defined]
    assert await rows(runtime, "SELECT user_id, title FROM tasks") == [
        {"user_id": USER, "title": "milk"}
    ]


async def test_model_that_cannot_be_built_keeps_the_human_message(runtime: Runtime) -> None:
    await runtime.storage.agents.create("unbuilt", system_prompt="", model="no-such-provider:x")
    chat_id = await new_chat(runtime, USER, "unbuilt")
    with pytest.raises(Exception, match="no-such-provider"):
        await runtime.chat(USER, "unbuilt", chat_id, "hello")
    assert [m.role for m in await stored(runtime, USER, chat_id)] == ["human"]


# --------------------------------------------------------------------------- 8. not found


async def test_other_users_chats_other_agents_chats_and_unknown_agents_are_not_found(
    runtime: Runtime,
) -> None:
    storage = runtime.storage
    await storage.agents.create("other", system_prompt="", model="echo:x")
    alices = await new_chat(runtime, USER, ECHO)

    with pytest.raises(NotFoundError):
        await runtime.chat("bob", ECHO, alices, "let me in")
    with pytest.raises(NotFoundError):
        await runtime.chat(USER, "other", alices, "wrong agent")
    with pytest.raises(NotFoundError):
        await runtime.chat(USER, ECHO, uuid.uuid4(), "no such chat")
    assert await stored(runtime, USER, alices) == []
    assert await stored(runtime, "bob", alices) == []

    ghosts = await new_chat(runtime, USER, "ghost")  # a session for an agent that never was
    with pytest.raises(NotFoundError, match="ghost"):
        await runtime.chat(USER, "ghost", ghosts, "anyone?")
    assert await stored(runtime, USER, ghosts) == []
    with pytest.raises(NotFoundError, match="ghost"):
        await runtime.agent_for(USER, "ghost")
    assert runtime.cache.stats.builds == 0
    assert len(runtime.cache) == 0


# --------------------------------------------------------------------------- 9. eviction


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def built(key: Key) -> str:
    return f"agent for {key}"


A, B, C = "alpha", "beta", "gamma"


async def test_lru_policy_evicts_the_least_recently_used_beyond_max_entries() -> None:
    cache, evicted = fake_cache(built, LRUPolicy(2))
    await cache.get(A, "1")
    await cache.get(B, "1")
    await cache.get(A, "1")  # A is now the most recently used
    await cache.get(C, "1")
    assert evicted == [(B, "capacity")]
    assert A in cache
    assert C in cache
    assert B not in cache
    assert cache.stats.evictions == {"capacity": 1}
    assert cache.sweep(set()) == []  # lru ignores sessions


async def test_idle_session_policy_evicts_keys_without_an_active_session() -> None:
    cache, evicted = fake_cache(built, IdleSessionPolicy(10))
    for key in (A, B, C):
        await cache.get(key, "1")
    assert cache.sweep({A, ("nobody", "x")}) == [(B, "idle-session"), (C, "idle-session")]
    assert evicted == [(B, "idle-session"), (C, "idle-session")]
    assert list(cache._entries) == [A]
    assert cache.stats.evictions == {"idle-session": 2}
    # Still bounded by max_entries between sweeps.
    small, evicted_small = fake_cache(built, IdleSessionPolicy(1))
    await small.get(A, "1")
    await small.get(B, "1")
    assert evicted_small == [(A, "capacity")]


async def test_ttl_policy_evicts_entries_unused_longer_than_ttl() -> None:
    clock = Clock()
    cache, evicted = fake_cache(built, TTLPolicy(10, ttl=100), clock)
    await cache.get(A, "1")
    clock.now = 50
    await cache.get(B, "1")
    clock.now = 90
    await cache.get(C, "1")
    await cache.get(A, "1")  # used again at 90
    clock.now = 160
    assert cache.sweep({A, B, C}) == [(B, "ttl")]  # unused for 110 s; active sessions don't matter
    assert evicted == [(B, "ttl")]
    clock.now = 191
    assert cache.sweep(set()) == [(C, "ttl"), (A, "ttl")]  # least recently used first
    assert len(cache) == 0
    assert cache.stats.evictions == {"ttl": 3}


async def test_runtime_uses_the_configured_policy_and_rejects_unknown_ones() -> None:
    plugins = Plugins.load(LoadPolicy())
    runtime = Runtime(
        testing.settings(plugins, cache={"policy": "ttl", "ttl": 5, "max_entries": 3}), plugins
    )
    assert isinstance(runtime.cache.policy, TTLPolicy)
    assert (runtime.cache.policy.ttl, runtime.cache.policy.max_entries) == (5, 3)
    default = Runtime(Settings(), plugins)
    assert type(default.cache.policy) is IdleSessionPolicy

    broken = Runtime(Settings(cache={"policy": "nope"}), plugins)
    with pytest.raises(UnknownNameError) as caught:
        _ = broken.cache
    message = str(caught.value)
    assert "'nope'" in message
    assert "cache.policy" in message
    for known in ("idle-session", "ttl", "lru"):
        assert f"'{known}'" in message


async def test_sweep_through_the_runtime_fires_executor_evicted(
    rt: tuple[Runtime, Recorder],
) -> None:
    runtime, recorder = rt
    storage = runtime.storage
    session = await storage.sessions.open(USER, ECHO, chat_id=uuid.uuid4())
    await runtime.chat(USER, ECHO, session.chat_id, "hi")
    bobs = await storage.sessions.open("bob", ECHO, chat_id=uuid.uuid4())
    await runtime.chat("bob", ECHO, bobs.chat_id, "hi")
    assert runtime.cache.stats.builds == 1  # one build for both users
    await storage.sessions.deactivate(USER, session.id)
    active_agents = {agent for _, agent in await storage.sessions.active_keys()}
    assert runtime.cache.sweep(active_agents) == []  # bob still uses the agent
    await storage.sessions.deactivate("bob", bobs.id)
    active_agents = {agent for _, agent in await storage.sessions.active_keys()}
    assert runtime.cache.sweep(active_agents) == [(ECHO, "idle-session")]
    assert recorder.evicted == [(ECHO, "idle-session")]
    assert ECHO not in runtime.cache


# --------------------------------------------------------------------------- 10. offline


async def test_offline_quickstart_adds_and_lists_a_task(make_runtime: Make) -> None:
    runtime, _ = await make_runtime()
    # With no models.default the example gives its agent its own (offline) model.
    await example.AssistantExample().install(runtime)
    assert (await runtime.storage.agents.get(example.AGENT)).model.startswith("offline:")  # type: ignore[union-attr]
    chat_id = await new_chat(runtime, "local", example.AGENT)
    added = await runtime.chat("local", example.AGENT, chat_id, "add a task to buy milk")
    assert "buy milk" in added.response
    assert [c.name for c in added.tool_calls] == ["add_task"]
    listed = await runtime.chat("local", example.AGENT, chat_id, "list my tasks")
    assert "buy milk" in listed.response
    assert [c.name for c in listed.tool_calls] == ["list_tasks"]
    assert await rows(runtime, "SELECT user_id, title, status FROM tasks") == [
        {"user_id": "local", "title": "buy milk", "status": "pending"}
    ]


# --------------------------------------------------------------------------- 11. end to end


async def test_scripted_model_cannot_reach_another_users_rows(
    make_runtime: Make, sql_url: str
) -> None:
    runtime, _ = await make_runtime(sql_url)
    adding = [
        {"tool_calls": [call("add_task", title="groceries")]},
        {"tool_calls": [call("add_task", title="dentist")]},
        {"content": "Added two tasks."},
    ]
    await seed_scripted(runtime, adding)
    chats = {user: await new_chat(runtime, user, example.AGENT) for user in ("alice", "bob")}
    for user, chat_id in chats.items():
        turn = await runtime.chat(user, example.AGENT, chat_id, "add my tasks")
        assert turn.response == "Added two tasks."
        assert [r.error for r in turn.tool_calls] == [False, False]
    select_all = "SELECT id, user_id, title, status FROM tasks ORDER BY id"
    before = await rows(runtime, select_all)
    bob_ids = [r["id"] for r in before if r["user_id"] == "bob"]
    alice_ids = [r["id"] for r in before if r["user_id"] == "alice"]
    assert len(bob_ids) == 2
    assert len(alice_ids) == 2
    # Both users' turns ran on one build: the tools found their user at call time.
    assert runtime.cache.stats.builds == 1

    attacks = [
        call("update_task", id=bob_ids[0], status="done"),
        call("update_task", id=bob_ids[1], title="hacked"),
        call("delete_task", id=bob_ids[0]),
        call("add_task", title="planted", user_id="bob"),
        call("list_tasks", user_id="bob"),
        call("list_tasks", owner="bob"),
        call("delete_task", id="1 OR 1=1"),
    ]
    script = [
        {"tool_calls": attacks[:3]},
        *({"tool_calls": [a]} for a in attacks[3:]),
        {"tool_calls": [call("list_tasks")]},
        {"content": "I tried."},
    ]
    await runtime.storage.agents.update(example.AGENT, model_settings={"responses": script})
    turn = await runtime.chat("alice", example.AGENT, chats["alice"], "get bob's tasks")

    assert turn.response == "I tried."
    assert [(r.name, r.args) for r in turn.tool_calls] == [
        (a["name"], a["args"]) for a in [*attacks, call("list_tasks")]
    ]
    refused, legit = turn.tool_calls[:-1], turn.tool_calls[-1]
    for record in refused:
        text = str(record.result)
        assert record.error, record
        assert "not found" in text or "Invalid arguments" in text, text
    for record in refused[:3]:
        assert "not found" in str(record.result)
    assert "user_id: unknown argument" in str(refused[3].result)
    assert "user_id: unknown argument" in str(refused[4].result)
    assert "owner: unknown argument" in str(refused[5].result)
    assert "id:" in str(refused[6].result)
    # Alice's own list shows only her rows.
    assert not legit.error
    assert sorted(r["id"] for r in legit.result["rows"]) == alice_ids

    assert await rows(runtime, select_all) == before
    messages = await stored(runtime, "alice", chats["alice"])
    assert_valid_history(to_model_input(messages))


# --------------------------------------------------------------------------- across processes


@pytest.mark.listener
async def test_turns_on_one_chat_are_serialised_across_processes_on_postgres(
    make_runtime: Make, pg_storage: Any, pg_url: str
) -> None:
    one, _ = await make_runtime(pg_url)
    two, _ = await make_runtime(pg_url)  # a second process on the same database
    await one.storage.agents.create(
        ECHO, system_prompt="", model="echo:x", model_settings={"delay": 0.5}
    )
    chat_id = await new_chat(one, USER, ECHO)
    await asyncio.gather(
        one.chat(USER, ECHO, chat_id, "from one"), two.chat(USER, ECHO, chat_id, "from two")
    )
    messages = await stored(one, USER, chat_id)
    assert [m.role for m in messages] == ["human", "ai", "human", "ai"]
    humans = [m.content["data"]["content"] for m in messages[::2]]
    later_reply = json.loads(messages[3].content["data"]["content"])
    assert later_reply["humans"] == humans


# --------------------------------------------------------------------------- stored as it happens


async def test_each_step_of_a_turn_is_stored_as_soon_as_it_completes(runtime: Runtime) -> None:
    await seed_scripted(
        runtime, [{"tool_calls": [call("add_task", title="milk")]}, {"content": "Added."}]
    )
    chat_id = await new_chat(runtime, USER, example.AGENT)
    seen: list[list[str]] = []

    async def on_message(message: BaseMessage) -> None:
        seen.append([m.role for m in await stored(runtime, USER, chat_id)])

    await runtime.chat(USER, example.AGENT, chat_id, "add milk", on_message=on_message)

    # The human message before the model ran; the tool exchange before the reply.
    assert seen == [["human"], ["human"], ["human", "ai", "tool"]]
    assert [m.role for m in await stored(runtime, USER, chat_id)] == ["human", "ai", "tool", "ai"]


async def test_reply_and_touch_are_one_write_so_a_stored_turn_never_fails(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    await seed_scripted(runtime, [{"content": "Hello."}])
    session = await runtime.storage.sessions.open(USER, example.AGENT, chat_id=uuid.uuid4())

    async def broken_touch(user_id: str, chat_id: uuid.UUID) -> int:
        raise StorageError("touch_chat is not how a turn marks its chat used")

    monkeypatch.setattr(runtime.storage.sessions, "touch_chat", broken_touch)
    turn = await runtime.chat(USER, example.AGENT, session.chat_id, "hi")

    assert turn.response == "Hello."
    messages = await stored(runtime, USER, session.chat_id)
    assert [m.role for m in messages] == ["human", "ai"]
    touched = await runtime.storage.sessions.get(USER, session.id)
    assert touched is not None and touched.updated_at > session.updated_at


async def test_unstorable_characters_of_a_message_are_replaced_not_refused(
    runtime: Runtime,
) -> None:
    await seed_scripted(runtime, [{"content": "Noted."}])
    chat_id = await new_chat(runtime, USER, example.AGENT)

    turn = await runtime.chat(USER, example.AGENT, chat_id, "a\x00b\ud800c")

    assert turn.response == "Noted."
    [human, _] = await stored(runtime, USER, chat_id)
    assert human.content["data"]["content"] == "a\ufffdb\ufffdc"


async def test_a_database_failure_inside_a_tool_is_a_tool_error(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    await seed_scripted(runtime, [{"tool_calls": [call("list_tasks")]}, {"content": "Sorry."}])
    chat_id = await new_chat(runtime, USER, example.AGENT)

    async def unavailable(*args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        raise StorageError("database x is unavailable: connection reset")

    monkeypatch.setattr(runtime.storage.records, "select", unavailable)
    turn = await runtime.chat(USER, example.AGENT, chat_id, "list my tasks")

    assert turn.response == "Sorry."
    [record] = turn.tool_calls
    assert record.error and "unavailable" in str(record.result)
    assert [m.role for m in await stored(runtime, USER, chat_id)] == ["human", "ai", "tool", "ai"]
