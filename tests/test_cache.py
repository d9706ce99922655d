"""What the executor cache tells its eviction policy: insertions, hits and removals."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import pytest

from chatwright.cache import CacheEntry, EvictionPolicy, ExecutorCache, Key
from chatwright.plugins.eviction import IdleSessionPolicy, LRUPolicy

A: Key = ("ann", "helper")
B: Key = ("bob", "helper")
C: Key = ("cid", "helper")


class Recording(IdleSessionPolicy):
    """The default policy, writing down every event and every call of select()."""

    def __init__(self, max_entries: int, log: list[tuple[object, ...]]) -> None:
        super().__init__(max_entries)
        self.log = log

    def select(
        self, entries: Mapping[Key, CacheEntry], active: set[Key] | None, now: float
    ) -> list[tuple[Key, str]]:
        self.log.append(("select", "sweep" if active is not None else "insert"))
        return super().select(entries, active, now)

    def inserted(self, key: Key) -> None:
        self.log.append(("inserted", key))

    def hit(self, key: Key) -> None:
        self.log.append(("hit", key))

    def removed(self, key: Key, reason: str) -> None:
        self.log.append(("removed", key, reason))


def recording_cache(max_entries: int) -> tuple[ExecutorCache, list[tuple[object, ...]]]:
    log: list[tuple[object, ...]] = []

    async def build(key: Key) -> str:
        return f"agent for {key}"

    cache = ExecutorCache(
        build,
        Recording(max_entries, log),
        on_evict=lambda key, reason: log.append(("executor_evicted", key, reason)),
    )
    return cache, log


async def test_the_policy_hears_inserts_hits_and_removals_in_order() -> None:
    cache, log = recording_cache(max_entries=2)
    await cache.get(A, "v1")
    await cache.get(A, "v1")
    await cache.get(B, "v1")
    await cache.get(C, "v1")  # over capacity: A, the least recently used, goes
    assert log == [
        ("inserted", A),
        ("select", "insert"),
        ("hit", A),
        ("inserted", B),
        ("select", "insert"),
        ("inserted", C),
        ("select", "insert"),
        ("removed", A, "capacity"),
        ("executor_evicted", A, "capacity"),
    ]

    log.clear()
    await cache.get(B, "v2")  # a new config version: the old entry goes, the new one comes
    cache.evict_where(lambda key: key == C, "config-changed")
    cache.sweep(active=set())
    assert log == [
        ("removed", B, "config-changed"),
        ("executor_evicted", B, "config-changed"),
        ("inserted", B),
        ("select", "insert"),
        ("removed", C, "config-changed"),
        ("executor_evicted", C, "config-changed"),
        ("select", "sweep"),
        ("removed", B, "idle-session"),
        ("executor_evicted", B, "idle-session"),
    ]
    assert len(cache) == 0


async def test_concurrent_misses_are_one_insertion_and_no_hit() -> None:
    cache, log = recording_cache(max_entries=5)
    await asyncio.gather(*(cache.get(A, "v1") for _ in range(3)))
    assert log == [("inserted", A), ("select", "insert")]
    assert (cache.stats.hits, cache.stats.misses) == (0, 3)


async def test_a_failed_build_tells_the_policy_nothing() -> None:
    log: list[tuple[object, ...]] = []

    async def fail(key: Key) -> str:
        raise RuntimeError("no model")

    cache = ExecutorCache(fail, Recording(5, log))
    with pytest.raises(RuntimeError, match="no model"):
        await cache.get(A, "v1")
    assert log == []


async def test_removing_what_the_cache_does_not_hold_tells_nothing() -> None:
    cache, log = recording_cache(max_entries=5)
    assert cache.evict(A, "config-changed") is False
    assert log == []


async def test_a_policy_with_select_only_still_works() -> None:
    """Policies written before the events existed: the cache calls what they have."""

    class SelectOnly:
        def select(
            self, entries: Mapping[Key, CacheEntry], active: set[Key] | None, now: float
        ) -> list[tuple[Key, str]]:
            return [(k, "too-many") for k in list(entries)[:-1]]

    async def build(key: Key) -> str:
        return "agent"

    cache = ExecutorCache(build, SelectOnly())  # type: ignore[arg-type]
    await cache.get(A, "v1")
    await cache.get(A, "v1")
    await cache.get(B, "v1")
    await cache.get(B, "v2")
    assert list(cache._entries) == [B]
    assert cache.stats.evictions == {"too-many": 1, "config-changed": 1}


def test_a_subclass_inherits_events_that_do_nothing() -> None:
    class Minimal(EvictionPolicy):
        def select(
            self, entries: Mapping[Key, CacheEntry], active: set[Key] | None, now: float
        ) -> list[tuple[Key, str]]:
            return []

    policy = Minimal()
    assert policy.inserted(A) is None
    assert policy.hit(A) is None
    assert policy.removed(A, "capacity") is None
    # The bundled policies need only the order of the entries.
    for event in ("inserted", "hit", "removed"):
        assert getattr(IdleSessionPolicy, event) is getattr(EvictionPolicy, event)


async def test_an_older_build_finishing_last_does_not_replace_the_newer_entry() -> None:
    """Attack: a turn read version v1 and built it slowly; the agent changed, another turn
    built v2 and cached it; then the v1 build ended, evicted the newer entry as
    ``config-changed`` and took its place, so every later turn (reading v2) built again."""
    gates = {"v1": asyncio.Event(), "v2": asyncio.Event()}
    current = {"v": "v1"}
    builds: list[str] = []
    evicted: list[tuple[Key, str]] = []

    async def build(key: Key) -> str:
        version = current["v"]
        builds.append(version)
        await gates[version].wait()
        return f"built-{version}"

    cache = ExecutorCache(build, LRUPolicy(10), on_evict=lambda k, r: evicted.append((k, r)))
    first = asyncio.ensure_future(cache.get("agent", "v1"))
    while builds != ["v1"]:
        await asyncio.sleep(0)
    current["v"] = "v2"
    second = asyncio.ensure_future(cache.get("agent", "v2"))
    while builds != ["v1", "v2"]:
        await asyncio.sleep(0)
    gates["v2"].set()
    assert (await second).value == "built-v2"
    gates["v1"].set()
    # The late build serves the turn that asked for it ...
    assert (await first).value == "built-v1"
    # ... and the newer entry stays: no eviction, and a turn reading v2 hits it.
    entry = cache.peek("agent")
    assert entry is not None and entry.version == "v2", evicted
    assert evicted == []
    await cache.get("agent", "v2")
    assert builds == ["v1", "v2"]
    # A build that started later still replaces an older entry, as a change must.
    current["v"] = "v3"
    gates["v3"] = asyncio.Event()
    gates["v3"].set()
    assert (await cache.get("agent", "v3")).value == "built-v3"
    assert cache.peek("agent").version == "v3"  # type: ignore[union-attr]
    assert evicted == [("agent", "config-changed")]
