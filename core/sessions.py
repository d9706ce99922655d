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

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from chatwright.errors import NotFoundError
from chatwright.stores import ChatSession

if TYPE_CHECKING:
    from chatwright.cache import Key
    from chatwright.runtime import Runtime


@dataclass
class SweepReport:
    deactivated: list[ChatSession] = field(default_factory=list)
    evicted: list[tuple[Key, str]] = field(default_factory=list)
    active_keys: int = 0
    skipped: bool = False
    """Another process was sweeping; this pass did nothing."""


async def deactivate(runtime: Runtime, user_id: str, session_id: uuid.UUID) -> ChatSession:
    """Deactivate one of the user's sessions (idempotent) and fire ``session_deactivated``."""
    before = await runtime.storage.sessions.get(user_id, session_id)
    if before is None:
        raise NotFoundError(f"no session {session_id} for this user")
    session = await runtime.storage.sessions.deactivate(user_id, session_id)
    if session is None:
        raise NotFoundError(f"no session {session_id} for this user")
    if before.is_active:
        runtime.plugins.notify("session_deactivated", session=session, reason="client")
    return session


async def sweep(runtime: Runtime, now: datetime | None = None) -> SweepReport:
    """One sweeper pass: deactivate idle sessions, then evict by policy.

    Deactivation runs in one process at a time (``storage.exclusive``: an
    advisory lock on PostgreSQL); a pass that finds another process sweeping
    skips it, but still lets its own cache evict.
    """
    now = now or datetime.now(UTC)
    idle_before = now - timedelta(seconds=runtime.settings.sessions.idle_timeout)
    async with runtime.storage.exclusive("sweeper") as mine:
        deactivated = await runtime.storage.sessions.sweep(idle_before) if mine else []
    report = SweepReport(deactivated=deactivated, skipped=not mine)
    for session in report.deactivated:
        runtime.plugins.notify("session_deactivated", session=session, reason="idle")
    # Every process evicts from its own cache, whoever deactivated the sessions.
    active = await runtime.storage.sessions.active_keys()
    report.active_keys = len(active)
    # Cache keys are agents: an agent's build stays while any user has a session with it.
    report.evicted = runtime.cache.sweep({agent for _, agent in active})
    return report
