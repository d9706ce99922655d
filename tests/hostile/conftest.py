"""Fixtures of the hostile suite: a database per backend, runtimes and servers on it.

Every test runs on three backends (the ``backend`` fixture):

``sqlite``
    the ``sql`` backend on a fresh SQLite file;
``postgresql``
    the ``sql`` backend on the run's PostgreSQL database (emptied by
    ``pg_storage``, see ``tests/conftest.py``), connected as the superuser;
``supabase``
    the ``supabase`` backend on a database of this suite that starts as a new
    Supabase project does (its Data API roles, and default privileges granting
    every new table to them) and is migrated by the superuser afterwards.
    chatwright connects as a LOGIN role that is not a superuser and owns none of
    the framework tables (it has ``BYPASSRLS`` for its framework statements, as a
    Supabase project's ``postgres`` role has); its statements for a user run as
    ``authenticated``, subject to row-level security. The role may create
    tables, so the example's tables are its own, as in a Supabase project.

With ``CHATWRIGHT_TEST_PGBOUNCER`` the PostgreSQL backends go through the run's
PgBouncer (``Backend.pooler`` has the storage keys that come with it; see
``tests/pgbouncer.py``); ``admin_url`` stays direct.

``db_url`` is the URL chatwright connects with. ``make_runtime`` starts a
:class:`~chatwright.runtime.Runtime` on it; ``make_server`` starts the real app
under uvicorn on a free loopback port with JWT auth, and a client for it. Both
are closed at the end of the test. Application tables are dropped first, since
the PostgreSQL databases keep them between tests.

The helpers below (``bearer``, ``sql``, ``script``, ``say``...) are what the
attacks are written with; ``sql`` runs a framework statement (it sees every
user's rows), which is how a test plants a row and checks the victim's data.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
import psycopg
import pytest
import sqlalchemy as sa
import uvicorn
from fastapi import FastAPI

from chatwright import testing
from chatwright.plugins.example import assistant as example
from chatwright.plugins.server.app import create_app
from chatwright.registry import Plugins
from chatwright.runtime import Runtime
from chatwright.settings import env_var
from tests.harness import (
    DATA_TABLES,
    SUPABASE_DEFAULT_PRIVILEGES,
    SUPABASE_ROLES,
    admin_connect,
    libpq,
    pg_storage_settings,
)

SECRET = "chatwright-hostile-suite-secret-of-32-bytes"
APP_TABLES = ("tasks", "notes")
BACKENDS = ("sqlite", "postgresql", "supabase")
AGENT = example.AGENT
KEPT_TABLES = frozenset({*DATA_TABLES, "chatwright_schema_version"})


@pytest.fixture(autouse=True)
def _no_chatwright_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's CHATWRIGHT_* settings must not leak into these tests."""
    for name in list(os.environ):
        if name.startswith("CHATWRIGHT_") and name != "CHATWRIGHT_TEST_DATABASE_URL":
            monkeypatch.delenv(name)


# -- the databases ------------------------------------------------------------------


@dataclass(frozen=True)
class Backend:
    """One backend under attack: its name and the storage settings chatwright runs with."""

    name: str
    url: str
    """What chatwright connects with (the run's PgBouncer, if it has one)."""
    admin_url: str | None = None
    """PostgreSQL only: a superuser URL of the same database, for the suite's own upkeep."""
    pooler: dict[str, str] = field(default_factory=dict)
    """``storage.pooler`` and ``storage.direct_url`` when ``url`` is the run's PgBouncer."""

    @property
    def storage(self) -> dict[str, Any]:
        kind = "supabase" if self.name == "supabase" else "sql"
        return {"backend": kind, "url": self.url, **self.pooler}

    @property
    def env(self) -> dict[str, str]:
        """How to reach the database, as ``CHATWRIGHT_STORAGE__*`` variables (no backend)."""
        return {
            env_var(f"storage.{key}"): value
            for key, value in {"url": self.url, **self.pooler}.items()
        }


def _reached(name: str, url: str, admin_url: str) -> Backend:
    """The backend ``name`` on the test database ``url`` (direct), as chatwright reaches it."""
    keys = pg_storage_settings(url)
    pooler = {key: str(value) for key, value in keys.items() if key != "url"}
    return Backend(name, str(keys["url"]), admin_url=admin_url, pooler=pooler)


@dataclass(frozen=True)
class SupabaseDatabase:
    """The suite's Supabase-like database, and the role chatwright connects as."""

    admin_url: str
    url: str
    role: str


async def _migrate(url: str) -> None:
    from chatwright.plugins.supabase.storage import SupabaseStorage

    storage = SupabaseStorage.from_settings(
        testing.settings(storage={"backend": "supabase", "url": url})
    )
    try:
        await storage.upgrade()
    finally:
        await storage.close()


@pytest.fixture(scope="session")
def supabase_database(pg_url: str) -> Iterator[SupabaseDatabase]:
    """A stock Supabase-like database, migrated, with chatwright's LOGIN role (see module)."""
    admin = admin_connect()
    tag = uuid.uuid4().hex[:10]
    name, role = f"cw_hostile_{tag}", f"cw_hostile_app_{tag}"
    admin_url = sa.make_url(pg_url).set(database=name).render_as_string(hide_password=False)
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        admin.execute(SUPABASE_ROLES)
        admin.execute(
            f'CREATE ROLE "{role}" LOGIN NOSUPERUSER BYPASSRLS NOCREATEDB NOCREATEROLE '
            "IN ROLE authenticated"
        )
        with psycopg.connect(libpq(admin_url), autocommit=True) as db:
            db.execute(SUPABASE_DEFAULT_PRIVILEGES)
            # What chatwright's role creates is granted to the Data API roles too, as
            # what a Supabase project's postgres role creates is.
            db.execute(
                SUPABASE_DEFAULT_PRIVILEGES.replace(
                    "ALTER DEFAULT PRIVILEGES", f'ALTER DEFAULT PRIVILEGES FOR ROLE "{role}"'
                )
            )
            asyncio.run(_migrate(admin_url))
            db.execute(f'GRANT USAGE, CREATE ON SCHEMA public TO "{role}"')
            db.execute(
                f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO "{role}"'
            )
            db.execute(f'GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO "{role}"')
        url = sa.make_url(admin_url).set(username=role, password=None)
        yield SupabaseDatabase(admin_url, url.render_as_string(hide_password=False), role)
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        admin.close()


def _empty(admin_url: str) -> None:
    """Drop every application table and empty the framework's (as the superuser)."""
    with psycopg.connect(libpq(admin_url), autocommit=True) as db:
        tables = db.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        ).fetchall()
        for (table,) in tables:
            if table not in KEPT_TABLES:
                db.execute(f'DROP TABLE IF EXISTS "{table}" CASCADE')
        db.execute(f"TRUNCATE {', '.join(DATA_TABLES)} RESTART IDENTITY CASCADE")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "postgresql":
        request.getfixturevalue("pg_storage")  # migrated, framework tables emptied
        url: str = request.getfixturevalue("pg_url")
        _empty(url)
        return _reached("postgresql", url, url)
    if request.param == "supabase":
        database: SupabaseDatabase = request.getfixturevalue("supabase_database")
        _empty(database.admin_url)
        return _reached("supabase", database.url, database.admin_url)
    return Backend("sqlite", f"sqlite+aiosqlite:///{tmp_path}/hostile.db")


@pytest.fixture
def db_url(backend: Backend) -> str:
    return backend.url


def known_hole(request: pytest.FixtureRequest, reason: str, *backends: str) -> None:
    """Mark the running test a strict xfail on ``backends`` (all when none are named).

    For a finding not fixed yet: the test fails once it is, and the mark must go.
    """
    backend: Backend = request.getfixturevalue("backend")
    if not backends or backend.name in backends:
        request.applymarker(pytest.mark.xfail(strict=True, reason=reason))


# -- runtimes and servers -----------------------------------------------------------


async def drop_app_tables(runtime: Runtime) -> None:
    async with runtime.storage.write() as conn:  # type: ignore[attr-defined]
        for table in APP_TABLES:
            await conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))


def hostile_settings(backend: Backend, plugins: Plugins, **sections: Any) -> Any:
    """The settings the suite runs chatwright with; ``sections`` are merged over them."""
    base: dict[str, dict[str, Any]] = {
        "storage": backend.storage,
        "sessions": {"sweep_interval": 3600},
        "server": {"auth": "jwt", "jwt_secret": SECRET},
    }
    for key, section in sections.items():
        base[key] = {**base.get(key, {}), **section}
    return testing.settings(plugins, **base)


MakeRuntime = Callable[..., Awaitable[Runtime]]


@pytest.fixture
async def make_runtime(backend: Backend) -> AsyncIterator[MakeRuntime]:
    made: list[Runtime] = []

    async def make(**sections: Any) -> Runtime:
        plugins = Plugins.load()
        runtime = Runtime(hostile_settings(backend, plugins, **sections), plugins)
        await runtime.start(upgrade=True)
        made.append(runtime)
        await drop_app_tables(runtime)
        return runtime

    yield make
    for runtime in made:
        await runtime.close()


def bearer(user: str, **claims: Any) -> dict[str, str]:
    """The Authorization header of a signed-in user (a Supabase-style HS256 JWT)."""
    payload = {"sub": user, "aud": "authenticated", "exp": int(time.time()) + 86400, **claims}
    return {"Authorization": f"Bearer {jwt.encode(payload, SECRET, algorithm='HS256')}"}


@dataclass
class Server:
    runtime: Runtime
    client: httpx.AsyncClient
    backend: Backend
    app: FastAPI


MakeServer = Callable[..., Awaitable[Server]]


@pytest.fixture
async def make_server(backend: Backend) -> AsyncIterator[MakeServer]:
    stack = contextlib.AsyncExitStack()

    @contextlib.asynccontextmanager
    async def serving(sections: dict[str, Any]) -> AsyncIterator[Server]:
        plugins = Plugins.load()
        app = create_app(hostile_settings(backend, plugins, **sections), plugins)
        config = uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="on", log_level="warning")
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve())
        try:
            while not server.started:
                if task.done():
                    task.result()
                    raise RuntimeError("uvicorn stopped before it started")
                await asyncio.sleep(0.01)
            port = server.servers[0].sockets[0].getsockname()[1]
            runtime: Runtime = app.state.runtime
            await drop_app_tables(runtime)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
                yield Server(runtime, client, backend, app)
        finally:
            server.should_exit = True
            await task

    async def make(**sections: Any) -> Server:
        """A server; ``sections`` override settings (``tools={"unscoped_tables": [...]}``)."""
        return await stack.enter_async_context(serving(sections))

    async with stack:
        yield make


# -- the attacker's tools -------------------------------------------------------------


def any_text(value: Any) -> str:
    """Everything an attacker got back, as one string to search for leaks."""
    return json.dumps(value, default=str, ensure_ascii=False)


def script(*calls: tuple[str, dict[str, Any]], reply: str = "Done.") -> dict[str, Any]:
    """model_settings of a scripted model: one turn making ``calls``, then ``reply``."""
    tool_calls = [{"name": name, "args": args} for name, args in calls]
    return {"responses": [{"tool_calls": tool_calls}, {"content": reply}]}


async def sql(runtime: Runtime, statement: str, **params: Any) -> list[dict[str, Any]]:
    """A framework statement (every user's rows), outside any tool."""
    async with runtime.storage.write() as conn:  # type: ignore[attr-defined]
        result = await conn.execute(sa.text(statement), params)
        return [dict(r._mapping) for r in result] if result.returns_rows else []


async def plant_tool(runtime: Runtime, name: str, config: Any, agent: str = AGENT) -> None:
    """A tool row written by hand into agent_tools, past ``tools add`` and its validation."""
    await sql(
        runtime,
        "INSERT INTO agent_tools (agent_id, name, type, config) "
        "SELECT id, :name, 'crud', :config FROM agents WHERE name = :agent",
        name=name,
        config=json.dumps(config),
        agent=agent,
    )


async def open_chat(client: httpx.AsyncClient, user: str, agent: str = AGENT) -> dict[str, Any]:
    """A new session (on a new chat) of ``user`` with ``agent``."""
    body = {"agent_name": agent, "new": True}
    opened = await client.post("/api/sessions", json=body, headers=bearer(user))
    assert opened.status_code == 200, opened.text
    session: dict[str, Any] = opened.json()
    return session


async def say(
    server: Server,
    user: str,
    calls: list[tuple[str, dict[str, Any]]],
    agent: str = AGENT,
    message: str = "go",
) -> dict[str, Any]:
    """One turn of ``user`` on a new chat, the scripted model making ``calls``."""
    await server.runtime.storage.agents.update(agent, model_settings=script(*calls))
    session = await open_chat(server.client, user, agent)
    body = {"agent_name": agent, "chat_id": session["chat_id"], "message": message}
    response = await server.client.post("/api/chat", json=body, headers=bearer(user))
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def assert_error_body(response: httpx.Response, *statuses: int) -> str:
    """The response has one of ``statuses`` and the error body; return its message."""
    assert response.status_code in statuses, (response.request.url, response.text[:500])
    body = response.json()
    assert set(body) >= {"error"}, body
    assert isinstance(body["error"], str)
    assert body["error"]
    return str(body["error"])
