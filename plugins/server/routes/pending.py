"""Write safety's decisions: the caller's pending actions, approving and denying them, and
their approval choices for tool rows that let each user choose.

Every route acts for the caller only: another user's action is not found (404),
the same answer as for an id nobody used, so that the answer never tells
whether someone else's action exists. Approving or denying continues the
action's turn and answers it like ``POST /api/chat``.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query

from chatwright.errors import ChatwrightError, NotFoundError
from chatwright.plugins.server.audit_schemas import ApprovalChoice, ApprovalOut
from chatwright.plugins.server.dependencies import JSONRoute, MetricsDep, RuntimeDep, User
from chatwright.plugins.server.errors import USER, responses
from chatwright.plugins.server.schemas import (
    ChatTurn,
    PendingActionOut,
    PendingList,
    PreviewChangedBody,
)
from chatwright.runtime import Runtime

router = APIRouter(tags=["approvals"], route_class=JSONRoute)

DECIDE_409 = (
    "Decided already, or expired (said so; an expired action counts as denied); or the "
    "rows changed since the preview: nothing was written, and action is pending again "
    "with the fresh preview."
)

ToolId = Annotated[int, Path(ge=1, le=2**63 - 1)]


@router.get("/api/pending", responses=responses(*USER, 422))
async def list_pending(
    runtime: RuntimeDep,
    who: User,
    chat_id: uuid.UUID | None = None,
    status: Annotated[Literal["pending", "all"], Query()] = "pending",
) -> PendingList:
    """The caller's actions waiting for a decision (status=all: decided ones too), oldest first."""
    actions = await runtime.pending(
        who.user_id, chat_id=chat_id, status=None if status == "all" else "pending"
    )
    return PendingList(actions=[PendingActionOut.of(a) for a in actions])


@router.get("/api/pending/{action_id}", responses=responses(*USER, 404, 422))
async def get_pending(action_id: uuid.UUID, runtime: RuntimeDep, who: User) -> PendingActionOut:
    """One of the caller's actions, in any status."""
    action = await runtime.storage.pending.get(who.user_id, action_id)
    if action is None:
        raise NotFoundError(f"no pending action {action_id} of yours; see GET /api/pending")
    return PendingActionOut.of(action)


async def _decide(
    runtime: Runtime, metrics: MetricsDep, user_id: str, action_id: uuid.UUID, approve: bool
) -> ChatTurn:
    try:
        turn = await runtime.decide(user_id, action_id, approve, decided_by=user_id)
    except ChatwrightError as exc:
        # A resumed turn that failed part-way (a time limit, a model error) still spent
        # what its model calls reported: counted, as its token_usage row counts it.
        metrics.used(exc.usage)
        raise
    finally:
        metrics.sync(runtime.cache.stats, len(runtime.cache))
    # Not counted as a turn (it continues one), but what its model calls spent is.
    metrics.used(turn.usage)
    return ChatTurn.of(turn)


_DECIDE = responses(
    *USER, 404, 409, 422, 429, 502, 504, conflict=PreviewChangedBody, why=DECIDE_409
)


@router.post("/api/pending/{action_id}/approve", responses=_DECIDE)
async def approve(
    action_id: uuid.UUID, runtime: RuntimeDep, metrics: MetricsDep, who: User
) -> ChatTurn:
    """Run the call with exactly its stored arguments; the turn goes on (the model sees the
    result) and this answers its continuation, which may stop for approval again."""
    return await _decide(runtime, metrics, who.user_id, action_id, True)


@router.post("/api/pending/{action_id}/deny", responses=_DECIDE)
async def deny(
    action_id: uuid.UUID, runtime: RuntimeDep, metrics: MetricsDep, who: User
) -> ChatTurn:
    """Do not run the call; the model is told the user declined and the turn goes on."""
    return await _decide(runtime, metrics, who.user_id, action_id, False)


_CHOOSE_409 = "The row has changed since the digest given was read: nothing was stored."


@router.put(
    "/api/tools/{tool_id}/approval",
    responses=responses(*USER, 404, 409, 413, 422, why=_CHOOSE_409),
)
async def choose(
    tool_id: ToolId, body: ApprovalChoice, runtime: RuntimeDep, who: User
) -> ApprovalOut:
    """The caller's choice for a tool row in user mode: auto, required, or null for the
    row's default. Rows in auto or required mode take no choice (422)."""
    await runtime.choose_approval(who.user_id, tool_id, body.choice, digest=body.digest)
    row = await runtime.storage.tools.get(tool_id)
    if row is None:  # deleted meanwhile
        raise NotFoundError(f"no tool row {tool_id}")
    return ApprovalOut(
        tool_id=row.id,
        approval=row.approval,
        approval_default=row.approval_default,
        choice=body.choice,
    )
