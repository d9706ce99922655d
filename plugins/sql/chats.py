"""Chat messages of the ``sql`` backend, and what a turn does to the chat's sessions.

Every statement about a user's chat is made for that user (so that the
storage's user transactions apply). The sessions themselves are in
:mod:`chatwright.plugins.sql.sessions`.
"""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from chatwright.plugins.sql import schema
from chatwright.plugins.sql.rows import from_row, now
from chatwright.plugins.sql.stores import BoundStore
from chatwright.stores import ChatInfo, Message, NewMessage


async def touch_sessions(conn: AsyncConnection, user_id: str, chat_id: uuid.UUID) -> int:
    """Mark the user's active sessions of a chat as used now, on ``conn``."""
    result = await conn.execute(
        TOUCH, {"the_chat": chat_id, "the_user": user_id, "updated_at": now()}
    )
    return int(result.rowcount)


_s, _a, _m = schema.chat_sessions, schema.active_sessions, schema.chat_messages
# Built once (a turn runs them; see plugins/sql/turns.py on why). The trigger of
# migration 0009 copies the time to the sessions' active rows.
TOUCH = (
    _s.update()
    .where(_s.c.chat_id == sa.bindparam("the_chat"), _s.c.user_id == sa.bindparam("the_user"))
    .where(sa.exists().where(_a.c.session_id == _s.c.id))
    .values(updated_at=sa.bindparam("updated_at"))
)
INSERT_MESSAGES = _m.insert()


async def insert_messages(
    conn: AsyncConnection,
    user_id: str,
    chat_id: uuid.UUID,
    messages: Sequence[NewMessage],
    *,
    returning: bool = True,
) -> builtins.list[Message]:
    """Append messages to a chat on ``conn`` in one statement; the stored rows if ``returning``."""
    if not messages:
        return []
    m = schema.chat_messages
    ts = now()
    rows = [
        {
            "chat_id": chat_id,
            "user_id": user_id,
            "role": msg.role,
            "content": dict(msg.content),
            "created_at": msg.created_at or ts,
        }
        for msg in messages
    ]
    if not returning:
        # One call of the driver for every row (one round trip on PostgreSQL: psycopg
        # pipelines executemany).
        await conn.execute(INSERT_MESSAGES, rows)
        return []
    result = await conn.execute(m.insert().returning(m, sort_by_parameter_order=True), rows)
    return [from_row(Message, r) for r in result.all()]


class SQLMessageStore(BoundStore):
    async def append(
        self,
        user_id: str,
        chat_id: uuid.UUID,
        messages: Sequence[NewMessage],
        *,
        touch: bool = False,
    ) -> builtins.list[Message]:
        if not messages and not touch:
            return []
        async with self.db.write(user_id) as conn:
            stored = await insert_messages(conn, user_id, chat_id, messages)
            if touch:
                await touch_sessions(conn, user_id, chat_id)
        return stored

    async def window(self, user_id: str, chat_id: uuid.UUID, limit: int) -> builtins.list[Message]:
        return await self.page(user_id, chat_id, limit=limit)

    async def page(
        self,
        user_id: str,
        chat_id: uuid.UUID,
        *,
        limit: int,
        before: int | None = None,
        after: int | None = None,
    ) -> builtins.list[Message]:
        if limit <= 0:
            return []
        m = schema.chat_messages
        # Forward from ``after`` (oldest first), else back from ``before`` (newest first).
        order = m.c.id.asc() if after is not None else m.c.id.desc()
        stmt = (
            sa.select(m)
            .where(m.c.chat_id == chat_id, m.c.user_id == user_id)
            .order_by(order)
            .limit(limit)
        )
        if before is not None:
            stmt = stmt.where(m.c.id < before)
        if after is not None:
            stmt = stmt.where(m.c.id > after)
        async with self.db.read(user_id) as conn:
            rows = (await conn.execute(stmt)).all()
        found = [from_row(Message, r) for r in rows]
        return found if after is not None else found[::-1]

    async def chats(
        self,
        user_id: str,
        *,
        agent_name: str | None = None,
        limit: int,
        before: int | None = None,
    ) -> builtins.list[ChatInfo]:
        from chatwright.plugins.sql.chat_list import list_chats

        return await list_chats(self.db, user_id, agent_name=agent_name, limit=limit, before=before)
