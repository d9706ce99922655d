"""The connection SQLite's inline write transactions run on, kept between them.

A turn's transactions run their statements in the event loop's thread
(``SQLStorage.inline_write``, :mod:`.sqlite_driver`). This process's write
transactions on SQLite take turns (:class:`.engine.SerialWrites`), so one
connection serves every inline one, one after the other, and stays checked out
of the pool, inline, between them: taking a connection from the pool, setting
it up and giving it back cost as much as a turn's statements. A transaction
that fails is rolled back on it; one cut off (a time limit, a cancellation)
discards it, and the next transaction takes a new one. A connection belongs to
the event loop that took it.

A commit that passes SQLite's automatic checkpoint threshold copies the
write-ahead log into the database file then and there, which on the event
loop's thread stalls every request for milliseconds (tens on a busy machine).
The kept connection does not checkpoint: every :data:`CHECKPOINT_EVERY`
commits, a passive checkpoint runs in the driver's thread on a connection of
the pool instead, beside whatever the loop does (SQLite lets writers go on
meanwhile); the other connections keep SQLite's automatic checkpoints.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3

from sqlalchemy import exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from chatwright.plugins.sql.direct import DirectConnection, Statements
from chatwright.plugins.sql.sqlite_driver import OneHopConnection

log = logging.getLogger(__name__)

CHECKPOINT_EVERY = 100
"""Commits of the kept connection between two checkpoints (in the driver's thread)."""


def inline_capable(conn: AsyncConnection) -> OneHopConnection | None:
    """The driver connection under ``conn`` when it can run statements inline."""
    sync = conn.sync_connection
    driver = sync.connection.dbapi_connection if sync is not None else None
    return driver if isinstance(driver, OneHopConnection) else None


class KeptConnection:
    """The kept inline connection of one storage (see the module docstring)."""

    def __init__(self, engine: AsyncEngine, statements: Statements, busy_timeout: float) -> None:
        self.engine = engine
        self.statements = statements
        self.busy_timeout = busy_timeout
        self._kept: tuple[asyncio.AbstractEventLoop, DirectConnection] | None = None
        self._commits = 0
        self._checkpoint: asyncio.Task[None] | None = None

    async def take(self) -> DirectConnection | None:
        """The connection, made when there is none; None when the driver cannot run
        statements inline. The caller holds this process's write lock."""
        loop = asyncio.get_running_loop()
        kept = self._kept
        if kept is not None and kept[0] is loop and _usable(kept[1]):
            return kept[1]
        conn = DirectConnection(self.engine)
        await conn.start()
        adapted = inline_capable(conn)
        if adapted is None:
            await conn.close()
            return None
        adapted.run_inline(self.busy_timeout)
        conn.direct(self.statements, adapted)
        adapted._connection._conn.execute("PRAGMA wal_autocheckpoint=0")  # see committed()
        if kept is not None:
            # Broken, or another event loop's (one that ran before this one).
            await self.discard(kept[1])
        self._kept = (loop, conn)
        return conn

    @staticmethod
    async def begin(conn: DirectConnection) -> None:
        """``BEGIN IMMEDIATE`` on ``conn``'s driver, without SQLAlchemy's transaction
        (a statement SQLAlchemy runs later joins it: see :func:`.engine.begin_inline`);
        through SQLAlchemy when anyone listens to its cursor events or echo is on."""
        driver = inline_capable(conn)
        engine = conn.sync_engine
        if driver is None or driver.inline is None or engine.echo:
            await conn.begin()
            return
        if engine.dispatch.before_cursor_execute:
            await conn.begin()
            return
        await _run(conn, driver, "BEGIN IMMEDIATE")

    @staticmethod
    async def commit(conn: DirectConnection) -> None:
        """Commit what :meth:`begin` began: through SQLAlchemy when a statement it ran
        joined the transaction (or it began it), else on the driver."""
        driver = inline_capable(conn)
        if conn.in_transaction() or driver is None or driver.inline is None:
            await conn.commit()
            return
        await _run(conn, driver, "COMMIT")

    def committed(self) -> None:
        """Count a commit; every CHECKPOINT_EVERY, start a checkpoint off the loop."""
        self._commits += 1
        if self._commits % CHECKPOINT_EVERY or (
            self._checkpoint is not None and not self._checkpoint.done()
        ):
            return
        self._checkpoint = asyncio.get_running_loop().create_task(
            self._run_checkpoint(), name="sqlite checkpoint"
        )

    async def _run_checkpoint(self) -> None:
        try:
            async with self.engine.connect() as conn:
                # On the driver itself: through SQLAlchemy it would run inside a
                # transaction, where SQLite cannot checkpoint.
                raw = await conn.get_raw_connection()
                driver = raw.driver_connection
                assert driver is not None
                cursor = await driver.execute("PRAGMA wal_checkpoint(PASSIVE)")
                await cursor.close()
        except Exception as exc:
            log.warning("database checkpoint failed: %s", exc)

    async def failed(self, conn: DirectConnection, error: BaseException) -> None:
        """Roll back a failed transaction on ``conn``; discard it when that is not
        certain to leave it outside any transaction (the error itself goes on)."""
        if isinstance(error, TimeoutError | asyncio.CancelledError):
            await self.discard(conn)
            return
        try:
            # Also when SQLAlchemy's transaction is over but not cleared (a failed commit).
            await conn.rollback()
            # A COMMIT that SQLite refused (a deferred constraint) ends SQLAlchemy's
            # transaction but leaves SQLite's open, holding the write lock.
            driver = inline_capable(conn)
            raw = driver._connection._conn if driver is not None else None
            if raw is not None and raw.in_transaction:
                raw.rollback()
            if raw is None or raw.in_transaction:
                await self.discard(conn)
        except Exception:
            await self.discard(conn)

    async def discard(self, conn: AsyncConnection) -> None:
        """Give ``conn`` up: closed on the driver, and back to the pool as invalid."""
        kept = self._kept
        if kept is not None and kept[1] is conn:
            self._kept = None
        with contextlib.suppress(Exception):
            if conn.sync_connection is not None and not conn.closed:
                await conn.invalidate()
        with contextlib.suppress(Exception):
            await conn.close()

    async def close(self) -> None:
        checkpoint, self._checkpoint = self._checkpoint, None
        if checkpoint is not None and checkpoint.get_loop() is asyncio.get_running_loop():
            with contextlib.suppress(BaseException):
                await checkpoint
        kept, self._kept = self._kept, None
        if kept is not None:
            with contextlib.suppress(Exception):
                await kept[1].close()


async def _run(conn: DirectConnection, driver: OneHopConnection, statement: str) -> None:
    """``statement`` on ``driver`` in the event loop's thread, its error as SQLAlchemy's."""
    assert driver.inline is not None
    try:
        await driver.inline.run(driver._connection._conn, statement, None, False)
    except sqlite3.Error as error:
        raise exc.DBAPIError.instance(
            statement, None, error, sqlite3.Error, dialect=conn.dialect
        ) from error


def _usable(conn: DirectConnection) -> bool:
    """Whether ``conn`` is open, on a live driver connection, outside any transaction."""
    if conn.sync_connection is None or conn.closed or conn.invalidated:
        return False
    driver = inline_capable(conn)
    try:
        return driver is not None and not driver._connection._conn.in_transaction
    except Exception:
        return False
