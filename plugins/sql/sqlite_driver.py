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

It relies on two attributes of ``aiosqlite.Connection`` that are not part of
its documented API (``_execute``, which runs a function in the connection's
thread, and ``_conn``, the ``sqlite3`` connection); :func:`dbapi` checks for
them and returns ``None`` when an ``aiosqlite`` without them is installed, and
the engine then uses SQLAlchemy's own adapter.
"""

from __future__ import annotations

import collections
import sqlite3
from typing import Any

from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)

Outcome = tuple[Any, list[Any], int, int | None]
"""What one statement gave: description, rows, row count, last row id."""


def _run(conn: sqlite3.Connection, operation: str, parameters: Any, many: bool) -> Outcome:
    """One statement on ``conn``, in the connection's thread, with everything it gives."""
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
        async with self._adapt_connection._execute_mutex:
            connection = self._connection
            outcome: Outcome = await connection._execute(
                _run, connection._conn, operation, parameters, many
            )
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


class OneHopConnection(AsyncAdapt_aiosqlite_connection):
    """A DB-API connection with :class:`OneHopCursor` cursors and no idle rollback."""

    __slots__ = ()
    _cursor_cls = OneHopCursor  # type: ignore[assignment]

    def rollback(self) -> None:
        driver = self._connection._connection
        # Read from the event loop's thread: in_transaction does no thread check, and
        # nothing runs on the connection while SQLAlchemy rolls it back.
        if driver is not None and not driver.in_transaction:
            return
        super().rollback()


class OneHopDbapi(AsyncAdapt_aiosqlite_dbapi):
    """``aiosqlite`` as SQLAlchemy's dialect sees its DB-API, making :class:`OneHopConnection`."""

    def connect(self, *arg: Any, **kw: Any) -> OneHopConnection:
        adapted = super().connect(*arg, **kw)
        return OneHopConnection(self, adapted._connection)


def dbapi() -> OneHopDbapi | None:
    """The DB-API to give ``create_async_engine(module=…)``; None to use SQLAlchemy's own."""
    import aiosqlite

    if not all(hasattr(aiosqlite.Connection, name) for name in ("_execute", "_conn")):
        return None
    return OneHopDbapi(aiosqlite, sqlite3)
