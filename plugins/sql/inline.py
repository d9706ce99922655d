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
"""

from __future__ import annotations

import asyncio
import contextlib

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from chatwright.plugins.sql.direct import DirectConnection, Statements
from chatwright.plugins.sql.sqlite_driver import OneHopConnection


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

    async def take(self) -> DirectConnection | None:
        """The connection, made when there is none; None when the driver cannot run
        statements inline. The caller holds this process's write lock."""
        loop = asyncio.get_running_loop()
        kept = self._kept
        if kept is not None and kept[0] is loop:
            conn = kept[1]
            if conn.sync_connection is not None and not conn.closed and not conn.invalidated:
                return conn
        conn = DirectConnection(self.engine)
        await conn.start()
        adapted = inline_capable(conn)
        if adapted is None:
            await conn.close()
            return None
        adapted.run_inline(self.busy_timeout)
        conn.direct(self.statements, adapted)
        if kept is not None and kept[0] is loop:
            await self.discard(kept[1])
        self._kept = (loop, conn)
        return conn

    async def failed(self, conn: DirectConnection, error: BaseException) -> None:
        """Roll back a failed transaction on ``conn``, or discard it."""
        if isinstance(error, TimeoutError | asyncio.CancelledError):
            await self.discard(conn)
            return
        try:
            if conn.in_transaction():
                await conn.rollback()
        except BaseException:
            await self.discard(conn)
            raise

    async def discard(self, conn: AsyncConnection) -> None:
        kept = self._kept
        if kept is not None and kept[1] is conn:
            self._kept = None
        with contextlib.suppress(Exception):
            if conn.sync_connection is not None and not conn.closed:
                await conn.invalidate()

    async def close(self) -> None:
        kept, self._kept = self._kept, None
        if kept is not None and kept[0] is asyncio.get_running_loop():
            with contextlib.suppress(Exception):
                await kept[1].close()
