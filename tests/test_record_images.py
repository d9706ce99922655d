"""Writes with row images: the record store's preview, apply and undo.

Every test runs on SQLite and on PostgreSQL (the ``sql`` backend); the last
section runs on the ``supabase`` backend, whose user transactions act as
``authenticated`` under row-level security. Rows are checked with statements
of the test's own, outside the store under test.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from chatwright import testing
from chatwright.approvals import AuditEntry, NewAuditEntry, Preview, RowChange, Write
from chatwright.errors import (
    InvalidInputError,
    NotFoundError,
    PreviewChangedError,
    StorageError,
    UndoConflictError,
)
from chatwright.plugins.sql import schema
from chatwright.plugins.sql.audit import audit_from_row
from chatwright.plugins.sql.storage import SQLStorage
from chatwright.plugins.supabase.storage import SupabaseStorage
from chatwright.stores import ColumnSpec, TableSpec
from tests.harness import ADMIN_URL, admin_connect, pg_storage_settings, storage_for

ALICE, BOB = "alice", "bob"
TASKS = "img_tasks"
SPEC = TableSpec(
    TASKS,
    (
        ColumnSpec("id", "integer", primary_key=True),
        ColumnSpec("user_id", "string", nullable=False),
        ColumnSpec("title", "string", nullable=False),
        ColumnSpec("done", "boolean", nullable=False, default=False),
        ColumnSpec("due", "datetime"),
        ColumnSpec("amount", "number"),
        ColumnSpec("meta", "json"),
    ),
    unique=(("user_id", "title"),),
)
SCOPE = {"user_id": ALICE}
DUE = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


async def ensure_audit_log(storage: SQLStorage) -> None:
    """The ``audit_log`` table, made from the schema metadata where no migration made it yet."""

    def create(conn: sa.Connection) -> bool:
        if sa.inspect(conn).has_table("audit_log"):
            return False
        schema.audit_log.create(conn)
        return True

    async with storage.write() as conn:
        created = await conn.run_sync(create)
        if created and storage.dialect == "postgresql":
            # As the migration leaves it: the user's own rows, appended, never changed.
            from chatwright.plugins.sql.migrations.data_api import close_table

            exists = await conn.scalar(
                sa.text("SELECT 1 FROM pg_roles WHERE rolname = 'authenticated'")
            )
            if exists:
                await conn.run_sync(close_table, "audit_log", own_rows=True)
                await conn.execute(sa.text("REVOKE UPDATE, DELETE ON audit_log FROM authenticated"))


async def prepare(storage: SQLStorage) -> SQLStorage:
    await storage.upgrade()
    await ensure_audit_log(storage)
    async with storage.write() as conn:
        for table in (TASKS, "img_files", "img_loose"):
            await conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
        await conn.execute(sa.delete(schema.audit_log))
    assert await storage.records.ensure_table(SPEC) is True
    return storage


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A SQLite file, then the run's PostgreSQL database (direct URLs)."""
    if request.param == "postgresql":
        pg: str = request.getfixturevalue("pg_url")
        return pg
    return f"sqlite+aiosqlite:///{tmp_path}/images.db"


@pytest.fixture
async def store(url: str) -> AsyncIterator[SQLStorage]:
    """The ``sql`` backend on ``url``, with the test tables made afresh."""
    storage = await prepare(storage_for(url))
    yield storage
    await storage.close()


async def seed(storage: SQLStorage, user: str, *titles: str, **values: Any) -> list[int]:
    """Rows for ``user``, inserted outside the store under test; their ids."""
    ids = []
    async with storage.write() as conn:
        for title in titles:
            stmt = sa.text(
                f"INSERT INTO {TASKS} (user_id, title, done, due, amount, meta) "
                "VALUES (:u, :t, :d, :due, :a, :m) RETURNING id"
            ).bindparams(
                sa.bindparam("due", type_=sa.DateTime(timezone=True)),
                sa.bindparam("a", type_=sa.Numeric()),
                sa.bindparam("m", type_=sa.JSON()),
            )
            params = {
                "u": user,
                "t": title,
                "d": values.get("done", False),
                "due": values.get("due", DUE),
                "a": values.get("amount", decimal.Decimal("12.5")),
                "m": values.get("meta", {"tags": ["a", "b"], "n": 1}),
            }
            ids.append(int((await conn.execute(stmt, params)).scalar_one()))
    return ids


async def table_rows(storage: SQLStorage, table: str = TASKS) -> list[dict[str, Any]]:
    """Every row of ``table`` as stored (raw values), by id; read as the connecting role."""
    async with storage.read() as conn:
        reflected = await conn.run_sync(lambda c: sa.Table(table, sa.MetaData(), autoload_with=c))
        order = list(reflected.primary_key.columns) or list(reflected.columns)
        result = await conn.execute(sa.select(reflected).order_by(*order))
        return [dict(r) for r in result.mappings()]


async def audit_entries(storage: SQLStorage) -> list[AuditEntry]:
    """Every audit entry, newest first, read from ``audit_log`` directly."""
    async with storage.read() as conn:
        t = schema.audit_log
        result = await conn.execute(sa.select(t).order_by(t.c.id.desc()))
        return [audit_from_row(dict(r)) for r in result.mappings()]


def entry(
    turn: uuid.UUID, operation: str, user: str = ALICE, table: str | None = TASKS
) -> NewAuditEntry:
    return NewAuditEntry(
        user_id=user,
        agent_name="keeper",
        tool_name=f"{operation}_task",
        operation=operation,
        turn_id=turn,
        table=table,
        args={"note": "as called"},
    )


def undo_entry(turn: uuid.UUID, user: str = ALICE) -> NewAuditEntry:
    return NewAuditEntry(
        user_id=user,
        agent_name="keeper",
        tool_name="undo",
        operation="undo",
        turn_id=uuid.uuid4(),
        undo_of=turn,
    )


def update(where: dict[str, Any], **values: Any) -> Write:
    return Write(
        TASKS, "update", values=values, where={**where, **SCOPE}, scope=SCOPE, returning=["id"]
    )


def delete(where: dict[str, Any]) -> Write:
    return Write(TASKS, "delete", where={**where, **SCOPE}, scope=SCOPE, returning=["id"])


def create(**values: Any) -> Write:
    return Write(
        TASKS, "create", values={**values, **SCOPE}, scope=SCOPE, returning=["id", "title"]
    )


def upsert(conflict: tuple[str, ...] = ("id",), **values: Any) -> Write:
    return Write(
        TASKS,
        "upsert",
        values={**values, **SCOPE},
        scope=SCOPE,
        conflict=conflict,
        returning=["id", "title"],
    )


# --------------------------------------------------------------------------- previews


async def test_previews_show_whole_rows_before_and_after_capped_with_an_exact_count(
    store: SQLStorage,
) -> None:
    ids = await seed(store, ALICE, *(f"task {i}" for i in range(5)))
    bob = await seed(store, BOB, "bob 1", "bob 2")
    before = await table_rows(store)
    records = store.records

    p = await records.preview(ALICE, update({"done": False}, title="renamed"), cap=2)
    assert (p.table, p.operation, p.count) == (TASKS, "update", 5)
    assert [dict(r.key) for r in p.rows] == [{"id": ids[0]}, {"id": ids[1]}]
    first = p.rows[0]
    assert first.before == {
        "id": ids[0],
        "user_id": ALICE,
        "title": "task 0",
        "done": False,
        "due": first.before["due"] if first.before else None,
        "amount": 12.5,
        "meta": {"tags": ["a", "b"], "n": 1},
    }
    assert first.before is not None and first.after is not None
    # JSON-ready: the datetime as ISO 8601 text, the decimal as a number.
    assert dt.datetime.fromisoformat(first.before["due"]).replace(tzinfo=dt.UTC) == DUE
    assert first.after == {**first.before, "title": "renamed"}

    d = await records.preview(ALICE, delete({"id": ids[3]}), cap=10)
    assert d.count == 1 and len(d.rows) == 1
    assert d.rows[0].after is None and d.rows[0].before is not None
    assert d.rows[0].before["title"] == "task 3"

    # An upsert finds the row of its conflict target inside the scope...
    u = await records.preview(ALICE, upsert(id=ids[1], title="saved"), cap=10)
    assert u.count == 1 and u.rows[0].before is not None and u.rows[0].after is not None
    assert u.rows[0].before["title"] == "task 1" and u.rows[0].after["title"] == "saved"
    # ... and only there: bob's row with that key shows as a row to create, nothing of his.
    b = await records.preview(ALICE, upsert(id=bob[0], title="mine now"), cap=10)
    assert b.count == 1 and b.rows[0].before is None
    assert b.rows[0].after == {"id": bob[0], "title": "mine now", "user_id": ALICE}
    assert "bob 1" not in str(b.as_dict())

    c = await records.preview(ALICE, create(title="new", due=DUE), cap=10)
    assert c.count == 1 and c.rows[0].before is None
    assert c.rows[0].after == {"title": "new", "due": DUE.isoformat(), "user_id": ALICE}
    assert dict(c.rows[0].key) == {}

    # A cap of 0 lists nothing but still counts.
    zero = await records.preview(ALICE, update({"done": False}, title="x"), cap=0)
    assert (zero.rows, zero.count) == ((), 5)
    # Bob's scope never sees alice's rows, and previews wrote nothing.
    mine = await records.preview(BOB, Write(TASKS, "delete", where={"user_id": BOB}), cap=10)
    assert mine.count == 2 and {r.before["user_id"] for r in mine.rows if r.before} == {BOB}
    assert await table_rows(store) == before
    assert await audit_entries(store) == []


async def test_a_preview_round_trips_through_json_and_compares_equal(store: SQLStorage) -> None:
    await seed(store, ALICE, "one", "two", meta={"deep": {"list": [1, 2.5, None, "ü"]}})
    p = await store.records.preview(ALICE, update({"done": False}, done=True), cap=5)
    again = Preview.from_dict(p.as_dict())
    assert again.same_as(p) and p.same_as(again)
    assert p.rows[0].before is not None
    assert p.rows[0].before["meta"] == {"deep": {"list": [1, 2.5, None, "ü"]}}


# --------------------------------------------------------------------------- apply


async def test_apply_writes_with_images_and_its_audit_entry_in_one_transaction(
    store: SQLStorage,
) -> None:
    ids = await seed(store, ALICE, "one", "two", "three")
    turn = uuid.uuid4()
    write = update({"done": False}, title="same title")
    # "same title" twice breaks the unique (user_id, title): the write fails whole.
    with pytest.raises(InvalidInputError, match=f"{TASKS}.*'user_id', 'title'|'title'.*{TASKS}"):
        await store.records.apply(ALICE, write, audit=entry(turn, "update"), cap=5)
    assert await audit_entries(store) == []  # no audit row without its write
    # ... and no write without its audit row: an entry the log refuses undoes the write.
    unstorable = replace(entry(turn, "update"), agent_name=None)  # type: ignore[arg-type]
    with pytest.raises(StorageError, match="audit entry of this write could not be stored"):
        await store.records.apply(
            ALICE, update({"id": ids[0]}, title="ONE"), audit=unstorable, cap=5
        )
    assert await audit_entries(store) == []
    assert [r["title"] for r in await table_rows(store)] == ["one", "two", "three"]

    applied = await store.records.apply(
        ALICE, update({"id": ids[1]}, title="TWO", done=True), audit=entry(turn, "update"), cap=5
    )
    assert applied.rows == [{"id": ids[1]}]
    (change,) = applied.changes
    assert dict(change.key) == {"id": ids[1]}
    assert change.before is not None and change.after is not None
    assert (change.before["title"], change.after["title"]) == ("two", "TWO")
    assert (change.before["done"], change.after["done"]) == (False, True)
    assert applied.audit is not None
    (stored,) = await audit_entries(store)
    assert stored.id == applied.audit.id
    assert (stored.table, stored.operation, stored.turn_id) == (TASKS, "update", turn)
    assert list(stored.row_ids) == [ids[1]]
    assert list(stored.changes) == [change]
    assert stored.args == {"note": "as called"}

    created = await store.records.apply(
        ALICE, create(title="four", due=DUE), audit=entry(turn, "create"), cap=5
    )
    assert created.rows[0]["title"] == "four"
    (c,) = created.changes
    assert c.before is None and c.after is not None and c.after["done"] is False
    deleted = await store.records.apply(
        ALICE, delete({"id": ids[0]}), audit=entry(turn, "delete"), cap=5
    )
    assert deleted.rows == [{"id": ids[0]}]
    assert deleted.changes[0].after is None and deleted.changes[0].before is not None
    saved = await store.records.apply(
        ALICE, upsert(id=ids[2], title="THREE"), audit=entry(turn, "upsert"), cap=5
    )
    assert saved.rows == [{"id": ids[2], "title": "THREE"}]
    assert saved.changes[0].before is not None and saved.changes[0].before["title"] == "three"
    assert [e.operation for e in await audit_entries(store)] == [
        "upsert",
        "delete",
        "create",
        "update",
    ]


async def test_a_write_that_matches_nothing_changes_nothing(store: SQLStorage) -> None:
    bob = await seed(store, BOB, "bob's")
    applied = await store.records.apply(ALICE, update({"id": bob[0]}, title="hacked"), cap=5)
    assert (applied.rows, applied.changes) == ([], ())
    applied = await store.records.apply(ALICE, delete({"id": bob[0]}), cap=5)
    assert (applied.rows, applied.changes) == ([], ())
    # An upsert hitting bob's row saves nothing and says so; bob's row is as it was.
    with pytest.raises(InvalidInputError, match="nothing saved"):
        await store.records.apply(
            ALICE, upsert(id=bob[0], title="mine now"), audit=entry(uuid.uuid4(), "upsert"), cap=5
        )
    assert [(r["user_id"], r["title"]) for r in await table_rows(store)] == [(BOB, "bob's")]
    assert await audit_entries(store) == []


async def test_apply_refuses_what_the_store_must_never_run(store: SQLStorage) -> None:
    records = store.records
    cases: list[tuple[Write, str]] = [
        (Write("agent_tools", "delete", where={"id": 1}), "belongs to chatwright"),
        (Write("AUDIT_LOG", "create", values={"x": 1}), "belongs to chatwright"),
        (Write(TASKS, "update", values={"title": "x"}), "no condition"),
        (Write(TASKS, "delete"), "no condition"),
        (Write(TASKS, "update", where={"id": 1}), "nothing to change"),
        (Write(TASKS, "truncate", where={"id": 1}), "unknown write operation 'truncate'"),
        (Write(TASKS, "update", values={"nope": 1}, where={"id": 1}), "no column 'nope'"),
        (Write(TASKS, "delete", where={"id; DROP TABLE x": 1}), "no column"),
        (Write(TASKS, "upsert", values={"title": "x"}), "conflict columns"),
        (Write(TASKS, "upsert", values={"title": "x"}, conflict=["id"]), "conflict column 'id'"),
        (Write("no_such_table", "create", values={"x": 1}), "does not exist"),
        (
            Write(TASKS, "create", values={"title": "x", "user_id": BOB}, scope=SCOPE),
            "'user_id' of 'img_tasks' is outside the write's scope",
        ),
        (update({"id": 1}, user_id=BOB), "outside the write's scope"),
        (
            Write(TASKS, "upsert", values={"id": 1, "user_id": BOB}, scope=SCOPE, conflict=["id"]),
            "outside the write's scope",
        ),
    ]
    for write, message in cases:
        for call in ("preview", "apply"):
            run = records.preview if call == "preview" else records.apply
            with pytest.raises((InvalidInputError, NotFoundError), match=message):
                await run(ALICE, write, cap=5)


# --------------------------------------------------------------------------- expect


async def test_apply_with_an_outdated_preview_writes_nothing_and_returns_the_fresh_one(
    store: SQLStorage,
) -> None:
    ids = await seed(store, ALICE, "one", "two")
    records = store.records
    write = update({"done": False}, amount=7)
    shown = await records.preview(ALICE, write, cap=5)
    # Someone changes a previewed row meanwhile.
    async with store.write() as conn:
        await conn.execute(sa.text(f"UPDATE {TASKS} SET amount = 99 WHERE id = {ids[1]}"))
    before = await table_rows(store)
    with pytest.raises(PreviewChangedError, match=f"{TASKS!r}.*changed since the preview") as err:
        await records.apply(ALICE, write, expect=shown, audit=entry(uuid.uuid4(), "update"), cap=5)
    fresh = err.value.preview
    assert isinstance(fresh, Preview) and not fresh.same_as(shown)
    assert fresh.rows[1].before is not None and fresh.rows[1].before["amount"] == 99
    assert await table_rows(store) == before
    assert await audit_entries(store) == []
    # The fresh preview, approved, runs.
    applied = await records.apply(ALICE, write, expect=fresh, cap=5)
    assert [c.after["amount"] for c in applied.changes if c.after] == [7, 7]
    write = update({"done": False}, amount=8)
    # A row added to the matching set changes the preview too (the count).
    grown = await records.preview(ALICE, write, cap=1)
    await seed(store, ALICE, "three")
    with pytest.raises(PreviewChangedError) as err:
        await records.apply(ALICE, write, expect=grown, cap=1)
    assert isinstance(err.value.preview, Preview) and err.value.preview.count == 3
    assert len(await table_rows(store)) == 3
    # An upsert previewed as a create whose row appeared meanwhile is asked again too.
    shown = await records.preview(ALICE, upsert(conflict=("user_id", "title"), title="late"), cap=5)
    assert shown.rows[0].before is None
    await seed(store, ALICE, "late")
    with pytest.raises(PreviewChangedError):
        await records.apply(
            ALICE, upsert(conflict=("user_id", "title"), title="late"), expect=shown, cap=5
        )


async def test_two_concurrent_approvals_of_one_preview_write_once(
    store: SQLStorage, url: str
) -> None:
    ids = await seed(store, ALICE, "one", "two")
    other = storage_for(url)  # another engine, as another process has
    try:
        for write in (update({"id": ids[1]}, title="approved"), delete({"id": ids[0]})):
            shown = await store.records.preview(ALICE, write, cap=5)
            # Hold the rows (PostgreSQL) or the write lock (SQLite) so that both
            # approvals are waiting at once, before either can read or write.
            async with store.write() as blocker:
                lock = " FOR UPDATE" if store.dialect == "postgresql" else ""
                await blocker.execute(sa.text(f"SELECT * FROM {TASKS}{lock}"))
                tasks = [
                    asyncio.create_task(
                        s.records.apply(
                            ALICE, write, expect=shown, audit=entry(uuid.uuid4(), "x"), cap=5
                        )
                    )
                    for s in (store, other)
                ]
                await asyncio.sleep(0.5)
                assert not any(t.done() for t in tasks)
            results = await asyncio.gather(*tasks, return_exceptions=True)
            written = [r for r in results if not isinstance(r, BaseException)]
            refused = [r for r in results if isinstance(r, PreviewChangedError)]
            assert (len(written), len(refused)) == (1, 1), results
            assert not refused[0].preview.same_as(shown)  # type: ignore[attr-defined]
        assert [e.operation for e in await audit_entries(store)] == ["x", "x"]
        assert [(r["id"], r["title"]) for r in await table_rows(store)] == [(ids[1], "approved")]
    finally:
        await other.close()


# --------------------------------------------------------------------------- undo


async def turn_entries(storage: SQLStorage, turn: uuid.UUID) -> list[AuditEntry]:
    return [e for e in await audit_entries(storage) if e.turn_id == turn]


async def test_undo_puts_back_creates_updates_deletes_and_upserts_exactly(
    store: SQLStorage,
) -> None:
    ids = await seed(store, ALICE, "one", "two", "three", meta={"nested": {"x": [1, {"y": None}]}})
    await seed(store, BOB, "bob's")
    original = await table_rows(store)
    records, turn = store.records, uuid.uuid4()
    await records.apply(
        ALICE, update({"id": ids[0]}, title="ONE", done=True), audit=entry(turn, "update"), cap=5
    )
    await records.apply(ALICE, delete({"id": ids[1]}), audit=entry(turn, "delete"), cap=5)
    made = await records.apply(
        ALICE, create(title="new", amount=3), audit=entry(turn, "create"), cap=5
    )
    # The row the turn created, changed again in the same turn: undone back to nothing.
    new_id = made.rows[0]["id"]
    await records.apply(
        ALICE, update({"id": new_id}, title="newer"), audit=entry(turn, "update"), cap=5
    )
    await records.apply(
        ALICE, upsert(id=ids[2], title="THREE", meta={"k": "v"}), audit=entry(turn, "upsert"), cap=5
    )
    await records.apply(ALICE, upsert(id=900, title="upserted"), audit=entry(turn, "upsert"), cap=5)
    assert await table_rows(store) != original

    entries = await turn_entries(store, turn)
    report = await records.undo(ALICE, entries, undo_entry(turn))
    assert await table_rows(store) == original
    assert report.turn_id == turn
    assert report.entries == tuple(e.id for e in entries)
    # One change per row touched: ids[0], ids[1], the created row, ids[2], 900.
    assert sorted(c.key["id"] for c in report.changes) == sorted([*ids, new_id, 900])
    by_id = {c.key["id"]: c for c in report.changes}
    assert by_id[new_id].after is None and by_id[900].after is None
    assert by_id[ids[1]].before is None and by_id[ids[1]].after is not None
    assert by_id[ids[0]].before is not None and by_id[ids[0]].before["title"] == "ONE"
    assert report.audit is not None
    (stored,) = [e for e in await audit_entries(store) if e.operation == "undo"]
    assert stored.id == report.audit.id and stored.undo_of == turn
    assert sorted(stored.row_ids) == sorted([*ids, new_id, 900])
    assert list(stored.changes) == list(report.changes)


async def test_undo_is_refused_naming_every_row_changed_since_and_reverts_nothing(
    store: SQLStorage,
) -> None:
    ids = await seed(store, ALICE, "one", "two", "three", "four")
    records, turn = store.records, uuid.uuid4()
    await records.apply(
        ALICE, update({"id": ids[0]}, title="ONE"), audit=entry(turn, "update"), cap=5
    )
    await records.apply(
        ALICE, update({"id": ids[3]}, title="FOUR"), audit=entry(turn, "update"), cap=5
    )
    await records.apply(ALICE, delete({"id": ids[1]}), audit=entry(turn, "delete"), cap=5)
    made = await records.apply(ALICE, create(title="new"), audit=entry(turn, "create"), cap=5)
    async with store.write() as conn:  # changes made after the turn
        await conn.execute(sa.text(f"UPDATE {TASKS} SET amount = 1 WHERE id = {ids[0]}"))
        await conn.execute(
            sa.text(
                f"INSERT INTO {TASKS} (id, user_id, title, done) "
                f"VALUES ({ids[1]}, 'alice', 'back', false)"
            )
        )
        await conn.execute(sa.text(f"DELETE FROM {TASKS} WHERE id = {made.rows[0]['id']}"))
    before = await table_rows(store)
    with pytest.raises(UndoConflictError) as err:
        await records.undo(ALICE, await turn_entries(store, turn), undo_entry(turn))
    message = str(err.value)
    assert f"row id={ids[0]} of {TASKS!r} was changed since" in message
    assert f"row id={ids[1]} of {TASKS!r} exists again" in message
    assert f"row id={made.rows[0]['id']} of {TASKS!r} was deleted since" in message
    assert f"id={ids[3]}" not in message and "nothing was undone" in message
    assert str(turn) in message
    # Nothing reverted, not even the row that could have been (ids[3]); no undo entry.
    assert await table_rows(store) == before
    assert [e.operation for e in await audit_entries(store) if e.operation == "undo"] == []


async def test_undo_keeps_columns_the_turn_did_not_change_and_refuses_tables_it_cannot_key(
    store: SQLStorage,
) -> None:
    async with store.write() as conn:
        blob = "BYTEA" if store.dialect == "postgresql" else "BLOB"
        await conn.execute(
            sa.text(
                "CREATE TABLE img_files "
                f"(id INTEGER PRIMARY KEY, user_id TEXT, name TEXT, data {blob})"
            )
        )
        await conn.execute(sa.text("CREATE TABLE img_loose (user_id TEXT, note TEXT)"))
        await conn.execute(
            sa.text(
                "INSERT INTO img_files VALUES (1, 'alice', 'a.bin', :d), (2, 'alice', 'b.bin', :d)"
            ),
            {"d": b"\x00\x01binary\xff"},
        )
        await conn.execute(sa.text("INSERT INTO img_loose VALUES ('alice', 'n1'), ('alice', 'n2')"))
    records, turn = store.records, uuid.uuid4()
    files = Write(
        "img_files", "update", values={"name": "c.bin"}, where={"id": 1, **SCOPE}, returning=["id"]
    )
    applied = await records.apply(ALICE, files, audit=entry(turn, "update", table=None), cap=5)
    assert applied.changes[0].before is not None
    assert applied.changes[0].before["data"] == "<9 bytes>"
    await records.undo(ALICE, await turn_entries(store, turn), undo_entry(turn))
    # The binary column was not rewritten from its image: it is intact.
    assert [r["data"] for r in await table_rows(store, "img_files")] == [b"\x00\x01binary\xff"] * 2
    assert [r["name"] for r in await table_rows(store, "img_files")] == ["a.bin", "b.bin"]

    # A deleted row with binary data cannot be put back from its image: said, nothing done.
    turn = uuid.uuid4()
    gone = Write("img_files", "delete", where={"id": 2, **SCOPE}, returning=["id"])
    await records.apply(ALICE, gone, audit=entry(turn, "delete", table=None), cap=5)
    with pytest.raises(InvalidInputError, match="'data' of 'img_files' holds binary data"):
        await records.undo(ALICE, await turn_entries(store, turn), undo_entry(turn))
    assert [r["id"] for r in await table_rows(store, "img_files")] == [1]

    # No primary key: the write works, its undo is refused by name.
    turn = uuid.uuid4()
    loose = Write("img_loose", "update", values={"note": "x"}, where=SCOPE, returning=["note"])
    applied = await records.apply(ALICE, loose, audit=entry(turn, "update", table=None), cap=5)
    assert [c.key for c in applied.changes] == [{}, {}]
    assert applied.rows == [{"note": "x"}, {"note": "x"}]
    with pytest.raises(UndoConflictError, match="'img_loose' has no primary key"):
        await records.undo(ALICE, await turn_entries(store, turn), undo_entry(turn))


async def test_undo_of_another_users_entries_is_refused(store: SQLStorage) -> None:
    ids = await seed(store, ALICE, "alice's")
    turn = uuid.uuid4()
    await store.records.apply(ALICE, delete({"id": ids[0]}), audit=entry(turn, "delete"), cap=5)
    with pytest.raises(NotFoundError, match="not this user's"):
        await store.records.undo(BOB, await turn_entries(store, turn), undo_entry(turn, BOB))
    assert await table_rows(store) == []
    no_turn = NewAuditEntry(user_id=ALICE, agent_name="a", tool_name="undo", operation="undo")
    with pytest.raises(InvalidInputError, match="undo_of"):
        await store.records.undo(ALICE, await turn_entries(store, turn), no_turn)


async def test_an_entry_pointing_at_another_users_row_reverts_nothing(store: SQLStorage) -> None:
    bob = await seed(store, BOB, "bob's")
    before = await table_rows(store)
    # An entry of alice's that names bob's row (as a confused or forged log would):
    # the row is not as the entry left it, so nothing of bob's is deleted.
    turn = uuid.uuid4()
    async with store.write() as conn:
        from chatwright.plugins.sql.audit import insert_audit

        forged = NewAuditEntry(
            user_id=ALICE,
            agent_name="keeper",
            tool_name="add_task",
            operation="create",
            turn_id=turn,
            table=TASKS,
            changes=(
                RowChange(key={"id": bob[0]}, before=None, after={"id": bob[0], "user_id": ALICE}),
            ),
        )
        await insert_audit(conn, forged)
    with pytest.raises(UndoConflictError, match=f"row id={bob[0]} of {TASKS!r} was changed"):
        await store.records.undo(ALICE, await turn_entries(store, turn), undo_entry(turn))
    assert await table_rows(store) == before


# --------------------------------------------------------------------------- hostile values


def nested(levels: int) -> Any:
    value: Any = "leaf"
    for i in range(levels):
        value = {"k": value} if i % 2 else [value]
    return value


async def test_odd_values_are_refused_by_name_and_write_nothing(store: SQLStorage) -> None:
    ids = await seed(store, ALICE, "plain")
    before = await table_rows(store)
    turn = uuid.uuid4()
    cases: list[tuple[dict[str, Any], str]] = [
        ({"title": "a\x00b"}, f"column 'title' of {TASKS!r} holds a NUL character"),
        ({"meta": {"k": ["\x00"]}}, "column 'meta' .* NUL"),
        ({"amount": float("nan")}, "column 'amount' .* is nan"),
        ({"amount": float("-inf")}, "column 'amount' .* is -inf"),
        ({"amount": decimal.Decimal("NaN")}, "column 'amount' .* is NaN"),
        ({"meta": {"x": [1.0, float("inf")]}}, "column 'meta' .* is inf"),
        ({"meta": nested(100)}, "column 'meta' .* nested more than 43 levels"),
        ({"meta": {"n": 10**5000}}, "column 'meta' .* cannot be kept in the audit log"),
    ]
    for values, message in cases:
        for write in (update({"id": ids[0]}, **values), create(**{"title": "new", **values})):
            with pytest.raises(InvalidInputError, match=message):
                await store.records.apply(ALICE, write, audit=entry(turn, "x"), cap=5)
    # Integers beyond the column: the database's refusal, as the caller's error.
    for big in (2**70, -(2**63) - 1):
        with pytest.raises(InvalidInputError, match=r"cannot hold a value|refused a value"):
            await store.records.apply(ALICE, create(title="big", id=big), cap=5)
    with pytest.raises(InvalidInputError, match=r"column 'meta': .* nested too deeply"):
        await store.records.preview(ALICE, create(title="x", meta=nested(100_000)), cap=5)
    assert await table_rows(store) == before
    assert await audit_entries(store) == []


async def test_odd_values_round_trip_through_previews_images_and_undo(store: SQLStorage) -> None:
    odd = {
        "deep": nested(40),
        "big": 10**30,
        "text": 'ü \u2028 quote" backslash\\ 🧪',
        "float": 0.1,
        "neg": -1.5e-300,
        "empty": {},
    }
    ids = await seed(store, ALICE, "odd", meta=odd, amount=decimal.Decimal("-0.25"))
    original = await table_rows(store)
    records, turn = store.records, uuid.uuid4()
    write = update({"id": ids[0]}, meta={**odd, "added": [None, True]})
    shown = await records.preview(ALICE, write, cap=5)
    assert shown.rows[0].before is not None and shown.rows[0].before["meta"] == odd
    assert shown.rows[0].before["amount"] == -0.25
    assert Preview.from_dict(shown.as_dict()).same_as(shown)
    applied = await records.apply(ALICE, write, expect=shown, audit=entry(turn, "update"), cap=5)
    (stored,) = await turn_entries(store, turn)
    assert list(stored.changes) == list(applied.changes)  # the images survived the audit log
    await records.apply(ALICE, delete({"id": ids[0]}), audit=entry(turn, "delete"), cap=5)
    await records.undo(ALICE, await turn_entries(store, turn), undo_entry(turn))
    assert await table_rows(store) == original


async def test_values_an_image_cannot_hold_survive_an_undo_of_other_columns(
    store: SQLStorage,
) -> None:
    odd = "nul \x00 inside"
    if store.dialect == "postgresql":
        ids = await seed(store, ALICE, "x", amount=decimal.Decimal("NaN"))
    else:  # SQLite keeps NUL in text (and stores NaN as NULL)
        ids = await seed(store, ALICE, odd)
    original = await table_rows(store)
    records, turn = store.records, uuid.uuid4()
    shown = await records.preview(ALICE, update({"id": ids[0]}, done=True), cap=5)
    before = shown.rows[0].before
    assert before is not None
    if store.dialect == "postgresql":
        assert before["amount"] == "NaN"  # the decimal's own text, as PostgreSQL spells it
    else:
        assert before["title"] == "nul \ufffd inside"
    await records.apply(
        ALICE, update({"id": ids[0]}, done=True), audit=entry(turn, "update"), cap=5
    )
    await records.undo(ALICE, await turn_entries(store, turn), undo_entry(turn))
    restored = await table_rows(store)
    if store.dialect == "postgresql":
        assert restored[0]["amount"].is_nan() and original[0]["amount"].is_nan()
        assert {**restored[0], "amount": 0} == {**original[0], "amount": 0}
    else:
        assert restored == original and restored[0]["title"] == odd


# --------------------------------------------------------------------------- row-level security


@pytest.fixture(scope="module")
def rls_url() -> Iterator[str]:
    """A database of its own, migrated by the supabase backend (which makes its roles)."""
    admin = admin_connect()
    name = f"cw_img_{uuid.uuid4().hex[:10]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    url = (
        make_url(ADMIN_URL)
        .set(drivername="postgresql+psycopg", database=name)
        .render_as_string(hide_password=False)
    )
    try:
        yield url
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def supabase(url: str) -> SupabaseStorage:
    settings = testing.settings(storage={"backend": "supabase", **pg_storage_settings(url)})
    return SupabaseStorage.from_settings(settings)


@pytest.fixture
async def rls(rls_url: str) -> AsyncIterator[SupabaseStorage]:
    """The supabase backend (connected as the superuser; users act as ``authenticated``)."""
    storage = await prepare(supabase(rls_url))
    yield storage
    await storage.close()


@pytest.mark.postgresql
async def test_under_row_level_security_a_user_previews_writes_and_undoes_only_their_rows(
    rls: SupabaseStorage, rls_url: str
) -> None:
    mine = await seed(rls, ALICE, "a1", "a2", "a3")
    bobs = await seed(rls, BOB, "b1", "b2")
    async with rls.write(ALICE) as conn:  # the user's transactions are subject to RLS
        assert await conn.scalar(sa.text("SELECT current_user")) == "authenticated"
    original = await table_rows(rls)
    records, turn = rls.records, uuid.uuid4()
    # A write that forgot its scope: the database narrows it to alice's rows.
    everything = Write(TASKS, "update", values={"done": True}, where={"done": False})
    shown = await records.preview(ALICE, everything, cap=2)
    assert shown.count == 3 and [r.key["id"] for r in shown.rows] == mine[:2]
    for user, ids in ((BOB, mine), (ALICE, bobs)):
        for row in ids:
            p = await records.preview(user, Write(TASKS, "delete", where={"id": row}), cap=5)
            assert (p.count, p.rows) == (0, ())
    applied = await records.apply(
        ALICE, everything, expect=shown, audit=entry(turn, "update"), cap=2
    )
    assert sorted(c.key["id"] for c in applied.changes) == mine
    gone = await records.apply(
        ALICE, Write(TASKS, "delete", where={"id": bobs[0]}), audit=entry(turn, "delete"), cap=5
    )
    assert gone.changes == ()
    # An upsert onto bob's key saves nothing of alice's over bob's row.
    with pytest.raises(InvalidInputError):
        await records.apply(
            ALICE,
            Write(
                TASKS,
                "upsert",
                values={"id": bobs[1], "user_id": ALICE, "title": "mine"},
                conflict=["id"],
            ),
            cap=5,
        )
    now = await table_rows(rls)
    assert [r for r in now if r["user_id"] == BOB] == [r for r in original if r["user_id"] == BOB]
    assert all(r["done"] for r in now if r["user_id"] == ALICE)

    # An entry of alice's that claims to have deleted bob's row: under RLS she cannot
    # see it, and putting it "back" is refused; bob's row is left alone.
    forged = NewAuditEntry(
        user_id=ALICE,
        agent_name="keeper",
        tool_name="delete_task",
        operation="delete",
        turn_id=turn,
        table=TASKS,
        changes=(
            RowChange(
                key={"id": bobs[0]},
                before={"id": bobs[0], "user_id": BOB, "title": "planted"},
                after=None,
            ),
        ),
    )
    async with rls.write() as conn:
        from chatwright.plugins.sql.audit import insert_audit

        await insert_audit(conn, forged)
    with pytest.raises(InvalidInputError):
        await records.undo(ALICE, await turn_entries(rls, turn), undo_entry(turn))
    assert await table_rows(rls) == now
    # Without it, alice's own turn is undone exactly, and bob's rows never moved.
    async with rls.write() as conn:
        await conn.execute(
            sa.delete(schema.audit_log).where(schema.audit_log.c.operation == "delete")
        )
    await records.undo(ALICE, await turn_entries(rls, turn), undo_entry(turn))
    assert await table_rows(rls) == original

    # Contrast: the plain sql backend on the same database, as the superuser, sees
    # bob's rows in the same preview: the narrowing above was row-level security.
    plain = storage_for(rls_url)
    try:
        leaky = await plain.records.preview(ALICE, everything, cap=10)
        assert {r.before["user_id"] for r in leaky.rows if r.before} == {ALICE, BOB}
    finally:
        await plain.close()


async def test_a_row_the_write_matched_but_did_not_read_first_fails_the_write(
    store: SQLStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What a row inserted by another transaction between the read and the write
    # looks like (on PostgreSQL past KEYED_WRITE rows, where the write is not
    # narrowed to the keys read): it would have no before-image, so nothing is written.
    from chatwright.plugins.sql import writes

    await seed(store, ALICE, "one", "two")
    before = await table_rows(store)
    read = writes.Writes._rows

    async def misses_the_last(self: Any, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        return (await read(self, *args, **kwargs))[:-1]

    monkeypatch.setattr(writes.Writes, "_rows", misses_the_last)
    monkeypatch.setattr(writes, "KEYED_WRITE", 0)
    with pytest.raises(StorageError, match=f"rows of {TASKS!r} were added while the write ran"):
        await store.records.apply(
            ALICE, update({"done": False}, amount=5), audit=entry(uuid.uuid4(), "update"), cap=5
        )
    assert await table_rows(store) == before
    assert await audit_entries(store) == []


async def test_a_refused_undo_names_a_bounded_number_of_rows(store: SQLStorage) -> None:
    await seed(store, ALICE, *(f"t{i}" for i in range(25)))
    turn = uuid.uuid4()
    write = update({"done": False}, amount=1)
    await store.records.apply(ALICE, write, audit=entry(turn, "update"), cap=5)
    async with store.write() as conn:
        await conn.execute(sa.text(f"UPDATE {TASKS} SET amount = 2"))
    with pytest.raises(UndoConflictError) as err:
        await store.records.undo(ALICE, await turn_entries(store, turn), undo_entry(turn))
    assert str(err.value).count("was changed since") == 20
    assert "and 5 more rows; nothing was undone" in str(err.value)
