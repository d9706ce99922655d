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
        """Create the table, and give it the same per-user policy as the framework's."""
        created = await super().ensure_table(spec)
        if created and any(c.name == "user_id" for c in spec.columns):
            name = spec.name  # validated: a TableSpec from code, checked by the parent
            async with self.db.write() as conn:
                await conn.execute(sa.text(f'ALTER TABLE "{name}" ENABLE ROW LEVEL SECURITY'))
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
                    sa.text(
                        "GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO authenticated"
                    )
                )
        return created


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
