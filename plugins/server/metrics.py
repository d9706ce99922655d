"""Prometheus text metrics, written by hand (the format is small and stable).

Counters of the executor cache come from the runtime; the server adds turn
counts and a histogram of turn latency, and asks the storage for the number
of active sessions when scraped.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@dataclass
class Histogram:
    buckets: tuple[float, ...] = BUCKETS
    counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    total: float = 0.0
    count: int = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value
        self.count += 1

    def lines(self, name: str) -> list[str]:
        out, running = [], 0
        for bound, n in zip(self.buckets, self.counts, strict=False):
            running += n
            out.append(f'{name}_bucket{{le="{bound}"}} {running}')
        out.append(f'{name}_bucket{{le="+Inf"}} {self.count}')
        out.append(f"{name}_sum {self.total}")
        out.append(f"{name}_count {self.count}")
        return out


@dataclass
class ServerMetrics:
    turns: dict[str, int] = field(default_factory=lambda: {"ok": 0, "error": 0})
    turn_seconds: Histogram = field(default_factory=Histogram)

    def render(
        self,
        *,
        hits: int,
        misses: int,
        builds: int,
        evictions: dict[str, int],
        cached: int,
        active_sessions: int,
    ) -> str:
        lines = [
            "# HELP chatwright_cache_hits_total Turns served by a cached agent.",
            "# TYPE chatwright_cache_hits_total counter",
            f"chatwright_cache_hits_total {hits}",
            "# HELP chatwright_cache_misses_total Turns that needed an agent built.",
            "# TYPE chatwright_cache_misses_total counter",
            f"chatwright_cache_misses_total {misses}",
            "# HELP chatwright_cache_builds_total Agents built.",
            "# TYPE chatwright_cache_builds_total counter",
            f"chatwright_cache_builds_total {builds}",
            "# HELP chatwright_cache_evictions_total Agents dropped from the cache, by reason.",
            "# TYPE chatwright_cache_evictions_total counter",
            *(
                f'chatwright_cache_evictions_total{{reason="{reason}"}} {n}'
                for reason, n in sorted(evictions.items())
            ),
            "# HELP chatwright_cache_entries Agents in the cache now.",
            "# TYPE chatwright_cache_entries gauge",
            f"chatwright_cache_entries {cached}",
            "# HELP chatwright_active_sessions Active chat sessions in the database.",
            "# TYPE chatwright_active_sessions gauge",
            f"chatwright_active_sessions {active_sessions}",
            "# HELP chatwright_turns_total Chat turns by outcome.",
            "# TYPE chatwright_turns_total counter",
            *(
                f'chatwright_turns_total{{outcome="{k}"}} {v}'
                for k, v in sorted(self.turns.items())
            ),
            "# HELP chatwright_turn_seconds Latency of chat turns.",
            "# TYPE chatwright_turn_seconds histogram",
            *self.turn_seconds.lines("chatwright_turn_seconds"),
        ]
        return "\n".join(lines) + "\n"
