"""``chatwright mcp serve``: an agent's crud rows served to real MCP clients.

The server runs as a real ``chatwright mcp serve`` process on a SQLite
database prepared here: over streamable HTTP with HS256 JWTs (two users, each
seeing only their own rows) and over stdio for one ``--user``. The database is
read back in-process to check what was stored and audited.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from conftest import free_port, stop, wait_for_port
from mcp import ClientSession, StdioServerParameters, stdio_client

from chatwright.registry import Plugins
from chatwright.runtime import Runtime
from chatwright.settings import load_settings
from chatwright.tables import ColumnSpec, TableSpec

AGENT = "notes"
SECRET = "an-hs256-secret-of-at-least-32-bytes-for-tests"
AUDIENCE = "authenticated"
CHATWRIGHT = [sys.executable, "-m", "chatwright"]


def token(sub: str, secret: str = SECRET, **claims: Any) -> str:
    payload = {"sub": sub, "aud": AUDIENCE, "exp": int(time.time()) + 600, **claims}
    return jwt.encode(payload, secret, "HS256")


@dataclass
class Served:
    env: dict[str, str]
    db: str
    url: str = ""


async def prepare(db: str, plugins: Plugins) -> None:
    settings = load_settings(None, {"storage": {"url": db}}, plugins)
    runtime = Runtime(settings, plugins)
    await runtime.start(upgrade=True)
    try:
        await runtime.storage.records.ensure_table(
            TableSpec(
                "notes",
                (
                    ColumnSpec("id", "integer", primary_key=True),
                    ColumnSpec("user_id", "string", nullable=False),
                    ColumnSpec("title", "string", nullable=False),
                ),
            )
        )
        await runtime.storage.agents.create(AGENT, system_prompt="", model="scripted:x")
        add = runtime.storage.tools.add
        title = {"title": {"type": "string", "required": True}}
        create = {"table": "notes", "operation": "create", "args": title}
        await add(AGENT, "add_note", type="crud", config=create, description="Add a note.")
        await add(AGENT, "list_notes", type="crud", config={"table": "notes", "operation": "read"})
        by_id = {"id": {"type": "integer", "required": True}}
        remove = {"table": "notes", "operation": "delete", "filters": by_id}
        await add(AGENT, "delete_note", type="crud", config=remove)
        await add(AGENT, "careful_note", type="crud", config=create, approval="required")
    finally:
        await runtime.close()


async def stored_notes(db: str, plugins: Plugins) -> list[tuple[str, str]]:
    settings = load_settings(None, {"storage": {"url": db}}, plugins)
    async with Runtime(settings, plugins) as runtime:
        found = []
        for user in ("alice", "bob", "carol"):
            rows = await runtime.storage.records.select(
                user, "notes", {"user_id": user}, columns=["title"], limit=100
            )
            found.extend((user, r["title"]) for r in rows)
        return sorted(found)


@pytest.fixture
def served(tmp_path: Path, plugins: Plugins) -> Served:
    db = f"sqlite+aiosqlite:///{tmp_path / 'served.db'}"
    asyncio.run(prepare(db, plugins))
    base = {k: v for k, v in os.environ.items() if not k.startswith("CHATWRIGHT_")}
    env = {
        **base,
        "CHATWRIGHT_STORAGE__URL": db,
        "CHATWRIGHT_SERVER__AUTH": "jwt",
        "CHATWRIGHT_SERVER__JWT_SECRET": SECRET,
    }
    return Served(env, db)


@pytest.fixture
def http(served: Served) -> Iterator[Served]:
    port = free_port()
    process = subprocess.Popen(
        [*CHATWRIGHT, "mcp", "serve", "--agent", AGENT, "--http", "--port", str(port)],
        env=served.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_port(port, process)
        served.url = f"http://127.0.0.1:{port}/mcp"
        yield served
    finally:
        stop(process)


@asynccontextmanager
async def client(url: str, bearer: str) -> AsyncIterator[ClientSession]:
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    headers = {"Authorization": f"Bearer {bearer}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=30) as http_client,
        streamable_http_client(url, http_client=http_client) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


async def call(session: ClientSession, name: str, **args: Any) -> tuple[bool, Any]:
    """(is_error, the result's text, as JSON when it is)."""
    result = await session.call_tool(name, args)
    text = "\n".join(getattr(block, "text", "") for block in result.content)
    try:
        return bool(result.is_error), json.loads(text)
    except ValueError:
        return bool(result.is_error), text


def cli(served: Served, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CHATWRIGHT, *args],
        env=served.env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_two_users_over_http_each_see_only_their_own_rows(
    http: Served, plugins: Plugins
) -> None:
    async with client(http.url, token("alice")) as alice, client(http.url, token("bob")) as bob:
        listed = await alice.list_tools()
        tools = {t.name: t for t in listed.tools}
        assert sorted(tools) == ["add_note", "careful_note", "delete_note", "list_notes"]
        assert tools["add_note"].description == "Add a note."
        assert tools["add_note"].input_schema["required"] == ["title"]
        assert "user_id" not in json.dumps(tools["add_note"].input_schema)

        error, created = await call(alice, "add_note", title="alice's note")
        assert not error
        alice_id = created["created"]["id"]
        assert not (await call(bob, "add_note", title="bob's note"))[0]

        _, mine = await call(alice, "list_notes")
        assert [r["title"] for r in mine["rows"]] == ["alice's note"]
        _, theirs = await call(bob, "list_notes")
        assert [r["title"] for r in theirs["rows"]] == ["bob's note"]

        # Hostile: bob names alice's row id, or names alice as the user.
        error, result = await call(bob, "delete_note", id=alice_id)
        assert error and "not found" in result.lower() and "alice" not in result
        error, result = await call(bob, "add_note", title="forged", user_id="alice")
        assert error and "user_id: unknown argument, not allowed" in result
        # Hostile: oversized and ill-typed arguments are refused, nothing stored.
        error, result = await call(bob, "add_note", title="x" * 150_000)
        assert error and "more than the 100000" in result
        error, result = await call(bob, "add_note", title={"$ne": None})
        assert (error, result) == (True, "Invalid arguments: title: Input should be a valid string")
        error, result = await call(bob, "no_such_tool")
        assert error and "'no_such_tool' is not a tool of agent 'notes'" in result

        # A row that needs approval does not run over MCP.
        error, result = await call(alice, "careful_note", title="unapproved")
        assert error and "'careful_note' needs approval in chatwright" in result

    assert await stored_notes(http.db, plugins) == [
        ("alice", "alice's note"),
        ("bob", "bob's note"),
    ]
    # Writes over MCP are audited like a turn's, each under a turn id of its own.
    settings = load_settings(None, {"storage": {"url": http.db}}, plugins)
    async with Runtime(settings, plugins) as runtime:
        entries = await runtime.storage.audit.list("alice")
    [entry] = [e for e in entries if e.outcome == "ok"]
    assert (entry.tool_name, entry.operation, entry.agent_name) == ("add_note", "create", AGENT)
    assert entry.turn_id is not None and entry.chat_id is not None


async def test_a_row_added_by_the_cli_is_listed_without_a_restart(http: Served) -> None:
    async with client(http.url, token("alice")) as alice:
        before = {t.name for t in (await alice.list_tools()).tools}
        assert "find_notes" not in before
        row = {
            "name": "find_notes",
            "type": "crud",
            "config": {"table": "notes", "operation": "read"},
        }
        done = cli(http, "tools", "add", "--agent", AGENT, stdin=json.dumps(row))
        assert done.returncode == 0, done.stderr
        after = {t.name for t in (await alice.list_tools()).tools}
        assert after == before | {"find_notes"}
        error, result = await call(alice, "find_notes")
        assert not error and result["rows"] == []


def initialize_body() -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "test", "version": "0"},
        },
    }


def test_bad_tokens_get_401_and_nothing_runs(http: Served) -> None:
    bad = {
        "missing": None,
        "malformed": "not-a-jwt",
        "forged": token("alice", secret="a-different-secret-of-at-least-32-bytes!!"),
        "expired": token("alice", exp=int(time.time()) - 60),
        "audience": token("alice", aud="someone-else"),
        "unsigned": jwt.encode({"sub": "alice", "aud": AUDIENCE, "exp": 2**40}, None, "none"),
        "service role": token("alice", role="service_role"),
    }
    for why, bearer in bad.items():
        headers = {"Accept": "application/json, text/event-stream"}
        if bearer is not None:
            headers["Authorization"] = f"Bearer {bearer}"
        response = httpx.post(http.url, json=initialize_body(), headers=headers, timeout=30)
        assert response.status_code == 401, (why, response.text)
        assert response.headers["WWW-Authenticate"].startswith("Bearer"), why


async def test_stdio_serve_for_one_user(served: Served, plugins: Plugins) -> None:
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "chatwright", "mcp", "serve", "--agent", AGENT, "--user", "carol"],
        env=served.env,
    )
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        names = sorted(t.name for t in (await session.list_tools()).tools)
        assert names == ["add_note", "careful_note", "delete_note", "list_notes"]
        assert not (await call(session, "add_note", title="carol's note"))[0]
        _, listed = await call(session, "list_notes")
        assert [r["title"] for r in listed["rows"]] == ["carol's note"]
    assert await stored_notes(served.db, plugins) == [("carol", "carol's note")]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--agent", "nobody", "--user", "carol"], "nobody"),
        (["--agent", AGENT], "give --user USER"),
        (["--agent", AGENT, "--user", ""], "--user is empty; give a user id"),
        # A byte that is not UTF-8 reaches the command as a lone surrogate.
        (["--agent", AGENT, "--user", "car\udcffol"], "--user holds a lone surrogate"),
        (["--agent", AGENT, "--user", "car\x01ol"], "--user holds a control character"),
        (["--agent", AGENT, "--user", "c" * 256], "--user is 256 characters long"),
        (["--agent", "x\udcff", "--user", "carol"], "--agent holds a lone surrogate"),
        (["--agent", "x\udcff", "--http"], "--agent holds a lone surrogate"),
        (["--agent", "x\x01", "--http"], "--agent holds a control character"),
        (["--agent", AGENT, "--http", "--user", "carol"], "--user is for stdio"),
        (["--agent", AGENT, "--http", "--port", "70000"], "--port 70000 is not a port"),
    ],
)
def test_serve_refuses_bad_input_in_one_line(served: Served, args: list[str], message: str) -> None:
    done = cli(served, "mcp", "serve", *args, stdin="")
    assert done.returncode == 1, done.stdout
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_tools_add_refuses_an_mcp_row_the_settings_do_not_allow(served: Served) -> None:
    env = {**served.env, "CHATWRIGHT_MCP__ALLOWED_HOSTS": '["127.0.0.1:1"]'}
    rows = {
        "config.server: MCP server 'shell' is not in [mcp.servers] (servers there: none)": {
            "server": "shell"
        },
        "config.url: host 'attacker.example' is not in mcp.allowed_hosts (127.0.0.1:1)": {
            "url": "https://attacker.example/mcp"
        },
        "config.url: MCP server at http://127.0.0.1:1/mcp could not be started or reached": {
            "url": "http://127.0.0.1:1/mcp"
        },
    }
    for message, config in rows.items():
        row = json.dumps({"name": "remote", "type": "mcp", "config": config})
        done = subprocess.run(
            [*CHATWRIGHT, "tools", "add", "--agent", AGENT],
            env=env,
            input=row,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 1, done.stdout
        assert message in done.stderr
        assert "Traceback" not in done.stderr
    listed = cli(served, "tools", "list", "--agent", AGENT, "--json")
    assert "remote" not in listed.stdout


@pytest.fixture
def local_http(served: Served) -> Iterator[Served]:
    """``mcp serve --http`` with server.auth = "local" (refused off loopback)."""
    served.env["CHATWRIGHT_SERVER__AUTH"] = "local"
    refused = cli(served, "mcp", "serve", "--agent", AGENT, "--http", "--host", "0.0.0.0")
    assert refused.returncode == 1 and "refusing to serve on 0.0.0.0" in refused.stderr
    port = free_port()
    process = subprocess.Popen(
        [*CHATWRIGHT, "mcp", "serve", "--agent", AGENT, "--http", "--port", str(port)],
        env=served.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, process)
        served.url = f"http://127.0.0.1:{port}/mcp"
        yield served
    finally:
        stop(process)


async def test_http_with_local_auth_serves_the_local_user(
    local_http: Served, plugins: Plugins
) -> None:
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    async with (
        httpx2.AsyncClient(timeout=30) as http_client,
        streamable_http_client(local_http.url, http_client=http_client) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        assert not (await call(session, "add_note", title="local note"))[0]
    settings = load_settings(None, {"storage": {"url": local_http.db}}, plugins)
    async with Runtime(settings, plugins) as runtime:
        rows = await runtime.storage.records.select(
            "local", "notes", {"user_id": "local"}, columns=["title"], limit=10
        )
    assert rows == [{"title": "local note"}]
