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
from chatwright.plugins.sql.storage import SQLStorage
from chatwright.plugins.sql.user_transactions import UserTransactions
from chatwright.settings import Settings

OWN_ROWS = "user_id = (SELECT auth.jwt() ->> 'sub')"


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

    async def secure_table(self, conn: AsyncConnection, table: str) -> None:
        """Enable row-level security on the table, with the framework's per-user policy."""
        # ``table`` comes from a TableSpec in code, checked by the record store.
        exists = await conn.scalar(
            sa.text(
                "SELECT 1 FROM pg_policies WHERE schemaname = current_schema() "
                "AND tablename = :t AND policyname = 'chatwright_own_rows'"
            ),
            {"t": table},
        )
        await conn.execute(sa.text(f'ALTER TABLE "{table}" ENABLE ROW LEVEL SECURITY'))
        if not exists:
            await conn.execute(
                sa.text(
                    f'CREATE POLICY chatwright_own_rows ON "{table}" FOR ALL TO authenticated '
                    f"USING ({OWN_ROWS}) WITH CHECK ({OWN_ROWS})"
                )
            )
        await conn.execute(
            sa.text(f'GRANT SELECT, INSERT, UPDATE, DELETE ON "{table}" TO authenticated')
        )
        await conn.execute(
            sa.text("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO authenticated")
        )


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
