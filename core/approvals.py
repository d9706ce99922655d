"""Write safety: approval before a write, a preview of what it changes, an audit log, undo.

A tool row has an approval mode (:data:`APPROVAL_MODES`): ``auto`` runs every
call at once; ``required`` makes every call wait for the user's decision;
``user`` lets each user choose per tool (``auto`` or ``required``), with the
row's ``approval_default`` for users who have not chosen. A user's ``auto`` is
consent to the row as it was when they chose (its :func:`tool_digest`): once the
row's type or configuration changes, it no longer counts and the row's default
applies until they choose again (a ``required`` keeps counting).

When a model calls a tool that needs approval, the turn stops before the tool
runs: the call becomes a :class:`PendingAction`, stored durably with the
arguments and, for writes that change existing rows, a :class:`Preview` of
those rows before and after. Approving runs the tool with exactly the stored
arguments and continues the turn; denying continues it with a tool result
saying the user declined. A pending action not decided in time expires, which
counts as denied.

Every write a tool makes is recorded in the audit log (:class:`AuditEntry`):
the ``crud`` tool records its own in the transaction of the write, with the
rows' before- and after-images, which is what undo reverts. Other tool types
record theirs with :func:`record_write`.

The records here are plain frozen dataclasses, like those of
:mod:`chatwright.stores`; the stores that keep them are protocols a storage
backend implements (:class:`PendingStore`, :class:`AuditStore`).

Longer than 450 lines because it is the whole contract of write safety that a
backend and a tool type implement: records, store protocols and the audit API,
read together.
"""

from __future__ import annotations

import builtins
import decimal
import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time
from typing import TYPE_CHECKING, Any, Literal, Protocol

from chatwright.errors import ToolChangedError

if TYPE_CHECKING:
    from chatwright.stores import ToolRow
    from chatwright.tools import ToolContext

ApprovalMode = Literal["auto", "required", "user"]
UserChoice = Literal["auto", "required"]
APPROVAL_MODES: tuple[str, ...] = ("auto", "required", "user")
USER_CHOICES: tuple[str, ...] = ("auto", "required")
DEFAULT_APPROVAL = "auto"
"""The mode of a row that names none: rows in the original system's format ran unattended."""
DEFAULT_USER_CHOICE = "required"
"""What a ``user``-mode row asks of users who have not chosen, unless the row says otherwise."""

WriteOperation = Literal["create", "update", "delete", "upsert"]
WRITE_OPERATIONS: tuple[str, ...] = ("create", "update", "delete", "upsert")

PendingStatus = Literal["pending", "approved", "denied", "expired", "done", "failed"]
"""``pending`` until decided; ``approved`` while the approved call runs, then ``done``
(it ran) or ``failed`` (it ran and raised, or could not run); ``denied``; ``expired``."""

AuditOutcome = Literal["ok", "error", "vetoed", "denied", "expired"]


def needs_approval(mode: str, default: str, choice: str | None) -> bool:
    """Whether a call of a tool row with ``mode`` waits for the user.

    :param default: the row's ``approval_default`` (for ``user`` mode).
    :param choice: the user's own choice for the row, if they made one.
    """
    if mode == "required":
        return True
    if mode == "user":
        return (choice or default) == "required"
    return False


def tool_digest(row: ToolRow) -> str:
    """The tool row a held call was asked about, as it was: its id, type and configuration.

    Approving runs the call only while the row serving its name still has this
    digest (a row replaced under the same name, or changed, would run something the
    user was not asked about). Its name is the call's; its description and approval
    settings do not change what a call does.
    """
    return digest_of(row.id, row.type, row.config)


def digest_of(tool_id: int, tool_type: str, config: Mapping[str, Any]) -> str:
    """:func:`tool_digest` of a row given by its parts."""
    shape = {"id": tool_id, "type": tool_type, "config": config}
    text = json.dumps(shape, sort_keys=True, ensure_ascii=True, default=str)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def no_tool_row(shown: object) -> str:
    """The one answer for a tool row id that names no row, to a user (HTTP) or the CLI."""
    return (
        f"no tool row {shown}; GET /api/agents/NAME lists an agent's tool rows "
        "(`chatwright tools list` from the command line)"
    )


def tool_changed(tool_id: int) -> ToolChangedError:
    """The refusal of a choice made for a row that has changed since the user saw it."""
    return ToolChangedError(
        f"tool row {tool_id} has changed since you saw it, so your choice was not stored; "
        "look at the tool again and choose again"
    )


def choice_counts(choice: str, chosen_for: str | None, digest: str) -> bool:
    """Whether a user's stored ``choice`` still applies to a row whose digest is ``digest``.

    ``auto`` lets the row's calls run unattended: it counts only for the row the user
    chose it for (``chosen_for``, its :func:`tool_digest` then). ``required`` asks for
    no trust and counts whatever the row became.
    """
    return choice != "auto" or chosen_for == digest


# -- previews -----------------------------------------------------------------


@dataclass(frozen=True)
class RowChange:
    """One row a write would change (or did change).

    ``before`` is None for a row the write creates, ``after`` None for a row it
    deletes. ``key`` holds the row's primary key values (empty when the table
    has no primary key).
    """

    key: Mapping[str, Any]
    before: Mapping[str, Any] | None
    after: Mapping[str, Any] | None


@dataclass(frozen=True)
class Preview:
    """The rows a write would change, read under the user's scope.

    ``rows`` holds at most ``preview_rows`` of them (see ``tools.preview_rows``);
    ``count`` says how many there are in all. Values are JSON-ready (dates as
    ISO 8601 text, UUIDs and decimals as text or numbers), as a client shows
    them and as they are stored with the pending action.
    """

    table: str
    operation: str
    rows: tuple[RowChange, ...]
    count: int
    digest: str | None = None
    """When more rows match than are listed: a digest of every matching row, so that
    an approval also notices a change to a row it did not show."""

    def as_dict(self) -> dict[str, Any]:
        data = {
            "table": self.table,
            "operation": self.operation,
            "count": self.count,
            "rows": [
                {"key": dict(r.key), "before": _plain(r.before), "after": _plain(r.after)}
                for r in self.rows
            ],
        }
        if self.digest is not None:
            data["digest"] = self.digest
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Preview:
        return cls(
            table=str(data["table"]),
            operation=str(data["operation"]),
            count=int(data["count"]),
            digest=str(data["digest"]) if data.get("digest") is not None else None,
            rows=tuple(
                RowChange(
                    key=dict(r.get("key") or {}), before=r.get("before"), after=r.get("after")
                )
                for r in data.get("rows", [])
            ),
        )

    def same_as(self, other: Preview) -> bool:
        """Whether two previews show the same rows with the same values."""
        return self.as_dict() == other.as_dict()


def _plain(row: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return None if row is None else dict(row)


@dataclass(frozen=True)
class Write:
    """A write a tool asks of the record store: what :meth:`RecordStore.apply` runs.

    ``where`` already includes the user's scope; ``scope`` repeats the scope
    columns (an upsert updates only a row inside it). ``values`` are the
    columns written (for ``create``/``upsert``: the whole new row).

    ``append`` maps text columns of ``values`` to a separator: an ``update``, or
    an ``upsert`` that finds its row, adds the value to the end of the stored
    text (after the separator, unless the text is empty) in the statement
    itself, so that two writes at once both keep their value.
    """

    table: str
    operation: str
    values: Mapping[str, Any] = field(default_factory=dict)
    where: Mapping[str, Any] = field(default_factory=dict)
    scope: Mapping[str, Any] = field(default_factory=dict)
    returning: Sequence[str] = ()
    conflict: Sequence[str] = ()
    append: Mapping[str, str] = field(default_factory=dict)


def unwritten(write: Write) -> str:
    """Why ``write`` failed when it wrote no row, in the words its tool answers with and its
    audit entry records: an update or delete that matched no row of the caller's (missing
    and someone else's alike), a create or upsert whose values met a row outside the
    caller's scope."""
    if write.operation in {"create", "upsert"}:
        return (
            f"nothing saved: the values conflict with a row of {write.table!r} "
            "that is not the caller's to change"
        )
    matched = ", ".join(
        f"{k}={compact_json(v)}" for k, v in write.where.items() if k not in write.scope
    )
    return f"not found: no row of {write.table!r} matches {matched}"


DIGITS_SHOWN = 4000
"""A decimal of more digits than this (PostgreSQL's numeric holds 131,072) is shown as its
text: Python writes no integer of over 4,300 digits, and a float would be infinite."""


def json_default(value: Any) -> Any:
    """A database value JSON cannot spell, as a tool shows it: dates and times in ISO 8601,
    a decimal as the number it is (one no JSON number is, PostgreSQL's ``Infinity``,
    ``-Infinity`` and ``NaN``, or one of thousands of digits, as its text), a UUID as
    text, bytes by their length."""
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        if not value.is_finite() or abs(value.adjusted()) > DIGITS_SHOWN:
            return str(value)  # no JSON number, or one of more digits than Python writes
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    raise TypeError(f"cannot serialise {type(value).__name__}")


def compact_json(data: Any) -> str:
    """``data`` as compact JSON, database values by :func:`json_default`."""
    return json.dumps(data, default=json_default, ensure_ascii=False, separators=(",", ":"))


@dataclass(frozen=True)
class Applied:
    """What :meth:`RecordStore.apply` did: rows as ``returning`` asked, and the images."""

    rows: list[dict[str, Any]]
    """The written rows with the ``returning`` columns (raw database values)."""
    changes: tuple[RowChange, ...]
    """Every row changed, with whole-row before/after images (JSON-ready)."""
    audit: AuditEntry | None = None


# -- pending actions ----------------------------------------------------------


@dataclass(frozen=True)
class NewPending:
    """A tool call to hold for the user's decision (what a stopped turn stores)."""

    turn_id: uuid.UUID
    tool_id: int | None
    tool_name: str
    tool_call_id: str
    args: Mapping[str, Any]
    preview: Preview | None
    expires_at: datetime
    tool_digest: str | None = None
    """The tool row as it was (:func:`tool_digest`), for the approval to check."""


@dataclass(frozen=True)
class PendingAction:
    id: uuid.UUID
    user_id: str
    agent_name: str
    chat_id: uuid.UUID
    turn_id: uuid.UUID
    tool_id: int | None
    tool_name: str
    tool_call_id: str
    args: Mapping[str, Any]
    preview: Preview | None
    status: str
    created_at: datetime
    expires_at: datetime
    decided_at: datetime | None = None
    decided_by: str | None = None
    result: str | None = None
    """The tool's reply once it ran (or why it did not)."""
    tool_digest: str | None = None
    """The tool row as it was when the call was held (:func:`tool_digest`); None for an
    action stored before it was kept."""

    def expired(self, now: datetime) -> bool:
        return self.status == "pending" and self.expires_at <= now

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "user_id": self.user_id,
            "agent_name": self.agent_name,
            "chat_id": str(self.chat_id),
            "turn_id": str(self.turn_id),
            "tool_id": self.tool_id,
            "tool_name": self.tool_name,
            "tool_call_id": self.tool_call_id,
            "args": dict(self.args),
            "preview": self.preview.as_dict() if self.preview is not None else None,
            "status": self.status,
            "created_at": self.created_at.isoformat(),
            "expires_at": self.expires_at.isoformat(),
            "decided_at": self.decided_at.isoformat() if self.decided_at else None,
            "decided_by": self.decided_by,
            "result": self.result,
        }


class PendingStore(Protocol):
    """Pending actions, and users' approval choices for ``user``-mode tool rows."""

    async def create(
        self, user_id: str, agent_name: str, chat_id: uuid.UUID, actions: Sequence[NewPending]
    ) -> builtins.list[PendingAction]:
        """Store actions in one transaction (status ``pending``)."""
        ...

    async def get(self, user_id: str | None, action_id: uuid.UUID) -> PendingAction | None:
        """The user's action (any status); None when missing or another user's.

        ``user_id`` None (administration only, the CLI) finds any user's action.
        """
        ...

    async def list(
        self,
        user_id: str | None,
        *,
        chat_id: uuid.UUID | None = None,
        status: str | None = "pending",
        limit: int = 100,
    ) -> builtins.list[PendingAction]:
        """Actions oldest first; ``user_id`` None (administration only) lists every user's."""
        ...

    async def decide(
        self, user_id: str, action_id: uuid.UUID, status: str, decided_by: str
    ) -> PendingAction | None:
        """Move a ``pending`` action to ``status`` (approved, denied or expired), atomically.

        Returns the action as stored, or None when it was not ``pending`` (or not
        the user's): of two concurrent calls, exactly one gets the action.
        """
        ...

    async def reopen(
        self,
        user_id: str,
        action_id: uuid.UUID,
        preview: Preview | None,
        expires_at: datetime,
        *,
        tool_id: int | None = None,
        tool_digest: str | None = None,
    ) -> PendingAction | None:
        """Put an ``approved`` action back to ``pending`` with a new preview (rows changed).

        ``tool_id`` and ``tool_digest``, when given, replace the action's: the tool row
        the user is now asked about (it changed since the action was held).
        """
        ...

    async def complete(
        self, user_id: str, action_id: uuid.UUID, status: str, result: str
    ) -> PendingAction | None:
        """Record the outcome of an approved action: ``done`` or ``failed``, with the reply."""
        ...

    async def choices(self, user_id: str, agent_name: str) -> dict[int, str]:
        """The user's approval choices for the agent's ``user``-mode tool rows, by row id.

        Only those that still count (:func:`choice_counts`): an ``auto`` chosen for a
        row whose type or configuration has changed since is left out.
        """
        ...

    async def choose(
        self, user_id: str, tool_id: int, choice: str | None, *, digest: str | None = None
    ) -> None:
        """Set (or with None, clear) the user's choice for a tool row, as the row is now
        (its :func:`tool_digest` is kept with it).

        :param digest: the row as the user saw it (its :func:`tool_digest`): when the
            row is another now, :class:`~chatwright.errors.ToolChangedError` and
            nothing is stored. A change after the row was read here is safe: the
            digest kept is the one the user saw, and an ``auto`` then counts no more.
        """
        ...


# -- the audit log ------------------------------------------------------------


@dataclass(frozen=True)
class NewAuditEntry:
    """One write by a tool (or an undo), as recorded; see :class:`AuditEntry`."""

    user_id: str
    agent_name: str
    tool_name: str
    operation: str
    """``create``, ``update``, ``delete``, ``upsert``, ``undo`` or a tool type's own word."""
    outcome: str = "ok"
    chat_id: uuid.UUID | None = None
    turn_id: uuid.UUID | None = None
    tool_id: int | None = None
    table: str | None = None
    args: Mapping[str, Any] = field(default_factory=dict)
    row_ids: Sequence[Any] = ()
    error: str | None = None
    approval: str | None = None
    """``auto``, ``approved``, ``denied`` or ``expired``."""
    decided_by: str | None = None
    pending_id: uuid.UUID | None = None
    changes: Sequence[RowChange] = ()
    """Before/after images of the rows changed, what an undo reverts."""
    undo_of: uuid.UUID | None = None
    """For an ``undo`` entry: the turn whose writes it reverted."""


@dataclass(frozen=True)
class AuditEntry(NewAuditEntry):
    id: int = 0
    at: datetime | None = None
    after_message_id: int | None = None
    """The id of the chat's newest message when the write was made, as the store read
    it (None outside a chat, or where the store does not keep it): a write with no
    newer message after it was not stored in the chat by its turn."""
    chat_revision: int | None = None
    """The revision of the chat's messages as the turn making the write started (None
    outside a turn, or where the store does not keep it)."""

    def as_dict(self, *, images: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "at": self.at.isoformat() if self.at else None,
            "user_id": self.user_id,
            "agent_name": self.agent_name,
            "chat_id": str(self.chat_id) if self.chat_id else None,
            "turn_id": str(self.turn_id) if self.turn_id else None,
            "tool_id": self.tool_id,
            "tool_name": self.tool_name,
            "operation": self.operation,
            "table": self.table,
            "args": dict(self.args),
            "row_ids": list(self.row_ids),
            "outcome": self.outcome,
            "error": self.error,
            "approval": self.approval,
            "decided_by": self.decided_by,
            "pending_id": str(self.pending_id) if self.pending_id else None,
            "undo_of": str(self.undo_of) if self.undo_of else None,
        }
        if images:
            data["changes"] = [
                {"key": dict(c.key), "before": _plain(c.before), "after": _plain(c.after)}
                for c in self.changes
            ]
        return data


class AuditStore(Protocol):
    """The append-only audit log: entries are added, never changed or removed by the app."""

    async def record(self, entry: NewAuditEntry) -> AuditEntry:
        """Append one entry in its own transaction."""
        ...

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
        """Entries newest first (``id < before_id`` for the next page).

        ``user_id`` None (administration only, e.g. ``chatwright audit list``)
        lists every user's entries. ``undo_of``: only the undos of that turn.
        """
        ...


@dataclass(frozen=True)
class UndoReport:
    """What an undo reverted: the turn, the entries undone and the rows restored."""

    turn_id: uuid.UUID
    entries: tuple[int, ...]
    changes: tuple[RowChange, ...]
    audit: AuditEntry | None = None


# -- who a tool call's write is approved by ------------------------------------


@dataclass(frozen=True)
class Decision:
    """The approval a running tool call carries into its audit entry and its write."""

    approval: str = "auto"
    decided_by: str | None = None
    pending_id: uuid.UUID | None = None
    expect: Preview | None = None
    """When approved after a preview: the rows must still be as previewed."""


_decision: ContextVar[Decision | None] = ContextVar("chatwright_decision", default=None)
AUTO = Decision()


def current_decision() -> Decision:
    """The decision the running tool call was approved by (``auto`` when none was needed)."""
    return _decision.get() or AUTO


@dataclass(frozen=True)
class WriteCall:
    """A write tool about to run, as the ``before_write`` and ``after_write`` hooks see it."""

    user_id: str
    agent_name: str
    chat_id: uuid.UUID | None
    turn_id: uuid.UUID | None
    tool_id: int | None
    tool_name: str
    tool_type: str
    args: Mapping[str, Any]
    approval: str
    decided_by: str | None = None


@dataclass(frozen=True)
class WriteOutcome:
    """How a write tool call ended, for ``after_write``."""

    ok: bool
    result: str
    """The tool's reply (or error text) as the model reads it."""
    vetoed: bool = False


# -- recording writes -----------------------------------------------------------


def write_entry(
    context: ToolContext,
    row: ToolRow,
    operation: str,
    table: str | None,
    args: Mapping[str, Any],
) -> NewAuditEntry:
    """The audit entry of a write about to run in the current turn (outcome ``ok``).

    The turn (user, chat, turn id) comes from the call's context; the approval
    from :func:`current_decision`. Tool types that write through the record
    store's ``apply`` pass it as ``audit=``; others record it with
    :func:`record_write`.
    """
    from chatwright.tools import current_turn

    turn = current_turn()
    decision = current_decision()
    return NewAuditEntry(
        user_id=str(context.user_id),
        agent_name=context.agent_name,
        tool_name=row.name,
        operation=operation,
        chat_id=turn.chat_id if turn is not None else None,
        turn_id=turn.turn_id if turn is not None else None,
        tool_id=row.id,
        table=table,
        args={k: v for k, v in args.items() if v is not None},
        approval=decision.approval,
        decided_by=decision.decided_by,
        pending_id=decision.pending_id,
    )


async def record_write(
    context: ToolContext,
    row: ToolRow,
    *,
    operation: str,
    args: Mapping[str, Any],
    table: str | None = None,
    row_ids: Sequence[Any] = (),
    outcome: str = "ok",
    error: str | None = None,
    changes: Sequence[RowChange] = (),
) -> AuditEntry:
    """Record a write a tool made (or tried), for tool types that write elsewhere than
    the record store (an HTTP call, a file): call it from the tool's body, after the
    write, with what it changed. The entry is appended in a transaction of its own.

    :param context: the tool's :class:`~chatwright.tools.ToolContext`.
    :param row: the tool's row (what ``build`` was given).
    :param operation: a word for what it did (``create``, ``send``, ...).
    :param outcome: ``ok`` or ``error`` (with ``error``: why).
    """
    entry = write_entry(context, row, operation, table, args)
    entry = replace(entry, row_ids=tuple(row_ids), outcome=outcome, error=error)
    entry = replace(entry, changes=tuple(changes))
    return await context.storage.audit.record(entry)


async def record_cancelled_write(
    context: ToolContext,
    row: ToolRow,
    *,
    operation: str,
    args: Mapping[str, Any],
    error: str,
) -> None:
    """Record, as an ``error``, a write that was cancelled while under way (the turn was
    stopped: its time limit, the request gone): the other side may have acted, so it is
    in the audit log all the same. Call it from the tool's ``except
    asyncio.CancelledError`` before raising again. The recording runs to its end
    whatever cancels the wait for it; a recording that fails is logged.

    :param error: what the entry says, for example that the request was sent and its
        answer not read.
    """
    import asyncio
    import contextlib
    import logging

    recording = asyncio.ensure_future(
        record_write(context, row, operation=operation, args=args, outcome="error", error=error)
    )

    def recorded(done: asyncio.Future[AuditEntry]) -> None:
        if done.cancelled() or done.exception() is None:
            return
        logging.getLogger(__name__).error(
            "chatwright: tool %r: a write cancelled while under way could not be recorded "
            "in the audit log",
            row.name,
            exc_info=done.exception(),
        )

    recording.add_done_callback(recorded)
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await asyncio.shield(recording)
