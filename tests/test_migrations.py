"""The Alembic migrations build exactly the schema the code describes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from chatwright.plugins.sql import schema
from chatwright.plugins.sql.storage import SQLStorage
from chatwright.settings import Settings
from tests.harness import storage_for


def _schema_diff(storage: SQLStorage) -> Any:
    async def diff() -> list[Any]:
        def compare(conn: sa.Connection) -> list[Any]:
            context = MigrationContext.configure(
                conn,
                opts={"compare_type": True, "version_table": schema.VERSION_TABLE},
            )
            return list(compare_metadata(context, schema.metadata))

        async with storage.read() as conn:
            return await conn.run_sync(compare)

    return diff()


async def _tables(storage: SQLStorage) -> set[str]:
    async with storage.read() as conn:
        return set(await conn.run_sync(lambda c: sa.inspect(c).get_table_names()))


async def _indexes(storage: SQLStorage, table: str) -> dict[str, dict[str, Any]]:
    async with storage.read() as conn:
        found = await conn.run_sync(lambda c: sa.inspect(c).get_indexes(table))
    return {i["name"]: i for i in found}


async def check_fresh_database(storage: SQLStorage) -> None:
    assert await storage.current_revision() is None
    assert await _tables(storage) == set()
    assert await storage.upgrade() == storage.head_revision()
    assert await _tables(storage) == {t.name for t in schema.metadata.sorted_tables} | {
        schema.VERSION_TABLE
    }
    assert await _schema_diff(storage) == []
    sessions = await _indexes(storage, "chat_sessions")
    assert sessions["ux_chat_sessions_client_key"]["unique"]
    assert "ix_chat_sessions_active_stale" in sessions
    messages = await _indexes(storage, "chat_messages")
    assert messages["ix_chat_messages_chat_id_id"]["column_names"] == ["chat_id", "id"]


async def test_sqlite_migrates_from_empty(tmp_path: Path) -> None:
    storage = storage_for(f"sqlite:///{tmp_path / 'fresh.db'}")
    try:
        await check_fresh_database(storage)
    finally:
        await storage.close()


async def test_postgresql_migrates_from_empty(pg_url: str) -> None:
    # A schema of its own inside the run's database, so this starts from empty.
    from sqlalchemy.engine import make_url

    storage = storage_for(pg_url)
    schema_name = "fresh_migration"
    async with storage.write() as conn:
        await conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {schema_name} CASCADE"))
        await conn.execute(sa.text(f"CREATE SCHEMA {schema_name}"))
    await storage.close()
    url = make_url(pg_url).update_query_dict({"options": f"-csearch_path={schema_name}"})
    # Direct: a transaction pooler refuses the startup option (and would not keep it).
    direct = {"url": url.render_as_string(hide_password=False)}
    fresh = SQLStorage.from_settings(Settings(storage=direct))  # type: ignore[arg-type]
    try:
        await check_fresh_database(fresh)
    finally:
        await fresh.close()


async def test_sqlite_pragmas(tmp_path: Path) -> None:
    storage = storage_for(f"sqlite:///{tmp_path / 'pragmas.db'}")
    try:
        async with storage.read() as conn:
            journal = await conn.scalar(sa.text("PRAGMA journal_mode"))
            foreign_keys = await conn.scalar(sa.text("PRAGMA foreign_keys"))
            busy = await conn.scalar(sa.text("PRAGMA busy_timeout"))
        assert (journal, foreign_keys, busy) == ("wal", 1, 5000)
    finally:
        await storage.close()


async def test_unmigrated_database_gives_a_clear_error(tmp_path: Path) -> None:
    from chatwright.errors import StorageError

    storage = storage_for(f"sqlite:///{tmp_path / 'empty.db'}")
    try:
        with pytest.raises(StorageError, match="db upgrade"):
            await storage.agents.list()
    finally:
        await storage.close()
