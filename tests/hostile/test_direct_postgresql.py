"""Attacks on PostgreSQL's direct statements: an inline transaction's statements run on
the psycopg connection itself (plugins/sql/direct.py, plugins/sql/psycopg_direct.py).

What is checked, as an outsider trying to make it misbehave:

- the crud ``create``'s INSERT … RETURNING (built once per table), run by SQLAlchemy
  (its first run) and directly (its second), stores and returns the same values and
  raises the same errors for values chosen to hurt (those of the SQLite attacks:
  64-bit limits, NUL characters, a megabyte of text, lone surrogates, JSON null and
  nested JSON, text where a number, a date, a UUID goes, bytes, server defaults);
- whatever happened, no connection of the storage is left inside a transaction;
- a table with a column SQLAlchemy converts by the cursor's type code (``NUMERIC``,
  ``DOUBLE PRECISION``) keeps SQLAlchemy's execution and its values;
- a one-statement write (autocommit) that fails stores nothing;
- a statement timeout and a cancellation under a direct statement leave no
  transaction open and the next transaction works.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa

from chatwright.plugins.sql.records import reflect_table
from chatwright.plugins.sql.storage import SQLStorage
from chatwright.plugins.sql.writes import _insert_returning
from tests.harness import DirectRuns, storage_for
from tests.hostile.test_direct_sqlite import HOSTILE_VALUES

KINDS = """CREATE TABLE direct_kinds (
    id BIGSERIAL PRIMARY KEY,
    user_id TEXT NOT NULL,
    n BIGINT,
    flag BOOLEAN,
    day DATE,
    at TIMESTAMPTZ,
    doc JSONB,
    key UUID,
    body TEXT,
    note TEXT NOT NULL DEFAULT 'none'
)"""
NUMBERS = """CREATE TABLE direct_numbers (
    id BIGSERIAL PRIMARY KEY,
    user_id TEXT NOT NULL,
    x NUMERIC,
    real DOUBLE PRECISION
)"""
COLUMNS = {"n", "flag", "day", "at", "doc", "key", "body", "note"}


@pytest.fixture
async def storage(pg_url: str) -> AsyncIterator[SQLStorage]:
    made = storage_for(pg_url)
    async with made.write() as conn:
        for table in ("direct_kinds", "direct_numbers"):
            await conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
        await conn.execute(sa.text(KINDS))
        await conn.execute(sa.text(NUMBERS))
    yield made
    async with made.write() as conn:
        for table in ("direct_kinds", "direct_numbers"):
            await conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
    await made.close()


async def table_of(storage: SQLStorage, name: str) -> sa.Table:
    async with storage.read() as conn:
        table: sa.Table = await conn.run_sync(lambda sync: reflect_table(sync, name))
    return table


async def open_transactions(storage: SQLStorage) -> int:
    """Connections of this database left idle inside a transaction (by anyone)."""
    async with storage.read() as conn:
        found = await conn.scalar(
            sa.text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND state LIKE 'idle in transaction%' AND pid <> pg_backend_pid()"
            )
        )
    return int(found or 0)


async def stored(storage: SQLStorage, table: str, row_id: int) -> tuple[Any, ...]:
    async with storage.read() as conn:
        row = (
            await conn.execute(sa.text(f"SELECT * FROM {table} WHERE id = :id"), {"id": row_id})
        ).one()
    return tuple(row)[2:]


ATTACKS = [(name, values) for name, values in HOSTILE_VALUES if set(values) <= COLUMNS]


@pytest.mark.parametrize(("name", "values"), ATTACKS, ids=[n for n, _ in ATTACKS])
async def test_sqlalchemy_and_the_direct_path_store_and_return_the_same(
    storage: SQLStorage, monkeypatch: pytest.MonkeyPatch, name: str, values: dict[str, Any]
) -> None:
    ran = DirectRuns(monkeypatch, words=3)
    stmt = _insert_returning(await table_of(storage, "direct_kinds"))
    results: list[Any] = []
    for user in ("sqlalchemy", "direct"):
        try:
            async with storage.inline_write() as conn:
                returned = dict(
                    (await conn.execute(stmt, {"user_id": user, **values})).one()._mapping
                )
        except Exception as error:
            results.append(("raised", type(error), type(getattr(error, "orig", None))))
        else:
            assert returned.pop("user_id") == user
            row_id = returned.pop("id")
            results.append(("stored", returned, await stored(storage, "direct_kinds", row_id)))
        assert await open_transactions(storage) == 0
    assert len(ran.direct) == 1 and ran.direct[0].startswith("INSERT INTO direct_kinds")
    assert results[0] == results[1]


async def test_numeric_results_keep_sqlalchemys_execution_and_values(
    storage: SQLStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran = DirectRuns(monkeypatch, words=3)
    stmt = _insert_returning(await table_of(storage, "direct_numbers"))
    rows = []
    for n in range(3):
        async with storage.inline_write() as conn:
            values = {"user_id": "u", "x": Decimal("1.10") * n, "real": 2.5 * n}
            rows.append(dict((await conn.execute(stmt, values)).one()._mapping))
    assert ran.direct == []
    assert [r["x"] for r in rows] == [Decimal("0.00"), Decimal("1.10"), Decimal("2.20")]
    assert [r["real"] for r in rows] == [0.0, 2.5, 5.0]


async def test_a_failed_write_alone_stores_nothing(
    storage: SQLStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One statement in autocommit, run directly, failing half way (its second row breaks
    a NOT NULL): none of its rows is stored."""
    ran = DirectRuns(monkeypatch, words=3)
    table = await table_of(storage, "direct_kinds")
    both = sa.insert(table).from_select(
        ["user_id", "body"],
        sa.union_all(
            sa.select(sa.bindparam("first", type_=sa.Text), sa.literal("ok")),
            sa.select(sa.bindparam("second", type_=sa.Text), sa.literal("broken")),
        ),
    )
    async with storage.inline_write(one_statement=True) as conn:
        await conn.execute(both, {"first": "a", "second": "b"})
    for _ in range(2):  # direct: the statement ran once before
        with pytest.raises(sa.exc.IntegrityError, match="null value"):
            async with storage.inline_write(one_statement=True) as conn:
                await conn.execute(both, {"first": "a", "second": None})
    assert ran.direct == ["INSERT INTO direct_kinds (raised)"] * 2
    async with storage.read() as conn:
        bodies = (await conn.execute(sa.text("SELECT body FROM direct_kinds"))).scalars().all()
    assert sorted(bodies) == ["broken", "ok"]
    assert await open_transactions(storage) == 0


async def test_a_cancelled_and_a_timed_out_direct_statement_leave_nothing_open(
    storage: SQLStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran = DirectRuns(monkeypatch, words=1)
    slow = sa.select(sa.func.pg_sleep(sa.bindparam("s", type_=sa.Float)).label("slept"))
    for _ in range(2):
        async with storage.inline_write() as conn:
            await conn.execute(slow, {"s": 0})
    assert ran.direct == ["SELECT"]

    async def sleeper(seconds: float) -> None:
        async with storage.inline_write() as conn:
            await conn.execute(sa.text("INSERT INTO direct_kinds (user_id) VALUES ('lost')"))
            await conn.execute(slow, {"s": seconds})

    task = asyncio.create_task(sleeper(30))
    await asyncio.sleep(0.5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.5):
            await sleeper(30)
    for _ in range(50):  # the server ends the cancelled backends' statements
        if await open_transactions(storage) == 0:
            break
        await asyncio.sleep(0.1)
    assert await open_transactions(storage) == 0
    async with storage.inline_write() as conn:
        await conn.execute(slow, {"s": 0})
        count = await conn.scalar(sa.text("SELECT count(*) FROM direct_kinds"))
    assert count == 0
