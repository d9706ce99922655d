"""The turn path under load, measured from outside: real servers, a real PostgreSQL.

Run: .venv/bin/python bench/load.py [--chats N] [--warmup N] [--turns N] [--interval N]
     [--skip burst|drift] [--drift-on SQLite|PostgreSQL]

Everything goes through ``chatwright`` itself: ``chatwright init --example``
and ``chatwright agents add`` set the database up, ``chatwright serve`` (one
process, default settings) answers over HTTP, and nothing of chatwright is
imported here. PostgreSQL databases (``cw_load_<hex>``) are made on the server
at ``CHATWRIGHT_TEST_DATABASE_URL`` (default
``postgresql://postgres@127.0.0.1:5432/postgres``) and dropped at the end.

1. **Connections.** ``--chats`` chats at once (default 200), each opening its
   session and then taking ``--chat-turns`` turns one after the other, on an
   agent whose scripted model sleeps a little per reply so that turns overlap.
   Reported: the answers by status (no 503 is the goal) and the most
   connections the server held on the database at once, sampled from
   ``pg_stat_activity`` while the load ran, by kind: the pool's (bound:
   ``storage.pool_size`` + ``storage.max_overflow``), the config listener's
   and the sweeper lock's.
2. **Memory drift.** A few clients (``--clients``) in a closed loop on the
   example agent (the ``offline`` model, a ``crud`` tool in every turn: add a
   task, complete it, delete it), on SQLite and on PostgreSQL. After
   ``--warmup`` turns the server's resident memory (``VmRSS`` of
   ``/proc/<pid>/status``) is read every ``--interval`` turns until ``--turns``
   more; reported: the growth in MB per 10,000 turns, the median of the slopes
   over the intervals (goal: at most 1).

The test ``tests/test_load.py`` runs part 1 (and a short part 2) with these helpers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
from sqlalchemy.engine import make_url

ADMIN_URL = os.environ.get(
    "CHATWRIGHT_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
CONSOLE_SCRIPT = Path(sys.executable).parent / "chatwright"
SLOW_AGENT = "load_slow"
EXAMPLE_AGENT = "assistant"


# -- the database and the command line ---------------------------------------------------


def libpq(url: str, database: str | None = None) -> str:
    """A URL as psycopg takes it, optionally on another database of the same server."""
    parsed = make_url(url).set(drivername="postgresql")
    if database is not None:
        parsed = parsed.set(database=database)
    return parsed.render_as_string(hide_password=False)


@contextlib.contextmanager
def postgres_database(admin_url: str = ADMIN_URL) -> Iterator[tuple[str, str]]:
    """(name, URL) of a new, empty database on the server of ``admin_url``; dropped after."""
    name = f"cw_load_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(libpq(admin_url), autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield name, libpq(admin_url, name)
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def environment(**extra: str) -> dict[str, str]:
    """This process's environment without any ``CHATWRIGHT_*`` variable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATWRIGHT_")}
    env.update(extra)
    return env


def chatwright(database: str, *args: str, cwd: Path) -> str:
    """Run the console script on ``database``; its output (it must succeed)."""
    proc = subprocess.run(
        [str(CONSOLE_SCRIPT), "--database", database, *args],
        cwd=cwd,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"chatwright {' '.join(args)}: exit {proc.returncode}\n{proc.stderr}")
    return proc.stdout


def set_up(database: str, cwd: Path, *, replies: int = 0, sleep: float = 0.0) -> None:
    """``init --example``; with ``replies``, also the scripted agent :data:`SLOW_AGENT`.

    The scripted model keeps one position per user in its script, and every chat
    here is the local user's: it needs one reply per turn of the whole run.
    """
    cwd.mkdir(parents=True, exist_ok=True)
    chatwright(database, "init", "--example", cwd=cwd)
    if replies:
        script = json.dumps([{"content": "ok", "sleep": sleep}] * replies)
        chatwright(
            database,
            "agents",
            "add",
            SLOW_AGENT,
            "--prompt",
            "A load test agent.",
            "--model",
            "scripted:load",
            "--setting",
            f"responses={script}",
            cwd=cwd,
        )


# -- a server process --------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``chatwright serve`` on a free loopback port, in a session of its own; output to a log."""

    def __init__(self, database: str, cwd: Path, **settings: str) -> None:
        cwd.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = cwd / f"server-{self.port}.log"
        env = environment(CHATWRIGHT_STORAGE__URL=database, **settings)
        with self.log_path.open("w", encoding="utf-8") as log:
            self.proc = subprocess.Popen(
                [str(CONSOLE_SCRIPT), "serve", "--host", "127.0.0.1", "--port", str(self.port)],
                cwd=cwd,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"server not ready within {timeout} s:\n{self.log()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)

    def __enter__(self) -> Server:
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` in MB (``VmRSS``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"process {pid} reports no VmRSS")


# -- connections held on the database -------------------------------------------------------

LISTENER = "LISTEN chatwright_config"
# The sweeper's lock, on a connection of its own (not pg_advisory_xact_lock: a pool's).
LOCK = ("pg_try_advisory_lock", "pg_advisory_unlock")


@dataclass
class Connections:
    """The most connections to one database seen at once while sampling, by kind."""

    pool: int = 0
    listener: int = 0
    lock: int = 0
    total: int = 0
    samples: int = 0

    def add(self, queries: list[str]) -> None:
        listener = sum(1 for q in queries if q == LISTENER)
        lock = sum(1 for q in queries if any(f in q for f in LOCK))
        self.listener = max(self.listener, listener)
        self.lock = max(self.lock, lock)
        self.pool = max(self.pool, len(queries) - listener - lock)
        self.total = max(self.total, len(queries))
        self.samples += 1


@contextlib.contextmanager
def sampling(database_url: str, every: float = 0.01) -> Iterator[Connections]:
    """Sample ``pg_stat_activity`` for the database of ``database_url`` on a thread.

    The sampling connection itself sits on another database of the server.
    """
    name = make_url(database_url).database
    seen = Connections()
    stop = threading.Event()
    conn = psycopg.connect(libpq(database_url, "postgres"), autocommit=True)

    def run() -> None:
        while not stop.is_set():
            rows = conn.execute(
                "SELECT coalesce(query, '') FROM pg_stat_activity WHERE datname = %s "
                "AND backend_type = 'client backend'",
                (name,),
            ).fetchall()
            seen.add([row[0] for row in rows])
            stop.wait(every)

    thread = threading.Thread(target=run, name="pg_stat_activity", daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join()
        conn.close()


# -- part 1: many chats at once -------------------------------------------------------------


@dataclass
class Burst:
    """What ``chats`` concurrent chats got back."""

    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    turns: int = 0
    seconds: float = 0.0

    def record(self, response: httpx.Response) -> None:
        self.statuses[response.status_code] += 1
        if response.status_code != 200:
            with contextlib.suppress(ValueError):
                self.errors[str(response.json().get("error"))] += 1


async def burst(base_url: str, chats: int, turns: int, agent: str = SLOW_AGENT) -> Burst:
    """``chats`` chats at once, each opening a session then taking ``turns`` turns in a row."""
    result = Burst()
    # No idle connection is kept for a later request. `chatwright serve` (uvicorn) closes
    # a connection idle for 5 s, counted from when it wrote the last response; the client
    # counts from when it read that response, which under load is seconds later (4 s was
    # measured with the CPUs busy). A pooled connection the client believed idle for under
    # a second was thus already closed by the server, and the next POST on it was reset.
    # No keepalive_expiry bounds that lag, so each request gets a fresh connection (at
    # most ``chats`` at once, as before).
    limits = httpx.Limits(max_connections=chats + 10, max_keepalive_connections=0)
    start = asyncio.Event()

    async def one(client: httpx.AsyncClient, i: int) -> None:
        await start.wait()
        opened = await client.post("/api/sessions", json={"agent_name": agent, "new": True})
        result.record(opened)
        if opened.status_code != 200:
            return
        chat_id = opened.json()["chat_id"]
        for t in range(turns):
            answer = await client.post(
                "/api/chat",
                json={"agent_name": agent, "chat_id": chat_id, "message": f"chat {i} turn {t}"},
            )
            result.record(answer)
            result.turns += answer.status_code == 200

    async with httpx.AsyncClient(base_url=base_url, timeout=120, limits=limits) as client:
        tasks = [asyncio.create_task(one(client, i)) for i in range(chats)]
        began = time.monotonic()
        start.set()
        await asyncio.gather(*tasks)
        result.seconds = time.monotonic() - began
    return result


# -- part 2: memory under steady load ----------------------------------------------------------


@dataclass
class Drift:
    """Resident memory after warm-up, read every ``interval`` turns."""

    interval: int
    readings: list[tuple[int, float]] = field(default_factory=list)
    """(turns done, MB)."""
    failures: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    def slopes(self) -> list[float]:
        """MB per 10,000 turns over each interval."""
        pairs = zip(self.readings, self.readings[1:], strict=False)
        return [(b[1] - a[1]) / (b[0] - a[0]) * 10_000 for a, b in pairs]

    def per_10k(self) -> float:
        """The median of :meth:`slopes`."""
        return statistics.median(self.slopes())


class Turns:
    """One client's closed loop on the example agent: add a task, complete it, delete it."""

    def __init__(self, client: httpx.AsyncClient, chat_id: str, failures: Counter[str]) -> None:
        self.client = client
        self.chat_id = chat_id
        self.failures = failures
        self.step = 0
        self.task_id: int | None = None

    async def next(self) -> None:
        if self.step % 3 == 0 or self.task_id is None:
            message = f"add a task to buy item {self.step}"
        elif self.step % 3 == 1:
            message = f"complete task {self.task_id}"
        else:
            message = f"delete task {self.task_id}"
        self.step += 1
        answer = await self.client.post(
            "/api/chat",
            json={"agent_name": EXAMPLE_AGENT, "chat_id": self.chat_id, "message": message},
        )
        calls = answer.json().get("tool_calls") if answer.status_code == 200 else None
        if not calls or calls[0].get("error"):
            self.failures[f"{answer.status_code}: {message.split(' ', 2)[0]}"] += 1
            self.task_id = None
            return
        created = calls[0].get("result")
        if isinstance(created, dict) and "created" in created:
            self.task_id = int(created["created"]["id"])
        elif message.startswith("delete"):
            self.task_id = None


async def drift(
    base_url: str, pid: int, *, clients: int, warmup: int, turns: int, interval: int
) -> Drift:
    """Closed-loop turns from ``clients`` clients; RSS of ``pid`` every ``interval`` turns."""
    result = Drift(interval)
    done = 0
    next_reading = warmup
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
        loops = []
        for _ in range(clients):
            opened = await client.post(
                "/api/sessions", json={"agent_name": EXAMPLE_AGENT, "new": True}
            )
            opened.raise_for_status()
            loops.append(Turns(client, opened.json()["chat_id"], result.failures))
        total = warmup + turns
        lock = asyncio.Lock()
        began = 0.0

        async def loop(turner: Turns) -> None:
            nonlocal done, next_reading, began
            while done < total:
                await turner.next()
                async with lock:
                    done += 1
                    if done == next_reading:
                        if not result.readings:
                            began = time.monotonic()
                        result.readings.append((done, rss_mb(pid)))
                        next_reading += interval

        await asyncio.gather(*(loop(t) for t in loops))
        result.seconds = time.monotonic() - began
    return result


# -- the report ------------------------------------------------------------------------------


def report_burst(name: str, got: Burst, seen: Connections, bound: int) -> None:
    statuses = ", ".join(f"{code}: {n}" for code, n in sorted(got.statuses.items()))
    print(f"{name}: {sum(got.statuses.values())} requests in {got.seconds:.1f} s ({statuses})")
    for error, n in got.errors.most_common(3):
        print(f"    {n} x {error}")
    print(
        f"    connections at most: {seen.total} ({seen.pool} pool, bound {bound}; "
        f"{seen.listener} listener; {seen.lock} sweeper lock), {seen.samples} samples"
    )


def report_drift(name: str, got: Drift) -> None:
    slopes = ", ".join(f"{s:+.1f}" for s in got.slopes())
    first, last = got.readings[0], got.readings[-1]
    rate = (last[0] - first[0]) / got.seconds if got.seconds else 0.0
    print(
        f"{name}: {got.per_10k():+.2f} MB per 10,000 turns (median of slopes {slopes}); "
        f"RSS {first[1]:.1f} -> {last[1]:.1f} MB over {last[0] - first[0]} turns, "
        f"{rate:.0f} turns/s"
    )
    if got.failures:
        print(f"    failed turns: {dict(got.failures)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--chats", type=int, default=200)
    parser.add_argument("--chat-turns", type=int, default=3)
    parser.add_argument("--sleep", type=float, default=0.3, help="seconds per scripted reply")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--turns", type=int, default=6000)
    parser.add_argument("--interval", type=int, default=1000)
    parser.add_argument("--skip", choices=["burst", "drift"], action="append", default=[])
    parser.add_argument(
        "--drift-on",
        choices=["SQLite", "PostgreSQL"],
        action="append",
        help="part 2 on this database only (repeatable; default: both)",
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="cw-load-") as tmp:
        work = Path(tmp)
        if "burst" not in args.skip:
            with postgres_database() as (_, url):
                set_up(url, work / "burst", replies=args.chats * args.chat_turns, sleep=args.sleep)
                with Server(url, work / "burst") as server, sampling(url) as seen:
                    got = asyncio.run(burst(server.url, args.chats, args.chat_turns))
                report_burst(f"{args.chats} chats at once, PostgreSQL", got, seen, 5 + 10)
        if "drift" not in args.skip:
            sqlite = f"sqlite:///{work / 'drift.db'}"
            with postgres_database() as (_, url):
                for name, database in (("SQLite", sqlite), ("PostgreSQL", url)):
                    if args.drift_on and name not in args.drift_on:
                        continue
                    set_up(database, work / name)
                    with Server(database, work / name) as server:
                        got_drift = asyncio.run(
                            drift(
                                server.url,
                                server.pid,
                                clients=args.clients,
                                warmup=args.warmup,
                                turns=args.turns,
                                interval=args.interval,
                            )
                        )
                    report_drift(f"memory, {name}", got_drift)


if __name__ == "__main__":
    main()
