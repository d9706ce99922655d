"""The test harness: what several test modules need to drive chatwright for real.

Plain helpers only (the fixtures built on them are in ``conftest.py``):

- the PostgreSQL test server's URL, storage on a URL, rows of a SQLite file;
- the storage settings chatwright reaches a test database with: directly, or
  through the run's PgBouncer (``CHATWRIGHT_TEST_PGBOUNCER``, see
  :mod:`tests.pgbouncer`);
- the tables a test empties, taken from core's list of framework tables;
- the command line: the runner in-process with click's ``CliRunner``, and the
  installed console script in a subprocess, with no ``CHATWRIGHT_*`` variable;
- calling a tool the way the agent loop does;
- inline plugins: an ``echo`` chat model and a recorder of every event hook;
- real servers: an app under uvicorn in this process, and ``chatwright serve``
  subprocesses, each on a free loopback port.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from click.testing import CliRunner, Result
from fastapi import FastAPI
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import BaseTool
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from chatwright import hookimpl
from chatwright.cli import build_cli
from chatwright.plugins.sql.schema import VERSION_TABLE
from chatwright.plugins.sql.storage import SQLStorage
from chatwright.registry import Plugins
from chatwright.runtime import Runtime
from chatwright.settings import Settings, env_var
from chatwright.stores import FRAMEWORK_TABLES, ChatSession
from chatwright.tools import TurnContext, calling_as
from tests import pgbouncer

# Read at import, before any test's environment is scrubbed of CHATWRIGHT_* variables.
ADMIN_URL = os.environ.get(
    "CHATWRIGHT_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)

# The tables holding the framework's rows, which a test empties to start from
# nothing: core's framework tables less the schema version (emptying it would
# make the next upgrade migrate again), plus agent_memories, which core leaves
# out of its list only so that CRUD tools may edit it.
DATA_TABLES = tuple(sorted((FRAMEWORK_TABLES - {VERSION_TABLE}) | {"agent_memories"}))

# A session's "is it active" in plain SQL on chat_sessions (migration 0009).
ACTIVE = "(id IN (SELECT session_id FROM active_sessions)) AS is_active"
CONSOLE_SCRIPT = Path(sys.executable).parent / "chatwright"
DB_FILE = "chatwright.db"


def storage_for(url: str) -> SQLStorage:
    """The bundled ``sql`` storage on ``url`` (not started: call ``upgrade`` first).

    A database of the test server is reached as :func:`pg_storage_settings` says.
    """
    keys = pg_storage_settings(url)
    if keys == {"url": url}:
        return SQLStorage.from_settings(Settings(storage={"url": url}))  # type: ignore[arg-type]
    from chatwright import testing

    return SQLStorage.from_settings(testing.settings(storage=keys))


def _on_test_server(url: URL) -> bool:
    admin = make_url(ADMIN_URL)
    where = (url.host or "localhost", url.port or 5432)
    server = (admin.host or "localhost", admin.port or 5432)
    return url.get_backend_name() in {"postgresql", "postgres"} and where == server


def pg_storage_settings(url: str) -> dict[str, Any]:
    """The ``[storage]`` keys chatwright reaches the test server's database ``url`` with.

    ``url`` is a direct URL. Unless the run has a PgBouncer (``CHATWRIGHT_TEST_PGBOUNCER``)
    that is ``{"url": url}``; with one, ``url`` goes through it with ``pooler =
    "transaction"``, and ``direct_url`` is ``url`` itself in the ``direct_url`` mode. A URL
    of anything else (SQLite, another server) is returned as it is.
    """
    bouncer = pgbouncer.running()
    try:
        parsed = make_url(url)
    except ArgumentError:  # not a URL at all: chatwright says so
        return {"url": url}
    if bouncer is None or not _on_test_server(parsed):
        return {"url": url}
    keys: dict[str, Any] = {
        "url": bouncer.pooled(parsed).render_as_string(hide_password=False),
        "pooler": "transaction",
    }
    if pgbouncer.MODE == "direct_url":
        keys["direct_url"] = url
    return keys


def pg_env(url: str) -> dict[str, str]:
    """:func:`pg_storage_settings` as ``CHATWRIGHT_STORAGE__*`` variables, for a subprocess."""
    keys = pg_storage_settings(url)
    return {env_var(f"storage.{key}"): str(value) for key, value in keys.items()}


def libpq(url: str) -> str:
    """A SQLAlchemy URL as psycopg takes it."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def admin_connect() -> Any:
    """A psycopg connection to the test server's admin database.

    With no server the test skips, saying why; with ``CI=true`` it fails
    instead, so CI can never pass by skipping the PostgreSQL tests.
    """
    import psycopg

    try:
        return psycopg.connect(libpq(ADMIN_URL), autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        reason = f"no PostgreSQL server answers at {make_url(ADMIN_URL)!r}: {exc}".strip()
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true requires PostgreSQL: {reason}")
        pytest.skip(f"{reason} (set CHATWRIGHT_TEST_DATABASE_URL to run PostgreSQL tests)")


def sqlite_rows(db: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Rows of a SQLite database file read with plain sqlite3, no chatwright code involved."""
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


# -- the environment ---------------------------------------------------------------


def is_chatwright_variable(name: str) -> bool:
    return name.startswith("CHATWRIGHT_")


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any CHATWRIGHT_* variable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not is_chatwright_variable(k)}
    env.update(extra)
    return env


def scrub_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove every CHATWRIGHT_* variable for the rest of the test."""
    for name in list(os.environ):
        if is_chatwright_variable(name):
            monkeypatch.delenv(name)


# -- the command line --------------------------------------------------------------


def run(
    *args: str,
    plugins: Plugins | None = None,
    input: str | None = None,
    catch_exceptions: bool = True,
) -> Result:
    """Invoke a freshly built runner (plugins from entry points unless given)."""
    return CliRunner().invoke(
        build_cli(plugins),
        list(args),
        input=input,
        prog_name="chatwright",
        catch_exceptions=catch_exceptions,
    )


def ok(*args: str, plugins: Plugins | None = None, input: str | None = None) -> Result:
    """:func:`run`, which must succeed."""
    result = run(*args, plugins=plugins, input=input)
    assert result.exit_code == 0, f"{args}: exit {result.exit_code}\n{result.output}"
    assert result.exception is None, result.exception
    return result


def ok_json(*args: str) -> Any:
    """The JSON a successful command prints."""
    return json.loads(ok(*args).stdout)


def assert_error(result: Result, *needles: str) -> str:
    """A user-facing error: exit 1, one ``Error:`` line naming ``needles``, no traceback."""
    assert result.exit_code == 1, result.output
    # CliRunner turns an escaped exception into exit 1 as well; make sure it was a clean exit.
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    assert result.output.startswith("Error:"), result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]


def script(
    *args: str, cwd: Path, input: str | None = None, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The installed console script in a subprocess (no CHATWRIGHT_* variable unless ``env``)."""
    return subprocess.run(
        [str(CONSOLE_SCRIPT), *args],
        cwd=cwd,
        env=dict(env) if env is not None else clean_env(),
        input=input,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=120,
        check=False,
    )


def script_ok(
    *args: str, cwd: Path, input: str | None = None, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """:func:`script`, which must succeed."""
    proc = script(*args, cwd=cwd, input=input, env=env)
    assert proc.returncode == 0, f"{args}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


# -- tools --------------------------------------------------------------------------


class AsUser:
    """A tool of a shared build (built for every user), called for one user.

    :func:`call_tool` calls it as a turn of that user's would: the tool finds its
    user at call time, as in a real turn.
    """

    def __init__(self, tool: BaseTool, user: str, agent: str) -> None:
        self.tool = tool
        self.name = tool.name
        self.turn = TurnContext(user_id=user, agent_name=agent, chat_id=uuid.uuid4())

    def __getattr__(self, name: str) -> Any:
        return getattr(self.tool, name)  # its schema, description…

    async def ainvoke(self, call: Any) -> Any:
        with calling_as(self.turn):
            return await self.tool.ainvoke(call)


async def call_tool(tool: BaseTool | AsUser, **args: Any) -> ToolMessage:
    """Invoke a tool exactly as the agent loop does with a model's tool call."""
    msg = await tool.ainvoke({"name": tool.name, "args": args, "id": "call-1", "type": "tool_call"})
    assert isinstance(msg, ToolMessage)
    assert msg.tool_call_id == "call-1"
    assert isinstance(msg.content, str)
    return msg


def tool_ok(msg: ToolMessage) -> Any:
    """The JSON result of a tool call that succeeded."""
    assert msg.status == "success", msg.content
    return json.loads(str(msg.content))


def tool_err(msg: ToolMessage) -> str:
    """The message of a tool call that failed, which the model reads: no traceback."""
    assert msg.status == "error", msg.content
    text = str(msg.content)
    assert text.strip()
    assert "Traceback" not in text
    return text


# -- inline plugins -------------------------------------------------------------------


class EchoChatModel(BaseChatModel):
    """Replies with what it was given: the system prompt, the human texts, every type.

    It sleeps ``delay`` seconds first, so that concurrent turns really interleave.
    """

    delay: float = 0.0

    @property
    def _llm_type(self) -> str:
        return "test-echo"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Any:
        return self

    @staticmethod
    def _reply(messages: list[BaseMessage]) -> ChatResult:
        seen = {
            "system": next((m.text for m in messages if m.type == "system"), None),
            "humans": [m.text for m in messages if isinstance(m, HumanMessage)],
            "types": [m.type for m in messages],
        }
        return ChatResult(generations=[ChatGeneration(message=AIMessage(json.dumps(seen)))])

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return self._reply(messages)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        await asyncio.sleep(self.delay)
        return self._reply(messages)


class EchoModels:
    """Registers the ``echo`` model; an agent's ``delay`` model setting overrides ``delay``."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay

    def build(self, name: str, settings: Mapping[str, Any]) -> BaseChatModel:
        return EchoChatModel(delay=float(settings.get("delay", self.delay)))

    @hookimpl
    def register_models(self, register: Callable[[str, Any], None]) -> None:
        register("echo", self.build)


class Recorder:
    """Records every event hook call, in order."""

    def __init__(self) -> None:
        self.startups: list[Runtime] = []
        self.shutdowns: list[Runtime] = []
        self.deactivated: list[tuple[ChatSession, str]] = []
        self.evicted: list[tuple[str, str]] = []
        """(agent name, reason) of every executor_evicted call."""

    @hookimpl
    def startup(self, runtime: Runtime) -> None:
        self.startups.append(runtime)

    @hookimpl
    def shutdown(self, runtime: Runtime) -> None:
        self.shutdowns.append(runtime)

    @hookimpl
    def session_deactivated(self, session: ChatSession, reason: str) -> None:
        self.deactivated.append((session, reason))

    @hookimpl
    def executor_evicted(self, key: str, reason: str) -> None:
        self.evicted.append((key, reason))


# -- real servers -----------------------------------------------------------------------


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def uvicorn_serving(
    app: FastAPI | str, host: str = "127.0.0.1", **options: Any
) -> AsyncIterator[int]:
    """``app`` (or an app factory's import string, with ``factory=True``) under a real
    uvicorn server (lifespan on) on ``host`` and a free port; its port.

    Idle connections are kept 60 s, not uvicorn's 5 s: an httpx client reuses a pooled
    connection for up to 5 s after it read the last response, and the server starts its
    count when it wrote it, earlier by however far the event loop lags. With equal limits
    a busy test's next request crossed the server's close and was reset. Stopping the
    server still closes idle connections at once."""
    config = uvicorn.Config(
        app,
        host=host,
        port=0,
        lifespan="on",
        log_level="warning",
        **{"timeout_graceful_shutdown": 5, "timeout_keep_alive": 60, **options},
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("uvicorn stopped before it started")
            await asyncio.sleep(0.01)
        yield int(server.servers[0].sockets[0].getsockname()[1])
    finally:
        server.should_exit = True
        await task


class ServerProcess:
    """One ``chatwright serve`` subprocess on a free loopback port; its output goes to a log.

    It runs in a session of its own, so that stopping it stops its workers too.
    """

    def __init__(
        self, *args: str, cwd: Path, env: Mapping[str, str], label: str = "server"
    ) -> None:
        cwd.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = cwd / f"{label}.log"
        self._log = self.log_path.open("w", encoding="utf-8")
        self.proc = subprocess.Popen(
            [str(CONSOLE_SCRIPT), "serve", "--host", "127.0.0.1", "--port", str(self.port), *args],
            cwd=cwd,
            env=dict(env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until ``/healthz`` answers 200; fails with the log if the server exits or is late."""
        deadline = time.monotonic() + timeout
        # One client for every try: making one loads the CA certificates, which would
        # cost more than the server's start itself, poll after poll.
        with httpx.Client(timeout=2) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise AssertionError(
                        f"server exited with {self.proc.returncode}:\n{self.log()}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(self.url + "/healthz").status_code == 200:
                        return
                time.sleep(0.1)
        raise AssertionError(f"server not ready within {timeout} s:\n{self.log()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._log.close()


# -- a Supabase-like PostgreSQL database ------------------------------------------


@dataclass(frozen=True)
class Cluster:
    """A database a test module created, and the LOGIN roles it created (roles are cluster-wide)."""

    name: str
    app_role: str
    """LOGIN, no superuser, no BYPASSRLS, owns nothing; a member of ``authenticated``."""
    svc_role: str
    """LOGIN, no superuser, BYPASSRLS, owns nothing; a member of ``authenticated``."""

    def url(self, user: str | None = None, database: str | None = None) -> str:
        url = make_url(ADMIN_URL).set(
            drivername="postgresql+psycopg", database=database or self.name
        )
        if user is not None:
            url = url.set(username=user, password=None)
        return url.render_as_string(hide_password=False)


# The Data API roles of a Supabase project (the migration creates them when missing).
SUPABASE_ROLES = "".join(
    f"""
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{name}') THEN
        CREATE ROLE {name} NOLOGIN NOINHERIT{more};
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;  -- created meanwhile by another test process
END
$$;"""
    for name, more in (("anon", ""), ("authenticated", ""), ("service_role", " BYPASSRLS"))
)

# What a new Supabase project does before chatwright arrives: every table, sequence
# and function later created in public is granted to the Data API's roles.
SUPABASE_DEFAULT_PRIVILEGES = """
GRANT USAGE ON SCHEMA public TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA public
    GRANT ALL ON TABLES TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA public
    GRANT ALL ON SEQUENCES TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA public
    GRANT ALL ON FUNCTIONS TO anon, authenticated, service_role;
"""


class DirectRuns:
    """The statements an inline SQLite transaction ran straight on the driver
    (plugins/sql/direct.py), each by its first ``words`` words; one that raised there
    is recorded with " (raised)"."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *, words: int = 1) -> None:
        from chatwright.plugins.sql import direct

        self.direct: list[str] = []
        original = direct.DirectConnection._run

        async def counting(conn: Any, statements: Any, stmt: Any, parameters: Any) -> Any:
            said = " ".join(str(stmt).split()[:words])
            try:
                result = await original(conn, statements, stmt, parameters)
            except BaseException:
                self.direct.append(said + " (raised)")
                raise
            if result is not None:
                self.direct.append(said)
            return result

        monkeypatch.setattr(direct.DirectConnection, "_run", counting)
