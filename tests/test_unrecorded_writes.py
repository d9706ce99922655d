"""A write whose turn stopped before storing its call and result is told to the model.

A tool's write commits in its own transaction; its turn stores the call and its
result after it. A turn that stops in between (its process killed, cut off by
its time limit while another call of the same round ran) leaves the write in
the audit log and out of the chat. The chat's next turn finds it (the audit
entries made while the chat's newest message was what it still is) and stores
the call and a result saying the write was made before the new message, so the
model does not make it again. Every test runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest

from chatwright.errors import ModelError, TurnTimeoutError
from chatwright.plugins.example import assistant as example
from chatwright.runtime import Runtime
from chatwright.stores import NewMessage
from tests.conftest import MakeRuntime

AGENT = example.AGENT
RECOVERED = "ran and its write was made"


@pytest.fixture
def users() -> tuple[str, str]:
    """Users of this test only: application tables outlive a test on PostgreSQL."""
    suffix = uuid.uuid4().hex[:8]
    return f"alice-{suffix}", f"bob-{suffix}"


async def setup(runtime: Runtime, script: list[dict[str, Any]], **agent: Any) -> None:
    await example.seed(runtime.storage, "scripted:x")
    await runtime.storage.agents.update(AGENT, model_settings={"responses": script}, **agent)


async def open_chat(runtime: Runtime, user: str) -> uuid.UUID:
    return (await runtime.storage.sessions.open(user, AGENT, chat_id=uuid.uuid4())).chat_id


def call(*calls: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    return {"tool_calls": [{"name": name, "args": args} for name, args in calls]}


async def titles(runtime: Runtime, user: str) -> list[str]:
    rows = await runtime.storage.records.select(
        user, "tasks", {"user_id": user}, columns=["title"], order_by=[], limit=100
    )
    return sorted(r["title"] for r in rows)


async def stored(runtime: Runtime, user: str, chat: uuid.UUID) -> list[Any]:
    return list(await runtime.storage.messages.page(user, chat, limit=100))


async def stopped_after_a_write(runtime: Runtime, user: str, chat: uuid.UUID, title: str) -> None:
    """What a turn leaves when its process dies right after its tool's write commits:
    its human message and the write (with its audit entry), no call, no result."""
    from langchain_core.messages import HumanMessage

    from chatwright.history import storable_with_data
    from chatwright.tools import TurnContext
    from chatwright.turns import holding_turn
    from chatwright.writes import call_tool

    human = NewMessage(role="human", content=storable_with_data(HumanMessage("add it"))[1])
    turn_id = uuid.uuid4()
    start = await runtime.turns.begin(user, AGENT, chat, human, turn_id=turn_id)
    held = holding_turn.set(start)
    try:
        built = await runtime.agent_for(user, AGENT)
        context = TurnContext(user, AGENT, chat, turn_id=turn_id)
        made = {"name": "add_task", "args": {"title": title}, "id": "call-1", "type": "tool_call"}
        result = await call_tool(runtime.plugins, runtime.storage, built.by_name, made, context)
        assert result.status == "success", result.content
    finally:
        holding_turn.reset(held)
        # The lease given up (it expires after a crash): nothing more stored.
        await runtime.turns.finish(start, [], touch=False)


async def a_failed_turn(runtime: Runtime, user: str, chat: uuid.UUID, *, then: str) -> None:
    """A turn whose model fails (its human message is the chat's newest, so the next turn
    looks for lost writes); then the model answers ``then``."""
    await runtime.storage.agents.update(AGENT, model_settings={"fail": "down"})
    with pytest.raises(ModelError):
        await runtime.chat(user, AGENT, chat, "hello")
    await runtime.storage.agents.update(AGENT, model_settings={"responses": [{"content": then}]})


def is_recovered(call: dict[str, Any]) -> bool:
    return str(call["id"]).startswith("audit-")


def recovered_of(prompt: list[Any]) -> tuple[Any, list[Any]]:
    """The recovered AI call and its results in what the model was sent."""
    ai = [m for m in prompt if m.type == "ai" and any(is_recovered(c) for c in m.tool_calls)]
    assert len(ai) == 1, prompt
    ids = {c["id"] for c in ai[0].tool_calls}
    return ai[0], [m for m in prompt if getattr(m, "tool_call_id", None) in ids]


async def test_a_write_its_turn_did_not_store_is_told_before_the_next_message(
    runtimes: MakeRuntime, model_inputs: list[list[Any]], users: tuple[str, str]
) -> None:
    alice, _ = users
    runtime = await runtimes()
    await setup(runtime, [{"content": "Yes, milk is on the list."}, {"content": "Fine."}])
    chat = await open_chat(runtime, alice)
    await stopped_after_a_write(runtime, alice, chat, "milk")

    turn = await runtime.chat(alice, AGENT, chat, "did you add it?")
    assert turn.response == "Yes, milk is on the list."
    (prompt,) = model_inputs
    ai, (result,) = recovered_of(prompt)
    (recovered_call,) = ai.tool_calls
    assert (recovered_call["name"], recovered_call["args"]) == ("add_task", {"title": "milk"})
    assert result.status == "success"
    assert result.content.startswith(f"add_task {RECOVERED} (create on tasks, row ")
    assert result.content.endswith("do not run it again")
    # Before the new message, where it belongs; stored, so later turns read it as is.
    assert [m.type for m in prompt[-4:]] == ["human", "ai", "tool", "human"]
    assert prompt[-1].content == "did you add it?"
    roles = [m.role for m in await stored(runtime, alice, chat)]
    assert roles == ["human", "ai", "tool", "human", "ai"], roles
    assert await titles(runtime, alice) == ["milk"]

    # Told once: the next turn reads it from the chat and stores nothing more of it.
    await runtime.chat(alice, AGENT, chat, "thanks")
    roles = [m.role for m in await stored(runtime, alice, chat)]
    assert roles == ["human", "ai", "tool", "human", "ai", "human", "ai"], roles


async def test_a_write_its_turn_stored_is_not_told_again_after_a_failed_turn(
    runtimes: MakeRuntime, model_inputs: list[list[Any]], users: tuple[str, str]
) -> None:
    """A turn whose model failed leaves the human message newest, which makes the next
    turn look for lost writes: the earlier turn's write, stored with its call, is not one."""
    alice, _ = users
    runtime = await runtimes()
    # The script runs out at the second turn: its model fails.
    await setup(runtime, [call(("add_task", {"title": "milk"})), {"content": "Added."}])
    chat = await open_chat(runtime, alice)
    await runtime.chat(alice, AGENT, chat, "add milk")
    with pytest.raises(ModelError):
        await runtime.chat(alice, AGENT, chat, "and bread")
    await runtime.storage.agents.update(AGENT, model_settings={"responses": [{"content": "Back."}]})
    before = len(model_inputs)
    await runtime.chat(alice, AGENT, chat, "hello?")
    (prompt,) = model_inputs[before:]
    assert not [m for m in prompt if m.type == "ai" and any(map(is_recovered, m.tool_calls))]
    roles = [m.role for m in await stored(runtime, alice, chat)]
    assert roles == ["human", "ai", "tool", "ai", "human", "human", "ai"], roles


async def test_a_round_of_calls_cut_off_by_the_time_limit_keeps_its_write_for_the_next_turn(
    runtimes: MakeRuntime,
    model_inputs: list[list[Any]],
    users: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two calls in one reply: the first writes, the second is still running when the
    turn's time runs out. The round is not stored (a call without its result cannot be);
    its write used to be lost from the chat, and "try again" made it twice."""
    from chatwright.plugins.sql.writes import Writes

    alice, _ = users
    runtime = await runtimes()
    script = [
        call(("add_task", {"title": "milk"}), ("add_task", {"title": "slow"})),
        {"content": "Milk was added; the other one was not."},
    ]
    await setup(runtime, script, turn_timeout=1.5)
    original = Writes.apply

    async def apply(self: Any, user_id: str, write: Any, **kwargs: Any) -> Any:
        if "slow" in repr(write):
            await asyncio.sleep(30)  # a slow tool, still running when the time is up
        return await original(self, user_id, write, **kwargs)

    monkeypatch.setattr(Writes, "apply", apply)
    chat = await open_chat(runtime, alice)
    with pytest.raises(TurnTimeoutError):
        await runtime.chat(alice, AGENT, chat, "add milk and slow")
    assert await titles(runtime, alice) == ["milk"]
    roles = [m.role for m in await stored(runtime, alice, chat)]
    assert roles == ["human"], roles

    before = len(model_inputs)
    turn = await runtime.chat(alice, AGENT, chat, "what happened?")
    assert turn.response == "Milk was added; the other one was not."
    (prompt,) = model_inputs[before:]
    ai, (result,) = recovered_of(prompt)
    assert [c["args"] for c in ai.tool_calls] == [{"title": "milk"}]
    assert RECOVERED in result.content
    assert await titles(runtime, alice) == ["milk"]


async def test_another_chat_s_lost_write_is_not_told(
    runtimes: MakeRuntime, model_inputs: list[list[Any]], users: tuple[str, str]
) -> None:
    """Bob's turn stopped after a write; Alice's chat has a failed turn too (it looks for
    lost writes): she is told nothing of his, he is told of his own."""
    alice, bob = users
    runtime = await runtimes()
    await setup(runtime, [{"content": "Hi."}])
    theirs = await open_chat(runtime, bob)
    await stopped_after_a_write(runtime, bob, theirs, "bob's secret task")
    mine = await open_chat(runtime, alice)
    await a_failed_turn(runtime, alice, mine, then="Hi.")
    before = len(model_inputs)
    await runtime.chat(alice, AGENT, mine, "hello again")
    (prompt,) = model_inputs[before:]
    assert "bob's secret task" not in repr(prompt)
    assert "audit-" not in repr(prompt)
    await runtime.chat(bob, AGENT, theirs, "hello")
    _, (result,) = recovered_of(model_inputs[-1])
    assert RECOVERED in result.content


async def test_two_processes_that_find_a_lost_write_store_it_once(
    runtimes: MakeRuntime, users: tuple[str, str]
) -> None:
    alice, _ = users
    first = await runtimes()
    second = await runtimes()
    await setup(first, [{"content": "One."}, {"content": "Two."}])
    chat = await open_chat(first, alice)
    await stopped_after_a_write(first, alice, chat, "milk")
    await asyncio.gather(
        first.chat(alice, AGENT, chat, "from one"), second.chat(alice, AGENT, chat, "from two")
    )
    roles = [m.role for m in await stored(first, alice, chat)]
    assert roles == ["human", "ai", "tool", "human", "ai", "human", "ai"], roles


# -- a real crash --------------------------------------------------------------------

CRASHING_TURN = textwrap.dedent(
    """
    import asyncio, json, os, sys, uuid
    from chatwright import hookimpl, testing
    from chatwright.registry import LoadPolicy, Plugins
    from chatwright.runtime import Runtime

    class DieAfterTheWrite:
        @hookimpl
        def after_write(self, call, outcome):
            # The write and its audit entry have committed; its call is not stored yet.
            os._exit(9)

    async def main():
        storage, user, agent, chat = json.loads(sys.argv[1])
        plugins = Plugins.load(LoadPolicy())
        plugins.register(DieAfterTheWrite(), "die")
        settings = testing.settings(plugins, storage={**storage, "turn_lease": 1})
        async with Runtime(settings, plugins) as runtime:
            await runtime.chat(user, agent, uuid.UUID(chat), "add milk")
        sys.exit("the turn ended: the process should have died in it")

    asyncio.run(main())
    """
)


async def test_a_process_killed_after_a_write_commits_leaves_it_told_to_the_next_turn(
    runtimes: MakeRuntime,
    sql_url: str,
    model_inputs: list[list[Any]],
    users: tuple[str, str],
    tmp_path: Path,
) -> None:
    from tests.harness import pg_storage_settings

    alice, _ = users
    runtime = await runtimes()
    await setup(runtime, [call(("add_task", {"title": "milk"})), {"content": "Added."}])
    chat = await open_chat(runtime, alice)
    args = json.dumps([pg_storage_settings(sql_url), alice, AGENT, str(chat)])
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATWRIGHT_")}
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", CRASHING_TURN, args],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 9, done.stderr
    assert await titles(runtime, alice) == ["milk"]
    assert [m.role for m in await stored(runtime, alice, chat)] == ["human"]

    await runtime.storage.agents.update(
        AGENT, model_settings={"responses": [{"content": "It is on your list."}]}
    )
    turn = await runtime.chat(alice, AGENT, chat, "is milk on my list?")
    assert turn.response == "It is on your list."
    ai, (result,) = recovered_of(model_inputs[-1])
    assert [(c["name"], c["args"]) for c in ai.tool_calls] == [("add_task", {"title": "milk"})]
    assert RECOVERED in result.content
    roles = [m.role for m in await stored(runtime, alice, chat)]
    assert roles == ["human", "ai", "tool", "human", "ai"], roles


async def test_a_deleted_chat_s_write_is_not_told_in_a_chat_opened_again_with_its_id(
    runtimes: MakeRuntime, model_inputs: list[list[Any]], users: tuple[str, str]
) -> None:
    """Found by a review: the audit log keeps a deleted chat's entries, and SQLite gives
    the deleted messages' ids out again; a chat opened again with the same id (clients
    may choose chat ids) whose first turn failed was told the deleted chat's write."""
    from chatwright.userdata import user_data_of

    alice, _ = users
    runtime = await runtimes()
    await setup(runtime, [call(("add_task", {"title": "secret plan"})), {"content": "Added."}])
    chat = await open_chat(runtime, alice)
    await runtime.chat(alice, AGENT, chat, "add secret plan")
    await user_data_of(runtime.storage).delete_chat(alice, chat)
    await runtime.storage.sessions.open(alice, AGENT, chat_id=chat)
    await a_failed_turn(runtime, alice, chat, then="Hi.")
    before = len(model_inputs)
    await runtime.chat(alice, AGENT, chat, "hello again")
    (prompt,) = model_inputs[before:]
    assert RECOVERED not in repr(prompt) and "secret plan" not in repr(prompt)


async def test_an_undo_stores_a_stopped_turn_s_write_before_its_note(
    runtimes: MakeRuntime, model_inputs: list[list[Any]], users: tuple[str, str]
) -> None:
    """Found by a review: an undo (of an earlier turn, by its id) stored its note after the
    chat's newest message, and the stopped turn's write was then told to no turn."""
    alice, _ = users
    runtime = await runtimes()
    await setup(runtime, [call(("add_task", {"title": "milk"})), {"content": "Added."}])
    chat = await open_chat(runtime, alice)
    first = await runtime.chat(alice, AGENT, chat, "add milk")
    await stopped_after_a_write(runtime, alice, chat, "bread")
    await runtime.undo(alice, chat, turn_id=first.turn_id)
    assert await titles(runtime, alice) == ["bread"]
    roles = [m.role for m in await stored(runtime, alice, chat)]
    assert roles[-4:] == ["human", "ai", "tool", "ai"], roles  # the write, then the note
    await runtime.storage.agents.update(AGENT, model_settings={"responses": [{"content": "Ok."}]})
    before = len(model_inputs)
    await runtime.chat(alice, AGENT, chat, "what is on my list?")
    (prompt,) = model_inputs[before:]
    _, (result,) = recovered_of(prompt)
    assert RECOVERED in result.content
