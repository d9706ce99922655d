"""A client that leaves in the middle of a streamed turn, against a real uvicorn server.

docs/http.md promises: "A client that disconnects does not cancel the turn; it
completes and is stored." The client here is a plain socket that sends
``POST /api/chat/stream``, reads the first events of a turn whose model streams
its reply slowly, and then closes the connection (a FIN), or resets it (an RST).
Afterwards:

- the turn went on: its tool exchange and its whole reply are stored;
- the chat is given back: the next turn on it answers 200, well within
  ``storage.turn_wait`` (1 s here), not 409;
- the model calls of the turn are counted in the user's usage, exactly as the
  provider reported them;
- the server logged no error and no traceback;
- no task of the stream is left running.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from chatwright.plugins.example import assistant as example
from chatwright.registry import Plugins
from tests.hostile.serving import Served, serving, settings_for
from tests.streamed_usage import StreamedModels

AGENT = example.AGENT
REPLY = "Added milk to your list. " * 12
SCRIPT = [
    {
        "tool_calls": [{"name": "add_task", "args": {"title": "milk"}}],
        "usage": {"input_tokens": 120, "output_tokens": 15},
    },
    {"content": REPLY, "usage": {"input_tokens": 180, "output_tokens": 70}},
    {"content": "Still here.", "usage": {"input_tokens": 300, "output_tokens": 5}},
]
TOKENS_READ = 3
PAUSE = 0.05  # between the pieces of the reply: about 5 s for all of it


class Records(logging.Handler):
    """Every record logged while it is installed."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def problems(self) -> list[str]:
        """Errors, and anything logged with a traceback."""
        return [
            f"{r.name}: {r.getMessage()}"
            for r in self.records
            if r.levelno >= logging.ERROR or r.exc_info is not None or "Traceback" in r.getMessage()
        ]


@contextlib.contextmanager
def recording() -> Iterator[Records]:
    """Records of the root logger and uvicorn's (which do not propagate to the root)."""
    handler = Records()
    loggers = [
        logging.getLogger(),
        logging.getLogger("uvicorn"),
        logging.getLogger("uvicorn.access"),
    ]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield handler
    finally:
        for logger in loggers:
            logger.removeHandler(handler)


async def events_then_leave(served: Served, chat_id: str, how: str) -> list[tuple[str, Any]]:
    """Stream a turn on a raw connection, read events up to the third token, and leave
    (``close``: a FIN; ``reset``: an RST). The events read."""
    body = json.dumps({"agent_name": AGENT, "chat_id": chat_id, "message": "add milk"}).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    writer.write(
        b"POST /api/chat/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 200"), head
    events: list[tuple[str, Any]] = []
    buffer = b""
    while sum(name == "token" for name, _ in events) < TOKENS_READ:
        data = await asyncio.wait_for(reader.read(4096), 10)
        assert data, f"the stream ended early, after {events}"
        buffer += data
        for line in buffer.split(b"\n"):
            if line.startswith(b"event: "):
                events.append((line[7:].decode(), None))
            elif line.startswith(b"data: ") and events and events[-1][1] is None:
                events[-1] = (events[-1][0], json.loads(line[6:]))
        buffer = buffer[buffer.rfind(b"\n") + 1 :]
    if how == "reset":
        writer.transport.abort()
    else:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return events


def stream_tasks() -> list[asyncio.Task[Any]]:
    """The tasks of streamed turns still running in this process."""
    return [
        t
        for t in asyncio.all_tasks()
        if not t.done() and "stream_turn" in getattr(t.get_coro(), "__qualname__", "")
    ]


async def stored_reply(client: httpx.AsyncClient, chat_id: str, seconds: float) -> list[Any]:
    """The chat's messages once its turn's reply is stored (waiting at most ``seconds``)."""
    deadline = time.monotonic() + seconds
    while True:
        page = (await client.get(f"/api/chats/{chat_id}/messages")).json()["messages"]
        if any(m["role"] == "ai" and m["text"] == REPLY for m in page):
            return list(page)
        assert time.monotonic() < deadline, f"the turn's reply was not stored: {page}"
        await asyncio.sleep(0.1)


@pytest.mark.parametrize("how", ["close", "reset"])
async def test_a_client_that_leaves_mid_stream_leaves_the_turn_to_finish(
    tmp_path: Path, how: str
) -> None:
    plugins = Plugins.load()
    plugins.register(StreamedModels(), "streamed-models")
    settings = settings_for(tmp_path, plugins, storage={"turn_wait": 1.0})
    async with serving(settings, plugins) as served:
        await served.runtime.storage.agents.update(
            AGENT, model="streamed:first-last", model_settings={"responses": SCRIPT, "pause": PAUSE}
        )
        with recording() as logged:
            async with httpx.AsyncClient(base_url=served.url, timeout=30) as client:
                opened = await client.post("/api/sessions", json={"agent_name": AGENT, "new": True})
                chat_id = opened.json()["chat_id"]
                events = await events_then_leave(served, chat_id, how)
                # What came before the client left: the tool exchange, then the reply begins.
                names = [name for name, _ in events]
                assert names[:2] == ["tool_call", "tool_result"], names
                assert "done" not in names and "error" not in names
                assert "".join(d["text"] for n, d in events if n == "token") == REPLY[:9]
                # The turn goes on without the client: it is still streaming its reply.
                assert stream_tasks()

                page = await stored_reply(client, chat_id, 30)
                assert [m["role"] for m in page] == ["human", "ai", "tool", "ai"]
                listed = (await client.get("/api/chats")).json()["chats"]
                assert [c["messages"] for c in listed] == [4]

                # The chat is free: the next turn answers, not 409 after turn_wait.
                body = {"agent_name": AGENT, "chat_id": chat_id, "message": "still there?"}
                nxt = await client.post("/api/chat", json=body)
                assert nxt.status_code == 200, nxt.text
                assert nxt.json()["response"] == "Still here."

                # Every model call of the turn left is counted, as reported.
                totals = (await client.get("/api/usage")).json()["totals"]
                assert totals["model_calls"] == 3
                assert totals["input_tokens"] == 120 + 180 + 300
                assert totals["output_tokens"] == 15 + 70 + 5
                metrics = (await client.get("/metrics")).text
                assert (
                    'chatwright_tokens_total{kind="input",model="streamed:first-last"} 600.0'
                    in (metrics)
                )
            await asyncio.sleep(0.2)
            assert stream_tasks() == []
        assert logged.problems() == []
