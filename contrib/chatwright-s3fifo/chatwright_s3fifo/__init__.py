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
The executor cache tells the policy of every event as it happens:
``inserted(key)`` admits the key (to M if G remembers it, to S otherwise),
``hit(key)`` adds one to its counter, and ``removed(key, reason)`` forgets a
key the cache dropped by itself (``config-changed``), without remembering it
in G. ``select(entries, active, now)``, called after every insertion and at
each sweep, then evicts from the queues while they hold more than
``cache.max_entries`` keys. A key rebuilt from a new config version is
removed and inserted again, so it starts over in S with its counter at 0,
as it would after another process changed the agent.

Should the policy hold a different number of keys than the cache (a policy
put in place under a full cache), the next ``select`` forgets the keys the
cache no longer holds and admits, oldest first, those it never heard of.

Sweeps
------
``s3fifo`` keeps entries whose sessions ended: the frequency counters are its
knowledge of which agents come back, and dropping idle entries at every sweep
(as the default ``idle-session`` policy does) would throw that away. Memory
stays bounded by ``cache.max_entries``. An application that wants both can
register ``S3FIFOPolicy(max_entries, evict_idle=True)`` under a name of its own.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Reversible
from fractions import Fraction
from typing import TYPE_CHECKING

from chatwright import EvictionPolicy, hookimpl

if TYPE_CHECKING:
    from chatwright import EvictionPolicyRegister
    from chatwright.cache import CacheEntry, Key
    from chatwright.settings import Settings

__all__ = ["S3FIFOPolicy", "register_eviction_policies"]

MAX_FREQUENCY = 3


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _share(total: int, ratio: float) -> int:
    """``ratio`` of ``total`` rounded to the nearest, a half up; exact for any ``total``
    (``ratio`` as it is written: 0.1 is one tenth, not the float nearest to it)."""
    return math.floor(Fraction(total) * Fraction(repr(ratio)) + Fraction(1, 2))


class S3FIFOPolicy(EvictionPolicy):
    """The S3-FIFO policy for at most ``max_entries`` entries.

    :param small_ratio: the share of ``max_entries`` for the small queue S.
    :param ghost_ratio: how many evicted keys G remembers, as a share of
        ``max_entries``; unset, as many as M holds.
    :param move_to_main_threshold: hits a key needs while in S to move on to M.
    :param evict_idle: at sweeps, also evict entries without an active session
        (reason ``"idle-session"``), like the default policy.

    A share is rounded to the nearest whole number, a half up, and computed
    exactly, for a ``max_entries`` of any size.
    """

    reason = "s3fifo"

    def __init__(
        self,
        max_entries: int,
        *,
        small_ratio: float = 0.1,
        ghost_ratio: float | None = None,
        move_to_main_threshold: int = 1,
        evict_idle: bool = False,
    ) -> None:
        if not _whole(max_entries) or max_entries < 1:
            raise ValueError(
                f"max_entries must be a whole number of at least 1, got {max_entries!r}"
            )
        if not _number(small_ratio) or not 0 < small_ratio < 1:
            raise ValueError(f"small_ratio must be a number between 0 and 1, got {small_ratio!r}")
        if ghost_ratio is not None and (not _number(ghost_ratio) or ghost_ratio < 0):
            raise ValueError(
                f"ghost_ratio must be a finite number of 0 or more, got {ghost_ratio!r}"
            )
        if not _whole(move_to_main_threshold) or not 1 <= move_to_main_threshold <= MAX_FREQUENCY:
            raise ValueError(
                f"move_to_main_threshold must be a whole number from 1 to {MAX_FREQUENCY}, "
                f"got {move_to_main_threshold!r}"
            )
        self.max_entries = max_entries
        self.small_capacity = max(1, _share(max_entries, small_ratio))
        self.main_capacity = max_entries - self.small_capacity
        self.ghost_capacity = (
            self.main_capacity if ghost_ratio is None else _share(max_entries, ghost_ratio)
        )
        self.move_to_main_threshold = move_to_main_threshold
        self.evict_idle = evict_idle
        # Queues hold keys oldest first: the next to leave is at the front.
        self._small: OrderedDict[Key, None] = OrderedDict()
        self._main: OrderedDict[Key, None] = OrderedDict()
        self._ghost: OrderedDict[Key, None] = OrderedDict()
        self._frequency: dict[Key, int] = {}

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

    def inserted(self, key: Key) -> None:
        if key not in self._frequency:
            self._admit(key)

    def hit(self, key: Key) -> None:
        frequency = self._frequency.get(key)
        if frequency is not None:
            self._frequency[key] = min(frequency + 1, MAX_FREQUENCY)

    def removed(self, key: Key, reason: str) -> None:
        # Keys chosen by select() are already gone (and, from S, remembered in G);
        # a key the cache dropped by itself is forgotten without a ghost.
        self._forget(key)

    def select(
        self, entries: Mapping[Key, CacheEntry], active: set[Key] | None, now: float
    ) -> list[tuple[Key, str]]:
        if len(self._frequency) != len(entries):
            self._reconcile(entries)
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

    # -- catching up ----------------------------------------------------------

    def _reconcile(self, entries: Mapping[Key, CacheEntry]) -> None:
        """Forget the keys the cache does not hold; admit, oldest first, those not held."""
        for key in [k for k in self._frequency if k not in entries]:
            self._forget(key)
        for key in entries:
            if key not in self._frequency:
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
