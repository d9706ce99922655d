"""Row-level security per request: the ``sql`` backend with Supabase's user transactions.

Nothing here reaches into the ``sql`` backend's internals: it passes a
:class:`~chatwright.plugins.sql.user_transactions.UserTransactions` to
:class:`~chatwright.plugins.sql.storage.SQLStorage`, the extension point made
for this.
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from chatwright.errors import StorageError
from chatwright.plugins.sql.migrations.data_api import close_table
from chatwright.plugins.sql.storage import SQLStorage
from chatwright.plugins.sql.user_transactions import UserTransactions
from chatwright.settings import Settings


class RowLevelSecurity(UserTransactions):
    """User transactions as PostgREST runs them: JWT claims and ``role authenticated``."""

    async def enter(self, conn: AsyncConnection, user_id: str | None) -> None:
        if user_id is None:
            return  # a framework statement: the connecting (service) role
        claims = json.dumps({"sub": user_id, "role": "authenticated", "aud": "authenticated"})
        # Both settings end with the transaction, before the connection is reused.
        await conn.execute(
            sa.text("SELECT set_config('request.jwt.claims', :claims, true)"), {"claims": claims}
        )
        await conn.execute(sa.text("SET LOCAL ROLE authenticated"))

    async def leave(self, conn: AsyncConnection) -> None:
        await conn.execute(sa.text("SELECT set_config('request.jwt.claims', '', true)"))
        await conn.execute(sa.text("RESET ROLE"))

    async def secure_table(self, conn: AsyncConnection, table: str) -> None:
        """Close the table to the Data API roles but for the framework's per-user policy."""
        # ``table`` comes from a TableSpec in code, checked by the record store.
        await conn.run_sync(close_table, table, own_rows=True)


class SupabaseStorage(SQLStorage):
    """:class:`SQLStorage` on PostgreSQL with :class:`RowLevelSecurity` as its user transactions."""

    @classmethod
    def from_settings(
        cls, settings: Settings, *, users: UserTransactions | None = None
    ) -> SupabaseStorage:
        storage = super().from_settings(
            settings, users=users if users is not None else RowLevelSecurity()
        )
        if storage.dialect != "postgresql":
            raise StorageError(
                "the supabase backend needs PostgreSQL: set storage.url to "
                "postgresql://… (or use storage.backend = 'sql' for SQLite)"
            )
        assert isinstance(storage, SupabaseStorage)
        return storage
