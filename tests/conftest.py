"""Shared fixtures: a fresh PostgreSQL database per test run, and storage builders.

PostgreSQL tests use the server at ``CHATWRIGHT_TEST_DATABASE_URL`` (default
``postgresql://postgres@127.0.0.1:5432/postgres``) to create a database of their
own, dropped at the end of the run. With no server they skip, saying why;
with ``CI=true`` they fail instead, so CI can never pass by skipping them.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from sqlalchemy.engine import make_url

from chatwright.plugins.sql.storage import SQLStorage
from chatwright.settings import Settings
from tests.harness import ADMIN_URL, admin_connect

# test_multiprocess imports it from here.
_admin_connect = admin_connect

FRAMEWORK_TABLES = (
    "agents",
    "agent_tools",
    "chat_sessions",
    "chat_messages",
    "prompt_customizations",
    "agent_memories",
)


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """URL of a fresh PostgreSQL database, dropped after the run."""
    admin = admin_connect()
    name = f"chatwright_test_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield (
            make_url(ADMIN_URL)
            .set(drivername="postgresql+psycopg", database=name)
            .render_as_string(hide_password=False)
        )
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def storage_for(url: str) -> SQLStorage:
    return SQLStorage.from_settings(Settings(storage={"url": url}))  # type: ignore[arg-type]


@pytest.fixture
async def pg_storage(pg_url: str) -> AsyncIterator[SQLStorage]:
    """Migrated storage on the run's PostgreSQL database, emptied before each test."""
    storage = storage_for(pg_url)
    await storage.upgrade()
    async with storage.write() as conn:
        from sqlalchemy import text

        await conn.execute(text(f"TRUNCATE {', '.join(FRAMEWORK_TABLES)} RESTART IDENTITY CASCADE"))
    yield storage
    await storage.close()
