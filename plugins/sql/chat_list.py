"""A user's chats in the ``sql`` backend: one statement over the messages' indexes.

The user's messages are grouped by chat (found through the index on
``chat_messages.user_id``), the most recently active first (by the newest
message's id), then for each chat of the page its first human message, through
the index on ``(chat_id, id)``, and its agent: the chat's first session's, through
the index on ``chat_sessions.chat_id``, as ``chat_owner`` decides. Every message
row of the user is read to group them: the price of needing no index of its own,
proportional to the user's messages, not to the table. A backend whose sessions
live elsewhere (Redis) has no session row here; its chats get no agent, and
:func:`chatwright.conversations.list_chats` asks the session store.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from chatwright.conversations import title_of
from chatwright.plugins.sql import schema
from chatwright.stores import ChatInfo

if TYPE_CHECKING:
    from chatwright.plugins.sql.storage import SQLStorage


def agent_of(chat_id: sa.ColumnElement[Any], user_id: str) -> sa.ScalarSelect[Any]:
    """The agent of the user's chat: its first session's (None when it has none here)."""
    s = schema.chat_sessions
    return (
        sa.select(s.c.agent_name)
        .where(s.c.chat_id == chat_id, s.c.user_id == user_id)
        .order_by(s.c.created_at, s.c.id)
        .limit(1)
        .scalar_subquery()
    )


def statement(
    user_id: str, *, agent_name: str | None, limit: int, before: int | None
) -> sa.Select[Any]:
    m = schema.chat_messages
    last_id = sa.func.max(m.c.id)
    grouped = (
        sa.select(
            m.c.chat_id,
            sa.func.count().label("messages"),
            last_id.label("last_id"),
            sa.func.min(m.c.created_at).label("created_at"),
            sa.func.max(m.c.created_at).label("last_activity"),
        )
        .where(m.c.user_id == user_id)
        .group_by(m.c.chat_id)
    )
    if before is not None:
        grouped = grouped.having(last_id < before)
    if agent_name is not None:
        # A chat with no session here keeps its agent elsewhere: the caller filters it.
        owner = agent_of(m.c.chat_id, user_id)
        grouped = grouped.having(sa.func.coalesce(owner, agent_name) == agent_name)
    page = grouped.order_by(last_id.desc()).limit(limit).subquery("page")
    first = sa.alias(m, "first_human")
    title = (
        sa.select(first.c.content)
        .where(first.c.chat_id == page.c.chat_id, first.c.role == "human")
        .order_by(first.c.id)
        .limit(1)
        .scalar_subquery()
    )
    return sa.select(
        page,
        agent_of(page.c.chat_id, user_id).label("agent_name"),
        title.label("first_human"),
    ).order_by(page.c.last_id.desc())


async def list_chats(
    db: SQLStorage,
    user_id: str,
    *,
    agent_name: str | None = None,
    limit: int,
    before: int | None = None,
) -> list[ChatInfo]:
    """:meth:`chatwright.stores.MessageStore.chats` of the ``sql`` backend."""
    if limit <= 0:
        return []
    stmt = statement(user_id, agent_name=agent_name, limit=limit, before=before)
    async with db.read(user_id) as conn:
        rows = (await conn.execute(stmt)).all()
    return [
        ChatInfo(
            chat_id=r.chat_id,
            agent_name=r.agent_name,
            title=title_of(r.first_human if isinstance(r.first_human, Mapping) else None),
            messages=int(r.messages),
            created_at=r.created_at,
            last_activity=r.last_activity,
            last_id=int(r.last_id),
        )
        for r in rows
    ]
