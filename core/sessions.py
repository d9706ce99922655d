"""Session lifecycle: open, heartbeat, deactivate, and the idle sweep.

A session is one client engagement with a chat (a browser tab, a terminal
``chatwright chat``). Opening is idempotent per (user, agent, ``client_key``),
enforced by a unique index in the database, so concurrent opens from one page
agree on one session. The client heartbeats while it is open and deactivates
the session when it leaves; the server's sweeper deactivates sessions that
stopped heartbeating, then lets the eviction policy drop the built agents of
(user, agent) pairs that no longer have any active session.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from chatwright.errors import NotFoundError
from chatwright.stores import ChatSession, SessionStore

if TYPE_CHECKING:
    from chatwright.cache import Key
    from chatwright.runtime import Runtime


HOOKS_BETWEEN_YIELDS = 200
"""``session_deactivated`` calls the sweeper makes before it lets other tasks run.

Whatever the batch size: a plugin's hook may take a while (writing a line to a
file, say), and 200 calls of a quick one take a few milliseconds.
"""


HOOKED_BATCH = 1000
"""Most sessions one sweeper step deactivates when a plugin implements
``session_deactivated``, whatever ``sessions.sweep_batch`` says.

Such a step fetches each session's row and makes a :class:`ChatSession` of it
before the first hook runs, about 20 microseconds a session in all on one core:
a step of 10,000 would keep the event loop busy for 0.2 s, where one of 1,000
takes about 20 ms.
"""


@dataclass
class SweepReport:
    """What one sweeper pass did, in counts: its size does not grow with the sessions swept."""

    deactivated: int = 0
    """Idle sessions this pass deactivated."""
    batches: int = 0
    """Store calls it took (``sessions.sweep_batch`` sessions at most each, and
    :data:`HOOKED_BATCH` at most with a ``session_deactivated`` plugin)."""
    seconds: float = 0.0
    """How long the whole pass took, eviction included."""
    evicted: list[tuple[Key, str]] = field(default_factory=list)
    active_keys: int = 0
    ids: list[uuid.UUID] | None = None
    """The deactivated sessions' ids, only when the pass was asked to keep them."""


async def deactivate(runtime: Runtime, user_id: str, session_id: uuid.UUID) -> ChatSession:
    """Deactivate one of the user's sessions (idempotent) and fire ``session_deactivated``
    when this call deactivated it: not when it was inactive already, nor when a sweeper
    (which reports it) got there first (with a store that has ``deactivate_once``)."""
    store = runtime.storage.sessions
    missing = NotFoundError(f"no session {session_id} for this user")
    if _own(store, "deactivate_once"):
        found = await store.deactivate_once(user_id, session_id)
        if found is None:
            raise missing
        session, closed = found
    else:
        before = await store.get(user_id, session_id)
        if before is None:
            raise missing
        gone = await store.deactivate(user_id, session_id)
        if gone is None:
            raise missing
        session, closed = gone, before.is_active
    if closed:
        runtime.plugins.notify("session_deactivated", session=session, reason="client")
    return session


def _own(store: SessionStore, name: str) -> bool:
    """Whether ``store`` has method ``name`` of its own: not the protocol's empty body
    (a store written before it existed may subclass the protocol)."""
    method = getattr(type(store), name, None)
    return method is not None and method is not getattr(SessionStore, name)


def _counts(store: SessionStore) -> bool:
    """Whether ``store`` has a ``sweep_count`` of its own: a store written before it existed
    (perhaps a subclass of the protocol, with its empty body) is swept by its ids."""
    return _own(store, "sweep_count")


async def _sweep_batch(
    runtime: Runtime, idle_before: datetime, limit: int, keep_ids: bool
) -> tuple[int, list[uuid.UUID]]:
    """Deactivate one batch; fire ``session_deactivated`` for each of its sessions.

    The rows are fetched only when a plugin implements the hook, and the ids
    only when the pass keeps them: building a :class:`ChatSession` and calling
    pluggy for each of a million sessions costs more than the database's work,
    for nobody, and even their ids cost the event loop more than one row of
    counts.
    """
    store = runtime.storage.sessions
    if not runtime.plugins.implemented("session_deactivated"):
        if not keep_ids and _counts(store):
            return await store.sweep_count(idle_before, limit=limit), []
        ids = await store.sweep_ids(idle_before, limit=limit)
        return len(ids), ids
    sessions = await store.sweep(idle_before, limit=limit)
    for done, session in enumerate(sessions, 1):
        runtime.plugins.notify("session_deactivated", session=session, reason="idle")
        if done % HOOKS_BETWEEN_YIELDS == 0:
            await asyncio.sleep(0)  # plugins' hooks take their time: requests go in between
    return len(sessions), [s.id for s in sessions]


async def sweep(
    runtime: Runtime, now: datetime | None = None, *, keep_ids: bool = False
) -> SweepReport:
    """One sweeper pass: deactivate idle sessions in batches, then evict by policy.

    Each batch (``sessions.sweep_batch`` sessions at most, and
    :data:`HOOKED_BATCH` when a plugin implements ``session_deactivated``) is one
    short atomic step of the store, and the pass yields to the event loop between
    batches, so the requests a server serves meanwhile wait for one batch at most.
    Several processes may sweep at once: the store hands each idle session to
    exactly one batch (on PostgreSQL a row deleted by one step is not deleted
    again by another), so each is deactivated, and reported to
    ``session_deactivated``, once. The report
    holds counts, and the ids only with ``keep_ids``.
    """
    started = time.perf_counter()
    now = now or datetime.now(UTC)
    idle_before = now - timedelta(seconds=runtime.settings.sessions.idle_timeout)
    limit = runtime.settings.sessions.sweep_batch
    if runtime.plugins.implemented("session_deactivated"):
        limit = min(limit, HOOKED_BATCH)
    report = SweepReport(ids=[] if keep_ids else None)
    while True:
        count, ids = await _sweep_batch(runtime, idle_before, limit, keep_ids)
        report.batches += 1
        report.deactivated += count
        if report.ids is not None:
            report.ids.extend(ids)
        if count < limit:
            break  # nothing idle is left that another sweeper has not taken
        await asyncio.sleep(0)  # let the requests waiting on the event loop run
    # Every process evicts from its own cache, whoever deactivated the sessions.
    active = await runtime.storage.sessions.active_keys()
    report.active_keys = len(active)
    # Cache keys are agents: an agent's build stays while any user has a session with it.
    report.evicted = runtime.cache.sweep({agent for _, agent in active})
    report.seconds = time.perf_counter() - started
    return report
