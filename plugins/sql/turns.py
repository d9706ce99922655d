"""A chat turn in two transactions, and the chat leases that serialise turns across processes.

:meth:`SQLTurnStore.begin` runs, in one write transaction: the framework
statements (the agent row with its config version; taking the chat's lease),
then, as the user (the storage's user transactions apply), the owner check,
memory, customizations and whether the chat has actions awaiting a decision
(one statement), the history window (only the messages newer than the window
the chat's previous turn read, when nothing else changed: :mod:`.windows`) and
the human message. A human message
to a chat with pending actions is refused there, before anything is stored; a
turn begun without a message (to resume after a decision) gets those actions.
:meth:`SQLTurnStore.finish` appends what the turn produced since its last
complete tool exchange (each of which :meth:`SQLTurnStore.append` stored as it
completed) in one multi-row insert, touches the chat's sessions and gives the
lease back, again in one transaction, with the tool calls the turn stopped
at (pending actions), if any: a cached turn with one round of tool
calls takes three transactions besides the tools' own.

On PostgreSQL each statement costs the server process a round trip and
SQLAlchemy's and psycopg's work around it, so the same steps are fewer
statements there (:mod:`.turn_statements`; data-modifying CTEs): ``begin``
is two, the agent's version with taking the lease, then the user's reads
with the window and storing the human message (when the lease was taken; a
refusal rolls it back). They stay two: a statement sees the database as it
was when it started, and the reads must see what the chat's previous turn
stored, which a statement begun before its lease was given back would not.
``finish`` is one (giving the lease back, the usage, the messages, the
touch), or, when the storage's user transactions do something for a user
(row-level security), the framework's part and then the user's. SQLite,
whose statements run in the loop's thread without a trip, reads the window
with the user's other reads too (one statement fewer), and keeps a
statement for each of the other steps.

A lease is a row of ``chat_leases``: the chat, a holder token and an expiry
(``storage.turn_lease`` seconds). Taking it is one ``INSERT … ON CONFLICT DO
UPDATE … WHERE expires_at < now`` that returns the row only when the chat was
free or its lease had expired, so it needs no connection of its own and works
through a transaction pooler. While the lease is held, a task renews it every
third of its length; a process that dies stops renewing, and its lease is
taken over once it expires; a turn that could not give its lease back (the
database went away) retries in the background until it can, and so does a start
that failed without a clear answer (cancelled, out of time, its connection lost
while it committed), since it may have taken the lease all the same. A turn that
finds the lease held rolls back and tries again after a short, growing pause
(10 ms up to 250 ms), for at most ``storage.turn_wait`` seconds
(:class:`~chatwright.errors.ChatBusyError`). A turn stores a tool exchange
and its end only while it still holds its lease: one whose process stalled past
the lease, while the chat was taken over (by another turn, an erasure, the
chat's deletion), stores nothing more (:class:`LeaseLostError`).
Turns of one chat in one process never get that far: the runtime queues them
on an asyncio lock first (for at most ``storage.turn_wait`` too). The
application clock is the one compared, so the clocks of processes sharing a
database should agree to well within a lease.

With a budget, ``begin`` also checks the user's token budgets and holds a
reservation, and ``finish`` records the turn's usage and the chat's summary
(:mod:`.budgets`), in the same two transactions.

Longer than 450 lines because a turn's transactions and the leases that
serialise them are one mechanism, read together.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from chatwright.approvals import AuditEntry, NewPending, PendingAction
from chatwright.errors import (
    AgentChangedError,
    ChatBusyError,
    InterruptedCallsError,
    StorageError,
    UnknownAgentError,
    UnrecordedWritesError,
)
from chatwright.plugins.sql import schema
from chatwright.plugins.sql.audit import unrecorded_writes
from chatwright.plugins.sql.budgets import (
    UsageWrites,
    check_budget,
    record_usage,
    summary_of,
    upsert_summary,
    usage_writes,
)
from chatwright.plugins.sql.chats import insert_messages, touch_sessions
from chatwright.plugins.sql.pending import insert_pending, pending_from_row
from chatwright.plugins.sql.rows import from_row, message_content, now
from chatwright.plugins.sql.stores import BoundStore
from chatwright.plugins.sql.turn_statements import (
    GIVE_BACK,
    HELD,
    LEASE_LOST,
    MOST_FUSED_MESSAGES,
    WINDOW_TEXT,
    WINDOW_UPTO,
    agent_statement,
    finish_statement,
    held_actions,
    held_as_started,
    held_for_write,
    prompt_statement,
    start_statement,
    take_lease,
)
from chatwright.plugins.sql.user_transactions import UserTransactions
from chatwright.plugins.sql.windows import Windows
from chatwright.stores import (
    KEPT_CHARS,
    Agent,
    ChatSummary,
    Message,
    NewMessage,
    NewSummary,
    message_weight,
)
from chatwright.turns import (
    TurnStart,
    approval_pending,
    holding_turn,
    not_your_chat,
    pause_for_chat,
    stopped_short,
)
from chatwright.usage import BudgetLimits, TurnUsage

if TYPE_CHECKING:
    from chatwright.plugins.sql.storage import SQLStorage

log = logging.getLogger(__name__)

FIRST_PAUSE = 0.01
LONGEST_PAUSE = 0.25
LOST_ANSWER_PAUSE = 1.0
"""Longest pause between the give-backs of a lease a failed start may have taken."""
KNOWN_AGENTS = 1024
"""Most agent rows a turn store keeps, to skip reading an unchanged row again."""
KNOWN_MESSAGES = 2048
"""Most window messages a turn store keeps (see ``SQLTurnStore._message``)."""


def _enters_nothing(users: UserTransactions) -> bool:
    """Whether ``users.enter`` is the default's, which does nothing: a statement may then
    mix framework and user tables."""
    return type(users).enter is UserTransactions.enter


def _user_values(
    start: TurnStart, messages: Sequence[NewMessage], *, touch: bool
) -> dict[str, Any]:
    """The parameters of :func:`.turn_statements.finish_statement`'s user part."""
    values: dict[str, Any] = {"the_chat": start.chat_id, "the_user": start.user_id}
    ts = now()
    for i, message in enumerate(messages):
        values[f"role_{i}"] = message.role
        values[f"content_{i}"] = dict(message.content)
        values[f"created_at_{i}"] = message.created_at or ts
    if touch:
        values["updated_at"] = ts
    return values


class _Busy(Exception):
    """The chat's lease is held: roll back and try again."""


class LeaseLostError(ChatBusyError):
    """A turn outlived its chat's lease, and the chat was taken over meanwhile (by another
    turn, an erasure or the chat's deletion): what it produced was not stored."""


def _lease_lost(start: TurnStart, turn_lease: float) -> LeaseLostError:
    return LeaseLostError(
        f"the turn of chat {start.chat_id} lost the chat's turn: it was not renewed for "
        f"over storage.turn_lease ({turn_lease:g} s), and the chat was taken over meanwhile "
        "(by another turn, or erased or deleted); what the turn made after its last stored "
        "step was not stored"
    )


@contextlib.contextmanager
def _kept_lease(start: TurnStart, turn_lease: float) -> Iterator[None]:
    """Turn a :func:`.turn_statements.finish_statement` that found its lease gone into
    :class:`LeaseLostError` (the statement stored nothing)."""
    try:
        yield
    except sa.exc.DBAPIError as error:
        if getattr(error.orig, "sqlstate", None) == LEASE_LOST:
            raise _lease_lost(start, turn_lease) from None
        raise


@dataclass
class Lease:
    """A chat's lease held by this process: its holder token and the task renewing it."""

    chat_id: uuid.UUID
    holder: str
    renewal: asyncio.Task[None] | None = field(default=None, repr=False)
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)
    """Until the renewal starts: when it does."""
    reserved: bool = False
    """Whether the turn holds a budget reservation (``finish`` drops it)."""
    trying: bool = False
    """Whether a transaction that may take the lease is under way (see ``_taken``)."""
    db: Any = field(default=None, repr=False)
    """The storage whose ``chat_leases`` holds it (a turn's, see :func:`check_held`)."""
    agent: tuple[Any, ...] | None = None
    """The turn's agent as it started (row id, creation time, change counter): a tool
    acts only while the agent is so (see :func:`check_held`)."""
    revision: int | None = None
    """The revision of the chat's messages as the turn started (see :mod:`.windows`):
    kept with its writes' audit entries (``chat_revision``)."""

    async def ensure_held(self, user_id: str) -> None:
        """For a tool about to act outside the database (``chatwright.turns.ensure_held``):
        :class:`LeaseLostError` once the turn running it no longer holds its chat, read
        in a transaction of its own."""
        if self.db is None:
            return
        # As the framework: chat_leases is closed to the users' roles (row-level security).
        async with self.db.read() as conn:
            await check_held(conn, self.db, user_id, before="a tool's call", lock=False)


async def check_held(
    conn: AsyncConnection,
    db: Any,
    user_id: str,
    *,
    before: str = "a tool's write",
    lock: bool = True,
    as_started: bool = True,
) -> None:
    """Refuse a tool's write, made on ``conn`` in its transaction before anything else,
    once the turn it is made for (``chatwright.turns.holding_turn``) no longer holds its
    chat in ``db``: :class:`LeaseLostError`, and the transaction writes nothing.

    The turn's lease must still be its holder's, as for the turn's own end (one that
    expired unnoticed but was not taken over is still the turn's); on PostgreSQL it
    stays locked until the write commits, so that taking it over (a turn, an erasure,
    a chat's deletion) waits for the write and, for a deletion, deletes it too.
    Outside a turn (the CLI, an undo), or for another user's write, there is nothing
    to check. Without ``lock``, the lease is only read (:meth:`Lease.ensure_held`).

    With ``as_started``, the turn's agent must also be as the turn started: a change
    of the agent or of one of its tool rows made meanwhile (an approval made required,
    a row disabled or removed, the agent deleted), in this process or another, refuses
    the call with :class:`~chatwright.errors.AgentChangedError`, which the model reads.
    """
    start = holding_turn.get()
    lease = getattr(start, "lease", None)
    if start is None or not isinstance(lease, Lease) or lease.db is not db:
        return
    if start.user_id != user_id:
        return
    values: dict[str, Any] = {"chat_id": lease.chat_id, "holder": lease.holder}
    as_started = as_started and lease.agent is not None
    if as_started:
        assert lease.agent is not None
        values["agent_id"], values["agent_created"], values["agent_counter"] = lease.agent
    if as_started:
        statement = held_as_started(db.dialect, lock=lock)
    else:
        statement = held_for_write(db.dialect) if lock else HELD
    held = (await conn.execute(statement, values)).first()
    if held is None:
        raise LeaseLostError(
            f"the turn of chat {start.chat_id} lost the chat's turn before {before}: "
            f"its lease was not renewed for over storage.turn_lease ({db.turn_lease:g} s), "
            "and the chat was taken over meanwhile (by another turn, or erased or deleted); "
            f"{'the write was not made' if lock else 'the call was not made'}"
        )
    if as_started and not held.same_agent:
        raise AgentChangedError(
            f"not run: agent {start.agent_name!r} or one of its tools was changed while "
            "this turn ran (an approval, a tool row enabled, disabled, edited or removed, "
            "or the agent itself); nothing was written. The next message runs with the "
            "agent as it is now"
        )


class SQLTurnStore(BoundStore):
    def __init__(self, db: SQLStorage) -> None:
        super().__init__(db)
        self._pending: set[asyncio.Task[None]] = set()
        self._messages: OrderedDict[int, tuple[tuple[Any, ...], Message, int]] = OrderedDict()
        self._message_chars = 0
        """What the kept messages weigh together (see ``_message``)."""
        self._read_time: Any = None
        self._agents: dict[str, tuple[tuple[Any, ...], Agent]] = {}
        self._windows = Windows()

    # -- leases ----------------------------------------------------------------

    async def _take(self, conn: AsyncConnection, chat_id: uuid.UUID, holder: str) -> bool:
        """Take the chat's lease on ``conn`` when it is free or expired."""
        at = now()
        values = {"chat_id": chat_id, "holder": holder, "expires_at": at + self._length(), "at": at}
        return (await conn.execute(take_lease(self.db.dialect), values)).first() is not None

    @staticmethod
    async def _give_back(conn: AsyncConnection, lease: Lease) -> bool:
        """Delete the lease when ``lease``'s holder has it; whether it did."""
        result = await conn.execute(GIVE_BACK, {"chat_id": lease.chat_id, "holder": lease.holder})
        return bool(result.rowcount)

    def _length(self) -> timedelta:
        return timedelta(seconds=self.db.turn_lease)

    async def _renew(self, lease: Lease) -> None:
        """Push the lease's expiry forward now and every third of its length, until
        cancelled."""
        leases = schema.chat_leases
        while True:
            try:
                async with self.db.inline_write(one_statement=True) as conn:
                    result = await conn.execute(
                        leases.update()
                        .where(leases.c.chat_id == lease.chat_id, leases.c.holder == lease.holder)
                        .values(expires_at=now() + self._length())
                    )
            except StorageError as exc:
                log.warning("chat %s: its turn lease was not renewed: %s", lease.chat_id, exc)
            else:
                if not result.rowcount:
                    log.warning(
                        "chat %s: its turn lease expired and was taken over while the turn ran",
                        lease.chat_id,
                    )
                    return
            await asyncio.sleep(self.db.turn_lease / 3)

    def _hold(self, lease: Lease) -> Lease:
        """Keep the lease while the turn runs: a turn that outlives a third of it gets
        a task that renews it (most turns end before, and cost no task)."""
        loop = asyncio.get_running_loop()
        lease.timer = loop.call_later(self.db.turn_lease / 3, self._renewing, lease)
        return lease

    def _renewing(self, lease: Lease) -> None:
        lease.timer = None
        lease.renewal = asyncio.get_running_loop().create_task(
            self._renew(lease), name=f"lease {lease.chat_id}"
        )

    @staticmethod
    async def _stop(lease: Lease) -> None:
        if lease.timer is not None:
            lease.timer.cancel()
            lease.timer = None
        if lease.renewal is not None:
            lease.renewal.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await lease.renewal

    async def _waiting(self, lease: Lease, attempt: Any) -> Any:
        """Run ``attempt()`` until it gets past a held lease, or give up after turn_wait.

        ``lease.trying`` is true while an attempt runs, and when it failed otherwise than
        by finding the lease held."""
        chat_id = lease.chat_id
        pause = FIRST_PAUSE
        deadline = time.monotonic() + self.db.turn_wait
        while True:
            try:
                lease.trying = True
                made = await attempt()
                lease.trying = False
                return made
            except _Busy:
                # Rolled back: this attempt took nothing.
                lease.trying = False
                if time.monotonic() + pause > deadline:
                    raise ChatBusyError(
                        f"another turn of chat {chat_id} has been running for over "
                        f"{self.db.turn_wait:g} s; try again when it has finished"
                    ) from None
                await pause_for_chat(pause)  # a stopping server ends it
                pause = min(pause * 2, LONGEST_PAUSE)

    async def _taken(self, lease: Lease, attempt: Any) -> Any:
        """Run ``attempt`` (a transaction taking ``lease``) until it gets past a held lease
        (:meth:`_waiting`), then hold the lease for the turn. When it fails without a clear
        answer (cancelled, out of time, its connection lost), its COMMIT may have reached
        the database all the same: see :meth:`_lost_answer`. Cut off while it paused
        between attempts, it has taken nothing and has nothing to give back."""
        try:
            made = await self._waiting(lease, attempt)
        except (asyncio.CancelledError, TimeoutError, StorageError):
            if lease.trying:
                self._lost_answer(lease)
            raise
        self._hold(lease)
        return made

    @asynccontextmanager
    async def lock(self, chat_id: uuid.UUID) -> AsyncIterator[None]:
        """The chat's lease held for a block, in transactions of its own (``chat_lock``)."""
        lease = Lease(chat_id, uuid.uuid4().hex)

        async def attempt() -> None:
            async with self.db.inline_write() as conn:
                if not await self._take(conn, chat_id, lease.holder):
                    raise _Busy

        await self._taken(lease, attempt)
        try:
            yield
        finally:
            await self._stop(lease)
            async with self.db.inline_write(one_statement=True) as conn:
                await self._give_back(conn, lease)

    # -- turns -------------------------------------------------------------------

    async def _agent(self, conn: AsyncConnection, name: str, version: Any) -> Agent:
        """The agent row whose id, creation time and change counter ``version`` has.

        The database bumps the counter on every change of the row or of its tool
        rows (migration 0004's triggers), so a row read before with the same three
        is the row as it is now, and a turn reads its whole row (``model_settings``
        can be large) only when it changed.
        """
        key = (version.id, version.created_at, version.config_version)
        known = self._agents.get(name)
        if known is not None and known[0] == key:
            return known[1]
        a = schema.agents
        row = (await conn.execute(sa.select(a).where(a.c.id == version.id))).one()
        agent = from_row(Agent, row)
        if name not in self._agents and len(self._agents) >= KNOWN_AGENTS:
            self._agents.pop(next(iter(self._agents)))
        self._agents[name] = (key, agent)
        return agent

    async def _start(
        self, conn: AsyncConnection, given: dict[str, Any], *, budget: bool, lock: bool
    ) -> tuple[Any, bool]:
        """The agent's row (:func:`.turn_statements.agent_statement`; None when there is no
        such agent) and whether the chat's lease was taken for ``given["holder"]``.

        On PostgreSQL both in one statement (:func:`.turn_statements.start_statement`).
        """
        if self.db.dialect != "postgresql":
            read_agent = agent_statement(self.db.dialect, budget=budget, lock=lock)
            row = (await conn.execute(read_agent, given)).first()
            if row is None:
                return None, False
            return row, await self._take(conn, given["chat_id"], given["holder"])
        at = now()
        values = {**given, "expires_at": at + self._length(), "at": at}
        stmt = start_statement(budget=budget, lock=lock)
        row = (await conn.execute(stmt, values)).first()
        return row, bool(row is not None and row.taken)

    async def begin(
        self,
        user_id: str,
        agent_name: str,
        chat_id: uuid.UUID,
        message: NewMessage | None,
        *,
        check_owner: bool = True,
        turn_id: uuid.UUID | None = None,
        budget: BudgetLimits | None = None,
    ) -> TurnStart:
        lease = Lease(chat_id, uuid.uuid4().hex, db=self.db)
        dialect = self.db.dialect
        # The user's budget override is read with the agent row; when a budget
        # setting applies, the user's budget lock is taken by that statement too.
        checked = budget if turn_id is not None else None
        limited = checked is not None and (checked.daily, checked.monthly) != (None, None)
        locked = limited and dialect == "postgresql"
        given = {
            "agent_name": agent_name,
            "user_id": user_id,
            "chat_id": chat_id,
            "holder": lease.holder,
        }

        async def attempt() -> TurnStart:
            unrecorded: list[AuditEntry] = []
            # Framework statements first, then the rest as the user.
            async with self.db.inline_write() as conn:
                row, taken = await self._start(conn, given, budget=checked is not None, lock=locked)
                if row is None:
                    self._agents.pop(agent_name, None)
                    raise UnknownAgentError(agent_name)
                agent = await self._agent(conn, agent_name, row)
                lease.agent = (row.id, row.created_at, row.config_version)
                lease.revision = row.revision
                if checked is not None and turn_id is not None:
                    # Refused: rolled back with the lease, nothing of this turn stored.
                    lease.reserved = await check_budget(
                        conn,
                        dialect,
                        user_id,
                        turn_id,
                        checked.for_agent(agent.turn_timeout),
                        row.budget_daily,
                        row.budget_monthly,
                        locked=locked,
                    )
                await self.db.users.enter(conn, user_id)
                if not taken and not check_owner:
                    raise _Busy
                # The window comes with the rest and, on PostgreSQL, the human message is
                # stored by the same statement (rolled back below when the turn is refused).
                # Only the messages after the window kept from the chat's last turn are
                # read, when there is one (see .windows).
                fused = dialect == "postgresql"
                key, revision = (chat_id, user_id), row.revision
                first, after = self._windows.span(key, revision)
                read = await self._owner_and_prompt(
                    conn,
                    user_id,
                    agent_name,
                    chat_id,
                    check_owner=check_owner,
                    summary=agent.summarize,
                    window=(agent.history_window, first, after),
                    human=(message, taken) if fused else None,
                )
                owner, memory, instructions, waiting, summary, newer, spanned = read
                # Not found before busy: another user's chat must not answer
                # differently while it has a turn running.
                if check_owner and owner != (user_id, agent_name):
                    raise not_your_chat(chat_id, agent_name)
                if not taken:
                    raise _Busy
                found = await self._waiting_actions(conn, user_id, chat_id) if waiting else []
                pending = [a for a in found if a.status == "pending"]
                # Approved, while this turn holds the chat: their process stopped.
                interrupted = [a for a in found if a.status == "approved"]
                if message is not None and interrupted:
                    # Rolled back with the lease: ended first, then the turn runs again.
                    raise InterruptedCallsError(list(interrupted))
                if message is not None and pending:
                    # Rolled back with the lease: nothing of this turn is stored.
                    raise approval_pending(pending)
                limit = agent.history_window
                history = self._windows.window(key, revision, after, newer, limit, spanned)
                if history is None:
                    # Up to what the first read saw: not the human message stored since.
                    upto = max(after, newer[-1].id if newer else 0)
                    newer = await self._window(conn, user_id, chat_id, limit, upto)
                    history = self._windows.window(key, revision, 0, newer, limit, 0) or []
                # A turn that stopped between a write and the storing of its call left
                # the write out of the chat: found (rarely) only when the newest message
                # is not a reply, and stored before the new message.
                last = stopped_short(history)
                if last is not None:
                    unrecorded = await unrecorded_writes(
                        conn, user_id, chat_id, last.id, row.revision
                    )
                    if message is not None and unrecorded:
                        # Rolled back with the lease: nothing of this turn is stored.
                        raise UnrecordedWritesError(list(unrecorded))
                if not fused and message is not None:
                    await insert_messages(conn, user_id, chat_id, [message], returning=False)
            return TurnStart(
                user_id,
                agent_name,
                chat_id,
                agent,
                history,
                memory,
                instructions,
                lease=lease,
                pending=pending,
                interrupted=interrupted,
                summary=summary,
                turn_id=turn_id,
                unrecorded=unrecorded,
            )

        start: TurnStart = await self._taken(lease, attempt)
        return start

    async def append(self, start: TurnStart, messages: Sequence[NewMessage]) -> None:
        """Store them while the turn still holds the chat's lease (:class:`LeaseLostError`
        otherwise, nothing stored)."""
        lease: Lease = start.lease
        fused = self.db.dialect == "postgresql" and 0 < len(messages) <= MOST_FUSED_MESSAGES
        if fused and _enters_nothing(self.db.users):
            # One INSERT of every row, failing when the lease is not the turn's: atomic
            # by itself, so it needs no transaction around it.
            stmt = finish_statement(
                give_back=False,
                usage=(False, False, False),
                messages=len(messages),
                touch=False,
                held=True,
            )
            values = {**_user_values(start, messages, touch=False), "holder": lease.holder}
            async with self.db.inline_write(start.user_id, one_statement=True) as conn:
                with _kept_lease(start, self.db.turn_lease):
                    await conn.execute(stmt, values)
            return
        async with self.db.inline_write() as conn:
            # The lease first (a framework table), then the rest as the user.
            held = await conn.execute(HELD, {"chat_id": start.chat_id, "holder": lease.holder})
            if held.first() is None:
                raise _lease_lost(start, self.db.turn_lease)
            await self.db.users.enter(conn, start.user_id)
            await insert_messages(conn, start.user_id, start.chat_id, messages, returning=False)

    async def finish(
        self,
        start: TurnStart,
        messages: Sequence[NewMessage],
        *,
        touch: bool,
        pending: Sequence[NewPending] = (),
        usage: TurnUsage | None = None,
        summary: NewSummary | None = None,
    ) -> list[PendingAction]:
        lease: Lease = start.lease
        await self._stop(lease)
        fused = self.db.dialect == "postgresql" and len(messages) <= MOST_FUSED_MESSAGES
        # Fused, without pending actions or a summary, and with nothing for users.enter
        # to do, the finish is one statement (see _end).
        alone = fused and not pending and summary is None and _enters_nothing(self.db.users)
        try:
            async with self.db.inline_write(one_statement=alone) as conn:
                if fused:
                    await self._end(conn, start, messages, touch=touch, usage=usage)
                else:
                    if not await self._give_back(conn, lease):
                        raise _lease_lost(start, self.db.turn_lease)
                    if lease.reserved or usage is not None:
                        # Framework tables, before the user part.
                        await record_usage(
                            conn,
                            self.db.dialect,
                            start.user_id,
                            start.agent_name,
                            start.chat_id,
                            start.turn_id,
                            usage,
                            reserved=lease.reserved,
                        )
                    await self.db.users.enter(conn, start.user_id)
                    await insert_messages(
                        conn, start.user_id, start.chat_id, messages, returning=False
                    )
                    if touch:
                        await touch_sessions(conn, start.user_id, start.chat_id)
                if summary is not None:
                    await upsert_summary(
                        conn, self.db.dialect, start.user_id, start.chat_id, summary
                    )
                # With the messages: a stopped turn's calls and its history stand or fall together.
                return await insert_pending(
                    conn, start.user_id, start.agent_name, start.chat_id, pending
                )
        except BaseException:
            # Nothing was stored, and the lease must not stay held until it expires:
            # give it back alone, now or, when the database is away, once it is back.
            self._give_back_later(lease)
            raise

    async def _end(
        self,
        conn: AsyncConnection,
        start: TurnStart,
        messages: Sequence[NewMessage],
        *,
        touch: bool,
        usage: TurnUsage | None,
    ) -> None:
        """PostgreSQL: give the lease back, record the usage, store the messages and
        touch the sessions, in one statement (:func:`.turn_statements.finish_statement`).

        When the storage's user transactions do something for a user (row-level
        security), the framework's part comes first and the user's part is a
        second statement, after ``users.enter``.
        """
        lease: Lease = start.lease
        user_id, chat_id = start.user_id, start.chat_id
        writes = UsageWrites(None, None, None)
        if lease.reserved or usage is not None:
            writes = usage_writes(
                user_id, start.agent_name, chat_id, start.turn_id, usage, reserved=lease.reserved
            )
        framework: dict[str, Any] = {"the_chat": chat_id, "holder": lease.holder}
        framework.update(writes.drop or {})
        framework.update({f"usage_{k}": v for k, v in (writes.record or {}).items()})
        if writes.totals is not None:
            framework.update(writes.totals, the_user=user_id)
            del framework["user_id"]
        user = _user_values(start, messages, touch=touch)
        if _enters_nothing(self.db.users):
            stmt = finish_statement(
                give_back=True, usage=writes.shape, messages=len(messages), touch=touch
            )
            with _kept_lease(start, self.db.turn_lease):
                await conn.execute(stmt, {**framework, **user})
            return
        stmt = finish_statement(give_back=True, usage=writes.shape, messages=0, touch=False)
        with _kept_lease(start, self.db.turn_lease):
            await conn.execute(stmt, framework)
        await self.db.users.enter(conn, user_id)
        if messages or touch:
            stmt = finish_statement(
                give_back=False, usage=(False, False, False), messages=len(messages), touch=touch
            )
            await conn.execute(stmt, user)

    def _lost_answer(self, lease: Lease) -> None:
        """A transaction taking ``lease`` failed without a clear answer (cancelled, out of
        time, the connection lost): its COMMIT may have reached the database all the same,
        and then the lease is held for no turn until it expires. Give it back in the
        background, until a give-back finds it or it would have expired: the COMMIT may
        still be under way on the server (when the cancellation did not reach it), and the
        statement names this turn's holder, so it does nothing to anyone else's lease.
        (SQLite's transactions end in this process: once one has failed, it is over.)"""
        self._give_back_later(lease, until_found=self.db.dialect == "postgresql")

    def _give_back_later(self, lease: Lease, *, until_found: bool = False) -> None:
        task = asyncio.get_running_loop().create_task(self._retry_give_back(lease, until_found))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _retry_give_back(self, lease: Lease, until_found: bool = False) -> None:
        """Give a lease back, retrying while the database is away, until it has expired;
        with ``until_found``, also while there was no lease of this holder to give back."""
        expiry = time.monotonic() + self.db.turn_lease
        pause = FIRST_PAUSE
        while time.monotonic() < expiry:
            try:
                async with self.db.inline_write(one_statement=True) as conn:
                    found = await self._give_back(conn, lease)
                if found or not until_found:
                    return
            except StorageError:
                pass
            await asyncio.sleep(pause)
            pause = min(pause * 2, LOST_ANSWER_PAUSE)
        # Expired by now: whoever comes next takes it over.

    async def close(self) -> None:
        """Stop giving leases back (the storage is closing; they expire by themselves)."""
        for task in list(self._pending):
            task.cancel()
        for task in list(self._pending):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _window(
        self, conn: AsyncConnection, user_id: str, chat_id: uuid.UUID, limit: int, upto: int
    ) -> list[Message]:
        """The chat's last ``limit`` messages of the user, oldest first, read whole when
        the kept window could not be built on; on PostgreSQL only those up to message
        ``upto``, which the turn's first read saw (see ``begin``)."""
        values = {"chat_id": chat_id, "user_id": user_id, "limit": limit, "after": 0}
        sqlite = self.db.dialect != "postgresql"
        if not sqlite:
            values["upto"] = upto
        rows = (await conn.execute(WINDOW_TEXT if sqlite else WINDOW_UPTO, values)).all()
        return [
            self._message(message_id, chat_id, user_id, role, raw, at, stored_time=sqlite)
            for message_id, role, raw, at in reversed(rows)
        ]

    def _message(
        self,
        message_id: int,
        chat_id: uuid.UUID,
        user_id: str,
        role: str,
        raw: str | None,
        at: Any,
        *,
        stored_time: bool,
    ) -> Message:
        """A window's message from its row: ``raw``, the content's stored text; ``at``,
        the time as read, or (``stored_time``, SQLite) as stored, converted here.

        Every turn reads its window again, most of it the messages of the turns
        before: the last ``KNOWN_MESSAGES`` made are kept by id with what they were
        made from (role, content text, time), and one is reused only when the row
        read now has the same (decoding the content, or converting a stored time,
        costs more than reading the row). The kept messages' content texts hold at
        most :data:`~chatwright.stores.KEPT_CHARS` characters together.
        """
        known = self._messages
        kept = known.get(message_id)
        if kept is not None and kept[0] == (role, raw, at):
            made = kept[1]
            if made.chat_id == chat_id and made.user_id == user_id:
                known.move_to_end(message_id)
                return made
        content = message_content(schema.decode_json(raw))
        made = Message(
            message_id, chat_id, user_id, role, content, self._time(at) if stored_time else at
        )
        weight = len(raw) if isinstance(raw, str) else message_weight(content)
        if kept is not None:
            self._message_chars -= known.pop(message_id)[2]
        if weight > KEPT_CHARS:
            return made  # heavier than all that is kept: kept not, nor lets others go
        known[message_id] = ((role, raw, at), made, weight)
        self._message_chars += weight
        while known and (len(known) > KNOWN_MESSAGES or self._message_chars > KEPT_CHARS):
            self._message_chars -= known.popitem(last=False)[1][2]
        return made

    def _time(self, stored: Any) -> Any:
        """A time as the database stored it, as its column reads it (``created_at``)."""
        if self._read_time is None:
            dialect = self.db.engine.dialect
            column = schema.chat_messages.c.created_at.type
            self._read_time = column.dialect_impl(dialect).result_processor(dialect, None)
        return stored if self._read_time is None else self._read_time(stored)

    @staticmethod
    async def _waiting_actions(
        conn: AsyncConnection, user_id: str, chat_id: uuid.UUID
    ) -> list[PendingAction]:
        """The chat's actions still pending (expired or not) or approved, oldest first."""
        p = schema.pending_actions
        rows = await conn.execute(
            sa.select(p)
            .where(p.c.chat_id == chat_id, p.c.user_id == user_id, held_actions(p))
            .order_by(p.c.created_at, p.c.id)
        )
        return [pending_from_row(dict(r)) for r in rows.mappings()]

    async def _owner_and_prompt(
        self,
        conn: AsyncConnection,
        user_id: str,
        agent_name: str,
        chat_id: uuid.UUID,
        *,
        check_owner: bool,
        summary: bool = False,
        window: tuple[int, int, int] | None = None,
        human: tuple[NewMessage | None, bool] | None = None,
    ) -> tuple[tuple[str, str] | None, str, list[str], int, ChatSummary | None, list[Message], int]:
        """The chat's owner (with ``check_owner``), the memory, the instructions,
        how many of the chat's actions are pending, (with ``summary``) the chat's
        summary and, with ``window`` (PostgreSQL: a limit and the ids ``first`` and
        ``after``), the chat's last messages after ``after``, at most the limit,
        oldest first, and how many messages the chat holds from ``first`` to
        ``after`` (see :mod:`.windows`).

        One statement instead of four: a turn's round trips are its cost. The
        pending actions themselves are read only when there are any. ``human``
        (PostgreSQL): the turn's message, stored by the same statement when the
        lease was taken (the second item), unseen by its reads.
        """
        message, taken = human if human is not None else (None, False)
        stmt = prompt_statement(
            conn.dialect.name,
            check_owner=check_owner,
            summary=summary,
            window=window is not None,
            human=message is not None,
        )
        values: dict[str, Any] = {"user_id": user_id, "agent_name": agent_name, "chat_id": chat_id}
        if window is not None:
            values["limit"], values["first"], values["after"] = window
        if message is not None:
            values["taken"] = taken
            values["role"] = message.role
            values["content"] = dict(message.content)
            values["created_at"] = message.created_at or now()
        owner: tuple[str, str] | None = None
        notes, instructions, waiting = "", [], 0
        found: ChatSummary | None = None
        history: list[Message] = []
        spanned = 0
        sqlite = conn.dialect.name != "postgresql"
        for row in await conn.execute(stmt, values):
            if row.part == 5:
                made = self._message(
                    row.rank, chat_id, user_id, row.a, row.b, row.at, stored_time=sqlite
                )
                history.append(made)
            elif row.part == 0:
                owner = (row.a, row.b)
            elif row.part == 1:
                notes = row.a or ""
            elif row.part == 2:
                instructions.append(row.a)
            elif row.part == 3:
                waiting = int(row.rank)
            elif row.part == 6:
                spanned = int(row.rank)
            else:
                found = summary_of(chat_id, user_id, row.a, row.rank, row.n, row.b)
        history.reverse()
        return owner, notes, instructions, waiting, found, history, spanned
