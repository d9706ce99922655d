"""Sections 2 to 5: the turn path measured inside one process.

2. A cached turn through ``Runtime.chat`` next to the bare ``ainvoke`` of the
   same built agent graph (same model, tools and insert), alternating, and the
   turn's own storage work alone (what the first adds to the second at the least).
3. PostgreSQL transactions and new connections per cached turn, as
   ``pg_stat_database`` counts them on the run's database (and section 2's
   comparison, run on that database).
4. Storage bytes per turn after 500 turns: chatwright's SQLite file next to
   the file of LangGraph's ``AsyncSqliteSaver``.
5. A turn on a chat with 100,000 stored messages next to one on a fresh chat.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import PROMPT, is_the_turn, seed_agent
from chatwright.runtime import Runtime
from chatwright.stores import NewMessage
from chatwright.tools import TurnContext, calling_as

USER = "bench-user"


def runtime_for(url: str) -> Runtime:
    """A runtime with the bundled plugins only, on ``url``."""
    from chatwright.registry import LoadPolicy, Plugins
    from chatwright.testing import settings

    plugins = Plugins.load(LoadPolicy(allow=frozenset()))
    return Runtime(settings(plugins, storage={"url": url}), plugins)


async def setup(url: str, agent: str, turns: int) -> uuid.UUID:
    """Migrate, seed ``agent`` with a script for ``turns`` turns, open a chat; return its id."""
    runtime = runtime_for(url)
    await runtime.start(upgrade=True)
    try:
        await seed_agent(runtime.storage, agent, turns)
        return (await runtime.storage.sessions.open(USER, agent)).chat_id
    finally:
        await runtime.close()


async def timed_turn(runtime: Runtime, agent: str, chat: uuid.UUID) -> float:
    start = time.perf_counter()
    turn = await runtime.chat(USER, agent, chat, "add an item")
    elapsed = time.perf_counter() - start
    if not is_the_turn(turn.response, [call.name for call in turn.tool_calls]):
        raise RuntimeError(f"not the benchmark's turn: {turn.response!r}, {turn.tool_calls}")
    return elapsed


# -- 2. Runtime.chat vs the bare graph ----------------------------------------------


@dataclass(frozen=True)
class TurnTimes:
    """Section 2's times, one list per variant, alternating."""

    through: list[float]
    """Cached turns through ``Runtime.chat``."""
    bare: list[float]
    """The bare graph's ``ainvoke``."""
    storage: list[float]
    """A turn's storage work alone: its start, its exchange's record and its end, storing
    what a turn stores, with no model and no tool."""


async def storage_alone(runtime: Runtime, agent: str, chat: uuid.UUID, made: Any) -> float:
    """The time of a turn's own storage work, without the graph: what ``Runtime.chat``
    adds to the bare graph at the least, whatever the rest of it costs.

    ``made`` is a real turn of the benchmark (its messages and usage are stored again).
    """
    from langchain_core.messages import HumanMessage

    from chatwright.history import storable_with_data, to_store

    turns = runtime.turns
    human = NewMessage(role="human", content=storable_with_data(HumanMessage("add an item"))[1])
    call, result, reply = made.messages
    start = time.perf_counter()
    begun = await turns.begin(
        USER, agent, chat, human, turn_id=uuid.uuid4(), budget=runtime.budget_limits()
    )
    await turns.append(begun, to_store([call, result]))
    await turns.finish(begun, to_store([reply]), touch=True, usage=made.usage)
    return time.perf_counter() - start


async def runtime_vs_graph(url: str, turns: int) -> TurnTimes:
    """Times of cached turns through ``Runtime.chat``, of the bare graph, and of a turn's
    storage work alone, alternating.

    The bare side is what a minimal application does with the same built
    graph: keep the chat's messages in a list and send the system prompt, the
    last ``history_window`` of them and the new message to ``ainvoke``.
    """
    from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage

    agent = "bench_runtime"
    # One script for the user's turns through both paths (and the warm-up turn).
    chat = await setup(url, agent, 2 * turns + 1)
    through, bare, storage = [], [], []
    history: list[BaseMessage] = []
    async with runtime_for(url) as runtime:
        # Builds and caches the agent; its turn is what the storage work alone stores.
        made = await runtime.chat(USER, agent, chat, "add an item")
        built = await runtime.agent_for(USER, agent)
        window = built.agent.history_window
        context = TurnContext(user_id=USER, agent_name=agent, chat_id=chat)
        for _ in range(turns):
            through.append(await timed_turn(runtime, agent, chat))
            storage.append(await storage_alone(runtime, agent, chat, made))
            start = time.perf_counter()
            human = HumanMessage(content="add an item")
            inputs = [SystemMessage(content=PROMPT), *history[-window:], human]
            # The graph's tools serve whoever the run's context names, as in a turn.
            state = await built.graph.ainvoke({"messages": inputs}, context=context)
            history += [human, *state["messages"][len(inputs) :]]
            bare.append(time.perf_counter() - start)
            if history[-1].text != "Inserted." or "created" not in history[-2].text:
                raise RuntimeError(f"the bare graph's turn went wrong: {history[-3:]}")
    return TurnTimes(through, bare, storage)


# -- 3. PostgreSQL activity per turn ------------------------------------------------


@dataclass(frozen=True)
class PerTurn:
    transactions: float
    tool_transactions: float
    sessions: float


async def pg_activity(url: str, admin_url: str, turns: int, warmup: int = 12) -> PerTurn:
    """Transactions and sessions per cached turn, from ``pg_stat_database``.

    Three windows, each a runtime that starts, warms up and closes (a backend
    reports its counts when it exits): warm-up only, warm-up + ``turns`` turns,
    warm-up + ``turns`` calls of the insert tool alone. The differences are
    what the turns and the tool's own inserts cost. The warm-up runs each
    statement more than psycopg's ``prepare_threshold`` (5) times on each
    connection the pool hands out: the run that passes it prepares the
    statement on its connection, which for a statement in autocommit the server
    counts as a transaction of its own (once per connection and statement).
    """
    from bench import pg

    database = url.rsplit("/", 1)[1]
    agent = "bench_pg"
    chat = await setup(url, agent, warmup + turns)

    async def window(turns: int, tool_calls: int) -> pg.Activity:
        before = pg.activity(admin_url, database)
        async with runtime_for(url) as runtime:
            for _ in range(warmup + turns):
                await timed_turn(runtime, agent, chat)
            tool = (await runtime.agent_for(USER, agent)).tools[0]
            # The shared build's tool, called for the user as a turn of theirs would.
            with calling_as(TurnContext(user_id=USER, agent_name=agent, chat_id=chat)):
                for _ in range(tool_calls):
                    result = await tool.ainvoke({"title": "bench"})
                    if "created" not in str(result):
                        raise RuntimeError(f"the insert tool failed: {result}")
        return pg.activity(admin_url, database) - before

    base = await window(0, 0)
    with_turns = await window(turns, 0)
    with_tool = await window(0, turns)
    return PerTurn(
        transactions=(with_turns.transactions - base.transactions) / turns,
        tool_transactions=(with_tool.transactions - base.transactions) / turns,
        sessions=(with_turns.sessions - base.sessions) / turns,
    )


# -- 4. storage bytes per turn ------------------------------------------------------


def file_bytes(path: Path) -> int:
    """A SQLite database's size on disk, its write-ahead log included."""
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*") if p.is_file())


async def chatwright_bytes(tmp: Path, turns: int) -> float:
    path = tmp / "bytes-chatwright.db"
    url = f"sqlite:///{path}"
    agent = "bench_bytes"
    chat = await setup(url, agent, turns)
    before = file_bytes(path)
    async with runtime_for(url) as runtime:
        for _ in range(turns):
            await timed_turn(runtime, agent, chat)
    return (file_bytes(path) - before) / turns


async def langgraph_bytes(tmp: Path, turns: int) -> float:
    """The same turns through the LangGraph app, its items in the checkpoints' file."""
    from bench.apps.langchain_app import agents

    path = tmp / "bytes-langgraph.db"
    chat = uuid.uuid4()
    async with agents(str(path), turns, str(path)):
        pass
    before = file_bytes(path)
    async with agents(str(path), turns, str(path)) as made:
        for _ in range(turns):
            answer: dict[str, Any] = await made.turn(chat, "add an item")
            names = [call["name"] for call in answer["tool_calls"]]
            if not is_the_turn(answer["response"], names):
                raise RuntimeError(f"not the benchmark's turn: {answer}")
    return (file_bytes(path) - before) / turns


# -- 5. a long chat -----------------------------------------------------------------


async def long_chat(url: str, stored: int, turns: int) -> tuple[list[float], list[float]]:
    """Turn times on a chat with ``stored`` messages and on a fresh one, alternating."""
    from chatwright.stores import NewMessage

    agent = "bench_long"
    long = await setup(url, agent, 2 * turns + 2)
    async with runtime_for(url) as runtime:
        storage = runtime.storage
        fresh = (await storage.sessions.open(USER, agent, chat_id=uuid.uuid4())).chat_id
        batch = 10_000
        for first in range(0, stored, batch):
            messages = []
            for i in range(first, min(stored, first + batch)):
                kind = "human" if i % 2 == 0 else "ai"
                data = {"content": f"message {i}", "type": kind}
                messages.append(NewMessage(kind, {"type": kind, "data": data}))
            await storage.messages.append(USER, long, messages)
        await timed_turn(runtime, agent, long)
        await timed_turn(runtime, agent, fresh)
        on_long, on_fresh = [], []
        for _ in range(turns):
            on_long.append(await timed_turn(runtime, agent, long))
            on_fresh.append(await timed_turn(runtime, agent, fresh))
    return on_long, on_fresh
