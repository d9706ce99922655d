"""What several processes sharing one PostgreSQL coordinate through, besides turn leases.

``LISTEN chatwright_config`` for configuration changes, on a psycopg
connection of its own to ``storage.direct_url``, outside the pool: a
transaction pooler cannot keep a LISTEN. Nothing else needs a connection of
its own: turns of one chat take a lease row (:mod:`.turns`), and
``Storage.exclusive`` is a transaction-scoped lock (``SQLStorage.exclusive``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy.engine import URL

from chatwright.errors import StorageError

log = logging.getLogger(__name__)


class Coordination:
    """Config notifications on a direct connection.

    :param direct_url: the database to listen on (a direct or session-mode URL).
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
