"""Chat sessions of the ``sql`` backend: ``chat_sessions``, the active ones also in
``active_sessions``.

Every statement about a user's session is made for that user (so that the
storage's user transactions apply), except the ones that must see across
users: whose a chat is, the sweeper, and the counts of active sessions.
"""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import exc
from sqlalchemy.ext.asyncio import AsyncConnection

from chatwright.errors import InvalidInputError, NotFoundError
from chatwright.plugins.sql import schema
from chatwright.plugins.sql.chats import touch_sessions
from chatwright.plugins.sql.errors import EXPECTED_WAITS, RowsHeld
from chatwright.plugins.sql.rows import from_mapping, from_row, now
from chatwright.plugins.sql.stores import BoundStore
from chatwright.plugins.sql.sweeps import sweep_statement, swept_sessions
from chatwright.stores import ChatSession

if TYPE_CHECKING:
    from chatwright.plugins.sql.storage import SQLStorage

_s, _a = schema.chat_sessions, schema.active_sessions
# A session with whether it is active: whether active_sessions holds its row.
SESSIONS: sa.Select[Any] = sa.select(
    *_s.c, _a.c.session_id.is_not(None).label("is_active")
).select_from(_s.outerjoin(_a, _a.c.session_id == _s.c.id))


def _session(row: sa.Row[Any], *, active: bool) -> ChatSession:
    return from_mapping(ChatSession, {**row._mapping, "is_active": active})


class SQLSessionStore(BoundStore):
    """Sessions in ``chat_sessions``, the active ones also in ``active_sessions``.

    Deactivating a session deletes its row of ``active_sessions`` (migration
    0009 says why); ``updated_at`` is written on ``chat_sessions``, and a
    trigger copies it to the active row, where the sweeper reads it. Opening a
    session inserts its active row as the framework, not the user (0010).
    """

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
                            client_key=client_key,
                            created_at=ts,
                            updated_at=ts,
                            metadata=dict(metadata or {}),
                        )
                        .returning(s)
                    )
                ).one()
                # The active row as the framework (users may not insert one, 0010), from
                # the session row the user's transaction has just inserted.
                await self.db.users.leave(conn)
                await conn.execute(
                    _a.insert().values(
                        session_id=row.id,
                        user_id=user_id,
                        agent_name=agent_name,
                        client_key=client_key,
                        updated_at=ts,
                    )
                )
                return _session(row, active=True)
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
        row = (
            await conn.execute(
                SESSIONS.where(
                    _a.c.user_id == user_id,
                    _a.c.agent_name == agent_name,
                    _a.c.client_key == client_key,
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
        async with self.db.read(user_id) as conn:
            return await self._get(conn, user_id, session_id)

    @staticmethod
    async def _get(
        conn: AsyncConnection, user_id: str, session_id: uuid.UUID
    ) -> ChatSession | None:
        stmt = SESSIONS.where(_s.c.id == session_id, _s.c.user_id == user_id)
        row = (await conn.execute(stmt)).first()
        return from_row(ChatSession, row) if row else None

    async def heartbeat(self, user_id: str, session_id: uuid.UUID) -> ChatSession | None:
        stmt = (
            _s.update()
            .where(_s.c.id == session_id, _s.c.user_id == user_id)
            .values(updated_at=now())
        )
        async with self.db.write(user_id) as conn:
            await conn.execute(stmt)
            return await self._get(conn, user_id, session_id)

    async def deactivate(self, user_id: str, session_id: uuid.UUID) -> ChatSession | None:
        found = await self.deactivate_once(user_id, session_id)
        return found[0] if found is not None else None

    async def deactivate_once(
        self, user_id: str, session_id: uuid.UUID
    ) -> tuple[ChatSession, bool] | None:
        """Deactivate; whether this call did is whether its delete found the active row
        (another call, or a sweeper, that deleted it first answers for it)."""
        # The session's row before its active row, as a heartbeat, the end of a turn
        # (the trigger) and deleting a chat (the cascade) take them: in the other
        # order, two of them at once would deadlock.
        async with self.db.write(user_id) as conn:
            row = (
                await conn.execute(
                    _s.update()
                    .where(_s.c.id == session_id, _s.c.user_id == user_id)
                    .values(updated_at=now())
                    .returning(_s)
                )
            ).first()
            if row is None:
                return None
            deleted = await conn.execute(
                _a.delete().where(_a.c.session_id == session_id, _a.c.user_id == user_id)
            )
        return _session(row, active=False), bool(deleted.rowcount)

    async def list(
        self, user_id: str | None = None, *, active: bool | None = None
    ) -> builtins.list[ChatSession]:
        stmt = SESSIONS.order_by(_s.c.updated_at.desc())
        if user_id is not None:
            stmt = stmt.where(_s.c.user_id == user_id)
        if active is not None:
            stmt = stmt.where(_a.c.session_id.is_not(None) if active else _a.c.session_id.is_(None))
        async with self.db.read(user_id) as conn:
            rows = await conn.execute(stmt)
        return [from_row(ChatSession, r) for r in rows]

    def _sweep_params(self, idle_before: datetime, limit: int) -> tuple[bool, dict[str, Any]]:
        """Whether the step starts at the pass's mark (see :meth:`_swept`), and the
        parameters of its statement (:func:`.sweeps.sweep_statement`)."""
        if limit < 1:
            raise InvalidInputError(f"a sweep batch must hold at least 1 session, not {limit}")
        params: dict[str, Any] = {"idle_before": idle_before, "batch": limit}
        resume = self._resume
        if self.db.dialect != "postgresql" or resume is None or resume[0] != idle_before:
            return False, params
        return True, {**params, "mark": resume[1]}

    def _swept(
        self, idle_before: datetime, limit: int, count: int, newest: datetime | None
    ) -> None:
        """Remember where this pass's batches have got to, so the next one starts there.

        A PostgreSQL delete leaves the row's entry in the index until vacuum: a
        batch that scanned from the start would step over every entry the
        pass's earlier batches left, and a pass of a million sessions would take
        twice as long. Any active session older than the mark was skipped
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

    def _step(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """The transaction of one statement of a sweep step. On PostgreSQL it runs
        by itself, without ``BEGIN`` and ``COMMIT``, when nothing has to be set
        for the connecting role first: one round trip a batch instead of three."""
        if self.db.dialect == "postgresql":
            return self.db.inline_write(one_statement=True)
        return self.db.write()

    async def _pg_step(self, answer: str, resume: bool, params: dict[str, Any]) -> Sequence[Any]:
        """PostgreSQL: one sweep step's rows (see :func:`.sweeps.sweep_statement`).

        The step first deletes its batch without locking its rows, if no other
        process's sweeper is doing so now (their advisory lock), giving up when
        it would wait longer than :data:`.sweeps.SWEEP_LOCK_WAIT` for a row
        another transaction holds (a heartbeat or a turn's end touching the
        session, a client closing it, another sweeper's batch): it is then
        cancelled with nothing done, as it is when the server ends a deadlock
        with it. Only when that took nothing is the batch taken the way that
        never waits for a row: rows locked first, ``FOR UPDATE SKIP LOCKED``.
        So a step's answer is one statement's, atomic: a session it deleted is
        in its answer, whatever happens to a statement after it. Sweepers of
        several processes all take batches at once, each session in one batch
        only, and the end of a pass costs one more statement.
        """
        expected = EXPECTED_WAITS.set(True)
        try:
            async with self._step() as conn:
                rows = (await conn.execute(sweep_statement(True, resume, answer), params)).all()
        except RowsHeld:
            rows = []  # nothing of it was done (its lock_timeout ran out, or a deadlock)
        finally:
            EXPECTED_WAITS.reset(expected)
        taken = (rows[0][0] if answer == "count" else len(rows)) if rows else 0
        if taken:
            return rows
        stmt = sweep_statement(True, resume, answer, skip_locked=True)
        async with self._step() as conn:
            return (await conn.execute(stmt, params)).all()

    async def sweep(self, idle_before: datetime, *, limit: int) -> builtins.list[ChatSession]:
        resume, params = self._sweep_params(idle_before, limit)
        if self.db.dialect == "postgresql":
            rows = await self._pg_step("rows", resume, params)
            newest = max((r.mark for r in rows), default=None)
        else:
            async with self._step() as conn:
                # Write transactions are serialized: the batch read is the batch deleted.
                rows = (await conn.execute(swept_sessions(), params)).all()
                await conn.execute(sweep_statement(False, False, ""), params)
            newest = None
        self._swept(idle_before, limit, len(rows), newest)
        return [_session(r, active=False) for r in sorted(rows, key=lambda r: r.updated_at)]

    async def sweep_ids(self, idle_before: datetime, *, limit: int) -> builtins.list[uuid.UUID]:
        resume, params = self._sweep_params(idle_before, limit)
        if self.db.dialect == "postgresql":
            rows = await self._pg_step("ids", resume, params)
        else:
            async with self._step() as conn:
                rows = (await conn.execute(sweep_statement(False, False, "ids"), params)).all()
        self._swept(idle_before, limit, len(rows), max((r.updated_at for r in rows), default=None))
        return [r.session_id for r in rows]

    async def sweep_count(self, idle_before: datetime, *, limit: int) -> int:
        """:meth:`sweep`, answering only how many: one row back instead of a batch.

        On PostgreSQL the delete is a data-modifying CTE and the statement returns
        the count and the newest ``updated_at`` (where the next batch starts);
        SQLite needs neither the rows nor the mark, only the delete's row count.
        """
        resume, params = self._sweep_params(idle_before, limit)
        if self.db.dialect == "postgresql":
            ((count, newest),) = await self._pg_step("count", resume, params)
        else:
            async with self._step() as conn:
                stmt = sweep_statement(False, False, "")
                count, newest = (await conn.execute(stmt, params)).rowcount, None
        self._swept(idle_before, limit, int(count), newest)
        return int(count)

    async def active_keys(self) -> set[tuple[str, str]]:
        stmt = sa.select(_a.c.user_id, _a.c.agent_name).distinct()
        async with self.db.read() as conn:
            rows = await conn.execute(stmt)
        return {(r.user_id, r.agent_name) for r in rows}

    async def count_active(self) -> int:
        async with self.db.read() as conn:
            count = await conn.scalar(sa.select(sa.func.count()).select_from(_a))
        return int(count or 0)

    async def chat_owner(self, chat_id: uuid.UUID) -> tuple[str, str] | None:
        async with self.db.read() as conn:
            return await self.owner(conn, chat_id)

    async def touch_chat(self, user_id: str, chat_id: uuid.UUID) -> int:
        async with self.db.write(user_id) as conn:
            return await touch_sessions(conn, user_id, chat_id)

    async def erase_user(self, user_id: str) -> int:
        # The storage's user_data erases sessions with the rest; this is the store alone.
        # Each session's active row goes with it (the foreign key cascades).
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
