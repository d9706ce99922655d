"""SQLite through ``aiosqlite`` with one thread hop per statement.

``aiosqlite`` runs each call on a SQLite connection in the connection's own
thread, and SQLAlchemy's adapter makes four such calls per statement (make a
cursor, execute, fetch the rows, close the cursor) and one more, a rollback,
each time a connection goes back to the pool. Every call is a round trip
between the event loop and that thread, which costs more than most of the
statements a turn runs. The adapter here runs a statement whole — execute,
rows, row count, last row id — in one call, and skips the rollback of a
connection that holds no transaction (the ``sql`` backend begins its SQLite
transactions itself, so after a commit there is none). What SQLAlchemy sees
is unchanged: the same rows, errors and attributes.

A transaction of a turn's few small statements can also run them in the event
loop's thread (:class:`Inline`, :meth:`OneHopConnection.run_inline`, used by
``SQLStorage.inline_write``): each takes microseconds there, where the trip to
the driver's thread and back costs several times the statement on a quiet
machine and far more on a busy one. Waiting for another process's write lock
is then done in pauses that leave the event loop free, never in SQLite's busy
handler. Everything else keeps to the driver's thread, so a statement that
scans a large table never holds up the event loop.

It relies on two attributes of ``aiosqlite.Connection`` that are not part of
its documented API (``_execute``, which runs a function in the connection's
thread, and ``_conn``, the ``sqlite3`` connection); :func:`dbapi` checks for
them and returns ``None`` when an ``aiosqlite`` without them is installed, and
the engine then uses SQLAlchemy's own adapter.
"""

from __future__ import annotations

import asyncio
import collections
import sqlite3
import time
from typing import Any

from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)
from sqlalchemy.util import concurrency

# SQLAlchemy 2.1 names it await_, 2.0 await_only.
await_: Any = getattr(concurrency, "await_", None) or getattr(concurrency, "await_only")  # noqa: B009

STOP_WAIT = 2.0
"""Seconds a connection that failed to open waits for its thread to stop."""

Outcome = tuple[Any, list[Any], int, int | None]
"""What one statement gave: description, rows, row count, last row id."""


def _run(
    conn: sqlite3.Connection,
    operation: str,
    parameters: Any,
    many: bool,
    busy_ms: int | None = None,
) -> Outcome:
    """One statement on ``conn``, in the connection's thread, with everything it gives.

    :param busy_ms: a busy timeout to set first (milliseconds), or None.
    """
    if busy_ms is not None:
        conn.execute(f"PRAGMA busy_timeout={busy_ms}")
    cursor = conn.cursor()
    try:
        if many:
            cursor.executemany(operation, parameters)
        elif parameters is None:
            cursor.execute(operation)
        else:
            cursor.execute(operation, parameters)
        description = cursor.description
        rows = cursor.fetchall() if description else []
        # Read after the rows: a statement with RETURNING counts them as they are fetched.
        return description, rows, cursor.rowcount, cursor.lastrowid
    finally:
        cursor.close()


class OneHopCursor(AsyncAdapt_aiosqlite_cursor):
    """A DB-API cursor whose statements each take one call into the connection's thread."""

    __slots__ = ("_arraysize", "_description", "_lastrowid", "_rowcount")

    def __init__(self, adapt_connection: AsyncAdapt_aiosqlite_connection) -> None:
        # No driver cursor is kept (making one would be a call of its own).
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._cursor = None  # type: ignore[assignment]
        self._soft_closed_memoized = {}  # type: ignore[assignment]
        self._rows = collections.deque()
        self._description: Any = None
        self._rowcount = -1
        self._lastrowid: int | None = None
        self._arraysize = 1

    @property
    def description(self) -> Any:
        return self._description

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def lastrowid(self) -> int:
        return self._lastrowid  # type: ignore[return-value]

    @property
    def arraysize(self) -> int:
        return self._arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._arraysize = value

    async def _async_soft_close(self) -> None:
        return None  # nothing is open between statements

    def close(self) -> None:
        self._rows.clear()

    async def _call(self, operation: Any, parameters: Any, many: bool) -> None:
        adapted: OneHopConnection = self._adapt_connection  # type: ignore[assignment]
        connection = self._connection
        if adapted.inline is not None:
            outcome = await adapted.inline.run(connection._conn, operation, parameters, many)
        else:
            async with adapted._execute_mutex:
                # The busy timeout an inline transaction left at 0, set again first.
                busy_ms = adapted.zero_busy
                outcome = await connection._execute(
                    _run, connection._conn, operation, parameters, many, busy_ms
                )
                adapted.zero_busy = None
        self._description, rows, self._rowcount, self._lastrowid = outcome
        self._rows = collections.deque(rows)

    async def _execute_async(self, operation: Any, parameters: Any) -> Any:
        await self._call(operation, parameters, False)

    async def _executemany_async(self, operation: Any, seq_of_parameters: Any) -> Any:
        await self._call(operation, seq_of_parameters, True)

    def nextset(self) -> None:
        return None  # sqlite3 has one result set per statement

    def setinputsizes(self, *inputsizes: Any) -> None:
        return None


class Inline:
    """Statements run in the event loop's thread, for a transaction of small statements.

    The connection's busy timeout is 0 meanwhile, and a statement the database
    refuses as locked (another process writes) is tried again after a pause that
    the event loop spends on other work, until ``busy_timeout`` seconds have
    passed; then the error is raised as SQLite would have raised it.
    """

    __slots__ = ("busy_timeout",)

    def __init__(self, busy_timeout: float) -> None:
        self.busy_timeout = busy_timeout

    async def run(
        self, conn: sqlite3.Connection, operation: str, parameters: Any, many: bool
    ) -> Outcome:
        deadline: float | None = None
        pause = FIRST_BUSY_PAUSE
        while True:
            try:
                return _run(conn, operation, parameters, many)
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc):
                    raise
                clock = time.monotonic()
                deadline = clock + self.busy_timeout if deadline is None else deadline
                if clock + pause > deadline:
                    raise
            await asyncio.sleep(pause)
            pause = min(pause * 2, LONGEST_BUSY_PAUSE)


FIRST_BUSY_PAUSE = 0.001
LONGEST_BUSY_PAUSE = 0.05


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return bool(code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED))
    return "locked" in str(exc) or "busy" in str(exc)


class OneHopConnection(AsyncAdapt_aiosqlite_connection):
    """A DB-API connection with :class:`OneHopCursor` cursors and no idle rollback.

    While :attr:`inline` is set (:meth:`run_inline`), its statements, commit and
    rollback run in the event loop's thread instead of the driver's.
    """

    __slots__ = ("inline", "zero_busy")
    _cursor_cls = OneHopCursor  # type: ignore[assignment]

    def __init__(self, dbapi: Any, connection: Any) -> None:
        super().__init__(dbapi, connection)
        self.inline: Inline | None = None
        self.zero_busy: int | None = None
        """While SQLite's busy timeout is 0 (set for inline statements), the timeout
        (ms) the next statement in the driver's thread sets again first; else None.
        Inline transactions follow one another on a connection more often than not,
        so the timeout is not set back and forth around each."""

    def run_inline(self, busy_timeout: float | None) -> None:
        """Run what follows in the event loop's thread (None: in the driver's again).

        :param busy_timeout: seconds a statement waits for another process's lock,
            in pauses that do not block the event loop.
        """
        if busy_timeout is None:
            self.inline = None
            return
        if self.zero_busy is None:
            self._connection._conn.execute("PRAGMA busy_timeout=0")
            self.zero_busy = int(busy_timeout * 1000)
        self.inline = Inline(busy_timeout)

    def commit(self) -> None:
        if self.inline is not None:
            try:
                self._connection._conn.commit()
            except Exception as error:
                self._handle_exception(error)
            return
        super().commit()

    def rollback(self) -> None:
        driver = self._connection._connection
        # Read from the event loop's thread: in_transaction does no thread check, and
        # nothing runs on the connection while SQLAlchemy rolls it back.
        if driver is not None and not driver.in_transaction:
            return
        if self.inline is not None and driver is not None:
            try:
                driver.rollback()
            except Exception as error:
                self._handle_exception(error)
            return
        super().rollback()


class OneHopDbapi(AsyncAdapt_aiosqlite_dbapi):
    """``aiosqlite`` as SQLAlchemy's dialect sees its DB-API, making :class:`OneHopConnection`."""

    def connect(self, *arg: Any, **kw: Any) -> OneHopConnection:
        connection = self.aiosqlite.connect(*arg, **kw)
        connection._thread.daemon = True  # as SQLAlchemy's own dialect makes it
        try:
            return OneHopConnection(self, await_(connection))
        except BaseException:
            # A connection that failed to open asked its thread to stop, which answers
            # on this event loop: let it while the loop is open (a command's loop closes
            # right after its error, and the thread's answer was then a traceback).
            connection._thread.join(STOP_WAIT)
            raise


def dbapi() -> OneHopDbapi | None:
    """The DB-API to give ``create_async_engine(module=…)``; None to use SQLAlchemy's own."""
    import aiosqlite

    if not all(hasattr(aiosqlite.Connection, name) for name in ("_execute", "_conn")):
        return None
    return OneHopDbapi(aiosqlite, sqlite3)
