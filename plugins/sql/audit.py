"""The audit log on SQL: ``audit_log`` rows to audit entries and back.

:func:`insert_audit` appends one entry on a connection the caller holds, so
that the record store can write a row and its audit entry in one transaction;
:class:`SQLAuditStore` (the storage's ``audit``) appends and lists entries in
transactions of their own.
"""

from __future__ import annotations

import builtins
import logging
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import exc
from sqlalchemy.ext.asyncio import AsyncConnection

from chatwright.approvals import AuditEntry, NewAuditEntry, RowChange
from chatwright.errors import InvalidInputError, StorageError
from chatwright.history import storable_value
from chatwright.plugins.sql import schema
from chatwright.plugins.sql.errors import DETAILS, driver_text
from chatwright.plugins.sql.pending import as_uuid

if TYPE_CHECKING:
    from chatwright.plugins.sql.storage import SQLStorage

MAX_LIMIT = 1000
"""The most entries one page holds."""
MAX_ID = 2**63 - 1
"""The largest entry id (a BIGINT)."""

log = logging.getLogger(__name__)


def _json(value: Any) -> Any:
    """A value as JSON-ready data (what a JSON column can hold on every dialect)."""
    import json

    from chatwright.plugins.crud.tool import to_json

    return storable_value(json.loads(json.dumps(value, default=to_json)))


def audit_values(entry: NewAuditEntry) -> dict[str, Any]:
    """The ``audit_log`` row of an entry (without ``id`` and ``at``)."""
    return {
        "user_id": entry.user_id,
        "agent_name": entry.agent_name,
        "chat_id": entry.chat_id,
        "turn_id": entry.turn_id,
        "tool_id": entry.tool_id,
        "tool_name": entry.tool_name,
        "operation": entry.operation,
        "table_name": entry.table,
        "args": _json(dict(entry.args)),
        "row_ids": _json(list(entry.row_ids)),
        "outcome": entry.outcome,
        "error": entry.error,
        "approval": entry.approval,
        "decided_by": entry.decided_by,
        "pending_id": entry.pending_id,
        "changes": _json(
            [
                {
                    "key": dict(c.key),
                    "before": None if c.before is None else dict(c.before),
                    "after": None if c.after is None else dict(c.after),
                }
                for c in entry.changes
            ]
        ),
        "undo_of": entry.undo_of,
    }


def audit_from_row(row: Mapping[str, Any]) -> AuditEntry:
    changes = row["changes"] if isinstance(row["changes"], list) else []
    args = row["args"] if isinstance(row["args"], dict) else {}
    row_ids = row["row_ids"] if isinstance(row["row_ids"], list) else []
    return AuditEntry(
        id=row["id"],
        at=row["at"],
        user_id=row["user_id"],
        agent_name=row["agent_name"],
        chat_id=row["chat_id"],
        turn_id=row["turn_id"],
        tool_id=row["tool_id"],
        tool_name=row["tool_name"],
        operation=row["operation"],
        table=row["table_name"],
        args=args,
        row_ids=row_ids,
        outcome=row["outcome"],
        error=row["error"],
        approval=row["approval"],
        decided_by=row["decided_by"],
        pending_id=row["pending_id"],
        changes=tuple(
            RowChange(key=c.get("key") or {}, before=c.get("before"), after=c.get("after"))
            for c in changes
            if isinstance(c, dict)
        ),
        undo_of=row["undo_of"],
        after_message_id=row.get("after_message_id"),
        chat_revision=row.get("chat_revision"),
    )


async def insert_audit(conn: AsyncConnection, entry: NewAuditEntry) -> AuditEntry:
    """Append ``entry`` on ``conn`` (inside the caller's transaction) and return it as stored.

    An entry of a chat keeps the id of the chat's newest message as of its
    write (``after_message_id``), read by the insert itself: what a turn that
    stopped before storing the write's call is found by (``unrecorded_writes``)."""
    values = {**audit_values(entry), "chat_revision": _turn_revision(entry)}
    stored = (await conn.execute(_INSERT_AUDIT, {**values, "of_chat": entry.chat_id})).one()
    # What was written, with what the database gave it (reading back the whole
    # row would decode what was just encoded).
    return audit_from_row(
        {**values, "id": stored.id, "at": stored.at, "after_message_id": stored.after_message_id}
    )


_m = schema.chat_messages
_INSERT_AUDIT = (
    schema.audit_log.insert()
    .values(
        after_message_id=sa.select(sa.func.max(_m.c.id))
        .where(_m.c.chat_id == sa.bindparam("of_chat", type_=sa.Uuid))
        .scalar_subquery()
    )
    .returning(schema.audit_log.c.id, schema.audit_log.c.at, schema.audit_log.c.after_message_id)
)


def _turn_revision(entry: NewAuditEntry) -> int | None:
    """The revision of the chat's messages as the turn making the write started, when a
    turn of the entry's chat holds it (``chatwright.turns.holding_turn``), else None."""
    from chatwright.turns import holding_turn

    start = holding_turn.get()
    if start is None or entry.chat_id is None or start.chat_id != entry.chat_id:
        return None
    revision = getattr(start.lease, "revision", None)
    return revision if isinstance(revision, int) else None


UNRECORDED_MOST = 100
"""Most writes of a stopped turn that the chat's next turn tells the model about (the
newest; each is an entry of the audit log all the same)."""


async def unrecorded_writes(
    conn: AsyncConnection, user_id: str, chat_id: uuid.UUID, after: int, revision: int
) -> builtins.list[AuditEntry]:
    """The writes of turns in the chat made while ``after`` was its newest message (as it
    is now), in the order they were made: writes whose call and result their turn did
    not store, having stopped before it could (see ``chatwright.history.recovered_writes``).
    A turn stores a write's call and result after it, so a write it stored has a newer
    message after it. The chat's messages must be as they were then (its ``revision``
    unmoved): a deletion moves it, and on SQLite the ids of deleted messages are given
    out again, so a deleted chat's writes are not told in one opened again with its id.

    An approved call's write is left out: the pending action ends it
    (``Decisions.end_interrupted``), and its result is stored with its call.
    """
    t = schema.audit_log
    stmt = (
        sa.select(t)
        .where(
            t.c.chat_id == chat_id,
            t.c.after_message_id == after,
            t.c.chat_revision == revision,
            t.c.user_id == user_id,
            t.c.turn_id.is_not(None),
            t.c.pending_id.is_(None),
            t.c.undo_of.is_(None),
            t.c.outcome == "ok",
        )
        .order_by(t.c.id.desc())
        .limit(UNRECORDED_MOST)
    )
    rows = (await conn.execute(stmt)).mappings().all()
    return [audit_from_row(dict(r)) for r in reversed(rows)]


class SQLAuditStore:
    """The storage's ``audit``: see :class:`chatwright.approvals.AuditStore`.

    Entries are appended and read, never changed: on PostgreSQL the database
    itself refuses the application role anything else (migration 0005).
    """

    def __init__(self, db: SQLStorage) -> None:
        self.db = db

    async def record(self, entry: NewAuditEntry) -> AuditEntry:
        from chatwright.plugins.sql.turns import check_held

        async with self.db.write() as conn:
            # Not for a turn that lost its chat (an erased user's entry would come back);
            # an entry of a call refused since the agent changed is recorded all the same.
            await check_held(conn, self.db, entry.user_id, as_started=False)
            # As the entry's user: on the supabase backend the row must pass their policy.
            await self.db.users.enter(conn, entry.user_id)
            return await insert_audit(conn, entry)

    async def list(
        self,
        user_id: str | None,
        *,
        since: datetime | None = None,
        chat_id: uuid.UUID | None = None,
        turn_id: uuid.UUID | None = None,
        before_id: int | None = None,
        limit: int = 50,
        undo_of: uuid.UUID | None = None,
    ) -> builtins.list[AuditEntry]:
        t = schema.audit_log
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_LIMIT:
            raise InvalidInputError(f"limit {limit!r} must be a whole number from 1 to {MAX_LIMIT}")
        if since is not None and (not isinstance(since, datetime) or since.tzinfo is None):
            raise InvalidInputError(
                f"since {since!r:.80} is not a time with a time zone; give one (e.g. +00:00)"
            )
        if since is not None:
            try:
                # Compared as UTC: a time at the calendar's ends can fall outside it there.
                since = since.astimezone(UTC)
            except OverflowError:
                raise InvalidInputError(
                    f"since {since.isoformat()} is outside the years 1 to 9999 in UTC; "
                    "give a time within them"
                ) from None
        stmt = sa.select(t).order_by(t.c.id.desc()).limit(limit)
        if user_id is not None:
            stmt = stmt.where(t.c.user_id == user_id)
        if since is not None:
            stmt = stmt.where(t.c.at >= since)
        if chat_id is not None:
            stmt = stmt.where(t.c.chat_id == as_uuid(chat_id, "chat"))
        if turn_id is not None:
            stmt = stmt.where(t.c.turn_id == as_uuid(turn_id, "turn"))
        if undo_of is not None:
            stmt = stmt.where(t.c.undo_of == as_uuid(undo_of, "turn"))
        if before_id is not None:
            if (
                isinstance(before_id, bool)
                or not isinstance(before_id, int)
                or not 1 <= before_id <= MAX_ID
            ):
                raise InvalidInputError(
                    f"before_id {before_id!r:.80} must be an entry id, a whole number from 1 "
                    f"to {MAX_ID}"
                )
            stmt = stmt.where(t.c.id < before_id)
        async with self.db.read(user_id) as conn:
            rows = (await conn.execute(stmt)).mappings().all()
        return [audit_from_row(dict(r)) for r in rows]


async def append_audit(conn: AsyncConnection, entry: NewAuditEntry) -> AuditEntry:
    """Append a write's audit entry on the write's connection; if it cannot be, nothing is written.

    A refused entry is the framework's fault, not the values', so it is not
    reported as the application table's constraint: the transaction is rolled
    back and the write fails as the database's error (503).
    """
    try:
        return await insert_audit(conn, entry)
    except exc.IntegrityError as error:
        log.error("audit_log refused an entry of %r: %s", entry.table, driver_text(error))
        raise StorageError(
            f"the audit entry of this write could not be stored, so nothing was written; {DETAILS}"
        ) from None


__all__ = [
    "SQLAuditStore",
    "append_audit",
    "audit_from_row",
    "audit_values",
    "insert_audit",
    "unrecorded_writes",
]
