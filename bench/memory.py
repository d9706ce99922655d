"""Section 6: resident memory of one process after one turn each for many users of one agent.

Run: python -m bench.memory USERS DATABASE_FILE — prints the process's RSS in
bytes after the turns (and a garbage collection). The runner starts it once
with few and once with many users, each in a fresh process.
"""

from __future__ import annotations

import asyncio
import gc
import sys
from pathlib import Path

from bench.common import is_the_turn, rss_bytes, seed_agent
from bench.inprocess import runtime_for


async def serve_users(users: int, path: Path) -> int:
    url = f"sqlite:///{path}"
    agent = "bench_memory"
    runtime = runtime_for(url)
    await runtime.start(upgrade=True)
    try:
        await seed_agent(runtime.storage, agent, 1)
        for i in range(users):
            user = f"user-{i}"
            chat = (await runtime.storage.sessions.open(user, agent)).chat_id
            turn = await runtime.chat(user, agent, chat, "add an item")
            if not is_the_turn(turn.response, [call.name for call in turn.tool_calls]):
                raise RuntimeError(f"not the benchmark's turn: {turn.response!r}")
        gc.collect()
        return rss_bytes()
    finally:
        await runtime.close()


def main() -> None:
    if len(sys.argv) != 3 or not sys.argv[1].isdigit():
        raise SystemExit("usage: python -m bench.memory USERS DATABASE_FILE")
    print(asyncio.run(serve_users(int(sys.argv[1]), Path(sys.argv[2]))))


if __name__ == "__main__":
    main()
