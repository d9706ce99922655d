"""Review finding "two users open the same fresh chat_id at once", replayed.

Both opens checked that nobody owned the chat, then both inserted a session:
both users got one, and whose the chat was then depended on which row a query
met first. Opening a chat claims it atomically now: the first open wins, the
other gets the answer any other user's chat gets, and the owner never changes.
"""

from __future__ import annotations

import asyncio
import uuid

from chatwright.errors import NotFoundError
from chatwright.stores import ChatSession
from tests.hostile.conftest import MakeRuntime

AGENT = "helper"
ROUNDS = 8


async def test_concurrent_opens_of_a_new_chat_id_have_one_winner(
    make_runtime: MakeRuntime,
) -> None:
    runtime = await make_runtime()
    sessions = runtime.storage.sessions
    for _ in range(ROUNDS):
        chat_id = uuid.uuid4()
        results = await asyncio.gather(
            *(sessions.open(user, AGENT, chat_id=chat_id) for user in ("alice", "bob")),
            return_exceptions=True,
        )
        won = [r for r in results if isinstance(r, ChatSession)]
        lost = [r for r in results if not isinstance(r, ChatSession)]
        assert len(won) == 1, results
        (error,) = lost
        assert isinstance(error, NotFoundError), error
        assert str(error) == f"no chat {chat_id} for this user"
        owner = (won[0].user_id, AGENT)
        assert await sessions.chat_owner(chat_id) == owner
        # The loser stays out, and the winner can open the chat again.
        loser = "bob" if owner[0] == "alice" else "alice"
        assert [s for s in await sessions.list(loser) if s.chat_id == chat_id] == []
        again = await sessions.open(owner[0], AGENT, chat_id=chat_id)
        assert again.chat_id == chat_id
        assert await sessions.chat_owner(chat_id) == owner
