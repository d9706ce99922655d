"""Attacks on SQLite's inline write path: direct statements and the kept connection.

An inline SQLite transaction (``SQLStorage.inline_write``) runs a statement
object seen before straight on the driver (plugins/sql/direct.py), on one
connection kept out of the pool between transactions (plugins/sql/inline.py).
What is checked, as an outsider trying to make it misbehave:

- the same statement run by SQLAlchemy (its first run) and directly (its
  second) stores and returns the same values and raises the same errors, for
  values chosen to hurt: integers at and past 64 bits, NUL characters, a
  megabyte of text, astral and combining unicode, a lone surrogate, JSON null
  and nested JSON, UUIDs, aware datetimes, booleans given as integers, text
  where a number goes, server defaults (the crud ``create``'s INSERT …
  RETURNING, built once per table);
- a failed statement, a cancellation (twice, the second during the clean-up)
  and another storage or a plain sqlite3 connection writing the same file
  leave no transaction open and no write lock held;
- ``storage.close`` while a checkpoint runs leaves no connection behind;
- a scripted model calling a crud ``create`` tool with those values gets the
  same answer from both paths, and what is stored is the same.

What were bugs, each fixed and its test kept: a commit refused by a deferred
foreign key left the kept connection in its transaction, holding the write
lock for good; a kept connection whose driver connection died was never
replaced; ``close`` under another task's inline transaction failed it with a
bare ValueError (it now waits for it); a tuple of rows raised TypeError
inline; a result of a repeated statement lacked what SQLAlchemy's result has;
event loops in turn left the previous loop's kept connection to the garbage
collector.
"""

from __future__ import annotations

import asyncio
import gc
import json
import sqlite3
import uuid
import warnings
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from chatwright.errors import InvalidInputError, StorageError
from chatwright.plugins.example import assistant as example
from chatwright.plugins.sql import inline
from chatwright.plugins.sql.engine import sqlite_engine
from chatwright.plugins.sql.records import reflect_table
from chatwright.plugins.sql.storage import SQLStorage
from chatwright.plugins.sql.writes import _insert_returning
from tests.harness import DirectRuns
from tests.hostile.conftest import AGENT, Backend, MakeServer, plant_tool, say, sql

KINDS = """CREATE TABLE kinds (
    id INTEGER PRIMARY KEY,
    user_id TEXT NOT NULL,
    n INTEGER,
    x NUMERIC,
    real REAL,
    flag BOOLEAN,
    day DATE,
    at DATETIME,
    doc JSON,
    key uuid,
    body TEXT,
    note TEXT NOT NULL DEFAULT 'none'
)"""


INSERT_KIND = sa.table("kinds", sa.column("user_id")).insert()


def make_storage(path: Path, busy_timeout: float = 5) -> SQLStorage:
    url = make_url(f"sqlite+aiosqlite:///{path}")
    engine = sqlite_engine(url, busy_timeout=busy_timeout, echo=False)
    return SQLStorage(url, engine, busy_timeout=busy_timeout)


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[SQLStorage]:
    made = make_storage(tmp_path / "d.db")
    async with made.write() as conn:
        await conn.execute(sa.text(KINDS))
    yield made
    await made.close()


def raw_driver(conn: Any) -> sqlite3.Connection:
    """The sqlite3 connection under an inline (kept) connection."""
    driver: sqlite3.Connection = conn.sync_connection.connection.dbapi_connection._connection._conn
    return driver


def lock_is_free(path: Path) -> bool:
    """Whether another process could take the write lock at once."""
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        other.close()


async def stored_row(storage: SQLStorage, row_id: int) -> tuple[Any, ...]:
    """The row as SQLite holds it: every value and its storage class."""
    async with storage.read() as conn:
        row = (
            await conn.execute(
                sa.text(
                    "SELECT n, typeof(n), x, typeof(x), real, flag, typeof(flag), day, at, "
                    "doc, typeof(doc), key, typeof(key), body, length(body), note "
                    "FROM kinds WHERE id = :id"
                ),
                {"id": row_id},
            )
        ).one()
    return tuple(row)


# -- the same statement, SQLAlchemy's execution then the direct one -----------------------

AWARE = datetime(2026, 12, 1, 10, 30, 15, 123456, tzinfo=timezone(timedelta(hours=5)))
HOSTILE_VALUES: list[tuple[str, dict[str, Any]]] = [
    ("largest int", {"n": 2**63 - 1}),
    ("smallest int", {"n": -(2**63)}),
    ("int past 64 bits", {"n": 2**63}),
    ("int below 64 bits", {"n": -(2**63) - 1}),
    ("huge int in numeric", {"x": 10**30}),
    ("decimal", {"x": Decimal("1.10")}),
    ("text for an int", {"n": "12"}),
    ("float for an int", {"n": 1.5}),
    ("bool for an int", {"n": True}),
    ("nan", {"real": float("nan")}),
    ("bool", {"flag": False}),
    ("int for a bool", {"flag": 1}),
    ("text for a bool", {"flag": "yes"}),
    ("date", {"day": datetime(2026, 2, 3).date()}),
    ("text for a date", {"day": "2026-02-03"}),
    ("aware datetime", {"at": AWARE}),
    ("text for a datetime", {"at": "2026-02-03T00:00:00Z"}),
    ("json null", {"doc": None}),
    ("json nested", {"doc": {"a": [1, None, {"b": "é\x00"}], "n": 2**70}}),
    ("json list", {"doc": [True, 1.5, "x"]}),
    ("json sql null", {"doc": sa.null()}),
    ("uuid", {"key": uuid.UUID(int=7)}),
    ("text for a uuid", {"key": "not a uuid"}),
    ("nul", {"body": "a\x00b"}),
    ("megabyte", {"body": "x" * 1_000_000}),
    ("unicode", {"body": "é\u0301 \U0001f600 \u202e\ufeff 中文"}),
    ("lone surrogate", {"body": "\ud800"}),
    ("bytes", {"body": b"\x00\xff"}),
    ("list for text", {"body": [1, 2]}),
    ("null over a server default", {"note": None}),
    ("server default", {}),
]


@pytest.mark.parametrize(("name", "values"), HOSTILE_VALUES, ids=[n for n, _ in HOSTILE_VALUES])
async def test_sqlalchemy_and_the_direct_path_store_and_return_the_same(
    storage: SQLStorage, monkeypatch: pytest.MonkeyPatch, name: str, values: dict[str, Any]
) -> None:
    ran = DirectRuns(monkeypatch, words=3)
    async with storage.read() as conn:
        table = await conn.run_sync(lambda sync: reflect_table(sync, "kinds"))
    stmt = _insert_returning(table)  # the crud create's statement, built once per table
    results: list[Any] = []
    for user in ("sqlalchemy", "direct"):
        try:
            async with storage.inline_write() as conn:
                made = await conn.execute(stmt, {"user_id": user, **values})
                row = made.one()
                returned = dict(row._mapping)
        except Exception as error:
            results.append(("raised", type(error), type(getattr(error, "orig", None))))
        else:
            assert returned["user_id"] == user
            returned.pop("user_id")
            row_id = returned.pop("id")
            results.append(("stored", returned, await stored_row(storage, row_id)))
        # Whatever happened, the kept connection holds no transaction and no lock.
        kept = storage._inline._kept
        if kept is not None:
            assert not raw_driver(kept[1]).in_transaction
        assert lock_is_free(storage.url.database)  # type: ignore[arg-type]
    # The second run went straight to the driver (or raised there).
    assert ran.direct[-1].startswith("INSERT INTO kinds"), ran.direct
    assert len(ran.direct) == 1
    first, second = results
    if first[0] == "stored" and isinstance(values.get("real"), float):
        # NaN is not equal to itself: SQLite stores it as NULL on both paths.
        assert first[2] == second[2]
        assert first[1]["real"] is None and second[1]["real"] is None
        return
    assert first == second


async def test_row_counts_and_rows_of_the_turn_statements_match(
    storage: SQLStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """UPDATE, DELETE and a SELECT with literals and a LIMIT: counts and values match."""
    ran = DirectRuns(monkeypatch, words=3)
    async with storage.read() as conn:
        table = await conn.run_sync(lambda sync: reflect_table(sync, "kinds"))
    insert = table.insert()
    update = (
        table.update()
        .where(table.c.user_id == sa.bindparam("who"))
        .values(body=sa.bindparam("body"))
    )
    delete = table.delete().where(table.c.n == sa.bindparam("n"))
    select = (
        sa.select(table.c.id, table.c.body, sa.literal(None).label("blank"), sa.literal(2**62))
        .where(table.c.user_id == sa.bindparam("who"))
        .order_by(table.c.id)
        .limit(sa.bindparam("limit", type_=sa.Integer))
    )
    seen: list[Any] = []
    for run in range(2):
        async with storage.inline_write() as conn:
            rows = [{"user_id": f"u{run}", "n": i} for i in range(5)]
            inserted = await conn.execute(insert, rows)
            updated = await conn.execute(update, {"who": f"u{run}", "body": "é"})
            deleted = await conn.execute(delete, {"n": 4})
            missing = await conn.execute(delete, {"n": 99})
            got = (await conn.execute(select, {"who": f"u{run}", "limit": 3})).all()
            seen.append(
                (
                    inserted.rowcount,
                    updated.rowcount,
                    deleted.rowcount,
                    missing.rowcount,
                    [tuple(r)[1:] for r in got],
                    [r.blank for r in got],
                )
            )
    # The first run's second DELETE, then every statement of the second run (executemany too).
    assert ran.direct == [
        "DELETE FROM kinds",
        "INSERT INTO kinds",
        "UPDATE kinds SET",
        "DELETE FROM kinds",
        "DELETE FROM kinds",
        "SELECT kinds.id, kinds.body,",
    ]
    assert seen[0] == seen[1]
    assert seen[0][:4] == (5, 5, 1, 0)
    assert seen[0][4] == [("é", None, 2**62)] * 3


# -- the kept connection after failures -------------------------------------------------


async def test_a_failed_statement_leaves_no_transaction_and_no_lock(
    storage: SQLStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran = DirectRuns(monkeypatch, words=3)
    path = Path(str(storage.url.database))
    async with storage.write() as conn:
        await conn.execute(sa.text("CREATE UNIQUE INDEX one_n ON kinds (n)"))
    async with storage.read() as conn:
        table = await conn.run_sync(lambda sync: reflect_table(sync, "kinds"))
    stmt = _insert_returning(table)

    async def insert(n: Any) -> None:
        async with storage.inline_write() as conn:
            await conn.execute(stmt, {"user_id": "a", "n": n})

    await insert(1)
    for bad in (1, 1, 2**64, "\ud800"):  # unique (SQLAlchemy's, then direct), overflow, surrogate
        # (a lone surrogate is refused naming it: InvalidInputError)
        with pytest.raises((sa.exc.IntegrityError, OverflowError, InvalidInputError)):
            await insert(bad)
        kept = storage._inline._kept
        assert kept is not None
        assert not raw_driver(kept[1]).in_transaction
        assert lock_is_free(path)
    await insert(2)
    assert "INSERT INTO kinds (raised)" in ran.direct
    async with storage.read() as conn:
        assert (await conn.scalar(sa.text("SELECT count(*) FROM kinds"))) == 2


async def test_cancelled_twice_while_cleaning_up_leaves_no_lock(storage: SQLStorage) -> None:
    path = Path(str(storage.url.database))
    for pauses in (0, 1, 2, 3, 5, 8):
        entered = asyncio.Event()

        async def stuck(entered: asyncio.Event) -> None:
            async with storage.inline_write() as conn:
                await conn.execute(sa.text("INSERT INTO kinds (user_id) VALUES ('cancelled')"))
                entered.set()
                await asyncio.sleep(30)

        task = asyncio.create_task(stuck(entered))
        await entered.wait()
        task.cancel()
        for _ in range(pauses):
            await asyncio.sleep(0)
        task.cancel()  # again, while the first cancellation is being cleaned up
        with pytest.raises(asyncio.CancelledError):
            await task
        # The second cancellation cuts the invalidation short: SQLAlchemy closes the
        # connection in a task of its own, so the lock may outlive the task briefly.
        for _ in range(100):
            if lock_is_free(path):
                break
            await asyncio.sleep(0.01)
        assert lock_is_free(path)
        async with storage.inline_write() as conn:
            await conn.execute(sa.text("INSERT INTO kinds (user_id) VALUES ('kept')"))
    async with storage.read() as conn:
        users = (await conn.execute(sa.text("SELECT user_id FROM kinds"))).scalars().all()
    assert users == ["kept"] * 6
    gc.collect()
    assert storage.engine.sync_engine.pool.checkedout() <= 1


async def test_another_storage_and_a_plain_connection_writing_the_same_file(
    storage: SQLStorage, tmp_path: Path
) -> None:
    """Two storages (two processes' worth) and a sqlite3 writer: every row lands once."""
    path = Path(str(storage.url.database))
    second = make_storage(path)
    plain = sqlite3.connect(path, timeout=0, isolation_level=None, check_same_thread=False)
    stmt = sa.text("INSERT INTO kinds (user_id, n) VALUES (:u, :n)")
    try:

        async def writer(db: SQLStorage, user: str) -> None:
            for n in range(30):
                async with db.inline_write() as conn:
                    await conn.execute(stmt, {"u": user, "n": n})
                    if n % 7 == 0:
                        await asyncio.sleep(0.002)  # holding the lock across a pause

        async def hog() -> None:
            for _ in range(5):
                while True:  # as another process would, without blocking this loop
                    try:
                        plain.execute("BEGIN IMMEDIATE")
                        break
                    except sqlite3.OperationalError:
                        await asyncio.sleep(0.001)
                plain.execute("INSERT INTO kinds (user_id, n) VALUES ('plain', 0)")
                await asyncio.sleep(0.02)
                plain.execute("COMMIT")
                await asyncio.sleep(0.01)

        await asyncio.gather(writer(storage, "a"), writer(second, "b"), hog())
        async with storage.read() as conn:
            counts = dict(
                (
                    await conn.execute(
                        sa.text("SELECT user_id, count(DISTINCT n) FROM kinds GROUP BY user_id")
                    )
                ).all()
            )
        assert counts == {"a": 30, "b": 30, "plain": 1}
        for db in (storage, second):
            kept = db._inline._kept
            assert kept is not None and not raw_driver(kept[1]).in_transaction
        assert lock_is_free(path)
    finally:
        plain.close()
        await second.close()


async def test_close_while_a_checkpoint_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(inline, "CHECKPOINT_EVERY", 1)
    path = tmp_path / "c.db"
    db = make_storage(path)
    async with db.write() as conn:
        await conn.execute(sa.text(KINDS))
    for n in range(3):
        async with db.inline_write() as conn:
            await conn.execute(sa.text("INSERT INTO kinds (user_id, n) VALUES ('a', :n)"), {"n": n})
    running = db._inline._checkpoint
    assert running is not None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        await db.close()  # at once, while the checkpoint may still run
    assert running.done() and running.exception() is None
    assert db.engine.sync_engine.pool.checkedout() == 0
    check = sqlite3.connect(path)
    try:
        assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert check.execute("SELECT count(*) FROM kinds").fetchone() == (3,)
    finally:
        check.close()


async def test_a_trigger_that_rolls_back_and_a_statement_timeout_leave_no_lock(
    tmp_path: Path,
) -> None:
    """SQLite rolls a transaction back itself (RAISE(ROLLBACK)); a time limit cuts one short
    while it waits for another process's lock: neither leaves a transaction or a lock."""
    path = tmp_path / "t.db"
    db = make_storage(path, busy_timeout=5)
    db.statement_timeout = 0.3
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        async with db.write() as conn:
            await conn.execute(sa.text(KINDS))
            await conn.execute(
                sa.text(
                    "CREATE TRIGGER no_x BEFORE INSERT ON kinds WHEN NEW.body = 'x' "
                    "BEGIN SELECT RAISE(ROLLBACK, 'no x'); END"
                )
            )
        stmt = sa.table("kinds", sa.column("user_id"), sa.column("body")).insert()

        async def rolled_back() -> None:
            async with db.inline_write() as conn:
                await conn.execute(stmt, {"user_id": "a", "body": "kept?"})
                await conn.execute(stmt, {"user_id": "a", "body": "x"})

        async def late() -> None:
            async with db.inline_write() as conn:
                await conn.execute(stmt, {"user_id": "a", "body": "late"})

        for _ in range(2):  # SQLAlchemy's execution, then the direct one
            with pytest.raises(sa.exc.IntegrityError, match="no x"):
                await rolled_back()
            assert lock_is_free(path)
        other.execute("BEGIN IMMEDIATE")  # another process holds the lock past the limit
        with pytest.raises(StorageError, match="did not answer"):
            await late()
        other.execute("ROLLBACK")
        assert lock_is_free(path)
        async with db.inline_write() as conn:
            await conn.execute(stmt, {"user_id": "a", "body": "after"})
        async with db.read() as conn:
            bodies = (await conn.execute(sa.text("SELECT body FROM kinds"))).scalars().all()
        assert bodies == ["after"]
    finally:
        other.close()
        await db.close()


async def test_a_string_past_sqlites_length_limit_is_the_same_error(
    storage: SQLStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A string or blob too big (SQLITE_LIMIT_LENGTH, lowered here to reach it cheaply)."""
    ran = DirectRuns(monkeypatch, words=3)
    async with storage.inline_write():
        pass
    kept = storage._inline._kept
    assert kept is not None
    raw_driver(kept[1]).setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 1000)
    stmt = sa.table("kinds", sa.column("user_id"), sa.column("body")).insert()
    errors = []
    for _ in range(2):
        with pytest.raises(InvalidInputError) as caught:
            async with storage.inline_write() as conn:
                await conn.execute(stmt, {"user_id": "a", "body": "x" * 2000})
        cause = caught.value.__cause__
        errors.append((str(caught.value), type(cause), type(getattr(cause, "orig", None))))
        assert lock_is_free(Path(str(storage.url.database)))
    assert ran.direct == ["INSERT INTO kinds (raised)"]
    assert errors[0] == errors[1]
    assert errors[0][1:] == (sa.exc.DataError, sqlite3.DataError)


# -- findings ----------------------------------------------------------------------------


async def test_a_commit_refused_by_a_deferred_foreign_key_frees_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "fk.db"
    db = make_storage(path, busy_timeout=0.5)
    try:
        async with db.write() as conn:
            await conn.execute(sa.text("CREATE TABLE parents (id INTEGER PRIMARY KEY)"))
            await conn.execute(
                sa.text(
                    "CREATE TABLE children (id INTEGER PRIMARY KEY, parent INTEGER "
                    "REFERENCES parents (id) DEFERRABLE INITIALLY DEFERRED)"
                )
            )
        with pytest.raises(sa.exc.IntegrityError, match="FOREIGN KEY"):
            async with db.inline_write() as conn:
                await conn.execute(sa.text("INSERT INTO children (parent) VALUES (99)"))
        kept = db._inline._kept
        assert kept is None or not raw_driver(kept[1]).in_transaction
        assert lock_is_free(path)
        async with db.inline_write() as conn:  # and the next inline transaction works
            await conn.execute(sa.text("INSERT INTO parents DEFAULT VALUES"))
        async with db.write() as conn:
            await conn.execute(sa.text("INSERT INTO parents DEFAULT VALUES"))
    finally:
        await db.close()


async def test_a_kept_connection_that_died_is_replaced(storage: SQLStorage) -> None:
    async with storage.inline_write() as conn:
        await conn.execute(sa.text("INSERT INTO kinds (user_id) VALUES ('a')"))
    kept = storage._inline._kept
    assert kept is not None
    raw_driver(kept[1]).close()  # the driver's connection is gone
    outcomes = []
    for _ in range(3):
        try:
            async with storage.inline_write() as conn:
                await conn.execute(sa.text("INSERT INTO kinds (user_id) VALUES ('b')"))
        except StorageError:
            outcomes.append("failed")
        else:
            outcomes.append("stored")
    # At most the first fails (as on a pooled connection); the next ones take a new one.
    assert outcomes[1:] == ["stored", "stored"], outcomes


async def test_close_waits_for_an_inline_transaction_under_way(tmp_path: Path) -> None:
    """storage.close() takes the write lock before it closes the kept connection, so a
    transaction another task has open on it ends as it would have (here: commits)."""
    path = tmp_path / "close.db"
    db = make_storage(path)
    async with db.write() as conn:
        await conn.execute(sa.text(KINDS))
    entered = asyncio.Event()

    async def body() -> None:
        async with db.inline_write() as conn:
            await conn.execute(INSERT_KIND, {"user_id": "a"})
            await conn.execute(INSERT_KIND, {"user_id": "b"})  # direct from here on
            entered.set()
            await asyncio.sleep(0.2)
            await conn.execute(INSERT_KIND, {"user_id": "c"})

    task = asyncio.create_task(body())
    await entered.wait()
    await db.close()
    assert task.done()
    await task  # no error: it finished before the connection was closed
    assert lock_is_free(path)
    with sqlite3.connect(path) as raw:
        users = [r[0] for r in raw.execute("SELECT user_id FROM kinds ORDER BY id")]
    assert users == ["a", "b", "c"]


async def test_a_tuple_of_rows_is_executemany_as_with_sqlalchemy(storage: SQLStorage) -> None:
    insert = sa.text("INSERT INTO kinds (user_id) VALUES (:u)")
    async with storage.write() as conn:
        await conn.execute(insert, ({"u": "a"}, {"u": "b"}))
    for _ in range(2):
        async with storage.inline_write() as conn:
            await conn.execute(INSERT_KIND, ({"user_id": "c"}, {"user_id": "d"}))
    async with storage.read() as conn:
        users = (await conn.execute(sa.text("SELECT user_id FROM kinds"))).scalars().all()
    assert users == ["a", "b", "c", "d", "c", "d"]


async def test_a_repeated_statement_gives_what_sqlalchemy_gives(storage: SQLStorage) -> None:
    async with storage.read() as conn:
        table = await conn.run_sync(lambda sync: reflect_table(sync, "kinds"))
    insert = table.insert()
    select = sa.select(table.c.id, table.c.user_id).order_by(table.c.id)
    seen = []
    for run in range(2):
        async with storage.inline_write() as conn:
            made = await conn.execute(insert, {"user_id": f"u{run}"})
            key = tuple(made.inserted_primary_key or ())
            ids = (await conn.scalars(select)).all()
            result = await conn.execute(select)
            names = list(result.keys())
            row = result.fetchone()
            assert row is not None
            seen.append((key, ids[:1], names, row._asdict(), row._mapping[table.c.user_id]))
    assert seen[1] == ((2,), [1], ["id", "user_id"], {"id": 1, "user_id": "u0"}, "u0")


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_event_loops_in_turn_leave_no_connection_to_the_garbage_collector(
    tmp_path: Path,
) -> None:
    db = make_storage(tmp_path / "loops.db")

    async def create() -> None:
        async with db.write() as conn:
            await conn.execute(sa.text(KINDS))

    async def one(n: int) -> None:
        async with db.inline_write() as conn:
            await conn.execute(sa.text("INSERT INTO kinds (user_id, n) VALUES ('a', :n)"), {"n": n})

    asyncio.run(create())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for n in range(4):
            asyncio.run(one(n))
        asyncio.run(db.close())
        gc.collect()
    dropped = [w for w in caught if "non-checked-in connection" in str(w.message)]
    assert dropped == []


# -- a scripted model through a crud create tool --------------------------------------------


@pytest.fixture
def backend(tmp_path: Path) -> Backend:
    """SQLite only: the inline path under attack exists there alone."""
    return Backend("sqlite", f"sqlite+aiosqlite:///{tmp_path}/hostile.db")


CREATE_KIND = {
    "table": "kinds",
    "operation": "create",
    "args": {
        "n": {"type": "integer"},
        "x": {"type": "number"},
        "flag": {"type": "boolean"},
        "at": {"type": "datetime"},
        "doc": {"type": "json"},
        "key": {"type": "uuid"},
        "body": {"type": "string"},
    },
}
MODEL_VALUES: list[dict[str, Any]] = [
    {"n": 2**63 - 1},
    {"n": 2**63},
    {"n": -(2**70)},
    {"x": 10**30},
    {"x": 1e308},
    {"flag": True},
    {"at": "2026-12-01T10:30:15.5+05:00"},
    {"at": "2026-12-01T10:30:15"},
    {"doc": None, "body": "doc left out"},
    {"doc": {"nested": [1, None, "é\u0301\U0001f600"], "big": 2**80}},
    {"doc": "just text"},
    {"key": str(uuid.UUID(int=9))},
    {"key": "not a uuid"},
    {"body": "x" * 10_000},
    {"body": "x" * 10_001},
    {"body": "nul \x00 inside"},
    {"body": "'); DROP TABLE kinds; --"},
    {"body": "\u202e\ufeff\U0001f600 中文"},
    {"n": "12"},
    {"n": 1.5},
    {"flag": "yes"},
    {"n": [1]},
    {"user_id": "alice", "body": "planted"},
]


async def test_a_scripted_model_gets_the_same_answers_from_both_paths(
    make_server: MakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each call twice in one turn: the first through SQLAlchemy, the second directly."""
    ran = DirectRuns(monkeypatch, words=3)
    server = await make_server(turns={"max_tool_calls": 1000})
    runtime = server.runtime
    await example.seed(runtime.storage, "scripted:x")
    await sql(runtime, KINDS)
    await plant_tool(runtime, "add_kind", CREATE_KIND, agent=AGENT)
    calls = [("add_kind", args) for args in MODEL_VALUES for _ in range(2)]
    answer = await say(server, "mallory", calls)
    results = answer["tool_calls"]
    assert len(results) == len(calls)
    for (_, args), first, second in zip(calls[::2], results[::2], results[1::2], strict=True):
        one, two = first["result"], second["result"]
        if isinstance(one, dict) and "created" in one:
            assert isinstance(two, dict) and "created" in two, (args, one, two)
            one, two = dict(one["created"]), dict(two["created"])
            assert two.pop("id") == one.pop("id") + 1
        assert (first["error"], one) == (second["error"], two), args
    # Both paths ran: the create's INSERT went straight to the driver at least once.
    assert any(d.startswith("INSERT INTO kinds") for d in ran.direct), ran.direct
    rows = await sql(runtime, "SELECT * FROM kinds ORDER BY id")
    assert len(rows) % 2 == 0
    for a, b in zip(rows[::2], rows[1::2], strict=True):
        assert a.pop("id") + 1 == b.pop("id")
        assert a == b
    assert {r["user_id"] for r in rows} == {"mallory"}
    assert lock_is_free(Path(str(runtime.storage.url.database)))  # type: ignore[attr-defined]


async def test_a_turns_statements_store_the_same_on_both_paths(
    make_server: MakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two turns with the same hostile message: the first turn's statements run through
    SQLAlchemy, the second's directly; the stored chats are the same."""
    ran = DirectRuns(monkeypatch, words=3)
    server = await make_server()
    runtime = server.runtime
    await example.seed(runtime.storage, "scripted:x")
    text = "quote ' é\u0301 \U0001f600 \u202e\ufeff 中文 " + "ü" * 15_000
    for _ in range(2):
        await say(server, "mallory", [], message=text)
    assert any(d.startswith("INSERT INTO chat_messages") for d in ran.direct), ran.direct
    rows = await sql(
        runtime,
        "SELECT chat_id, role, content, user_id, typeof(created_at) AS t FROM chat_messages "
        "ORDER BY id",
    )
    by_chat: dict[Any, list[dict[str, Any]]] = {}
    for row in rows:
        content = json.loads(row["content"])
        content["data"].pop("id", None)  # a run id of its own in each turn
        row["content"] = content
        by_chat.setdefault(row.pop("chat_id"), []).append(row)
    stored = list(by_chat.values())
    assert len(stored) == 2
    assert stored[0] and stored[0] == stored[1]
    assert stored[0][0]["content"]["data"]["content"] == text


async def test_a_dangling_deferred_reference_does_not_lock_the_database(
    make_server: MakeServer,
) -> None:
    server = await make_server(storage={"busy_timeout": 0.5})
    runtime = server.runtime
    await example.seed(runtime.storage, "scripted:x")
    await sql(runtime, "CREATE TABLE parents (id INTEGER PRIMARY KEY)")
    await sql(runtime, "INSERT INTO parents (id) VALUES (1)")
    await sql(
        runtime,
        "CREATE TABLE links (id INTEGER PRIMARY KEY, user_id TEXT NOT NULL, parent INTEGER "
        "REFERENCES parents (id) DEFERRABLE INITIALLY DEFERRED)",
    )
    config = {
        "table": "links",
        "operation": "create",
        "args": {"parent": {"type": "integer", "required": True}},
    }
    await plant_tool(runtime, "add_link", config, agent=AGENT)
    answer = await say(server, "mallory", [("add_link", {"parent": 999})])
    assert answer["tool_calls"][0]["error"] is True
    # Another user, afterwards: the database still takes writes.
    answer = await say(server, "alice", [("add_link", {"parent": 1})])
    assert answer["tool_calls"][0]["error"] is False, answer
    assert await sql(runtime, "SELECT user_id, parent FROM links") == [
        {"user_id": "alice", "parent": 1}
    ]
    assert lock_is_free(Path(str(runtime.storage.url.database)))  # type: ignore[attr-defined]
