"""The audit log on SQL: ``audit_log`` rows to audit entries and back.

:func:`insert_audit` appends one entry on a connection the caller holds, so
that the record store can write a row and its audit entry in one transaction;
:class:`SQLAuditStore` (the storage's ``audit``) appends and lists entries in
transactions of their own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from chatwright.approvals import AuditEntry, NewAuditEntry, RowChange
from chatwright.history import storable_value
from chatwright.plugins.sql import schema


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
    )


async def insert_audit(conn: AsyncConnection, entry: NewAuditEntry) -> AuditEntry:
    """Append ``entry`` on ``conn`` (inside the caller's transaction) and return it as stored."""
    t = schema.audit_log
    result = await conn.execute(t.insert().values(audit_values(entry)).returning(*t.c))
    return audit_from_row(dict(result.mappings().one()))


class SQLAuditStore:
    """The storage's ``audit``: to be completed (record, list)."""

    def __init__(self, db: Any) -> None:
        self.db = db


__all__ = ["SQLAuditStore", "audit_from_row", "audit_values", "insert_audit", "sa"]
