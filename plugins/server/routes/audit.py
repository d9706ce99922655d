"""The audit log of tools' writes, and undo, which reverts the writes it recorded.

Both act for the caller only: the log lists the caller's own entries, and an
undo of another user's chat is not found (404), as for a chat nobody used.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Body, Query

from chatwright.plugins.server.audit_schemas import AuditEntryOut, AuditPage, UndoOut, UndoRequest
from chatwright.plugins.server.dependencies import JSONRoute, RuntimeDep, User
from chatwright.plugins.server.errors import USER, responses

router = APIRouter(tags=["audit"], route_class=JSONRoute)

UNDO_409 = (
    "The rows were changed since the turn wrote them (the error names them), or the turn "
    "was undone already, or the chat is busy: nothing was reverted."
)


@router.get("/api/audit", responses=responses(*USER, 422))
async def audit(
    runtime: RuntimeDep,
    who: User,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    before: Annotated[
        int | None, Query(ge=1, le=2**63 - 1, description="An entry id: older entries only.")
    ] = None,
    since: Annotated[
        datetime | None,
        Query(description="ISO 8601 time (UTC when it has no offset): newer entries only."),
    ] = None,
    chat_id: uuid.UUID | None = None,
) -> AuditPage:
    """The caller's audit entries, newest first; pass the last entry's id as before for more."""
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    # One extra entry tells whether an older page exists.
    entries = await runtime.storage.audit.list(
        who.user_id, since=since, chat_id=chat_id, before_id=before, limit=limit + 1
    )
    return AuditPage(
        entries=[AuditEntryOut.of(e) for e in entries[:limit]], more=len(entries) > limit
    )


@router.post(
    "/api/chats/{chat_id}/undo",
    responses=responses(*USER, 404, 409, 413, 422, why=UNDO_409),
)
async def undo(
    chat_id: uuid.UUID,
    runtime: RuntimeDep,
    who: User,
    body: Annotated[UndoRequest | None, Body()] = None,
) -> UndoOut:
    """Revert the writes of the chat's latest turn that changed rows (or of turn_id), in one
    transaction; refused, naming the rows, when they were changed since."""
    turn_id = body.turn_id if body is not None else None
    report = await runtime.undo(who.user_id, chat_id, turn_id=turn_id)
    return UndoOut.of(report)
