"""The SQLite adapter that runs each statement in one call into aiosqlite's thread.

What is checked: the engine of the ``sql`` backend uses it; a statement is one
call into the connection's thread (and a connection given back after a commit
makes none), counted, not timed; and what SQLAlchemy sees is unchanged — rows,
RETURNING, row counts, last row ids, executemany, errors, a rollback that
undoes, an uncommitted transaction rolled back when its connection goes back
to the pool. An ``aiosqlite`` without the calls it relies on gets SQLAlchemy's
own adapter. A transaction run in the event loop's thread makes no call into
the driver's thread, rolls back inline, and waits for another process's write
lock without blocking the loop, ending in the usual error after busy_timeout.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from chatwright.plugins.sql import sqlite_driver
from chatwright.plugins.sql.engine import sqlite_engine


class Calls:
    """Counts the calls made into aiosqlite's connection thread."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        original = aiosqlite.Connection._execute

        async def counting(conn: aiosqlite.Connection, fn: Any, *args: Any, **kw: Any) -> Any:
            self.count += 1
            return await original(conn, fn, *args, **kw)

        monkeypatch.setattr(aiosqlite.Connection, "_execute", counting)


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    made = sqlite_engine(
        make_url(f"sqlite+aiosqlite:///{tmp_path}/d.db"), busy_timeout=5, echo=False
    )
    async with made.begin() as conn:
        await conn.execute(sa.text("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT UNIQUE)"))
    yield made
    await made.dispose()


def test_the_backend_engine_uses_the_adapter(engine: AsyncEngine) -> None:
    assert isinstance(engine.dialect.dbapi, sqlite_driver.OneHopDbapi)


async def test_a_statement_is_one_call_and_a_committed_connection_none_more(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with engine.connect() as conn:  # a pooled connection, warm
        await conn.execute(sa.text("SELECT 1"))
    calls = Calls(monkeypatch)
    async with engine.begin() as conn:
        before = calls.count
        await conn.execute(sa.text("INSERT INTO t (name) VALUES ('a')"))
        rows = (await conn.execute(sa.text("SELECT id, name FROM t"))).all()
        assert calls.count - before == 2
    # BEGIN IMMEDIATE, the two statements, the commit; no rollback on the way back.
    assert calls.count == 4
    assert [tuple(r) for r in rows] == [(1, "a")]


async def test_results_are_what_sqlalchemy_expects(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        inserted = await conn.execute(sa.text("INSERT INTO t (name) VALUES ('a')"))
        assert inserted.lastrowid == 1 and inserted.rowcount == 1
        await conn.execute(
            sa.text("INSERT INTO t (name) VALUES (:name)"), [{"name": "b"}, {"name": "c"}]
        )
        returned = await conn.execute(
            sa.text("UPDATE t SET name = name || '!' WHERE id > 1 RETURNING id, name")
        )
        assert sorted(tuple(r) for r in returned.all()) == [(2, "b!"), (3, "c!")]
        updated = await conn.execute(sa.text("UPDATE t SET name = 'z' WHERE id = 1"))
        assert updated.rowcount == 1
        assert (await conn.execute(sa.text("SELECT count(*) FROM t"))).scalar_one() == 3
        result = await conn.execute(sa.text("SELECT id FROM t ORDER BY id"))
        assert result.fetchone() == (1,) and result.fetchmany(5) == [(2,), (3,)]
        assert result.keys() == ["id"]


async def test_errors_and_rollbacks_are_unchanged(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(sa.text("INSERT INTO t (name) VALUES ('a')"))

    async def twice() -> None:
        async with engine.begin() as conn:
            await conn.execute(sa.text("INSERT INTO t (name) VALUES ('b')"))
            await conn.execute(sa.text("INSERT INTO t (name) VALUES ('a')"))

    with pytest.raises(sa.exc.IntegrityError):
        await twice()  # and 'b' goes with it
    async with engine.connect() as conn:
        with pytest.raises(sa.exc.OperationalError, match="no such table"):
            await conn.execute(sa.text("SELECT * FROM nowhere"))
    # A transaction left open goes back to the pool rolled back, not committed.
    async with engine.connect() as conn:
        await conn.execute(sa.text("INSERT INTO t (name) VALUES ('c')"))
    async with engine.connect() as conn:
        names = (await conn.execute(sa.text("SELECT name FROM t ORDER BY id"))).scalars().all()
        assert names == ["a"]


def test_an_aiosqlite_without_its_calls_gets_sqlalchemys_adapter(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delattr(aiosqlite.Connection, "_execute")
    assert sqlite_driver.dbapi() is None
    made = sqlite_engine(
        make_url(f"sqlite+aiosqlite:///{tmp_path}/e.db"), busy_timeout=5, echo=False
    )
    assert not isinstance(made.dialect.dbapi, sqlite_driver.OneHopDbapi)


# -- statements in the event loop's thread ------------------------------------------------


def sqlite_storage(path: Path, busy_timeout: float) -> Any:
    from chatwright.plugins.sql.storage import SQLStorage

    url = make_url(f"sqlite+aiosqlite:///{path}")
    made = sqlite_engine(url, busy_timeout=busy_timeout, echo=False)
    return SQLStorage(url, made, busy_timeout=busy_timeout)


async def test_an_inline_transaction_makes_no_call_into_the_drivers_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = sqlite_storage(tmp_path / "d.db", 5)
    try:
        async with storage.write() as conn:
            await conn.execute(sa.text("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)"))
        calls = Calls(monkeypatch)
        async with storage.inline_write() as conn:
            await conn.execute(sa.text("INSERT INTO t (name) VALUES ('a'), ('b')"))
            rows = (await conn.execute(sa.text("SELECT name FROM t ORDER BY id"))).all()
        assert calls.count == 0
        assert [r.name for r in rows] == ["a", "b"]

        # A failed one rolls back, inline too, and the connection goes back as it was.
        async def failing() -> None:
            async with storage.inline_write() as conn:
                await conn.execute(sa.text("INSERT INTO t (name) VALUES ('c')"))
                await conn.execute(sa.text("INSERT INTO t (id, name) VALUES (1, 'dup')"))

        with pytest.raises(sa.exc.IntegrityError):
            await failing()
        async with storage.write() as conn:
            assert (await conn.scalar(sa.text("SELECT count(*) FROM t"))) == 2
            assert (await conn.scalar(sa.text("PRAGMA busy_timeout"))) == 5000
        assert calls.count > 0  # the plain transaction went to the driver's thread
    finally:
        await storage.close()


async def test_an_inline_transaction_waits_for_another_writer_without_blocking_the_loop(
    tmp_path: Path,
) -> None:
    import asyncio
    import itertools
    import sqlite3
    import time

    from chatwright.errors import StorageError

    path = tmp_path / "d.db"
    storage = sqlite_storage(path, 1.0)
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        async with storage.write() as conn:
            await conn.execute(sa.text("CREATE TABLE t (id INTEGER PRIMARY KEY)"))
        ticks: list[float] = []

        async def ticker() -> None:
            while True:
                ticks.append(time.monotonic())
                await asyncio.sleep(0.005)

        running = asyncio.create_task(ticker())
        other.execute("BEGIN IMMEDIATE")  # another process's write transaction
        asyncio.get_running_loop().call_later(0.3, other.execute, "COMMIT")
        started = time.monotonic()
        async with storage.inline_write() as conn:
            await conn.execute(sa.text("INSERT INTO t DEFAULT VALUES"))
        assert time.monotonic() - started >= 0.25  # it waited for the lock ...
        gaps = [b - a for a, b in itertools.pairwise(ticks)]
        assert gaps and max(gaps) < 0.15  # ... while the loop went on
        # Held past busy_timeout: the usual clear error, not a hang.
        other.execute("BEGIN IMMEDIATE")
        started = time.monotonic()

        async def insert() -> None:
            async with storage.inline_write() as conn:
                await conn.execute(sa.text("INSERT INTO t DEFAULT VALUES"))

        with pytest.raises(StorageError) as caught:
            await insert()
        assert 0.9 <= time.monotonic() - started < 5
        assert "busy" in str(caught.value).lower() or "locked" in str(caught.value).lower()
        other.execute("ROLLBACK")
        running.cancel()
        async with storage.read() as conn:
            assert (await conn.scalar(sa.text("SELECT count(*) FROM t"))) == 1
        # The busy timeout, 0 for inline statements, is SQLite's own again for the next
        # transaction in the driver's thread: it waits for the lock instead of failing.
        async with storage.inline_write() as conn:
            await conn.execute(sa.text("INSERT INTO t DEFAULT VALUES"))
        other.execute("BEGIN IMMEDIATE")
        asyncio.get_running_loop().call_later(0.3, other.execute, "COMMIT")
        async with storage.write() as conn:
            await conn.execute(sa.text("INSERT INTO t DEFAULT VALUES"))
        async with storage.read() as conn:
            assert (await conn.scalar(sa.text("SELECT count(*) FROM t"))) == 3
    finally:
        other.close()
        await storage.close()


async def test_inline_transactions_share_one_kept_connection(tmp_path: Path) -> None:
    import asyncio

    from sqlalchemy import event

    storage = sqlite_storage(tmp_path / "d.db", 5)
    checkouts: list[Any] = []
    event.listen(storage.engine.sync_engine.pool, "checkout", lambda *a: checkouts.append(a))
    try:
        async with storage.write() as conn:
            await conn.execute(sa.text("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)"))
        checkouts.clear()
        for n in range(5):
            async with storage.inline_write() as conn:
                await conn.execute(sa.text("INSERT INTO t (name) VALUES (:n)"), {"n": str(n)})
        assert len(checkouts) == 1  # taken once, kept between transactions

        # A failed transaction is rolled back on it, and the connection is used again.
        async def failing() -> None:
            async with storage.inline_write() as conn:
                await conn.execute(sa.text("INSERT INTO t (name) VALUES ('lost')"))
                await conn.execute(sa.text("INSERT INTO t (id, name) VALUES (1, 'dup')"))

        with pytest.raises(sa.exc.IntegrityError):
            await failing()
        async with storage.inline_write() as conn:
            assert (await conn.scalar(sa.text("SELECT count(*) FROM t"))) == 5
        assert len(checkouts) == 1

        # One cancelled mid-transaction: nothing of it stays, its connection is
        # replaced, and the write lock is free for the next.
        entered = asyncio.Event()

        async def stuck() -> None:
            async with storage.inline_write() as conn:
                await conn.execute(sa.text("INSERT INTO t (name) VALUES ('cancelled')"))
                entered.set()
                await asyncio.sleep(30)

        task = asyncio.create_task(stuck())
        await entered.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        async with storage.inline_write() as conn:
            names = (await conn.execute(sa.text("SELECT name FROM t"))).scalars().all()
        assert "cancelled" not in names and "lost" not in names and len(names) == 5
        assert len(checkouts) == 2
    finally:
        await storage.close()
    # Closing the storage gave the kept connection back: none is left checked out.
    assert storage.engine.sync_engine.pool.checkedout() == 0


async def test_the_kept_connection_leaves_checkpoints_to_the_drivers_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A commit on the loop's thread never copies the log into the database (that can
    take milliseconds); checkpoints run in the driver's thread, so the log stays small."""
    import asyncio

    from chatwright.plugins.sql import inline

    monkeypatch.setattr(inline, "CHECKPOINT_EVERY", 20)
    path = tmp_path / "d.db"
    storage = sqlite_storage(path, 5)
    try:
        async with storage.write() as conn:
            await conn.execute(sa.text("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)"))
        async with storage.inline_write() as conn:
            assert (await conn.scalar(sa.text("PRAGMA wal_autocheckpoint"))) == 0
        for _ in range(600):
            async with storage.inline_write() as conn:
                await conn.execute(sa.text("INSERT INTO t (body) VALUES (:b)"), {"b": "x" * 3000})
            running = storage._inline._checkpoint
            if running is not None:
                await asyncio.wait_for(running, 10)  # each, before the log gets longer
        wal = path.with_name("d.db-wal")
        # 600 commits of a page or two each would be 3-5 MB of log without checkpoints.
        assert wal.stat().st_size < 1_500_000, wal.stat().st_size
        async with storage.read() as conn:
            assert (await conn.scalar(sa.text("SELECT count(*) FROM t"))) == 600
            # The pool's other connections keep SQLite's automatic checkpoints.
            assert (await conn.scalar(sa.text("PRAGMA wal_autocheckpoint"))) == 1000
    finally:
        await storage.close()


def test_a_storage_used_from_one_event_loop_after_another(tmp_path: Path) -> None:
    """Each loop gets its own kept connection; the earlier one is not left checked out."""
    import asyncio

    storage = sqlite_storage(tmp_path / "d.db", 5)

    async def insert(name: str) -> None:
        async with storage.inline_write() as conn:
            await conn.execute(sa.text("INSERT INTO t (name) VALUES (:n)"), {"n": name})

    async def first() -> None:
        async with storage.write() as conn:
            await conn.execute(sa.text("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)"))
        await insert("a")

    async def second() -> int:
        await insert("b")
        kept = storage._inline._kept
        assert kept is not None and kept[1] is not earlier
        assert earlier.closed or earlier.invalidated  # given up, not left checked out
        pool = storage.engine.sync_engine.pool
        out = pool.checkedout()
        async with storage.read() as conn:
            assert (await conn.scalar(sa.text("SELECT count(*) FROM t"))) == 2
        await storage.close()
        return out

    asyncio.run(first())
    assert storage._inline._kept is not None
    earlier = storage._inline._kept[1]
    assert asyncio.run(second()) == 1


async def test_a_kept_transaction_begins_and_commits_on_the_driver_and_sqlalchemy_joins_it(
    tmp_path: Path,
) -> None:
    """An inline transaction on the kept connection begins and commits straight on SQLite
    (SQLAlchemy's transaction costs more than its statements); a statement SQLAlchemy runs
    in it joins that transaction, and a failure rolls back all of it, however begun."""
    from sqlalchemy import event

    from chatwright.plugins.sql.inline import inline_capable

    storage = sqlite_storage(tmp_path / "d.db", 5)
    meta = sa.MetaData()
    t = sa.Table(
        "t", meta, sa.Column("id", sa.Integer, primary_key=True), sa.Column("name", sa.Text)
    )
    insert = t.insert()  # one statement object: run straight on the driver once seen
    names = sa.select(t.c.name).order_by(t.c.id)
    sent: list[str] = []
    try:
        async with storage.write() as conn:
            await conn.run_sync(meta.create_all)
        for n in range(3):
            async with storage.inline_write() as conn:
                await conn.execute(insert, {"name": f"warm {n}"})
        driver = inline_capable(storage._inline._kept[1])
        assert driver is not None
        raw = driver._connection._conn
        raw.set_trace_callback(sent.append)

        async with storage.inline_write() as conn:
            await conn.execute(insert, {"name": "direct"})
            assert raw.in_transaction and not conn.in_transaction()
        assert [s.split()[0] for s in sent] == ["BEGIN", "INSERT", "COMMIT"], sent
        assert not raw.in_transaction

        sent.clear()
        async with storage.inline_write() as conn:
            await conn.execute(insert, {"name": "mixed 1"})
            await conn.execute(sa.text("INSERT INTO t (name) VALUES ('mixed 2')"))
            assert conn.in_transaction()  # SQLAlchemy's, joined to the driver's
        assert [s.split()[0] for s in sent] == ["BEGIN", "INSERT", "INSERT", "COMMIT"], sent

        async def failing(then: str) -> None:
            async with storage.inline_write() as conn:
                await conn.execute(insert, {"name": "lost"})
                if then == "sqlalchemy":
                    await conn.execute(sa.text("INSERT INTO t (id, name) VALUES (1, 'dup')"))
                raise RuntimeError("the block failed")

        with pytest.raises(sa.exc.IntegrityError):
            await failing("sqlalchemy")
        with pytest.raises(RuntimeError):
            await failing("direct")
        assert not raw.in_transaction
        async with storage.read() as conn:
            stored = (await conn.execute(names)).scalars().all()
        assert stored == ["warm 0", "warm 1", "warm 2", "direct", "mixed 1", "mixed 2"]

        # Anyone listening to SQLAlchemy's cursor events sees the BEGIN as a statement.
        seen: list[str] = []

        def listen(*args: Any) -> None:
            seen.append(args[2])

        event.listen(storage.engine.sync_engine, "before_cursor_execute", listen)
        try:
            async with storage.inline_write() as conn:
                await conn.execute(insert, {"name": "listened"})
        finally:
            event.remove(storage.engine.sync_engine, "before_cursor_execute", listen)
        assert [s.split()[0] for s in seen] == ["BEGIN", "INSERT"], seen

        # Someone starts listening inside a transaction begun on the driver: the
        # statements SQLAlchemy runs next join it, with no second BEGIN.
        seen.clear()
        async with storage.inline_write() as conn:
            await conn.execute(insert, {"name": "before listening"})
            event.listen(storage.engine.sync_engine, "before_cursor_execute", listen)
            try:
                await conn.execute(insert, {"name": "listened to"})
            finally:
                event.remove(storage.engine.sync_engine, "before_cursor_execute", listen)
        assert [s.split()[0] for s in seen] == ["INSERT"], seen
        async with storage.read() as conn:
            assert (await conn.execute(names)).scalars().all()[-2:] == [
                "before listening",
                "listened to",
            ]
    finally:
        await storage.close()
