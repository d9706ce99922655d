"""The tool loader: every valid row loads, every bad row is reported, nothing raises."""

from __future__ import annotations

import asyncio
import copy
import json
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatwright.plugins.example import assistant as example
from chatwright.plugins.sql.storage import SQLStorage
from chatwright.registry import LoadPolicy, Plugins
from chatwright.settings import Settings
from chatwright.stores import InvalidJSON, ToolRow
from chatwright.tools import ToolContext, build_row, check_tools, load_tools, parse_config
from tests.harness import storage_for

PLUGINS = Plugins.load(LoadPolicy())
SETTINGS = Settings()
GOOD = {t["name"]: t["config"] for t in example.TOOLS}


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[SQLStorage]:
    storage = storage_for(f"sqlite+aiosqlite:///{tmp_path / 'tools.db'}")
    await storage.upgrade()
    await example.seed(storage, "offline:x")
    yield storage
    await storage.close()


def row(config: Any, *, name: str = "t", type_: str = "crud", row_id: int = 99) -> ToolRow:
    now = datetime.now(UTC)
    return ToolRow(row_id, 1, name, type_, "", config, True, 0, now, now)


async def problems_of(storage: SQLStorage, config: Any, **kw: Any) -> list[str]:
    context = ToolContext("assistant", storage, SETTINGS)
    report = await build_row(row(config, **kw), "assistant", PLUGINS, context)
    assert report.ok == (not report.problems)
    return [p.brief() for p in report.problems]


async def test_example_rows_all_load(storage: SQLStorage) -> None:
    loaded = await load_tools(storage, SETTINGS, PLUGINS, "assistant", "alice")
    assert loaded.problems == []
    assert [t.name for t in loaded.tools] == [t["name"] for t in example.TOOLS]


@pytest.mark.parametrize(
    ("config", "kw", "expected"),
    [
        (InvalidJSON("{nope", "Expecting property name"), {}, "config: not valid JSON"),
        ("{nope", {}, "config: not valid JSON"),
        ([1, 2], {}, "config: must be a JSON object, not list"),
        ({}, {"type_": "rest"}, "type: unknown tool type 'rest'; known types: CRUDTool, crud"),
        ({"table": "tasks"}, {}, "config.operation: Field required"),
        ({"table": "tasks", "operation": "drop"}, {}, "config.operation: Input should be"),
        ({**GOOD["add_task"], "extra": 1}, {}, "config.extra: Extra inputs are not permitted"),
        ({**GOOD["add_task"], "table": "tasks; drop"}, {}, "config.table: String should match"),
        ({**GOOD["add_task"], "table": "missing"}, {}, "table 'missing' does not exist"),
        ({**GOOD["add_task"], "table": "agent_tools"}, {}, "'agent_tools' is a chatwright table"),
        (
            {**GOOD["list_tasks"], "returning": ["id", "nope"]},
            {},
            "config.returning[1]: table 'tasks' has no column 'nope'",
        ),
        (
            {**GOOD["add_task"], "args": {"title": {"type": "integer", "required": True}}},
            {},
            "config.args.title.type: 'integer' does not fit column 'title' of type 'string'",
        ),
        (
            {"table": "tasks", "operation": "delete", "filters": {"id": {"type": "integer"}}},
            {},
            "needs at least one required filter",
        ),
        (GOOD["add_task"], {"name": "add task!"}, "name: tool names are 1-64 letters"),
        (
            {**GOOD["add_note"], "scope": {"user_column": None}},
            {},
            "config.scope.user_column: is null, but table 'notes' is not in the setting",
        ),
    ],
)
async def test_bad_rows_are_reported_with_path_and_reason(
    storage: SQLStorage, config: Any, kw: dict[str, Any], expected: str
) -> None:
    problems = await problems_of(storage, config, **kw)
    assert any(expected in p for p in problems), problems


def test_config_parsing() -> None:
    assert parse_config('{"a": 1}') == ({"a": 1}, None)
    parsed, problem = parse_config("7")
    assert parsed is None and problem is not None and "not int" in problem.reason


async def test_bad_rows_never_stop_good_ones(
    storage: SQLStorage, caplog: pytest.LogCaptureFixture
) -> None:
    await storage.tools.add("assistant", "broken", type="crud", config={"table": "nowhere"})
    await storage.tools.add("assistant", "alien", type="teleport", config={})
    async with storage.write() as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO agent_tools (agent_id, name, type, config, position) "
                "VALUES (1, 'garbled', 'crud', '{\"table\": ', 50)"
            )
        )
    with caplog.at_level(logging.WARNING, logger="chatwright.tools"):
        loaded = await load_tools(storage, SETTINGS, PLUGINS, "assistant", "alice")
    assert [t.name for t in loaded.tools] == [t["name"] for t in example.TOOLS]
    assert {p.tool for p in loaded.problems} == {"broken", "alien", "garbled"}
    for p in loaded.problems:
        assert p.agent == "assistant" and p.row_id > 8 and p.reason
        assert str(p).startswith(f"agent 'assistant', tool {p.tool!r} (row {p.row_id}")
    logged = [r.getMessage() for r in caplog.records]
    assert len(logged) == len(loaded.problems)
    assert all("tool row skipped" in m for m in logged)


async def test_check_tools_reports_inactive_rows_too(storage: SQLStorage) -> None:
    bad = await storage.tools.add("assistant", "off_and_bad", type="crud", config={})
    await storage.tools.set_active(bad.id, False)
    reports = await check_tools(storage, SETTINGS, PLUGINS)
    by_name = {r.row.name: r for r in reports}
    assert not by_name["off_and_bad"].ok
    assert by_name["off_and_bad"].as_dict()["problems"]
    assert all(by_name[t["name"]].ok for t in example.TOOLS)
    assert [r.row.name for r in await check_tools(storage, SETTINGS, PLUGINS, "nobody")] == []


async def test_a_row_inserted_with_plain_sql_loads_without_restart(storage: SQLStorage) -> None:
    before = await load_tools(storage, SETTINGS, PLUGINS, "assistant", "alice")
    assert "count_done" not in {t.name for t in before.tools}
    config = {
        "table": "tasks",
        "operation": "read",
        "filters": {"status": {"type": "string", "required": True}},
        "returning": ["id", "title"],
    }
    async with storage.write() as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO agent_tools (agent_id, name, type, description, config, position) "
                "SELECT id, 'done_tasks', 'crud', 'List tasks by status', :config, 99 "
                "FROM agents WHERE name = 'assistant'"
            ),
            {"config": json.dumps(config)},
        )
        # A table created while everything runs is seen too.
        await conn.execute(sa.text("CREATE TABLE habits (id INTEGER PRIMARY KEY, user_id TEXT)"))
        await conn.execute(
            sa.text(
                "INSERT INTO agent_tools (agent_id, name, type, config, position) "
                "SELECT id, 'list_habits', 'crud', :config, 100 "
                "FROM agents WHERE name = 'assistant'"
            ),
            {"config": json.dumps({"table": "habits", "operation": "read"})},
        )
    after = await load_tools(storage, SETTINGS, PLUGINS, "assistant", "alice")
    assert after.problems == []
    names = [t.name for t in after.tools]
    assert names[-2:] == ["done_tasks", "list_habits"]
    tool = after.tools[-2]
    assert set(tool.args) == {"status"}
    await storage.records.insert(
        "alice", "tasks", {"user_id": "alice", "title": "x", "status": "done"}, returning=["id"]
    )
    message = await tool.ainvoke(
        {"name": "done_tasks", "args": {"status": "done"}, "id": "c1", "type": "tool_call"}
    )
    assert json.loads(message.content)["rows"][0]["title"] == "x"


# -- property: malformed configs ------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
KEYS = [
    "table",
    "operation",
    "args",
    "filters",
    "scope",
    "defaults",
    "returning",
    "order_by",
    "limit",
    "conflict",
    "table_name",
    "method",
    "field_map",
    "runtime_args_schema",
]


@st.composite
def mutated_config(draw: st.DrawFn) -> Any:
    choice = draw(st.integers(0, 3))
    if choice == 0:
        return draw(json_values.filter(lambda v: v is not None))
    if choice == 1:
        return draw(st.dictionaries(st.sampled_from(KEYS), json_values, max_size=6))
    config = copy.deepcopy(draw(st.sampled_from(list(GOOD.values()))))
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from(KEYS))
        action = draw(st.sampled_from(["set", "drop", "nest"]))
        if action == "set":
            config[key] = draw(json_values)
        elif action == "drop":
            config.pop(key, None)
        elif isinstance(config.get(key), dict) and config[key]:
            inner = draw(st.sampled_from(sorted(config[key])))
            config[key][inner] = draw(json_values)
    return config


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(configs=st.lists(mutated_config(), min_size=1, max_size=5))
def test_malformed_configs_never_break_loading(tmp_path: Path, configs: list[Any]) -> None:
    async def scenario() -> None:
        storage = storage_for(f"sqlite+aiosqlite:///{tmp_path / 'prop.db'}")
        try:
            await storage.upgrade()
            await example.seed(storage, "offline:x")
            async with storage.write() as conn:
                await conn.execute(sa.text("DELETE FROM agent_tools WHERE name LIKE 'gen_%'"))
            for i, config in enumerate(configs):
                await storage.tools.add("assistant", f"gen_{i}", type="crud", config=config)
            loaded = await load_tools(storage, SETTINGS, PLUGINS, "assistant", "alice")
            reports = await check_tools(storage, SETTINGS, PLUGINS, "assistant")
        finally:
            await storage.close()
        by_name = {r.row.name: r for r in reports}
        # The example rows always load, whatever sits next to them.
        assert all(by_name[name].ok for name in GOOD)
        bad = {name for name, r in by_name.items() if not r.ok}
        assert {p.tool for p in loaded.problems} == bad
        assert {t.name for t in loaded.tools} == set(by_name) - bad
        for r in by_name.values():
            assert r.ok == (not r.problems)
            for p in r.problems:
                assert p.path.split(".")[0].split("[")[0] in {"config", "type", "name"}
                assert p.reason

    asyncio.run(scenario())


async def test_a_type_may_build_several_tools_from_one_row(storage: SQLStorage) -> None:
    from langchain_core.tools import StructuredTool
    from pydantic import BaseModel, ConfigDict

    from chatwright import hookimpl

    class Names(BaseModel):
        model_config = ConfigDict(extra="forbid")
        names: list[str]

    class Catalogue:
        config_model = Names

        async def build(self, row: ToolRow, config: Any, context: ToolContext) -> Any:
            async def run() -> str:
                return "ok"

            return [
                StructuredTool.from_function(coroutine=run, name=n, description=n)
                for n in config.names
            ]

    class Plugin:
        @hookimpl
        def register_tool_types(self, register: Any) -> None:
            register("catalogue", Catalogue())

    plugins = Plugins.load(LoadPolicy())
    plugins.register(Plugin(), "catalogue")
    await storage.tools.add("assistant", "two", type="catalogue", config={"names": ["a", "b"]})
    await storage.tools.add("assistant", "none", type="catalogue", config={"names": []})
    loaded = await load_tools(storage, SETTINGS, plugins, "assistant")
    by_row = {t.name: (t.metadata or {})["chatwright_row"].name for t in loaded.tools}
    # Both tools of the row load, each knowing its row (its approval mode, its audit entries).
    assert by_row["a"] == by_row["b"] == "two"
    [empty] = [p for p in loaded.problems if p.tool == "none"]
    assert empty.brief() == "config: the row gives no tool"
    reports = await check_tools(storage, SETTINGS, plugins, "assistant")
    [two] = [r for r in reports if r.row.name == "two"]
    assert two.ok and [t.name for t in two.tools] == ["a", "b"] and two.tool is two.tools[0]
