"""``crud`` tools on uuid-keyed tables with uuid user ids, and ``updated_at`` on writes.

On SQLite and PostgreSQL: the original system's rows declare uuid keys as
``"str"``; such arguments, filters, data and the user scope work on ``uuid``
columns, a string that is not a UUID is the model's tool error, and an update
or upsert sets ``updated_at`` unless the config writes it itself.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from chatwright.plugins.sql.storage import SQLStorage
from chatwright.registry import Plugins
from chatwright.settings import Settings
from chatwright.tools import load_tools
from tests.harness import AsUser, storage_for
from tests.harness import call_tool as call
from tests.harness import tool_err as err
from tests.harness import tool_ok as ok

ALICE = "6f1c3c2e-58a4-4a1e-9d4f-0d1b2c3d4e5f"
BOB = "0b0b0b0b-1111-4222-8333-444455556666"
TASK = "3e9d1a2b-7c4f-4d5e-9a8b-1c2d3e4f5a6b"
PLUGINS = Plugins.load()
SETTINGS = Settings()

TOOLS: dict[str, dict[str, Any]] = {
    "fetch_task": {
        "table_name": "jobs",
        "method": "fetch",
        "runtime_args_schema": {
            "filters": {"type": "dict", "properties": {"id": {"type": "str", "optional": False}}}
        },
    },
    "finish_task": {
        "table_name": "jobs",
        "method": "update",
        "runtime_args_schema": {
            "data": {"type": "dict", "properties": {"status": {"type": "str"}}},
            "filters": {"type": "dict", "properties": {"id": {"type": "str", "optional": False}}},
        },
    },
    "stamp_task": {
        "table": "jobs",
        "operation": "update",
        "args": {"status": {}, "updated_at": {"type": "datetime"}},
        "filters": {"id": {"type": "string", "required": True}},
    },
    "save_job": {
        "table": "jobs",
        "operation": "upsert",
        "args": {"id": {"type": "string", "required": True}, "status": {}},
        "conflict": ["id", "user_id"],
    },
}


def table_sql(dialect: str) -> list[str]:
    if dialect == "postgresql":
        return [
            "DROP TABLE IF EXISTS jobs",
            "CREATE TABLE jobs (id uuid PRIMARY KEY, user_id uuid NOT NULL, status text NOT NULL"
            " DEFAULT 'open', updated_at timestamptz NOT NULL DEFAULT now(),"
            " UNIQUE (id, user_id))",
        ]
    return [
        "DROP TABLE IF EXISTS jobs",
        "CREATE TABLE jobs (id uuid PRIMARY KEY, user_id uuid NOT NULL, status text NOT NULL"
        " DEFAULT 'open', updated_at timestamp NOT NULL DEFAULT CURRENT_TIMESTAMP,"
        " UNIQUE (id, user_id))",
    ]


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, SQLStorage]:
    if request.param == "postgresql":
        return "postgresql", request.getfixturevalue("pg_storage")
    return "sqlite", storage_for(f"sqlite+aiosqlite:///{tmp_path / 'u.db'}")


@pytest.fixture
async def storage(backend: tuple[str, SQLStorage]) -> AsyncIterator[SQLStorage]:
    kind, store = backend
    await store.upgrade()
    async with store.write() as conn:
        for statement in table_sql(kind):
            await conn.execute(sa.text(statement))
        await conn.execute(
            sa.text(
                "INSERT INTO jobs (id, user_id, status, updated_at) "
                "VALUES (:id, :user, 'open', :old)"
            ),
            {"id": TASK, "user": ALICE, "old": dt.datetime(2020, 1, 1)},
        )
    await store.agents.create("jobs", system_prompt="", model="offline:x")
    for name, config in TOOLS.items():
        await store.tools.add(
            "jobs", name, type="CRUDTool" if "method" in config else "crud", config=config
        )
    yield store
    if kind == "sqlite":
        await store.close()


async def tools_for(storage: SQLStorage, user: str) -> dict[str, AsUser]:
    loaded = await load_tools(storage, SETTINGS, PLUGINS, "jobs")
    assert loaded.problems == [], [str(p) for p in loaded.problems]
    return {t.name: AsUser(t, user, "jobs") for t in loaded.tools}


async def stored(storage: SQLStorage) -> dict[str, Any]:
    async with storage.read() as conn:
        row = (await conn.execute(sa.text("SELECT * FROM jobs"))).mappings().one()
    return dict(row)


def as_time(value: Any) -> dt.datetime:
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return value.replace(tzinfo=None) if value.tzinfo is None else value.astimezone(dt.UTC)


async def test_str_arguments_filters_and_user_scope_on_uuid_columns(storage: SQLStorage) -> None:
    alice = await tools_for(storage, ALICE)
    bob = await tools_for(storage, BOB)
    found = ok(await call(alice["fetch_task"], id=TASK))
    assert [str(r["id"]) for r in found["rows"]] == [TASK]
    assert ok(await call(bob["fetch_task"], id=TASK)) == {"rows": [], "count": 0}
    assert ok(await call(alice["fetch_task"], id=TASK.upper()))["count"] == 1
    assert ok(await call(alice["finish_task"], id=TASK, status="done"))["updated"] == 1
    assert err(await call(bob["finish_task"], id=TASK, status="x")).startswith("not found")
    assert (await stored(storage))["status"] == "done"


async def test_a_string_that_is_no_uuid_is_the_models_error(storage: SQLStorage) -> None:
    alice = await tools_for(storage, ALICE)
    text = err(await call(alice["fetch_task"], id="'; DROP TABLE jobs; --"))
    assert "id" in text and "UUID" in text
    assert "UUID" in err(await call(alice["finish_task"], id="42", status="done"))
    # A user whose id is not a UUID gets a clear error from a table keyed by UUID users.
    local = await tools_for(storage, "local")
    text = err(await call(local["fetch_task"], id=TASK))
    assert "UUID" in text and "user_id" in text
    assert (await stored(storage))["status"] == "open"


async def test_update_and_upsert_set_updated_at(storage: SQLStorage) -> None:
    alice = await tools_for(storage, ALICE)
    before = as_time((await stored(storage))["updated_at"])
    await asyncio.sleep(0.01)
    ok(await call(alice["finish_task"], id=TASK, status="done"))
    after = as_time((await stored(storage))["updated_at"])
    assert after > before
    assert after.year >= 2025
    # An upsert that finds the row sets it too.
    async with storage.write() as conn:
        await conn.execute(
            sa.text("UPDATE jobs SET updated_at = :old"), {"old": dt.datetime(2020, 1, 1)}
        )
    ok(await call(alice["save_job"], id=TASK, status="again"))
    row = await stored(storage)
    assert row["status"] == "again" and as_time(row["updated_at"]).year >= 2025
    # A config that writes updated_at itself keeps what it writes.
    ok(await call(alice["stamp_task"], id=TASK, status="set", updated_at="2021-06-01T00:00:00"))
    assert as_time((await stored(storage))["updated_at"]).year == 2021


async def test_uuid_keys_round_trip_as_text(storage: SQLStorage) -> None:
    alice = await tools_for(storage, ALICE)
    new = str(uuid.uuid4())
    ok(await call(alice["save_job"], id=new, status="fresh"))
    found = ok(await call(alice["fetch_task"], id=new))
    assert [(str(r["id"]), r["status"]) for r in found["rows"]] == [(new, "fresh")]
