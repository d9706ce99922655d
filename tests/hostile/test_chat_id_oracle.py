"""Review finding "chat id existence oracle", replayed against a real server with JWT auth.

Opening a session on another user's chat id answered 404 while an unused id
answered 200, so anyone could learn whether a chat id exists. Now a chat_id
that is not one of the caller's chats is not found either way, with the same
body but for the id itself; a new chat is asked for with ``"new": true`` and
gets an id chosen by the server. The same holds for the turn, the stream and
the message pages.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from chatwright.plugins.example import assistant as example
from tests.hostile.conftest import MakeServer, bearer

AGENT = example.AGENT


def answer(response: httpx.Response, chat_id: str) -> tuple[int, Any]:
    """What a caller can tell from an answer, the chat id it asked about left out."""
    return response.status_code, response.text.replace(chat_id, "<id>")


async def test_another_users_chat_id_and_an_unused_one_get_the_same_answer(
    make_server: MakeServer,
) -> None:
    server = await make_server()
    await example.seed(server.runtime.storage, "offline:assistant")
    client = server.client
    alice, bob = bearer("alice"), bearer("bob")
    opened = await client.post("/api/sessions", json={"agent_name": AGENT}, headers=alice)
    taken = opened.json()["chat_id"]
    said = await client.post(
        "/api/chat", json={"agent_name": AGENT, "chat_id": taken, "message": "hi"}, headers=alice
    )
    assert said.status_code == 200
    fresh = str(uuid.uuid4())

    async def probes(chat_id: str) -> list[tuple[int, Any]]:
        body = {"agent_name": AGENT, "chat_id": chat_id, "message": "hi"}
        return [
            answer(
                await client.post(
                    "/api/sessions", json={"agent_name": AGENT, "chat_id": chat_id}, headers=bob
                ),
                chat_id,
            ),
            answer(await client.post("/api/chat", json=body, headers=bob), chat_id),
            answer(await client.post("/api/chat/stream", json=body, headers=bob), chat_id),
            answer(await client.get(f"/api/chats/{chat_id}/messages", headers=bob), chat_id),
        ]

    on_taken, on_fresh = await probes(taken), await probes(fresh)
    assert on_taken == on_fresh
    assert [status for status, _ in on_taken] == [404, 404, 404, 404]
    assert "new" in on_taken[0][1]  # the refusal says how to start a chat
    # Nothing was made for bob on either id, and alice's chat is untouched.
    assert await server.runtime.storage.sessions.chat_owner(uuid.UUID(fresh)) is None
    assert await server.runtime.storage.sessions.chat_owner(uuid.UUID(taken)) == ("alice", AGENT)

    # Bob starts his own chat the way the page does: the server picks the id.
    started = await client.post(
        "/api/sessions", json={"agent_name": AGENT, "new": True}, headers=bob
    )
    assert started.status_code == 200
    mine = started.json()["chat_id"]
    assert mine not in (taken, fresh)
    again = await client.post(
        "/api/sessions", json={"agent_name": AGENT, "chat_id": mine}, headers=bob
    )
    assert again.status_code == 200 and again.json()["chat_id"] == mine
    both = await client.post(
        "/api/sessions", json={"agent_name": AGENT, "chat_id": mine, "new": True}, headers=bob
    )
    assert both.status_code == 422
