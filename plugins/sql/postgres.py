"""What several processes sharing one PostgreSQL coordinate through, besides turn leases.

Named advisory locks, and ``LISTEN chatwright_config`` for configuration
changes (turns of one chat take a lease row instead: see :mod:`.turns`). Each
uses its own psycopg connection to ``storage.direct_url``, outside the pool: a
transaction pooler cannot keep a session-level lock or a LISTEN.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy.engine import URL

from chatwright.errors import StorageError

log = logging.getLogger(__name__)


class Coordination:
    """Advisory locks and config notifications on direct connections.

    :param direct_url: the database to open them on (a direct or session-mode URL).
    :param description: how the database is named in messages.
    """

    def __init__(self, direct_url: URL, description: str) -> None:
        self.direct_url = direct_url
        self.description = description

    @asynccontextmanager
    async def _direct(self) -> AsyncIterator[Any]:
        import psycopg

        conninfo = self.direct_url.set(drivername="postgresql").render_as_string(
            hide_password=False
        )
        try:
            conn = await psycopg.AsyncConnection.connect(
                conninfo, autocommit=True, connect_timeout=10
            )
        except psycopg.OperationalError as error:
            reason = " ".join(str(error).split())
            raise StorageError(f"database {self.description} is unavailable: {reason}") from None
        try:
            yield conn
        finally:
            await conn.close()

    async def _advisory(self, conn: Any, function: str, key: str) -> bool:
        """Call pg_advisory_<function> on a lock connection; a lost connection is a StorageError."""
        import psycopg

        try:
            cursor = await conn.execute(f"SELECT pg_{function}(hashtextextended(%s, 0))", (key,))
            row = await cursor.fetchone()
        except psycopg.Error as error:
            reason = " ".join(str(error).split()) or type(error).__name__
            raise StorageError(f"database {self.description} is unavailable: {reason}") from None
        return bool(row and row[0] is not False)

    async def _release(self, conn: Any, key: str) -> None:
        # When the lock's connection is gone the server has dropped its locks already.
        if conn.broken or conn.closed:
            return
        with contextlib.suppress(StorageError):
            await self._advisory(conn, "advisory_unlock", key)

    @asynccontextmanager
    async def exclusive(self, name: str) -> AsyncIterator[bool]:
        """Try the lock named ``name``; yields whether this process holds it."""
        key = f"chatwright:exclusive:{name}"
        async with self._direct() as conn:
            held = await self._advisory(conn, "try_advisory_lock", key)
            try:
                yield held
            finally:
                if held:
                    await self._release(conn, key)

    async def watch_config(self, changed: Callable[[str], None]) -> None:
        """Call ``changed(agent_name)`` for each config notification, reconnecting forever."""
        delay = 1.0
        while True:
            try:
                async with self._direct() as conn:
                    await conn.execute("LISTEN chatwright_config")
                    delay = 1.0
                    async for note in conn.notifies():
                        changed(note.payload)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning("config listener lost its connection (%s); retrying", error)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)
