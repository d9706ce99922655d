"""Every answer carries the headers that keep other web pages out.

The chat page holds buttons that act (Send, Approve, Deny, Undo). Before,
no answer carried a framing rule, so a page of another origin could load
the chat page in an invisible frame and trick a click onto Approve; nor
``nosniff``, nor ``no-store`` on the caller's own data (``/api/me/export``,
a chat's messages). Checked on the page, the API docs, JSON answers, error
answers (from a route, from a middleware: a refused ``Host``; an unexpected
error's 500, which Starlette sends from outside every middleware) and the event
stream, which keeps its own ``Cache-Control``; and under a root path
(``uvicorn --root-path``), where the API's paths start with the prefix.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from chatwright.plugins.example import assistant as example
from chatwright.plugins.server.app import create_app
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


async def test_an_unexpected_errors_500_carries_the_headers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Starlette sends it from outside every middleware, SecurityHeaders included.
    async with (
        serving(settings_for(tmp_path)) as served,
        httpx.AsyncClient(base_url=served.url, timeout=30) as client,
    ):

        async def broken() -> None:
            raise RuntimeError("a bug")

        monkeypatch.setattr(served.runtime.storage, "ping", broken)
        for path, private in (("/healthz", False), ("/api/health", True)):
            answer = await client.get(path)
            assert answer.status_code == 500, (path, answer.text)
            assert answer.json()["error"] == "internal error (RuntimeError); see the server log"
            assert_guarded(answer, private=private)


async def test_under_a_root_path_the_api_is_still_kept_out_of_caches(tmp_path: Path) -> None:
    # `uvicorn --root-path /chat`: the path the app sees starts with the prefix.
    app = create_app(settings_for(tmp_path))
    async with app.router.lifespan_context(app):
        await example.seed(app.state.runtime.storage, "offline:assistant")
        for root in ("", "/chat", "/chat/"):
            transport = httpx.ASGITransport(app=app, root_path=root.rstrip("/"))
            async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
                exported = await c.get(root.rstrip("/") + "/api/me/export")
                assert exported.status_code == 200, (root, exported.text)
                assert_guarded(exported, private=True)
                page = await c.get(root.rstrip("/") + "/")
                assert page.status_code == 200
                assert "cache-control" not in page.headers or (
                    "no-store" not in page.headers["cache-control"]
                )
