"""Pooled PostgreSQL connections are checked before use only after sitting idle.

A check on every checkout cost a round trip (and a transaction, as
``pg_stat_database`` counts them) per transaction; a connection used a moment
ago needs none. One that sat idle is checked, and a dead one is replaced
before a statement fails on it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event

from chatwright import testing
from chatwright.plugins.sql import engine as sql_engine
from chatwright.plugins.sql.storage import SQLStorage
from tests.harness import admin_connect, pg_storage_settings

pytestmark = pytest.mark.postgresql


def storage_on(pg_url: str) -> SQLStorage:
    return SQLStorage.from_settings(
        testing.settings(storage={**pg_storage_settings(pg_url), "pool_size": 1})
    )


async def test_a_connection_used_a_moment_ago_is_not_pinged(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = storage_on(pg_url)
    pings: list[Any] = []
    original = storage.engine.dialect.do_ping

    def counted(dbapi_connection: Any) -> bool:
        pings.append(dbapi_connection)
        return bool(original(dbapi_connection))

    monkeypatch.setattr(storage.engine.dialect, "do_ping", counted)
    try:
        for _ in range(5):
            await storage.ping()
        assert pings == []
        await asyncio.sleep(sql_engine.PING_AFTER_IDLE + 0.2)
        await storage.ping()
        assert len(pings) == 1  # idle over a second: checked once
    finally:
        await storage.close()


async def test_an_idle_connection_killed_by_the_server_is_replaced_before_use(
    pg_url: str,
) -> None:
    if "pooler" in pg_storage_settings(pg_url):
        pytest.skip("through PgBouncer the client's connection outlives its server's")
    storage = storage_on(pg_url)
    try:
        async with storage.read() as conn:
            pid = await conn.scalar(sa.text("SELECT pg_backend_pid()"))
        admin = admin_connect()
        try:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        finally:
            admin.close()
        await asyncio.sleep(sql_engine.PING_AFTER_IDLE + 0.2)  # idle long enough to be checked
        connects: list[str] = []
        event.listen(storage.engine.sync_engine, "connect", lambda *a: connects.append("new"))
        async with storage.read() as conn:  # no error: the dead one was replaced
            assert await conn.scalar(sa.text("SELECT pg_backend_pid()")) != pid
        assert connects == ["new"]
    finally:
        await storage.close()


def test_a_connection_the_pool_cannot_reset_is_one_line_in_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """SQLAlchemy's pool reports a failed reset with a traceback; it is one warning here."""
    import logging

    from sqlalchemy.pool import AsyncAdaptedQueuePool

    import chatwright.plugins.sql.engine  # noqa: F401  (adds the filter)

    pool = AsyncAdaptedQueuePool(lambda: None)
    try:
        raise ConnectionError("server conn\ncrashed?")
    except ConnectionError:
        with caplog.at_level(logging.WARNING):
            pool.logger.error("Exception during reset or similar", exc_info=True)
    (record,) = caplog.records
    assert record.levelno == logging.WARNING and record.exc_info is None
    assert record.getMessage() == (
        "a pooled connection could not be reset and was discarded (server conn crashed?)"
    )
    assert "Traceback" not in caplog.text
