"""Config rows emptied at once by plain SQL reach every process, as row changes do.

PostgreSQL's ``TRUNCATE`` fires no row trigger: without the statement-level
triggers of migration 0012, a ``TRUNCATE agent_tools`` moved no agent's config
version and sent no NOTIFY, and a process that had built the agent kept calling
tools that no longer existed in the database, writing rows with them. SQLite
has no ``TRUNCATE``; its ``DELETE`` without ``WHERE`` fires the row triggers,
which the same tests check.

"Processes" are runtimes on one database, each with its own engine and cache.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg
import pytest

from chatwright.errors import UnknownAgentError
from chatwright.plugins.example import assistant as example
from chatwright.plugins.example.assistant import AGENT
from chatwright.runtime import Runtime, Turn
from tests.conftest import MakeRuntime
from tests.hostile.conftest import script, sql

TITLE = "pay rent"


async def _turn(runtime: Runtime, user: str, chat: uuid.UUID | None = None) -> Turn:
    if chat is None:
        chat = (await runtime.storage.sessions.open(user, AGENT, chat_id=uuid.uuid4())).chat_id
    return await runtime.chat(user, AGENT, chat, "add it")


async def _tasks(runtime: Runtime, user: str) -> int:
    rows = await sql(runtime, "SELECT count(*) AS n FROM tasks WHERE user_id = :u", u=user)
    return int(rows[0]["n"])


async def _built(runtimes: MakeRuntime, user: str) -> tuple[Runtime, Turn]:
    """A process that built the example agent and ran its add_task tool once."""
    old = await runtimes()
    await example.seed(old.storage, "scripted:x")
    one = script(("add_task", {"title": TITLE}))["responses"]
    # A build's scripted model keeps its place across turns: replies for several.
    await old.storage.agents.update(AGENT, model_settings={"responses": one * 3})
    first = await _turn(old, user)
    assert first.tool_calls[0].error is False, first.tool_calls
    assert await _tasks(old, user) == 1
    return old, first


@asynccontextmanager
async def _notified(sql_url: str) -> AsyncIterator[list[str]]:
    """The payloads of ``chatwright_config`` sent while the block runs (PostgreSQL)."""
    heard: list[str] = []
    if not sql_url.startswith("postgresql"):
        yield heard
        return
    url = sql_url.replace("postgresql+psycopg://", "postgresql://", 1)
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute("LISTEN chatwright_config")
        yield heard
        async for note in conn.notifies(timeout=1.0):
            heard.append(note.payload)


def _emptying(sql_url: str, table: str) -> str:
    """PostgreSQL's TRUNCATE of ``table``; SQLite's counterpart, a DELETE of every row."""
    if sql_url.startswith("postgresql"):
        return f"TRUNCATE {table} CASCADE"
    return f"DELETE FROM {table}"


async def test_emptied_tool_rows_are_gone_from_a_process_that_built_the_agent(
    runtimes: MakeRuntime, sql_url: str
) -> None:
    user = f"u-{uuid.uuid4().hex[:6]}"
    old, _ = await _built(runtimes, user)
    await old.storage.agents.create("toolless", system_prompt="hi", model="scripted:x")
    toolless = await old.storage.agents.config_version("toolless")

    async with _notified(sql_url) as heard:
        await sql(old, _emptying(sql_url, "agent_tools"))
    assert await sql(old, "SELECT count(*) AS n FROM agent_tools") == [{"n": 0}]

    fresh = await _turn(await runtimes(), user)  # a process started after the change
    stale = await _turn(old, user)  # the process that had built the agent
    for turn in (fresh, stale):
        call = turn.tool_calls[0]
        assert call.name == "add_task" and call.error is True, turn.tool_calls
        assert "not a tool of this agent" in str(call.result), call.result
    assert await _tasks(old, user) == 1  # nothing written by a tool that is gone
    # An agent that had no tool rows keeps its build.
    assert await old.storage.agents.config_version("toolless") == toolless
    if sql_url.startswith("postgresql"):
        # Processes that LISTEN drop their build at once, before any turn.
        assert AGENT in heard, heard


async def test_emptied_agents_refuse_the_next_turn_of_a_process_that_built_them(
    runtimes: MakeRuntime, sql_url: str
) -> None:
    user = f"u-{uuid.uuid4().hex[:6]}"
    old, first = await _built(runtimes, user)

    async with _notified(sql_url) as heard:
        await sql(old, _emptying(sql_url, "agents"))

    # The cached build is never served: the turn's version check finds no agent.
    with pytest.raises(UnknownAgentError):
        await _turn(old, user, first.chat_id)
    with pytest.raises(UnknownAgentError):
        await old.agent_for(user, AGENT)
    assert await _tasks(old, user) == 1
    if sql_url.startswith("postgresql"):
        assert AGENT in heard, heard


@pytest.mark.parametrize("sql_url", ["postgresql"], indirect=True)
async def test_a_truncate_of_both_config_tables_at_once_runs(
    runtimes: MakeRuntime, sql_url: str
) -> None:
    """One statement emptying both tables (PostgreSQL's TRUNCATE of several tables) runs
    both tables' triggers, and the agent created again afterwards is built from its rows
    as they are then."""
    user = f"u-{uuid.uuid4().hex[:6]}"
    old, _ = await _built(runtimes, user)
    async with _notified(sql_url) as heard:
        await sql(old, "TRUNCATE agent_tools, agents RESTART IDENTITY CASCADE")
    assert AGENT in heard, heard
    assert await sql(old, "SELECT count(*) AS n FROM agents") == [{"n": 0}]
    with pytest.raises(UnknownAgentError):
        await _turn(old, user)
    # Created again under the same name (and, after RESTART IDENTITY, the same id),
    # the agent is built anew: it has no tool rows now.
    await old.storage.agents.create(AGENT, system_prompt="again", model="scripted:x")
    await old.storage.agents.update(AGENT, model_settings=script(("add_task", {"title": TITLE})))
    again = await _turn(old, user)
    assert again.tool_calls[0].error is True, again.tool_calls
    assert await _tasks(old, user) == 1
