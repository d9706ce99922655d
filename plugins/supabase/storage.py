"""Row-level security per request on top of the ``sql`` backend's PostgreSQL stores."""

from __future__ import annotations

import json

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from chatwright.errors import StorageError
from chatwright.plugins.sql.migrations.data_api import close_table
from chatwright.plugins.sql.records import SQLRecordStore
from chatwright.plugins.sql.storage import SQLStorage
from chatwright.settings import Settings
from chatwright.stores import TableSpec


class SupabaseRecordStore(SQLRecordStore):
    async def ensure_table(self, spec: TableSpec) -> bool:
        """Create the table, and make sure it has the framework's per-user policy.

        The policy part runs whenever the table has a ``user_id`` column, so a
        table created earlier (by the ``sql`` backend, say) is secured too.
        """
        created = await super().ensure_table(spec)
        if any(c.name == "user_id" for c in spec.columns):
            await self._secure(spec.name)
        return created

    async def _secure(self, name: str) -> None:
        # ``name`` comes from a TableSpec in code, checked by the parent class.
        async with self.db.write() as conn:
            await conn.run_sync(close_table, name, own_rows=True)


class SupabaseStorage(SQLStorage):
    @classmethod
    def from_settings(cls, settings: Settings) -> SupabaseStorage:
        storage = super().from_settings(settings)
        if storage.dialect != "postgresql":
            raise StorageError(
                "the supabase backend needs PostgreSQL: set storage.url to "
                "postgresql://… (or use storage.backend = 'sql' for SQLite)"
            )
        assert isinstance(storage, SupabaseStorage)
        storage.records = SupabaseRecordStore(storage)
        return storage

    async def enter_user(self, conn: AsyncConnection, user_id: str | None) -> None:
        if user_id is None:
            return  # a framework statement: the connecting (service) role
        claims = json.dumps({"sub": user_id, "role": "authenticated", "aud": "authenticated"})
        # Both settings end with the transaction, before the connection is reused.
        await conn.execute(
            sa.text("SELECT set_config('request.jwt.claims', :claims, true)"), {"claims": claims}
        )
        await conn.execute(sa.text("SET LOCAL ROLE authenticated"))
