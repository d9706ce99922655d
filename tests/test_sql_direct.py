"""Statements an inline transaction runs straight on the driver (plugins/sql/direct.py):
SQLite's connection, or PostgreSQL's psycopg connection.

What is checked: a statement built once runs on the driver from its second run
on, and gives what SQLAlchemy gives — the same rows with the same Python values
(UUIDs, time zone aware datetimes, JSON, NULL), by index, attribute and
``_mapping``; the same row counts; executemany; RETURNING; the same stored
values (read back through SQLAlchemy); SQLAlchemy's errors. A statement built
for each call, one with Python-side defaults, and every statement while
someone listens to cursor events keep SQLAlchemy's execution.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import make_url

from chatwright.plugins.sql.engine import sqlite_engine
from chatwright.plugins.sql.schema import JSONValue, UTCDateTime
from chatwright.plugins.sql.storage import SQLStorage
from tests.harness import DirectRuns, storage_for

meta = sa.MetaData()
items = sa.Table(
    "items",
    meta,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("key", sa.Uuid, nullable=False),
    sa.Column("owner", sa.String(40), nullable=False),
    sa.Column("body", JSONValue(), nullable=True),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.UniqueConstraint("owner", "at"),
)
stamped = sa.Table(
    "stamped",
    meta,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("made", sa.String(40), default=lambda: uuid.uuid4().hex),
)

INSERT = items.insert()
INSERT_RETURNING = items.insert().returning(items.c.id, items.c.key)
SELECT = (
    sa.select(items.c.id, items.c.key, items.c.body, items.c.at, sa.literal(7).label("seven"))
    .where(items.c.owner == sa.bindparam("owner"))
    .order_by(items.c.id)
    .limit(sa.bindparam("limit", type_=sa.Integer))
)
UPDATE = (
    items.update().where(items.c.owner == sa.bindparam("who")).values(body=sa.bindparam("body"))
)
AT = datetime(2026, 12, 1, 10, 30, 15, 123456, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SQLStorage]:
    """An inline transaction's statements run on SQLite's connection in the event loop's
    thread, and on PostgreSQL's psycopg connection, both without SQLAlchemy."""
    if request.param == "postgresql":
        made = storage_for(request.getfixturevalue("pg_url"))
    else:
        url = make_url(f"sqlite+aiosqlite:///{tmp_path}/d.db")
        made = SQLStorage(url, sqlite_engine(url, busy_timeout=5, echo=False), busy_timeout=5)
    async with with_tables(made):
        yield made


@asynccontextmanager
async def with_tables(made: SQLStorage) -> AsyncIterator[None]:
    """The test's tables made afresh in ``made`` for the block, then dropped; closed after."""
    async with made.write() as conn:
        await conn.run_sync(meta.drop_all)
        await conn.run_sync(meta.create_all)
    yield
    async with made.write() as conn:
        await conn.run_sync(meta.drop_all)
    await made.close()


def row_values(rows: list[Any]) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in rows]


async def test_a_statement_run_again_gives_what_sqlalchemy_gives(
    storage: SQLStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran = DirectRuns(monkeypatch)
    keys = [uuid.uuid4() for _ in range(4)]
    rows = [
        {"key": keys[0], "owner": "a", "body": {"n": 1, "s": "é"}, "at": AT},
        {"key": keys[1], "owner": "a", "body": None, "at": AT.replace(second=16)},
    ]
    async with storage.inline_write() as conn:
        await conn.execute(INSERT, rows)  # first run: SQLAlchemy
        await conn.execute(
            INSERT,
            [{**r, "owner": "b", "key": k} for r, k in zip(rows, keys[2:], strict=True)],
        )  # second: direct, executemany
    # On PostgreSQL an INSERT without RETURNING gets one from SQLAlchemy for its
    # inserted_primary_key, read from SQLAlchemy's context: it keeps SQLAlchemy's execution.
    inserts = ["INSERT"] if storage.dialect == "sqlite" else []
    assert ran.direct == inserts

    # The same rows, read by both paths, and by a plain (driver's thread) transaction.
    results = []
    for owner in ("a", "b", "a", "b"):
        async with storage.inline_write() as conn:
            results.append((await conn.execute(SELECT, {"owner": owner, "limit": 5})).all())
    assert ran.direct == [*inserts, "SELECT", "SELECT", "SELECT"]
    async with storage.read() as conn:
        plain = (await conn.execute(SELECT, {"owner": "b", "limit": 5})).all()
    sa_a, direct_b, direct_a = results[0], results[3], results[2]
    assert row_values(direct_a) == row_values(sa_a)
    assert [tuple(r)[1:] for r in direct_b] == [tuple(r)[1:] for r in plain]
    first = direct_a[0]
    assert first.key == keys[0] and isinstance(first.key, uuid.UUID)
    assert first.at == AT and first.at.tzinfo is not None
    assert first.body == {"n": 1, "s": "é"}
    assert first.seven == 7 and first[4] == 7
    assert direct_a[1].body is None
    assert first._mapping == dict(sa_a[0]._mapping)

    # None stored by the direct path (owner b) is what SQLAlchemy stores (owner a).
    async with storage.read() as conn:
        stored = (
            await conn.execute(sa.text("SELECT owner, body FROM items WHERE id IN (2, 4)"))
        ).all()
    assert [tuple(r) for r in stored] == [("a", None), ("b", None)]


async def test_a_statement_that_finds_nothing_gives_what_sqlalchemy_gives(
    storage: SQLStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No rows, yet the columns: on PostgreSQL the direct path tells a result with rows
    from one without by the result's status, not by psycopg's description."""
    ran = DirectRuns(monkeypatch)
    found = []
    for _ in range(2):
        async with storage.inline_write() as conn:
            found.append(await conn.execute(SELECT, {"owner": "nobody", "limit": 5}))
    for n in range(2):
        async with storage.inline_write() as conn:
            changed = await conn.execute(UPDATE, {"who": "nobody", "body": n})
            assert changed.rowcount == 0 and not changed.returns_rows
    assert ran.direct == ["SELECT", "UPDATE"]
    by_sqlalchemy, direct = found
    assert direct.returns_rows and by_sqlalchemy.returns_rows
    assert list(direct.keys()) == list(by_sqlalchemy.keys())
    assert direct.all() == by_sqlalchemy.all() == []


async def test_row_counts_returning_and_errors_are_sqlalchemys(
    storage: SQLStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran = DirectRuns(monkeypatch)
    for n in range(3):
        async with storage.inline_write() as conn:
            made = await conn.execute(
                INSERT_RETURNING,
                {"key": uuid.uuid4(), "owner": "a", "body": n, "at": AT.replace(second=n)},
            )
            assert made.one().id == n + 1
    for body in ("x", "y"):
        async with storage.inline_write() as conn:
            changed = await conn.execute(UPDATE, {"who": "a", "body": body})
            assert changed.rowcount == 3
    assert ran.direct == ["INSERT", "INSERT", "UPDATE"]

    async def duplicate() -> None:
        async with storage.inline_write() as conn:
            await conn.execute(
                INSERT_RETURNING,
                {"key": uuid.uuid4(), "owner": "a", "body": 0, "at": AT.replace(second=0)},
            )

    with pytest.raises(sa.exc.IntegrityError):
        await duplicate()
    async with storage.read() as conn:
        assert (await conn.scalar(sa.text("SELECT count(*) FROM items"))) == 3


async def test_what_keeps_sqlalchemys_execution(
    storage: SQLStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran = DirectRuns(monkeypatch)
    # Built for each call: never prepared.
    for n in range(3):
        async with storage.inline_write() as conn:
            await conn.execute(
                items.insert().values(key=uuid.uuid4(), owner="c", body=n, at=AT.replace(minute=n))
            )
    # Python-side defaults are computed per execution by SQLAlchemy.
    for n in range(3):
        async with storage.inline_write() as conn:
            await conn.execute(stamped.insert(), {"id": n})
    assert ran.direct == []
    async with storage.read() as conn:
        made = (await conn.execute(sa.text("SELECT made FROM stamped"))).scalars().all()
    assert len(set(made)) == 3 and all(made)

    # Someone listens to the engine's cursor events: every statement is theirs to see.
    seen: list[str] = []

    def listen(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        seen.append(statement)

    engine = storage.engine.sync_engine
    event.listen(engine, "before_cursor_execute", listen)
    try:
        for _ in range(3):
            async with storage.inline_write() as conn:
                await conn.execute(SELECT, {"owner": "c", "limit": 1})
    finally:
        event.remove(engine, "before_cursor_execute", listen)
    assert ran.direct == []
    assert len([s for s in seen if s.startswith("SELECT items.id")]) == 3
    async with storage.inline_write() as conn:
        await conn.execute(SELECT, {"owner": "c", "limit": 1})
    assert ran.direct == ["SELECT"]


async def test_refused_values_and_returning_of_several_rows_as_sqlalchemy(
    storage: SQLStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran = DirectRuns(monkeypatch)

    async def naive() -> None:
        async with storage.inline_write() as conn:
            row = {"key": uuid.uuid4(), "owner": "n", "body": 1, "at": datetime(2026, 1, 1)}
            await conn.execute(INSERT_RETURNING, row)

    for _ in range(3):  # SQLAlchemy's execution first, then the direct one: the same error
        with pytest.raises(sa.exc.StatementError, match="naive datetime"):
            await naive()
    # RETURNING for several rows at once is SQLAlchemy's (it batches them itself).
    for n in range(3):
        rows = [
            {"key": uuid.uuid4(), "owner": f"r{n}", "body": i, "at": AT.replace(second=i)}
            for i in range(2)
        ]
        async with storage.inline_write() as conn:
            made = (await conn.execute(INSERT_RETURNING, rows)).all()
        assert len(made) == 2
    assert ran.direct == ["INSERT (raised)", "INSERT (raised)"]  # the naive ones, directly
    async with storage.read() as conn:
        assert (await conn.scalar(sa.text("SELECT count(*) FROM items"))) == 6


@pytest.fixture
async def pg(pg_url: str) -> AsyncIterator[SQLStorage]:
    made = storage_for(pg_url)
    async with with_tables(made):
        yield made


async def test_postgresql_statements_alone_commit_by_themselves_directly(
    pg: SQLStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A one-statement write runs on psycopg in autocommit: it is stored as soon as it ran."""
    ran = DirectRuns(monkeypatch)
    for n in range(3):
        async with pg.inline_write(one_statement=True) as conn:
            row = {"key": uuid.uuid4(), "owner": "alone", "body": n, "at": AT.replace(second=n)}
            made = (await conn.execute(INSERT_RETURNING, row)).one()
            async with pg.read() as other:  # another connection sees it already
                seen = await other.scalar(
                    sa.text("SELECT count(*) FROM items WHERE id = :i"), {"i": made.id}
                )
            assert seen == 1
    assert ran.direct == ["INSERT", "INSERT"]


async def test_postgresql_numeric_results_keep_sqlalchemys_execution(
    pg: SQLStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A result SQLAlchemy converts by the cursor's type code (NUMERIC to float) is not
    run directly: a prepared statement has no type code to go by."""
    ran = DirectRuns(monkeypatch)
    average = sa.select(sa.cast(sa.literal(1.5), sa.Numeric(asdecimal=False)).label("n"))
    for _ in range(3):
        async with pg.inline_write() as conn:
            value = (await conn.execute(average)).scalar()
        assert value == 1.5 and isinstance(value, float)
    assert ran.direct == []


async def test_postgresql_a_connection_lost_under_a_direct_statement_is_dropped(
    pg: SQLStorage, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The server ends the connection under a direct statement: the error is the storage's
    clear one, the connection is invalidated once and the next transaction gets a live
    one. (With the database gone altogether, tests/test_multiprocess.py checks that the
    pool is never left to roll back on the dead connection.)"""
    from chatwright.errors import StorageError

    ran = DirectRuns(monkeypatch)
    select = SELECT
    for _ in range(2):
        async with pg.inline_write() as conn:
            await conn.execute(select, {"owner": "x", "limit": 1})

    async def killed() -> None:
        async with pg.inline_write() as conn:
            pid = await conn.scalar(sa.text("SELECT pg_backend_pid()"))
            async with pg.write() as other:
                await other.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid})
            await conn.execute(select, {"owner": "x", "limit": 1})

    # Two connections in the pool, both made before the failure.
    async with pg.read() as one, pg.read() as two:
        await one.execute(sa.text("SELECT 1"))
        await two.execute(sa.text("SELECT 1"))
    pool = pg.engine.sync_engine.pool
    dropped: list[Any] = []
    made: list[Any] = []
    event.listen(pool, "invalidate", lambda *a: dropped.append(a))
    event.listen(pool, "connect", lambda *a: made.append(a))
    with pytest.raises(StorageError):
        await killed()
    assert ran.direct[-1] == "SELECT (raised)"
    assert len(dropped) == 1
    # As after SQLAlchemy's own disconnect: the other connection, as old, is replaced too.
    async with pg.read() as one, pg.read() as two:
        await one.execute(sa.text("SELECT 1"))
        await two.execute(sa.text("SELECT 1"))
    assert len(made) == 2
    assert "Exception during reset" not in caplog.text
    assert "could not be reset" not in caplog.text  # the same, as chatwright logs it
    # Nothing logged an error on the way (closing the connection outside SQLAlchemy's
    # greenlet did: MissingGreenlet, "Exception terminating connection").
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    async with pg.inline_write() as conn:
        assert (await conn.execute(select, {"owner": "x", "limit": 1})).all() == []


async def items_of(storage: SQLStorage, owner: str) -> int:
    async with storage.read() as conn:
        found = await conn.scalar(
            sa.text("SELECT count(*) FROM items WHERE owner = :o"), {"o": owner}
        )
    return int(found or 0)


async def test_postgresql_an_inline_transaction_begins_and_commits_on_the_driver(
    pg: SQLStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A turn's transaction of direct statements: SQLAlchemy begins nothing; what it wrote
    is seen by others only once the block has committed it, all of it or none."""
    ran = DirectRuns(monkeypatch)
    begun: list[str] = []

    def row(owner: str, n: int) -> dict[str, Any]:
        return {"key": uuid.uuid4(), "owner": owner, "body": n, "at": AT.replace(second=n)}

    @asynccontextmanager
    async def counted() -> AsyncIterator[Any]:
        """An inline write, counting the transactions SQLAlchemy begins for it."""
        listener = lambda conn: begun.append("begin")  # noqa: E731
        event.listen(pg.engine.sync_engine, "begin", listener)
        try:
            async with pg.inline_write() as conn:
                yield conn
        finally:
            event.remove(pg.engine.sync_engine, "begin", listener)

    async with counted() as conn:  # SQLAlchemy runs it the first time, in its transaction
        await conn.execute(INSERT_RETURNING, row("first", 0))
    assert begun == ["begin"] and await items_of(pg, "first") == 1
    begun.clear()
    async with counted() as conn:
        await conn.execute(INSERT_RETURNING, row("both", 1))
        await conn.execute(INSERT_RETURNING, row("both", 2))
        assert begun == []
        assert await items_of(pg, "both") == 0  # not committed yet (a read: it begins)
    assert await items_of(pg, "both") == 2
    begun.clear()

    async def failing() -> None:
        async with counted() as conn:
            await conn.execute(INSERT_RETURNING, row("none", 3))
            raise RuntimeError("the block failed")

    with pytest.raises(RuntimeError, match="the block failed"):
        await failing()
    assert await items_of(pg, "none") == 0
    assert ran.direct == ["INSERT"] * 3
    assert begun == []


async def test_postgresql_no_connection_goes_back_to_the_pool_in_autocommit(
    pg: SQLStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One-statement writes switch psycopg's connection to autocommit and back, whether
    the block succeeds, its statement fails, or the block fails after it: a connection
    the pool hands out next is never in autocommit (its transactions would not be)."""
    given_back: list[bool] = []
    event.listen(
        pg.engine.sync_engine.pool,
        "checkin",
        lambda dbapi, record: given_back.append(bool(dbapi.driver_connection.autocommit)),
    )
    ran = DirectRuns(monkeypatch)
    for n in range(3):
        async with pg.inline_write(one_statement=True) as conn:
            at = AT.replace(second=n)
            await conn.execute(
                INSERT_RETURNING, {"key": uuid.uuid4(), "owner": "ok", "body": n, "at": at}
            )

    async def write(owner: str, at: datetime, *, alone: bool, then_fail: bool) -> None:
        async with pg.inline_write(one_statement=alone) as conn:
            await conn.execute(
                INSERT_RETURNING, {"key": uuid.uuid4(), "owner": owner, "body": 1, "at": at}
            )
            if then_fail:
                raise RuntimeError("after the statement")

    with pytest.raises(sa.exc.IntegrityError):  # (owner, at) is taken
        await write("ok", AT.replace(second=0), alone=True, then_fail=False)
    with pytest.raises(RuntimeError, match="after the statement"):
        await write("kept", AT, alone=True, then_fail=True)
    assert await items_of(pg, "kept") == 1  # it committed by itself
    assert given_back and not any(given_back), given_back
    # The next transaction of several statements is one: a failure undoes all of it.
    with pytest.raises(RuntimeError, match="after the statement"):
        await write("undone", AT, alone=False, then_fail=True)
    assert await items_of(pg, "undone") == 0
    assert ran.direct == ["INSERT"] * 2 + ["INSERT (raised)", "INSERT", "INSERT"]


async def test_postgresql_a_commit_refused_on_the_driver_is_sqlalchemys_error(
    pg: SQLStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deferred constraint fails at COMMIT, which runs on psycopg: the error is the one
    SQLAlchemy raises, nothing of the transaction is stored, and nothing is left open."""
    deferred = sa.Table(
        "deferred_items",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("owner", sa.String(40), nullable=False),
    )
    async with pg.write() as conn:
        await conn.execute(sa.text("DROP TABLE IF EXISTS deferred_items"))
        await conn.execute(
            sa.text(
                "CREATE TABLE deferred_items (id SERIAL PRIMARY KEY, owner TEXT NOT NULL, "
                "UNIQUE (owner) DEFERRABLE INITIALLY DEFERRED)"
            )
        )
    try:
        ran = DirectRuns(monkeypatch)
        insert = deferred.insert().returning(deferred.c.id)
        async with pg.inline_write() as conn:
            await conn.execute(insert, {"owner": "once"})

        async def twice(owner: str) -> None:
            async with pg.inline_write() as conn:
                await conn.execute(insert, {"owner": owner})
                await conn.execute(insert, {"owner": owner})

        for attempt in range(2):
            with pytest.raises(sa.exc.IntegrityError, match="duplicate key"):
                await twice(f"twice-{attempt}")
        assert ran.direct == ["INSERT"] * 4  # the commit, not a statement, refused them
        async with pg.read() as conn:
            owners = (
                (await conn.execute(sa.text("SELECT owner FROM deferred_items"))).scalars().all()
            )
        assert owners == ["once"]
        async with pg.read() as conn:
            left = await conn.scalar(
                sa.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND state LIKE 'idle in transaction%'"
                )
            )
        assert left == 0
    finally:
        async with pg.write() as conn:
            await conn.execute(sa.text("DROP TABLE IF EXISTS deferred_items"))
