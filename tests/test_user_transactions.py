"""The ``sql`` backend's user-transaction extension point, and the supabase backend built on it.

A :class:`UserTransactions` given to :class:`SQLStorage` sees every transaction
start (with its user, or None for framework statements) and every application
table with a ``user_id`` column a tool ensures. The ``supabase`` backend is
that extension, so blocking the ``sql`` plugin blocks it too, with a one-line
error rather than a traceback.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from sqlalchemy.ext.asyncio import AsyncConnection

from chatwright.cli import build_cli
from chatwright.plugins.sql.storage import SQLStorage
from chatwright.plugins.sql.user_transactions import UserTransactions
from chatwright.settings import Settings
from chatwright.stores import ColumnSpec, TableSpec

CONSOLE_SCRIPT = Path(sys.executable).parent / "chatwright"
BLOCKED_MESSAGE = "storage.backend 'supabase' is built on the sql plugin"


class Recording(UserTransactions):
    def __init__(self) -> None:
        self.entered: list[str | None] = []
        self.secured: list[str] = []

    async def enter(self, conn: AsyncConnection, user_id: str | None) -> None:
        self.entered.append(user_id)

    async def secure_table(self, conn: AsyncConnection, table: str) -> None:
        self.secured.append(table)


@pytest.fixture
async def recorded(tmp_path: Path) -> AsyncIterator[tuple[SQLStorage, Recording]]:
    users = Recording()
    settings = Settings(storage={"url": f"sqlite:///{tmp_path / 'ext.db'}"})  # type: ignore[arg-type]
    storage = SQLStorage.from_settings(settings, users=users)
    await storage.upgrade()
    users.entered.clear()
    yield storage, users
    await storage.close()


async def test_every_transaction_enters_with_its_user(
    recorded: tuple[SQLStorage, Recording],
) -> None:
    storage, users = recorded
    await storage.agents.create("a", system_prompt="p", model="offline:x")
    assert users.entered and set(users.entered) == {None}  # configuration: admin statements
    users.entered.clear()
    session = await storage.sessions.open("alice", "a")
    await storage.memories.put("alice", "a", "likes tea")
    assert await storage.sessions.get("alice", session.id) is not None
    assert "alice" in users.entered
    assert set(users.entered) <= {"alice", None}  # never anyone else's


async def test_tables_with_a_user_id_column_are_secured_even_when_they_exist(
    recorded: tuple[SQLStorage, Recording],
) -> None:
    storage, users = recorded
    owned = TableSpec(
        "owned",
        (ColumnSpec("id", "integer", primary_key=True), ColumnSpec("user_id", "string")),
    )
    shared = TableSpec("shared", (ColumnSpec("id", "integer", primary_key=True),))
    assert await storage.records.ensure_table(owned) is True
    assert await storage.records.ensure_table(shared) is True
    assert await storage.records.ensure_table(owned) is False
    assert users.secured == ["owned", "owned"]


async def test_the_default_scopes_by_column_and_leaves_tables_alone(tmp_path: Path) -> None:
    settings = Settings(storage={"url": f"sqlite:///{tmp_path / 'plain.db'}"})  # type: ignore[arg-type]
    storage = SQLStorage.from_settings(settings)
    try:
        assert type(storage.users) is UserTransactions
        await storage.upgrade()
        await storage.agents.create("a", system_prompt="p", model="offline:x")
        await storage.sessions.open("alice", "a")
        assert [s.user_id for s in await storage.sessions.list("bob")] == []
    finally:
        await storage.close()


# -- supabase needs sql -------------------------------------------------------------------


@pytest.fixture
def blocked_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    for name in list(os.environ):
        if name.startswith("CHATWRIGHT_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    extra = {
        "CHATWRIGHT_DISABLE_PLUGINS": "sql",
        "CHATWRIGHT_STORAGE__BACKEND": "supabase",
        "CHATWRIGHT_STORAGE__URL": "postgresql://nobody@127.0.0.1:1/none",
    }
    for name, value in extra.items():
        monkeypatch.setenv(name, value)
    return extra


def test_supabase_with_sql_blocked_is_a_one_line_cli_error(blocked_env: dict[str, str]) -> None:
    result = CliRunner().invoke(build_cli(), ["agents", "list"], prog_name="chatwright")
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert BLOCKED_MESSAGE in lines[0]
    assert "CHATWRIGHT_DISABLE_PLUGINS" in lines[0]


def test_supabase_with_sql_blocked_from_the_console_script(
    blocked_env: dict[str, str], tmp_path: Path
) -> None:
    proc = subprocess.run(
        [str(CONSOLE_SCRIPT), "agents", "list"],
        cwd=tmp_path,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith("Error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert BLOCKED_MESSAGE in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_blocking_only_another_plugin_leaves_supabase_to_build(
    blocked_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHATWRIGHT_DISABLE_PLUGINS", "eviction-nothing")
    result = CliRunner().invoke(build_cli(), ["agents", "list"], prog_name="chatwright")
    # The backend builds, then fails to reach the (closed) port: a storage error, not ours.
    assert result.exit_code == 1, result.output
    assert BLOCKED_MESSAGE not in result.output
    assert "unavailable" in result.output


# -- a turn's statements on PostgreSQL, where several steps share a statement -------------

FRAMEWORK_TABLES = (
    "agents",
    "chat_leases",
    "user_budgets",
    "usage_reservations",
    "usage_totals",
    "token_usage",
)
USER_TABLES = ("chat_messages", "chat_sessions", "agent_memories", "prompt_customizations")


class Entering(UserTransactions):
    """Notes each user's ``enter`` in a log the statements are noted in too."""

    def __init__(self, log: list[str]) -> None:
        self.log = log

    async def enter(self, conn: AsyncConnection, user_id: str | None) -> None:
        if user_id is not None:
            self.log.append("enter")


async def test_a_turns_user_statements_run_after_its_user_entered(
    pg_url: str, pg_storage: SQLStorage
) -> None:
    """Row-level security applies to what follows ``enter``: on PostgreSQL a turn's
    statements mix steps, but never framework tables with a user's."""
    from sqlalchemy import event

    from chatwright import testing
    from chatwright.stores import NewMessage
    from chatwright.usage import BudgetLimits, TurnUsage
    from tests.harness import pg_storage_settings

    log: list[str] = []
    settings = testing.settings(storage=pg_storage_settings(pg_url))
    storage = SQLStorage.from_settings(settings, users=Entering(log))

    def noted(conn: object, cursor: object, statement: str, *args: object) -> None:
        words = set(statement.replace("(", " ").replace(",", " ").split())
        kinds = {
            kind
            for kind, tables in (("framework", FRAMEWORK_TABLES), ("user", USER_TABLES))
            if words & set(tables)
        }
        log.append("+".join(sorted(kinds)) or "other")

    try:
        await storage.agents.create("a", system_prompt="p", model="offline:x")
        chat = (await storage.sessions.open("alice", "a")).chat_id
        event.listen(storage.engine.sync_engine, "before_cursor_execute", noted)
        budget = BudgetLimits(daily=10**6, monthly=None, estimate=100)
        for n in range(2):
            log.clear()
            human = NewMessage("human", {"type": "human", "data": {"content": f"hi {n}"}})
            start = await storage.turns.begin(
                "alice", "a", chat, human, turn_id=uuid.uuid4(), budget=budget
            )
            ai = NewMessage("ai", {"type": "ai", "data": {"content": f"hello {n}"}})
            await storage.turns.finish(start, [ai], touch=True, usage=TurnUsage("m", 1, 10, 5))
            # begin: the framework's (agent, lease, budget), then the user's; the same in finish.
            assert "framework+user" not in log, log
            text = " ".join(log)
            assert re.fullmatch(r"(framework )+enter user (framework )+enter user", text), log
        window = await storage.messages.window("alice", chat, 10)
        texts = [m.content["data"]["content"] for m in window]
        assert texts == ["hi 0", "hello 0", "hi 1", "hello 1"]
        spent = await storage.usage.spent("alice", datetime.now(UTC))
        assert (spent.day, spent.month) == (30, 30)
        async with storage.read() as conn:
            leases = await conn.scalar(sa.text("SELECT count(*) FROM chat_leases"))
            reserved = await conn.scalar(sa.text("SELECT count(*) FROM usage_reservations"))
        assert (leases, reserved) == (0, 0)
    finally:
        await storage.close()
