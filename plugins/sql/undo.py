"""Undo on SQL: put back the rows a turn's writes changed, from their audit images.

The audit entries of a turn hold, for every row a write changed, its whole
image before and after (:mod:`.images`). Undoing walks them newest first and
replays them backwards on what each row is now: a row must still be as the
write left it (a created or updated row unchanged, a deleted row still
absent), or the undo is refused naming every such row and nothing is
reverted. Only then does it write, once per row, from what the row is now to
what it was before the turn: a created row is deleted, an updated row gets the
columns back that differ (a column the turn did not change is not rewritten,
so values an image cannot hold exactly, such as binary data, survive an undo
of an update), and a deleted row is inserted again. All of it, and the
``undo`` audit entry with the images of what the undo itself changed, in one
transaction as the user (rows locked on PostgreSQL).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from chatwright.approvals import AuditEntry, NewAuditEntry, RowChange, UndoReport
from chatwright.errors import InvalidInputError, NotFoundError, UndoConflictError
from chatwright.plugins.sql.images import bindable, image, json_ready, row_id

if TYPE_CHECKING:
    from chatwright.plugins.sql.records import SQLRecordStore

SHOWN = 20
"""How many rows changed since an undo's refusal names (then: how many more)."""

Image = dict[str, Any] | None
Slot = tuple[str, tuple[Any, ...]]
"""A row: its table and its primary key values (JSON-ready)."""


class Undo:
    """One undo of audit entries, for ``user_id`` (see the module docstring)."""

    def __init__(self, records: SQLRecordStore, user_id: str) -> None:
        self.records = records
        self.user_id = user_id
        self.tables: dict[str, sa.Table] = {}

    async def run(self, entries: Sequence[AuditEntry], audit: NewAuditEntry) -> UndoReport:
        from chatwright.plugins.sql.audit import append_audit
        from chatwright.plugins.sql.records import refused

        if audit.undo_of is None:
            raise InvalidInputError("an undo's audit entry must name the turn it reverts (undo_of)")
        await self._tables(entries)
        names = sorted(self.tables)
        with refused(", ".join(names)):
            async with self.records.db.write(self.user_id) as conn:
                now, then = await self._replay(conn, entries, audit)
                changes = [await self._revert(conn, slot, now[slot], then[slot]) for slot in now]
                done = [c for c in changes if c is not None]
                filled = replace(
                    audit,
                    table=audit.table or (names[0] if len(names) == 1 else None),
                    row_ids=tuple(row_id(c.key) for c in done),
                    changes=tuple(done),
                )
                stored = await append_audit(conn, filled)
        return UndoReport(
            turn_id=audit.undo_of,
            entries=tuple(e.id for e in entries),
            changes=tuple(done),
            audit=stored,
        )

    async def _tables(self, entries: Sequence[AuditEntry]) -> None:
        """Check the entries are the user's and their tables can be undone; reflect them."""
        for entry in entries:
            if entry.user_id != self.user_id:
                raise NotFoundError(f"audit entry {entry.id} is not this user's")
            if not entry.changes:
                continue
            if not entry.table:
                raise InvalidInputError(
                    f"audit entry {entry.id} names no table, so its changes cannot be undone"
                )
            if entry.table in self.tables:
                continue
            t = await self.records._table(entry.table)
            if not t.primary_key.columns:
                raise UndoConflictError(
                    f"table {entry.table!r} has no primary key: its rows cannot be told apart, "
                    "so writes to it cannot be undone; nothing was undone"
                )
            self.tables[entry.table] = t

    async def _replay(
        self, conn: AsyncConnection, entries: Sequence[AuditEntry], audit: NewAuditEntry
    ) -> tuple[dict[Slot, Image], dict[Slot, Image]]:
        """Each row as it is now and as it was before the turn; refused if any row moved on."""
        now: dict[Slot, Image] = {}
        state: dict[Slot, Image] = {}
        conflicts: list[str] = []
        broken: set[Slot] = set()
        for entry in entries:
            if not entry.changes:
                continue
            t = self.tables[str(entry.table)]
            for change in reversed(tuple(entry.changes)):
                slot = (t.name, self._key(t, change.key, entry))
                if slot in broken:
                    continue
                if slot not in state:
                    now[slot] = state[slot] = await self._current(conn, t, change.key)
                expected = _plain(change.after)
                if not _same(state[slot], expected):
                    conflicts.append(_conflict(t, change.key, state[slot], expected))
                    broken.add(slot)
                    continue
                state[slot] = _plain(change.before)
        if conflicts:
            shown = conflicts[:SHOWN]
            if len(conflicts) > SHOWN:
                shown.append(f"and {len(conflicts) - SHOWN} more rows")
            raise UndoConflictError(
                f"cannot undo turn {audit.undo_of}: " + "; ".join(shown) + "; nothing was undone"
            )
        return now, state

    @staticmethod
    def _key(t: sa.Table, key: Mapping[str, Any], entry: AuditEntry) -> tuple[Any, ...]:
        names = [c.name for c in t.primary_key.columns]
        if sorted(key) != sorted(names):
            raise InvalidInputError(
                f"audit entry {entry.id} keys a row of {t.name!r} by "
                f"{', '.join(map(repr, key)) or 'nothing'}, not by its primary key "
                f"{', '.join(map(repr, names))}; it cannot be undone"
            )
        return tuple(json_ready(key[n]) for n in names)

    def _by_key(self, t: sa.Table, key: Mapping[str, Any]) -> sa.ColumnElement[bool]:
        return sa.and_(*(c == bindable(c, key[c.name]) for c in t.primary_key.columns))

    async def _current(self, conn: AsyncConnection, t: sa.Table, key: Mapping[str, Any]) -> Image:
        stmt = sa.select(*t.columns).where(self._by_key(t, key))
        if self.records.db.dialect == "postgresql":
            stmt = stmt.with_for_update()
        row = (await conn.execute(stmt)).mappings().first()
        return None if row is None else image(dict(row))

    async def _revert(
        self, conn: AsyncConnection, slot: Slot, now: Image, then: Image
    ) -> RowChange | None:
        """Write the row from ``now`` back to ``then``; the change made, None if none was needed."""
        t = self.tables[slot[0]]
        names = [c.name for c in t.primary_key.columns]
        key = dict(zip(names, slot[1], strict=True))
        if _same(now, then) and _same(then, now):
            return None
        if then is None:
            await conn.execute(t.delete().where(self._by_key(t, key)))
            return RowChange(key=key, before=now, after=None)
        if now is None:
            values = {c.name: bindable(c, then[c.name]) for c in t.columns if c.name in then}
            result = await conn.execute(t.insert().values(values).returning(*t.columns))
        else:
            differ = {
                c.name: bindable(c, then[c.name])
                for c in t.columns
                if c.name in then and then[c.name] != now.get(c.name)
            }
            stmt = t.update().where(self._by_key(t, key)).values(differ)
            result = await conn.execute(stmt.returning(*t.columns))
        return RowChange(key=key, before=now, after=image(dict(result.mappings().one())))


def _plain(row: Mapping[str, Any] | None) -> Image:
    return None if row is None else {str(k): json_ready(v) for k, v in row.items()}


def _same(current: Image, expected: Image) -> bool:
    """Whether a row is as an image says: every column the image has, equal (None: absent).

    Columns added to the table since the image was taken are not compared.
    """
    if current is None or expected is None:
        return current is None and expected is None
    return all(k in current and current[k] == v for k, v in expected.items())


def _conflict(t: sa.Table, key: Mapping[str, Any], now: Image, expected: Image) -> str:
    shown = ", ".join(f"{k}={json_ready(v)!r}" for k, v in key.items())
    if now is None:
        what = "was deleted since"
    elif expected is None:
        what = "exists again since it was deleted"
    else:
        what = "was changed since"
    return f"row {shown} of {t.name!r} {what}"
