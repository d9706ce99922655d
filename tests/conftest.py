"""Shared fixtures: a clean environment, a working directory, PostgreSQL databases.

No test sees the developer's ``CHATWRIGHT_*`` variables. PostgreSQL tests use
the server at ``CHATWRIGHT_TEST_DATABASE_URL`` (default
``postgresql://postgres@127.0.0.1:5432/postgres``) to create a database of their
own, dropped at the end of the run. With no server they skip, saying why;
with ``CI=true`` they fail instead, so CI can never pass by skipping them.

With ``CHATWRIGHT_TEST_PGBOUNCER`` set, the run starts its own PgBouncer in
transaction mode and chatwright reaches every test database through it (see
:mod:`tests.pgbouncer`); ``pg_url`` stays the direct URL, for set-up and checks.
Every test that needs the PostgreSQL server is marked ``postgresql`` (``-m
postgresql`` runs those only): those using ``pg_url`` or a backend parameter
named ``postgresql`` or ``supabase`` here, the others by their module. The
tests of the modules in :data:`LISTENER_MODULES` (and single tests marked so
by hand) are also marked ``listener``:
those where several runtimes share one database, so that whether each hears the
others' config changes (LISTEN through ``storage.direct_url``) can change what
happens. The second PgBouncer pass (``direct_url``) runs only those.

The plain helpers these fixtures are built on are in :mod:`tests.harness`.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy.engine import make_url

from chatwright.plugins.sql.storage import SQLStorage
from tests import pgbouncer
from tests.harness import ADMIN_URL, DATA_TABLES, DB_FILE, admin_connect, ok, scrub_environ
from tests.harness import storage_for as storage_for
from tests.openai_stub import openai_stub as openai_stub

if TYPE_CHECKING:
    from chatwright.runtime import Runtime

MakeRuntime = Callable[..., Awaitable["Runtime"]]

# Parameters (of a backend fixture or parametrize) that put a test on PostgreSQL.
POSTGRESQL_PARAMS = frozenset({"postgresql", "supabase"})

# Modules (under tests/) whose tests run several runtimes ("processes") on one database,
# or check how a runtime hears config changes: marked ``listener`` (see the docstring).
LISTENER_MODULES = frozenset(
    {
        "test_multiprocess.py",
        "test_turn_path.py",
        "test_memory.py",
        "test_supabase.py",
        "test_approvals.py",
        "test_pool_ping.py",
        "hostile/test_backends.py",
        "hostile/test_config_truncate.py",
        "hostile/test_agent_changed_mid_turn.py",
        "hostile/test_lease_lost.py",
        "hostile/test_lease_lost_calls.py",
        "hostile/test_turn_end_cancellation.py",
    }
)
TESTS = Path(__file__).resolve().parent


def pytest_configure(config: pytest.Config) -> None:
    if pgbouncer.MODE_ERROR is not None:
        raise pytest.UsageError(pgbouncer.MODE_ERROR)
    config.addinivalue_line(
        "markers", "postgresql: the test needs the PostgreSQL test server (-m postgresql)"
    )
    missing = sorted(m for m in LISTENER_MODULES if not (TESTS / m).is_file())
    if missing:  # a module renamed would silently leave the direct_url pass
        raise pytest.UsageError(f"LISTENER_MODULES in tests/conftest.py names no file: {missing}")
    config.addinivalue_line(
        "markers",
        "listener: several runtimes share the test's database, so whether they hear "
        "each other's config changes matters (-m listener)",
    )


def pytest_report_header(config: pytest.Config) -> str:
    mode = pgbouncer.MODE or "none (direct)"
    return f"chatwright PostgreSQL: {ADMIN_URL.split('@')[-1]}, PgBouncer: {mode}"


def pytest_collection_modifyitems(items: Sequence[pytest.Item]) -> None:
    for item in items:
        path = item.path.resolve()
        if path.is_relative_to(TESTS) and path.relative_to(TESTS).as_posix() in LISTENER_MODULES:
            item.add_marker(pytest.mark.listener)
        params = getattr(getattr(item, "callspec", None), "params", {})
        on_params = any(
            isinstance(value, str) and value in POSTGRESQL_PARAMS for value in params.values()
        )
        if "pg_url" in getattr(item, "fixturenames", ()) or on_params:
            item.add_marker(pytest.mark.postgresql)


@pytest.fixture(scope="session", autouse=True)
def _pgbouncer() -> Iterator[pgbouncer.PgBouncer | None]:
    """The run's PgBouncer when ``CHATWRIGHT_TEST_PGBOUNCER`` asks for one, stopped at the end."""
    if pgbouncer.MODE is None:
        yield None
        return
    bouncer = pgbouncer.PgBouncer(ADMIN_URL)
    try:
        bouncer.start()
    except RuntimeError as error:
        pytest.fail(str(error))
    pgbouncer.started(bouncer)
    try:
        yield bouncer
    finally:
        pgbouncer.stopped()
        bouncer.stop()


@pytest.fixture(autouse=True)
def _no_chatwright_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's CHATWRIGHT_* settings must not leak into any test."""
    scrub_environ(monkeypatch)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The test's own empty working directory, made the current one."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def example(workdir: Path) -> Path:
    """``chatwright init --example`` run in the working directory: the database file."""
    ok("init", "--example")
    return workdir / DB_FILE


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """URL of a fresh PostgreSQL database, dropped after the run."""
    admin = admin_connect()
    name = f"chatwright_test_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield (
            make_url(ADMIN_URL)
            .set(drivername="postgresql+psycopg", database=name)
            .render_as_string(hide_password=False)
        )
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture
async def pg_storage(pg_url: str) -> AsyncIterator[SQLStorage]:
    """Migrated storage on the run's PostgreSQL database, emptied before each test."""
    storage = storage_for(pg_url)
    await storage.upgrade()
    async with storage.write() as conn:
        from sqlalchemy import text

        await conn.execute(text(f"TRUNCATE {', '.join(DATA_TABLES)} RESTART IDENTITY CASCADE"))
    yield storage
    await storage.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def sql_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A direct URL of an empty database: a SQLite file, then the run's PostgreSQL one.

    The PostgreSQL database is emptied by ``pg_storage``; tests build settings
    from it with ``pg_storage_settings`` so that a run with a PgBouncer goes
    through it.
    """
    if request.param == "postgresql":
        request.getfixturevalue("pg_storage")  # empties the framework tables
        url: str = request.getfixturevalue("pg_url")
        return url
    return f"sqlite+aiosqlite:///{tmp_path}/test.db"


@pytest.fixture
async def runtimes(sql_url: str) -> AsyncIterator[MakeRuntime]:
    """Started runtimes ("processes") on the test's database, all closed at the end.

    ``await runtimes(*plugins, **tools)`` starts one more, on its own engine,
    cache and locks, as another server process would have: ``plugins`` are
    registered inline, ``tools`` are ``[tools]`` settings. The database is the
    run's PostgreSQL one (through its PgBouncer, when it has one) or a SQLite file.
    """
    from chatwright import testing
    from chatwright.registry import LoadPolicy, Plugins
    from chatwright.runtime import Runtime
    from tests.harness import pg_storage_settings

    made: list[Runtime] = []

    async def start(*extra: Any, **tools: Any) -> Runtime:
        plugins = Plugins.load(LoadPolicy())
        for n, plugin in enumerate(extra):
            plugins.register(plugin, f"test-extra-{n}")
        storage = pg_storage_settings(sql_url)
        settings = testing.settings(plugins, storage=storage, tools=tools)
        runtime = Runtime(settings, plugins)
        await runtime.start(upgrade=True)
        made.append(runtime)
        return runtime

    yield start
    for runtime in made:
        await runtime.close()


@pytest.fixture
def model_inputs(monkeypatch: pytest.MonkeyPatch) -> list[list[Any]]:
    """What each call of the scripted model was sent (its messages), in order."""
    from chatwright.plugins.models.scripted import ScriptedChatModel

    seen: list[list[Any]] = []
    original = ScriptedChatModel._agenerate

    async def recording(self: Any, messages: list[Any], *args: Any, **kwargs: Any) -> Any:
        seen.append(list(messages))
        return await original(self, messages, *args, **kwargs)

    monkeypatch.setattr(ScriptedChatModel, "_agenerate", recording)
    return seen
