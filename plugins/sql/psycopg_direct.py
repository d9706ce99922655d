"""Direct statements on PostgreSQL: run on the psycopg connection under SQLAlchemy's.

:mod:`.direct` prepares a statement once and runs it again without SQLAlchemy's
execution; on PostgreSQL it runs here, on the ``psycopg.AsyncConnection`` of the
SQLAlchemy connection, in the transaction psycopg begins with the first statement,
or in autocommit. Errors are wrapped as SQLAlchemy wraps them, and a connection
lost under a statement is invalidated as SQLAlchemy invalidates one (:func:`lost`).

A turn's small transactions (``SQLStorage.inline_write``) also begin, commit and
switch to autocommit here, on the driver, rather than through SQLAlchemy's
``begin()``, ``commit()`` and isolation level, which do the same through its
greenlet and its connection characteristics: together a sixth of a turn's own CPU
on PostgreSQL. SQLAlchemy still commits when a statement it ran itself joined the
transaction (see ``SQLStorage._transaction``), and its pool still rolls back
whatever a connection given back left open.
"""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import exc
from sqlalchemy.engine.interfaces import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection


def lost(sync: Any, error: BaseException) -> None:
    """As SQLAlchemy does on a disconnect (in its greenlet: closing is I/O): invalidate
    the connection, and have the pool replace every connection made before it too
    (they most likely died with it)."""
    wrapper = sync._dbapi_connection
    if wrapper is not None and not sync.invalidated:
        sync.engine.pool._invalidate(wrapper, error)
        sync.invalidate(error)


class PsycopgRunner:
    """Runs prepared statements on a connection's psycopg (async) connection, in the
    transaction SQLAlchemy began on it, or in autocommit when it is set so."""

    __slots__ = ("connection",)

    def __init__(self, connection: Any) -> None:
        self.connection = connection

    def _wrapped(
        self, error: Exception, sql: str, values: Any, dialect: Dialect
    ) -> exc.StatementError:
        """``error`` as SQLAlchemy would raise it, telling whether the connection is lost."""
        import psycopg

        # A lost connection, as SQLAlchemy tells one: the caller invalidates it,
        # so that the pool never resets (rolls back on) a dead connection.
        gone = bool(self.connection.broken or dialect.is_disconnect(error, None, None))  # type: ignore[arg-type]
        return exc.DBAPIError.instance(
            sql, values, error, psycopg.Error, dialect=dialect, connection_invalidated=gone
        )

    async def commit(self, dialect: Dialect) -> None:
        """Commit the transaction psycopg began with the block's first statement."""
        import psycopg

        try:
            await self.connection.commit()
        except psycopg.Error as error:
            raise self._wrapped(error, "COMMIT", None, dialect) from error

    async def autocommit(self, on: bool, dialect: Dialect) -> None:
        """Switch autocommit (no statement: psycopg only notes it, outside a transaction)."""
        import psycopg

        try:
            await self.connection.set_autocommit(on)
        except psycopg.Error as error:
            raise self._wrapped(error, "SET autocommit", None, dialect) from error

    async def run(
        self, sql: str, values: Any, many: bool, dialect: Dialect, *, names: bool = True
    ) -> tuple[Any, list[Any], int, None]:
        """Run ``sql``: its description (None when it returns no rows), rows, row count.

        Without ``names`` the description of a statement that returns rows is an empty
        tuple: psycopg makes an object per column for ``cursor.description``, which
        cost more than the rows of a turn's statements, and the caller knows its
        statement's columns already.
        """
        import psycopg

        try:
            async with self.connection.cursor() as cursor:
                if many:
                    await cursor.executemany(sql, values)
                    return None, [], cursor.rowcount, None
                await cursor.execute(sql, values)
                result = cursor.pgresult
                if result is None or not (
                    result.nfields or result.status in _tuples()
                ):  # as cursor.description tells a statement without rows
                    return None, [], cursor.rowcount, None
                rows = await cursor.fetchall()
                described = cursor.description if names else ()
                return described, rows, cursor.rowcount, None
        except psycopg.Error as error:
            raise self._wrapped(error, sql, values, dialect) from error


@functools.cache
def _tuples() -> frozenset[int]:
    """The statuses of results that hold rows, even none (``SELECT ;``)."""
    from psycopg.pq import ExecStatus

    states = ("TUPLES_OK", "SINGLE_TUPLE", "TUPLES_CHUNK")
    return frozenset(int(getattr(ExecStatus, s)) for s in states if hasattr(ExecStatus, s))


def psycopg_runner(conn: AsyncConnection) -> PsycopgRunner | None:
    """A runner on ``conn``'s psycopg connection; None when it has none."""
    sync = conn.sync_connection
    if sync is None:
        return None
    driver = getattr(sync.connection.dbapi_connection, "driver_connection", None)
    if driver is None or not hasattr(driver, "cursor"):
        return None
    return PsycopgRunner(driver)


class DriverTransaction:
    """A turn's transaction (``SQLStorage.inline_write``) on psycopg's connection.

    psycopg begins it with the block's first statement; :meth:`commit` commits it
    there, or through SQLAlchemy when a statement SQLAlchemy ran itself began
    SQLAlchemy's transaction. With ``alone`` (one statement, atomic by itself) the
    connection is in autocommit for the block and switched back at its end;
    :meth:`abandon`, after a block that failed, switches it back too, or discards
    the connection when it cannot: the pool must never hand out a connection in
    autocommit, whose transactions would not be ones.
    """

    __slots__ = ("alone", "autocommitted", "conn", "runner")

    def __init__(self, conn: AsyncConnection, runner: PsycopgRunner, *, alone: bool) -> None:
        self.conn = conn
        self.runner = runner
        self.alone = alone
        self.autocommitted = False

    async def begin(self) -> None:
        if self.alone:
            await self.runner.autocommit(True, self.conn.dialect)
            self.autocommitted = True

    async def commit(self) -> None:
        conn = self.conn
        if conn.in_transaction():
            await conn.commit()
        elif not self.alone:
            try:
                await self.runner.commit(conn.dialect)
            except exc.DBAPIError as error:
                if error.connection_invalidated:
                    await conn.run_sync(lost, error)
                raise
        if self.autocommitted:
            self.autocommitted = False
            await self.runner.autocommit(False, conn.dialect)

    async def abandon(self) -> None:
        """After the block, however it ended (nothing to do when :meth:`commit` ran)."""
        if not self.autocommitted or self.conn.invalidated:
            return
        self.autocommitted = False
        try:
            await self.runner.autocommit(False, self.conn.dialect)
        except Exception:
            await self.conn.invalidate()
