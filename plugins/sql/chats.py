"""Chat sessions and messages of the ``sql`` backend.

Every statement about a user's chat is made for that user (so that the
storage's user transactions apply), except the ones that must see across
users: whose a chat is, the sweeper, and the counts of active sessions.
"""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import exc
from sqlalchemy.ext.asyncio import AsyncConnection

from chatwright.errors import InvalidInputError, NotFoundError
from chatwright.plugins.sql import schema
from chatwright.plugins.sql.rows import from_row, now
from chatwright.plugins.sql.stores import BoundStore
from chatwright.stores import ChatInfo, ChatSession, Message, NewMessage

if TYPE_CHECKING:
    from chatwright.plugins.sql.storage import SQLStorage


class SQLSessionStore(BoundStore):
    def __init__(self, db: SQLStorage) -> None:
        super().__init__(db)
        # (cutoff, newest updated_at deactivated) of the sweep pass under way.
        self._resume: tuple[datetime, datetime] | None = None

    async def open(
        self,
        user_id: str,
        agent_name: str,
        *,
        chat_id: uuid.UUID | None = None,
        client_key: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> ChatSession:
        s = schema.chat_sessions
        try:
            # One connection for the whole open: the claim's look across users runs
            # first, as a framework statement, then the transaction turns to the user.
            # (A second connection taken while this one is held would deadlock the
            # pool once every connection is held by an open waiting for another.)
            async with self.db.write() as conn:
                if chat_id is not None:
                    await self._claim(conn, user_id, agent_name, chat_id)
                await self.db.users.enter(conn, user_id)
                if client_key is not None:
                    existing = await self._active_with_key(conn, user_id, agent_name, client_key)
                    if existing is not None:
                        return existing
                if chat_id is None:
                    chat_id = (
                        await conn.scalar(
                            sa.select(s.c.chat_id)
                            .where(s.c.user_id == user_id, s.c.agent_name == agent_name)
                            .order_by(s.c.created_at.desc())
                            .limit(1)
                        )
                        or uuid.uuid4()
                    )
                ts = now()
                row = (
                    await conn.execute(
                        s.insert()
                        .values(
                            id=uuid.uuid4(),
                            chat_id=chat_id,
                            user_id=user_id,
                            agent_name=agent_name,
                            is_active=True,
                            client_key=client_key,
                            created_at=ts,
                            updated_at=ts,
                            metadata=dict(metadata or {}),
                        )
                        .returning(s)
                    )
                ).one()
                return from_row(ChatSession, row)
        except exc.IntegrityError:
            # A concurrent open with the same client_key won the race: return its session.
            if client_key is not None:
                async with self.db.read(user_id) as conn:
                    existing = await self._active_with_key(conn, user_id, agent_name, client_key)
                if existing is not None:
                    return existing
            raise

    @staticmethod
    async def _active_with_key(
        conn: AsyncConnection, user_id: str, agent_name: str, client_key: str
    ) -> ChatSession | None:
        s = schema.chat_sessions
        row = (
            await conn.execute(
                sa.select(s).where(
                    s.c.user_id == user_id,
                    s.c.agent_name == agent_name,
                    s.c.client_key == client_key,
                    s.c.is_active,
                )
            )
        ).first()
        return from_row(ChatSession, row) if row else None

    async def _claim(
        self, conn: AsyncConnection, user_id: str, agent_name: str, chat_id: uuid.UUID
    ) -> None:
        """Refuse a chat that is someone else's, atomically with the insert that claims it.

        Two users opening the same new chat_id at once are serialized here: the
        first one's session is committed before the second one looks, so the
        second is refused exactly like for any other user's chat. SQLite's write
        transactions (``BEGIN IMMEDIATE``) are serialized already; on PostgreSQL
        a transaction-scoped advisory lock on the chat does it.
        """
        if self.db.dialect == "postgresql":
            await conn.execute(
                sa.select(
                    sa.func.pg_advisory_xact_lock(
                        sa.func.hashtextextended(f"chatwright:claim:{chat_id}", 0)
                    )
                )
            )
        # Across all users: the transaction has not turned to the user yet (see open),
        # so row-level security does not hide that the chat is someone else's.
        owner = await self.owner(conn, chat_id)
        if owner is not None and owner[0] != user_id:
            raise NotFoundError(f"no chat {chat_id} for this user")
        if owner is not None and owner[1] != agent_name:
            raise InvalidInputError(
                f"chat {chat_id} belongs to agent {owner[1]!r}, not {agent_name!r}"
            )

    @staticmethod
    async def owner(conn: AsyncConnection, chat_id: uuid.UUID) -> tuple[str, str] | None:
        s = schema.chat_sessions
        # The first session decides, should rows made before claims were atomic disagree.
        row = (
            await conn.execute(
                sa.select(s.c.user_id, s.c.agent_name)
                .where(s.c.chat_id == chat_id)
                .order_by(s.c.created_at, s.c.id)
                .limit(1)
            )
        ).first()
        return (row.user_id, row.agent_name) if row else None

    async def get(self, user_id: str, session_id: uuid.UUID) -> ChatSession | None:
        s = schema.chat_sessions
        async with self.db.read(user_id) as conn:
            row = (
                await conn.execute(sa.select(s).where(s.c.id == session_id, s.c.user_id == user_id))
            ).first()
        return from_row(ChatSession, row) if row else None

    async def _update(
        self, user_id: str, session_id: uuid.UUID, **values: Any
    ) -> ChatSession | None:
        s = schema.chat_sessions
        stmt = (
            s.update()
            .where(s.c.id == session_id, s.c.user_id == user_id)
            .values(**values)
            .returning(s)
        )
        async with self.db.write(user_id) as conn:
            row = (await conn.execute(stmt)).first()
        return from_row(ChatSession, row) if row else None

    async def heartbeat(self, user_id: str, session_id: uuid.UUID) -> ChatSession | None:
        return await self._update(user_id, session_id, updated_at=now())

    async def deactivate(self, user_id: str, session_id: uuid.UUID) -> ChatSession | None:
        return await self._update(user_id, session_id, is_active=False, updated_at=now())

    async def list(
        self, user_id: str | None = None, *, active: bool | None = None
    ) -> builtins.list[ChatSession]:
        s = schema.chat_sessions
        stmt = sa.select(s).order_by(s.c.updated_at.desc())
        if user_id is not None:
            stmt = stmt.where(s.c.user_id == user_id)
        if active is not None:
            stmt = stmt.where(s.c.is_active == active)
        async with self.db.read(user_id) as conn:
            rows = await conn.execute(stmt)
        return [from_row(ChatSession, r) for r in rows]

    def _sweep_statement(self, idle_before: datetime, limit: int) -> sa.Update:
        """Deactivate one batch of idle sessions, in one statement.

        The batch is found through the partial index on ``updated_at`` of active
        sessions, oldest first. On PostgreSQL it starts where the previous batch
        of the same pass ended (see :meth:`_swept`), its rows are locked with
        ``FOR UPDATE SKIP LOCKED``, so concurrent sweepers take disjoint
        batches and none waits for another, and they are updated by ``ctid`` (a
        TID scan: the rows are locked, so they cannot move before the update);
        ``= ANY (ARRAY(...))`` keeps the planner from joining the whole table to
        the batch. SQLite serializes write transactions, so the subquery alone
        is enough there.
        """
        if limit < 1:
            raise InvalidInputError(f"a sweep batch must hold at least 1 session, not {limit}")
        s = schema.chat_sessions
        batch = (
            sa.select(s.c.id)
            .where(s.c.is_active, s.c.updated_at < idle_before)
            .order_by(s.c.updated_at)
            .limit(limit)
        )
        if self.db.dialect == "postgresql":
            if self._resume is not None and self._resume[0] == idle_before:
                batch = batch.where(s.c.updated_at >= self._resume[1])
            ctid: sa.ColumnElement[Any] = sa.literal_column("ctid")
            locked = batch.with_only_columns(ctid).with_for_update(skip_locked=True)
            chosen = ctid == sa.any_(sa.func.array(locked.scalar_subquery()))
        else:
            chosen = s.c.id.in_(batch.scalar_subquery())
        return s.update().where(chosen, s.c.is_active).values(is_active=False)

    def _swept(
        self, idle_before: datetime, limit: int, count: int, newest: datetime | None
    ) -> None:
        """Remember where this pass's batches have got to, so the next one starts there.

        A PostgreSQL update leaves the old row's entry in the partial index until
        vacuum: a batch that scanned from the start would step over every entry
        the pass's earlier batches left, and a pass of a million sessions would
        take twice as long. Any active session older than the mark was skipped
        because another transaction held it: another sweeper's (it deactivates
        it), a heartbeat's (no longer idle) or one that rolled back (left for
        the next pass, which starts from the beginning with its own cutoff). A
        short batch ends the pass: the next call starts from the beginning.
        SQLite updates its indexes in place, and compares the times it stores
        as text (a row written without microseconds would sort before the mark).
        """
        if self.db.dialect != "postgresql" or count < limit or newest is None:
            self._resume = None
            return
        if self._resume is not None and self._resume[0] == idle_before:
            newest = max(newest, self._resume[1])
        self._resume = (idle_before, newest)

    async def sweep(self, idle_before: datetime, *, limit: int) -> builtins.list[ChatSession]:
        stmt = self._sweep_statement(idle_before, limit).returning(schema.chat_sessions)
        async with self.db.write() as conn:
            rows = (await conn.execute(stmt)).all()
        self._swept(idle_before, limit, len(rows), max((r.updated_at for r in rows), default=None))
        return [from_row(ChatSession, r) for r in rows]

    async def sweep_ids(self, idle_before: datetime, *, limit: int) -> builtins.list[uuid.UUID]:
        s = schema.chat_sessions
        stmt = self._sweep_statement(idle_before, limit).returning(s.c.id, s.c.updated_at)
        async with self.db.write() as conn:
            rows = (await conn.execute(stmt)).all()
        self._swept(idle_before, limit, len(rows), max((r.updated_at for r in rows), default=None))
        return [r.id for r in rows]

    async def sweep_count(self, idle_before: datetime, *, limit: int) -> int:
        """:meth:`sweep`, answering only how many: one row back instead of a batch.

        On PostgreSQL the update is a data-modifying CTE and the statement returns
        the count and the newest ``updated_at`` (where the next batch starts);
        SQLite needs neither the rows nor the mark, only the update's row count.
        """
        s = schema.chat_sessions
        stmt = self._sweep_statement(idle_before, limit)
        async with self.db.write() as conn:
            if self.db.dialect == "postgresql":
                done = stmt.returning(s.c.updated_at).cte("swept")
                counted = sa.select(sa.func.count(), sa.func.max(done.c.updated_at))
                count, newest = (await conn.execute(counted)).one()
            else:
                count, newest = (await conn.execute(stmt)).rowcount, None
        self._swept(idle_before, limit, int(count), newest)
        return int(count)

    async def active_keys(self) -> set[tuple[str, str]]:
        s = schema.chat_sessions
        stmt = sa.select(s.c.user_id, s.c.agent_name).where(s.c.is_active).distinct()
        async with self.db.read() as conn:
            rows = await conn.execute(stmt)
        return {(r.user_id, r.agent_name) for r in rows}

    async def count_active(self) -> int:
        s = schema.chat_sessions
        async with self.db.read() as conn:
            count = await conn.scalar(
                sa.select(sa.func.count()).select_from(s).where(s.c.is_active)
            )
        return int(count or 0)

    async def chat_owner(self, chat_id: uuid.UUID) -> tuple[str, str] | None:
        async with self.db.read() as conn:
            return await self.owner(conn, chat_id)

    async def touch_chat(self, user_id: str, chat_id: uuid.UUID) -> int:
        async with self.db.write(user_id) as conn:
            return await touch_sessions(conn, user_id, chat_id)

    async def erase_user(self, user_id: str) -> int:
        # The storage's user_data erases sessions with the rest; this is the store alone.
        s = schema.chat_sessions
        async with self.db.write(user_id) as conn:
            result = await conn.execute(s.delete().where(s.c.user_id == user_id))
        return int(result.rowcount)

    async def delete_chat(self, user_id: str, chat_id: uuid.UUID) -> int:
        s = schema.chat_sessions
        async with self.db.write(user_id) as conn:
            result = await conn.execute(
                s.delete().where(s.c.user_id == user_id, s.c.chat_id == chat_id)
            )
        return int(result.rowcount)


async def touch_sessions(conn: AsyncConnection, user_id: str, chat_id: uuid.UUID) -> int:
    """Mark the user's active sessions of a chat as used now, on ``conn``."""
    result = await conn.execute(
        TOUCH, {"the_chat": chat_id, "the_user": user_id, "updated_at": now()}
    )
    return int(result.rowcount)


_s, _m = schema.chat_sessions, schema.chat_messages
# Built once (a turn runs them; see plugins/sql/turns.py on why).
TOUCH = (
    _s.update()
    .where(_s.c.chat_id == sa.bindparam("the_chat"), _s.c.user_id == sa.bindparam("the_user"))
    .where(_s.c.is_active)
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
