"""S3-FIFO against LRU on synthetic traces, through chatwright's real executor cache.

Each request is one ``ExecutorCache.get(key, version)``; hits are the cache's
own count. The clock moves on one second per request, as a real clock would
between turns. Run with ``-s`` to see the ratios.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable

import pytest
from chatwright.cache import ExecutorCache, Key
from chatwright.plugins.eviction import LRUPolicy

from chatwright_s3fifo import S3FIFOPolicy

REQUESTS = 20_000
KEYS = 1_000
ALPHA = 1.0
CAPACITY = 100
SCAN_EVERY = 1_000  # Zipf requests between two scans
SCAN_LENGTH = 2 * CAPACITY  # keys per scan, each requested once


def zipf_trace(rng: random.Random) -> list[Key]:
    weights = itertools.accumulate(1 / rank**ALPHA for rank in range(1, KEYS + 1))
    ranks = rng.choices(range(KEYS), cum_weights=list(weights), k=REQUESTS)
    return [f"agent{rank}" for rank in ranks]  # a cache key is an agent's name


def scan_trace(rng: random.Random) -> list[Key]:
    scanned = (f"scanned-once{i}" for i in itertools.count())
    trace: list[Key] = []
    for i, key in enumerate(zipf_trace(rng)):
        if i and i % SCAN_EVERY == 0:
            trace += itertools.islice(scanned, SCAN_LENGTH)
        trace.append(key)
    return trace


async def hit_ratio(trace: list[Key], policy: S3FIFOPolicy | LRUPolicy) -> float:
    now = 0.0

    def clock() -> float:
        return now

    async def build(key: Key) -> Key:
        return key

    cache = ExecutorCache(build, policy, clock=clock)
    for key in trace:
        now += 1
        await cache.get(key, "v1")
        assert len(cache) <= CAPACITY
    assert cache.stats.hits + cache.stats.misses == len(trace)
    return cache.stats.hits / len(trace)


@pytest.mark.parametrize(
    ("name", "make_trace", "margin"),
    [("zipf", zipf_trace, 0.02), ("zipf+scans", scan_trace, 0.05)],
)
async def test_s3fifo_hits_more_than_lru(
    name: str, make_trace: Callable[[random.Random], list[Key]], margin: float
) -> None:
    trace = make_trace(random.Random(2023))
    lru = await hit_ratio(trace, LRUPolicy(CAPACITY))
    s3fifo = await hit_ratio(trace, S3FIFOPolicy(CAPACITY))
    print(
        f"\n{name}: {len(trace)} requests, {KEYS} Zipf keys (alpha {ALPHA}), "
        f"{CAPACITY} entries: lru {lru:.4f}, s3fifo {s3fifo:.4f}"
    )
    assert s3fifo > lru + margin
