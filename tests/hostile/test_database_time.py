"""Review finding "unbounded database time", replayed through the real server.

A database connection that accepts and then never answers used to hold a
request for as long as the stall lasted, and a request that found the pool
exhausted was a 500 "internal error (TimeoutError)". Both are now a 503 with
the error body, within ``storage.statement_timeout`` and ``storage.pool_timeout``.
The stall is a TCP proxy on loopback in front of PostgreSQL that stops
forwarding on demand.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.engine import make_url

from tests.hostile.conftest import MakeServer, bearer


class StallingProxy:
    """Forwards TCP to a port on loopback until :meth:`stall`; then holds every byte."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.stalled = asyncio.Event()
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def stall(self) -> None:
        self.stalled.set()

    def resume(self) -> None:
        self.stalled.clear()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            while data := await reader.read(65536):
                if self.stalled.is_set():
                    return  # swallow it and everything after: the peer waits forever
                writer.write(data)
                await writer.drain()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.stalled.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.Event().wait()  # accepted, never answered
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        for pump in (self._pump(reader, up_writer), self._pump(up_reader, writer)):
            task = asyncio.create_task(pump)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[StallingProxy]:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        try:
            yield self
        finally:
            for task in list(self._tasks):
                task.cancel()
            self._server.close()


@pytest.fixture
def pg_only(db_url: str) -> str:
    if not db_url.startswith("postgresql"):
        pytest.skip("the stall and the pool are PostgreSQL's")
    return db_url


async def test_stalled_database_is_a_503_within_the_statement_timeout(
    pg_only: str, make_server: MakeServer
) -> None:
    target = make_url(pg_only)
    async with StallingProxy(target.port or 5432).running() as proxy:
        via_proxy = target.set(host="127.0.0.1", port=proxy.port)
        server = await make_server(
            storage={
                "url": via_proxy.render_as_string(hide_password=False),
                "statement_timeout": 1.5,
            }
        )
        client = server.client
        assert (await client.get("/api/sessions", headers=bearer("eve"))).status_code == 200

        proxy.stall()
        started = time.monotonic()
        answer = await client.get("/api/sessions", headers=bearer("eve"))
        took = time.monotonic() - started

        assert answer.status_code == 503, answer.text
        assert "statement_timeout" in answer.json()["error"]
        assert took < 10

        # Once the database answers again, so does the server.
        proxy.resume()
        answer = await client.get("/api/sessions", headers=bearer("eve"))
        assert answer.status_code == 200, answer.text


async def test_exhausted_pool_is_a_503_with_the_error_body(
    pg_only: str, make_server: MakeServer
) -> None:
    server = await make_server(storage={"pool_size": 1, "max_overflow": 0, "pool_timeout": 0.5})
    client = server.client
    assert (await client.get("/api/sessions", headers=bearer("eve"))).status_code == 200

    async with server.runtime.storage.read():  # type: ignore[attr-defined]
        answer = await client.get("/api/sessions", headers=bearer("eve"))

    assert answer.status_code == 503, answer.text
    assert "no free connection" in answer.json()["error"]
    assert (await client.get("/api/sessions", headers=bearer("eve"))).status_code == 200
