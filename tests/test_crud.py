"""The ``crud`` tool type end to end, on SQLite and PostgreSQL.

The ``scripted`` chat model arrives in a later issue. Until then these tests
drive the tools with the exact tool-call payloads a model sends
(``{"name", "args", "id", "type": "tool_call"}``), the way the agent loop
invokes them: the result is a ``ToolMessage``, and a bad call comes back as a
``ToolMessage`` with ``status == "error"`` and a readable ``content`` (the turn
goes on, nothing raises).

What is checked: per-user isolation for every operation (create, read, update,
delete, upsert), checked in the database and not only in the tool's answer;
the schema the model sees; rows written for the original system (``CRUDTool``)
loading unchanged; result encoding and capping; unscoped tables; and the
framework's own tables never being targets.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import uuid
import warnings
import weakref
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from langchain_core.tools import BaseTool
from pydantic import ValidationError

from chatwright import testing
from chatwright.errors import InvalidInputError
from chatwright.plugins.crud.config import CrudConfig
from chatwright.plugins.crud.tool import CrudToolType, capped, dumps, to_json
from chatwright.plugins.example import assistant as example
from chatwright.plugins.sql.storage import SQLStorage
from chatwright.registry import Plugins
from chatwright.settings import Settings
from chatwright.stores import FRAMEWORK_TABLES, ColumnSpec, TableSpec
from chatwright.tools import ToolContext, ToolProblem, check_tools, load_tools
from tests.harness import AsUser, storage_for
from tests.harness import call_tool as call
from tests.harness import tool_err as err
from tests.harness import tool_ok as ok

PLUGINS = Plugins.load()
SETTINGS = Settings()
AGENT = example.AGENT
EXAMPLE = {t["name"]: t["config"] for t in example.TOOLS}
# Application tables these tests create; PostgreSQL keeps them between tests.
APP_TABLES = ("tasks", "notes", "agent_long_term_memory", "faq", "ledger")
INJECTION = "x'); DROP TABLE tasks; --"
ALWAYS_TRUE = "' OR '1'='1"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, SQLStorage]:
    if request.param == "postgresql":
        return "postgresql", request.getfixturevalue("pg_storage")
    return "sqlite", storage_for(f"sqlite+aiosqlite:///{tmp_path / 't.db'}")


@pytest.fixture
async def storage(backend: tuple[str, SQLStorage]) -> AsyncIterator[SQLStorage]:
    kind, storage = backend
    await storage.upgrade()
    async with storage.write() as conn:
        for table in APP_TABLES:
            await conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
    yield storage
    if kind == "sqlite":  # pg_storage closes its own
        await storage.close()


@pytest.fixture
async def seeded(storage: SQLStorage) -> SQLStorage:
    await example.seed(storage, "offline:x")
    return storage


# --------------------------------------------------------------------------- helpers


# Per storage (dropped with it): (id of the settings, agent, its config version) -> tools.
_SHARED: weakref.WeakKeyDictionary[SQLStorage, dict[tuple[int, str, str], list[BaseTool]]] = (
    weakref.WeakKeyDictionary()
)


async def tools_for(
    storage: SQLStorage, user: str, settings: Settings = SETTINGS, agent: str = AGENT
) -> dict[str, AsUser]:
    """The agent's tools as ``user`` calls them: one build shared by every user, as in a turn."""
    shared = _SHARED.setdefault(storage, {})
    key = (id(settings), agent, str(await storage.agents.config_version(agent)))
    if key not in shared:
        loaded = await load_tools(storage, settings, PLUGINS, agent)
        assert loaded.problems == [], [str(p) for p in loaded.problems]
        shared[key] = loaded.tools
    return {t.name: AsUser(t, user, agent) for t in shared[key]}


async def db_rows(storage: SQLStorage, table: str, **where: Any) -> list[dict[str, Any]]:
    """Rows straight from the database (plain SQL, not the tool), ordered by id."""
    clause = " AND ".join(f"{k} = :{k}" for k in where)
    sql = f"SELECT * FROM {table}" + (f" WHERE {clause}" if clause else "") + " ORDER BY id"
    async with storage.read() as conn:
        result = await conn.execute(sa.text(sql), where)
        return [dict(r) for r in result.mappings()]


async def table_exists(storage: SQLStorage, table: str) -> bool:
    def has(conn: sa.Connection) -> bool:
        return sa.inspect(conn).has_table(table)

    async with storage.read() as conn:
        return await conn.run_sync(has)


def model_args(tool: BaseTool) -> tuple[set[str], set[str]]:
    """(argument names, required argument names) of the schema the model sees."""
    schema = tool.tool_call_schema.model_json_schema()  # type: ignore[union-attr]
    return set(schema.get("properties", {})), set(schema.get("required", []))


@pytest.fixture
async def world(seeded: SQLStorage) -> dict[str, Any]:
    """Alice and Bob, each with two tasks created through their own tools."""
    alice = await tools_for(seeded, "alice")
    bob = await tools_for(seeded, "bob")
    ids: dict[str, list[int]] = {"alice": [], "bob": []}
    for user, tools in (("alice", alice), ("bob", bob)):
        for title in (f"{user} one", f"{user} two"):
            created = ok(await call(tools["add_task"], title=title, due_date="2030-01-02"))
            ids[user].append(created["created"]["id"])
    return {"storage": seeded, "alice": alice, "bob": bob, "ids": ids}


# --------------------------------------------------------------------------- 1. isolation


async def test_create_is_scoped_to_the_caller_and_user_id_is_refused(world: dict[str, Any]) -> None:
    storage, alice = world["storage"], world["alice"]
    bob_before = await db_rows(storage, "tasks", user_id="bob")

    created = ok(await call(alice["add_task"], title="mine"))["created"]
    assert created["title"] == "mine" and created["status"] == "pending"
    (row,) = await db_rows(storage, "tasks", id=created["id"])
    assert row["user_id"] == "alice"
    assert "user_id" not in created  # the scope column is not even echoed back

    for args in (
        {"title": "for bob", "user_id": "bob"},
        {"title": "for bob", "user_id": "alice"},
        {"title": "for bob", "user_id": None},
    ):
        text = err(await call(alice["add_task"], **args))
        assert "user_id" in text
    assert await db_rows(storage, "tasks", user_id="bob") == bob_before
    assert not [r for r in await db_rows(storage, "tasks") if r["title"] == "for bob"]


async def test_read_never_returns_another_users_rows(world: dict[str, Any]) -> None:
    storage, alice, bob, ids = world["storage"], world["alice"], world["bob"], world["ids"]

    mine = ok(await call(alice["list_tasks"]))
    assert sorted(r["id"] for r in mine["rows"]) == sorted(ids["alice"])
    assert mine["count"] == 2
    assert all(r["title"].startswith("alice") for r in mine["rows"])
    pending = ok(await call(alice["list_tasks"], status="pending"))
    assert sorted(r["id"] for r in pending["rows"]) == sorted(ids["alice"])
    theirs = ok(await call(bob["list_tasks"]))
    assert sorted(r["id"] for r in theirs["rows"]) == sorted(ids["bob"])

    missing_id = max(ids["alice"] + ids["bob"]) + 1000
    nothing = await call(alice["list_tasks"], id=missing_id)
    assert ok(nothing) == {"rows": [], "count": 0}
    for bob_id in ids["bob"]:
        probe = await call(alice["list_tasks"], id=bob_id)
        assert ok(probe) == {"rows": [], "count": 0}
        assert probe.content == nothing.content  # no hint that the id exists
    own = ok(await call(alice["list_tasks"], id=ids["alice"][0]))
    assert [r["id"] for r in own["rows"]] == [ids["alice"][0]]

    text = err(await call(alice["list_tasks"], user_id="bob"))
    assert "user_id" in text
    assert len(await db_rows(storage, "tasks", user_id="bob")) == 2


async def test_update_cannot_touch_another_users_rows(world: dict[str, Any]) -> None:
    storage, alice, bob, ids = world["storage"], world["alice"], world["bob"], world["ids"]
    bob_before = await db_rows(storage, "tasks", user_id="bob")
    bob_id = ids["bob"][0]
    change = {"title": "hacked", "status": "done", "due_date": "2031-01-01"}

    found_elsewhere = err(await call(alice["update_task"], id=bob_id, **change))
    assert found_elsewhere.startswith("not found")
    assert "bob" not in found_elsewhere
    assert await db_rows(storage, "tasks", user_id="bob") == bob_before

    # The same id once it exists for nobody: the answer is byte-identical.
    ok(await call(bob["delete_task"], id=bob_id))
    assert await db_rows(storage, "tasks", id=bob_id) == []
    missing = err(await call(alice["update_task"], id=bob_id, **change))
    assert missing == found_elsewhere

    bob_now = await db_rows(storage, "tasks", user_id="bob")
    for args in (
        {"id": ids["bob"][1], "user_id": "bob", **change},
        {"id": ids["alice"][0], "user_id": "bob", **change},
    ):
        text = err(await call(alice["update_task"], **args))
        assert "user_id" in text
    assert await db_rows(storage, "tasks", user_id="bob") == bob_now
    assert all(r["title"] != "hacked" for r in await db_rows(storage, "tasks"))

    # Her own row, all fields given (a partial update is tested below).
    updated = ok(await call(alice["update_task"], id=ids["alice"][0], **change))
    assert updated["updated"] == 1
    assert updated["rows"][0]["title"] == "hacked"
    (row,) = await db_rows(storage, "tasks", id=ids["alice"][0])
    assert (row["title"], row["status"], row["user_id"]) == ("hacked", "done", "alice")
    assert str(row["due_date"])[:10] == "2031-01-01"
    assert await db_rows(storage, "tasks", user_id="bob") == bob_now


async def test_update_changes_only_the_arguments_given(world: dict[str, Any]) -> None:
    storage, alice, ids = world["storage"], world["alice"], world["ids"]
    task_id = ids["alice"][0]
    done = ok(await call(alice["update_task"], id=task_id, status="done"))
    assert done["rows"][0]["status"] == "done"
    (row,) = await db_rows(storage, "tasks", id=task_id)
    assert (row["title"], row["status"]) == ("alice one", "done")
    assert str(row["due_date"])[:10] == "2030-01-02"
    text = err(await call(alice["update_task"], id=task_id))
    assert text.startswith("nothing to change")


async def test_delete_cannot_touch_another_users_rows(world: dict[str, Any]) -> None:
    storage, alice, bob, ids = world["storage"], world["alice"], world["bob"], world["ids"]
    bob_before = await db_rows(storage, "tasks", user_id="bob")

    found_elsewhere = err(await call(alice["delete_task"], id=ids["bob"][0]))
    assert found_elsewhere.startswith("not found")
    assert await db_rows(storage, "tasks", user_id="bob") == bob_before
    text = err(await call(alice["delete_task"], id=ids["bob"][1], user_id="bob"))
    assert "user_id" in text
    assert await db_rows(storage, "tasks", user_id="bob") == bob_before

    ok(await call(bob["delete_task"], id=ids["bob"][0]))
    assert err(await call(alice["delete_task"], id=ids["bob"][0])) == found_elsewhere

    assert ok(await call(alice["delete_task"], id=ids["alice"][0])) == {"deleted": 1}
    assert await db_rows(storage, "tasks", id=ids["alice"][0]) == []
    assert [r["id"] for r in await db_rows(storage, "tasks", user_id="bob")] == [ids["bob"][1]]


async def test_unknown_keys_are_refused_by_name(world: dict[str, Any]) -> None:
    storage, alice, ids = world["storage"], world["alice"], world["ids"]
    before = await db_rows(storage, "tasks")
    calls = [
        ("add_task", {"title": "x", "priority": "high"}, "priority"),
        ("add_task", {"title": "x", "title; DROP TABLE tasks": "y"}, "title; DROP TABLE tasks"),
        ("list_tasks", {"owner": "bob"}, "owner"),
        ("update_task", {"id": ids["alice"][0], "title": "x", "done": True}, "done"),
        ("delete_task", {"id": ids["alice"][0], "agent_name": "other"}, "agent_name"),
        ("save_memory", {"fact": "x", "agent_name": "other"}, "agent_name"),
    ]
    for name, args, key in calls:
        text = err(await call(alice[name], **args))
        assert key in text, (name, text)
        assert "unknown argument" in text
    assert await db_rows(storage, "tasks") == before
    assert await db_rows(storage, "agent_memories") == []


async def test_wrong_types_get_readable_errors(world: dict[str, Any]) -> None:
    storage, alice, ids = world["storage"], world["alice"], world["ids"]
    before = await db_rows(storage, "tasks")
    own = ids["alice"][0]
    calls = [
        ("list_tasks", {"id": "abc"}, "id"),
        ("list_tasks", {"id": 1.5}, "id"),
        ("list_tasks", {"status": "archived"}, "status"),
        ("update_task", {"id": "abc", "title": "x"}, "id"),
        (
            "update_task",
            {"id": own, "status": "archived", "title": "x", "due_date": None},
            "status",
        ),
        ("update_task", {"id": own, "due_date": "tomorrow", "title": "x", "status": "done"}, "due"),
        ("delete_task", {"id": 1.5}, "id"),
        ("delete_task", {}, "id"),
        ("add_task", {"title": "x", "due_date": "tomorrow"}, "due_date"),
        ("add_task", {"due_date": "2030-01-01"}, "title"),
        ("save_memory", {"fact": 123}, "fact"),
    ]
    for name, args, key in calls:
        text = err(await call(alice[name], **args))
        assert text.startswith("Invalid arguments: "), (name, text)
        assert key in text, (name, text)
    assert "'pending' or 'done'" in err(await call(alice["list_tasks"], status="archived"))
    assert await db_rows(storage, "tasks") == before
    assert await db_rows(storage, "agent_memories") == []


async def test_sql_metacharacters_are_plain_values(world: dict[str, Any]) -> None:
    storage, alice, bob = world["storage"], world["alice"], world["bob"]
    created = ok(await call(alice["add_task"], title=INJECTION))["created"]
    assert created["title"] == INJECTION
    (row,) = await db_rows(storage, "tasks", id=created["id"])
    assert row["title"] == INJECTION and row["user_id"] == "alice"
    assert await table_exists(storage, "tasks")
    assert len(await db_rows(storage, "tasks")) == 5

    # A string filter (notes by title): the classic always-true value matches only itself.
    await storage.tools.add(
        AGENT,
        "find_notes",
        type="crud",
        config={
            "table": "notes",
            "operation": "read",
            "filters": {"title": {"type": "string", "required": True}},
            "returning": ["id", "title", "body"],
        },
    )
    alice = await tools_for(storage, "alice")
    bob = await tools_for(storage, "bob")
    for user, tools in (("alice", alice), ("bob", bob)):
        ok(await call(tools["add_note"], title="groceries", body=f"{user}'s list"))
        ok(await call(tools["add_note"], title=INJECTION, body=f"{user}; DELETE FROM notes"))
    assert ok(await call(alice["find_notes"], title=ALWAYS_TRUE)) == {"rows": [], "count": 0}
    found = ok(await call(alice["find_notes"], title=INJECTION))
    assert [(r["title"], r["body"]) for r in found["rows"]] == [
        (INJECTION, "alice; DELETE FROM notes")
    ]
    ok(await call(bob["add_note"], title=ALWAYS_TRUE, body="bob's trap"))
    assert ok(await call(alice["find_notes"], title=ALWAYS_TRUE)) == {"rows": [], "count": 0}
    literal = ok(await call(bob["find_notes"], title=ALWAYS_TRUE))
    assert [r["body"] for r in literal["rows"]] == ["bob's trap"]

    assert await table_exists(storage, "tasks") and await table_exists(storage, "notes")
    assert len(await db_rows(storage, "notes")) == 5
    assert len(ok(await call(alice["list_tasks"]))["rows"]) == 3


async def test_memory_upsert_is_per_user_and_updates_in_place(seeded: SQLStorage) -> None:
    alice = await tools_for(seeded, "alice")
    bob = await tools_for(seeded, "bob")

    assert ok(await call(alice["read_memory"])) == {"rows": [], "count": 0}
    assert ok(await call(alice["save_memory"], fact="likes tea")) == {
        "saved": {"notes": "likes tea"}
    }
    assert ok(await call(bob["read_memory"])) == {"rows": [], "count": 0}

    # A second fact is added to the row, on a line of its own.
    ok(await call(alice["save_memory"], fact="lives in Oslo"))
    (row,) = await db_rows(seeded, "agent_memories")
    assert (row["user_id"], row["agent_name"]) == ("alice", AGENT)
    assert row["notes"] == "likes tea\nlives in Oslo"
    read = ok(await call(alice["read_memory"]))
    assert [r["notes"] for r in read["rows"]] == ["likes tea\nlives in Oslo"]
    dt.datetime.fromisoformat(read["rows"][0]["updated_at"])

    ok(await call(bob["save_memory"], fact="prefers coffee"))
    rows = {r["user_id"]: r["notes"] for r in await db_rows(seeded, "agent_memories")}
    assert rows == {"alice": "likes tea\nlives in Oslo", "bob": "prefers coffee"}
    assert [r["notes"] for r in ok(await call(bob["read_memory"]))["rows"]] == ["prefers coffee"]

    text = err(await call(alice["save_memory"], fact="overwrite bob", user_id="bob"))
    assert "user_id" in text
    rows = {r["user_id"]: r["notes"] for r in await db_rows(seeded, "agent_memories")}
    assert rows["bob"] == "prefers coffee"
    # A user_id sent to the argument-less read_memory is refused, and never reads
    # another user's memory.
    probe = await call(alice["read_memory"], user_id="bob")
    assert "prefers coffee" not in probe.content
    # The framework's memory store sees what the tool wrote.
    memory = await seeded.memories.get("alice", AGENT)
    assert memory is not None and memory.notes == "likes tea\nlives in Oslo"


async def test_argument_less_tool_refuses_unknown_keys(seeded: SQLStorage) -> None:
    alice = await tools_for(seeded, "alice")
    assert alice["read_memory"].args == {}
    for key in ("user_id", "agent_name", "anything"):
        text = err(await call(alice["read_memory"], **{key: "bob"}))
        assert key in text and "unknown argument" in text


# --------------------------------------------------------------------------- 2. schema


async def test_model_facing_schema_holds_only_config_names(seeded: SQLStorage) -> None:
    tools = await tools_for(seeded, "alice")
    assert set(tools) == set(EXAMPLE)
    for name, config in EXAMPLE.items():
        tool = tools[name]
        expected = set(config.get("args", {})) | set(config.get("filters", {}))
        required = {
            n
            for group in ("args", "filters")
            for n, spec in config.get(group, {}).items()
            if spec.get("required")
        }
        names, needed = model_args(tool)
        assert names == expected, name
        assert set(tool.args) == expected, name
        assert needed == required, name
        assert not {"user_id", "agent_name"} & (names | set(tool.args)), name
        schema_text = json.dumps(tool.tool_call_schema.model_json_schema())  # type: ignore[union-attr]
        assert "user_id" not in schema_text and "agent_name" not in schema_text
        for arg, spec in {**config.get("args", {}), **config.get("filters", {})}.items():
            if "enum" in spec:
                assert json.dumps(spec["enum"]) in json.dumps(tool.args[arg]), (name, arg)


# --------------------------------------------------------------------------- 3. legacy rows

LEGACY_TABLE = TableSpec(
    "agent_long_term_memory",
    (
        ColumnSpec("id", "integer", primary_key=True),
        ColumnSpec("user_id", "string", nullable=False),
        ColumnSpec("agent_id", "string"),
        ColumnSpec("notes", "string"),
        ColumnSpec("created_at", "datetime", nullable=False, default="now"),
        ColumnSpec("updated_at", "datetime", nullable=False, default="now"),
    ),
)
_ID_FILTER = {
    "filters": {
        "type": "dict",
        "optional": False,
        "properties": {"id": {"type": "int", "optional": False}},
    }
}
_MEMORY_DATA = {
    "data": {
        "type": "dict",
        "optional": False,
        "properties": {"memory_content": {"type": "str", "optional": False}},
    }
}
LEGACY_ROWS: dict[str, dict[str, Any]] = {
    "create_memory": {
        "table_name": "agent_long_term_memory",
        "method": "create",
        "field_map": {"memory_content": "notes"},
        "runtime_args_schema": _MEMORY_DATA,
    },
    "fetch_memory": {
        "table_name": "agent_long_term_memory",
        "method": "fetch",
        "runtime_args_schema": json.dumps(
            {
                "filters": {
                    "type": "dict",
                    "optional": True,
                    "properties": {"id": {"type": "int", "optional": True}},
                }
            }
        ),
    },
    "update_memory": {
        "table_name": "agent_long_term_memory",
        "method": "update",
        "field_map": {"memory_content": "notes"},
        "runtime_args_schema": {**_MEMORY_DATA, **_ID_FILTER},
    },
    "delete_memory": {
        "table_name": "agent_long_term_memory",
        "method": "delete",
        "runtime_args_schema": _ID_FILTER,
    },
}


@pytest.fixture
async def legacy(storage: SQLStorage) -> SQLStorage:
    assert await storage.records.ensure_table(LEGACY_TABLE)
    await storage.agents.create("legacy", system_prompt="You remember.", model="offline:x")
    for name, config in LEGACY_ROWS.items():
        row = await storage.tools.add(
            "legacy", name, type="CRUDTool", config=config, description=f"{name} (imported)"
        )
        assert row.type == "CRUDTool"
    return storage


async def test_legacy_rows_load_unchanged_and_run(legacy: SQLStorage) -> None:
    storage = legacy
    alice = await tools_for(storage, "alice", agent="legacy")
    bob = await tools_for(storage, "bob", agent="legacy")
    assert list(alice) == list(LEGACY_ROWS)
    assert model_args(alice["create_memory"]) == ({"memory_content"}, {"memory_content"})
    assert model_args(alice["fetch_memory"]) == ({"id"}, set())
    assert model_args(alice["update_memory"]) == (
        {"id", "memory_content"},
        {"id", "memory_content"},
    )
    assert model_args(alice["delete_memory"]) == ({"id"}, {"id"})
    for tool in alice.values():
        assert "user_id" not in tool.args and "data" not in tool.args

    # create: memory_content lands in the notes column, scoped to the caller.
    created = ok(await call(alice["create_memory"], memory_content="likes tea"))["created"]
    (row,) = await db_rows(storage, "agent_long_term_memory")
    assert (row["id"], row["user_id"], row["notes"], row["agent_id"]) == (
        created["id"],
        "alice",
        "likes tea",
        None,
    )
    assert created["notes"] == "likes tea"
    err_text = err(await call(alice["create_memory"], memory_content="x", user_id="bob"))
    assert "user_id" in err_text
    assert "memory_content" in err(await call(alice["create_memory"]))
    bob_row = ok(await call(bob["create_memory"], memory_content="bob's"))["created"]

    # fetch (schema given as a JSON string), newest first, only the caller's rows.
    fetched = ok(await call(alice["fetch_memory"]))
    assert [(r["id"], r["notes"]) for r in fetched["rows"]] == [(created["id"], "likes tea")]
    assert ok(await call(alice["fetch_memory"], id=created["id"]))["count"] == 1
    assert ok(await call(alice["fetch_memory"], id=bob_row["id"])) == {"rows": [], "count": 0}
    assert [r["notes"] for r in ok(await call(bob["fetch_memory"]))["rows"]] == ["bob's"]

    # update: only by its owner; the other user gets the same "not found" as for no row.
    bob_try = err(await call(bob["update_memory"], id=created["id"], memory_content="hijacked"))
    assert bob_try.startswith("not found")
    (row,) = await db_rows(storage, "agent_long_term_memory", id=created["id"])
    assert row["notes"] == "likes tea"
    updated = ok(
        await call(alice["update_memory"], id=created["id"], memory_content="likes coffee")
    )
    assert updated["updated"] == 1
    (row,) = await db_rows(storage, "agent_long_term_memory", id=created["id"])
    assert (row["notes"], row["user_id"]) == ("likes coffee", "alice")

    # delete: the same.
    assert err(await call(bob["delete_memory"], id=created["id"])) == bob_try
    assert len(await db_rows(storage, "agent_long_term_memory")) == 2
    assert ok(await call(alice["delete_memory"], id=created["id"])) == {"deleted": 1}
    assert await db_rows(storage, "agent_long_term_memory", id=created["id"]) == []
    assert err(await call(alice["delete_memory"], id=created["id"])).startswith("not found")
    assert err(await call(bob["update_memory"], id=created["id"], memory_content="x")) == bob_try
    (left,) = await db_rows(storage, "agent_long_term_memory")
    assert (left["user_id"], left["notes"]) == ("bob", "bob's")


async def test_legacy_malformed_schema_falls_back_to_the_default(legacy: SQLStorage) -> None:
    storage = legacy
    broken = "{'data': {'type': 'dict'"  # not JSON
    await storage.tools.add(
        "legacy",
        "create_broken",
        type="CRUDTool",
        config={
            "table_name": "agent_long_term_memory",
            "method": "create",
            "runtime_args_schema": broken,
        },
    )
    await storage.tools.add(
        "legacy",
        "create_mapped",
        type="CRUDTool",
        config={
            "table_name": "agent_long_term_memory",
            "method": "create",
            "field_map": {"memory_content": "notes"},
            "runtime_args_schema": broken,
        },
    )
    loaded = await load_tools(storage, SETTINGS, PLUGINS, "legacy", "alice")
    names = [t.name for t in loaded.tools]
    assert names == [*LEGACY_ROWS, "create_mapped"]
    assert all(isinstance(p, ToolProblem) for p in loaded.problems)
    assert [(p.tool, p.type) for p in loaded.problems] == [("create_broken", "CRUDTool")]
    assert "args" in loaded.problems[0].reason

    # With the default schema, the field_map's keys are the (untyped) arguments.
    mapped = {t.name: t for t in loaded.tools}["create_mapped"]
    assert model_args(mapped) == ({"memory_content"}, set())
    ok(await call(mapped, memory_content="from the fallback"))
    (row,) = await db_rows(storage, "agent_long_term_memory")
    assert (row["user_id"], row["notes"]) == ("alice", "from the fallback")


# --------------------------------------------------------------------------- 4. results


def test_to_json_and_dumps() -> None:
    key = uuid.UUID("12345678-1234-5678-1234-567812345678")
    data = {
        "d": dt.date(2030, 1, 2),
        "t": dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
        "n": decimal.Decimal("12.50"),
        "i": decimal.Decimal("3"),
        "u": key,
        "b": b"abc",
        "s": "é, x: y",
    }
    text = dumps(data)
    assert text == (
        '{"d":"2030-01-02","t":"2030-01-02T03:04:05+00:00","n":12.5,"i":3,'
        '"u":"12345678-1234-5678-1234-567812345678","b":"<3 bytes>","s":"é, x: y"}'
    )
    assert to_json(decimal.Decimal("3")) == 3 and isinstance(to_json(decimal.Decimal("3")), int)
    with pytest.raises(TypeError):
        to_json(object())


def test_capped() -> None:
    rows = [{"id": i, "body": "x" * 40} for i in range(40)]
    small = {"rows": rows[:2], "count": 2}
    assert capped(small, 300) == dumps(small)

    text = capped({"rows": rows, "count": 40}, 300)
    assert len(text) <= 300
    data = json.loads(text)
    assert data["count"] == 40
    assert 0 < len(data["rows"]) < 40
    assert data["rows"] == rows[: len(data["rows"])]
    assert data["truncated"] == f"showing {len(data['rows'])} of 40 rows; narrow the filters"

    # A written row that is too long to show still says it was written (no retry).
    huge = capped({"created": {"id": 7, "body": "y" * 1000}}, 300)
    assert len(huge) <= 300
    assert json.loads(huge)["created"] == {"id": 7}
    assert "too long to show" in json.loads(huge)["note"]
    too_big = capped({"deleted": 1, "detail": "z" * 1000}, 300)
    assert "too large" in json.loads(too_big)["error"]
    one_big_row = capped({"rows": [{"body": "y" * 1000}], "count": 1}, 300)
    assert len(one_big_row) <= 300
    assert json.loads(one_big_row)["rows"] == []


async def test_results_are_compact_json_with_iso_dates(seeded: SQLStorage) -> None:
    alice = await tools_for(seeded, "alice")
    msg = await call(alice["add_task"], title="pay rent", due_date="2030-01-02")
    assert msg.content == (
        '{"created":{"id":1,"title":"pay rent","status":"pending","due_date":"2030-01-02"}}'
    )
    ok(await call(alice["add_note"], body="hello", title="greeting"))
    listed = await call(alice["list_notes"])
    data = ok(listed)
    assert listed.content == json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    (note,) = data["rows"]
    assert (note["title"], note["body"]) == ("greeting", "hello")
    created_at = dt.datetime.fromisoformat(note["created_at"])
    assert abs(created_at.replace(tzinfo=None) - dt.datetime.now(dt.UTC).replace(tzinfo=None)) < (
        dt.timedelta(hours=1)
    )


async def test_numbers_and_uuids_round_trip(storage: SQLStorage) -> None:
    await storage.records.ensure_table(
        TableSpec(
            "ledger",
            (
                ColumnSpec("id", "integer", primary_key=True),
                ColumnSpec("user_id", "string", nullable=False),
                ColumnSpec("amount", "number", nullable=False),
                ColumnSpec("ref", "uuid"),
                ColumnSpec("day", "date"),
            ),
        )
    )
    await storage.agents.create("books", system_prompt="", model="offline:x")
    args = {
        "amount": {"type": "number", "required": True},
        "ref": {"type": "uuid"},
        "day": {"type": "date"},
    }
    await storage.tools.add(
        "books",
        "book",
        type="crud",
        config={"table": "ledger", "operation": "create", "args": args},
    )
    await storage.tools.add(
        "books",
        "entries",
        type="crud",
        config={"table": "ledger", "operation": "read", "filters": {"ref": {"type": "uuid"}}},
    )
    tools = await tools_for(storage, "alice", agent="books")
    ref = "12345678-1234-5678-1234-567812345678"
    created = ok(await call(tools["book"], amount=12.5, ref=ref, day="2030-01-02"))["created"]
    assert created == {"id": 1, "amount": 12.5, "ref": ref, "day": "2030-01-02"}
    ok(await call(tools["book"], amount=3, ref=str(uuid.uuid4())))
    found = ok(await call(tools["entries"], ref=ref))
    assert found == {"rows": [created], "count": 1}
    assert "ref" in err(await call(tools["entries"], ref="not-a-uuid"))
    assert "amount" in err(await call(tools["book"], amount="lots"))


async def test_numbers_no_json_number_spells_are_shown_and_written_around(
    storage: SQLStorage,
) -> None:
    """A numeric column holding Infinity (or, on PostgreSQL, NaN), written by another
    application: reading it, or updating or deleting its row (whose image the audit log
    keeps), failed with an OverflowError. Such a value is shown as its text."""
    await storage.records.ensure_table(
        TableSpec(
            "ledger",
            (
                ColumnSpec("id", "integer", primary_key=True),
                ColumnSpec("user_id", "string", nullable=False),
                ColumnSpec("amount", "number", nullable=False),
                ColumnSpec("note", "string"),
            ),
        )
    )
    pg = storage.dialect == "postgresql"
    odd = ["'Infinity'", "'-Infinity'", "'NaN'"] if pg else ["9e999", "-9e999"]
    async with storage.write() as conn:
        for value in odd:
            await conn.execute(
                sa.text(f"INSERT INTO ledger (user_id, amount) VALUES ('alice', {value})")
            )
    await storage.agents.create("books", system_prompt="", model="offline:x")
    by_id = {"id": {"type": "integer", "required": True}}
    await storage.tools.add(
        "books", "entries", type="crud", config={"table": "ledger", "operation": "read"}
    )
    await storage.tools.add(
        "books",
        "renote",
        type="crud",
        config={
            "table": "ledger",
            "operation": "update",
            "args": {"note": {"type": "string"}},
            "filters": by_id,
        },
    )
    await storage.tools.add(
        "books",
        "drop",
        type="crud",
        config={"table": "ledger", "operation": "delete", "filters": by_id},
    )
    tools = await tools_for(storage, "alice", agent="books")
    shown = ["Infinity", "-Infinity", "NaN"][: len(odd)]
    found = ok(await call(tools["entries"]))
    assert sorted(row["amount"] for row in found["rows"]) == sorted(shown)
    updated = ok(await call(tools["renote"], id=1, note="written by another app"))
    assert updated["updated"] == 1
    (first,) = [r for r in ok(await call(tools["entries"]))["rows"] if r["id"] == 1]
    assert first == {"id": 1, "amount": "Infinity", "note": "written by another app"}
    ok(await call(tools["drop"], id=2))
    assert [r["id"] for r in await db_rows(storage, "ledger")] == [1, 3][: len(odd) - 1]
    entries = await storage.audit.list(user_id="alice")
    assert sorted((e.tool_name, e.outcome) for e in entries) == [("drop", "ok"), ("renote", "ok")]


async def test_results_are_capped(seeded: SQLStorage) -> None:
    settings = Settings(tools={"max_result_chars": 300})  # type: ignore[arg-type]
    alice = await tools_for(seeded, "alice", settings)
    for i in range(40):
        ok(await call(alice["add_note"], body=f"note number {i} " + "z" * 30))
    msg = await call(alice["list_notes"])
    assert len(msg.content) <= 300
    data = ok(msg)
    assert "truncated" in data and "narrow" in data["truncated"]
    assert data["count"] == 10  # the tool's limit, before capping
    assert 0 < len(data["rows"]) < 10
    assert len(await db_rows(seeded, "notes")) == 40


# --------------------------------------------------------------------------- 5. unscoped


async def test_unscoped_table_needs_the_setting(storage: SQLStorage) -> None:
    await storage.records.ensure_table(
        TableSpec(
            "faq",
            (
                ColumnSpec("id", "integer", primary_key=True),
                ColumnSpec("question", "string", nullable=False),
                ColumnSpec("answer", "string"),
            ),
        )
    )
    await storage.agents.create("helpdesk", system_prompt="", model="offline:x")
    unscoped = {"user_column": None}
    await storage.tools.add(
        "helpdesk",
        "add_faq",
        type="crud",
        config={
            "table": "faq",
            "operation": "create",
            "args": {"question": {"required": True}, "answer": {}},
            "scope": unscoped,
        },
    )
    await storage.tools.add(
        "helpdesk",
        "list_faq",
        type="crud",
        config={
            "table": "faq",
            "operation": "read",
            "filters": {"id": {"type": "integer"}},
            "scope": unscoped,
        },
    )
    await storage.tools.add(
        "helpdesk",
        "list_faq_scoped",
        type="crud",
        config={"table": "faq", "operation": "read"},
    )

    for settings in (SETTINGS, testing.settings(tools={"unscoped_tables": ["other"]})):
        loaded = await load_tools(storage, settings, PLUGINS, "helpdesk", "alice")
        assert loaded.tools == []
        by_tool = {p.tool: p for p in loaded.problems}
        assert set(by_tool) == {"add_faq", "list_faq", "list_faq_scoped"}
        for name in ("add_faq", "list_faq"):
            assert by_tool[name].path == "config.scope.user_column"
            assert "unscoped_tables" in by_tool[name].reason
        assert "no column 'user_id'" in by_tool["list_faq_scoped"].reason

    allowed = testing.settings(tools={"unscoped_tables": ["faq"]})
    loaded = await load_tools(storage, allowed, PLUGINS, "helpdesk", "alice")
    assert [t.name for t in loaded.tools] == ["add_faq", "list_faq"]
    assert [p.tool for p in loaded.problems] == ["list_faq_scoped"]
    alice = {t.name: t for t in loaded.tools}
    bob = await load_tools(storage, allowed, PLUGINS, "helpdesk", "bob")
    bob_tools = {t.name: t for t in bob.tools}

    created = ok(await call(alice["add_faq"], question="Opening hours?", answer="9 to 5"))
    assert created["created"]["question"] == "Opening hours?"
    assert await db_rows(storage, "faq") == [
        {"id": created["created"]["id"], "question": "Opening hours?", "answer": "9 to 5"}
    ]
    shared = ok(await call(bob_tools["list_faq"]))
    assert [r["question"] for r in shared["rows"]] == ["Opening hours?"]
    assert "user_id" in err(await call(bob_tools["list_faq"], user_id="alice"))


async def test_unfiltered_unscoped_read_uses_no_deprecated_sql(storage: SQLStorage) -> None:
    spec = TableSpec(
        "faq",
        (ColumnSpec("id", "integer", primary_key=True), ColumnSpec("question", "string")),
    )
    await storage.records.ensure_table(spec)
    await storage.records.insert("alice", "faq", {"question": "Why?"}, returning=["id"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", sa.exc.SADeprecationWarning)
        rows = await storage.records.select("bob", "faq", {}, columns=["question"], limit=5)
    assert rows == [{"question": "Why?"}]


# --------------------------------------------------------------------------- 6. framework tables


async def test_framework_tables_are_never_targets(seeded: SQLStorage) -> None:
    storage = seeded
    named = {"agents", "agent_tools", "chat_sessions", "chat_messages", "prompt_customizations"}
    assert named <= FRAMEWORK_TABLES
    await storage.agents.create("intruder", system_prompt="", model="offline:x")
    for table in sorted(FRAMEWORK_TABLES):
        await storage.tools.add(
            "intruder",
            f"read_{table}",
            type="crud",
            config={"table": table, "operation": "read", "scope": {"user_column": None}},
        )
    await storage.tools.add(
        "intruder",
        "legacy_agents",
        type="CRUDTool",
        config={"table_name": "agent_tools", "method": "fetch"},
    )
    # Even an explicit unscoped allowance does not open them.
    settings = testing.settings(tools={"unscoped_tables": sorted(FRAMEWORK_TABLES)})
    loaded = await load_tools(storage, settings, PLUGINS, "intruder", "alice")
    assert loaded.tools == []
    reported = {p.tool: p for p in loaded.problems}
    assert set(reported) == {f"read_{t}" for t in FRAMEWORK_TABLES} | {"legacy_agents"}
    for problem in reported.values():
        assert problem.agent == "intruder"
        assert problem.path == "config.table"
        assert "chatwright table" in problem.reason

    records = storage.records
    for table in sorted(FRAMEWORK_TABLES):
        with pytest.raises(InvalidInputError):
            await records.describe(table)
        with pytest.raises(InvalidInputError):
            await records.select("alice", table, {"id": 1}, columns=["id"], limit=1)
        with pytest.raises(InvalidInputError):
            await records.insert("alice", table, {"name": "x"}, returning=["id"])
        with pytest.raises(InvalidInputError):
            await records.update("alice", table, {"id": 1}, {"name": "x"}, returning=["id"])
        with pytest.raises(InvalidInputError):
            await records.delete("alice", table, {"id": 1})
        with pytest.raises(InvalidInputError):
            await records.ensure_table(
                TableSpec(table, (ColumnSpec("id", "integer", primary_key=True),))
            )
    assert [a.name for a in await storage.agents.list()] == [AGENT, "intruder"]
    assert len(await storage.tools.list(AGENT)) == len(EXAMPLE)


# --------------------------------------------------------------------------- 7. hostile upsert

# An upsert whose conflict target is the primary key alone: bob sends alice's id.
UPSERT_BY_ID: dict[str, Any] = {
    "table": "tasks",
    "operation": "upsert",
    "args": {"id": {"type": "integer", "required": True}, "title": {"required": True}},
    "conflict": ["id"],
}


async def insert_tool_row(storage: SQLStorage, name: str, config: dict[str, Any]) -> int:
    """A tool row written with plain SQL, past every check ``tools add`` makes."""
    async with storage.write() as conn:
        row_id = await conn.scalar(
            sa.text(
                "INSERT INTO agent_tools (agent_id, name, type, description, config) "
                "SELECT id, :name, 'crud', '', :config FROM agents WHERE name = :agent "
                "RETURNING id"
            ),
            {"name": name, "config": json.dumps(config), "agent": AGENT},
        )
    return int(row_id)


async def test_upsert_whose_conflict_leaves_out_the_scope_is_refused(
    world: dict[str, Any],
) -> None:
    storage = world["storage"]
    row_id = await insert_tool_row(storage, "save_task", UPSERT_BY_ID)

    # tools check (and the API's tool report) name the row and the reason...
    reports = {r.row.id: r for r in await check_tools(storage, SETTINGS, PLUGINS, AGENT)}
    report = reports[row_id]
    assert not report.ok
    (problem,) = report.problems
    assert (problem.tool, problem.row_id, problem.path) == ("save_task", row_id, "config.conflict")
    assert "'user_id'" in problem.reason
    assert "another user's" in problem.reason
    assert f"row {row_id}" in str(problem)
    # ...loading leaves the tool out, so no chat can call it...
    loaded = await load_tools(storage, SETTINGS, PLUGINS, AGENT, "bob")
    assert "save_task" not in {t.name for t in loaded.tools}
    assert [(p.row_id, p.path) for p in loaded.problems] == [(row_id, "config.conflict")]
    # ...and the config model refuses it wherever it is validated (tools add too).
    with pytest.raises(ValidationError, match="must include the scope column"):
        CrudConfig.model_validate(UPSERT_BY_ID)
    # Every scope column is needed, the agent column too.
    with pytest.raises(ValidationError, match="'agent_name'"):
        CrudConfig.model_validate(
            {
                "table": "agent_memories",
                "operation": "upsert",
                "args": {"notes": {}},
                "scope": {"user_column": "user_id", "agent_column": "agent_name"},
                "conflict": ["user_id"],
            }
        )
    # A target that holds the scope is fine, and so is any target of an unscoped table.
    CrudConfig.model_validate({**UPSERT_BY_ID, "conflict": ["user_id", "id"]})
    CrudConfig.model_validate({**UPSERT_BY_ID, "scope": {"user_column": None}})


async def test_upsert_never_takes_another_users_row_even_past_validation(
    world: dict[str, Any],
) -> None:
    storage, ids = world["storage"], world["ids"]
    alice_id = ids["alice"][0]
    (alice_row,) = await db_rows(storage, "tasks", id=alice_id)
    row_id = await insert_tool_row(storage, "save_task", UPSERT_BY_ID)
    (row,) = [r for r in await storage.tools.list(AGENT) if r.id == row_id]
    # Built as if validation had let the config through (a row written by an
    # older version, say): the statement itself must still keep to the scope.
    unchecked = CrudConfig.model_validate(
        {k: v for k, v in UPSERT_BY_ID.items() if k != "conflict"}
    ).model_copy(update={"conflict": ["id"]})

    async def save_task(user: str) -> BaseTool:
        context = ToolContext(AGENT, storage, SETTINGS, user_id=user)
        return await CrudToolType().build(row, unchecked, context)

    bob_tool = await save_task("bob")
    text = err(await call(bob_tool, id=alice_id, title="bob's now"))
    assert "nothing saved" in text
    assert alice_row["title"] not in text
    assert "alice" not in text
    assert await db_rows(storage, "tasks", id=alice_id) == [alice_row]
    assert len(await db_rows(storage, "tasks", user_id="bob")) == 2

    # The same statement still does its job inside the scope: alice updates her
    # own row in place, and bob saves a row of his under a fresh id.
    saved = ok(await call(await save_task("alice"), id=alice_id, title="alice renamed"))
    assert saved["saved"]["title"] == "alice renamed"
    (renamed,) = await db_rows(storage, "tasks", id=alice_id)
    assert (renamed["user_id"], renamed["title"]) == ("alice", "alice renamed")
    fresh = max(ids["alice"] + ids["bob"]) + 100
    ok(await call(bob_tool, id=fresh, title="bob three"))
    (planted,) = await db_rows(storage, "tasks", id=fresh)
    assert (planted["user_id"], planted["title"]) == ("bob", "bob three")
