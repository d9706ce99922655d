"""Shared fixtures: a fresh PostgreSQL database per test run, and storage builders.

PostgreSQL tests use the server at ``CHATWRIGHT_TEST_DATABASE_URL`` (default
``postgresql://postgres@127.0.0.1:5432/postgres``) to create a database of their
own, dropped at the end of the run. With no server they skip, saying why;
with ``CI=true`` they fail instead, so CI can never pass by skipping them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from sqlalchemy.engine import make_url

from chatwright.plugins.sql.storage import SQLStorage
from chatwright.settings import Settings

ADMIN_URL = os.environ.get(
    "CHATWRIGHT_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
FRAMEWORK_TABLES = (
    "agents",
    "agent_tools",
    "chat_sessions",
    "chat_messages",
    "prompt_customizations",
    "agent_memories",
)


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _admin_connect() -> object:
    import psycopg

    try:
        return psycopg.connect(_libpq(ADMIN_URL), autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        reason = f"no PostgreSQL server answers at {make_url(ADMIN_URL)!r}: {exc}".strip()
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true requires PostgreSQL: {reason}")
        pytest.skip(f"{reason} (set CHATWRIGHT_TEST_DATABASE_URL to run PostgreSQL tests)")


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """URL of a fresh PostgreSQL database, dropped after the run."""
    admin = _admin_connect()
    name = f"chatwright_test_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE DATABASE "{name}"')  # type: ignore[attr-defined]
    try:
        yield (
            make_url(ADMIN_URL)
            .set(drivername="postgresql+psycopg", database=name)
            .render_as_string(hide_password=False)
        )
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[attr-defined]
        admin.close()  # type: ignore[attr-defined]


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
