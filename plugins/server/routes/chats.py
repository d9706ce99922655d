"""Chats: a turn answered at once or streamed, the caller's chats, and the pages of a chat's
messages."""

from __future__ import annotations

import time
import uuid
from typing import Annotated

from fastapi import APIRouter, Query

from chatwright.conversations import LARGEST_ID, MOST_LISTED, list_chats
from chatwright.errors import BudgetExceededError, ChatwrightError, NotFoundError
from chatwright.message_limits import check_message
from chatwright.plugins.server.dependencies import (
    JSONRoute,
    MetricsDep,
    RuntimeDep,
    SettingsDep,
    User,
)
from chatwright.plugins.server.errors import USER, responses
from chatwright.plugins.server.metrics import outcome_of
from chatwright.plugins.server.schemas import (
    ChatList,
    ChatListItem,
    ChatMessage,
    ChatRequest,
    ChatTurn,
    MessagePage,
    PendingErrorBody,
    SummaryOut,
)
from chatwright.plugins.server.settings import ServerSettings
from chatwright.plugins.server.streaming import (
    EVENTS,
    EventStreamResponse,
    refuse_spent,
    stream_turn,
)
from chatwright.userdata import no_chat

router = APIRouter(tags=["chats"], route_class=JSONRoute)


CHAT_409 = (
    "The chat waits for the user's decisions on tool calls (pending lists them): approve or "
    "deny them first; or another turn of the chat did not end in time."
)


@router.post(
    "/api/chat",
    responses=responses(
        *USER, 404, 409, 413, 422, 429, 502, 504, conflict=PendingErrorBody, why=CHAT_409
    ),
)
async def chat(
    body: ChatRequest,
    runtime: RuntimeDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    who: User,
) -> ChatTurn:
    """One turn: the human message is stored, the agent answers, both are kept.

    A turn that reaches a tool call needing the user's approval stops before it runs:
    status is approval_required and pending lists the calls to approve or deny.
    """
    check_message(settings, body.message)
    started = time.perf_counter()
    try:
        turn = await runtime.chat(who.user_id, body.agent_name, body.chat_id, body.message)
    except ChatwrightError as exc:
        metrics.ended(outcome_of(exc), exc.usage)
        raise
    finally:
        metrics.sync(runtime.cache.stats, len(runtime.cache))
    metrics.ended("ok", turn.usage)
    metrics.turn_seconds.observe(time.perf_counter() - started)
    return ChatTurn.of(turn)


@router.post(
    "/api/chat/stream",
    response_class=EventStreamResponse,
    responses={200: {"description": EVENTS}, **responses(*USER, 404, 413, 422, 429)},
)
async def chat_stream(
    body: ChatRequest,
    runtime: RuntimeDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    who: User,
) -> EventStreamResponse:
    """One turn as server-sent events: token, tool_call, tool_result, approval (when the turn
    stops for the user's decision), then done or error."""
    check_message(settings, body.message)
    # Refuse what can be refused before the stream starts, with a status code (once
    # the stream has started the answer is 200). Deliberately a second check: the
    # runtime checks ownership again, as the authority for every caller of a turn.
    owner = await runtime.storage.sessions.chat_owner(body.chat_id)
    if owner != (who.user_id, body.agent_name):
        raise NotFoundError(f"no chat {body.chat_id} with agent {body.agent_name!r}")
    try:
        await refuse_spent(runtime, who.user_id)
    except BudgetExceededError:
        metrics.turns.labels("refused").inc()
        raise
    keepalive = settings.section(ServerSettings).stream_keepalive
    return stream_turn(
        runtime, keepalive, metrics, who.user_id, body.agent_name, body.chat_id, body.message
    )


@router.get(
    "/api/chats/{chat_id}/messages",
    response_model_exclude_unset=True,
    responses=responses(*USER, 404, 422),
)
async def messages(
    chat_id: uuid.UUID,
    runtime: RuntimeDep,
    who: User,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    before: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
) -> MessagePage:
    """A page of a chat, oldest first; pass the first message's id as before for the previous."""
    owner = await runtime.storage.sessions.chat_owner(chat_id)
    if owner is None or owner[0] != who.user_id:
        raise NotFoundError(no_chat(chat_id))
    # One extra row tells whether an older page exists.
    page = await runtime.storage.messages.page(who.user_id, chat_id, limit=limit + 1, before=before)
    summary = await runtime.storage.summaries.get(who.user_id, chat_id)
    return MessagePage(
        chat_id=chat_id,
        agent_name=owner[1],
        messages=[ChatMessage.of(m) for m in page[-limit:]],
        more=len(page) > limit,
        summary=SummaryOut.of(summary) if summary is not None else None,
    )


@router.get("/api/chats", responses=responses(*USER, 422))
async def chat_list(
    runtime: RuntimeDep,
    who: User,
    agent_name: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=MOST_LISTED)] = 20,
    before: Annotated[int | None, Query(ge=1, le=LARGEST_ID)] = None,
) -> ChatList:
    """The caller's chats, the most recently active first; pass next as before for the next
    page. Open one with POST /api/sessions and its chat_id, read it with GET
    /api/chats/{chat_id}/messages."""
    page = await list_chats(
        runtime.storage, who.user_id, agent_name=agent_name, limit=limit, before=before
    )
    return ChatList(chats=[ChatListItem.of(c) for c in page.chats], next=page.next)
