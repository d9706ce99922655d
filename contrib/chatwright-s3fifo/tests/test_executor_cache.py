"""S3-FIFO inside chatwright's real executor cache, with a fake clock."""

from __future__ import annotations

from chatwright.cache import ExecutorCache, Key
from chatwright.plugins.eviction import LRUPolicy

from chatwright_s3fifo import S3FIFOPolicy


class Clock:
    """Moves on one second every time the cache reads it."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1
        return self.now


async def build(key: Key) -> str:
    return f"agent for {key}"


def cache_with(policy: S3FIFOPolicy | LRUPolicy) -> tuple[ExecutorCache, list[tuple[Key, str]]]:
    evicted: list[tuple[Key, str]] = []
    cache = ExecutorCache(
        build, policy, on_evict=lambda key, reason: evicted.append((key, reason)), clock=Clock()
    )
    return cache, evicted


def user(i: int) -> Key:
    """The cache key of the i-th agent (a key is an agent's name)."""
    return f"agent{i}"


HOT = "popular"


async def test_a_scan_of_new_users_does_not_push_out_a_popular_agent() -> None:
    for policy, survives in ((S3FIFOPolicy(10), True), (LRUPolicy(10), False)):
        cache, evicted = cache_with(policy)
        for _ in range(3):
            await cache.get(HOT, "v1")
        for i in range(30):
            await cache.get(user(i), "v1")
        assert (HOT in cache) is survives, type(policy).__name__
        assert len(cache) == 10
        assert len(evicted) == 21


async def test_evictions_are_reported_and_counted_as_s3fifo() -> None:
    cache, evicted = cache_with(S3FIFOPolicy(5))
    for i in range(8):
        await cache.get(user(i), "v1")
    assert evicted == [(user(i), "s3fifo") for i in range(3)]
    assert cache.stats.evictions == {"s3fifo": 3}
    assert cache.policy.small == [user(i) for i in range(3, 8)]  # type: ignore[attr-defined]


async def test_config_changes_and_sweeps_keep_the_policy_in_step() -> None:
    policy = S3FIFOPolicy(5)
    cache, evicted = cache_with(policy)
    for i in range(5):
        await cache.get(user(i), "v1")
    await cache.get(user(1), "v1")
    assert policy.frequency(user(1)) == 1  # the cache told of the hit
    await cache.get(user(0), "v2")  # rebuilt from a new config: starts over
    assert evicted == [(user(0), "config-changed")]
    assert policy.frequency(user(0)) == 0
    assert policy.small[-1] == user(0)

    cache.evict_where(lambda key: key == user(1), "config-changed")  # another process said so
    assert cache.sweep({user(2)}) == []  # s3fifo keeps idle entries
    assert set(policy.small) == {user(i) for i in (0, 2, 3, 4)}

    for i in range(5, 8):
        await cache.get(user(i), "v1")
    assert len(cache) == 5
    assert set(policy.small) | set(policy.main) == set(cache._entries)
    assert user(1) not in policy.ghost
