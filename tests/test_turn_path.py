"""The turn path: few transactions, one build per agent, chat leases, what a turn sees.

Every test runs on SQLite and on PostgreSQL; "two processes" are two runtimes
on one database, each with its own engine, cache and locks, as two server
processes would have.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy import event

from chatwright import testing
from chatwright.errors import ChatBusyError, InvalidInputError, TurnTimeoutError
from chatwright.plugins.example import assistant as example
from chatwright.plugins.sql import psycopg_direct, schema, sqlite_driver
from chatwright.plugins.sql import turns as sql_turns
from chatwright.plugins.sql.chats import insert_messages
from chatwright.plugins.sql.settings import SQLStorageSettings
from chatwright.plugins.sql.user_transactions import UserTransactions
from chatwright.registry import LoadPolicy, Plugins
from chatwright.runtime import Runtime, Turn
from chatwright.stores import NewMessage
from tests.harness import EchoModels, Recorder, pg_storage_settings

ECHO = "echo"
PROMPT = "Memory: {memory}. Instructions: {custom_instructions}"
USER = "alice"

Make = Callable[..., Awaitable[tuple[Runtime, Recorder]]]


@pytest.fixture
async def make(sql_url: str) -> AsyncIterator[Make]:
    """Started runtimes ("processes") on the test's database, closed at the end."""
    made: list[Runtime] = []

    async def start(**storage: Any) -> tuple[Runtime, Recorder]:
        plugins = Plugins.load(LoadPolicy())
        plugins.register(EchoModels(), "test-echo")
        recorder = Recorder()
        plugins.register(recorder, "test-recorder")
        # Through the run's PgBouncer, when it has one.
        settings = testing.settings(plugins, storage={**pg_storage_settings(sql_url), **storage})
        runtime = Runtime(settings, plugins)
        await runtime.start(upgrade=True)
        made.append(runtime)
        return runtime, recorder

    yield start
    for runtime in made:
        await runtime.close()


def seen(turn: Turn) -> dict[str, Any]:
    """What the echo model was given: its system prompt and the human messages."""
    data: dict[str, Any] = json.loads(turn.response)
    return data


async def chat_of(runtime: Runtime, user: str, agent: str = ECHO) -> uuid.UUID:
    session = await runtime.storage.sessions.open(user, agent, chat_id=uuid.uuid4())
    return session.chat_id


@contextmanager
def transactions(runtime: Runtime) -> Iterator[list[str]]:
    """Every transaction begun on the runtime's engine while the block runs: SQLAlchemy's;
    on SQLite, the inline ones begun on the driver (KeptConnection.begin); on PostgreSQL,
    each statement run straight on psycopg in autocommit (a transaction of its own), and
    each one psycopg begins with a statement run straight on it outside any transaction
    (a turn's inline transactions, see psycopg_direct). Each counted once."""
    begun: list[str] = []
    engine = runtime.storage.engine.sync_engine  # type: ignore[attr-defined]
    run = sqlite_driver.Inline.run
    run_pg = psycopg_direct.PsycopgRunner.run

    async def pg_run(self: Any, *args: Any, **kwargs: Any) -> Any:
        from psycopg.pq import TransactionStatus

        if self.connection.autocommit:
            begun.append("autocommit")
        elif self.connection.info.transaction_status == TransactionStatus.IDLE:
            begun.append("begin on the driver")
        return await run_pg(self, *args, **kwargs)

    def began(conn: Any) -> None:
        if not isinstance(conn.connection.dbapi_connection, sqlite_driver.OneHopConnection):
            begun.append("begin")
        elif conn.connection.dbapi_connection.inline is None:
            begun.append("begin")  # in the driver's thread

    async def inline_run(self: Any, conn: Any, operation: str, *args: Any) -> Any:
        if operation.startswith("BEGIN"):
            begun.append("begin inline")
        return await run(self, conn, operation, *args)

    event.listen(engine, "begin", began)
    sqlite_driver.Inline.run = inline_run  # type: ignore[method-assign]
    psycopg_direct.PsycopgRunner.run = pg_run  # type: ignore[method-assign]
    try:
        yield begun
    finally:
        sqlite_driver.Inline.run = run  # type: ignore[method-assign]
        psycopg_direct.PsycopgRunner.run = run_pg  # type: ignore[method-assign]
        event.remove(engine, "begin", began)


async def leases(runtime: Runtime) -> list[dict[str, Any]]:
    async with runtime.storage.read() as conn:  # type: ignore[attr-defined]
        result = await conn.execute(sa.text("SELECT chat_id, holder FROM chat_leases"))
        return [dict(r._mapping) for r in result]


# --------------------------------------------------------------------------- round trips


async def test_a_cached_turn_takes_two_transactions_and_one_per_round_of_tool_calls(
    make: Make,
) -> None:
    runtime, _ = await make()
    await runtime.storage.agents.create(ECHO, system_prompt=PROMPT, model="echo:x")
    chat_id = await chat_of(runtime, USER)
    await runtime.chat(USER, ECHO, chat_id, "warm up")  # builds the agent
    with transactions(runtime) as begun:
        turn = await runtime.chat(USER, ECHO, chat_id, "hello")
    assert seen(turn)["humans"] == ["warm up", "hello"]
    assert len(begun) == 2, begun

    # A round of tool calls: the tool's own write and the exchange's record.
    await example.seed(runtime.storage, "scripted:x")
    script = [{"tool_calls": [{"name": "add_task", "args": {"title": "milk"}}]}]
    await runtime.storage.agents.update(
        example.AGENT, model_settings={"responses": [*script, {"content": "Added."}]}
    )
    alices = await chat_of(runtime, USER, example.AGENT)
    bobs = await chat_of(runtime, "bob", example.AGENT)
    await runtime.chat(USER, example.AGENT, alices, "add milk")  # builds the agent
    builds = runtime.cache.stats.builds
    with transactions(runtime) as begun:
        # Bob's turn runs on the build Alice's turn made (the script starts per user).
        turn = await runtime.chat("bob", example.AGENT, bobs, "add milk")
    assert runtime.cache.stats.builds == builds
    assert turn.tool_calls[0].name == "add_task" and not turn.tool_calls[0].error
    # begin, the tool's insert, the exchange, the end: three besides the tool's own.
    assert len(begun) == 4, begun


@contextmanager
def statements(runtime: Runtime) -> Iterator[list[str]]:
    """Every statement sent on the runtime's engine while the block runs."""
    sent: list[str] = []
    engine = runtime.storage.engine.sync_engine  # type: ignore[attr-defined]

    def executed(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        sent.append(statement)

    event.listen(engine, "before_cursor_execute", executed)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", executed)


async def test_a_cached_turn_sends_few_statements(make: Make, sql_url: str) -> None:
    """PostgreSQL: a turn's begin is two statements (the framework's, then the user's,
    after the lease is taken so that they see what the chat's last turn stored), its
    end one, and a round of tool calls one besides the tool's own (its write checks the
    turn's lease in its transaction: one statement more). SQLite reads the
    window with the user's other reads and keeps a statement per other step (they
    run in the loop's thread, without a round trip): what the turns store is
    checked on both."""
    runtime, _ = await make()
    postgresql = not sql_url.startswith("sqlite")
    await example.seed(runtime.storage, "scripted:x")
    call = {"tool_calls": [{"name": "add_task", "args": {"title": "milk"}}]}
    replies = [{"content": "Hi."}, call, {"content": "Added."}]
    await runtime.storage.agents.update(
        example.AGENT, model_settings={"responses": [{"content": "Warm."}, *replies]}
    )
    chat_id = await chat_of(runtime, USER, example.AGENT)
    await runtime.chat(USER, example.AGENT, chat_id, "warm up")  # builds the agent
    with statements(runtime) as sent:
        turn = await runtime.chat(USER, example.AGENT, chat_id, "hello")
    assert turn.response == "Hi."
    if postgresql:
        assert len(sent) == 3, sent
    else:
        # Begin: the agent, the lease, the user's reads with the window, the message;
        # finish: the lease, the usage, the messages, the touch (COMMIT is not sent
        # as a statement here).
        assert [x.split()[0] for x in sent] == [
            *("BEGIN", "SELECT", "INSERT", "SELECT", "INSERT"),
            *("BEGIN", "DELETE", "INSERT", "INSERT", "UPDATE"),
        ], sent
    with statements(runtime) as sent:
        turn = await runtime.chat(USER, example.AGENT, chat_id, "add milk")
    assert [c.name for c in turn.tool_calls] == ["add_task"] and not turn.tool_calls[0].error
    if postgresql:
        tools = [s for s in sent if "tasks" in s or "audit_log" in s]
        # The tool's write checks first, in its transaction, that the turn holds the chat.
        checks = [s for s in sent if "FROM chat_leases" in s and "FOR SHARE" in s]
        assert len(checks) == 1, sent
        assert len(sent) - len(tools) - len(checks) == 4, sent
    # What the turns stored, in order, with the sessions touched and the lease given back.
    history = await runtime.storage.messages.window(USER, chat_id, 20)
    assert [m.role for m in history] == ["human", "ai"] * 3 + ["tool", "ai"]
    assert [m.content["data"]["content"] for m in history if m.role == "human"] == [
        "warm up",
        "hello",
        "add milk",
    ]
    assert await leases(runtime) == []


async def test_a_cached_turns_statements_all_run_straight_on_the_driver(
    make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After warm-up, no statement of a cached turn with a round of tool calls goes
    through SQLAlchemy's execution (about 100 µs of Python each on PostgreSQL): the
    turn's own, the tool's write and its audit entry all run on the driver
    (plugins/sql/direct.py). On PostgreSQL that needs every result column to be of a
    type read without the cursor's type codes: the lease check of the end of a turn
    and of the exchange's record is an integer division, not a NUMERIC one."""
    from sqlalchemy.ext.asyncio import AsyncConnection

    runtime, _ = await make()
    await example.seed(runtime.storage, "scripted:x")
    call = {"tool_calls": [{"name": "add_task", "args": {"title": "milk"}}]}
    turns = [call, {"content": "Added."}] * 4
    await runtime.storage.agents.update(example.AGENT, model_settings={"responses": turns})
    chat_id = await chat_of(runtime, USER, example.AGENT)
    for _ in range(2):  # builds the agent, then prepares what runs from a second run on
        await runtime.chat(USER, example.AGENT, chat_id, "add milk")
    through: list[str] = []
    original = AsyncConnection.execute

    async def counted(self: Any, statement: Any, *args: Any, **kwargs: Any) -> Any:
        through.append(" ".join(str(statement).split()[:6]))
        return await original(self, statement, *args, **kwargs)

    monkeypatch.setattr(AsyncConnection, "execute", counted)
    for _ in range(2):
        turn = await runtime.chat(USER, example.AGENT, chat_id, "add milk")
        assert turn.response == "Added." and not turn.tool_calls[0].error
    assert through == [], through


@contextmanager
def autocommitted(runtime: Runtime) -> Iterator[list[tuple[str, bool]]]:
    """Every statement sent while the block runs, with whether it ran outside a
    transaction (its connection in autocommit)."""
    sent: list[tuple[str, bool]] = []
    engine = runtime.storage.engine.sync_engine  # type: ignore[attr-defined]

    def executed(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        sent.append((statement, bool(conn.connection.dbapi_connection.autocommit)))

    event.listen(engine, "before_cursor_execute", executed)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", executed)


@pytest.mark.parametrize("sql_url", ["postgresql"], indirect=True)
async def test_a_turns_writes_of_one_statement_run_without_begin_and_commit(
    make: Make, sql_url: str
) -> None:
    """PostgreSQL: the tool exchange's record and the turn's end are one statement each,
    atomic by itself, so they run in autocommit: one round trip instead of BEGIN, the
    statement and COMMIT. The begin, which may roll back what it did, keeps its
    transaction, and so does the tool's write with its audit entry."""
    runtime, _ = await make()
    await example.seed(runtime.storage, "scripted:x")
    call = {"tool_calls": [{"name": "add_task", "args": {"title": "milk"}}]}
    script = [{"content": "Warm."}, call, {"content": "Added."}]
    await runtime.storage.agents.update(example.AGENT, model_settings={"responses": script})
    chat_id = await chat_of(runtime, USER, example.AGENT)
    await runtime.chat(USER, example.AGENT, chat_id, "warm up")  # builds the agent
    with autocommitted(runtime) as sent, transactions(runtime) as begun:
        turn = await runtime.chat(USER, example.AGENT, chat_id, "add milk")
    assert turn.response == "Added." and not turn.tool_calls[0].error
    alone = [statement for statement, autocommit in sent if autocommit]
    in_transactions = [statement for statement, autocommit in sent if not autocommit]
    assert len(alone) == 2, sent
    assert all("chat_messages" in statement for statement in alone), alone
    assert any("chat_leases" in statement for statement in alone)  # the end gives it back
    assert all("tasks" not in s and "audit_log" not in s for s in alone)
    # The begin's two, the tool's two after its check that the turn holds the chat.
    assert len(in_transactions) == 5, in_transactions
    assert sum("FOR SHARE" in s for s in in_transactions) == 1, in_transactions
    history = await runtime.storage.messages.window(USER, chat_id, 20)
    assert [m.role for m in history] == ["human", "ai", "human", "ai", "tool", "ai"]
    assert await leases(runtime) == []
    assert len(begun) == 4  # SQLAlchemy's own count: begin, tool, exchange, end


@pytest.mark.parametrize("sql_url", ["postgresql"], indirect=True)
async def test_a_turns_record_of_several_messages_stands_or_falls_whole(
    make: Make, sql_url: str
) -> None:
    """The exchange's messages, stored without a transaction around them, are still
    stored all or none: the one statement that stores them fails whole."""
    runtime, _ = await make()
    await runtime.storage.agents.create(ECHO, system_prompt=PROMPT, model="echo:x")
    chat_id = await chat_of(runtime, USER)
    start = await runtime.turns.begin(USER, ECHO, chat_id, None)
    good = NewMessage("ai", {"type": "ai", "data": {"content": "fine"}})
    # PostgreSQL's jsonb refuses the NUL character.
    bad = NewMessage("tool", {"type": "tool", "data": {"content": "a\x00b"}})
    with pytest.raises(InvalidInputError, match="refused a value"):
        await runtime.turns.append(start, [good, bad])
    assert await runtime.storage.messages.window(USER, chat_id, 10) == []
    await runtime.turns.append(start, [good, good])
    assert [
        m.content["data"]["content"]
        for m in await runtime.storage.messages.window(USER, chat_id, 10)
    ] == ["fine", "fine"]
    await runtime.turns.finish(start, [], touch=False)
    assert await leases(runtime) == []


class _Entering(UserTransactions):
    """User transactions that do something for a user: a statement must then run in a
    transaction with it."""

    async def enter(self, conn: Any, user_id: str | None) -> None:
        if user_id is not None:
            await conn.execute(sa.text("SELECT set_config('app.user', :u, true)"), {"u": user_id})


@pytest.mark.parametrize("sql_url", ["postgresql"], indirect=True)
async def test_a_turns_writes_keep_their_transaction_when_users_enter_something(
    make: Make, sql_url: str
) -> None:
    """With user transactions that set something for the user (row-level security), every
    write of a turn runs in a transaction: what ``enter`` set ends with it."""
    runtime, _ = await make()
    runtime.storage.users = _Entering()  # type: ignore[attr-defined]
    await example.seed(runtime.storage, "scripted:x")
    call = {"tool_calls": [{"name": "add_task", "args": {"title": "milk"}}]}
    script = [{"content": "Warm."}, call, {"content": "Added."}]
    await runtime.storage.agents.update(example.AGENT, model_settings={"responses": script})
    chat_id = await chat_of(runtime, USER, example.AGENT)
    await runtime.chat(USER, example.AGENT, chat_id, "warm up")
    with autocommitted(runtime) as sent:
        turn = await runtime.chat(USER, example.AGENT, chat_id, "add milk")
    assert turn.response == "Added."
    assert sent and not any(autocommit for _, autocommit in sent), sent
    assert await leases(runtime) == []


async def test_a_cached_turn_with_a_tool_runs_nothing_in_a_worker_thread(
    make: Make, monkeypatch: pytest.MonkeyPatch, sql_url: str
) -> None:
    """Each trip to a thread and back costs more than what it runs; a cached turn takes none.

    LangSmith's ``traceable`` around the limits' model-call wrapper would take two
    per model call with tracing off (see chatwright.tracing).
    """
    runtime, _ = await make()
    await example.seed(runtime.storage, "scripted:x")
    script = [{"tool_calls": [{"name": "add_task", "args": {"title": "milk"}}]}, {"content": "Ok."}]
    await runtime.storage.agents.update(example.AGENT, model_settings={"responses": script * 2})
    chat_id = await chat_of(runtime, USER, example.AGENT)
    await runtime.chat(USER, example.AGENT, chat_id, "add milk")  # builds the agent
    hops: list[Any] = []
    loop = asyncio.get_running_loop()
    real = loop.run_in_executor

    def counted(executor: Any, func: Any, *args: Any) -> Any:
        hops.append(func)
        return real(executor, func, *args)

    monkeypatch.setattr(loop, "run_in_executor", counted)
    turn = await runtime.chat(USER, example.AGENT, chat_id, "add milk")
    assert [c.name for c in turn.tool_calls] == ["add_task"] and not turn.tool_calls[0].error
    if sql_url.startswith("sqlite"):
        # On SQLite a turn's transactions run in the loop's thread too (inline_write);
        # the crud tool's create does as well.
        assert hops == [], hops
    else:
        assert not [h for h in hops if "langsmith" in repr(h)], hops


async def test_langsmith_keeps_its_thread_while_tracing_is_on() -> None:
    from langsmith import tracing_context

    from chatwright import tracing

    calls: list[str] = []

    async def default(ctx: Any, func: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append("default")
        return ctx.run(func, *args, **kwargs)

    def bookkeeping() -> str:
        calls.append("ran")
        return "done"

    import contextvars

    assert await tracing._aio_to_thread(default, contextvars.copy_context(), bookkeeping) == "done"
    assert calls == ["ran"]  # tracing off: run where called
    calls.clear()
    with tracing_context(enabled=True):
        ctx = contextvars.copy_context()
    assert await tracing._aio_to_thread(default, ctx, bookkeeping) == "done"
    assert calls == ["default", "ran"]  # tracing on: LangSmith's own hop


def test_an_applications_own_langsmith_override_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    import langsmith
    from langsmith._runtime_overrides import get_runtime_overrides

    from chatwright import tracing

    async def mine(default: Any, ctx: Any, func: Any, /, *args: Any, **kwargs: Any) -> Any:
        return ctx.run(func, *args, **kwargs)

    before = get_runtime_overrides().aio_to_thread
    monkeypatch.setattr(tracing, "_installed", False)
    langsmith.set_runtime_overrides(aio_to_thread=mine)
    try:
        tracing.inline_when_untraced()
        assert get_runtime_overrides().aio_to_thread is mine
        langsmith.set_runtime_overrides()
        monkeypatch.setattr(tracing, "_installed", False)
        tracing.inline_when_untraced()
        assert get_runtime_overrides().aio_to_thread is tracing._aio_to_thread
    finally:
        langsmith.set_runtime_overrides(aio_to_thread=before)


async def test_no_new_connection_per_turn(make: Make, monkeypatch: pytest.MonkeyPatch) -> None:
    runtime, _ = await make()
    await runtime.storage.agents.create(ECHO, system_prompt=PROMPT, model="echo:x")
    chats = [await chat_of(runtime, f"user{n}") for n in range(4)]
    await asyncio.gather(*(runtime.chat(f"user{n}", ECHO, c, "warm") for n, c in enumerate(chats)))
    opened: list[str] = []
    engine = runtime.storage.engine.sync_engine  # type: ignore[attr-defined]
    event.listen(engine, "connect", lambda *a: opened.append("pool"))
    direct = psycopg.AsyncConnection.connect

    async def counted(*args: Any, **kwargs: Any) -> Any:
        opened.append("direct")
        return await direct(*args, **kwargs)

    monkeypatch.setattr(psycopg.AsyncConnection, "connect", counted)
    for _ in range(3):
        await asyncio.gather(
            *(runtime.chat(f"user{n}", ECHO, c, "again") for n, c in enumerate(chats))
        )
    assert opened == []


# --------------------------------------------------------------------------- one build


async def test_one_build_serves_every_user_with_their_own_prompt_and_history(
    make: Make,
) -> None:
    runtime, recorder = await make()
    await runtime.storage.agents.create(ECHO, system_prompt=PROMPT, model="echo:x")
    users = [f"user{n}" for n in range(20)]
    for user in users:
        await runtime.storage.memories.put(user, ECHO, f"notes of {user}")
    chats = {user: await chat_of(runtime, user) for user in users}
    turns = await asyncio.gather(*(runtime.chat(u, ECHO, chats[u], f"hi from {u}") for u in users))
    for user, turn in zip(users, turns, strict=True):
        assert seen(turn)["system"] == f"Memory: notes of {user}. Instructions:"
        assert seen(turn)["humans"] == [f"hi from {user}"]
    assert runtime.cache.stats.builds == 1
    assert list(runtime.cache._entries) == [ECHO]  # the key is the agent's name
    assert recorder.evicted == []


async def test_memory_and_customization_changes_rebuild_and_evict_nothing(make: Make) -> None:
    one, recorder = await make()
    two, _ = await make()  # another process changes the user's data
    await one.storage.agents.create(ECHO, system_prompt=PROMPT, model="echo:x")
    listening = asyncio.create_task(one.storage.watch_config(one.config_changed))
    try:
        chat_id = await chat_of(one, USER)
        await one.chat(USER, ECHO, chat_id, "first")
        for n in range(5):
            await two.storage.memories.put(USER, ECHO, f"memory {n}")
            await two.storage.customizations.put(USER, ECHO, "style", f"style {n}")
            turn = await one.chat(USER, ECHO, chat_id, f"turn {n}")
            # Committed before the turn started: seen by it.
            assert seen(turn)["system"] == f"Memory: memory {n}. Instructions: style {n}"
        await asyncio.sleep(0.5)  # any notification would have arrived
        assert recorder.evicted == []
        assert one.cache.stats.builds == 1
        # The listener works: a change of the agent does reach it (PostgreSQL).
        await two.storage.agents.update(ECHO, system_prompt="v2 {memory}")
        sql = one.settings.section(SQLStorageSettings)
        # PostgreSQL notifies, unless reached through a transaction pooler with no
        # direct_url to listen on (then the version check alone sees changes).
        listens = one.storage.dialect == "postgresql" and (  # type: ignore[attr-defined]
            sql.pooler != "transaction" or sql.direct_url is not None
        )
        if listens:
            for _ in range(50):
                if recorder.evicted:
                    break
                await asyncio.sleep(0.1)
            assert recorder.evicted == [(ECHO, "config-changed")]
        turn = await one.chat(USER, ECHO, chat_id, "after")
        assert seen(turn)["system"] == "v2 memory 4"
        assert one.cache.stats.builds == 2
    finally:
        listening.cancel()


async def test_a_turn_sees_the_history_committed_before_it_by_another_process(
    make: Make,
) -> None:
    one, _ = await make()
    two, _ = await make()
    await one.storage.agents.create(ECHO, system_prompt=PROMPT, model="echo:x")
    chat_id = await chat_of(one, USER)
    expected: list[str] = []
    for n in range(4):
        runtime = (one, two)[n % 2]
        expected.append(f"message {n}")
        turn = await runtime.chat(USER, ECHO, chat_id, f"message {n}")
        assert seen(turn)["humans"] == expected


async def test_a_turn_that_waited_for_the_lease_sees_what_the_turn_before_it_stored(
    make: Make,
) -> None:
    """The chat's previous turn (another process) ends while this one waits on its lease:
    what it stored with the lease's release is in this turn's window. (A PostgreSQL
    statement sees the database as of its start: a statement that took the lease and
    read the window at once would have started before the release was committed.)"""
    one, _ = await make()
    two, _ = await make()
    await one.storage.agents.create(ECHO, system_prompt=PROMPT, model="echo:x")
    chat_id = await chat_of(one, USER)
    await one.chat(USER, ECHO, chat_id, "message 0")
    leases_table = schema.chat_leases
    soon = datetime.now(UTC) + timedelta(seconds=60)
    held = leases_table.insert().values(chat_id=chat_id, holder="two", expires_at=soon)
    async with two.storage.write() as conn:  # type: ignore[attr-defined]
        await conn.execute(held)
    stored = [
        NewMessage(kind, {"type": kind, "data": {"content": "message 1", "type": kind}})
        for kind in ("human", "ai")
    ]
    async with two.storage.write() as conn:  # type: ignore[attr-defined]
        # The other process's turn ends: its messages and the lease's release, one commit.
        await conn.execute(leases_table.delete().where(leases_table.c.holder == "two"))
        await insert_messages(conn, USER, chat_id, stored)
        waiting = asyncio.create_task(one.chat(USER, ECHO, chat_id, "message 2"))
        await asyncio.sleep(0.5)
        assert not waiting.done()
    turn = await waiting
    assert seen(turn)["humans"] == ["message 0", "message 1", "message 2"]


async def test_two_processes_changing_and_using_one_agent(make: Make) -> None:
    one, _ = await make()
    two, _ = await make()
    await one.storage.agents.create(ECHO, system_prompt="v0 {memory}", model="echo:x")
    chats = {runtime: await chat_of(runtime, user) for runtime, user in ((one, USER), (two, "bob"))}
    for n in range(1, 6):
        # Each process changes the agent in turn; both see every change on their
        # next turn without any notification (no listener runs here).
        changer = (one, two)[n % 2]
        await changer.storage.agents.update(ECHO, system_prompt=f"v{n} {{memory}}")
        if n == 3:  # a change made by plain SQL counts as well
            async with changer.storage.write() as conn:  # type: ignore[attr-defined]
                await conn.execute(
                    sa.text("UPDATE agents SET history_window = 7 WHERE name = :n"), {"n": ECHO}
                )
        for runtime, chat_id in chats.items():
            user = USER if runtime is one else "bob"
            turn = await runtime.chat(user, ECHO, chat_id, f"turn {n}")
            assert seen(turn)["system"] == f"v{n} (nothing yet)"
    assert one.cache.stats.builds == two.cache.stats.builds == 5  # one per version


async def test_a_turn_reads_the_agent_row_again_only_when_it_changed(make: Make) -> None:
    """A turn keeps the agent row it read while the row's config version stays; a change by
    another process, by plain SQL, or deleting and creating the agent again is seen at once."""
    one, _ = await make()
    two, _ = await make()
    await one.storage.agents.create(ECHO, system_prompt="v1 {memory}", model="echo:x")
    chat_id = await chat_of(one, USER)
    assert seen(await one.chat(USER, ECHO, chat_id, "a"))["system"] == "v1 (nothing yet)"
    known = one.storage.turns._agents[ECHO][1]  # type: ignore[attr-defined]
    assert seen(await one.chat(USER, ECHO, chat_id, "b"))["system"] == "v1 (nothing yet)"
    assert one.storage.turns._agents[ECHO][1] is known  # type: ignore[attr-defined]
    async with two.storage.write() as conn:  # type: ignore[attr-defined]
        await conn.execute(
            sa.text("UPDATE agents SET system_prompt = 'v2 {memory}' WHERE name = :n"), {"n": ECHO}
        )
    assert seen(await one.chat(USER, ECHO, chat_id, "c"))["system"] == "v2 (nothing yet)"
    await two.storage.agents.delete(ECHO)
    await two.storage.agents.create(ECHO, system_prompt="v3 {memory}", model="echo:x")
    chat_id = await chat_of(one, USER)
    assert seen(await one.chat(USER, ECHO, chat_id, "d"))["system"] == "v3 (nothing yet)"


async def test_a_message_changed_in_the_database_is_read_anew(make: Make) -> None:
    """The window's contents are decoded once per message, but a message whose stored
    content changed (edited, or erased and its id used again) is read as it is now."""
    runtime, _ = await make()
    await runtime.storage.agents.create(ECHO, system_prompt=PROMPT, model="echo:x")
    chat_id = await chat_of(runtime, USER)
    await runtime.chat(USER, ECHO, chat_id, "first")
    assert seen(await runtime.chat(USER, ECHO, chat_id, "second"))["humans"] == ["first", "second"]
    first = (await runtime.storage.messages.window(USER, chat_id, 1000))[0]
    content = json.loads(json.dumps(dict(first.content)))
    content["data"]["content"] = "edited"
    async with runtime.storage.write() as conn:  # type: ignore[attr-defined]
        value = "CAST(:c AS jsonb)" if conn.dialect.name == "postgresql" else ":c"
        await conn.execute(
            sa.text(f"UPDATE chat_messages SET content = {value} WHERE id = :i"),
            {"c": json.dumps(content), "i": first.id},
        )
    turn = await runtime.chat(USER, ECHO, chat_id, "third")
    assert seen(turn)["humans"] == ["edited", "second", "third"]


async def test_a_turn_changes_none_of_the_messages_its_window_shares_with_the_next(
    make: Make,
) -> None:
    """The window's messages are parsed once and shared by the turns that read them: a
    turn's run (LangGraph gives a message without an id one as it enters the run's
    state) leaves every one of them as it was, so the next turn's model sees what is
    stored."""
    from chatwright import history

    runtime, _ = await make()
    await runtime.storage.agents.create(ECHO, system_prompt=PROMPT, model="echo:x")
    chat_id = await chat_of(runtime, USER)
    for text in ("one", "two"):
        await runtime.chat(USER, ECHO, chat_id, text)
    stored = await runtime.storage.messages.window(USER, chat_id, 1000)
    shared = [history.parsed(row) for row in stored]
    assert all(message is not None and message.id for message in shared)
    before = [message.model_dump() for message in shared if message is not None]
    assert seen(await runtime.chat(USER, ECHO, chat_id, "three"))["humans"] == [
        "one",
        "two",
        "three",
    ]
    assert [message.model_dump() for message in shared if message is not None] == before
    # The next turn's window is made of the same objects.
    assert [history.parsed(row) for row in stored] == shared
    assert all(history.parsed(row) is message for row, message in zip(stored, shared, strict=True))


async def test_a_turns_window_is_the_stored_window_and_follows_every_column(
    make: Make, sql_url: str
) -> None:
    """The turn's window, made of messages kept from the turns before where their rows
    are unchanged, is what the message store reads (times aware, in UTC), and a row
    whose role or time changed is made anew."""
    runtime, _ = await make()
    await runtime.storage.agents.create(ECHO, system_prompt=PROMPT, model="echo:x")
    chat_id = await chat_of(runtime, USER)
    for text in ("one", "two", "three"):
        await runtime.chat(USER, ECHO, chat_id, text)
    start = await runtime.turns.begin(USER, ECHO, chat_id, None)
    await runtime.turns.finish(start, [], touch=False)
    stored = await runtime.storage.messages.window(USER, chat_id, 1000)
    assert start.history == stored
    assert all(m.created_at.utcoffset() == timedelta(0) for m in start.history)
    again = await runtime.turns.begin(USER, ECHO, chat_id, None)
    await runtime.turns.finish(again, [], touch=False)
    assert again.history == stored
    first = stored[0]
    moved = datetime(2020, 5, 17, 8, 30, 15, 250000, tzinfo=UTC)
    async with runtime.storage.write() as conn:  # type: ignore[attr-defined]
        await conn.execute(
            schema.chat_messages.update()
            .where(schema.chat_messages.c.id == first.id)
            .values(created_at=moved, role="system")
        )
    changed = await runtime.turns.begin(USER, ECHO, chat_id, None)
    await runtime.turns.finish(changed, [], touch=False)
    assert changed.history[0].created_at == moved and changed.history[0].role == "system"
    assert changed.history == await runtime.storage.messages.window(USER, chat_id, 1000)
    # Another user asking for the same chat gets none of it.
    with pytest.raises(Exception, match="chat"):
        await runtime.turns.begin("mallory", ECHO, chat_id, None)


async def test_the_config_version_follows_plain_sql_on_tool_rows(make: Make) -> None:
    runtime, _ = await make()
    storage = runtime.storage
    await example.seed(storage, "offline:x")
    versions = [await storage.agents.config_version(example.AGENT)]
    statements = [
        "UPDATE agent_tools SET description = 'changed' WHERE name = 'add_task'",
        "UPDATE agent_tools SET is_active = false WHERE name = 'list_tasks'",
        "DELETE FROM agent_tools WHERE name = 'add_note'",
        "UPDATE agents SET model = 'offline:y' WHERE name = 'assistant'",
    ]
    for statement in statements:
        async with storage.write() as conn:  # type: ignore[attr-defined]
            await conn.execute(sa.text(statement))
        versions.append(await storage.agents.config_version(example.AGENT))
    assert len(set(versions)) == len(versions), versions
    # Deleted and created again under the same name: a different version.
    await storage.agents.delete(example.AGENT)
    await storage.agents.create(example.AGENT, system_prompt="", model="offline:x")
    assert await storage.agents.config_version(example.AGENT) not in versions


# --------------------------------------------------------------------------- leases


async def held_by(runtime: Runtime, chat_id: uuid.UUID, holder: str, *, seconds: float) -> None:
    """The chat's lease, written by hand: another process's turn holds it for ``seconds``."""
    sqlite = runtime.storage.dialect != "postgresql"  # type: ignore[attr-defined]
    async with runtime.storage.write() as conn:  # type: ignore[attr-defined]
        await conn.execute(
            sa.text("INSERT INTO chat_leases (chat_id, holder, expires_at) VALUES (:c, :h, :e)"),
            {
                "c": chat_id.hex if sqlite else chat_id,
                "h": holder,
                "e": datetime.now(UTC) + timedelta(seconds=seconds),
            },
        )


async def test_a_crashed_turns_lease_is_taken_over_once_it_expires(make: Make) -> None:
    runtime, _ = await make(turn_lease=1, turn_wait=0.3)
    await runtime.storage.agents.create(ECHO, system_prompt=PROMPT, model="echo:x")
    chat_id = await chat_of(runtime, USER)
    # A process died in a turn of this chat, holding its lease for one more second.
    await held_by(runtime, chat_id, "dead", seconds=1)
    # Waiting less than the lease lasts: the chat is busy, 409, nothing stored.
    with pytest.raises(ChatBusyError, match=str(chat_id)) as busy:
        await runtime.chat(USER, ECHO, chat_id, "too early")
    assert busy.value.http_status == 409
    assert await runtime.storage.messages.page(USER, chat_id, limit=10) == []
    await asyncio.sleep(1)
    turn = await runtime.chat(USER, ECHO, chat_id, "after the crash")
    assert seen(turn)["humans"] == ["after the crash"]
    assert await leases(runtime) == []


async def test_a_stopping_server_does_not_wait_for_a_chat_past_its_deadline(make: Make) -> None:
    """Attack: a request waiting for its chat (held by another process's turn, for up to
    ``turn_wait``, or by a turn of its own process) went on waiting after the shutdown
    began, past the server's deadline, and started its turn, keeping its message, once
    the chat was free. Now the shutdown ends the wait as it ends running turns, and
    nothing of the request is kept."""
    from chatwright.runtime import STOPPED_BEFORE_TURN, STOPPED_BEFORE_UNDO

    runtime, _ = await make(turn_lease=60, turn_wait=60)
    await runtime.storage.agents.create(ECHO, system_prompt=PROMPT, model="echo:x")
    chat_id = await chat_of(runtime, USER)
    await held_by(runtime, chat_id, "another process", seconds=60)
    waiting = asyncio.create_task(runtime.chat(USER, ECHO, chat_id, "waits for the lease"))
    await asyncio.sleep(0.3)
    queued = asyncio.create_task(runtime.chat(USER, ECHO, chat_id, "waits in this process"))
    undoing = asyncio.create_task(runtime.undo(USER, chat_id))
    await asyncio.sleep(0.5)
    assert not (waiting.done() or queued.done() or undoing.done())
    started = asyncio.get_running_loop().time()
    runtime.stop_turns()
    for task, said in (
        (waiting, STOPPED_BEFORE_TURN),
        (queued, STOPPED_BEFORE_TURN),
        (undoing, STOPPED_BEFORE_UNDO),
    ):
        with pytest.raises(TurnTimeoutError) as stopped:
            await asyncio.wait_for(task, 10)
        assert str(stopped.value) == said
        assert stopped.value.http_status == 504
    assert asyncio.get_running_loop().time() - started < 5
    assert await runtime.storage.messages.page(USER, chat_id, limit=10) == []
    # A request that comes once the server is stopping is not started either.
    with pytest.raises(TurnTimeoutError, match="your message was not kept"):
        await runtime.chat("someone else", ECHO, await chat_of(runtime, "someone else"), "late")


@pytest.mark.parametrize("sql_url", ["postgresql"], indirect=True)
async def test_a_turn_cancelled_while_it_waits_for_the_lease_leaves_nothing_running(
    make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cut off between two attempts at a lease another process holds, a turn took nothing:
    it must not keep giving back a lease it never had (a statement a second, for as long
    as a lease lasts), nor touch the holder's."""
    runtime, _ = await make(turn_lease=30, turn_wait=20)
    await runtime.storage.agents.create(ECHO, system_prompt=PROMPT, model="echo:x")
    chat_id = await chat_of(runtime, USER)
    await held_by(runtime, chat_id, "other", seconds=30)
    real = psycopg.AsyncCursor.execute
    give_backs: list[str] = []

    async def execute(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        text = query if isinstance(query, str) else str(query)
        if text.lstrip().upper().startswith("DELETE FROM CHAT_LEASES"):
            give_backs.append(text)
        return await real(self, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.AsyncCursor, "execute", execute)
    pausing = asyncio.Event()

    real_pause = sql_turns.pause_for_chat

    async def pause(seconds: float) -> None:
        """The turn store's pause between two attempts, telling when it comes."""
        pausing.set()
        await real_pause(seconds)

    monkeypatch.setattr(sql_turns, "pause_for_chat", pause)
    waiting = asyncio.ensure_future(runtime.chat(USER, ECHO, chat_id, "waits"))
    for _ in range(3):  # several attempts, each finding the lease held
        pausing.clear()
        await asyncio.wait_for(pausing.wait(), 10)
    waiting.cancel()  # in a pause: no attempt under way
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await asyncio.sleep(1.5)
    assert give_backs == []
    assert await lease_holders(runtime, chat_id) == ["other"]
    assert await runtime.storage.messages.page(USER, chat_id, limit=10) == []


async def test_a_long_turn_renews_its_lease_and_another_process_waits(make: Make) -> None:
    # Leases of 2 s, renewed every 0.67 s: a busy machine's stalls of the event loop
    # (a second, under a parallel test run on two cores) do not let one expire.
    one, _ = await make(turn_lease=2)
    two, _ = await make(turn_lease=2)
    await one.storage.agents.create(
        ECHO, system_prompt="", model="echo:x", model_settings={"delay": 4.5}
    )
    chat_id = await chat_of(one, USER)
    first = asyncio.create_task(one.chat(USER, ECHO, chat_id, "long"))
    await asyncio.sleep(0.3)
    second = await two.chat(USER, ECHO, chat_id, "waited")
    # The second turn started after the first ended, over two lease lengths later.
    assert first.done()
    assert seen(second)["humans"] == ["long", "waited"]
    messages = await one.storage.messages.page(USER, chat_id, limit=10)
    assert [m.role for m in messages] == ["human", "ai", "human", "ai"]


async def test_a_lease_is_renewed_by_a_task_only_once_its_turn_outlives_a_third_of_it(
    make: Make,
) -> None:
    """A turn shorter than a third of the lease costs no renewal task; a longer one gets
    one, which renews at once and then every third, and ends with the turn."""
    runtime, _ = await make(turn_lease=1)
    await runtime.storage.agents.create(ECHO, system_prompt="", model="echo:x")
    chat_id = await chat_of(runtime, USER)

    async def expiry() -> datetime:
        async with runtime.storage.read() as conn:  # type: ignore[attr-defined]
            at = (await conn.execute(sa.select(schema.chat_leases.c.expires_at))).scalar_one()
        return at if at.tzinfo else at.replace(tzinfo=UTC)

    start = await runtime.turns.begin(USER, ECHO, chat_id, None)
    lease = start.lease  # type: ignore[attr-defined]
    assert lease.renewal is None and lease.timer is not None
    taken = await expiry()
    await asyncio.sleep(0.6)  # past a third: the renewal has started and renewed
    assert lease.renewal is not None and not lease.renewal.done()
    assert await expiry() > taken
    await asyncio.sleep(0.7)  # past the first lease's end: still held
    assert await expiry() > datetime.now(UTC)
    await runtime.turns.finish(start, [], touch=False)
    assert lease.renewal.cancelled() and lease.timer is None
    assert await leases(runtime) == []
    short = await runtime.turns.begin(USER, ECHO, chat_id, None)
    await runtime.turns.finish(short, [], touch=False)
    assert short.lease.renewal is None and short.lease.timer is None  # type: ignore[attr-defined]


@pytest.mark.parametrize("how", ["cancelled", "timed out"])
async def test_a_turn_cut_off_while_its_tool_exchange_is_recorded_stores_it_once(
    make: Make, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """The record of a tool exchange has reached the database when the turn is cut off
    (cancelled, or past its time limit), before the answer came back, as a network
    can make it: the turn's end stores the exchange once, not again."""
    runtime, _ = await make()
    await example.seed(runtime.storage, "scripted:x")
    call = {"tool_calls": [{"name": "add_task", "args": {"title": "milk"}}]}
    await runtime.storage.agents.update(
        example.AGENT,
        model_settings={"responses": [call, {"content": "Added."}]},
        turn_timeout=1 if how == "timed out" else None,
    )
    chat_id = await chat_of(runtime, USER, example.AGENT)
    turns = type(runtime.turns)
    real = turns.append
    recorded = asyncio.Event()

    async def slow_answer(self: Any, start: Any, messages: Any) -> None:
        await real(self, start, messages)  # stored ...
        recorded.set()
        await asyncio.sleep(1.5)  # ... and the answer is slow to come back

    monkeypatch.setattr(turns, "append", slow_answer)
    running = asyncio.create_task(runtime.chat(USER, example.AGENT, chat_id, "add milk"))
    await recorded.wait()
    if how == "cancelled":
        running.cancel()
    with pytest.raises((asyncio.CancelledError, TurnTimeoutError)):
        await running
    history = await runtime.storage.messages.window(USER, chat_id, 20)
    assert [m.role for m in history] == ["human", "ai", "tool"]
    assert await leases(runtime) == []


async def test_a_cancelled_turn_stores_its_message_and_gives_the_chat_back(make: Make) -> None:
    one, _ = await make(turn_wait=0.5)
    two, _ = await make(turn_wait=0.5)
    await one.storage.agents.create(
        ECHO, system_prompt="", model="echo:x", model_settings={"delay": 30}
    )
    chat_id = await chat_of(one, USER)
    running = asyncio.create_task(one.chat(USER, ECHO, chat_id, "cancelled"))
    for _ in range(600):  # cancelled once the turn has begun (its lease taken), not before
        if await leases(one):
            break
        await asyncio.sleep(0.05)
    assert await leases(one)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert await leases(one) == []
    await one.storage.agents.update(ECHO, model_settings={"delay": 0})
    turn = await two.chat(USER, ECHO, chat_id, "next")
    assert seen(turn)["humans"] == ["cancelled", "next"]


# -- answers lost after the database committed (PostgreSQL) ---------------------------


async def lease_holders(runtime: Runtime, chat_id: uuid.UUID) -> list[str]:
    leases = schema.chat_leases
    async with runtime.storage.read() as conn:  # type: ignore[attr-defined]
        rows = await conn.execute(sa.select(leases.c.holder).where(leases.c.chat_id == chat_id))
        return [r.holder for r in rows]


async def given_back(runtime: Runtime, chat_id: uuid.UUID) -> list[str]:
    """The chat's lease holders once the background give-backs have run (5 s at most)."""
    for _ in range(50):
        held = await lease_holders(runtime, chat_id)
        if not held:
            break
        await asyncio.sleep(0.1)
    return held


async def committed_then(
    make: Make,
    monkeypatch: pytest.MonkeyPatch,
    after: Callable[[], Awaitable[None]],
    **storage: Any,
) -> tuple[Runtime, uuid.UUID, list[bool]]:
    """A runtime with a warmed-up chat, whose next COMMIT on psycopg reaches the server
    and then awaits ``after`` before it answers; the list empties when that happened."""
    runtime, _ = await make(turn_lease=120, **storage)
    await runtime.storage.agents.create(ECHO, system_prompt=PROMPT, model="echo:x")
    chat_id = await chat_of(runtime, USER)
    await runtime.chat(USER, ECHO, chat_id, "warm up")
    real = psycopg.AsyncConnection.commit
    armed = [True]

    async def commit(self: Any) -> None:
        await real(self)
        if armed and armed.pop():
            monkeypatch.setattr(psycopg.AsyncConnection, "commit", real)
            await after()

    monkeypatch.setattr(psycopg.AsyncConnection, "commit", commit)
    return runtime, chat_id, armed


@pytest.mark.parametrize("sql_url", ["postgresql"], indirect=True)
async def test_a_turn_cancelled_as_its_start_commits_leaves_the_chat_free(
    make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The start's COMMIT reaches the server (lease taken, human message stored) and the
    cancellation lands before its answer: the lease is given back, not held for
    ``storage.turn_lease`` (set long here), and the next turn runs at once."""

    async def cancelled() -> None:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        await asyncio.sleep(0)

    runtime, chat_id, armed = await committed_then(make, monkeypatch, cancelled)
    with pytest.raises(asyncio.CancelledError):
        await runtime.chat(USER, ECHO, chat_id, "cancelled")
    assert not armed, "the start never committed on psycopg"
    assert await given_back(runtime, chat_id) == []
    turn = await asyncio.wait_for(runtime.chat(USER, ECHO, chat_id, "next"), 10)
    assert seen(turn)["humans"][-2:] == ["cancelled", "next"]  # its message was kept


@pytest.mark.parametrize("sql_url", ["postgresql"], indirect=True)
async def test_a_start_whose_commit_answers_too_late_leaves_the_chat_free(
    make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same through ``storage.statement_timeout``: the caller gets the storage's error
    and the lease the committed start took is given back."""
    from chatwright.errors import StorageError

    async def late() -> None:
        await asyncio.sleep(1.0)

    runtime, chat_id, armed = await committed_then(make, monkeypatch, late, statement_timeout=0.5)
    with pytest.raises(StorageError):
        await runtime.chat(USER, ECHO, chat_id, "slow commit")
    assert not armed, "the start never committed on psycopg"
    assert await given_back(runtime, chat_id) == []
    await asyncio.wait_for(runtime.chat(USER, ECHO, chat_id, "next"), 10)


@pytest.mark.parametrize("sql_url", ["postgresql"], indirect=True)
async def test_a_tool_exchange_stored_though_its_answer_was_lost_is_stored_once(
    make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tool exchange's INSERT commits and its answer comes after the statement
    timeout: the turn fails, and the end of the turn does not store the exchange again
    (one call, one result, in the chat and in every later window)."""
    from chatwright.errors import StorageError

    runtime, _ = await make(statement_timeout=0.5)
    await example.seed(runtime.storage, "scripted:x")
    call = {"tool_calls": [{"name": "add_task", "args": {"title": "milk"}}]}
    await runtime.storage.agents.update(
        example.AGENT, model_settings={"responses": [call, {"content": "Added."}]}
    )
    chat_id = await chat_of(runtime, USER, example.AGENT)
    real = psycopg.AsyncCursor.execute
    hit: list[str] = []

    async def execute(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        result = await real(self, query, *args, **kwargs)
        text = query if isinstance(query, str) else str(query)
        exchange = "INSERT INTO chat_messages" in text and "DELETE FROM chat_leases" not in text
        if exchange and "agent_memories" not in text and not hit:
            hit.append(text)
            await asyncio.sleep(1.0)  # stored; the answer is late
        return result

    monkeypatch.setattr(psycopg.AsyncCursor, "execute", execute)
    with pytest.raises(StorageError):
        await runtime.chat(USER, example.AGENT, chat_id, "add milk")
    monkeypatch.setattr(psycopg.AsyncCursor, "execute", real)
    assert len(hit) == 1, "the exchange's INSERT was never run"
    m = schema.chat_messages
    async with runtime.storage.read() as conn:  # type: ignore[attr-defined]
        rows = await conn.execute(
            sa.select(m.c.role, m.c.content).where(m.c.chat_id == chat_id).order_by(m.c.id)
        )
        stored = [(r.role, r.content) for r in rows]
    assert [role for role, _ in stored] == ["human", "ai", "tool"]
    assert await given_back(runtime, chat_id) == []


@pytest.mark.parametrize("artifact", [None, (1, 2), {1: "a"}], ids=["none", "tuple", "int-key"])
async def test_an_exchange_stored_is_found_whatever_json_made_of_its_values(
    make: Make, artifact: Any
) -> None:
    """What the end of a turn looks for is compared as stored: a tuple comes back a list,
    an integer key a string, and the exchange is found all the same."""
    from types import SimpleNamespace

    from langchain_core.messages import AIMessage, ToolMessage

    from chatwright.history import storable_with_data, to_store

    runtime, _ = await make()
    await runtime.storage.agents.create(ECHO, system_prompt=PROMPT, model="echo:x")
    chat_id = await chat_of(runtime, USER)
    call = AIMessage("", tool_calls=[{"name": "t", "args": {"x": 1}, "id": "c1"}], id="run-1")
    result = ToolMessage("done", tool_call_id="c1", artifact=artifact, id="r1")
    dumped: dict[int, Any] = {}
    made = []
    for message in (call, result):
        storable, data = storable_with_data(message)
        dumped[id(storable)] = (storable, data)
        made.append(storable)
    exchange = to_store(made, dumped)
    start: Any = SimpleNamespace(user_id=USER, chat_id=chat_id)
    assert not await runtime._stored_after_all(start, exchange)
    await runtime.storage.messages.append(USER, chat_id, exchange)
    assert await runtime._stored_after_all(start, exchange)


@pytest.mark.parametrize("sql_url", ["postgresql"], indirect=True)
async def test_a_start_still_committing_on_the_server_is_given_back_once_it_has(
    make: Make, sql_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The start runs out of time while the server still carries out its COMMIT (here a
    deferred trigger taking 3 s, once), and the cancellation does not reach the server
    in time (a server 50 ms or more away; no server-side statement timeout behind a
    pooler): the lease shows up after the first give-back found nothing, and a later one
    gives it back, so the chat is free long before ``storage.turn_lease``."""
    from chatwright.errors import StorageError

    runtime, _ = await make(
        # 1.5 s: the test's other statements (through PgBouncer, on a loaded machine)
        # must not run out of it.
        statement_timeout=1.5,
        pooler="transaction",
        turn_lease=120,
        turn_wait=10,
    )
    await runtime.storage.agents.create(ECHO, system_prompt=PROMPT, model="echo:x")
    chat_id = await chat_of(runtime, USER)
    await runtime.chat(USER, ECHO, chat_id, "warm up")
    async with runtime.storage.write() as conn:  # type: ignore[attr-defined]
        await conn.execute(sa.text("CREATE SEQUENCE slow_once"))
        await conn.execute(
            sa.text(
                "CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                "IF nextval('slow_once') = 1 THEN PERFORM pg_sleep(3); END IF; "
                "RETURN NULL; END $$"
            )
        )
        await conn.execute(
            sa.text(
                "CREATE CONSTRAINT TRIGGER slow AFTER INSERT ON chat_leases "
                "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_commit()"
            )
        )
    real_cancel = psycopg.AsyncConnection.cancel_safe

    async def far_cancel(self: Any, *args: Any, **kwargs: Any) -> None:
        await asyncio.sleep(0.1)
        await real_cancel(self, *args, **kwargs)

    monkeypatch.setattr(psycopg.AsyncConnection, "cancel_safe", far_cancel)
    with pytest.raises(StorageError):
        await runtime.chat(USER, ECHO, chat_id, "slow commit")
    monkeypatch.setattr(psycopg.AsyncConnection, "cancel_safe", real_cancel)
    # (The trigger sleeps once only; the database is the test's own.) Until the server's
    # COMMIT is done, a new start would wait on its lease row past the time bound.
    await asyncio.sleep(3.5)
    turn = await asyncio.wait_for(runtime.chat(USER, ECHO, chat_id, "next"), 20)
    assert seen(turn)["humans"][-1] == "next"
