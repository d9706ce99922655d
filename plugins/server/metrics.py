"""Prometheus metrics of the server, kept with ``prometheus-client``.

The server counts turns by outcome (``ok``, ``error``, and ``refused`` for a
turn a spent token budget refused) and their latency, and the tokens the
turns it answered spent by kind and model, with their cost where
``usage.prices`` has the model (:meth:`ServerMetrics.used`); the executor cache's
counters (hits, misses, builds, evictions by reason) and its size are copied
from the runtime's :class:`~chatwright.cache.CacheStats` by :meth:`ServerMetrics.sync`,
after each turn, each sweeper pass and at each scrape. Each sweeper pass adds
the sessions it deactivated and its duration (:meth:`ServerMetrics.swept`). The number of active
sessions is asked from the storage when scraped.

With one process each app has its own registry. With ``serve --workers N``
each worker is a process of its own, and a scrape reaches one of them: then
``PROMETHEUS_MULTIPROC_DIR`` (set by ``serve``) makes prometheus-client keep
every worker's values in files there and add them up at each scrape, so that
counters are the server's, not one worker's. A worker's cache counters reach
those files at its next turn, sweeper pass or scrape.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

if TYPE_CHECKING:
    from chatwright.cache import CacheStats
    from chatwright.usage import TurnUsage

BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess() -> bool:
    return bool(os.environ.get(MULTIPROCESS_DIR))


def outcome_of(exc: BaseException) -> str:
    """How a failed turn is counted: ``refused`` when a budget stopped it before its model ran."""
    from chatwright.errors import BudgetExceededError

    return "refused" if isinstance(exc, BudgetExceededError) else "error"


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.turns = Counter("chatwright_turns", "Chat turns by outcome.", ["outcome"], registry=r)
        for outcome in ("ok", "error", "refused"):
            self.turns.labels(outcome)
        self.tokens = Counter(
            "chatwright_tokens",
            "Tokens spent by turns, by kind (input, output, cached: of input) and model.",
            ["kind", "model"],
            registry=r,
        )
        self.cost = Counter(
            "chatwright_cost",
            "Cost of turns in usage.currency, by model (models with a price only).",
            ["model"],
            registry=r,
        )
        self.turn_seconds = Histogram(
            "chatwright_turn_seconds", "Latency of chat turns.", buckets=BUCKETS, registry=r
        )
        self.hits = Counter("chatwright_cache_hits", "Turns served by a cached agent.", registry=r)
        self.misses = Counter(
            "chatwright_cache_misses", "Turns that needed an agent built.", registry=r
        )
        self.builds = Counter("chatwright_cache_builds", "Agents built.", registry=r)
        self.evictions = Counter(
            "chatwright_cache_evictions",
            "Agents dropped from the cache, by reason.",
            ["reason"],
            registry=r,
        )
        self.entries = Gauge(
            "chatwright_cache_entries",
            "Agents in the cache now.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.sessions_swept = Counter(
            "chatwright_sessions_swept",
            "Idle sessions the sweeper deactivated (this server's share, with several).",
            registry=r,
        )
        self.sweep_seconds = Histogram(
            "chatwright_sweep_seconds",
            "Duration of sweeper passes, eviction included.",
            buckets=BUCKETS,
            registry=r,
        )
        self._synced = (0, 0, 0)
        self._synced_evictions: dict[str, int] = {}

    def sync(self, stats: CacheStats, cached: int) -> None:
        """Add what the cache counted since the last sync; set its size."""
        hits, misses, builds = self._synced
        self.hits.inc(stats.hits - hits)
        self.misses.inc(stats.misses - misses)
        self.builds.inc(stats.builds - builds)
        self._synced = (stats.hits, stats.misses, stats.builds)
        for reason, count in stats.evictions.items():
            new = count - self._synced_evictions.get(reason, 0)
            if new:
                self.evictions.labels(reason).inc(new)
            self._synced_evictions[reason] = count
        self.entries.set(cached)

    def used(self, usage: TurnUsage | None) -> None:
        """Count the tokens (and cost) a turn spent."""
        if usage is None or not usage.model_calls:
            return
        for kind, tokens in (
            ("input", usage.input_tokens),
            ("output", usage.output_tokens),
            ("cached", usage.cached_tokens),
        ):
            if tokens > 0:
                self.tokens.labels(kind, usage.model).inc(tokens)
        if usage.cost is not None and usage.cost > 0:
            self.cost.labels(usage.model).inc(usage.cost)

    def ended(self, outcome: str, usage: TurnUsage | None = None) -> None:
        """Count a turn that ended: its outcome and what it spent."""
        self.turns.labels(outcome).inc()
        self.used(usage)

    def swept(self, deactivated: int, seconds: float) -> None:
        """Count one sweeper pass."""
        self.sessions_swept.inc(deactivated)
        self.sweep_seconds.observe(seconds)

    def render(self, *, active_sessions: int | None) -> str:
        """The Prometheus text: every worker's values added up in multiprocess mode.

        :param active_sessions: from the database; None when it did not answer, and
            the sample is then left out (``chatwright_database_up`` says 0).
        """
        if multiprocess():
            registry = CollectorRegistry()
            # prometheus-client leaves this constructor unannotated.
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        else:
            registry = self.registry
        # Asked from the database, the same in every worker: not a per-process value.
        up = active_sessions is not None
        sessions = [
            "# HELP chatwright_database_up Whether the database answered this scrape.",
            "# TYPE chatwright_database_up gauge",
            f"chatwright_database_up {int(up)}",
            "# HELP chatwright_active_sessions Active chat sessions in the database.",
            "# TYPE chatwright_active_sessions gauge",
        ]
        if up:
            sessions.append(f"chatwright_active_sessions {active_sessions}")
        return generate_latest(registry).decode() + "\n".join(sessions) + "\n"
