"""One user's data: exported as one archive, erased, or one chat of it deleted.

A backend implements :class:`UserDataStore` (``Storage.user_data``) over every
table that holds a user's rows: chats (messages, summaries, sessions),
customizations, memories, approval choices, pending actions, the audit log,
token usage and budgets, and the application tables that CRUD tool rows scope
to the user. Each operation is one transaction; a backend with row-level
security runs the user's part of it as the user (see docs/privacy.md).

The application tables come from the tool rows themselves: every ``crud`` row,
active or not, names a table and the column its scope puts the user id in
(:func:`crud_scopes`), and rows deleted or changed since, for the tables no row names
any more (:func:`crud_scopes_since`). A pair is trusted only when no tool row lets the model
write that column: a column the model can set says nothing about whose row it
is, and erasing by it could delete another user's rows. Such tables are left
alone and listed in ``skipped`` with the reason, for an operator to handle.

The archive's shape is versioned (:data:`ARCHIVE_FORMAT`, :data:`ARCHIVE_VERSION`):
``tables`` maps each framework table to the user's rows of it, ``app_tables``
each scoped application table to its rows, and ``skipped`` the tables left
out with why. An :class:`ErasureReport` counts rows with the same keys, so an
export and the erasure after it can be compared row for row.

Sessions may live outside the backend (a session store such as Redis, see
:class:`~chatwright.stores.WithSessionStore`): :class:`JoinedUserData` joins a
backend's user data with such a store's.
"""

from __future__ import annotations

import base64
import math
import uuid
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

from chatwright.errors import NotFoundError, StorageError, TooLargeError
from chatwright.stores import InvalidJSON, as_dict
from chatwright.tables import is_framework_table

if TYPE_CHECKING:
    from chatwright.stores import SessionStore

ARCHIVE_FORMAT = "chatwright.user-archive"
ARCHIVE_VERSION = 1

USER_TABLES = (
    "chat_sessions",
    "chat_messages",
    "chat_summaries",
    "prompt_customizations",
    "agent_memories",
    "tool_approval_choices",
    "pending_actions",
    "audit_log",
    "token_usage",
    "usage_totals",
    "usage_reservations",
    "user_budgets",
)
"""The framework tables holding a user's rows: the keys of ``UserArchive.tables``."""

KEPT_TOTALS = (
    "the totals of the current day and month are kept: they are what the user's token "
    "budget counts (an operator's `chatwright users erase` deletes them)"
)
KEPT_BUDGET = "kept: the operator's override of the user's token budget"
KEPT_RESERVATIONS = "those not expired are kept: what the user's last turns are assumed to spend"

ERASED_USER = "(erased user)"
"""The ``user_id`` of the audit entry that records an erasure (the user's own id is gone)."""


def plain(value: Any) -> Any:
    """A value read from a database as JSON-ready data."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return {"base64": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, InvalidJSON):
        return {"invalid_json": value.text, "error": value.error}
    if isinstance(value, float):  # JSON has no NaN nor infinity: null, as over HTTP
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, str | int):
        return value
    # The database's own types (an interval, an address): as the HTTP archive has them.
    from pydantic_core import to_jsonable_python

    return plain(to_jsonable_python(value, fallback=str))


class ToolLike(Protocol):
    """What :func:`crud_scopes` reads of a tool row (a ``ToolRow`` or a database row)."""

    @property
    def id(self) -> int: ...

    @property
    def type(self) -> str: ...

    @property
    def config(self) -> Any: ...


@dataclass(frozen=True)
class CrudScope:
    """An application table a CRUD tool row scopes to the user, by ``column``."""

    table: str
    column: str
    tool_ids: tuple[int, ...]


@dataclass(frozen=True)
class Scopes:
    """What :func:`crud_scopes` found: the tables to include, and those left out with why."""

    tables: dict[str, CrudScope] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class UserArchive:
    """Everything of one user's, as JSON-ready rows; see the module for the shape."""

    user_id: str
    exported_at: datetime
    tables: Mapping[str, list[dict[str, Any]]]
    app_tables: Mapping[str, list[dict[str, Any]]] = field(default_factory=dict)
    scopes: Mapping[str, str] = field(default_factory=dict)
    """Each of ``app_tables``: the column that holds the user id."""
    skipped: Mapping[str, str] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        """Rows per table, framework tables first (the keys of an :class:`ErasureReport`)."""
        return {name: len(rows) for name, rows in self.tables.items()}

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": ARCHIVE_FORMAT,
            "version": ARCHIVE_VERSION,
            "user_id": self.user_id,
            "exported_at": self.exported_at.isoformat(),
            "tables": dict(self.tables),
            "app_tables": {
                name: {"scope_column": self.scopes.get(name), "rows": rows}
                for name, rows in self.app_tables.items()
            },
            "skipped": dict(self.skipped),
        }


@dataclass(frozen=True)
class ErasureReport:
    """Rows deleted, per framework table (``tables``) and per application table."""

    user_id: str
    tables: Mapping[str, int]
    app_tables: Mapping[str, int] = field(default_factory=dict)
    skipped: Mapping[str, str] = field(default_factory=dict)
    kept: Mapping[str, str] = field(default_factory=dict)
    """Framework tables some of whose rows of the user's were kept on purpose, with why
    (what the user's token budget counts, in an erasure that keeps it)."""

    @property
    def total(self) -> int:
        return sum(self.tables.values()) + sum(self.app_tables.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "total": self.total,
            "tables": dict(self.tables),
            "app_tables": dict(self.app_tables),
            "skipped": dict(self.skipped),
            "kept": dict(self.kept),
        }


class UserDataStore(Protocol):
    """One user's data across every store (``Storage.user_data``)."""

    async def export(self, user_id: str, *, max_rows: int | None = None) -> UserArchive:
        """Every row of the user's, read in one transaction (one snapshot on PostgreSQL).

        :param max_rows: refuse with :class:`~chatwright.errors.TooLargeError` when the
            archive would hold more rows in all; None: no bound.
        """
        ...

    async def erase(
        self, user_id: str, *, requested_by: str, keep_budget: bool = False
    ) -> ErasureReport:
        """Delete every row of the user's in one transaction; the counts per table.

        Refused with :class:`~chatwright.errors.ChatBusyError` while a turn of one of
        the user's chats runs. The erasure itself is recorded in the audit log under
        :data:`ERASED_USER`, with the counts and ``requested_by`` but no personal data.

        :param keep_budget: keep what the user's token budget counts, the totals of
            the current day and month, with the running turns' reservations and the
            user's budget override (listed in the report's ``kept``, with why), so
            that erasing their own data does not lift their budget. An erasure the
            user asks for keeps them.
        """
        ...

    async def delete_chat(self, user_id: str, chat_id: uuid.UUID) -> ErasureReport:
        """Delete one of the user's chats: messages, summary, sessions, pending actions, lease.

        :class:`~chatwright.errors.NotFoundError` when the user has no such chat, whether
        nobody has or another user does (the same answer: no oracle).
        """
        ...


class NoUserData:
    """``Storage.user_data`` of a backend that has none: every call says so."""

    def __init__(self, description: str) -> None:
        self.description = description

    def _refuse(self) -> StorageError:
        return StorageError(
            f"the storage backend of {self.description} cannot export or erase a user's "
            "data; use the sql or supabase backend, or delete the user's rows yourself"
        )

    async def export(self, user_id: str, *, max_rows: int | None = None) -> UserArchive:
        raise self._refuse()

    async def erase(
        self, user_id: str, *, requested_by: str, keep_budget: bool = False
    ) -> ErasureReport:
        raise self._refuse()

    async def delete_chat(self, user_id: str, chat_id: uuid.UUID) -> ErasureReport:
        raise self._refuse()


def user_data_of(storage: object) -> UserDataStore:
    """The storage's ``user_data``, or :class:`NoUserData` for a backend without it."""
    found = getattr(storage, "user_data", None)
    if found is None:
        return NoUserData(str(getattr(storage, "description", type(storage).__name__)))
    store: UserDataStore = found
    return store


# -- application tables scoped by CRUD tool rows ---------------------------------------


def _crud_parts(config: Any) -> tuple[str, str | None, set[str]] | None:
    """(table, user column, columns the model writes) of a crud config, None if unusable."""
    if not isinstance(config, Mapping):
        return None
    if "table" not in config and ("table_name" in config or "method" in config):
        # The original system's shape, scoped by user_id (see the crud plugin).
        table = config.get("table_name")
        written: set[str] = set()
        field_map = config.get("field_map")
        if isinstance(field_map, Mapping):
            written |= {str(c) for c in field_map.values()}
        schema = config.get("runtime_args_schema")
        data = schema.get("data") if isinstance(schema, Mapping) else None
        props = data.get("properties") if isinstance(data, Mapping) else None
        if isinstance(props, Mapping):
            mapping = field_map if isinstance(field_map, Mapping) else {}
            written |= {str(mapping.get(k, k)) for k in props}
        return (table, "user_id", written) if isinstance(table, str) else None
    table = config.get("table")
    if not isinstance(table, str):
        return None
    scope = config.get("scope", {})
    column = scope.get("user_column", "user_id") if isinstance(scope, Mapping) else None
    written = set()
    args = config.get("args")
    if isinstance(args, Mapping):
        for name, spec in args.items():
            target = spec.get("column") if isinstance(spec, Mapping) else None
            written.add(str(target or name))
    return table, column if isinstance(column, str) else None, written


def crud_scopes(rows: Iterable[ToolLike], *, covered: Collection[str] = USER_TABLES) -> Scopes:
    """The application tables that ``crud`` tool rows (active or not) scope to the user.

    A table whose rows some tool scopes by one column and another by a different
    one, or whose scope column some tool lets the model write, is skipped with the
    reason: its values do not say whose a row is. Framework tables and ``covered``
    ones (exported with the framework's) are left out.
    """
    parts: list[tuple[int, str, str | None, set[str]]] = []
    for row in rows:
        if row.type != "crud":
            continue
        found = _crud_parts(row.config)
        if found is not None:
            parts.append((row.id, *found))
    # Names are compared case-folded: SQLite takes "TASKS" and "Owner" for "tasks" and
    # "owner", so a row spelling them otherwise reaches the same table and column.
    written: dict[str, dict[str, int]] = {}
    for tool_id, table, _, columns in parts:
        for name in columns:
            written.setdefault(table.casefold(), {}).setdefault(name.casefold(), tool_id)
    spelled: dict[str, str] = {}
    tables: dict[str, CrudScope] = {}
    skipped: dict[str, str] = {}
    for tool_id, table, column, _ in parts:
        if column is None or table in covered or is_framework_table(table):
            continue
        key = table.casefold()
        spelled.setdefault(key, table)
        if key in skipped:
            continue
        writer = written.get(key, {}).get(column.casefold())
        if writer is not None:
            skipped[key] = (
                f"tool row {writer} lets the model write the scope column {column!r}, so its "
                "values do not tell whose a row is; export or delete these rows yourself"
            )
            tables.pop(key, None)
            continue
        known = tables.get(key)
        if known is None:
            tables[key] = CrudScope(table, column, (tool_id,))
        elif known.column.casefold() != column.casefold():
            skipped[key] = (
                f"tool rows {known.tool_ids[0]} and {tool_id} scope it by different columns "
                f"({known.column!r}, {column!r}); export or delete these rows yourself"
            )
            tables.pop(key)
        else:
            tables[key] = CrudScope(known.table, known.column, (*known.tool_ids, tool_id))
    return Scopes(
        tables={scope.table: scope for scope in tables.values()},
        skipped={spelled[key]: reason for key, reason in skipped.items()},
    )


def crud_scopes_since(rows: Iterable[ToolLike], former: Iterable[ToolLike]) -> Scopes:
    """:func:`crud_scopes` of the tool ``rows``, then of ``former`` ones (deleted or
    changed since) for the tables no current row names, which a current row decides."""
    rows = list(rows)
    now, before = crud_scopes(rows), crud_scopes(former)
    parts = (_crud_parts(r.config) for r in rows if r.type == "crud")
    named = {found[0].casefold() for found in parts if found is not None}
    tables = {k: v for k, v in before.tables.items() if k.casefold() not in named}
    skipped = {k: v for k, v in before.skipped.items() if k.casefold() not in named}
    return Scopes(tables={**tables, **now.tables}, skipped={**skipped, **now.skipped})


# -- sessions kept by a separate session store -------------------------------------------


async def session_rows(sessions: SessionStore, user_id: str) -> list[dict[str, Any]]:
    """The user's sessions in a session store, as archive rows."""
    return [as_dict(s) for s in await sessions.list(user_id)]


def _session_method(sessions: SessionStore, name: str) -> Any:
    method = getattr(sessions, name, None)
    if method is None:
        raise StorageError(
            f"the session store {type(sessions).__name__} cannot delete sessions (it has no "
            f"{name}); delete them there yourself, or use a store that has it"
        )
    return method


async def erase_sessions(sessions: SessionStore, user_id: str) -> int:
    """Delete every session of the user's from a session store, with what indexes them."""
    count: int = await _session_method(sessions, "erase_user")(user_id)
    return count


async def delete_chat_sessions(sessions: SessionStore, user_id: str, chat_id: uuid.UUID) -> int:
    """Delete the user's sessions of one chat from a session store, with its owner entry."""
    count: int = await _session_method(sessions, "delete_chat")(user_id, chat_id)
    return count


class JoinedUserData:
    """A backend's user data with the sessions of a separate session store.

    The backend's transaction comes first; the session store's sessions are
    deleted right after it commits (two systems share no transaction).
    """

    def __init__(self, backend: UserDataStore, sessions: SessionStore) -> None:
        self.backend = backend
        self.sessions = sessions

    async def export(self, user_id: str, *, max_rows: int | None = None) -> UserArchive:
        archive = await self.backend.export(user_id, max_rows=max_rows)
        rows = await session_rows(self.sessions, user_id)
        total = sum(archive.counts().values()) + sum(len(r) for r in archive.app_tables.values())
        if max_rows is not None and total + len(rows) > max_rows:
            raise TooLargeError(too_many(max_rows))
        return replace(archive, tables={**archive.tables, "chat_sessions": rows})

    async def erase(
        self, user_id: str, *, requested_by: str, keep_budget: bool = False
    ) -> ErasureReport:
        report = await self.backend.erase(
            user_id, requested_by=requested_by, keep_budget=keep_budget
        )
        count = await erase_sessions(self.sessions, user_id)
        tables = dict(report.tables)
        tables["chat_sessions"] = tables.get("chat_sessions", 0) + count
        return replace(report, tables=tables)

    async def delete_chat(self, user_id: str, chat_id: uuid.UUID) -> ErasureReport:
        owner = await self.sessions.chat_owner(chat_id)
        if owner is not None and owner[0] != user_id:
            raise NotFoundError(no_chat(chat_id))
        try:
            report = await self.backend.delete_chat(user_id, chat_id)
        except NotFoundError:
            if owner is None:
                raise
            report = ErasureReport(user_id, {})
        count = await delete_chat_sessions(self.sessions, user_id, chat_id)
        tables = dict(report.tables)
        tables["chat_sessions"] = tables.get("chat_sessions", 0) + count
        return replace(report, tables=tables)


def no_chat(chat_id: uuid.UUID) -> str:
    """The one answer for a chat that is not the caller's, whoever's it is."""
    return f"no chat {chat_id}; GET /api/chats (or `chatwright chats list`) lists yours"


def too_many(max_rows: int) -> str:
    return (
        f"the archive would hold more than {max_rows} rows (server.max_export_rows); an "
        "operator can export it with `chatwright users export USER --output FILE`"
    )
