"""SQLite write transactions of one process queue on a lock before ``BEGIN IMMEDIATE``.

What is checked: many concurrent write transactions of one process all commit
within a short ``busy_timeout`` (SQLite's busy handler alone, sleeping between
tries, lets most of them fail); waiting for the lock ends after
``busy_timeout`` (or ``statement_timeout``) in the error a locked database
gives; another connection holding SQLite's write lock still gives that error;
the lock is given back when a transaction fails or is cancelled; a write
transaction opened inside another one of the same task is refused at once;
reads never wait for it; a ``:memory:`` database still works.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from chatwright.errors import StorageError
from chatwright.plugins.sql.storage import SQLStorage
from chatwright.settings import load_settings

LOCKED = "locked by another writer"


def storage_on(url: str, **keys: float) -> SQLStorage:
    return SQLStorage.from_settings(load_settings(overrides={"storage": {"url": url, **keys}}))


async def make_table(storage: SQLStorage) -> None:
    # Unbounded: a slow first connection is not what the tests are about.
    async with storage._transaction(None, write=True, bounded=False) as conn:
        await conn.execute(sa.text("CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER)"))


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "writes.db"


async def count(storage: SQLStorage) -> int:
    async with storage.read() as conn:
        return int(await conn.scalar(sa.text("SELECT count(*) FROM t")) or 0)


async def test_concurrent_writers_of_one_process_all_commit(path: Path) -> None:
    # 14 writers, each holding its transaction for 20 ms: 0.28 s in a queue, within
    # the 0.5 s bound; through SQLite's busy handler alone, whose sleeps grow to
    # 100 ms and miss the moments the lock is free, the last few time out.
    storage = storage_on(f"sqlite:///{path}", busy_timeout=0.5, statement_timeout=0)
    await make_table(storage)

    async def one(n: int) -> None:
        async with storage.write() as conn:
            await conn.execute(sa.text("INSERT INTO t (n) VALUES (:n)"), {"n": n})
            await asyncio.sleep(0.02)

    try:
        outcomes = await asyncio.gather(*(one(n) for n in range(14)), return_exceptions=True)
        failed = [o for o in outcomes if isinstance(o, BaseException)]
        assert failed == []
        assert await count(storage) == 14
    finally:
        await storage.close()


async def test_waiting_for_a_writer_of_this_process_ends_after_busy_timeout(path: Path) -> None:
    storage = storage_on(f"sqlite:///{path}", busy_timeout=0.2, statement_timeout=0)
    await make_table(storage)
    entered, done = asyncio.Event(), asyncio.Event()

    async def holder() -> None:
        async with storage.write() as conn:
            await conn.execute(sa.text("INSERT INTO t (n) VALUES (1)"))
            entered.set()
            await done.wait()

    task = asyncio.create_task(holder())
    try:
        await entered.wait()
        started = time.monotonic()
        with pytest.raises(StorageError, match=LOCKED) as error:
            async with storage.write():
                pass
        waited = time.monotonic() - started
        assert 0.15 < waited < 2.0
        assert error.value.http_status == 503
        # Reads do not queue behind the writer.
        assert await asyncio.wait_for(count(storage), 1.0) == 0
        done.set()
        await task
        assert await count(storage) == 1
    finally:
        done.set()
        await storage.close()


async def test_statement_timeout_bounds_the_wait_too(path: Path) -> None:
    storage = storage_on(f"sqlite:///{path}", busy_timeout=5.0, statement_timeout=0.5)
    await make_table(storage)
    entered, done = asyncio.Event(), asyncio.Event()

    async def holder() -> None:
        async with storage._transaction(None, write=True, bounded=False):
            entered.set()
            await done.wait()

    task = asyncio.create_task(holder())
    try:
        await entered.wait()
        started = time.monotonic()
        with pytest.raises(StorageError, match=r"storage\.statement_timeout"):
            async with storage.write():
                pass
        assert time.monotonic() - started < 2.0
        done.set()
        await task
        # The lock was given back (else this waits busy_timeout and fails).
        async with storage._transaction(None, write=True, bounded=False) as conn:
            await conn.execute(sa.text("INSERT INTO t (n) VALUES (2)"))
    finally:
        done.set()
        await storage.close()


async def test_another_connection_holding_the_write_lock_gives_the_busy_error(
    path: Path,
) -> None:
    storage = storage_on(f"sqlite:///{path}", busy_timeout=0.2, statement_timeout=0)
    await make_table(storage)
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("INSERT INTO t (n) VALUES (7)")
        started = time.monotonic()
        with pytest.raises(StorageError, match=LOCKED):
            async with storage.write() as conn:
                await conn.execute(sa.text("INSERT INTO t (n) VALUES (8)"))
        assert time.monotonic() - started >= 0.15
        other.execute("COMMIT")
        # The failed transaction gave this process's lock back.
        async with storage.write() as conn:
            await conn.execute(sa.text("INSERT INTO t (n) VALUES (9)"))
        assert await count(storage) == 2
    finally:
        other.close()
        await storage.close()


async def test_a_failed_or_cancelled_transaction_gives_the_lock_back(path: Path) -> None:
    storage = storage_on(f"sqlite:///{path}", busy_timeout=0.2, statement_timeout=0)
    await make_table(storage)
    entered = asyncio.Event()

    async def stuck() -> None:
        async with storage.write() as conn:
            await conn.execute(sa.text("INSERT INTO t (n) VALUES (1)"))
            entered.set()
            await asyncio.sleep(60)

    try:
        task = asyncio.create_task(stuck())
        await entered.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

        async def failing() -> None:
            async with storage.write() as conn:
                await conn.execute(sa.text("INSERT INTO t (n) VALUES (2)"))
                raise RuntimeError("boom")

        with pytest.raises(RuntimeError, match="boom"):
            await failing()
        async with storage.write() as conn:
            await conn.execute(sa.text("INSERT INTO t (n) VALUES (3)"))
        async with storage.read() as conn:
            rows = (await conn.execute(sa.text("SELECT n FROM t"))).scalars().all()
        assert rows == [3]  # the cancelled and the failed ones were rolled back
    finally:
        await storage.close()


async def test_a_write_inside_a_write_of_the_same_task_is_refused_at_once(path: Path) -> None:
    storage = storage_on(f"sqlite:///{path}", busy_timeout=5.0, statement_timeout=0)
    await make_table(storage)
    try:

        async def nested() -> None:
            async with storage.write() as conn:
                await conn.execute(sa.text("INSERT INTO t (n) VALUES (1)"))
                async with storage.write():
                    pass

        started = time.monotonic()
        with pytest.raises(StorageError, match="opened inside another"):
            await nested()
        assert time.monotonic() - started < 2.0
        assert await count(storage) == 0
        # A write after a read, or a read inside a write, is fine.
        async with storage.write() as conn:
            await conn.execute(sa.text("INSERT INTO t (n) VALUES (1)"))
            assert await count(storage) == 0
        assert await count(storage) == 1
    finally:
        await storage.close()


async def test_a_memory_database_takes_concurrent_writers() -> None:
    storage = storage_on("sqlite:///:memory:", busy_timeout=1.0, statement_timeout=0)
    await make_table(storage)

    async def one(n: int) -> None:
        async with storage.write() as conn:
            await conn.execute(sa.text("INSERT INTO t (n) VALUES (:n)"), {"n": n})
            await asyncio.sleep(0.01)

    try:
        await asyncio.gather(*(one(n) for n in range(10)))
        assert await count(storage) == 10
    finally:
        await storage.close()
