"""Section 1: HTTP turns per second and latency, closed loop, four servers side by side.

Each target is a real server process (uvicorn) on a free loopback port:
chatwright on SQLite and on PostgreSQL (``chatwright serve``, local auth, one
benchmark agent per client), and the bare LangChain app of
:mod:`bench.apps.langchain_app` without and with LangGraph's SQLite
checkpointer. ``clients`` concurrent clients each run turns on their own chat,
one after the other (a closed loop); a round runs ``turns`` turns per client on
one target, and the rounds go A B C D, A B C D, ... so that machine noise hits
every target alike.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.common import (
    Served,
    chatwright_script,
    clean_env,
    cpu_seconds,
    free_port,
    is_the_turn,
    seed_agent,
    server,
)
from bench.inprocess import runtime_for

WARMUP = 2


@dataclass
class Target:
    name: str
    base: str
    pid: int
    chats: list[tuple[str, str]] = field(default_factory=list)
    """(agent name, chat id) per client."""
    rates: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    """The server process's CPU seconds per good turn, per round (none without /proc)."""
    latencies: list[float] = field(default_factory=list)
    """Of the good turns."""
    failures: Counter[str] = field(default_factory=Counter)
    attempts: int = 0


async def seed_chatwright(url: str, clients: int, turns: int) -> None:
    runtime = runtime_for(url)
    await runtime.start(upgrade=True)
    try:
        for i in range(clients):
            await seed_agent(runtime.storage, f"bench_{i}", turns)
    finally:
        await runtime.close()


@contextmanager
def chatwright_server(name: str, url: str, tmp: Path, clients: int, turns: int) -> Iterator[Served]:
    asyncio.run(seed_chatwright(url, clients, turns))
    port = free_port()
    argv = [chatwright_script(), "--database", url, "serve", "--host", "127.0.0.1"]
    argv += ["--port", str(port)]
    # Only the bundled plugins: a plugin installed next to chatwright must not weigh in.
    env = clean_env(CHATWRIGHT_LOAD_PLUGINS="")
    with server(name, argv, port, env, tmp) as served:
        yield served


@contextmanager
def langchain_server(name: str, tmp: Path, turns: int, checkpoints: bool) -> Iterator[Served]:
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", "--factory"]
    argv += ["bench.apps.langchain_app:app_from_environment", "--host", "127.0.0.1"]
    # uvicorn's parser and loop as `chatwright serve` has them (h11; uvloop when installed).
    argv += ["--http", "h11"]
    argv += ["--port", str(port)]
    env = clean_env(BENCH_ITEMS_DB=str(tmp / f"{name}-items.db"), BENCH_TURNS=str(turns))
    if checkpoints:
        env["BENCH_CHECKPOINT_DB"] = str(tmp / f"{name}-checkpoints.db")
    with server(name, argv, port, env, tmp) as served:
        yield served


async def open_chats(target: Target, clients: int) -> None:
    async with httpx.AsyncClient(base_url=target.base, timeout=60) as client:
        for i in range(clients):
            agent = f"bench_{i}"
            answer = await client.post("/api/sessions", json={"agent_name": agent, "new": True})
            answer.raise_for_status()
            target.chats.append((agent, answer.json()["chat_id"]))


async def closed_loop(target: Target, turns: int) -> float:
    """Every client runs ``turns`` turns on its chat; return the wall time.

    Each good turn's latency goes to ``target.latencies``; a turn answered
    with an error status, or not the benchmark's turn, is counted in
    ``target.failures`` by its reason: under load a server may refuse turns,
    which is a result, not a reason to stop.
    """
    limits = httpx.Limits(max_connections=len(target.chats))
    async with httpx.AsyncClient(base_url=target.base, timeout=120, limits=limits) as client:

        async def one_client(agent: str, chat_id: str) -> None:
            body = {"agent_name": agent, "chat_id": chat_id, "message": "add an item"}
            for _ in range(turns):
                start = time.perf_counter()
                answer = await client.post("/api/chat", json=body)
                elapsed = time.perf_counter() - start
                if answer.status_code != 200:
                    target.failures[f"{answer.status_code} {answer.text[:120]}"] += 1
                    continue
                data = answer.json()
                names = [call["name"] for call in data["tool_calls"]]
                if is_the_turn(data["response"], names):
                    target.latencies.append(elapsed)
                else:
                    # After a failed turn the scripted model may be one reply ahead once.
                    target.failures["not the benchmark's turn"] += 1

        start = time.perf_counter()
        await asyncio.gather(*(one_client(a, c) for a, c in target.chats))
        return time.perf_counter() - start


TARGETS = ("chatwright-sqlite", "chatwright-pg", "floor", "langgraph")


@contextmanager
def targets(
    tmp: Path, names: Sequence[str], pg_url: str | None, clients: int, turns_per_chat: int
) -> Iterator[list[Target]]:
    """Start the servers ``names`` (chatwright-pg only with ``pg_url``); stop them at the end."""
    starters: dict[str, Callable[[], AbstractContextManager[Served]]] = {
        "chatwright-sqlite": lambda: chatwright_server(
            "chatwright-sqlite", f"sqlite:///{tmp / 'chatwright.db'}", tmp, clients, turns_per_chat
        ),
        "floor": lambda: langchain_server("floor", tmp, turns_per_chat, checkpoints=False),
        "langgraph": lambda: langchain_server("langgraph", tmp, turns_per_chat, checkpoints=True),
    }
    if pg_url is not None:
        starters["chatwright-pg"] = lambda: chatwright_server(
            "chatwright-pg", pg_url, tmp, clients, turns_per_chat
        )
    with ExitStack() as stack:
        served = {
            name: stack.enter_context(starters[name]())
            for name in TARGETS
            if name in names and name in starters
        }
        yield [Target(name, *made) for name, made in served.items()]


def run(
    tmp: Path, names: Sequence[str], pg_url: str | None, clients: int, rounds: int, turns: int
) -> list[Target]:
    """Warm up, then ``rounds`` interleaved rounds of ``turns`` turns per client per target."""
    with targets(tmp, names, pg_url, clients, WARMUP + rounds * turns) as made:
        for target in made:
            asyncio.run(open_chats(target, clients))
            asyncio.run(closed_loop(target, WARMUP))
            target.latencies.clear()
            target.failures.clear()
        for _ in range(rounds):
            for target in made:
                before = len(target.latencies)
                used = cpu_seconds(target.pid)
                elapsed = asyncio.run(closed_loop(target, turns))
                good = len(target.latencies) - before
                spent = cpu_seconds(target.pid)
                target.rates.append(good / elapsed)
                if used is not None and spent is not None and good:
                    target.cpu.append((spent - used) / good)
                target.attempts += len(target.chats) * turns
    return made
