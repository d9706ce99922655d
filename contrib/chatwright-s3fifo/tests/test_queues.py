"""The queues of S3-FIFO, driven by events and select() the way the executor cache does."""

from __future__ import annotations

import random
import re
from collections import OrderedDict
from collections.abc import Iterator, Mapping

import pytest
from chatwright.cache import CacheEntry, Key

from chatwright_s3fifo import S3FIFOPolicy


class Cache:
    """What ExecutorCache does around the policy, synchronously, with a clock of ticks."""

    def __init__(self, policy: S3FIFOPolicy) -> None:
        self.policy = policy
        self.entries: OrderedDict[Key, CacheEntry] = OrderedDict()
        self.now = 0.0

    def insert(self, key: Key) -> list[tuple[Key, str]]:
        self.now += 1
        if key in self.entries:  # a new config version replaces the entry
            self.drop(key)
        self.entries[key] = CacheEntry(key, "1", None, built_at=self.now, last_used=self.now)
        self.policy.inserted(key)
        chosen = self.policy.select(self.entries, None, self.now)
        assert key not in {k for k, _ in chosen}, "the cache never evicts what it just built"
        return self._drop(chosen)

    def hit(self, *keys: Key) -> None:
        for key in keys:
            self.now += 1
            self.entries[key].last_used = self.now
            self.entries.move_to_end(key)
            self.policy.hit(key)

    def sweep(self, active: set[Key]) -> list[tuple[Key, str]]:
        self.now += 1
        return self._drop(self.policy.select(self.entries, active, self.now))

    def drop(self, key: Key) -> None:
        """What the cache drops by itself: a config changed."""
        del self.entries[key]
        self.policy.removed(key, "config-changed")

    def _drop(self, chosen: list[tuple[Key, str]]) -> list[tuple[Key, str]]:
        for key, reason in chosen:
            del self.entries[key]
            self.policy.removed(key, reason)
        return chosen


def k(name: str) -> Key:
    return ("user", name)


def keys(*names: str) -> list[Key]:
    return [k(n) for n in names]


@pytest.mark.parametrize(
    ("max_entries", "sizes"),
    [
        (100, (10, 90, 90)),
        # 10 % rounded to the nearest, a half up; G as large as M, whatever the rounding.
        (15, (2, 13, 13)),
        (25, (3, 22, 22)),
        (35, (4, 31, 31)),
        (1, (1, 0, 0)),
    ],
)
def test_sizes_follow_max_entries(max_entries: int, sizes: tuple[int, int, int]) -> None:
    policy = S3FIFOPolicy(max_entries)
    assert (policy.small_capacity, policy.main_capacity, policy.ghost_capacity) == sizes
    assert S3FIFOPolicy(100, ghost_ratio=0.5).ghost_capacity == 50


def test_a_max_entries_of_any_size_the_settings_take_works() -> None:
    huge = 10**400  # no float holds it
    policy = S3FIFOPolicy(huge)
    assert policy.small_capacity == huge // 10
    assert policy.main_capacity == policy.ghost_capacity == huge - huge // 10
    cache = Cache(policy)
    assert cache.insert(k("a")) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_entries": 0}, "max_entries must be a whole number of at least 1, got 0"),
        ({"max_entries": 2.5}, "max_entries must be a whole number of at least 1, got 2.5"),
        ({"max_entries": "10"}, "max_entries must be a whole number of at least 1, got '10'"),
        ({"max_entries": True}, "max_entries must be a whole number"),
        ({"max_entries": 10, "small_ratio": 1.0}, "small_ratio must be a number between 0 and 1"),
        ({"max_entries": 10, "small_ratio": float("nan")}, "small_ratio"),
        ({"max_entries": 10, "ghost_ratio": -1}, "ghost_ratio must be a finite number"),
        ({"max_entries": 10, "ghost_ratio": float("inf")}, "ghost_ratio must be a finite number"),
        ({"max_entries": 10, "ghost_ratio": float("nan")}, "ghost_ratio must be a finite number"),
        ({"max_entries": 10, "move_to_main_threshold": 4}, "move_to_main_threshold"),
        ({"max_entries": 10, "move_to_main_threshold": 2.5}, "a whole number from 1 to 3"),
    ],
)
def test_bad_parameters_are_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        S3FIFOPolicy(**kwargs)  # type: ignore[arg-type]


def test_new_keys_enter_small_and_one_hit_wonders_leave_it_into_ghost() -> None:
    cache = Cache(S3FIFOPolicy(4, small_ratio=0.25))
    for name in "abcd":
        assert cache.insert(k(name)) == []
    assert cache.policy.small == keys("a", "b", "c", "d")
    assert cache.policy.main == []

    assert cache.insert(k("e")) == [(k("a"), "s3fifo")]
    assert cache.policy.small == keys("b", "c", "d", "e")
    assert cache.policy.ghost == keys("a")
    assert cache.policy.frequency(k("a")) is None


def test_a_key_hit_in_small_moves_to_main_with_its_counter_reset() -> None:
    cache = Cache(S3FIFOPolicy(4, small_ratio=0.25))
    for name in "abcd":
        cache.insert(k(name))
    cache.hit(k("a"), k("c"))
    assert cache.insert(k("e")) == [(k("b"), "s3fifo")]
    assert cache.policy.main == keys("a")
    assert cache.policy.frequency(k("a")) == 0
    assert cache.policy.small == keys("c", "d", "e")
    assert cache.policy.ghost == keys("b")


def test_a_key_remembered_by_ghost_comes_back_into_main() -> None:
    cache = Cache(S3FIFOPolicy(4, small_ratio=0.25))
    for name in "abcde":
        cache.insert(k(name))
    assert cache.policy.ghost == keys("a")
    assert cache.insert(k("a")) == [(k("b"), "s3fifo")]
    assert cache.policy.main == keys("a")
    assert cache.policy.ghost == keys("b")


def test_main_gives_a_second_chance_per_hit_then_evicts() -> None:
    cache = Cache(S3FIFOPolicy(4, small_ratio=0.25))
    for name in "abcd":
        cache.insert(k(name))
    cache.hit(k("a"), k("b"), k("c"))
    cache.insert(k("e"))  # a, b, c move to main; d goes to the ghost
    assert cache.policy.main == keys("a", "b", "c")
    cache.hit(k("a"))
    # d comes back into main, which is now over its 3 places: a goes round, b leaves.
    assert cache.insert(k("d")) == [(k("b"), "s3fifo")]
    assert cache.policy.main == keys("c", "d", "a")
    assert cache.policy.frequency(k("a")) == 0
    assert cache.policy.ghost == []  # d left it; main evicts without remembering


def test_counters_saturate_at_three() -> None:
    cache = Cache(S3FIFOPolicy(4))
    cache.insert(k("a"))
    for _ in range(5):
        cache.hit(k("a"))
        cache.sweep(set())
    assert cache.policy.frequency(k("a")) == 3


def test_every_hit_counts_even_between_two_calls_of_select() -> None:
    cache = Cache(S3FIFOPolicy(4))
    cache.insert(k("a"))
    cache.hit(k("a"), k("a"))
    assert cache.policy.frequency(k("a")) == 2
    cache.now -= 1  # a hit whose clock did not move on is a hit all the same
    cache.hit(k("a"))
    assert cache.policy.frequency(k("a")) == 3


def test_the_newest_entry_is_kept_even_when_it_is_all_small_holds() -> None:
    cache = Cache(S3FIFOPolicy(1))
    cache.insert(k("a"))
    assert cache.insert(k("b")) == [(k("a"), "s3fifo")]
    cache.hit(k("b"))
    assert cache.insert(k("c")) == [(k("b"), "s3fifo")]  # b went through main and out
    assert list(cache.entries) == keys("c")


def test_sweeps_keep_idle_entries_unless_asked() -> None:
    cache = Cache(S3FIFOPolicy(10))
    for name in "abc":
        cache.insert(k(name))
    assert cache.sweep({k("a")}) == []
    assert list(cache.entries) == keys("a", "b", "c")

    idle = Cache(S3FIFOPolicy(10, evict_idle=True))
    for name in "abc":
        idle.insert(k(name))
    assert idle.sweep({k("a")}) == [(k("b"), "idle-session"), (k("c"), "idle-session")]
    assert idle.policy.small == keys("a")
    assert idle.policy.ghost == []


def test_keys_the_cache_dropped_by_itself_are_forgotten_without_a_ghost() -> None:
    cache = Cache(S3FIFOPolicy(4, small_ratio=0.25))
    for name in "abc":
        cache.insert(k(name))
    cache.drop(k("b"))  # config-changed, as Runtime.config_changed does
    cache.insert(k("d"))
    assert cache.policy.small == keys("a", "c", "d")
    assert cache.policy.ghost == []
    assert cache.policy.frequency(k("b")) is None


def test_a_rebuilt_key_starts_over_in_small() -> None:
    cache = Cache(S3FIFOPolicy(4))
    cache.insert(k("a"))
    cache.hit(k("a"))
    cache.insert(k("a"))  # a new config version replaces the entry under the same key
    assert cache.policy.small == keys("a")
    assert cache.policy.frequency(k("a")) == 0
    assert cache.policy.ghost == []


def test_entries_the_policy_never_saw_are_adopted() -> None:
    cache = Cache(S3FIFOPolicy(3))
    for name in "abc":
        cache.insert(k(name))
    cache.policy = S3FIFOPolicy(3)  # a policy swapped in under a full cache
    assert cache.insert(k("d")) == [(k("a"), "s3fifo")]
    assert cache.policy.small == keys("b", "c", "d")


def test_an_old_entry_the_policy_never_saw_is_adopted_before_the_new_one() -> None:
    cache = Cache(S3FIFOPolicy(1))
    cache.insert(k("a"))
    cache.entries[k("x")] = CacheEntry(k("x"), "1", None, built_at=0.0, last_used=0.0)
    cache.entries.move_to_end(k("x"), last=False)
    assert cache.insert(k("b")) == [(k("a"), "s3fifo"), (k("x"), "s3fifo")]
    assert list(cache.entries) == keys("b")


class Plain(Mapping[Key, CacheEntry]):
    """A mapping without __reversed__."""

    def __init__(self, entries: Mapping[Key, CacheEntry]) -> None:
        self._entries = dict(entries)

    def __getitem__(self, key: Key) -> CacheEntry:
        return self._entries[key]

    def __iter__(self) -> Iterator[Key]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


def test_any_mapping_in_least_recently_used_order_will_do() -> None:
    entries = {key: CacheEntry(key, "1", None, t, t) for t, key in enumerate(keys(*"abc"))}
    assert S3FIFOPolicy(2).select(Plain(entries), None, 3.0) == [(k("a"), "s3fifo")]


@pytest.mark.parametrize("max_entries", [1, 2, 3, 10])
def test_random_workloads_keep_every_invariant(max_entries: int) -> None:
    rng = random.Random(max_entries)
    cache = Cache(S3FIFOPolicy(max_entries, evict_idle=max_entries == 3))
    population = [k(str(i)) for i in range(4 * max_entries)]
    for _ in range(3000):
        roll = rng.random()
        present = list(cache.entries)
        if roll < 0.5 or not present:
            cache.insert(rng.choice(population))
        elif roll < 0.9:
            cache.hit(rng.choice(present))
        elif roll < 0.97:
            cache.sweep(set(rng.sample(present, len(present) // 2)))
        else:
            cache.drop(rng.choice(present))
        policy = cache.policy
        small, main, ghost = set(policy.small), set(policy.main), set(policy.ghost)
        assert len(cache.entries) <= max_entries
        assert not small & main
        assert small | main == set(cache.entries)
        assert not ghost & set(cache.entries)
        assert len(policy.ghost) <= policy.ghost_capacity
        assert all(0 <= (policy.frequency(key) or 0) <= 3 for key in cache.entries)
