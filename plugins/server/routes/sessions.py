"""Sessions: a client's engagement with a chat, opened, kept alive and closed."""

from __future__ import annotations

import contextlib
import uuid
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request, Security

from chatwright.conversations import owner_lost
from chatwright.errors import ChatBusyError, NotFoundError
from chatwright.plugins.server.auth import AuthError, bearer
from chatwright.plugins.server.dependencies import (
    JSONRoute,
    RuntimeDep,
    SettingsDep,
    User,
    agent_exists,
    bearer_scheme,
    read_body,
    verified,
)
from chatwright.plugins.server.errors import USER, responses
from chatwright.plugins.server.schemas import BeaconToken, OpenSession, Session
from chatwright.plugins.server.settings import ServerSettings

if TYPE_CHECKING:
    from chatwright.runtime import Runtime

router = APIRouter(prefix="/api/sessions", tags=["sessions"], route_class=JSONRoute)


@router.post("", responses=responses(*USER, 404, 413, 422))
async def open_session(body: OpenSession, runtime: RuntimeDep, who: User) -> Session:
    """Open a session on one of the caller's chats, the latest one, or a new one (new: true).

    A chat_id that is not one of the caller's chats is not found, whether it is
    unused or another user's: the two answers are the same, so that the answer
    does not tell whether someone else's chat exists.

    With a client_key the open is idempotent (a retry gets the same session), but
    a chat_id names the chat: the key's active session on another chat (a tab
    moving to a past chat) is closed first, and the key opens a session on the
    chat named.
    """
    await agent_exists(runtime, body.agent_name)
    chat_id = body.chat_id
    move: tuple[str, uuid.UUID] | None = None
    if chat_id is not None:
        owner = await runtime.storage.sessions.chat_owner(chat_id)
        if owner is None and await owner_lost(
            runtime.storage, who.user_id, chat_id, body.agent_name
        ):
            # The session store lost the chat's owner; its messages are the caller's.
            owner = (who.user_id, body.agent_name)
        if owner is None or owner[0] != who.user_id:
            raise NotFoundError(
                f"no chat {chat_id} of yours; omit chat_id to resume your latest chat with "
                f'{body.agent_name!r}, or send "new": true to start one'
            )
        # With a key, the key moves there (unless the chat is another agent's, which open
        # refuses): closed on another chat, opened on this one.
        if body.client_key is not None and owner[1] == body.agent_name:
            move = (body.client_key, chat_id)
    elif body.new:
        chat_id = uuid.uuid4()
    for _ in range(KEY_MOVES):
        if move is not None:
            await _move_key(runtime, who.user_id, body.agent_name, *move)
        session = await runtime.storage.sessions.open(
            who.user_id, body.agent_name, chat_id=chat_id, client_key=body.client_key
        )
        if move is None or session.chat_id == chat_id:
            return Session.of(session)
        # Another open of the key, to another chat, came between the move and this open.
    raise ChatBusyError(
        f"client key {body.client_key!r} is being opened on another chat at the same time; "
        "try again, or give each tab a key of its own"
    )


KEY_MOVES = 3
"""Attempts at moving a client key to the chat named, against opens of it elsewhere."""


async def _move_key(
    runtime: Runtime, user_id: str, agent_name: str, client_key: str, chat_id: uuid.UUID
) -> None:
    """Close the user's active sessions of ``client_key`` (with the agent) on other chats
    than ``chat_id`` (``session_deactivated`` reports them, as a client's close)."""
    from chatwright.sessions import deactivate as close

    for session in await runtime.storage.sessions.list(user_id, active=True):
        keyed = (session.agent_name, session.client_key) == (agent_name, client_key)
        if keyed and session.chat_id != chat_id:
            with contextlib.suppress(NotFoundError):  # closed meanwhile
                await close(runtime, user_id, session.id)


@router.get("", responses=responses(*USER, 422))
async def list_sessions(
    runtime: RuntimeDep, who: User, active: bool | None = None
) -> list[Session]:
    """The caller's sessions, most recently used first."""
    return [Session.of(s) for s in await runtime.storage.sessions.list(who.user_id, active=active)]


@router.post("/{session_id}/heartbeat", responses=responses(*USER, 404, 422))
async def heartbeat(session_id: uuid.UUID, runtime: RuntimeDep, who: User) -> Session:
    """Keep a session active (its updated_at becomes now)."""
    session = await runtime.storage.sessions.heartbeat(who.user_id, session_id)
    if session is None:
        raise NotFoundError(f"no session {session_id}")
    return Session.of(session)


_BEACON_BODY: dict[str, Any] = {
    "requestBody": {
        "required": False,
        "content": {"application/json": {"schema": BeaconToken.model_json_schema()}},
    }
}


@router.post(
    "/{session_id}/deactivate",
    responses=responses(*USER, 404, 413, 422),
    openapi_extra=_BEACON_BODY,
    # Declares the bearer scheme; the token is read below, from the header or the body.
    dependencies=[Security(bearer_scheme)],
)
async def deactivate(
    session_id: uuid.UUID,
    request: Request,
    runtime: RuntimeDep,
    settings: SettingsDep,
) -> Session:
    """Close a session; the token may come in the body, as navigator.sendBeacon sends it."""
    from chatwright.sessions import deactivate as close

    token = bearer(request.headers.get("authorization"))
    if token is None and settings.section(ServerSettings).auth == "jwt":
        # navigator.sendBeacon cannot set headers: the page sends the token in the body.
        # A body that is not such an object (not JSON, nested past the parser's depth)
        # carries no token: the answer is the missing token's 401.
        # One giving a key twice is refused: which token would be meant is not known.
        with contextlib.suppress(ValueError, UnicodeDecodeError, RecursionError):
            sent = read_body(await request.body() or b"{}")
            token = sent.get("access_token") if isinstance(sent, dict) else None
        if token is not None and not isinstance(token, str):
            raise AuthError('the body\'s "access_token" must be the JWT, as a string')
    # Verified as the other routes' callers are: off the event loop when a JWKS is involved.
    who = await verified(settings, token)
    return Session.of(await close(runtime, who.user_id, session_id))
