"""Sweeping N idle sessions on PostgreSQL, and what it does to a server's other requests.

Run: .venv/bin/python bench/sweep.py [--sessions N] [--rounds R] [--batch B ...] [--hook]

A fresh database (``cw_bench_sweep_<hex>``, dropped at the end) on the server at
``CHATWRIGHT_TEST_DATABASE_URL`` (default ``postgresql://postgres@127.0.0.1:5432/postgres``)
gets N idle sessions (default 1,000,000) in one ``INSERT ... SELECT FROM
generate_series``, before each round, followed by ``VACUUM ANALYZE`` and a
``CHECKPOINT`` so that every round starts alike. Then, per round:

1. **floor**: PostgreSQL's own cost of deactivating them, one ``DELETE`` of all
   idle rows with nothing returned: the least any sweeper can take.
2. **pass**: one sweeper pass (:func:`chatwright.sessions.sweep`) per batch size,
   inside a running server application (its lifespan started, its own sweeper
   idle), while a ticker task wakes up every millisecond and a client asks
   ``GET /healthz`` every 10 ms through the application (in process, no
   socket). Reported: the pass's duration, the ticker's worst lateness and the
   slowest ``/healthz``. With ``--hook`` a plugin implements
   ``session_deactivated`` (counting), so the pass fetches every row and fires
   the hook once per session.

The process's own CPU time for the pass (less what the ticker and the checks
take) is reported too: divided by the batches, it is how long one step keeps
the event loop busy on average, whatever else the machine is doing. Each pass
is followed by as long a wait (10 s at most) with the same ticker and checks
and no sweep: the stalls the machine causes on its own, to read the pass's
next to. Medians over the rounds are printed, with the worst stall seen in any
round and the median of the rounds' 99th percentiles.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager

import httpx
import psycopg
from sqlalchemy.engine import make_url

from chatwright import hookimpl
from chatwright.plugins.server.app import create_app
from chatwright.registry import LoadPolicy, Plugins
from chatwright.runtime import Runtime
from chatwright.sessions import sweep
from chatwright.stores import ChatSession
from chatwright.testing import settings

ADMIN = os.environ.get(
    "CHATWRIGHT_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


class Counting:
    """A plugin that implements ``session_deactivated`` and only counts."""

    def __init__(self) -> None:
        self.seen = 0

    @hookimpl
    def session_deactivated(self, session: ChatSession, reason: str) -> None:
        self.seen += 1


@asynccontextmanager
async def fresh_database() -> AsyncIterator[str]:
    name = f"cw_bench_sweep_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(ADMIN).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def fill(url: str, count: int) -> float:
    """Replace every session with ``count`` active ones idle for two hours; seconds taken."""
    start = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE chat_sessions, active_sessions")
        conn.execute(
            "WITH s AS (INSERT INTO chat_sessions (id, chat_id, user_id, agent_name, "
            "created_at, updated_at, metadata) "
            "SELECT gen_random_uuid(), gen_random_uuid(), 'user-' || (g %% 50000), 'assistant', "
            "now() - interval '2 hours', now() - interval '2 hours' + g * interval '1 us', "
            "'{}' FROM generate_series(1, %s) AS g RETURNING id, user_id, agent_name, updated_at) "
            "INSERT INTO active_sessions (session_id, user_id, agent_name, updated_at) "
            "SELECT * FROM s",
            (count,),
        )
        conn.execute("VACUUM ANALYZE chat_sessions, active_sessions")
        conn.execute("CHECKPOINT")
    return time.perf_counter() - start


def floor(url: str) -> float:
    """Seconds PostgreSQL takes to deactivate every idle session in one statement."""
    with psycopg.connect(url) as conn:
        start = time.perf_counter()
        conn.execute("DELETE FROM active_sessions WHERE updated_at < now() - interval '1 hour'")
        conn.commit()
        return time.perf_counter() - start


async def ticker(lags: list[float], stop: asyncio.Event) -> None:
    interval = 0.001
    while not stop.is_set():
        before = time.perf_counter()
        await asyncio.sleep(interval)
        lags.append(time.perf_counter() - before - interval)


async def health_checks(client: httpx.AsyncClient, times: list[float], stop: asyncio.Event) -> None:
    """``GET /healthz`` every 10 ms (far more often than a load balancer): each one's latency."""
    while not stop.is_set():
        before = time.perf_counter()
        response = await client.get("/healthz")
        times.append(time.perf_counter() - before)
        if response.status_code != 200:
            raise RuntimeError(f"/healthz answered {response.status_code}: {response.text}")
        await asyncio.sleep(0.01)


def p99(values: list[float]) -> float:
    if len(values) < 2:
        return max(values, default=0.0)
    return statistics.quantiles(values, n=100, method="inclusive")[98]


async def watched(client: httpx.AsyncClient, work: Awaitable[object]) -> dict[str, float]:
    """Await ``work`` with the ticker and the health checks running; their figures."""
    lags: list[float] = []
    checks: list[float] = []
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(ticker(lags, stop)),
        asyncio.create_task(health_checks(client, checks, stop)),
    ]
    await asyncio.sleep(0.05)
    start, cpu = time.perf_counter(), time.process_time()
    await work
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    stop.set()
    await asyncio.gather(*tasks)
    return {
        "seconds": seconds,
        "cpu": cpu,
        "worst_tick": max(lags, default=0.0),
        "p99_tick": p99(lags),
        "worst_healthz": max(checks, default=0.0),
        "p99_healthz": p99(checks),
        "healthz": len(checks),
    }


async def one_pass(url: str, batch: int, hook: bool) -> dict[str, dict[str, float]]:
    """A sweeper pass inside a started application, watched; then as long a wait, watched.

    The wait without a sweep gives the stalls this machine causes on its own
    (other processes, the collector): the pass's figures are to be read next to them.
    """
    plugins = Plugins.load(LoadPolicy())
    counting = Counting()
    if hook:
        plugins.register(counting, "counting")
    cfg = settings(
        plugins,
        storage={"url": url.replace("postgresql://", "postgresql+psycopg://", 1)},
        sessions={"sweep_batch": batch, "sweep_interval": 86400.0},
    )
    app = create_app(cfg, plugins)
    runtime: Runtime = app.state.runtime
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client,
    ):
        await client.get("/healthz")  # warm: a pooled connection, the route's imports
        pass_task = asyncio.ensure_future(sweep(runtime))  # two hours old: every session idle
        swept = await watched(client, pass_task)
        report = pass_task.result()
        idle = await watched(client, asyncio.sleep(min(swept["seconds"], 10.0)))
    if report.deactivated != counting.seen and hook:
        raise RuntimeError(f"hook fired {counting.seen} times for {report.deactivated} sessions")
    swept["deactivated"] = report.deactivated
    # This process's CPU for the pass itself: less what the ticker and the checks
    # take (their rate while nothing sweeps). Nothing else runs on its event loop,
    # so per batch it is how long one step of the pass keeps the loop busy, on average.
    own = max(0.0, swept["cpu"] - idle["cpu"] / idle["seconds"] * swept["seconds"])
    swept["sweep_cpu"] = own
    swept["cpu_per_batch"] = own / report.batches
    return {"pass": swept, "idle": idle}


def stalls(results: list[dict[str, float]]) -> str:
    tick = max(x["worst_tick"] for x in results) * 1000
    tick99 = statistics.median(x["p99_tick"] for x in results) * 1000
    health = max(x["worst_healthz"] for x in results) * 1000
    health99 = statistics.median(x["p99_healthz"] for x in results) * 1000
    return (
        f"tick worst {tick:6.1f} ms, p99 {tick99:5.1f} ms; "
        f"/healthz worst {health:6.1f} ms, p99 {health99:5.1f} ms"
    )


async def main(count: int, rounds: int, batches: list[int], hook: bool) -> None:
    async with fresh_database() as url:
        plugins = Plugins.load(LoadPolicy())
        cfg = settings(
            plugins, storage={"url": url.replace("postgresql://", "postgresql+psycopg://", 1)}
        )
        await (await Runtime(cfg, plugins).start(upgrade=True)).close()
        floors: list[float] = []
        passes: dict[int, list[dict[str, float]]] = {b: [] for b in batches}
        idles: list[dict[str, float]] = []
        for r in range(rounds):
            filled = fill(url, count)
            floors.append(floor(url))
            print(f"round {r + 1}: filled {count:,} in {filled:.1f} s; floor {floors[-1]:.2f} s")
            for batch in batches:
                fill(url, count)
                result = await one_pass(url, batch, hook)
                if result["pass"]["deactivated"] != count:
                    raise RuntimeError(f"swept {result['pass']['deactivated']} of {count}")
                passes[batch].append(result["pass"])
                idles.append(result["idle"])
                print(
                    f"  batch {batch:>6}: {result['pass']['seconds']:.2f} s, python CPU "
                    f"{result['pass']['sweep_cpu']:.2f} s "
                    f"({result['pass']['cpu_per_batch'] * 1000:.1f} ms a batch); "
                    f"{stalls([result['pass']])}\n"
                    f"  {'no sweep':>12}: {stalls([result['idle']])}"
                )
        print()
        hooked = "with a session_deactivated plugin" if hook else "no session_deactivated plugin"
        print(f"{count:,} idle sessions, PostgreSQL, {rounds} round(s), {hooked}:")
        print(f"  floor: one DELETE of them all    median {statistics.median(floors):6.2f} s")
        for batch, results in passes.items():
            median = statistics.median(x["seconds"] for x in results)
            cpu = statistics.median(x["sweep_cpu"] for x in results)
            step = statistics.median(x["cpu_per_batch"] for x in results) * 1000
            line = f"  sweep pass, batch {batch:>6}       median {median:6.2f} s"
            print(f"{line}   {stalls(results)}")
            print(f"{'':4}python CPU of the pass: median {cpu:.2f} s, {step:.1f} ms a batch")
        print(f"  no sweep (the machine's own){'':19}{stalls(idles)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, nargs="+", default=[2000])
    parser.add_argument("--hook", action="store_true", help="a plugin implements the hook")
    args = parser.parse_args()
    # Stopped early, the database is still dropped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    asyncio.run(main(args.sessions, args.rounds, args.batch, args.hook))
