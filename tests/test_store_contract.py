"""The storage contract suite against every bundled backend configuration."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from chatwright.plugins.sql.storage import SQLStorage
from chatwright.testing import StorageContract
from tests.harness import pg_storage_settings, storage_for


class TestSQLiteFile(StorageContract):
    @pytest.fixture
    async def storage(self, tmp_path: Path) -> AsyncIterator[SQLStorage]:
        storage = storage_for(f"sqlite+aiosqlite:///{tmp_path / 'contract.db'}")
        await storage.upgrade()
        yield storage
        await storage.close()


class TestSQLiteMemory(StorageContract):
    @pytest.fixture
    async def storage(self) -> AsyncIterator[SQLStorage]:
        storage = storage_for("sqlite+aiosqlite:///:memory:")
        await storage.upgrade()
        yield storage
        await storage.close()


class TestPostgreSQL(StorageContract):
    @pytest.fixture
    async def storage(self, pg_storage: SQLStorage) -> SQLStorage:
        return pg_storage


class TestSupabase(StorageContract):
    """The same contract with row-level security enforcing every user statement."""

    @pytest.fixture
    async def storage(self, pg_storage: SQLStorage, pg_url: str) -> AsyncIterator[SQLStorage]:
        from chatwright import testing
        from chatwright.plugins.supabase.storage import SupabaseStorage

        storage = SupabaseStorage.from_settings(
            testing.settings(storage={"backend": "supabase", **pg_storage_settings(pg_url)})
        )
        yield storage
        await storage.close()
