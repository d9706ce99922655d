"""Application tables: what tools see of them and what a backend does with them.

Application tables are the user's own tables (``tasks``, ``notes``, …) that
tool types such as ``crud`` read and write through a backend's
:class:`RecordStore`; the framework's own tables are off limits to them. The
descriptions here (:class:`TableInfo`, :class:`TableSpec`) are plain frozen
dataclasses like the records of :mod:`chatwright.stores`, which re-exports
every name of this module.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    from chatwright.approvals import (
        Applied,
        AuditEntry,
        NewAuditEntry,
        Preview,
        UndoReport,
        Write,
    )

# Tables of the framework itself. No tool may read or write them through the
# application-table interface (agent_memories is deliberately not here: the
# example agent edits its own memory with CRUD tools).
FRAMEWORK_TABLES = frozenset(
    {
        "agents",
        "agent_tools",
        "chat_sessions",
        "active_sessions",
        "chat_messages",
        "chat_leases",
        "chat_revisions",
        "former_tool_rows",
        "pending_actions",
        "tool_approval_choices",
        "audit_log",
        "prompt_customizations",
        "token_usage",
        "usage_totals",
        "usage_reservations",
        "user_budgets",
        "chat_summaries",
        "chatwright_schema_version",
    }
)


def is_framework_table(name: str) -> bool:
    """Whether ``name`` refers to one of :data:`FRAMEWORK_TABLES`, however it is written.

    SQLite matches table names without regard to case and both databases accept
    a schema in front (``main.chat_messages``, ``public."Agents"``), so every
    spelling that could reach a framework table counts as one. The one test
    every layer applies before a tool may name a table.
    """
    last = name.strip().rsplit(".", 1)[-1].strip().strip('"`[]')
    return last.casefold() in FRAMEWORK_TABLES


ColumnKind = Literal[
    "string", "integer", "number", "boolean", "date", "datetime", "json", "uuid", "other"
]


@dataclass(frozen=True)
class ColumnInfo:
    """One column of an application table, as the database describes it."""

    name: str
    kind: ColumnKind
    nullable: bool = True
    has_default: bool = False
    primary_key: bool = False


@dataclass(frozen=True)
class TableInfo:
    name: str
    columns: Mapping[str, ColumnInfo]
    unique: tuple[frozenset[str], ...] = ()
    """Column sets with a unique constraint or unique index (primary key included)."""


@dataclass(frozen=True)
class ColumnSpec:
    """A column of a table to create (the example tables)."""

    name: str
    kind: ColumnKind
    nullable: bool = True
    primary_key: bool = False
    default: Any = None
    """A constant server default, or ``"now"`` for the current timestamp."""


@dataclass(frozen=True)
class TableSpec:
    name: str
    columns: tuple[ColumnSpec, ...]
    indexes: tuple[tuple[str, ...], ...] = ()
    unique: tuple[tuple[str, ...], ...] = ()


OrderBy = tuple[str, bool]
"""(column, descending)."""


class RecordStore(Protocol):
    """Rows of application tables, for tool types such as ``crud``.

    Identifiers must be columns of the reflected table (the store checks again,
    whatever its caller checked) and every value is bound, never spliced into
    SQL. ``user_id`` is the user on whose behalf the statement runs; a backend
    with row-level security uses it for the request's claims, and the others
    ignore it: scoping by column is the caller's job, done in ``where``.
    Framework tables (:data:`FRAMEWORK_TABLES`) are refused.
    """

    async def describe(self, table: str) -> TableInfo | None:
        """The table's columns, or None when it does not exist."""
        ...

    async def insert(
        self,
        user_id: str,
        table: str,
        values: Mapping[str, Any],
        *,
        returning: Sequence[str],
        conflict: Sequence[str] | None = None,
        scope: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Insert one row; with ``conflict`` columns, update the row that has the same values.

        With ``scope`` (column -> value), that row is updated only when it has those
        values, and the scope columns are never rewritten; a conflict with any other
        row saves nothing, returns nothing of it and raises :class:`InvalidInputError`.
        """
        ...

    async def select(
        self,
        user_id: str,
        table: str,
        where: Mapping[str, Any],
        *,
        columns: Sequence[str],
        order_by: Sequence[OrderBy] = (),
        limit: int,
    ) -> builtins.list[dict[str, Any]]: ...

    async def update(
        self,
        user_id: str,
        table: str,
        where: Mapping[str, Any],
        values: Mapping[str, Any],
        *,
        returning: Sequence[str],
    ) -> builtins.list[dict[str, Any]]: ...

    async def delete(self, user_id: str, table: str, where: Mapping[str, Any]) -> int: ...

    async def preview(self, user_id: str, write: Write, *, cap: int) -> Preview:
        """The rows ``write`` would change, before and after, read as the user; nothing written.

        At most ``cap`` rows are listed; ``count`` is the number in all. For
        ``create`` the one row to insert (no before); for ``upsert`` the row the
        conflict target finds inside the scope, or the row to insert.
        """
        ...

    async def apply(
        self,
        user_id: str,
        write: Write,
        *,
        expect: Preview | None = None,
        audit: NewAuditEntry | None = None,
        cap: int,
    ) -> Applied:
        """Run ``write`` in one transaction, keeping whole-row before/after images.

        With ``expect``, first read the rows as :meth:`preview` does (locking them
        where the database can) and raise :class:`~chatwright.errors.
        PreviewChangedError` with the fresh preview, writing nothing, unless it
        is the same. With ``audit``, append that entry (with the row ids and the
        images filled in) in the same transaction, so that a write is never
        without its record; an update or delete that matched no row, or a create
        refused because the row is outside the user's scope, is recorded with
        outcome ``error`` and the words :func:`chatwright.approvals.unwritten` gives,
        not ``ok``. Errors as for :meth:`insert`/:meth:`update`/:meth:`delete`.
        """
        ...

    async def undo(
        self, user_id: str, entries: Sequence[AuditEntry], audit: NewAuditEntry
    ) -> UndoReport:
        """Revert the writes of ``entries`` (newest first) in one transaction.

        Each changed row must still be as its after-image says (a created row
        still there and unchanged, a deleted row still absent), else
        :class:`~chatwright.errors.UndoConflictError` names the rows and nothing
        is reverted. ``audit`` (an ``undo`` entry) is appended in the same
        transaction with the images of what the undo changed.
        """
        ...


@runtime_checkable
class TableCreator(Protocol):
    """An optional capability of a :class:`RecordStore`: creating application tables.

    A backend need not offer it (its tables may be managed elsewhere); what
    creates tables, such as the bundled examples, checks for it with
    ``isinstance(storage.records, TableCreator)`` and says what is missing.
    """

    async def ensure_table(self, spec: TableSpec) -> bool:
        """Create the table unless it exists; True when it was created."""
        ...
