"""Several server processes on one PostgreSQL database, and a database outage.

Everything under test runs the installed console script in real subprocesses:
the schema and the example come from ``chatwright init --example``, the tool row
that must reach a running server from ``chatwright tools add``, the sweeper pass
from ``chatwright sessions sweep``, and the servers are ``chatwright serve``
processes spoken to over HTTP. A slow model is a small OpenAI-compatible stub
served from the test. The module makes its own
databases (``cw_mp_<hex>``) and drops them at the end. With no PostgreSQL
server the tests skip, saying why; with ``CI=true`` they fail instead.

What is checked (DESIGN.md §5, §7, §9):

- a session opened on one process is used for a turn on another, and the turn
  is read back from the first;
- a tool row inserted by another process reaches a running server's cache
  through LISTEN/NOTIFY (an eviction within a second, with no turn in between),
  and the next turn uses the new tool;
- two turns on one chat sent at once to two processes run one after the other
  (the per-chat advisory lock), both stored, in order;
- sweepers in several processes at once deactivate each idle session once
  (each batch's rows deleted by one step only), and ``Storage.exclusive``
  admits one process at a time;
- a database outage gives 503 JSON, never a 500 or a dropped connection, the
  same server recovers without a restart (its config listener too), and no turn
  is stored half-written;
- the same while turns are in flight, and when only a turn lock's connection
  dies (the answer then matches what was stored).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy.engine import make_url

from tests import pgbouncer
from tests.harness import (
    ADMIN_URL,
    ServerProcess,
    admin_connect,
    clean_env,
    pg_env,
    script,
    storage_for,
)

pytestmark = pytest.mark.postgresql

AGENT = "assistant"


# -- helpers: databases, the CLI, server processes ---------------------------------


def cli(
    database: str, *args: str, cwd: Path, input: str | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    storage = pg_env(database)  # through the run's PgBouncer, if it has one
    url = storage["CHATWRIGHT_STORAGE__URL"]
    return script("--database", url, *args, cwd=cwd, input=input, env=clean_env(**storage, **env))


def cli_ok(
    database: str, *args: str, cwd: Path, input: str | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    proc = cli(database, *args, cwd=cwd, input=input, **env)
    assert proc.returncode == 0, f"{args}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


@contextlib.contextmanager
def fresh_database(workdir: Path) -> Iterator[tuple[str, str]]:
    """(name, URL) of a new database set up by ``chatwright init --example``; dropped after."""
    admin: Any = admin_connect()  # skips (or fails with CI=true) when no server answers
    name = f"cw_mp_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        url = (
            make_url(ADMIN_URL)
            .set(drivername="postgresql", database=name)
            .render_as_string(hide_password=False)
        )
        workdir.mkdir(parents=True, exist_ok=True)
        cli_ok(url, "init", "--example", cwd=workdir)
        yield name, url
    finally:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


async def add_agent(
    database: str,
    name: str,
    model: str,
    model_settings: dict[str, Any],
    tools: Sequence[Mapping[str, Any]] = (),
) -> None:
    """Set-up that is not under test, written straight to the database."""
    storage = storage_for(database)
    try:
        await storage.agents.create(
            name, system_prompt="A test agent.", model=model, model_settings=model_settings
        )
        for tool in tools:
            await storage.tools.add(
                name,
                tool["name"],
                type=tool["type"],
                config=tool["config"],
                description=tool["description"],
            )
    finally:
        await storage.close()


@contextlib.contextmanager
def running_servers(database: str, workdir: Path, count: int) -> Iterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    try:
        for i in range(count):
            env = clean_env(**pg_env(database), CHATWRIGHT_SESSIONS__SWEEP_INTERVAL="3600")
            started.append(ServerProcess(cwd=workdir, env=env, label=f"server{i + 1}"))
        for server in started:
            server.wait_ready()
        yield started
    finally:
        for server in started:
            server.stop()


async def open_chat(client: httpx.AsyncClient, server: ServerProcess, agent: str) -> str:
    response = await client.post(
        server.url + "/api/sessions", json={"agent_name": agent, "new": True}
    )
    assert response.status_code == 200, response.text
    return str(response.json()["chat_id"])


async def turn(
    client: httpx.AsyncClient, server: ServerProcess, agent: str, chat_id: str, message: str
) -> httpx.Response:
    return await client.post(
        server.url + "/api/chat",
        json={"agent_name": agent, "session_id": chat_id, "message": message},
    )


async def turn_ok(
    client: httpx.AsyncClient, server: ServerProcess, agent: str, chat_id: str, message: str
) -> dict[str, Any]:
    response = await turn(client, server, agent, chat_id, message)
    assert response.status_code == 200, f"{response.status_code} {response.text}\n{server.log()}"
    body: dict[str, Any] = response.json()
    assert body["error"] is None, body
    return body


async def stored(client: httpx.AsyncClient, server: ServerProcess, chat_id: str) -> list[Any]:
    response = await client.get(server.url + f"/api/chats/{chat_id}/messages?limit=500")
    assert response.status_code == 200, response.text
    messages: list[Any] = response.json()["messages"]
    return messages


async def evictions(client: httpx.AsyncClient, server: ServerProcess, reason: str) -> int:
    response = await client.get(server.url + "/metrics")
    assert response.status_code == 200, response.text
    prefix = f'chatwright_cache_evictions_total{{reason="{reason}"}} '
    for line in response.text.splitlines():
        if line.startswith(prefix):
            return int(float(line[len(prefix) :]))
    return 0


# -- an OpenAI-compatible model that takes its time ----------------------------------


class SlowModel:
    """A tiny OpenAI-compatible chat server on a thread.

    Each completion (``POST /v1/chat/completions``, not streamed: turns without
    ``on_token`` do not stream) sleeps ``delay`` seconds, then answers ``seen N
    user message(s)``, N being the user messages in the request. It records the
    requests and how many were in flight at once.
    """

    def __init__(self, delay: float = 0.5) -> None:
        self.delay = delay
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self.requests: list[dict[str, Any]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
                with stub.lock:
                    stub.in_flight += 1
                    stub.max_in_flight = max(stub.max_in_flight, stub.in_flight)
                    stub.requests.append(body)
                try:
                    time.sleep(stub.delay)
                finally:
                    with stub.lock:
                        stub.in_flight -= 1
                users = sum(1 for m in body.get("messages", []) if m.get("role") == "user")
                text = f"seen {users} user message(s)"
                payload = json.dumps(
                    {
                        "id": "chatcmpl-stub",
                        "object": "chat.completion",
                        "created": 0,
                        "model": body.get("model", "stub"),
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": text},
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                    }
                ).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def reset(self) -> None:
        with self.lock:
            self.max_in_flight = 0
            self.requests.clear()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# -- fixtures --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("multiprocess")


@pytest.fixture(scope="module")
def database(workdir: Path) -> Iterator[str]:
    with fresh_database(workdir / "init") as (_, url):
        yield url


@pytest.fixture(scope="module")
def servers(database: str, workdir: Path) -> Iterator[list[ServerProcess]]:
    with running_servers(database, workdir / "servers", 2) as started:
        yield started


@pytest.fixture(scope="module")
def slow_model() -> Iterator[SlowModel]:
    stub = SlowModel(delay=0.5)
    try:
        yield stub
    finally:
        stub.close()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as http:
        yield http


def check_alive(*started: ServerProcess) -> None:
    for server in started:
        assert server.proc.poll() is None, f"server exited:\n{server.log()}"


# -- two server processes on one database ------------------------------------------------


async def test_session_opened_on_one_process_serves_a_turn_on_the_other(
    servers: list[ServerProcess], client: httpx.AsyncClient
) -> None:
    one, two = servers
    chat_id = await open_chat(client, one, AGENT)
    body = await turn_ok(client, two, AGENT, chat_id, "add a task to buy oat milk")
    assert body["session_id"] == chat_id
    assert [c["name"] for c in body["tool_calls"]] == ["add_task"]
    assert body["tool_calls"][0]["result"]["created"]["title"] == "buy oat milk"

    messages = await stored(client, one, chat_id)
    assert [m["role"] for m in messages] == ["human", "ai", "tool", "ai"]
    assert messages[0]["text"] == "add a task to buy oat milk"
    assert messages[-1]["text"] == body["response"]

    # The task written through process 2 is read through process 1, in the same chat.
    listed = await turn_ok(client, one, AGENT, chat_id, "list my tasks")
    assert "buy oat milk" in listed["response"]
    assert len(await stored(client, two, chat_id)) == 8
    check_alive(one, two)


async def test_tool_added_by_another_process_reaches_a_running_server_at_once(
    servers: list[ServerProcess], client: httpx.AsyncClient, database: str, workdir: Path
) -> None:
    _, two = servers
    cwd = workdir / "cli"
    cwd.mkdir(exist_ok=True)
    agent = "mp_scripted"
    script = [
        {"tool_calls": [{"name": "recent_tasks", "args": {}}]},
        {"content": "done"},
    ]
    await add_agent(
        database,
        agent,
        "scripted:x",
        {"responses": script},
        tools=[
            {
                "name": "list_notes",
                "type": "crud",
                "description": "List the user's notes.",
                "config": {"table": "notes", "operation": "read", "returning": ["id", "body"]},
            }
        ],
    )

    # Process 2 builds the agent: the scripted call names a tool it does not have yet.
    chat_id = await open_chat(client, two, agent)
    before = await turn_ok(client, two, agent, chat_id, "go")
    assert before["response"] == "done"
    assert [(c["name"], c["error"]) for c in before["tool_calls"]] == [("recent_tasks", True)]
    assert "not a valid tool" in str(before["tool_calls"][0]["result"])

    evicted = await evictions(client, two, "config-changed")
    new_tool = {
        "name": "recent_tasks",
        "type": "crud",
        "description": "The user's latest tasks.",
        "config": {
            "table": "tasks",
            "operation": "read",
            "returning": ["id", "title"],
            "order_by": "-created_at",
            "limit": 5,
        },
    }
    cli_ok(database, "tools", "add", "--agent", agent, cwd=cwd, input=json.dumps(new_tool))
    if pgbouncer.MODE == "transaction":
        # Through a transaction pooler with no direct_url nothing LISTENs: the agent
        # stays until the next turn's version check finds the new tool.
        await asyncio.sleep(1.0)
        assert await evictions(client, two, "config-changed") == evicted, two.log()
    else:
        # No turn in between: only the NOTIFY listener can make process 2 drop its agent.
        deadline = time.monotonic() + 1.0
        while await evictions(client, two, "config-changed") == evicted:
            assert time.monotonic() < deadline, (
                "process 2 did not drop the agent within 1 s of the tool insert "
                "(LISTEN/NOTIFY)\n" + two.log()
            )
            await asyncio.sleep(0.05)
        assert await evictions(client, two, "config-changed") == evicted + 1

    after = await turn_ok(client, two, agent, chat_id, "go again")
    assert after["response"] == "done"
    assert [(c["name"], c["error"]) for c in after["tool_calls"]] == [("recent_tasks", False)]
    assert isinstance(after["tool_calls"][0]["result"], dict | list), after
    check_alive(two)


async def test_concurrent_turns_on_one_chat_through_two_processes_are_serialised(
    servers: list[ServerProcess],
    client: httpx.AsyncClient,
    database: str,
    slow_model: SlowModel,
) -> None:
    one, two = servers
    agent = "mp_slow"
    await add_agent(
        database, agent, "openai:stub", {"base_url": slow_model.base_url, "api_key": "x"}
    )
    # Both processes build the agent first, each on a chat of its own.
    for server in servers:
        warm = await open_chat(client, server, agent)
        assert (await turn_ok(client, server, agent, warm, "warm up"))["response"] == (
            "seen 1 user message(s)"
        )

    chat_id = await open_chat(client, one, agent)
    slow_model.reset()
    started = time.monotonic()
    first, second = await asyncio.gather(
        turn(client, one, agent, chat_id, "hello from process 1"),
        turn(client, two, agent, chat_id, "hello from process 2"),
    )
    elapsed = time.monotonic() - started
    for response in (first, second):
        assert response.status_code == 200, response.text
        assert response.json()["error"] is None

    assert slow_model.max_in_flight == 1, "both turns of one chat called the model at once"
    assert len(slow_model.requests) == 2
    assert elapsed >= 2 * slow_model.delay
    replies = sorted(r.json()["response"] for r in (first, second))
    assert replies == ["seen 1 user message(s)", "seen 2 user message(s)"]

    messages = await stored(client, two, chat_id)
    assert [m["role"] for m in messages] == ["human", "ai", "human", "ai"]
    assert [messages[1]["text"], messages[3]["text"]] == replies
    assert {messages[0]["text"], messages[2]["text"]} == {
        "hello from process 1",
        "hello from process 2",
    }
    # The second call saw the whole first turn.
    later = [m for m in slow_model.requests[1]["messages"] if m["role"] in {"user", "assistant"}]
    assert [(m["role"], m["content"]) for m in later] == [
        ("user", messages[0]["text"]),
        ("assistant", "seen 1 user message(s)"),
        ("user", messages[2]["text"]),
    ]
    check_alive(one, two)


async def test_sweepers_in_several_processes_deactivate_each_session_once(
    database: str, workdir: Path
) -> None:
    cwd = workdir / "cli"
    cwd.mkdir(exist_ok=True)
    url = make_url(database).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "WITH s AS (INSERT INTO chat_sessions (id, chat_id, user_id, agent_name, "
            "created_at, updated_at, metadata) "
            "SELECT gen_random_uuid(), gen_random_uuid(), 'mp-sweep-' || g, %s, "
            "now() - interval '1 hour', now() - interval '1 hour', '{}' "
            "FROM generate_series(1, 6000) AS g RETURNING id, user_id, agent_name, updated_at) "
            "INSERT INTO active_sessions (session_id, user_id, agent_name, updated_at) "
            "SELECT * FROM s RETURNING session_id",
            (AGENT,),
        ).fetchall()
    mine = {str(r[0]) for r in rows}

    def sweep() -> dict[str, Any]:
        proc = cli_ok(
            database,
            "sessions",
            "sweep",
            "--json",
            "--verbose",
            cwd=cwd,
            CHATWRIGHT_SESSIONS__IDLE_TIMEOUT="60",
            CHATWRIGHT_SESSIONS__SWEEP_BATCH="25",
        )
        report: dict[str, Any] = json.loads(proc.stdout)
        return report

    # No lock keeps them apart: each batch takes rows the others have not locked.
    reports = await asyncio.gather(*(asyncio.to_thread(sweep) for _ in range(3)))
    every = [i for r in reports for i in r["ids"]]
    assert len(every) == len(set(every)), "a session was deactivated by two sweepers"
    assert sum(r["deactivated"] for r in reports) == len(every)
    assert mine <= set(every)
    with psycopg.connect(url) as conn:
        left = conn.execute(
            "SELECT count(*) FROM active_sessions WHERE user_id LIKE 'mp-sweep-%%'"
        ).fetchone()
    assert left == (0,)


async def test_exclusive_is_held_by_one_process_at_a_time(database: str) -> None:
    holder, other, third = storage_for(database), storage_for(database), storage_for(database)
    try:
        # Two entered at the same time: exactly one gets it.
        got: list[bool] = []
        both_in = asyncio.Event()

        async def enter(storage: Any) -> None:
            async with storage.exclusive("sweeper") as held:
                got.append(held)
                if len(got) == 2:
                    both_in.set()
                await asyncio.wait_for(both_in.wait(), 10)

        await asyncio.gather(enter(holder), enter(other))
        assert sorted(got) == [False, True]
        # Released on the way out.
        async with third.exclusive("sweeper") as held:
            assert held is True
    finally:
        for storage in (holder, other, third):
            await storage.close()


# -- a database outage -----------------------------------------------------------------


def cut(admin: Any, name: str) -> None:
    admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
    admin.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = %s AND pid <> pg_backend_pid()",
        (name,),
    )


def restore(admin: Any, name: str) -> None:
    admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')


async def recovered(client: httpx.AsyncClient, *servers: ServerProcess) -> None:
    """Each server answers /healthz with 200 now that the database is back.

    Directly that is the very next request. Through PgBouncer a pool whose server
    logins failed turns clients away at once ("server login has been failing") and
    tries a login again only then: the first requests after the outage may still be
    503, so it is given a few seconds.
    """
    patience = 0.0 if pgbouncer.running() is None else 5.0
    for server in servers:
        deadline = time.monotonic() + patience
        while (answer := await client.get(server.url + "/healthz")).status_code != 200:
            assert time.monotonic() < deadline, f"{answer.status_code} {answer.text}"
            await asyncio.sleep(0.1)


def assert_unavailable(response: httpx.Response, *statuses: int) -> None:
    assert response.status_code in statuses, f"{response.status_code}: {response.text}"
    body = response.json()
    assert isinstance(body.get("error"), str) and body["error"], body


def check_integrity(url: str, chat_id: str) -> list[tuple[str, dict[str, Any]]]:
    """Every stored AI tool call has its result; returns (role, content) in order."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT role, content FROM chat_messages WHERE chat_id = %s ORDER BY id",
            (chat_id,),
        ).fetchall()
    results = {c["data"].get("tool_call_id") for role, c in rows if role == "tool"}
    for _, content in rows:
        for call in content["data"].get("tool_calls") or []:
            assert call["id"] in results, f"tool call without its result: {call}"
    return [(role, content) for role, content in rows]


async def listener_came_back(admin: Any, name: str, server: ServerProcess) -> None:
    # Its retry delay doubles with each failure up to 30 s: a long outage (a loaded
    # machine makes it longer) may leave it that long before its next attempt.
    deadline = time.monotonic() + 35
    while not admin.execute(
        "SELECT 1 FROM pg_stat_activity WHERE datname = %s AND state = 'idle' "
        "AND query = 'LISTEN chatwright_config'",
        (name,),
    ).fetchall():
        assert time.monotonic() < deadline, "config listener did not come back\n" + server.log()
        await asyncio.sleep(0.1)


async def test_database_outage_gives_503_and_the_server_recovers(
    tmp_path: Path, client: httpx.AsyncClient
) -> None:
    with (
        fresh_database(tmp_path / "init") as (name, url),
        running_servers(url, tmp_path / "server", 1) as (server,),
    ):
        admin: Any = admin_connect()
        try:
            chat_id = await open_chat(client, server, AGENT)
            answered: list[str] = []  # messages of turns that succeeded
            kept_after_failure: list[str] = []  # 502: the model failed, the message was kept
            for message in (
                "add a task to buy bread",
                "add a note: the door code is 4711",
                "list my tasks",
                "remember that I like tea",
            ):
                await turn_ok(client, server, AGENT, chat_id, message)
                answered.append(message)

            cut(admin, name)
            try:
                assert_unavailable(await client.get(server.url + "/healthz"), 503)
                response = await turn(client, server, AGENT, chat_id, "add a task to fix the roof")
                assert_unavailable(response, 502, 503)
                if response.status_code == 502:
                    kept_after_failure.append("add a task to fix the roof")
                assert_unavailable(
                    await client.post(server.url + "/api/sessions", json={"agent_name": AGENT}),
                    503,
                )
                assert_unavailable(
                    await client.get(server.url + f"/api/chats/{chat_id}/messages"), 503
                )
                # Still scraped in an outage, saying the database did not answer.
                scraped = await client.get(server.url + "/metrics")
                assert scraped.status_code == 200
                assert "\nchatwright_database_up 0\n" in scraped.text
                check_alive(server)
            finally:
                restore(admin, name)

            # The same process serves again, without a restart.
            await recovered(client, server)
            body = await turn_ok(client, server, AGENT, chat_id, "add a task to call the plumber")
            answered.append("add a task to call the plumber")
            assert [c["name"] for c in body["tool_calls"]] == ["add_task"]
            listed = await turn_ok(client, server, AGENT, chat_id, "list my tasks")
            answered.append("list my tasks")
            assert "call the plumber" in listed["response"]
            assert "buy bread" in listed["response"]
            assert "fix the roof" not in listed["response"]

            rows = check_integrity(url, chat_id)
            humans = [c["data"]["content"] for role, c in rows if role == "human"]
            assert sorted(humans) == sorted(answered + kept_after_failure)
            assert [h for h in humans if h in answered] == answered
            assert rows[-1][0] == "ai"

            # The config listener reconnects by itself (notifications sent while it was
            # away are lost; the per-turn version check covers those), and then a change
            # made elsewhere evicts again, with no turn in between. Through a transaction
            # pooler with no direct_url there is no listener to come back.
            if pgbouncer.MODE != "transaction":
                await listener_came_back(admin, name, server)
                evicted = await evictions(client, server, "config-changed")
                with psycopg.connect(url, autocommit=True) as conn:
                    conn.execute("UPDATE agents SET history_window = 30 WHERE name = %s", (AGENT,))
                deadline = time.monotonic() + 1
                while await evictions(client, server, "config-changed") == evicted:
                    assert time.monotonic() < deadline, "no eviction after the listener came back"
                    await asyncio.sleep(0.05)

            check_alive(server)
            assert "Traceback" not in server.log(), server.log()
        finally:
            admin.close()


async def wait_for_model_call(slow_model: SlowModel, *pending: Any) -> None:
    deadline = time.monotonic() + 10
    while not slow_model.requests:
        assert time.monotonic() < deadline, "the model was not called"
        assert not any(task.done() for task in pending), [t.result().text for t in pending]
        await asyncio.sleep(0.01)


@pytest.fixture(scope="module")
def slow_cluster(
    workdir: Path, slow_model: SlowModel
) -> Iterator[tuple[str, str, list[ServerProcess]]]:
    """Another database whose assistant uses the slow model, with two servers on it."""
    with fresh_database(workdir / "slow-init") as (name, url):
        cli_ok(
            url,
            "agents",
            "set",
            AGENT,
            "--model",
            "openai:stub",
            "--setting",
            f"base_url={slow_model.base_url}",
            "--setting",
            "api_key=x",
            cwd=workdir / "slow-init",
        )
        with running_servers(url, workdir / "slow-servers", 2) as started:
            yield name, url, started


async def test_turns_in_flight_when_the_database_goes_away_give_503(
    slow_cluster: tuple[str, str, list[ServerProcess]],
    client: httpx.AsyncClient,
    slow_model: SlowModel,
) -> None:
    """One turn is waiting for the model (holding the chat's lock), another turn of the
    same chat on a second process waits for that lock; then the database goes away."""
    name, url, (one, two) = slow_cluster
    admin: Any = admin_connect()
    try:
        chat_id = await open_chat(client, one, AGENT)
        await turn_ok(client, one, AGENT, chat_id, "first")
        await turn_ok(client, two, AGENT, chat_id, "second")

        slow_model.reset()
        thinking = asyncio.create_task(turn(client, one, AGENT, chat_id, "lost 1"))
        await wait_for_model_call(slow_model, thinking)
        waiting = asyncio.create_task(turn(client, two, AGENT, chat_id, "lost 2"))
        await asyncio.sleep(slow_model.delay / 3)  # process 2 waits for the lock now
        cut(admin, name)
        try:
            assert_unavailable(await thinking, 503)
            assert_unavailable(await waiting, 503)
            check_alive(one, two)
        finally:
            restore(admin, name)

        await recovered(client, one, two)
        await turn_ok(client, two, AGENT, chat_id, "third")
        rows = check_integrity(url, chat_id)
        # "lost 1" was stored before its model ran; "lost 2" never got the chat's lock.
        assert [(role, c["data"]["content"]) for role, c in rows] == [
            ("human", "first"),
            ("ai", "seen 1 user message(s)"),
            ("human", "second"),
            ("ai", "seen 2 user message(s)"),
            ("human", "lost 1"),
            ("human", "third"),
            ("ai", "seen 4 user message(s)"),
        ]
        for server in (one, two):
            assert "Traceback" not in server.log(), server.log()
    finally:
        admin.close()


async def test_turn_whose_lease_is_cleared_is_answered_as_it_was_stored(
    slow_cluster: tuple[str, str, list[ServerProcess]],
    client: httpx.AsyncClient,
    slow_model: SlowModel,
) -> None:
    """The chat's lease row is deleted (an operator clearing leases by hand) while the
    model thinks. Whatever the server answers must match what it stored: 200 with the
    turn stored, or an error JSON with nothing of the model's stored (409: the turn
    found its lease gone at its end); never a 500."""
    _, url, (server, _) = slow_cluster
    chat_id = await open_chat(client, server, AGENT)
    slow_model.reset()
    # Long enough for the lease to be cleared while the model thinks, on a busy machine.
    delay, slow_model.delay = slow_model.delay, 3.0
    try:
        pending = asyncio.create_task(turn(client, server, AGENT, chat_id, "hello"))
        await wait_for_model_call(slow_model, pending)
        with psycopg.connect(url, autocommit=True) as conn:
            cleared = conn.execute(
                "DELETE FROM chat_leases WHERE chat_id = %s RETURNING 1", (chat_id,)
            ).fetchall()
        assert cleared == [(1,)]
        response = await pending
    finally:
        slow_model.delay = delay
    texts = [c["data"]["content"] for _, c in check_integrity(url, chat_id)]
    assert response.status_code in {200, 409, 502, 503}, response.text
    if response.status_code == 200:
        assert texts == ["hello", response.json()["response"]]
    elif response.status_code == 409:
        assert "lost the chat's turn" in response.json()["error"]
        assert texts == ["hello"]
    else:
        assert_unavailable(response, 502, 503)
        assert "seen 1 user message(s)" not in texts
    await turn_ok(client, server, AGENT, chat_id, "again")
    check_alive(server)
