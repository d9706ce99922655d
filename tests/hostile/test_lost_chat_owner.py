"""A chat whose owner the session store lost is reopened by its user only.

A session store that keeps what it knows in memory (Redis run without
persistence) may lose a chat's owner while the chat's messages stay in the
storage. The chat then dropped out of reach for good: opening it by its id
answered "no chat". Now its user, whose messages are stored under the id, may
reopen it and becomes its owner again; anyone else still finds no chat, and
takes nothing over. Here the loss is made by deleting the chat's session rows.
"""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa

from chatwright.plugins.sql import schema
from tests.hostile.conftest import MakeServer, Server, bearer
from tests.write_safety import AGENT, calls, seed_writer


async def alices_turn_then_owner_lost(server: Server, message: str) -> dict[str, Any]:
    """Alice opens a chat and says ``message``; then the session store loses the chat's
    owner (its session rows are deleted). The turn's answer, with its ``chat_id``."""
    opened = await server.client.post(
        "/api/sessions", json={"agent_name": AGENT, "new": True}, headers=bearer("alice")
    )
    chat_id = opened.json()["chat_id"]
    said = await server.client.post(
        "/api/chat",
        json={"agent_name": AGENT, "session_id": chat_id, "message": message},
        headers=bearer("alice"),
    )
    assert said.status_code == 200, said.text
    async with server.runtime.storage.write() as conn:  # type: ignore[attr-defined]
        for table in (schema.active_sessions, schema.chat_sessions):
            await conn.execute(sa.delete(table))
    answer: dict[str, Any] = said.json()
    return {**answer, "chat_id": chat_id}


async def test_only_the_user_whose_messages_are_stored_reopens_the_chat(
    make_server: MakeServer,
) -> None:
    server = await make_server()
    storage = server.runtime.storage
    await seed_writer(server.runtime, [{"content": "Hello, Alice."}])
    chat_id = (await alices_turn_then_owner_lost(server, "hi"))["chat_id"]
    assert await storage.sessions.chat_owner(uuid.UUID(chat_id)) is None
    body = {"agent_name": AGENT, "chat_id": chat_id}
    # Bob names Alice's chat: no chat, and he is not made its owner.
    stolen = await server.client.post("/api/sessions", json=body, headers=bearer("bob"))
    assert stolen.status_code == 404, stolen.text
    assert "no chat" in stolen.json()["error"]
    listed = await server.client.get(f"/api/chats/{chat_id}/messages", headers=bearer("bob"))
    assert listed.status_code == 404, listed.text
    # Alice reopens it and sees her chat again; Bob still cannot.
    again = await server.client.post("/api/sessions", json=body, headers=bearer("alice"))
    assert again.status_code == 200, again.text
    assert again.json()["chat_id"] == chat_id
    page = await server.client.get(f"/api/chats/{chat_id}/messages", headers=bearer("alice"))
    assert page.status_code == 200, page.text
    assert [m["role"] for m in page.json()["messages"]] == ["human", "ai"]
    theirs = await server.client.get(f"/api/chats/{chat_id}/messages", headers=bearer("bob"))
    assert theirs.status_code == 404, theirs.text


async def test_a_chat_reopened_after_its_owner_was_lost_keeps_its_agent(
    make_server: MakeServer,
) -> None:
    """Its held call waits for a decision of its agent: reopened with another agent,
    the chat would wait for ever (decisions and turns refused). The agent stored with
    it is named instead, and reopened with it, the call is decided."""
    server = await make_server()
    storage = server.runtime.storage
    await seed_writer(server.runtime, calls(("add_task", {"title": "milk"})))
    await storage.agents.create("other", system_prompt="", model="offline:assistant")
    said = await alices_turn_then_owner_lost(server, "add milk")
    assert said["status"] == "approval_required", said
    chat_id = said["chat_id"]
    [action] = said["pending"]
    elsewhere = await server.client.post(
        "/api/sessions", json={"agent_name": "other", "chat_id": chat_id}, headers=bearer("alice")
    )
    assert elsewhere.status_code == 422, elsewhere.text
    assert f"was with agent {AGENT!r}" in elsewhere.json()["error"]
    assert await storage.sessions.chat_owner(uuid.UUID(chat_id)) is None
    again = await server.client.post(
        "/api/sessions", json={"agent_name": AGENT, "chat_id": chat_id}, headers=bearer("alice")
    )
    assert again.status_code == 200, again.text
    decided = await server.client.post(
        f"/api/pending/{action['id']}/approve", json={}, headers=bearer("alice")
    )
    assert decided.status_code == 200, decided.text
    assert decided.json()["status"] == "done"
