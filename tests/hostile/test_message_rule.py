"""Review finding "the terminal accepts messages the HTTP API refuses", the HTTP half.

``chatwright chat`` took an empty or a 20,000-character message that the API
refused; both now apply ``chatwright.message_limits.check_message`` (the
terminal half is in ``tests/test_cli_chat.py``). A refused message is never
stored.
"""

from __future__ import annotations

from chatwright.plugins.example import assistant as example
from tests.hostile.conftest import MakeServer, bearer
from tests.hostile.test_cross_user_upsert import sql

AGENT = example.AGENT


async def test_http_refuses_blank_and_oversized_messages(make_server: MakeServer) -> None:
    server = await make_server()
    runtime, client = server.runtime, server.client
    await example.seed(runtime.storage, "scripted:x")
    opened = await client.post("/api/sessions", json={"agent_name": AGENT}, headers=bearer("bob"))
    chat_id = opened.json()["chat_id"]
    for message, status in (("   ", 422), ("x" * 20_000, 413)):
        body = {"agent_name": AGENT, "chat_id": chat_id, "message": message}
        response = await client.post("/api/chat", json=body, headers=bearer("bob"))
        assert response.status_code == status, response.text
    assert await sql(runtime, "SELECT id FROM chat_messages") == []
