"""A user's past chats: the list to pick one from, and one chat's whole transcript.

A chat is the messages stored under its ``chat_id``; whose it is and with which
agent is decided by its sessions (:meth:`~chatwright.stores.SessionStore.chat_owner`).
:func:`list_chats` asks the message store for a page of the user's chats, the most
recently active first, and fills in the agent of the chats whose sessions live
elsewhere (a separate session store). :func:`transcript` reads every message of
one chat with its summary and the tool calls still waiting for a decision: what
``chatwright chats show`` prints. Both are reads; nothing here changes a chat.

A page's cursor is the ``last_id`` of its last chat (the id of that chat's newest
message): the next page holds the chats whose newest message is older. A chat
that gets a new message meanwhile moves to the top of the first page.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chatwright.errors import InvalidInputError, NotFoundError
from chatwright.userdata import no_chat

if TYPE_CHECKING:
    from chatwright.approvals import PendingAction
    from chatwright.stores import ChatInfo, ChatSummary, Message, Storage

TITLE_LENGTH = 80
"""Most characters of a chat's title (its first human message)."""
MOST_LISTED = 100
"""Most chats one page lists."""
LARGEST_ID = 2**63 - 1
"""The largest message id a cursor can hold (a signed 64-bit key)."""
TRANSCRIPT_PAGE = 500
"""Messages read per query while a transcript is gathered."""

_SPACE = re.compile(r"[\s\x00-\x1f\x7f-\x9f]+")


async def owner_lost(
    storage: Storage, user_id: str, chat_id: uuid.UUID, agent_name: str | None = None
) -> bool:
    """Whether a chat the session store knows no owner of is ``user_id``'s all the same:
    messages of theirs are stored under it.

    Only a session store that lost what it kept (Redis run without persistence, then
    restarted) forgets the owner of a chat whose messages exist. Its user may then
    reopen the chat by its id, naming its agent (``POST /api/sessions``, ``chatwright
    chat --chat-id``), which makes them its owner again; another user finds no chat,
    since messages are read by user.

    :param agent_name: the agent the chat is to be reopened with. When what is stored
        of the chat (its tool calls held for approval, its audited writes) names
        another agent, :class:`~chatwright.errors.InvalidInputError` says which: the
        chat goes on with its own agent, whose decisions it may still wait for.
    """
    if await storage.sessions.chat_owner(chat_id) is not None:
        return False
    if not await storage.messages.window(user_id, chat_id, 1):
        return False
    if agent_name is not None:
        held = await storage.pending.list(user_id, chat_id=chat_id, status=None, limit=1)
        named = [a.agent_name for a in held]
        if not named:
            audited = await storage.audit.list(user_id, chat_id=chat_id, limit=1)
            named = [e.agent_name for e in audited]
        was = named[0] if named else agent_name
        if was != agent_name:
            raise InvalidInputError(
                f"chat {chat_id} was with agent {was!r}, not {agent_name!r}; reopen it "
                f"with agent {was!r}"
            )
    return True


def message_text(content: Mapping[str, Any]) -> str:
    """The text of a stored message (a LangChain message dict): its text parts joined."""
    data = content.get("data")
    body = data.get("content", "") if isinstance(data, Mapping) else ""
    if isinstance(body, str):
        return body
    if isinstance(body, list):
        return "".join(
            str(part.get("text", "")) if isinstance(part, Mapping) else str(part)
            for part in body
            if isinstance(part, Mapping | str)
        )
    return ""


def title_of(content: Mapping[str, Any] | None) -> str:
    """A chat's title from its first human message: one line, at most :data:`TITLE_LENGTH`.

    Runs of white space and control characters become one space: a title is shown in lists
    and terminals, where a newline or an escape sequence has no place.
    """
    if content is None:
        return ""
    text = _SPACE.sub(" ", message_text(content)).strip()
    return text if len(text) <= TITLE_LENGTH else text[: TITLE_LENGTH - 1].rstrip() + "…"


def check_page(
    limit: int, before: int | None, *, limit_name: str = "limit", before_name: str = "before"
) -> None:
    """Refuse a page size or cursor no page can have, naming it and what to give instead."""
    if not 1 <= limit <= MOST_LISTED:
        raise InvalidInputError(
            f"{limit_name} {limit}: a page of chats holds 1 to {MOST_LISTED} chats"
        )
    if before is not None and not 1 <= before <= LARGEST_ID:
        raise InvalidInputError(
            f"{before_name} {before} is not a cursor a page of chats gives: pass the one the "
            "page before gave, or none for the newest chats"
        )


@dataclass(frozen=True)
class ChatPage:
    chats: list[ChatInfo]
    next: int | None
    """The cursor of the next (older) page; None when this one is the last."""


async def list_chats(
    storage: Storage,
    user_id: str,
    *,
    agent_name: str | None = None,
    limit: int = 20,
    before: int | None = None,
) -> ChatPage:
    """A page of the user's chats, the most recently active first."""
    from dataclasses import replace

    check_page(limit, before)
    # One more than asked tells whether an older page exists.
    found = await storage.messages.chats(
        user_id, agent_name=agent_name, limit=limit + 1, before=before
    )
    more = len(found) > limit
    found = found[:limit]
    chats: list[ChatInfo] = []
    for chat in found:
        if chat.agent_name is None:
            owner = await storage.sessions.chat_owner(chat.chat_id)
            if owner is None or owner[0] != user_id:
                continue
            chat = replace(chat, agent_name=owner[1])
        if agent_name is not None and chat.agent_name != agent_name:
            continue
        chats.append(chat)
    return ChatPage(chats=chats, next=found[-1].last_id if more and found else None)


@dataclass(frozen=True)
class Transcript:
    chat_id: uuid.UUID
    user_id: str
    agent_name: str
    messages: list[Message]
    """Every message, oldest first."""
    summary: ChatSummary | None
    pending: list[PendingAction]
    """Tool calls of the chat that wait for the user's decision, oldest first."""


async def transcript(
    storage: Storage, chat_id: uuid.UUID, user_id: str | None = None
) -> Transcript:
    """One chat whole; ``user_id`` None (administration, the CLI) reads anyone's chat.

    :class:`~chatwright.errors.NotFoundError` when there is no such chat, or it is
    not ``user_id``'s (the same answer, so that a chat's existence does not leak).
    """
    owner = await storage.sessions.chat_owner(chat_id)
    if owner is None or (user_id is not None and owner[0] != user_id):
        if user_id is not None:
            raise NotFoundError(no_chat(chat_id))
        raise NotFoundError(
            f"no chat {chat_id}; `chatwright chats list --user USER` lists a user's chats"
        )
    user, agent = owner
    messages: list[Message] = []
    after = 0
    while True:
        page = await storage.messages.page(user, chat_id, limit=TRANSCRIPT_PAGE, after=after)
        messages.extend(page)
        if len(page) < TRANSCRIPT_PAGE:
            break
        after = page[-1].id
    summary = await storage.summaries.get(user, chat_id)
    pending = await storage.pending.list(user, chat_id=chat_id)
    return Transcript(chat_id, user, agent, messages, summary, pending)
