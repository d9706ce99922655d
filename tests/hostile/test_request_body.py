"""Review finding "unbounded request bodies", replayed against a real uvicorn server.

The size check used to read only ``Content-Length``: a chunked body of any
size, sent without a token, was read and parsed in full before the 401. Here
64 MiB go out in chunks, unauthenticated; the answer must be 413 with the
error body, and the application behind the limit must have been handed little
more than the bound, not the whole body.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

import httpx

from chatwright.plugins.example import assistant as example
from chatwright.plugins.server.app import create_app
from chatwright.plugins.server.limits import body_limit
from tests.harness import uvicorn_serving
from tests.hostile.conftest import SECRET
from tests.hostile.serving import settings_for

CHUNK = 64 * 1024
TOTAL = 64 * 1024 * 1024
READ = 256 * 1024
"""The most the server's transport reads from the socket at once (asyncio's and uvloop's),
and so the most one body message can hold."""


class Counted:
    """An ASGI app that counts the body bytes the wrapped app's stack reads."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.read = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def counting() -> Any:
            message = await receive()
            self.read += len(message.get("body", b""))
            return message

        await self.app(scope, counting, send)


async def send_chunked(port: int, path: str, headers: str = "") -> tuple[int, bytes, int]:
    """POST ``TOTAL`` bytes as chunks until the server answers: (status, body, bytes sent)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Transfer-Encoding: chunked\r\n{headers}\r\n".encode()
    )
    answer = asyncio.create_task(read_answer(reader))
    sent = 0
    chunk = f"{CHUNK:x}\r\n".encode() + b"[" * CHUNK + b"\r\n"
    # The server may close the connection after its answer while chunks are still going.
    with contextlib.suppress(ConnectionResetError, BrokenPipeError):
        while sent < TOTAL and not answer.done():
            writer.write(chunk)
            await writer.drain()
            sent += CHUNK
    status, body = await asyncio.wait_for(answer, 30)
    writer.close()
    return status, body, sent


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """The status and body of an answer with a Content-Length, read as it comes.

    The server closes the connection with the rest of the request unread, which
    may reset it: what arrived before counts.
    """
    raw = b""
    while True:
        head, found, body = raw.partition(b"\r\n\r\n")
        if found:
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            if len(body) >= length:
                return int(head.split(b" ", 2)[1]), body[:length]
        try:
            data = await reader.read(65536)
        except ConnectionResetError:
            data = b""
        if not data:
            raise AssertionError(f"the connection ended before a whole answer: {raw!r}")
        raw += data


async def test_a_chunked_body_without_a_token_is_refused_once_past_the_bound(
    tmp_path: Path,
) -> None:
    settings = settings_for(tmp_path, server={"auth": "jwt", "jwt_secret": SECRET})
    app = Counted(create_app(settings))
    limit = body_limit(settings)
    async with uvicorn_serving(app) as port:
        status, body, sent = await send_chunked(port, "/api/chat")

    assert status == 413, body
    assert "request body too large" in json.loads(body)["error"]
    # What the app was handed: the bound and at most one read beyond it.
    assert app.read <= limit + READ
    assert sent < TOTAL


async def test_a_chunked_body_in_local_mode_is_refused_too(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    app = Counted(create_app(settings))
    async with uvicorn_serving(app) as port:
        status, _, sent = await send_chunked(port, "/api/sessions")

    assert status == 413
    assert app.read <= body_limit(settings) + READ
    assert sent < TOTAL


async def test_a_declared_length_past_the_bound_is_refused_before_reading(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, server={"auth": "jwt", "jwt_secret": SECRET})
    app = Counted(create_app(settings))
    async with uvicorn_serving(app) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            + f"Content-Length: {TOTAL}\r\n\r\n".encode()
        )
        status, _ = await asyncio.wait_for(read_answer(reader), 30)
        writer.close()

    assert status == 413
    assert app.read == 0


async def test_a_bundle_imports_whole_under_a_root_path(tmp_path: Path) -> None:
    """docs/http.md: an import's body may be as large as a bundle (4 MiB). Under
    ``uvicorn --root-path`` the scope's path holds the prefix, and the import was bound
    like a message (413 past some 208 KB)."""
    app = create_app(settings_for(tmp_path))
    async with uvicorn_serving(app, "127.0.0.1", root_path="/chat") as port:
        await example.seed(app.state.runtime.storage, "offline:assistant")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            exported = await client.get("/api/agents/assistant/export?format=json")
            assert exported.status_code == 200, exported.text
            bundle = json.loads(exported.text)
            bundle["agent"]["system_prompt"] = "Be brief. " * 40_000  # 400 KB
            sent = await client.post("/api/agents/import", json={"bundle": bundle, "dry_run": True})
            assert sent.status_code == 200, sent.text[:300]
            # A message is still bound as one, under the root path too.
            chat = {"agent_name": "assistant", "message": "x" * 400_000}
            refused = await client.post("/api/chat", json=chat)
            assert refused.status_code == 413, refused.text[:300]
