"""A connection that drops: after a restart of Redis, and with a call's answer lost.

A call whose connection drops is sent once more on a new connection. The scripts
that answer what they changed (open, deactivate, sweep) keep that answer for the
retry, so a lost answer is not replaced by the answer of a call that found the
work already done: the ``session_deactivated`` hook and the swept sessions
depend on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis.asyncio as aioredis
from chatwright_redis.store import RedisSessionStore

IDLE = 600.0


class AnswerDropper:
    """A TCP relay on loopback to the test's Redis that, when armed, keeps the next
    answer from reaching the client and closes its connection, as a network that
    fails between Redis running a call and the client reading the answer."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.armed = False
        self.dropped = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)

        async def to_redis() -> None:
            while data := await reader.read(65536):
                up_writer.write(data)
                await up_writer.drain()
            up_writer.close()

        async def to_client() -> None:
            while data := await up_reader.read(65536):
                if self.armed:
                    # Redis has run the call; its answer goes nowhere.
                    self.armed = False
                    self.dropped += 1
                    break
                writer.write(data)
                await writer.drain()
            writer.close()
            up_writer.close()

        tasks = {asyncio.ensure_future(to_redis()), asyncio.ensure_future(to_client())}
        self._tasks |= tasks
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        writer.close()
        up_writer.close()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@pytest.fixture
async def dropper(redis_url: str) -> AsyncIterator[tuple[AnswerDropper, str]]:
    """The relay, and the URL of the test's Redis through it."""
    parts = urlsplit(redis_url)
    if parts.scheme != "redis" or parts.hostname is None:
        pytest.skip("the relay speaks plain TCP: CHATWRIGHT_REDIS_URL is not redis://host")
    relay = AnswerDropper(parts.hostname, parts.port or 6379)
    port = await relay.start()
    auth = parts.netloc.rpartition("@")[0]
    netloc = f"{auth}@127.0.0.1:{port}" if auth else f"127.0.0.1:{port}"
    yield relay, urlunsplit(parts._replace(netloc=netloc))
    await relay.close()


@pytest.fixture
async def relayed(
    dropper: tuple[AnswerDropper, str], prefix: str
) -> AsyncIterator[tuple[AnswerDropper, RedisSessionStore]]:
    relay, url = dropper
    store = RedisSessionStore.from_url(url, prefix=prefix, idle_timeout=IDLE)
    yield relay, store
    await store.close()


async def test_a_deactivation_whose_answer_was_lost_still_says_it_deactivated(
    relayed: tuple[AnswerDropper, RedisSessionStore], raw: aioredis.Redis, prefix: str
) -> None:
    relay, store = relayed
    # The script is loaded (and the connection made) before the answer is dropped.
    warm = await store.open("alice", "helper")
    await store.deactivate_once("alice", warm.id)
    opened = await store.open("alice", "helper", chat_id=uuid.uuid4())

    relay.armed = True
    found = await store.deactivate_once("alice", opened.id)

    assert relay.dropped == 1
    assert found is not None
    session, this_call = found
    assert this_call is True  # not "someone else did": the hook fires once, here
    assert session.is_active is False
    # A later call is answered afresh: the session was deactivated before it.
    again = await store.deactivate_once("alice", opened.id)
    assert again is not None and again[1] is False
    # What is kept for retries names sessions by id, nothing of their user.
    kept = [await raw.get(name) async for name in raw.scan_iter(f"{prefix}reply:*")]
    assert kept and not any("alice" in value or "helper" in value for value in kept), kept


async def test_a_sweep_whose_answer_was_lost_still_returns_what_it_swept(
    relayed: tuple[AnswerDropper, RedisSessionStore],
) -> None:
    relay, store = relayed
    await store.sweep(datetime.now(UTC) - timedelta(days=1), limit=10)  # loads the script
    idle = [await store.open(f"user-{n}", "helper") for n in range(3)]

    relay.armed = True
    swept = await store.sweep(datetime.now(UTC) + timedelta(seconds=5), limit=10)

    assert relay.dropped == 1
    assert sorted(s.id for s in swept) == sorted(s.id for s in idle)
    assert await store.count_active() == 0


async def test_an_open_whose_answer_was_lost_opens_one_session(
    relayed: tuple[AnswerDropper, RedisSessionStore],
) -> None:
    relay, store = relayed
    await store.open("bob", "helper")  # loads the script

    relay.armed = True
    opened = await store.open("alice", "helper", client_key="tab-1")

    assert relay.dropped == 1
    sessions = await store.list("alice")
    assert [s.id for s in sessions] == [opened.id] and opened.is_active


@contextlib.contextmanager
def own_redis(tmp_path: Path) -> Iterator[tuple[int, list[subprocess.Popen[bytes]]]]:
    """A redis-server of the test's own on a free port (restartable); stopped at the end."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server is not installed")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    running: list[subprocess.Popen[bytes]] = []
    try:
        yield port, running
    finally:
        for process in running:
            process.terminate()
            process.wait(10)


def start_redis(port: int, tmp_path: Path) -> subprocess.Popen[bytes]:
    command = [shutil.which("redis-server") or "redis-server", "--port", str(port)]
    command += ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(tmp_path)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    for _ in range(200):
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return process
        time.sleep(0.05)
    process.kill()
    raise RuntimeError("redis-server did not start")


async def test_a_restarted_server_is_reconnected_to_without_a_failure(tmp_path: Path) -> None:
    with own_redis(tmp_path) as (port, running):
        running.append(start_redis(port, tmp_path))
        store = RedisSessionStore.from_url(
            f"redis://127.0.0.1:{port}/0", prefix="x:", idle_timeout=IDLE
        )
        try:
            opened = await store.open("alice", "helper")
            stopped = running.pop()
            stopped.terminate()
            stopped.wait(10)
            running.append(start_redis(port, tmp_path))  # empty: it kept nothing
            # The pooled connection is dead; the call goes through on a new one.
            assert await store.heartbeat("alice", opened.id) is None
            again = await store.open("alice", "helper")
            assert await store.get("alice", again.id) == again
        finally:
            await store.close()
