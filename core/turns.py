"""The storage side of a chat turn: :class:`TurnStore`, and which one a turn uses.

A backend that has a ``turns`` store (the ``sql`` backend) starts and ends a
turn in one transaction each. :class:`ComposedTurns` gives every other backend
the same contract from its other stores: the same checks and the same result
in more round trips, with the backend's ``chat_lock`` held from ``begin`` to
``finish``. When sessions live in a separate session store
(``sessions.store``), the chat's owner is checked and the chat touched there,
and the backend's own turn store does the rest.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from chatwright.approvals import AuditEntry, NewPending, PendingAction
from chatwright.errors import (
    ApprovalPendingError,
    InterruptedCallsError,
    NotFoundError,
    StorageError,
    UnknownAgentError,
    UnrecordedWritesError,
)
from chatwright.stores import (
    Agent,
    ChatSummary,
    Message,
    NewMessage,
    NewSummary,
    SessionStore,
    Storage,
    WithSessionStore,
)
from chatwright.usage import BudgetLimits, TurnUsage

log = logging.getLogger(__name__)


@dataclass
class TurnStart:
    """What a turn read before its model runs (see :meth:`TurnStore.begin`)."""

    user_id: str
    agent_name: str
    chat_id: uuid.UUID
    agent: Agent
    """The agent row as of the turn: prompt template, window, config version."""
    history: list[Message]
    """The last ``agent.history_window`` messages before this turn, oldest first."""
    memory: str
    """The user's notes for the agent ("" when none)."""
    instructions: list[str]
    """The user's active customizations for the agent, highest priority first."""
    lease: Any = None
    """The backend's own handle on the turn (its lease), for :meth:`TurnStore.finish`."""
    pending: list[PendingAction] = field(default_factory=list)
    """The chat's actions still ``pending`` (only when ``begin`` was given no message)."""
    interrupted: list[PendingAction] = field(default_factory=list)
    """The chat's ``approved`` actions, whose process stopped while their call ran (the
    turn holds the chat: no one else runs them); only when ``begin`` was given no
    message (with one, :class:`~chatwright.errors.InterruptedCallsError`)."""
    summary: ChatSummary | None = None
    """The chat's stored summary (read only for agents with ``summarize``)."""
    turn_id: uuid.UUID | None = None
    """The turn, as given to ``begin`` (its budget reservation is kept under it)."""
    unrecorded: list[AuditEntry] = field(default_factory=list)
    """Writes of an earlier turn that stopped before it stored their calls (see
    :func:`stopped_short`); only when ``begin`` was given no message (with one,
    :class:`~chatwright.errors.UnrecordedWritesError`)."""


def stopped_short(history: Sequence[Message]) -> Message | None:
    """The chat's newest message when its last turn may have stopped before storing a
    write's call and result: that message when it is a human message or a tool's
    result, else None. A turn that ends stores a reply last (or, stopping for the
    user's approval, a reply calling tools); one that stopped (its process killed, cut
    off between a write and the storing of its call) leaves the human message or the
    last exchange it stored. The turn store then reads the chat's writes made since
    that message (``unrecorded``), which only such a turn leaves."""
    if not history or history[-1].role not in ("human", "tool"):
        return None
    return history[-1]


chat_pause: ContextVar[Callable[[float], Awaitable[None]] | None] = ContextVar(
    "chatwright_chat_pause", default=None
)
"""How this context pauses between attempts to begin on a chat another turn holds (see
:func:`pause_for_chat`): set by the runtime, so that a stopping server ends the wait."""


async def pause_for_chat(seconds: float) -> None:
    """A turn store's pause before it tries a chat another turn holds again: ``seconds``,
    or less when the runtime that waits stops meanwhile (its shutdown ends the wait, with
    the error that says the request was not started). Pause here, between attempts,
    never in a transaction: ending it then leaves nothing half done."""
    import asyncio

    pause = chat_pause.get()
    if pause is None:
        await asyncio.sleep(seconds)
    else:
        await pause(seconds)


holding_turn: ContextVar[TurnStart | None] = ContextVar("chatwright_holding_turn", default=None)
"""The started turn whose tool calls run in this context: set by the runtime while a
turn's model and tools run, and while an approved call runs. A storage backend makes
a tool's write only while that turn still holds its chat (the ``sql`` backend checks
the turn's lease in the write's transaction): a turn that stalled past its lease, its
chat taken over or erased meanwhile, writes nothing more."""


async def ensure_held() -> None:
    """Before a tool acts outside the storage (an HTTP request, an MCP server's tool):
    raise :class:`~chatwright.errors.ChatBusyError` (409) when the turn it runs in
    (:data:`holding_turn`) no longer holds its chat, so that a turn that stalled past
    its lease, its chat taken over or its user erased meanwhile, acts no more.

    The runtime calls it before every write tool's call whose tool does not check in
    its own transaction (``metadata["chatwright_checks_held"]``, as ``crud`` does).
    It narrows the window rather than closing it: the lease may still be lost
    between this check and the call. Outside a turn, or on a backend whose lease
    (:attr:`TurnStart.lease`) has no ``ensure_held(user_id)``, it does nothing.
    """
    start = holding_turn.get()
    check = getattr(getattr(start, "lease", None), "ensure_held", None)
    if start is None or check is None:
        return
    await check(start.user_id)


class TurnStore(Protocol):
    """A chat turn's statements, gathered so that a cached turn takes few transactions.

    ``begin`` and ``finish`` are one transaction each; between them, each
    complete tool exchange is stored as it completes (``append``), so that a
    process killed later in the turn leaves no tool write out of the chat.
    One stopped between a write's commit and its exchange's leaves the write
    in the audit log: ``begin`` finds it (:func:`stopped_short`, the audit
    entries' ``after_message_id``) and refuses a message until its holder has
    stored it (:class:`~chatwright.errors.UnrecordedWritesError`).

    Optional: a backend without ``turns`` gets :class:`ComposedTurns`,
    which makes the same calls on the other stores (more round trips, same result).
    """

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
        """Start a turn in one transaction, waiting while another turn of the chat runs.

        With a ``budget``, the user's budgets are checked and a reservation held
        under ``turn_id`` as :meth:`chatwright.usage.UsageStore.reserve` says, in
        the same transaction (:class:`~chatwright.errors.BudgetExceededError`,
        nothing stored, when refused). The chat's summary is read when the
        agent has ``summarize``.

        With a ``message`` (a human turn), the chat must have no ``pending``
        action: :class:`~chatwright.errors.ApprovalPendingError` (with the
        actions, expired or not, in ``actions``) otherwise, and nothing is
        stored. With None (a turn resumed after a decision, or an undo), nothing
        is appended and :attr:`TurnStart.pending` holds the chat's pending actions.

        Checks that the chat is the user's with this agent (with ``check_owner``;
        :class:`~chatwright.errors.NotFoundError` otherwise) and that the agent
        exists (:class:`~chatwright.errors.UnknownAgentError`), takes the chat's
        turn (one turn per chat across all processes; :class:`~chatwright.errors.
        ChatBusyError` after waiting too long), reads the agent row, the window,
        the memory and the customizations, and appends ``message``; nothing is
        stored when it raises.
        """
        ...

    async def append(self, start: TurnStart, messages: Sequence[NewMessage]) -> None:
        """Store messages of a running turn (a complete tool exchange), in one transaction."""
        ...

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
        """End a turn in one transaction: append ``messages``, touch the chat, give the turn back.

        ``usage`` is recorded (and the turn's budget reservation, if any,
        dropped) and ``summary`` replaces the chat's summary, in the same
        transaction.

        With ``touch``, mark the chat's active sessions as used. ``pending`` are
        tool calls the turn stopped at, stored (and returned) in the same
        transaction as the messages. Called exactly once per ``begin`` that
        returned, whatever happened in between; the turn is given back even
        when storing fails.
        """
        ...


def not_your_chat(chat_id: uuid.UUID, agent_name: str) -> NotFoundError:
    """The one answer for a chat that is missing, another user's or another agent's."""
    return NotFoundError(
        f"no chat {chat_id} with agent {agent_name!r} for this user; open a session first"
    )


async def check_chat_owner(
    sessions: SessionStore, user_id: str, agent_name: str, chat_id: uuid.UUID
) -> None:
    """:func:`not_your_chat` unless the chat is the user's with this agent (one query)."""
    if await sessions.chat_owner(chat_id) != (user_id, agent_name):
        raise not_your_chat(chat_id, agent_name)


UNRECORDED_READ = 100
"""How many of a chat's newest audit entries :class:`ComposedTurns` looks through for
writes of a turn that stopped before storing them."""


async def _unrecorded(
    storage: Storage, user_id: str, chat_id: uuid.UUID, history: Sequence[Message]
) -> list[AuditEntry]:
    """The writes of the chat's last turn that it stopped before storing (see
    :func:`stopped_short`), oldest first; none when the backend's audit entries do not
    say where in the chat they were made."""
    last = stopped_short(history)
    audit = getattr(storage, "audit", None)
    if last is None or audit is None:
        return []
    entries = await audit.list(user_id, chat_id=chat_id, limit=UNRECORDED_READ)
    return [
        e
        for e in reversed(entries)
        if e.after_message_id == last.id
        and e.turn_id is not None
        and e.pending_id is None
        and e.undo_of is None
        and e.outcome == "ok"
    ]


class ComposedTurns:
    """A :class:`TurnStore` made of a backend's other stores."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

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
        storage = self.storage
        if check_owner:
            await check_chat_owner(storage.sessions, user_id, agent_name, chat_id)
        lock = contextlib.AsyncExitStack()
        await lock.enter_async_context(storage.chat_lock(chat_id))
        try:
            agent = await storage.agents.get(agent_name)
            if agent is None:
                raise UnknownAgentError(agent_name)
            waiting = await storage.pending.list(user_id, chat_id=chat_id, status="pending")
            interrupted = await storage.pending.list(user_id, chat_id=chat_id, status="approved")
            if message is not None and interrupted:
                raise InterruptedCallsError(list(interrupted))
            if message is not None and waiting:
                raise approval_pending(waiting)
            usage = getattr(storage, "usage", None)
            if budget is not None and turn_id is not None and usage is not None:
                limits = budget.for_agent(agent.turn_timeout)
                await usage.reserve(user_id, turn_id, limits, datetime.now(UTC))
            summaries = getattr(storage, "summaries", None)
            summary = (
                await summaries.get(user_id, chat_id)
                if agent.summarize and summaries is not None
                else None
            )
            history = await storage.messages.window(user_id, chat_id, agent.history_window)
            unrecorded = await _unrecorded(storage, user_id, chat_id, history)
            if message is not None and unrecorded:
                raise UnrecordedWritesError(list(unrecorded))
            memory = await storage.memories.get(user_id, agent_name)
            custom = await storage.customizations.list(user_id, agent_name, active_only=True)
            if message is not None:
                await storage.messages.append(user_id, chat_id, [message])
        except BaseException:
            await lock.aclose()
            raise
        return TurnStart(
            user_id,
            agent_name,
            chat_id,
            agent,
            history,
            memory.notes if memory else "",
            [c.content for c in custom],
            lease=lock,
            pending=waiting if message is None else [],
            interrupted=list(interrupted),
            summary=summary,
            turn_id=turn_id,
            unrecorded=unrecorded,
        )

    async def append(self, start: TurnStart, messages: Sequence[NewMessage]) -> None:
        await self.storage.messages.append(start.user_id, start.chat_id, messages)

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
        lock: contextlib.AsyncExitStack = start.lease
        async with lock:
            await self.storage.messages.append(start.user_id, start.chat_id, messages, touch=touch)
            usage_store = getattr(self.storage, "usage", None)
            if usage_store is not None and start.turn_id is not None:
                await usage_store.record(
                    start.user_id,
                    start.agent_name,
                    start.chat_id,
                    start.turn_id,
                    usage,
                    datetime.now(UTC),
                )
            summaries = getattr(self.storage, "summaries", None)
            if summary is not None and summaries is not None:
                await summaries.put(start.user_id, start.chat_id, summary)
            if not pending:
                return []
            return await self.storage.pending.create(
                start.user_id, start.agent_name, start.chat_id, pending
            )


def approval_pending(actions: Sequence[PendingAction]) -> ApprovalPendingError:
    """The one answer for a new message to a chat whose tool calls await a decision."""
    names = ", ".join(f"{a.tool_name} ({a.id})" for a in actions)
    return ApprovalPendingError(
        f"this chat waits for your decision on {names}; approve or deny first",
        list(actions),
    )


class SeparateSessions:
    """The backend's turn store, with the chat's owner and its sessions in a session store."""

    def __init__(self, storage: WithSessionStore, turns: TurnStore) -> None:
        self.storage = storage
        self.turns = turns

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
        if check_owner:
            await check_chat_owner(self.storage.sessions, user_id, agent_name, chat_id)
        return await self.turns.begin(
            user_id, agent_name, chat_id, message, check_owner=False, turn_id=turn_id, budget=budget
        )

    async def append(self, start: TurnStart, messages: Sequence[NewMessage]) -> None:
        await self.turns.append(start, messages)

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
        # The reply is stored first; a failure to touch afterwards must not make a
        # stored turn look failed (a client would retry it and repeat its tool calls).
        stored = await self.turns.finish(
            start, messages, touch=False, pending=pending, usage=usage, summary=summary
        )
        if not touch:
            return stored
        try:
            await self.storage.sessions.touch_chat(start.user_id, start.chat_id)
        except StorageError as exc:
            log.warning("chat %s: its sessions were not marked used: %s", start.chat_id, exc)
        return stored


def turn_store(storage: Storage) -> TurnStore:
    """The turn store for ``storage``: its own, or one made of its other stores."""
    if isinstance(storage, WithSessionStore):
        inner = storage.backend
        own = getattr(inner, "turns", None)
        return SeparateSessions(storage, own if own is not None else ComposedTurns(inner))
    own = getattr(storage, "turns", None)
    return own if own is not None else ComposedTurns(storage)
