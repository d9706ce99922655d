"""A message the message limit accepts gets through however its JSON is escaped.

The body limit was 4 bytes a character (plus room for the envelope), but JSON
encoders escape by default (Python's ``json.dumps``, ``requests``' ``json=``):
a character of the Basic Multilingual Plane outside ASCII takes 6 bytes
(``\\u4e2d``), one beyond it 12 (a surrogate pair). A message within
``server.max_message_chars`` was refused 413 "request body too large … send a
shorter message". Here a message at the limit, of either kind, sent escaped,
is answered; one character more is refused by the message limit, naming it.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from chatwright.plugins.example import assistant as example
from tests.hostile.serving import serving, settings_for

LIMIT = 10_000
"""Large enough that the old bound (4 bytes a character and 16 KiB) refused both kinds."""


@pytest.mark.parametrize("char", ["\u4e2d", "\U0001f600"], ids=["cjk", "emoji"])
async def test_a_message_at_the_limit_sent_escaped_is_answered(tmp_path: Path, char: str) -> None:
    settings = settings_for(tmp_path, server={"max_message_chars": LIMIT})
    async with (
        serving(settings) as served,
        httpx.AsyncClient(base_url=served.url, timeout=60) as client,
    ):
        opened = await client.post("/api/sessions", json={"agent_name": example.AGENT})
        chat_id = opened.json()["chat_id"]

        def body(chars: int) -> bytes:
            message = {"agent_name": example.AGENT, "chat_id": chat_id, "message": char * chars}
            return json.dumps(message).encode()  # escaped: \\u4e2d, \\ud83d\\ude00

        headers = {"content-type": "application/json"}
        answered = await client.post("/api/chat", content=body(LIMIT), headers=headers)
        assert answered.status_code == 200, answered.text[:300]
        refused = await client.post("/api/chat", content=body(LIMIT + 1), headers=headers)
        assert refused.status_code == 413, refused.text[:300]
        assert "max_message_chars" in refused.json()["error"]
