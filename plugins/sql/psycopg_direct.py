"""Direct statements on PostgreSQL: run on the psycopg connection under SQLAlchemy's.

:mod:`.direct` prepares a statement once and runs it again without SQLAlchemy's
execution; on PostgreSQL it runs here, on the ``psycopg.AsyncConnection`` of the
SQLAlchemy connection, in the transaction SQLAlchemy began on it (psycopg begins
it with the first statement) or in autocommit. Errors are wrapped as SQLAlchemy
wraps them, and a connection lost under a statement is invalidated as SQLAlchemy
invalidates one (:func:`lost`).
"""

from __future__ import annotations

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

    async def run(
        self, sql: str, values: Any, many: bool, dialect: Dialect
    ) -> tuple[Any, list[Any], int, None]:
        import psycopg

        try:
            async with self.connection.cursor() as cursor:
                if many:
                    await cursor.executemany(sql, values)
                    return None, [], cursor.rowcount, None
                await cursor.execute(sql, values)
                description = cursor.description
                rows = await cursor.fetchall() if description is not None else []
                return description, rows, cursor.rowcount, None
        except psycopg.Error as error:
            # A lost connection, as SQLAlchemy tells one: the caller invalidates it,
            # so that the pool never resets (rolls back on) a dead connection.
            gone = bool(self.connection.broken or dialect.is_disconnect(error, None, None))  # type: ignore[arg-type]
            raise exc.DBAPIError.instance(
                sql, values, error, psycopg.Error, dialect=dialect, connection_invalidated=gone
            ) from error


def psycopg_runner(conn: AsyncConnection) -> PsycopgRunner | None:
    """A runner on ``conn``'s psycopg connection; None when it has none."""
    sync = conn.sync_connection
    if sync is None:
        return None
    driver = getattr(sync.connection.dbapi_connection, "driver_connection", None)
    if driver is None or not hasattr(driver, "cursor"):
        return None
    return PsycopgRunner(driver)
