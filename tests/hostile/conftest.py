"""Fixtures of the hostile suite: a database per backend, runtimes and servers on it.

``db_url`` is a fresh SQLite file or the run's PostgreSQL database (emptied by
``pg_storage``, see ``tests/conftest.py``). ``make_runtime`` starts a
:class:`~chatwright.runtime.Runtime` on it; ``make_server`` starts the real app
under uvicorn on a free loopback port with JWT auth, and a client for it. Both
are closed at the end of the test. The example tables are dropped first, since
PostgreSQL keeps them between tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import sqlalchemy as sa
import uvicorn

from chatwright import testing
from chatwright.plugins.server.app import create_app
from chatwright.registry import Plugins
from chatwright.runtime import Runtime

SECRET = "chatwright-hostile-suite-secret-of-32-bytes"
APP_TABLES = ("tasks", "notes")


@pytest.fixture(autouse=True)
def _no_chatwright_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's CHATWRIGHT_* settings must not leak into these tests."""
    for name in list(os.environ):
        if name.startswith("CHATWRIGHT_") and name != "CHATWRIGHT_TEST_DATABASE_URL":
            monkeypatch.delenv(name)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgresql":
        request.getfixturevalue("pg_storage")  # empties the framework tables
        url: str = request.getfixturevalue("pg_url")
        return url
    return f"sqlite+aiosqlite:///{tmp_path}/hostile.db"


async def drop_app_tables(runtime: Runtime) -> None:
    async with runtime.storage.write() as conn:  # type: ignore[attr-defined]
        for table in APP_TABLES:
            await conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))


MakeRuntime = Callable[[], Awaitable[Runtime]]


@pytest.fixture
async def make_runtime(db_url: str) -> AsyncIterator[MakeRuntime]:
    made: list[Runtime] = []

    async def make() -> Runtime:
        plugins = Plugins.load()
        runtime = Runtime(testing.settings(plugins, storage={"url": db_url}), plugins)
        await runtime.start(upgrade=True)
        made.append(runtime)
        await drop_app_tables(runtime)
        return runtime

    yield make
    for runtime in made:
        await runtime.close()


def bearer(user: str) -> dict[str, str]:
    """The Authorization header of a signed-in user (a Supabase-style HS256 JWT)."""
    claims = {"sub": user, "aud": "authenticated", "exp": int(time.time()) + 3600}
    return {"Authorization": f"Bearer {jwt.encode(claims, SECRET, algorithm='HS256')}"}


@dataclass
class Server:
    runtime: Runtime
    client: httpx.AsyncClient


MakeServer = Callable[..., Awaitable[Server]]


@pytest.fixture
async def make_server(db_url: str) -> AsyncIterator[MakeServer]:
    stack = contextlib.AsyncExitStack()

    @contextlib.asynccontextmanager
    async def serving(storage: dict[str, Any]) -> AsyncIterator[Server]:
        plugins = Plugins.load()
        settings = testing.settings(
            plugins,
            storage={"url": db_url, **storage},
            sessions={"sweep_interval": 3600},
            server={"auth": "jwt", "jwt_secret": SECRET},
        )
        app = create_app(settings, plugins)
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
                yield Server(runtime, client)
        finally:
            server.should_exit = True
            await task

    async def make(**storage: Any) -> Server:
        """The server; keyword arguments override keys of ``[storage]``."""
        return await stack.enter_async_context(serving(storage))

    async with stack:
        yield make


def any_text(value: Any) -> str:
    """Everything an attacker got back, as one string to search for leaks."""
    return json.dumps(value, default=str, ensure_ascii=False)
