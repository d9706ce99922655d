"""The executor cache: one built agent per agent, rebuilt when its config changes.

An entry holds what is expensive to make and safe to share between every
chat of every user of one agent: the chat model, the loaded tools and the
compiled agent graph. Its key is the agent's name. It holds no conversation
state and nothing of any user: every turn passes its history in, and the
user reaches the tools at call time through LangChain's runtime context (see
:mod:`chatwright.tools`). Each entry records the config version it was built
from; a turn reads the current version with the rest of its inputs (see
:mod:`chatwright.runtime`) and a different version rebuilds the entry.

Eviction reasons: ``"config-changed"`` (the agent or one of its tool rows
changed: the entry was rebuilt from the new version, or another process
announced the change), and whatever the policy gives, for the bundled ones
``"capacity"`` (more than ``cache.max_entries`` agents), ``"ttl"`` (unused
for longer than ``cache.ttl``) and ``"idle-session"`` (no user of the agent
has an active session any more, decided at each sweep).

Concurrent misses for the same key wait for one build (single flight). Which
entries to drop is decided by the eviction policy named by ``cache.policy``
(plugins register policies with ``register_eviction_policies``), which is
also told of every insertion, hit and removal; every drop fires the
``executor_evicted`` hook and is counted by reason.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from chatwright.errors import PluginError

if TYPE_CHECKING:
    import asyncio

Key = str
"""The agent's name (it used to be a (user_id, agent_name) pair: one build per user)."""


@dataclass
class CacheEntry:
    key: Key
    version: str
    value: Any
    built_at: float
    last_used: float
    started: int = 0
    """The order in which its build started: a build that started earlier, of another
    version, finishing later, does not replace it."""


class EvictionPolicy(Protocol):
    """Decides which entries leave the cache, and why; hears what happens to them.

    ``select`` is the one method a policy must have. The events ``inserted``,
    ``hit`` and ``removed`` tell it of every change, in the order they happen,
    so that a policy can keep its own bookkeeping (frequencies, queues) exact
    instead of inferring it from ``entries``. They are optional: a policy that
    subclasses :class:`EvictionPolicy` inherits the bodies below, which do
    nothing, and the cache tells nothing to a policy that lacks them.
    """

    def select(
        self, entries: Mapping[Key, CacheEntry], active: set[Key] | None, now: float
    ) -> list[tuple[Key, str]]:
        """Keys to evict with a reason each.

        :param entries: the cache, least recently used first.
        :param active: keys (agents) that some user has an active session with,
            during a sweep; None right after an insertion, when only capacity matters.
        :param now: the cache clock (monotonic seconds).
        """
        ...

    def inserted(self, key: Key) -> None:
        """An entry was built and stored under ``key``; ``select`` follows at once."""
        # A bare return, not an empty body: mypy would take an empty one for abstract.
        return

    def hit(self, key: Key) -> None:
        """A request found the entry under ``key`` current and used it."""
        return

    def removed(self, key: Key, reason: str) -> None:
        """The entry under ``key`` left the cache, for ``reason``.

        Every removal is told: those the policy chose in ``select`` (with its
        reason) and those the cache made by itself, ``"config-changed"`` when
        an entry is rebuilt from a new config version (``inserted`` follows)
        or dropped because another process changed the agent.
        """
        return


class BrokenPolicyError(PluginError):
    """The eviction policy answered ``select`` with something that is not a choice."""

    http_status = 503


def _chosen(policy: object, choices: object) -> list[tuple[Key, str]]:
    """A policy's answer to ``select``, checked: a list of (key, reason) pairs."""
    items = list(choices) if isinstance(choices, list | tuple) else None
    if items is not None and all(
        isinstance(p, tuple | list) and len(p) == 2 and isinstance(p[1], str) for p in items
    ):
        return [(key, reason) for key, reason in items]
    shown = repr(choices)
    shown = shown if len(shown) <= 60 else shown[:59] + "…"
    cls = type(policy)
    raise BrokenPolicyError(
        f"eviction policy {cls.__name__} (module {cls.__module__}, the cache.policy setting) "
        f"is broken: its select() returned {shown}, not a list of (key, reason) pairs; set "
        "cache.policy to another policy, or disable its plugin with CHATWRIGHT_DISABLE_PLUGINS"
    )


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    builds: int = 0
    build_failures: int = 0
    evictions: Counter[str] = field(default_factory=Counter)


class ExecutorCache:
    def __init__(
        self,
        build: Callable[[Key], Awaitable[Any]],
        policy: EvictionPolicy,
        on_evict: Callable[[Key, str], None] = lambda key, reason: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._build = build
        self.policy = policy
        self._on_evict = on_evict
        self._clock = clock
        self._entries: OrderedDict[Key, CacheEntry] = OrderedDict()
        self._flights: dict[tuple[Key, str], asyncio.Task[CacheEntry]] = {}
        self._started = 0
        self.stats = CacheStats()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def peek(self, key: Key) -> CacheEntry | None:
        return self._entries.get(key)

    async def get(self, key: Key, version: str) -> CacheEntry:
        """The entry for ``key`` built from ``version``, building it if needed."""
        # Imported here: policies subclass EvictionPolicy, so this module is
        # imported at every start of the runner, where asyncio is not needed.
        import asyncio

        entry = self._entries.get(key)
        if entry is not None and entry.version == version:
            self.stats.hits += 1
            entry.last_used = self._clock()
            self._entries.move_to_end(key)
            self._tell("hit", key)
            return entry
        self.stats.misses += 1
        flight = self._flights.get((key, version))
        if flight is None:
            flight = asyncio.ensure_future(self._fill(key, version))
            self._flights[(key, version)] = flight
            flight.add_done_callback(lambda _: self._flights.pop((key, version), None))
        # A caller that gives up does not cancel the build the others wait for.
        return await asyncio.shield(flight)

    async def _fill(self, key: Key, version: str) -> CacheEntry:
        self._started += 1
        started = self._started
        try:
            value = await self._build(key)
        except BaseException:
            self.stats.build_failures += 1
            raise
        self.stats.builds += 1
        now = self._clock()
        old = self._entries.get(key)
        entry = CacheEntry(key, version, value, built_at=now, last_used=now, started=started)
        if old is not None and old.version != version and old.started > started:
            # A build of another version that started after this one (the config the
            # caller read has changed since) is cached already: it stays; this build
            # serves its own callers only.
            return entry
        if old is not None and old.version != version:
            self.evict(key, "config-changed")
        self._entries[key] = entry
        self._entries.move_to_end(key)
        self._tell("inserted", key)
        self._apply(_chosen(self.policy, self.policy.select(self._entries, None, now)), keep=key)
        return entry

    def _apply(
        self, choices: list[tuple[Key, str]], keep: Key | None = None
    ) -> list[tuple[Key, str]]:
        done = []
        for key, reason in choices:
            if key != keep and key in self._entries:
                self.evict(key, reason)
                done.append((key, reason))
        return done

    def evict(self, key: Key, reason: str) -> bool:
        if self._entries.pop(key, None) is None:
            return False
        self.stats.evictions[reason] += 1
        self._tell("removed", key, reason)
        self._on_evict(key, reason)
        return True

    def _tell(self, event: str, *args: Any) -> None:
        # A policy written before the events existed has only select(): it hears nothing.
        method = getattr(self.policy, event, None)
        if method is not None:
            method(*args)

    def evict_where(self, predicate: Callable[[Key], bool], reason: str) -> list[Key]:
        keys = [k for k in self._entries if predicate(k)]
        return [k for k in keys if self.evict(k, reason)]

    def sweep(self, active: set[Key]) -> list[tuple[Key, str]]:
        """Let the policy drop entries, given the keys that still have active sessions."""
        return self._apply(
            _chosen(self.policy, self.policy.select(self._entries, active, self._clock()))
        )
