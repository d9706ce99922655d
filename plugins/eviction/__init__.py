"""Eviction policies of the executor cache: ``idle-session``, ``ttl`` and ``lru``.

Every policy keeps the cache within ``cache.max_entries`` by dropping the
least recently used entries. Beyond that:

``idle-session`` (the default)
    At each sweep, drop the agents that no user has an active session with:
    the rule of the system this grew from, without its blind 15-minute TTL.
``ttl``
    At each sweep, drop entries unused for longer than ``cache.ttl`` seconds.
``lru``
    Capacity only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from chatwright import hookimpl
from chatwright.cache import EvictionPolicy

if TYPE_CHECKING:
    from chatwright import EvictionPolicyRegister, SettingsRegister
    from chatwright.cache import CacheEntry, Key
    from chatwright.settings import Settings


class LRUPolicy(EvictionPolicy):
    # The order of ``entries`` is all these policies need: they inherit the
    # protocol's events, which do nothing.

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries

    def select(
        self, entries: Mapping[Key, CacheEntry], active: set[Key] | None, now: float
    ) -> list[tuple[Key, str]]:
        excess = len(entries) - self.max_entries
        if excess <= 0:
            return []
        oldest = list(entries)[:excess]  # entries come least recently used first
        return [(key, "capacity") for key in oldest]


class IdleSessionPolicy(LRUPolicy):
    def select(
        self, entries: Mapping[Key, CacheEntry], active: set[Key] | None, now: float
    ) -> list[tuple[Key, str]]:
        chosen = super().select(entries, active, now)
        if active is not None:
            taken = {k for k, _ in chosen}
            chosen += [(k, "idle-session") for k in entries if k not in active and k not in taken]
        return chosen


class TTLPolicy(LRUPolicy):
    def __init__(self, max_entries: int, ttl: float) -> None:
        super().__init__(max_entries)
        self.ttl = ttl

    def select(
        self, entries: Mapping[Key, CacheEntry], active: set[Key] | None, now: float
    ) -> list[tuple[Key, str]]:
        chosen = super().select(entries, active, now)
        taken = {k for k, _ in chosen}
        chosen += [
            (k, "ttl")
            for k, e in entries.items()
            if k not in taken and now - e.last_used > self.ttl
        ]
        return chosen


@hookimpl
def register_eviction_policies(register: EvictionPolicyRegister) -> None:
    def idle_session(settings: Settings) -> IdleSessionPolicy:
        return IdleSessionPolicy(settings.cache.max_entries)

    def ttl(settings: Settings) -> TTLPolicy:
        from chatwright.plugins.eviction.settings import TTLSettings

        return TTLPolicy(settings.cache.max_entries, settings.section(TTLSettings).ttl)

    def lru(settings: Settings) -> LRUPolicy:
        return LRUPolicy(settings.cache.max_entries)

    register("idle-session", idle_session)
    register("ttl", ttl)
    register("lru", lru)


@hookimpl
def register_settings(register: SettingsRegister) -> None:
    from chatwright.plugins.eviction.settings import TTLSettings

    register("cache", TTLSettings)
