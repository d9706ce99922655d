"""Stopping and cancelling a turn while it stores what it made.

- ``Runtime.stop_turns`` (the server's shutdown) while a turn is storing its
  reply: that turn ends by itself with its reply, the call stops the other
  running turns, and the runtime closes;
- a turn cancelled a second time while its end waits for its tool exchange's
  record: the end still stores the exchange and gives the chat back, so the
  chat's next turn runs (in this process and in another); when that end fails,
  with no caller left to tell, it is logged.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
import sqlalchemy as sa

from chatwright.errors import StorageError, TurnTimeoutError
from chatwright.plugins.example import assistant as example
from chatwright.plugins.sql import schema
from chatwright.runtime import Runtime
from tests.test_bounded_turns import Make, new_chat, seed, stored
from tests.test_bounded_turns import make as make

USER = "ending-user"


class Gate:
    """Holds the first call of a turn store method at its start until released."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    def around(self, method: Any) -> Any:
        async def held(*args: Any, **kwargs: Any) -> Any:
            if not self.entered.is_set():
                self.entered.set()
                await self.release.wait()
            return await method(*args, **kwargs)

        return held


@pytest.fixture
def runtimes(make: Make) -> Any:
    """Runtimes on one SQLite file whose chats are given up on soon (``turn_wait``) and
    whose leases expire soon (``turn_lease``)."""

    async def start() -> Runtime:
        return await make(storage={"turn_wait": 1.0, "turn_lease": 3.0})

    return start


async def leases(runtime: Runtime) -> int:
    async with runtime.storage.read() as conn:
        query = sa.select(sa.func.count()).select_from(schema.chat_leases)
        return int((await conn.execute(query)).scalar_one())


async def test_stop_turns_while_a_turn_stores_its_reply(runtimes: Any) -> None:
    runtime = await runtimes()
    replies = {"responses": [{"content": "kept"}, {"content": "late", "sleep": 30}]}
    await seed(runtime, "scripted:x", replies)
    storing, waiting = await new_chat(runtime, USER), await new_chat(runtime, USER)
    gate = Gate()
    turns = runtime.turns
    turns.finish = gate.around(turns.finish)  # type: ignore[method-assign]
    first = asyncio.create_task(runtime.chat(USER, example.AGENT, storing, "one"))
    await asyncio.wait_for(gate.entered.wait(), 10)
    # Another chat's turn, in its model call (which sleeps) meanwhile.
    second = asyncio.create_task(runtime.chat(USER, example.AGENT, waiting, "two"))
    await asyncio.sleep(0.3)
    assert not first.done() and not second.done()
    assert runtime.stop_turns() == 2
    gate.release.set()
    assert (await asyncio.wait_for(first, 10)).response == "kept"
    with pytest.raises(TurnTimeoutError):
        await asyncio.wait_for(second, 10)
    assert await leases(runtime) == 0
    await runtime.close()  # not left half closed by the stopped turns


async def test_a_second_cancellation_during_the_end_still_frees_the_chat(runtimes: Any) -> None:
    runtime = await runtimes()
    script = [
        {"tool_calls": [{"name": "add_task", "args": {"title": "one"}}]},
        {"content": "next"},
    ]
    await seed(runtime, "scripted:x", {"responses": script})
    chat_id = await new_chat(runtime, USER)
    gate = Gate()
    turns = runtime.turns
    turns.append = gate.around(turns.append)  # type: ignore[method-assign]
    turn = asyncio.create_task(runtime.chat(USER, example.AGENT, chat_id, "go"))
    await asyncio.wait_for(gate.entered.wait(), 10)
    turn.cancel()  # the request goes away while the tool exchange is being stored
    await asyncio.sleep(0.1)
    turn.cancel()  # and once more while the turn's end waits for that record
    await asyncio.sleep(0.1)
    gate.release.set()
    with pytest.raises(asyncio.CancelledError):
        await turn
    for _ in range(100):
        if await leases(runtime) == 0:
            break
        await asyncio.sleep(0.05)
    assert await leases(runtime) == 0
    roles = [m.role for m in await stored(runtime, chat_id, USER)]
    assert roles == ["human", "ai", "tool"]  # the exchange is kept once
    # The chat is free, in this process and in another on the same database (whose
    # build of the agent replays the script from its start).
    assert (await runtime.chat(USER, example.AGENT, chat_id, "again")).response == "next"
    other = await runtimes()
    assert (await other.chat(USER, example.AGENT, chat_id, "more")).response == "next"


async def test_an_end_that_fails_after_its_turn_was_cancelled_is_logged(
    runtimes: Any, caplog: pytest.LogCaptureFixture
) -> None:
    runtime = await runtimes()
    script = [{"tool_calls": [{"name": "add_task", "args": {"title": "one"}}]}]
    await seed(runtime, "scripted:x", {"responses": script})
    chat_id = await new_chat(runtime, USER)
    gate = Gate()
    turns = runtime.turns
    turns.append = gate.around(turns.append)  # type: ignore[method-assign]

    async def away(*args: Any, **kwargs: Any) -> Any:
        raise StorageError("the database went away")

    turns.finish = away  # type: ignore[method-assign]
    turn = asyncio.create_task(runtime.chat(USER, example.AGENT, chat_id, "go"))
    await asyncio.wait_for(gate.entered.wait(), 10)
    turn.cancel()
    await asyncio.sleep(0.1)
    turn.cancel()
    await asyncio.sleep(0.1)
    with caplog.at_level(logging.WARNING, logger="chatwright.runtime"):
        gate.release.set()
        with pytest.raises(asyncio.CancelledError):
            await turn
        for _ in range(100):
            if not runtime._ending:
                break
            await asyncio.sleep(0.02)
    assert f"chat {chat_id}: the end of a cancelled turn failed: the database went away" in (
        caplog.text
    )
