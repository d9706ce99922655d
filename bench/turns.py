"""Chat-turn costs: cached vs rebuilt agents, windowed vs whole history, event-loop lag.

Run: .venv/bin/python bench/turns.py [--turns N] [--messages M]

Everything runs in one process on a temporary SQLite database with the
example agent and the offline model (no network), the compared variants
alternating so machine noise hits both alike. Reported: medians and ratios.

1. A turn whose agent comes from the executor cache, next to a turn that
   rebuilds it (the original rebuilt every executor every 15 minutes).
2. Reading a chat's last 50 messages with the windowed query, next to reading
   the whole chat of M messages (what the original did before slicing).
3. The longest stall of the event loop while agents are built: a ticker task
   records how late it wakes up (the original blocked 150-300 ms per miss).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from chatwright.plugins.example import assistant as example
from chatwright.registry import LoadPolicy, Plugins
from chatwright.runtime import Runtime
from chatwright.settings import Settings
from chatwright.stores import NewMessage


async def ticker(lags: list[float], stop: asyncio.Event) -> None:
    interval = 0.001
    while not stop.is_set():
        before = time.perf_counter()
        await asyncio.sleep(interval)
        lags.append(time.perf_counter() - before - interval)


async def main(turns: int, messages: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'b.db'}"
        settings = Settings(storage={"url": url})  # type: ignore[arg-type]
        runtime = Runtime(settings, Plugins.load(LoadPolicy()))
        await runtime.start(upgrade=True)
        storage = runtime.storage
        await example.seed(storage, "offline:assistant")
        session = await storage.sessions.open("local", "assistant")
        chat = session.chat_id
        await runtime.chat("local", "assistant", chat, "list my tasks")  # warm imports

        hit, rebuilt = [], []
        lags: list[float] = []
        stop = asyncio.Event()
        tick = asyncio.create_task(ticker(lags, stop))
        build_lags: list[float] = []
        for _ in range(turns):
            start = time.perf_counter()
            await runtime.chat("local", "assistant", chat, "list my tasks")
            hit.append(time.perf_counter() - start)

            # The cache key is the agent's name: one build for every user.
            if not runtime.cache.evict("assistant", "bench"):
                raise RuntimeError("the agent was not in the cache: nothing to rebuild")
            lags.clear()
            start = time.perf_counter()
            await runtime.chat("local", "assistant", chat, "list my tasks")
            rebuilt.append(time.perf_counter() - start)
            build_lags.append(max(lags, default=0.0))
        stop.set()
        await tick

        other = (await storage.sessions.open("local", "assistant", chat_id=uuid.uuid4())).chat_id
        batch = [
            NewMessage("human", {"type": "human", "data": {"content": f"m{i}", "type": "human"}})
            for i in range(messages)
        ]
        await storage.messages.append("local", other, batch)
        window, whole = [], []
        for _ in range(turns):
            start = time.perf_counter()
            got = await storage.messages.window("local", other, 50)
            window.append(time.perf_counter() - start)
            assert len(got) == 50
            start = time.perf_counter()
            everything = await storage.messages.page("local", other, limit=messages + 1000)
            whole.append(time.perf_counter() - start)
            assert len(everything) >= messages
        await runtime.close()

    def report(name: str, values: list[float]) -> float:
        median = statistics.median(values)
        print(f"{name:44} median {median * 1000:8.2f} ms")
        return median

    a = report("turn, agent from the cache", hit)
    b = report("turn, agent rebuilt", rebuilt)
    print(f"{'':44} rebuild costs x{b / a:.1f} a cached turn")
    c = report("history: last 50 of the chat (windowed)", window)
    d = report(f"history: whole chat ({messages} messages)", whole)
    print(f"{'':44} whole chat costs x{d / c:.0f} the window")
    stall = statistics.median(build_lags) * 1000
    worst = max(build_lags) * 1000
    name = "longest event-loop stall during a rebuild"
    print(f"{name:44} median {stall:8.2f} ms, max {worst:.2f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--turns", type=int, default=15)
    parser.add_argument("--messages", type=int, default=10_000)
    args = parser.parse_args()
    asyncio.run(main(args.turns, args.messages))
