"""The ``sql`` backend's user-transaction extension point.

A :class:`UserTransactions` given to :class:`SQLStorage` sees every transaction
start (with its user, or None for framework statements) and every application
table with a ``user_id`` column a tool ensures.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

from chatwright.plugins.sql.storage import SQLStorage
from chatwright.plugins.sql.user_transactions import UserTransactions
from chatwright.settings import Settings
from chatwright.stores import ColumnSpec, TableSpec


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
