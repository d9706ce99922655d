"""Undoing a turn's writes (:meth:`chatwright.runtime.Runtime.undo`).

An undo runs like a turn of the chat: it queues on the chat's in-process lock
and takes the chat's turn, so that it cannot interleave with a turn, a decision
or another undo of the chat, on this process or another. It reverts every write
of one turn that changed rows, in one transaction of the record store
(:meth:`chatwright.approvals.RecordStore.undo`), audited, and notes it in the
chat so that the model knows the rows are back.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from chatwright.errors import NotFoundError, UndoConflictError

if TYPE_CHECKING:
    from langchain_core.messages import BaseMessage

    from chatwright.approvals import AuditEntry, UndoReport
    from chatwright.runtime import Runtime
    from chatwright.stores import Storage

UNDO_SCAN = 500
"""How many of a chat's latest audit entries an undo looks through for its turn."""


async def undo_turn(
    runtime: Runtime, user_id: str, chat_id: uuid.UUID, *, turn_id: uuid.UUID | None = None
) -> UndoReport:
    """Revert the writes of one turn of the user's chat (by default the latest with writes).

    One transaction; audited; a note of it is added to the chat.

    :raises NotFoundError: not the user's chat, or nothing to undo.
    :raises UndoConflictError: rows changed since; names them, reverts nothing.
    """
    from langchain_core.messages import AIMessage

    from chatwright.approvals import NewAuditEntry
    from chatwright.history import recovered_writes, to_store
    from chatwright.runtime import STOPPED_BEFORE_UNDO

    owner = await runtime.storage.sessions.chat_owner(chat_id)
    if owner is None or owner[0] != user_id:
        raise NotFoundError(f"no chat {chat_id} for this user")
    agent_name = owner[1]
    turns = runtime.turns
    async with runtime.queued(user_id, chat_id, STOPPED_BEFORE_UNDO):
        # Beginning waits while another process's turn holds the chat.
        async with runtime.until_stopped(STOPPED_BEFORE_UNDO):
            start = await turns.begin(user_id, agent_name, chat_id, None)
        note: list[BaseMessage] = []
        try:
            # Approved calls whose process stopped while they ran: ended first, their
            # results right after their call, before the note (and their writes, when
            # made, are in the audit log for this undo to find).
            await runtime.decisions.ended(start, note)
            # Writes of a turn that stopped before storing them: stored before the note,
            # or a message after them would hide them from every later turn.
            note.extend(recovered_writes(start.unrecorded))
            entries = await runtime.storage.audit.list(user_id, chat_id=chat_id, limit=UNDO_SCAN)
            undone = {e.undo_of for e in entries if e.operation == "undo" and e.outcome == "ok"}
            writes = [
                e
                for e in entries
                if e.operation != "undo" and e.outcome == "ok" and e.changes and e.turn_id
            ]
            target = turn_id
            if target is None:
                target = next((e.turn_id for e in writes if e.turn_id not in undone), None)
                if target is None:
                    raise NotFoundError(
                        f"nothing to undo in chat {chat_id}: no turn of it changed rows "
                        "that are not undone already"
                    )
            if target in undone or await _undone_already(runtime.storage, user_id, chat_id, target):
                raise UndoConflictError(f"turn {target} of chat {chat_id} was undone already")
            now = datetime.now(UTC)
            waiting = [a for a in start.pending if not a.expired(now)]
            names = ", ".join(f"{a.tool_name} ({a.id})" for a in waiting)
            if any(a.turn_id == target for a in waiting):
                # Its writes are not all made yet: an undo now would leave those made after
                # it out of every later undo ("undone already").
                raise UndoConflictError(
                    f"turn {target} of chat {chat_id} still waits for your decision on "
                    f"{names}; approve or deny first, then undo"
                )
            if waiting:
                # The undo's note would come between a call and its result, which the model
                # would then be told was not run.
                raise UndoConflictError(
                    f"chat {chat_id} waits for your decision on {names}; approve or deny "
                    "first, then undo"
                )
            # Expired calls are answered as not run first, before the note.
            await runtime.decisions.settle(start.pending, now, note)
            mine = await _writes_of(runtime.storage, user_id, chat_id, target)
            if not mine:
                raise NotFoundError(f"turn {target} of chat {chat_id} changed no rows to undo")
            audit = NewAuditEntry(
                user_id=user_id,
                agent_name=agent_name,
                tool_name="undo",
                operation="undo",
                chat_id=chat_id,
                turn_id=uuid.uuid4(),
                args={"turn_id": str(target)},
                decided_by=user_id,
                undo_of=target,
            )
            report = await runtime.storage.records.undo(user_id, mine, audit)
            count = len(report.changes)
            note.append(
                AIMessage(
                    content=f"Undone: the {count} row change{'s' if count != 1 else ''} "
                    f"made in turn {target} {'was' if count == 1 else 'were'} reverted.",
                    additional_kwargs={"chatwright": {"undo_of": str(target)}},
                )
            )
            return report
        finally:
            await asyncio.shield(turns.finish(start, to_store(note), touch=bool(note)))


async def _undone_already(
    storage: Storage, user_id: str, chat_id: uuid.UUID, turn_id: uuid.UUID
) -> bool:
    """Whether the chat has an undo of the turn, however old (not only among its latest)."""
    found = await storage.audit.list(user_id, chat_id=chat_id, undo_of=turn_id, limit=10)
    return any(e.operation == "undo" and e.outcome == "ok" for e in found)


async def _writes_of(
    storage: Storage, user_id: str, chat_id: uuid.UUID, turn_id: uuid.UUID
) -> list[AuditEntry]:
    """Every entry of the turn that changed rows, newest first, however old: an undo
    reverts all of a turn's writes or none, not just those among the chat's latest."""
    found: list[AuditEntry] = []
    before: int | None = None
    while True:
        page = await storage.audit.list(
            user_id, chat_id=chat_id, turn_id=turn_id, before_id=before, limit=UNDO_SCAN
        )
        found.extend(e for e in page if e.operation != "undo" and e.outcome == "ok" and e.changes)
        if len(page) < UNDO_SCAN:
            return found
        before = page[-1].id
