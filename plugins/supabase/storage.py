"""Row-level security per request on top of the ``sql`` backend's PostgreSQL stores."""

from __future__ import annotations

import json

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from chatwright.errors import StorageError
from chatwright.plugins.sql.records import SQLRecordStore
from chatwright.plugins.sql.storage import SQLStorage
from chatwright.settings import Settings
from chatwright.stores import TableSpec

OWN_ROWS = "user_id = (SELECT auth.jwt() ->> 'sub')"


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
            exists = await conn.scalar(
                sa.text(
                    "SELECT 1 FROM pg_policies WHERE schemaname = current_schema() "
                    "AND tablename = :t AND policyname = 'chatwright_own_rows'"
                ),
                {"t": name},
            )
            await conn.execute(sa.text(f'ALTER TABLE "{name}" ENABLE ROW LEVEL SECURITY'))
            if not exists:
                await conn.execute(
                    sa.text(
                        f'CREATE POLICY chatwright_own_rows ON "{name}" FOR ALL TO authenticated '
                        f"USING ({OWN_ROWS}) WITH CHECK ({OWN_ROWS})"
                    )
                )
            await conn.execute(
                sa.text(f'GRANT SELECT, INSERT, UPDATE, DELETE ON "{name}" TO authenticated')
            )
            await conn.execute(
                sa.text("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO authenticated")
            )


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
