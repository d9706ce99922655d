"""Writes that keep row images: what approval previews, apply runs and undo reverts.

:meth:`Writes.preview` reads, as the user, the rows a write would change and
shows them before and after; :meth:`Writes.apply` runs the write in one
transaction that first reads (on PostgreSQL: locks) those same rows, refuses
with the fresh preview when they are no longer as an approved preview showed
them, writes only those rows, and appends the audit entry with every row's
whole before/after image (:mod:`.images`) on the same connection, so that a
write is never without its record nor a record without its write. Rows are
keyed by primary key; a table without one is written and audited, its rows
paired in the order read, but cannot be undone (:mod:`.undo`).

A write that appends (``Write.append``) sets its text columns to the stored text,
the separator and the value in the UPDATE itself (:func:`.records.appended`), not
to a text computed from the rows read: two appends at once both land, whichever
order the database takes them in, each one's images showing what it found and left.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from chatwright.approvals import (
    WRITE_OPERATIONS,
    Applied,
    AuditEntry,
    NewAuditEntry,
    Preview,
    RowChange,
    Write,
    unwritten,
)
from chatwright.errors import InvalidInputError, PreviewChangedError, StorageError
from chatwright.plugins.sql.audit import append_audit
from chatwright.plugins.sql.images import check_writable, image, key_of, row_id
from chatwright.plugins.sql.records import appended, column_kind, refused
from chatwright.plugins.sql.turns import check_held

if TYPE_CHECKING:
    from chatwright.plugins.sql.records import SQLRecordStore

log = logging.getLogger(__name__)

UPDATED_AT = "updated_at"
"""The column an update or upsert sets to now, when the table has it (see :meth:`Writes._set`)."""

KEYED_WRITE = 10_000
"""Up to this many rows, a write on PostgreSQL names the rows it read by key (bound
parameters are limited); past it, a row that appeared meanwhile fails the write."""


_inserts: weakref.WeakKeyDictionary[sa.Table, Any] = weakref.WeakKeyDictionary()


def _insert_returning(t: sa.Table) -> Any:
    """``INSERT … RETURNING`` every column of ``t``, built once per table: the values come
    with each execution, so the statement is the same object every time (which lets
    an inline SQLite transaction run it directly, see .direct)."""
    stmt = _inserts.get(t)
    if stmt is None:
        stmt = _inserts[t] = t.insert().returning(*t.columns)
    return stmt


class Writes:
    """Previews and writes with images for one record store (see the module docstring)."""

    def __init__(self, records: SQLRecordStore) -> None:
        self.records = records

    def check(self, t: sa.Table, write: Write) -> None:
        """The guards every write passes before it is previewed or run."""
        op, name = write.operation, write.table
        if op not in WRITE_OPERATIONS:
            raise InvalidInputError(
                f"unknown write operation {op!r} for {name!r}; use one of "
                + ", ".join(WRITE_OPERATIONS)
            )
        for names in (write.values, write.where, write.scope, write.returning, write.conflict):
            self.records._columns(t, names)
        if op in {"update", "delete"} and not write.where:
            raise InvalidInputError(f"refusing to {op} every row of {name!r}: no condition")
        if op == "update" and not write.values:
            raise InvalidInputError(f"nothing to change in {name!r}: no values given")
        keys = {c.name for c in t.primary_key.columns}
        kept = set(write.conflict) if op == "upsert" else set()
        rekeyed = sorted(c for c in write.values if c in keys and c not in kept)
        if op in {"update", "upsert"} and rekeyed:
            # Rows are found again by their key: its preview, its audit entry, an undo.
            raise InvalidInputError(
                f"column {', '.join(map(repr, rekeyed))} of {name!r} is its primary key, "
                f"which {'an update' if op == 'update' else 'an upsert'} does not change; "
                "leave it out"
            )
        outside = [c for c, v in write.scope.items() if c in write.values and write.values[c] != v]
        if outside:
            # A write never moves a row out of its scope (or makes one outside it).
            raise InvalidInputError(
                f"the value for column {', '.join(map(repr, outside))} of {name!r} is outside "
                "the write's scope; leave it out"
            )
        self._check_append(t, write)
        if op == "upsert":
            if not write.conflict:
                raise InvalidInputError(f"an upsert of {name!r} needs its conflict columns")
            missing = [c for c in write.conflict if c not in write.values]
            if missing:
                raise InvalidInputError(
                    f"an upsert of {name!r} needs a value for its conflict column "
                    + ", ".join(map(repr, missing))
                )

    @staticmethod
    def _check_append(t: sa.Table, write: Write) -> None:
        """An append adds text to text columns the write gives a value for, on existing rows."""
        if not write.append:
            return
        name = write.table
        if write.operation not in {"update", "upsert"}:
            raise InvalidInputError(
                f"a {write.operation} of {name!r} cannot append: it writes no existing row"
            )
        for column, separator in write.append.items():
            if column not in write.values:
                raise InvalidInputError(
                    f"column {column!r} of {name!r} is to be appended to but has no value"
                )
            if column in write.conflict or column in write.scope:
                raise InvalidInputError(
                    f"column {column!r} of {name!r} finds the row; it cannot be appended to"
                )
            if column_kind(t.c[column].type) != "string":
                raise InvalidInputError(
                    f"column {column!r} of {name!r} is not text; only text can be appended to"
                )
            if not isinstance(write.values[column], str) or not isinstance(separator, str):
                raise InvalidInputError(
                    f"the value and separator appended to column {column!r} of {name!r} "
                    "must be text"
                )
            if "\x00" in separator:
                raise InvalidInputError(
                    f"the separator for column {column!r} of {name!r} holds a NUL character"
                )

    def _set(self, t: sa.Table, write: Write, values: Mapping[str, Any]) -> dict[str, Any]:
        """What an update writes: the values, appended columns as text added in the statement,
        and ``updated_at`` set to now when the table has it and the values leave it out."""
        changed = {
            k: appended(t.c[k], write.append[k], v) if k in write.append else v
            for k, v in values.items()
        }
        stamp = self._now(t.c[UPDATED_AT]) if UPDATED_AT in t.c else None
        if stamp is not None and UPDATED_AT not in write.values:
            changed[UPDATED_AT] = stamp
        return changed

    def _now(self, column: sa.Column[Any]) -> Any:
        """Now, as ``column`` keeps time; None for a column that keeps no time."""
        kind = column_kind(column.type)
        if self.records.db.dialect == "postgresql":
            return sa.func.now() if kind == "datetime" else None
        now = datetime.now(UTC)
        if kind == "datetime":
            # SQLite keeps no zone: UTC, as chatwright's own tables keep it there.
            return now.replace(tzinfo=None)
        return now.isoformat() if kind == "string" else None

    @staticmethod
    def _order(t: sa.Table) -> list[sa.Column[Any]]:
        """Rows by primary key; a table without one by its plainly comparable columns."""
        keys = list(t.primary_key.columns)
        if keys:
            return keys
        plain = ("string", "integer", "number", "boolean", "date", "datetime", "uuid")
        return [c for c in t.columns if column_kind(c.type) in plain]

    def affected(self, t: sa.Table, write: Write) -> sa.ColumnElement[bool]:
        """Which existing rows a write changes: ``where``, or an upsert's row inside the scope."""
        if write.operation == "upsert":
            found = {c: write.values[c] for c in write.conflict}
            return self.records._where(t, {**found, **write.scope})
        return self.records._where(t, write.where)

    async def _rows(
        self, conn: Any, t: sa.Table, where: sa.ColumnElement[bool], *, lock: bool
    ) -> list[dict[str, Any]]:
        stmt = sa.select(*t.columns).where(where).order_by(*self._order(t))
        if lock and self.records.db.dialect == "postgresql":
            stmt = stmt.with_for_update()
        return [dict(r) for r in (await conn.execute(stmt)).mappings()]

    def _preview(
        self, t: sa.Table, write: Write, rows: Sequence[Mapping[str, Any]], count: int, cap: int
    ) -> Preview:
        """The preview of ``write`` given the rows it finds (whole rows, by key)."""
        op = write.operation
        values = image(write.values)
        if op == "create" or (op == "upsert" and not rows):
            change = RowChange(key=key_of(t, values), before=None, after=values)
            return Preview(write.table, op, (change,)[: max(cap, 0)], 1)
        if op == "upsert":
            kept = set(write.conflict) | set(write.scope)
            values = {k: v for k, v in values.items() if k not in kept}
        changes = []
        for row in rows[: max(cap, 0)]:
            before = image(row)
            after = None if op == "delete" else {**before, **values}
            for column, separator in write.append.items():
                if after is not None:
                    after[column] = appended(before.get(column), separator, values[column])
            changes.append(RowChange(key=key_of(t, row), before=before, after=after))
        # Rows past the cap are not shown, but an approval must still notice if one
        # changes: a digest of them all (given all of them: ``count`` rows).
        digest = _digest(rows) if len(rows) > max(cap, 0) and len(rows) == count else None
        return Preview(write.table, op, tuple(changes), count, digest)

    async def preview(self, user_id: str, write: Write, *, cap: int) -> Preview:
        t = await self.records._table(write.table)
        self.check(t, write)
        if write.operation == "create":
            return self._preview(t, write, [], 1, cap)
        where = self.affected(t, write)
        # The count over every matching row, in the statement that lists the first
        # ``cap`` of them: one snapshot, so the rows shown and the count agree.
        total = sa.func.count().over()
        stmt = sa.select(*t.columns, total).where(where).order_by(*self._order(t))
        names = [c.name for c in t.columns]
        with refused(write.table):
            async with self.records.db.read(user_id) as conn:
                found = (await conn.execute(stmt.limit(max(cap, 1)))).all()
                count = int(found[0][-1]) if found else 0
                rows = [dict(zip(names, r[:-1], strict=True)) for r in found[: max(cap, 0)]]
                if count > len(rows):
                    # More than are shown: all of them, for the preview's digest.
                    rows = await self._rows(conn, t, where, lock=False)
                    count = len(rows)
        return self._preview(t, write, rows, count, cap)

    async def apply(
        self,
        user_id: str,
        write: Write,
        *,
        expect: Preview | None = None,
        audit: NewAuditEntry | None = None,
        cap: int,
    ) -> Applied:
        t = await self.records._table(write.table)
        self.check(t, write)
        # Not in previews, which show values as the audit log keeps them: a call held
        # for approval runs with its arguments as stored, where NUL is U+FFFD already.
        check_writable(write.table, write.values)
        stored: AuditEntry | None = None
        db = self.records.db
        # A create is one indexed insert (and the audit entry's): run inline like a turn's.
        # The others' filters may scan the table: the driver's thread (SQLStorage.inline_write).
        transaction = db.inline_write if write.operation == "create" else db.write
        with refused(write.table):
            async with transaction() as conn:
                await check_held(conn, db, user_id)  # a framework table, before the user
                await db.users.enter(conn, user_id)
                rows, changes = await self._run(conn, t, write, expect, cap)
                if audit is not None:
                    filled = replace(
                        audit,
                        table=audit.table or write.table,
                        row_ids=tuple(row_id(c.key) for c in changes),
                        changes=tuple(changes),
                    )
                    wrote = rows if write.operation in {"create", "upsert"} else changes
                    if not wrote:
                        # Nothing written: the write failed, and its entry says so.
                        filled = replace(filled, outcome="error", error=unwritten(write))
                    stored = await append_audit(conn, filled)
        back = list(write.returning)
        return Applied(
            rows=[{k: r[k] for k in back} for r in rows], changes=tuple(changes), audit=stored
        )

    def _expected(
        self,
        t: sa.Table,
        write: Write,
        expect: Preview | None,
        found: list[dict[str, Any]],
        cap: int,
    ) -> None:
        if expect is None:
            return
        fresh = self._preview(t, write, found, len(found), cap)
        if not fresh.same_as(expect):
            raise PreviewChangedError(
                f"the rows of {write.table!r} this {write.operation} would change have changed "
                "since the preview; nothing was written",
                preview=fresh,
            )

    async def _run(
        self, conn: Any, t: sa.Table, write: Write, expect: Preview | None, cap: int
    ) -> tuple[list[dict[str, Any]], list[RowChange]]:
        """Run ``write`` on ``conn``: the written rows (whole) and the images of each change."""
        op = write.operation
        if op == "create":
            self._expected(t, write, expect, [], cap)
            result = await conn.execute(_insert_returning(t), dict(write.values))
            row = dict(result.mappings().one())
            return [row], [RowChange(key=key_of(t, row), before=None, after=image(row))]
        found = await self._rows(conn, t, self.affected(t, write), lock=True)
        self._expected(t, write, expect, found, cap)
        if op == "upsert":
            return await self._upsert(conn, t, write, found, expect is not None, cap)
        if not found:
            return [], []
        where = self.records._where(t, write.where)
        keys = list(t.primary_key.columns)
        if keys and self.records.db.dialect == "postgresql" and len(found) <= KEYED_WRITE:
            # Only the rows read and locked above: a row inserted meanwhile by another
            # transaction is not written without its before-image (see _pair).
            where = sa.and_(where, _key_in(keys, found))
        stmt: Any = (
            t.update().values(self._set(t, write, write.values)) if op == "update" else t.delete()
        )
        result = await conn.execute(stmt.where(where).returning(*t.columns))
        written = [dict(r) for r in result.mappings()]
        return written, _pair(t, op, found, written)

    async def _upsert(
        self,
        conn: Any,
        t: sa.Table,
        write: Write,
        found: list[dict[str, Any]],
        expected: bool,
        cap: int,
    ) -> tuple[list[dict[str, Any]], list[RowChange]]:
        dialect_insert = (
            postgresql.insert if self.records.db.dialect == "postgresql" else sqlite.insert
        )
        values = dict(write.values)
        nothing = InvalidInputError(unwritten(write))
        if not found:
            stmt: Any = dialect_insert(t).values(values)
            stmt = stmt.on_conflict_do_nothing(index_elements=list(write.conflict))
            result = await conn.execute(stmt.returning(*t.columns))
            row = result.mappings().first()
            if row is not None:
                created = dict(row)
                return [created], [
                    RowChange(key=key_of(t, created), before=None, after=image(created))
                ]
            # The row is there but was not seen: another user's, or inserted meanwhile.
            found = await self._rows(conn, t, self.affected(t, write), lock=True)
            if not found:
                raise nothing
            if expected:
                raise PreviewChangedError(
                    f"the row of {write.table!r} this upsert would save was created since "
                    "the preview; nothing was written",
                    preview=self._preview(t, write, found, len(found), cap),
                )
        kept = set(write.conflict) | set(write.scope)
        changed = {k: v for k, v in values.items() if k not in kept}
        where = self.records._where(t, {**{c: values[c] for c in write.conflict}, **write.scope})
        if changed:
            result = await conn.execute(
                t.update().where(where).values(self._set(t, write, changed)).returning(*t.columns)
            )
            saved = result.mappings().first()
            if saved is None:
                raise nothing
            after = dict(saved)
        else:
            after = found[0]
        before = found[0]
        return [after], [RowChange(key=key_of(t, after), before=image(before), after=image(after))]


def _key_in(keys: Sequence[sa.Column[Any]], rows: Sequence[Mapping[str, Any]]) -> Any:
    """The condition "the row's primary key is one of those of ``rows``"."""
    if len(keys) == 1:
        return keys[0].in_([r[keys[0].name] for r in rows])
    return sa.tuple_(*keys).in_([tuple(r[c.name] for c in keys) for r in rows])


def _pair(
    t: sa.Table, op: str, found: Sequence[Mapping[str, Any]], written: Sequence[Mapping[str, Any]]
) -> list[RowChange]:
    """Before/after images of an update or delete: rows read before, rows returned after.

    Paired by primary key; a table without one has nothing to pair by, so its
    rows are paired in the order read and returned (its writes cannot be undone).
    """
    if not t.primary_key.columns:
        if op == "delete":
            return [RowChange(key={}, before=image(r), after=None) for r in found[: len(written)]]
        return [
            RowChange(key={}, before=image(b), after=image(a))
            for b, a in zip(found, written, strict=False)
        ]
    before = {_key_tuple(t, r): r for r in found}
    changes = []
    for row in written:
        old = before.get(_key_tuple(t, row))
        if old is None:
            # Matched by the write but not by the read before it: inserted meanwhile.
            raise StorageError(
                f"rows of {t.name!r} were added while the write ran; nothing was written, try again"
            )
        after = None if op == "delete" else image(row)
        changes.append(RowChange(key=key_of(t, row), before=image(old), after=after))
    return changes


def _digest(rows: Sequence[Mapping[str, Any]]) -> str:
    """A digest of whole rows as their images (JSON), in the order given."""
    import hashlib
    import json

    text = json.dumps([image(r) for r in rows], sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _key_tuple(t: sa.Table, row: Mapping[str, Any]) -> tuple[Any, ...]:
    return tuple(row[c.name] for c in t.primary_key.columns)
