"""The ``sql`` storage backend on SQLAlchemy 2 (async): SQLite and PostgreSQL.

One :class:`SQLStorage` owns one async engine and exposes the stores of
:mod:`chatwright.stores` over the tables in :mod:`.schema`. Every statement is
awaited on the engine's async driver (``aiosqlite`` or ``psycopg`` 3), so no
call blocks the event loop, and a connection is held only for the statement
or transaction at hand, never across a model call.

PostgreSQL uses a connection pool whose connections are checked before use
when they sat idle (:func:`.engine.ping_when_idle`); SQLite's engine, the URLs and
the translation of driver errors are in :mod:`.engine` and :mod:`.errors`,
migrations in :mod:`.migrate`, and what several processes coordinate through
on PostgreSQL in :mod:`.postgres`. The stores are in :mod:`.stores` and
:mod:`.chats` (rows become dataclasses through :mod:`.rows`), application tables
in :mod:`.records`, token usage, budgets and chat summaries in :mod:`.usage`.

Longer than 450 lines because its kinds of transaction (SQLAlchemy's, SQLite's
kept connection, a turn's on psycopg's connection: :mod:`.inline`,
:mod:`.psycopg_direct`) share one bound in time and one error translation, and
are read together.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from chatwright.errors import StorageError
from chatwright.plugins.sql import migrate
from chatwright.plugins.sql.audit import SQLAuditStore
from chatwright.plugins.sql.chats import SQLMessageStore
from chatwright.plugins.sql.deadline import Deadline
from chatwright.plugins.sql.direct import DirectConnection, Statements
from chatwright.plugins.sql.engine import (
    SerialWrites,
    normalize_url,
    ping_when_idle,
    redact,
    refused_query,
    sqlite_engine,
)
from chatwright.plugins.sql.errors import DatabaseErrors
from chatwright.plugins.sql.inline import KeptConnection, inline_capable
from chatwright.plugins.sql.pending import SQLPendingStore
from chatwright.plugins.sql.postgres import Coordination
from chatwright.plugins.sql.psycopg_direct import DriverTransaction, psycopg_runner
from chatwright.plugins.sql.records import SQLRecordStore
from chatwright.plugins.sql.sessions import SQLSessionStore
from chatwright.plugins.sql.stores import (
    SQLAgentStore,
    SQLCustomizationStore,
    SQLMemoryStore,
    SQLToolStore,
)
from chatwright.plugins.sql.turns import SQLTurnStore
from chatwright.plugins.sql.usage import SQLSummaryStore, SQLUsageStore
from chatwright.plugins.sql.user_transactions import UserTransactions
from chatwright.plugins.sql.userdata import SQLUserData
from chatwright.settings import Settings

log = logging.getLogger(__name__)


class SQLStorage:
    """Storage on one SQLAlchemy async engine.

    :param url: the database, with its async driver (see :func:`.engine.normalize_url`).
    :param engine: the engine statements run on.
    :param direct_url: where the config listener connects (PostgreSQL); ``url``
        when None.
    :param pooler: what sits between ``url`` and PostgreSQL (``storage.pooler``);
        through a ``"transaction"`` pooler with no ``direct_url``, nothing LISTENs
        (see :meth:`watch_config`).
    :param users: the extension point for per-request row-level security: what
        starts each transaction made for a user, and what a new application
        table with a ``user_id`` column gets (see
        :class:`~chatwright.plugins.sql.user_transactions.UserTransactions`). The
        default scopes by column and does nothing; the ``supabase`` backend is
        this class with its ``RowLevelSecurity``.
    :param statement_timeout: seconds one transaction may take, waiting for its
        connection included (0: no bound); see :meth:`_transaction`.
    :param turn_lease: seconds a chat's turn lease lasts unless renewed (see
        :mod:`.turns`); a crashed process's turn blocks its chat this long.
    :param turn_wait: seconds a turn waits for another turn of its chat to end.
    :param busy_timeout: seconds a SQLite write transaction waits for the write
        lock, held by this process (:class:`.engine.SerialWrites`) or another.
    """

    def __init__(
        self,
        url: URL,
        engine: AsyncEngine,
        direct_url: URL | None = None,
        *,
        users: UserTransactions | None = None,
        statement_timeout: float = 0,
        turn_lease: float = 60.0,
        turn_wait: float = 300.0,
        pooler: str = "none",
        busy_timeout: float = 5.0,
    ) -> None:
        self.url = url
        # Asked for by every transaction: worked out once.
        self._dialect = url.get_backend_name()
        self._description = redact(url)
        self.busy_timeout = busy_timeout
        self.statement_timeout = statement_timeout
        self.turn_lease = turn_lease
        self.turn_wait = turn_wait
        self.engine = engine
        self.direct_url = direct_url or url
        self.pooler = pooler
        # A LISTEN holds a server session: through a transaction pooler it would sit on
        # a connection shared with others and miss what is sent while it is not its turn.
        self.can_listen = pooler != "transaction" or direct_url is not None
        self.users = users if users is not None else UserTransactions()
        self.writes = (
            SerialWrites(busy_timeout, self._description) if self._dialect == "sqlite" else None
        )
        # Statements an inline SQLite transaction runs on the driver once seen (.direct).
        self._statements = Statements(engine.dialect)
        # The connection inline transactions run on, one after the other (SQLite only;
        # not for an in-memory database, whose one connection everything shares).
        self._inline = KeptConnection(engine, self._statements, busy_timeout)
        self._keep_inline = url.database not in (None, "", ":memory:")
        self.coordination = Coordination(self.direct_url, self._description)
        self.agents = SQLAgentStore(self)
        self.tools = SQLToolStore(self)
        self.sessions = SQLSessionStore(self)
        self.messages = SQLMessageStore(self)
        self.customizations = SQLCustomizationStore(self)
        self.memories = SQLMemoryStore(self)
        self.records = SQLRecordStore(self)
        self.pending = SQLPendingStore(self)
        self.audit = SQLAuditStore(self)
        self.usage = SQLUsageStore(self)
        self.summaries = SQLSummaryStore(self)
        self.user_data = SQLUserData(self)
        self.turns: SQLTurnStore = SQLTurnStore(self)

    @classmethod
    def from_settings(
        cls, settings: Settings, *, users: UserTransactions | None = None
    ) -> SQLStorage:
        from chatwright.plugins.sql.settings import SQLStorageSettings

        cfg = settings.section(SQLStorageSettings)
        url = normalize_url(settings.storage.url)
        timeout = cfg.statement_timeout
        lease, wait = cfg.turn_lease, cfg.turn_wait
        if url.get_backend_name() == "sqlite":
            try:
                engine = sqlite_engine(url, busy_timeout=cfg.busy_timeout, echo=cfg.echo)
            except (ValueError, TypeError) as error:
                raise refused_query(url, error) from None
            return cls(
                url,
                engine,
                users=users,
                statement_timeout=timeout,
                turn_lease=lease,
                turn_wait=wait,
                busy_timeout=cfg.busy_timeout,
            )
        connect_args: dict[str, Any] = {"connect_timeout": 10}
        if timeout > 0 and cfg.pooler == "none":
            # The server gives up on a statement at the same bound (a transaction
            # pooler may refuse the startup option or pass it on to other clients).
            # Added to the URL's own options (connect_args would replace them).
            given = url.query.get("options", "")
            own = " ".join(given) if isinstance(given, tuple) else given
            bound = f"-c statement_timeout={int(timeout * 1000)}"
            connect_args["options"] = f"{own} {bound}".strip()
        if cfg.pooler == "transaction":
            # A transaction pooler hands each transaction to any server connection:
            # statements prepared on one would be missing on the next.
            connect_args["prepare_threshold"] = None
        try:
            engine = create_async_engine(
                url,
                pool_size=cfg.pool_size,
                max_overflow=cfg.max_overflow,
                pool_timeout=cfg.pool_timeout,
                pool_recycle=cfg.pool_recycle,
                echo=cfg.echo,
                connect_args=connect_args,
            )
        except (ValueError, TypeError) as error:
            raise refused_query(url, error) from None
        ping_when_idle(engine)
        direct = normalize_url(cfg.direct_url, "storage.direct_url") if cfg.direct_url else None
        return cls(
            url,
            engine,
            direct_url=direct,
            users=users,
            statement_timeout=timeout,
            turn_lease=lease,
            turn_wait=wait,
            pooler=cfg.pooler,
        )

    @property
    def dialect(self) -> str:
        return self._dialect

    @property
    def _statements_alone(self) -> bool:
        """Whether a write of one statement may run without a transaction around it:
        on PostgreSQL, when entering a user does nothing (see :meth:`inline_write`)."""
        return self.dialect == "postgresql" and type(self.users).enter is UserTransactions.enter

    @property
    def description(self) -> str:
        return self._description

    # -- connections -------------------------------------------------------

    @asynccontextmanager
    async def read(self, user_id: str | None = None) -> AsyncIterator[AsyncConnection]:
        """A connection for reads (a deferred transaction, rolled back at the end).

        :param user_id: the user the statements run for; None for framework
            (admin) statements, handed to ``users.enter`` (see the class).
        """
        async with self._transaction(user_id, write=False) as conn:
            yield conn

    @asynccontextmanager
    async def write(self, user_id: str | None = None) -> AsyncIterator[AsyncConnection]:
        """A transaction that commits at the end (``BEGIN IMMEDIATE`` on SQLite)."""
        async with self._transaction(user_id, write=True) as conn:
            yield conn

    @asynccontextmanager
    async def inline_write(
        self, user_id: str | None = None, *, one_statement: bool = False
    ) -> AsyncIterator[AsyncConnection]:
        """:meth:`write` for a transaction of a few small, indexed statements (a turn's).

        On SQLite (with :mod:`.sqlite_driver`) they run in the event loop's thread:
        each takes microseconds there, where a trip to the driver's thread and back
        costs more than the statement, and far more on a busy machine. Waiting for
        another process's write lock still does not block the loop (see
        :class:`.sqlite_driver.Inline`). Elsewhere the same as :meth:`write`.

        :param one_statement: the block runs one statement, atomic by itself. On
            PostgreSQL, when entering a user does nothing (no row-level security),
            it then runs without ``BEGIN`` and ``COMMIT``: one round trip to the
            server instead of three.
        """
        if self.writes is not None and self._keep_inline:
            async with self._kept_transaction(user_id) as conn:
                yield conn
            return
        alone = one_statement and self._statements_alone
        async with self._transaction(user_id, write=True, inline=True, alone=alone) as conn:
            yield conn

    @asynccontextmanager
    async def _kept_transaction(self, user_id: str | None) -> AsyncIterator[AsyncConnection]:
        """An inline transaction on SQLite, on the connection kept for them
        (:class:`.inline.KeptConnection`), once this process's write lock is taken."""
        assert self.writes is not None
        limit = self.statement_timeout if self.statement_timeout > 0 else None
        with self._errors():
            held = None
            conn = None
            try:
                async with Deadline(limit):
                    held = await self.writes.take()
                    conn = await self._inline.take()
                    if conn is None:
                        # Not inline after all (another SQLite adapter): as any write.
                        self._keep_inline = False
                        SerialWrites.give_back(held)
                        held = None
                        async with self._transaction(user_id, write=True) as plain:
                            yield plain
                        return
                    await self._inline.begin(conn)
                    await self.users.enter(conn, user_id)
                    yield conn
                    await self._inline.commit(conn)
                    self._inline.committed()
            except BaseException as error:
                if conn is not None:
                    await self._inline.failed(conn, error)
                raise
            finally:
                if held is not None:
                    SerialWrites.give_back(held)

    @asynccontextmanager
    async def _transaction(
        self,
        user_id: str | None,
        *,
        write: bool,
        bounded: bool = True,
        inline: bool = False,
        alone: bool = False,
    ) -> AsyncIterator[AsyncConnection]:
        """One transaction, bounded in time by ``statement_timeout`` when ``bounded``.

        The bound covers waiting for a connection and everything done with it, so a
        database that accepts connections and never answers holds no request for
        longer. A connection abandoned that way is discarded, not rolled back: the
        rollback would wait on the same silent server.

        On SQLite a write transaction first waits for this process's write lock
        (:class:`.engine.SerialWrites`, within the same bound) and holds it until
        the transaction has ended, however it ends.

        ``alone`` (PostgreSQL, a write of one statement): no transaction around it,
        the statement commits by itself (autocommit).

        An ``inline`` write on PostgreSQL is begun, committed and switched to
        autocommit on psycopg's connection (:mod:`.psycopg_direct`), unless a
        statement SQLAlchemy ran itself joined it; a connection left in autocommit
        by a failed block is switched back, or discarded.
        """
        limit = self.statement_timeout if bounded and self.statement_timeout > 0 else None
        with self._errors():
            held = None
            try:
                direct = DirectConnection(self.engine) if inline else None
                conn = direct if direct is not None else self.engine.connect()
                adapted = None
                driver: DriverTransaction | None = None  # a turn's, on PostgreSQL
                try:
                    async with Deadline(limit):
                        if write and self.writes is not None:
                            held = await self.writes.take()
                        await conn.start()
                        if inline:
                            adapted = inline_capable(conn)
                            if adapted is not None and direct is not None:
                                adapted.run_inline(self.busy_timeout)
                                direct.direct(self._statements, adapted)
                            elif direct is not None and self.dialect == "postgresql" and write:
                                runner = psycopg_runner(conn)
                                if runner is not None:
                                    direct.direct(self._statements, runner)
                                    driver = DriverTransaction(conn, runner, alone=alone)
                        if driver is not None:
                            await driver.begin()
                        elif alone:
                            await conn.execution_options(isolation_level="AUTOCOMMIT")
                        elif write:
                            await conn.begin()
                        else:
                            await conn.execution_options(chatwright_write=False)
                        await self.users.enter(conn, user_id)
                        yield conn
                        if driver is not None:
                            await driver.commit()
                        elif write and not alone:
                            await conn.commit()
                except (TimeoutError, asyncio.CancelledError):
                    if conn.sync_connection is not None and not conn.closed:
                        await conn.invalidate()
                    raise
                finally:
                    if adapted is not None:
                        adapted.run_inline(None)
                    if driver is not None:
                        await driver.abandon()
                    # Before the write lock is given back.
                    if conn.sync_connection is not None:
                        await conn.close()
            finally:
                if held is not None:
                    SerialWrites.give_back(held)

    def _errors(self) -> DatabaseErrors:
        return DatabaseErrors(self.description, self.statement_timeout)

    async def upsert(
        self,
        table: sa.Table,
        values: Mapping[str, Any],
        *,
        keys: Sequence[str],
        user_id: str | None = None,
    ) -> sa.Row[Any]:
        """Insert a row, or update the row with the same ``keys`` (keeping created_at)."""
        dialect_insert = postgresql.insert if self.dialect == "postgresql" else sqlite.insert
        stmt = dialect_insert(table).values(dict(values))
        changed = {k: stmt.excluded[k] for k in values if k not in keys and k != "created_at"}
        stmt = stmt.on_conflict_do_update(index_elements=list(keys), set_=changed)
        async with self.write(user_id) as conn:
            row: sa.Row[Any] = (await conn.execute(stmt.returning(table))).one()
        return row

    # -- schema ------------------------------------------------------------

    def head_revision(self) -> str | None:
        return migrate.head()

    async def current_revision(self) -> str | None:
        async with self.read() as conn:
            revision = await conn.run_sync(migrate.current)
        problem = migrate.unknown(revision)
        if problem is not None:
            raise StorageError(f"the database {self.description} {problem}")
        return revision

    async def upgrade(self) -> str | None:
        await self.current_revision()  # a revision this version does not know: said so
        # Migrations may take as long as they need.
        async with self._transaction(None, write=True, bounded=False) as conn:
            if self.dialect == "postgresql":
                await conn.execute(sa.text("SET LOCAL statement_timeout = 0"))
            await conn.run_sync(migrate.upgrade)
        return await self.current_revision()

    async def ping(self) -> None:
        async with self.read() as conn:
            await conn.execute(sa.text("SELECT 1"))

    # -- several processes (PostgreSQL) ------------------------------------------

    def chat_lock(self, chat_id: uuid.UUID) -> AbstractAsyncContextManager[None]:
        # The lease a turn takes (turns take it in their first transaction instead).
        return self.turns.lock(chat_id)

    @asynccontextmanager
    async def exclusive(self, name: str) -> AsyncIterator[bool]:
        """A transaction-scoped advisory lock, in a transaction held for the block.

        Nothing outlives the transaction, so it works through a transaction
        pooler, on a pooled connection (held, with its server connection, until
        the block ends). The sweeper does not use it (see ``SessionStore.sweep``).
        """
        if self.dialect != "postgresql":
            yield True
            return
        key = sa.func.hashtextextended(f"chatwright:exclusive:{name}", 0)
        async with self._transaction(None, write=True, bounded=False) as conn:
            held = bool(await conn.scalar(sa.select(sa.func.pg_try_advisory_xact_lock(key))))
            yield held

    async def watch_config(self, changed: Callable[[str], None]) -> None:
        if self.dialect != "postgresql":
            return
        if not self.can_listen:
            log.info(
                "storage.pooler is 'transaction' and storage.direct_url is unset: config "
                "changes made by other processes are picked up by each turn's version "
                "check, not by LISTEN (set storage.direct_url to hear them at once)"
            )
            return
        await self.coordination.watch_config(changed)

    async def close(self) -> None:
        await self.turns.close()
        # After the inline transaction running now, if any (bounded by busy_timeout).
        queue = None
        if self.writes is not None:
            with contextlib.suppress(StorageError):
                queue = await self.writes.take()
        try:
            await self._inline.close()
        finally:
            if queue is not None:
                SerialWrites.give_back(queue)
        await self.engine.dispose()
