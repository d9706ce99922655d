"""S3-FIFO eviction for chatwright's executor cache, registered as ``s3fifo``.

S3-FIFO (Yang et al., "FIFO queues are all you need for cache eviction",
SOSP 2023) keeps the cached keys in two FIFO queues: a small one, S (10% of
``cache.max_entries``), that every new key enters, and a main one, M (the other
90%). A ghost queue, G, remembers keys recently evicted from S, without their
values. Each cached key has a frequency counter of two bits (0 to 3).

- A new key goes to M if G remembers it (it came back soon after being
  dropped), otherwise to S.
- A hit adds one to the key's counter.
- To free a place, M gives up its oldest key when it holds more than its
  share, S otherwise. A key leaving S that was hit at least
  ``move_to_main_threshold`` times (once, by default) moves on to M with its
  counter reset; any other is evicted and remembered in G. A key leaving M
  with a counter above zero goes round to the back of M with one less; one at
  zero is evicted.

Most keys are requested once and never again; S lets them go after a short
stay, before they can push out the keys that keep coming back, which is what
LRU gets wrong under scans.

How it follows the cache
------------------------
The executor cache does not tell its policy about each access. It calls
``select(entries, active, now)`` after every insertion and at each sweep,
with the entries least recently used first; a hit stamps the entry's
``last_used`` and moves it to the end, so the entries stay ordered by
``last_used``. The policy keeps the ``last_used`` it saw for each key and, at
each call, walks back from the newest entry to the ``now`` of the previous
call: a key it does not know is an insertion, a known key with a newer
``last_used`` was hit (or rebuilt after a config change, which counts as a
request too). So each call costs the number of keys touched since the last
one, not the size of the cache. When the number of keys it tracks differs from
the cache's, the cache dropped some on its own (``config-changed``), and one
full pass brings the two back in line; such keys are not remembered in G.

Two limits come from observing rather than being told: several hits on a key
between two calls count as one, and a hit stamped with the same clock value
the key already had is invisible. Neither matters much: what S3-FIFO mostly
asks is whether a key was hit at all, and the counters stop at 3 anyway.

Sweeps
------
``s3fifo`` keeps entries whose sessions ended: the frequency counters are its
knowledge of which agents come back, and dropping idle entries at every sweep
(as the default ``idle-session`` policy does) would throw that away. Memory
stays bounded by ``cache.max_entries``. An application that wants both can
register ``S3FIFOPolicy(max_entries, evict_idle=True)`` under a name of its own.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Mapping, Reversible
from typing import TYPE_CHECKING

from chatwright import hookimpl

if TYPE_CHECKING:
    from chatwright import EvictionPolicyRegister
    from chatwright.cache import CacheEntry, Key
    from chatwright.settings import Settings

__all__ = ["S3FIFOPolicy", "register_eviction_policies"]

MAX_FREQUENCY = 3


class S3FIFOPolicy:
    """The S3-FIFO policy for at most ``max_entries`` entries.

    :param small_ratio: the share of ``max_entries`` for the small queue S.
    :param ghost_ratio: how many evicted keys G remembers, as a share of
        ``max_entries``.
    :param move_to_main_threshold: hits a key needs while in S to move on to M.
    :param evict_idle: at sweeps, also evict entries without an active session
        (reason ``"idle-session"``), like the default policy.
    """

    reason = "s3fifo"

    def __init__(
        self,
        max_entries: int,
        *,
        small_ratio: float = 0.1,
        ghost_ratio: float = 0.9,
        move_to_main_threshold: int = 1,
        evict_idle: bool = False,
    ) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        if not 0 < small_ratio < 1:
            raise ValueError(f"small_ratio must be between 0 and 1, got {small_ratio}")
        if ghost_ratio < 0:
            raise ValueError(f"ghost_ratio must not be negative, got {ghost_ratio}")
        if not 1 <= move_to_main_threshold <= MAX_FREQUENCY:
            raise ValueError(
                f"move_to_main_threshold must be 1 to {MAX_FREQUENCY}, got {move_to_main_threshold}"
            )
        self.max_entries = max_entries
        self.small_capacity = max(1, round(max_entries * small_ratio))
        self.main_capacity = max_entries - self.small_capacity
        self.ghost_capacity = round(max_entries * ghost_ratio)
        self.move_to_main_threshold = move_to_main_threshold
        self.evict_idle = evict_idle
        # Queues hold keys oldest first: the next to leave is at the front.
        self._small: OrderedDict[Key, None] = OrderedDict()
        self._main: OrderedDict[Key, None] = OrderedDict()
        self._ghost: OrderedDict[Key, None] = OrderedDict()
        self._frequency: dict[Key, int] = {}
        self._last_used: dict[Key, float] = {}
        self._seen_until = float("-inf")

    # -- what tests and curious operators can look at --------------------

    @property
    def small(self) -> list[Key]:
        """The keys in S, oldest first."""
        return list(self._small)

    @property
    def main(self) -> list[Key]:
        """The keys in M, oldest first."""
        return list(self._main)

    @property
    def ghost(self) -> list[Key]:
        """The evicted keys G remembers, oldest first."""
        return list(self._ghost)

    def frequency(self, key: Key) -> int | None:
        """The counter of a cached key; None when the policy does not hold it."""
        return self._frequency.get(key)

    # -- the EvictionPolicy protocol --------------------------------------

    def select(
        self, entries: Mapping[Key, CacheEntry], active: set[Key] | None, now: float
    ) -> list[tuple[Key, str]]:
        self._observe(entries, now)
        chosen: list[tuple[Key, str]] = []
        if active is not None and self.evict_idle:
            for key in [k for k in entries if k not in active]:
                self._forget(key)
                chosen.append((key, "idle-session"))
        # The cache never evicts the entry it has just inserted (the newest).
        keep = next(_newest_first(entries), None) if active is None else None
        while len(self._frequency) > self.max_entries:
            victim = self._evict(keep)
            if victim is None:
                break
            chosen.append((victim, self.reason))
        return chosen

    # -- following the cache ----------------------------------------------

    def _observe(self, entries: Mapping[Key, CacheEntry], now: float) -> None:
        """Count the hits and admit the insertions since the previous call."""
        inserted: list[Key] = []
        for key in _newest_first(entries):
            last_used = entries[key].last_used
            if last_used < self._seen_until:
                break  # everything older was seen by an earlier call
            seen = self._last_used.get(key)
            if seen is None:
                inserted.append(key)
            elif last_used != seen:
                self._frequency[key] = min(self._frequency[key] + 1, MAX_FREQUENCY)
            self._last_used[key] = last_used
        self._seen_until = now
        if len(self._frequency) + len(inserted) == len(entries):
            for key in reversed(inserted):
                self._admit(key)
        else:
            self._reconcile(entries)

    def _reconcile(self, entries: Mapping[Key, CacheEntry]) -> None:
        """Forget the keys the cache dropped by itself; admit, oldest first, those not held."""
        for key in [k for k in self._frequency if k not in entries]:
            self._forget(key)
        for key, entry in entries.items():
            if key not in self._frequency:
                self._last_used[key] = entry.last_used
                self._admit(key)

    def _admit(self, key: Key) -> None:
        self._frequency[key] = 0
        if key in self._ghost:
            del self._ghost[key]
            self._main[key] = None
        else:
            self._small[key] = None

    def _forget(self, key: Key) -> None:
        self._small.pop(key, None)
        self._main.pop(key, None)
        self._frequency.pop(key, None)
        self._last_used.pop(key, None)

    # -- the queues ---------------------------------------------------------

    def _evict(self, keep: Key | None) -> Key | None:
        """Evict one key other than ``keep``; None when there is none to evict."""
        if len(self._main) > self.main_capacity:
            first, second = self._evict_main, self._evict_small
        else:
            first, second = self._evict_small, self._evict_main
        victim = first(keep)
        return victim if victim is not None else second(keep)

    def _evict_small(self, keep: Key | None) -> Key | None:
        while self._small:
            key = next(iter(self._small))
            if key == keep:
                if len(self._small) == 1:
                    return None
                self._small.move_to_end(key)
                continue
            del self._small[key]
            if self._frequency[key] >= self.move_to_main_threshold:
                self._frequency[key] = 0
                self._main[key] = None
                if len(self._main) > self.main_capacity:
                    victim = self._evict_main(keep)
                    if victim is not None:
                        return victim
            else:
                self._forget(key)
                self._remember(key)
                return key
        return None

    def _evict_main(self, keep: Key | None) -> Key | None:
        while self._main:
            key = next(iter(self._main))
            frequency = self._frequency[key]
            if key == keep:
                if len(self._main) == 1:
                    return None
                self._main.move_to_end(key)
            elif frequency > 0:
                self._frequency[key] = frequency - 1
                self._main.move_to_end(key)
            else:
                self._forget(key)
                return key
        return None

    def _remember(self, key: Key) -> None:
        if self.ghost_capacity == 0:
            return
        self._ghost[key] = None
        self._ghost.move_to_end(key)
        while len(self._ghost) > self.ghost_capacity:
            self._ghost.popitem(last=False)


def _newest_first(entries: Mapping[Key, CacheEntry]) -> Iterator[Key]:
    if isinstance(entries, Reversible):
        return reversed(entries)
    return reversed(list(entries))


@hookimpl
def register_eviction_policies(register: EvictionPolicyRegister) -> None:
    def s3fifo(settings: Settings) -> S3FIFOPolicy:
        return S3FIFOPolicy(settings.cache.max_entries)

    register("s3fifo", s3fifo)
