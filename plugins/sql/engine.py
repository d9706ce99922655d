"""Database URLs and the SQLite engine of the ``sql`` backend.

A ``storage.url`` is normalized to the async driver SQLAlchemy needs
(``aiosqlite`` or ``psycopg`` 3), and rendered without its password wherever
it is shown. SQLite gets an engine tuned for a server: WAL journal (readers
never wait for the writer), a busy timeout, foreign keys on, and ``BEGIN
IMMEDIATE`` for transactions that write, so two writers queue instead of
failing halfway; reads use deferred transactions. Within one process, write
transactions also queue on :class:`SerialWrites` before they begin, so that
SQLite's busy handler (which sleeps, up to 100 ms at a time, whatever happens
to the lock meanwhile) only ever waits for other processes.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event, exc
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool
from sqlalchemy.util import await_only

from chatwright.errors import StorageError
from chatwright.plugins.sql.errors import DETAILS, locked

log = logging.getLogger(__name__)


class QuietReset(logging.Filter):
    """SQLAlchemy's pool logs a connection it took back and could not reset (the
    database went away meanwhile: a server restarted, a pooler's server connection
    dropped) as an error with its traceback. The pool discards that connection and
    the next request gets a new one, so it is one line here, a warning with the
    error's text, as the config listener's own loss of its connection is."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and str(record.msg).startswith("Exception during reset"):
            error = record.exc_info[1]
            reason = " ".join(str(error).split()) or type(error).__name__
            record.msg = "a pooled connection could not be reset and was discarded (%s)"
            record.args = (reason,)
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


logging.getLogger(f"{AsyncAdaptedQueuePool.__module__}.{AsyncAdaptedQueuePool.__name__}").addFilter(
    QuietReset()
)


def normalize_url(raw: str, setting: str = "storage.url") -> URL:
    """Pick the async driver for a URL: sqlite -> aiosqlite, postgresql -> psycopg."""
    from chatwright.redaction import hide_url

    try:
        url = make_url(raw)
    except (exc.ArgumentError, ValueError):  # a port that is not a number: ValueError
        raise StorageError(
            f"{setting} {hide_url(raw)!r} is not a database URL; use "
            "sqlite:///path/to/file.db or postgresql://user@host:5432/dbname"
        ) from None
    backend = url.get_backend_name()
    if backend == "sqlite":
        if "\x00" in (url.database or ""):
            raise StorageError(
                f"{setting}: the SQLite file name holds a NUL character (%00), which no "
                "file name can hold; remove it"
            )
        return url.set(drivername="sqlite+aiosqlite")
    if backend in {"postgresql", "postgres"}:
        return url.set(drivername="postgresql+psycopg")
    raise StorageError(
        f"{setting} uses {backend!r}; the sql backend supports sqlite and postgresql"
    )


def refused_query(url: URL, error: Exception, setting: str = "storage.url") -> StorageError:
    """Why the driver refused ``url``'s query (``?timeout=abc``): an error naming it."""
    return StorageError(
        f"{setting} {redact(url)!r} has a query parameter its driver cannot take "
        f"({str(error)[:200]}); correct or remove it"
    )


def redact(url: URL) -> str:
    """``url`` for messages, logs and the health answer: its password hidden, in its
    user part or as a query parameter (``?password=``), and every other credential
    parameter (:func:`chatwright.redaction.hide_url`)."""
    from chatwright.redaction import hide_url

    return hide_url(url.render_as_string(hide_password=False))


def sqlite_engine(url: URL, *, busy_timeout: float, echo: bool) -> AsyncEngine:
    memory = url.database in (None, "", ":memory:")
    # Not bound to the driver's thread: a turn's statements may run in the event
    # loop's (see sqlite_driver.Inline), never two threads at once on one connection.
    connect_args = {"timeout": busy_timeout, "check_same_thread": False}
    kwargs: dict[str, Any] = {"echo": echo, "connect_args": connect_args}
    if memory:
        # Every new connection to :memory: would see a new, empty database, so keep
        # exactly one, and let tasks queue for it rather than share it mid-transaction.
        kwargs.update(poolclass=AsyncAdaptedQueuePool, pool_size=1, max_overflow=0)
    from chatwright.plugins.sql.sqlite_driver import dbapi

    module = dbapi()
    if module is not None:
        kwargs["module"] = module  # one call into aiosqlite's thread per statement
    engine = create_async_engine(url, **kwargs)

    @event.listens_for(engine.sync_engine, "connect")
    def configure(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
        if not memory:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def begin(conn: Connection) -> None:
        write = conn.get_execution_options().get("chatwright_write", True)
        statement = "BEGIN IMMEDIATE" if write else "BEGIN"
        if module is not None and begin_inline(conn, statement):
            return
        conn.exec_driver_sql(statement)

    return engine


def begin_inline(conn: Connection, statement: str) -> bool:
    """Begin on an inline connection (see sqlite_driver) without SQLAlchemy's execution
    of the statement; False when the connection is not inline or anyone listens to
    cursor events (they see it run as any other statement)."""
    from chatwright.plugins.sql.sqlite_driver import OneHopConnection

    driver: Any = conn.connection.dbapi_connection
    if not isinstance(driver, OneHopConnection) or driver.inline is None:
        return False
    raw = driver._connection._conn
    if raw.in_transaction:
        # Begun on the driver already (KeptConnection.begin): SQLAlchemy's joins it,
        # also when someone started listening to cursor events meanwhile.
        return True
    engine = conn.engine
    if engine.echo or engine.dispatch.before_cursor_execute:
        return False
    try:
        await_only(driver.inline.run(raw, statement, None, False))
    except sqlite3.Error as error:
        raise exc.DBAPIError.instance(
            statement, None, error, sqlite3.Error, dialect=engine.dialect
        ) from error
    return True


class SerialWrites:
    """One write transaction at a time per SQLite database within this process.

    A write transaction takes this lock before its ``BEGIN IMMEDIATE`` and gives
    it back once the transaction has ended (committed, rolled back, discarded or
    cancelled), so writers of this process wait in a queue that hands the lock on
    the moment it is free, and SQLite's own lock is only contended by other
    processes. Waiting here is bounded by ``busy_timeout`` and ends in the same
    error as a database locked by another process.

    A task that opens a write transaction while it holds one would wait on itself:
    that is refused at once (it never worked on SQLite: the second transaction
    waited for the first's lock until ``busy_timeout``).

    :param busy_timeout: seconds a writer waits for the lock.
    :param description: how the database is named in the log.
    """

    def __init__(self, busy_timeout: float, description: str) -> None:
        self.busy_timeout = busy_timeout
        self.description = description
        # asyncio.Lock belongs to one event loop; a process may run several in turn.
        self._queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Queue] = (
            weakref.WeakKeyDictionary()
        )

    async def take(self) -> _Queue:
        """Wait for the lock (:class:`StorageError` after ``busy_timeout``); hand what
        this returns to :meth:`give_back` once the transaction has ended."""
        loop = asyncio.get_running_loop()
        queue = self._queues.get(loop)
        if queue is None:
            queue = self._queues[loop] = _Queue()
        task = asyncio.current_task()
        if task is not None and queue.holder is task:
            log.error(
                "database %s: a write transaction was opened inside another one of the "
                "same task; SQLite has one writer at a time, so it would wait on itself",
                self.description,
                stack_info=True,
            )
            raise StorageError(
                f"a write transaction was opened inside another (SQLite has one writer); {DETAILS}"
            )
        lock = queue.lock
        if lock.locked() or queue.waiting:
            queue.waiting += 1
            try:
                async with asyncio.timeout(self.busy_timeout):
                    await lock.acquire()
            except TimeoutError:
                raise locked(self.description) from None
            finally:
                queue.waiting -= 1
        else:
            await lock.acquire()  # free, nobody queued: taken at once, no timer to arm
        queue.holder = task
        return queue

    @staticmethod
    def give_back(queue: _Queue) -> None:
        queue.holder = None
        queue.lock.release()

    @asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        """Hold the lock for the block (:meth:`take`, :meth:`give_back`)."""
        queue = await self.take()
        try:
            yield
        finally:
            self.give_back(queue)


class _Queue:
    """The writers of one event loop: the lock, who holds it, how many wait for it."""

    __slots__ = ("holder", "lock", "waiting")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.holder: asyncio.Task[Any] | None = None
        self.waiting = 0


PING_AFTER_IDLE = 1.0
"""Seconds a pooled PostgreSQL connection may sit unused before it is checked again."""


def ping_when_idle(engine: AsyncEngine, idle: float = PING_AFTER_IDLE) -> None:
    """Check a pooled connection before use only when it sat unused for ``idle`` seconds.

    SQLAlchemy's ``pool_pre_ping`` checks every checkout: a round trip (and a
    transaction, as ``pg_stat_database`` counts them) for each of a turn's
    transactions. A connection given back a moment ago is as good as checked;
    one that waited longer, across a database restart or an idle timeout, is
    pinged, and a dead one is replaced before anyone uses it (the pool retries
    on ``DisconnectionError``). A connection that dies within ``idle`` seconds
    of its last use fails its statement once (503), and SQLAlchemy then
    replaces every pooled connection older than the failure.
    """
    pool = engine.sync_engine.pool

    @event.listens_for(pool, "checkin")
    def given_back(dbapi_connection: Any, record: Any) -> None:
        record.info["chatwright_used"] = time.monotonic()

    @event.listens_for(pool, "checkout")
    def taken(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        used = record.info.get("chatwright_used")
        if used is None or time.monotonic() - used < idle:
            return  # new, or used a moment ago
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as error:
            raise exc.DisconnectionError(f"a pooled connection is dead: {error}") from error
