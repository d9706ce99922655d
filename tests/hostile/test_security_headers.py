"""Every answer carries the headers that keep other web pages out.

The chat page holds buttons that act (Send, Approve, Deny, Undo). Before,
no answer carried a framing rule, so a page of another origin could load
the chat page in an invisible frame and trick a click onto Approve; nor
``nosniff``, nor ``no-store`` on the caller's own data (``/api/me/export``,
a chat's messages). Checked on the page, the API docs, JSON answers, error
answers (from a route, from a middleware: a refused ``Host``) and the event
stream, which keeps its own ``Cache-Control``.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.hostile.serving import serving, settings_for

EVERY = {
    "x-frame-options": "DENY",
    "content-security-policy": "frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


def assert_guarded(answer: httpx.Response, *, private: bool) -> None:
    for name, value in EVERY.items():
        assert answer.headers.get(name) == value, (answer.request.url, name, answer.headers)
    if private:
        assert "no-store" in answer.headers.get("cache-control", ""), answer.headers


async def test_every_answer_carries_the_headers(tmp_path: Path) -> None:
    async with (
        serving(settings_for(tmp_path)) as served,
        httpx.AsyncClient(base_url=served.url, timeout=30) as client,
    ):
        for path in ("/", "/docs", "/redoc"):
            answer = await client.get(path)
            assert answer.status_code == 200, path
            assert_guarded(answer, private=False)
        chat = await client.post("/api/sessions", json={"agent_name": "assistant"})
        assert_guarded(chat, private=True)
        chat_id = chat.json()["chat_id"]
        for path in (f"/api/chats/{chat_id}/messages", "/api/me/export", "/api/chats"):
            answer = await client.get(path)
            assert answer.status_code == 200, (path, answer.text)
            assert_guarded(answer, private=True)
            assert answer.headers["cache-control"] == "no-store"
        missing = await client.get("/api/chats/not-a-uuid/messages")
        assert missing.status_code == 422
        assert_guarded(missing, private=True)
        # Refused by local mode's middleware before any route: guarded all the same.
        foreign = await client.get("/api/chats", headers={"Host": "attacker.example"})
        assert foreign.status_code == 403
        assert_guarded(foreign, private=True)
        body = {"agent_name": "assistant", "chat_id": chat_id, "message": "hi"}
        async with client.stream("POST", "/api/chat/stream", json=body) as stream:
            await stream.aread()
        assert_guarded(stream, private=True)
        assert stream.headers["cache-control"] == "no-cache, no-store"  # the stream's own
