"""``chatwright tools`` and ``init --example`` (DESIGN §4, §8).

Like ``test_cli.py``, the tests drive :func:`chatwright.cli.build_cli` with
click's ``CliRunner`` in a fresh working directory with every ``CHATWRIGHT_*``
variable removed, so the zero-configuration SQLite file ``chatwright.db`` is
used. Bad tool rows are written the way a user would write them: plain SQL
through :mod:`sqlite3`, with no chatwright code involved. Two tests run the
installed console script in a subprocess.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result

from tests import harness
from tests.harness import DB_FILE, ok, ok_json, run, script

pytestmark = pytest.mark.usefixtures("workdir")

EXAMPLE_TOOLS = [
    "add_task",
    "list_tasks",
    "update_task",
    "delete_task",
    "add_note",
    "list_notes",
    "read_memory",
    "save_memory",
]
CHECK_KEYS = {"agent", "id", "name", "type", "ok", "problems"}
LIST_KEYS = {
    "agent",
    "problems",
    "id",
    "agent_id",
    "name",
    "type",
    "description",
    "config",
    "is_active",
    "position",
    "created_at",
    "updated_at",
    "approval",
    "approval_default",
}
# "config.args.title: reason", "config.returning[1]: reason", "type: reason", "config: reason"
PROBLEM = re.compile(r"^(config|type|name)(\.[A-Za-z_]\w*|\[\d+\])*: \S.*$")

GOOD_TOOL = {
    "name": "list_done",
    "type": "crud",
    "description": "List the user's finished tasks.",
    "config": {
        "table": "tasks",
        "operation": "read",
        "filters": {"status": {"type": "string", "enum": ["pending", "done"]}},
        "returning": ["id", "title", "status"],
        "order_by": ["-due_date", "id"],
        "limit": 5,
    },
}
LEGACY_TOOL = {
    "name": "fetch_tasks",
    "type": "CRUDTool",
    "description": "Fetch the user's tasks (a row of the original system).",
    "config": {
        "table_name": "tasks",
        "method": "fetch",
        "runtime_args_schema": {
            "filters": {
                "type": "dict",
                "optional": True,
                "properties": {"status": {"type": "str", "optional": True}},
            }
        },
    },
}


# -- helpers ----------------------------------------------------------------


def assert_error(result: Result, *needles: str) -> str:
    """A user-facing error (:func:`tests.harness.assert_error`) with nothing on standard output."""
    assert result.stdout == "", result.stdout
    return harness.assert_error(result, *needles)


def sql(statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run one statement on chatwright.db with plain sqlite3 (no chatwright code)."""
    with sqlite3.connect(DB_FILE) as conn:
        rows = conn.execute(statement, params).fetchall()
    conn.close()
    return rows


def insert_tool(name: str, type_: str, config: Any, agent: str = "assistant") -> int:
    """Insert a tool row by hand; ``config`` is stored as given when it is a str, else as JSON."""
    text = config if isinstance(config, str) else json.dumps(config)
    sql(
        "INSERT INTO agent_tools (agent_id, name, type, description, config) "
        "SELECT id, ?, ?, 'hand-written row', ? FROM agents WHERE name = ?",
        (name, type_, text, agent),
    )
    ((row_id,),) = sql(
        "SELECT t.id FROM agent_tools t JOIN agents a ON a.id = t.agent_id "
        "WHERE a.name = ? AND t.name = ?",
        (agent, name),
    )
    return int(row_id)


def tool_count() -> int:
    ((count,),) = sql("SELECT count(*) FROM agent_tools")
    return int(count)


def table_rows(output: str) -> list[list[str]]:
    """The rows of an ``echo_table`` output, header first, split on runs of spaces."""
    return [line.split() for line in output.splitlines() if line.strip()]


def check_json(*args: str) -> tuple[int, list[dict[str, Any]]]:
    result = run("tools", "check", "--json", *args)
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.stderr == "", result.stderr
    return result.exit_code, json.loads(result.stdout)


def by_name(reports: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in reports}


def write_json(path: str, data: Any) -> str:
    Path(path).write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


# -- init --example ---------------------------------------------------------


def test_init_example_creates_the_tables_the_agent_and_eight_tool_rows(workdir: Path) -> None:
    result = ok("init", "--example")
    assert "Created table tasks, table notes, agent 'assistant'" in result.output

    def columns(table: str) -> dict[str, bool]:
        return {
            name: bool(notnull) for _, name, _, notnull, *_ in sql(f"PRAGMA table_info({table})")
        }

    assert list(columns("tasks")) == [
        "id",
        "user_id",
        "title",
        "status",
        "due_date",
        "created_at",
        "updated_at",
    ]
    assert list(columns("notes")) == ["id", "user_id", "title", "body", "created_at"]
    assert columns("tasks")["user_id"] and columns("notes")["user_id"]

    rows = sql(
        "SELECT t.name, t.type, t.is_active, t.position, t.config FROM agent_tools t "
        "JOIN agents a ON a.id = t.agent_id WHERE a.name = 'assistant' ORDER BY t.position"
    )
    assert [r[0] for r in rows] == EXAMPLE_TOOLS
    assert {r[1] for r in rows} == {"crud"}
    assert all(r[2] == 1 for r in rows)
    assert [r[3] for r in rows] == list(range(8))
    tables = {r[0]: json.loads(r[4])["table"] for r in rows}
    assert tables["add_task"] == "tasks"
    assert tables["add_note"] == "notes"
    assert tables["save_memory"] == "agent_memories"

    # Running it again changes nothing.
    again = ok("init", "--example")
    assert "already there" in again.output
    assert tool_count() == 8


# -- tools list -------------------------------------------------------------


@pytest.mark.usefixtures("example")
def test_tools_list_shows_every_row_as_a_table() -> None:
    rows = table_rows(ok("tools", "list").stdout)
    assert rows[0] == ["id", "agent", "name", "type", "active", "position", "approval"]
    assert [r[2] for r in rows[1:]] == EXAMPLE_TOOLS
    assert all(r[1] == "assistant" and r[3] == "crud" and r[4] == "yes" for r in rows[1:])
    assert all(r[6] == "auto" for r in rows[1:])
    assert [r[0] for r in rows[1:]] == [str(i) for i in range(1, 9)]


@pytest.mark.usefixtures("example")
def test_tools_list_json_gives_whole_rows() -> None:
    rows = ok_json("tools", "list", "--json")
    assert [r["name"] for r in rows] == EXAMPLE_TOOLS
    for row in rows:
        assert set(row) == LIST_KEYS
        assert row["agent"] == "assistant"
        assert row["is_active"] is True
    add_task = by_name(rows)["add_task"]
    assert add_task["config"]["operation"] == "create"
    assert add_task["config"]["args"]["title"]["required"] is True
    assert add_task["description"] == "Add a task to the user's list."


@pytest.mark.usefixtures("example")
def test_tools_list_agent_filter_and_unknown_agent() -> None:
    ok("agents", "add", "helper")
    write_json("tool.json", GOOD_TOOL)
    ok("tools", "add", "--agent", "helper", "--file", "tool.json")

    everything = ok_json("tools", "list", "--json")
    assert len(everything) == 9
    assistant = ok_json("tools", "list", "--json", "--agent", "assistant")
    assert [r["name"] for r in assistant] == EXAMPLE_TOOLS
    helper = ok_json("tools", "list", "--json", "--agent", "helper")
    assert [(r["agent"], r["name"]) for r in helper] == [("helper", "list_done")]
    text = table_rows(ok("tools", "list", "--agent", "helper").stdout)
    assert [r[1:3] for r in text[1:]] == [["helper", "list_done"]]

    assert_error(run("tools", "list", "--agent", "nobody"), "no agent named 'nobody'")
    assert_error(run("tools", "list", "--json", "--agent", "nobody"), "no agent named 'nobody'")


def test_tools_list_with_no_rows_says_how_to_add_one() -> None:
    ok("init")
    assert "No tools; add one with `chatwright tools add" in ok("tools", "list").stdout
    assert ok_json("tools", "list", "--json") == []
    assert "No tool rows to check." in ok("tools", "check").stdout


# -- tools check ------------------------------------------------------------


@pytest.mark.usefixtures("example")
def test_tools_check_on_the_example_passes() -> None:
    result = ok("tools", "check")
    lines = result.stdout.splitlines()
    assert lines == [
        f"ok   #{i} assistant/{name} [crud]" for i, name in enumerate(EXAMPLE_TOOLS, 1)
    ]
    assert result.stderr == ""

    code, reports = check_json()
    assert code == 0
    assert [r["name"] for r in reports] == EXAMPLE_TOOLS
    for report in reports:
        assert set(report) == CHECK_KEYS
        assert report["ok"] is True
        assert report["problems"] == []
        assert report["agent"] == "assistant"
        assert report["type"] == "crud"
        assert isinstance(report["id"], int)


BAD_ROWS: list[tuple[str, str, Any, str, str]] = [
    # (name, type, config (str = stored as is), expected path, expected words of the reason)
    ("bad_json", "crud", '{"table": "tasks", "operation": ', "config", "not valid JSON"),
    ("not_object", "crud", [1, 2], "config", "must be a JSON object, not list"),
    (
        "bad_type",
        "spreadsheet",
        {"table": "tasks", "operation": "read"},
        "type",
        "unknown tool type 'spreadsheet'; known types: CRUDTool, crud",
    ),
    (
        "no_table",
        "crud",
        {"table": "invoices", "operation": "read"},
        "config.table",
        "table 'invoices' does not exist in the database",
    ),
    (
        "no_column",
        "crud",
        {"table": "tasks", "operation": "read", "filters": {"colour": {"type": "string"}}},
        "config.filters.colour",
        "table 'tasks' has no column 'colour'",
    ),
    (
        "mapped_column",
        "crud",
        {"table": "tasks", "operation": "read", "filters": {"c": {"column": "colour"}}},
        "config.filters.c.column",
        "table 'tasks' has no column 'colour'",
    ),
    (
        "framework",
        "crud",
        {"table": "agents", "operation": "read"},
        "config.table",
        "'agents' is a chatwright table; tools may not use it",
    ),
    (
        "scope_arg",
        "crud",
        {
            "table": "tasks",
            "operation": "create",
            "args": {"title": {"required": True}, "user_id": {"type": "string"}},
        },
        "config",
        "args.user_id maps to scope column 'user_id'; the framework sets it",
    ),
    (
        "update_all",
        "crud",
        {
            "table": "tasks",
            "operation": "update",
            "args": {"status": {"type": "string"}},
            "filters": {"id": {"type": "integer"}},
        },
        "config",
        "needs at least one required filter",
    ),
    (
        "wrong_type",
        "crud",
        {"table": "tasks", "operation": "read", "filters": {"id": {"type": "date"}}},
        "config.filters.id.type",
        "'date' does not fit column 'id' of type 'integer'",
    ),
    (
        "no_title",
        "crud",
        {"table": "tasks", "operation": "create", "args": {"due_date": {"type": "date"}}},
        "config.args",
        "column 'title' is NOT NULL without a default; add it to args or defaults",
    ),
    (
        "legacy_bad",
        "CRUDTool",
        {"table_name": "tasks", "method": "frobnicate"},
        "config",
        "method 'frobnicate' is not one of create, fetch, update, delete",
    ),
]


@pytest.mark.usefixtures("example")
@pytest.mark.parametrize(
    ("name", "type_", "config", "path", "reason"), BAD_ROWS, ids=[r[0] for r in BAD_ROWS]
)
def test_tools_check_reports_a_bad_row_and_keeps_the_good_ones(
    name: str, type_: str, config: Any, path: str, reason: str
) -> None:
    row_id = insert_tool(name, type_, config)
    code, reports = check_json()
    assert code == 1
    reports_by_name = by_name(reports)
    assert len(reports) == 9
    for good in EXAMPLE_TOOLS:
        assert reports_by_name[good]["ok"] is True, reports_by_name[good]
        assert reports_by_name[good]["problems"] == []
    bad = reports_by_name[name]
    assert set(bad) == CHECK_KEYS
    assert (bad["agent"], bad["id"], bad["type"], bad["ok"]) == ("assistant", row_id, type_, False)
    assert bad["problems"], bad
    for problem in bad["problems"]:
        assert PROBLEM.match(problem), f"no JSON path and reason in {problem!r}"
    assert any(p.startswith(path) and reason in p for p in bad["problems"]), bad["problems"]
    if not path.endswith("."):
        assert any(p.startswith(f"{path}: ") for p in bad["problems"]), bad["problems"]


@pytest.mark.usefixtures("example")
def test_tools_check_text_output_with_many_bad_rows() -> None:
    ids = {name: insert_tool(name, type_, config) for name, type_, config, _, _ in BAD_ROWS}
    result = run("tools", "check")
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    lines = result.stdout.splitlines()
    for i, name in enumerate(EXAMPLE_TOOLS, 1):
        assert f"ok   #{i} assistant/{name} [crud]" in lines
    for name, type_, _, path, reason in BAD_ROWS:
        header = f"BAD  #{ids[name]} assistant/{name} [{type_}]"
        assert header in lines, result.stdout
        detail = lines[lines.index(header) + 1]
        assert detail.startswith("       " + path), detail
        assert reason in detail, detail
    assert result.stderr == f"{len(BAD_ROWS)} of {8 + len(BAD_ROWS)} tool rows have problems\n"

    # The listing still works with a row whose config is not JSON at all.
    listed = by_name(ok_json("tools", "list", "--json"))
    assert listed["bad_json"]["config"]["invalid_json"] == '{"table": "tasks", "operation": '
    assert listed["add_task"]["config"]["table"] == "tasks"


@pytest.mark.usefixtures("example")
def test_tools_check_agent_filter() -> None:
    ok("agents", "add", "helper")
    insert_tool("no_table", "crud", {"table": "invoices", "operation": "read"}, agent="helper")

    code, reports = check_json("--agent", "assistant")
    assert code == 0
    assert [r["name"] for r in reports] == EXAMPLE_TOOLS
    assert ok("tools", "check", "--agent", "assistant").stdout.count("ok   #") == 8

    code, reports = check_json("--agent", "helper")
    assert code == 1
    assert [(r["agent"], r["name"], r["ok"]) for r in reports] == [("helper", "no_table", False)]

    code, reports = check_json()
    assert code == 1
    assert len(reports) == 9

    assert_error(run("tools", "check", "--agent", "nobody"), "no agent named 'nobody'")


@pytest.mark.usefixtures("example")
def test_tools_check_accepts_a_config_stored_as_a_json_string() -> None:
    insert_tool(
        "as_string", "crud", json.dumps(json.dumps({"table": "notes", "operation": "read"}))
    )
    code, reports = check_json()
    assert code == 0
    assert by_name(reports)["as_string"]["ok"] is True


@pytest.mark.usefixtures("example")
def test_tools_check_names_the_bad_method_of_a_legacy_row() -> None:
    insert_tool("legacy_bad", "CRUDTool", {"table_name": "tasks", "method": "frobnicate"})
    _, reports = check_json()
    problems = by_name(reports)["legacy_bad"]["problems"]
    assert any(p.startswith("config: method 'frobnicate'") for p in problems), problems


# -- tools add --------------------------------------------------------------


@pytest.mark.usefixtures("example")
def test_tools_add_inserts_a_valid_row() -> None:
    write_json("tool.json", GOOD_TOOL)
    result = ok("tools", "add", "--agent", "assistant", "--file", "tool.json")
    assert result.stdout == "Added tool 'list_done' (row 9) to agent 'assistant', approval auto\n"

    ((name, type_, description, config, active, position),) = sql(
        "SELECT name, type, description, config, is_active, position FROM agent_tools WHERE id = 9"
    )
    assert (name, type_, description) == ("list_done", "crud", GOOD_TOOL["description"])
    assert json.loads(config) == GOOD_TOOL["config"]
    assert (active, position) == (1, 8)

    rows = table_rows(ok("tools", "list").stdout)
    assert ["9", "assistant", "list_done", "crud", "yes", "8", "auto"] in rows
    code, reports = check_json()
    assert code == 0
    assert by_name(reports)["list_done"]["ok"] is True


@pytest.mark.usefixtures("example")
def test_tools_add_keeps_is_active_and_position_from_the_file() -> None:
    write_json("tool.json", {**GOOD_TOOL, "is_active": False, "position": 42})
    ok("tools", "add", "--agent", "assistant", "--file", "tool.json")
    assert sql("SELECT is_active, position FROM agent_tools WHERE name = 'list_done'") == [(0, 42)]
    row = by_name(ok_json("tools", "list", "--json"))["list_done"]
    assert (row["is_active"], row["position"]) == (False, 42)


@pytest.mark.usefixtures("example")
def test_tools_add_reads_standard_input() -> None:
    result = ok("tools", "add", "--agent", "assistant", input=json.dumps(GOOD_TOOL))
    assert "Added tool 'list_done'" in result.stdout
    assert by_name(ok_json("tools", "list", "--json"))["list_done"]["type"] == "crud"


@pytest.mark.usefixtures("example")
def test_tools_add_accepts_a_legacy_row_unchanged() -> None:
    result = ok("tools", "add", "--agent", "assistant", input=json.dumps(LEGACY_TOOL))
    assert "Added tool 'fetch_tasks'" in result.stdout
    ((type_, config),) = sql("SELECT type, config FROM agent_tools WHERE name = 'fetch_tasks'")
    assert type_ == "CRUDTool"
    assert json.loads(config) == LEGACY_TOOL["config"]  # stored as given, normalized on load
    code, reports = check_json()
    assert code == 0
    report = by_name(reports)["fetch_tasks"]
    assert (report["type"], report["ok"]) == ("CRUDTool", True)

    # A legacy create with a field_map, as in the original's long-term memory tool.
    legacy_create = {
        "name": "write_note",
        "type": "CRUDTool",
        "config": {
            "table_name": "notes",
            "method": "create",
            "field_map": {"text": "body"},
            "runtime_args_schema": json.dumps(
                {
                    "data": {
                        "type": "dict",
                        "optional": False,
                        "properties": {"text": {"type": "str", "optional": False}},
                    }
                }
            ),
        },
    }
    write_json("legacy.json", legacy_create)
    ok("tools", "add", "--agent", "assistant", "--file", "legacy.json")
    assert check_json()[0] == 0


INVALID_ADDS: list[tuple[str, str, tuple[str, ...]]] = [
    # (id, file content, words the one Error line must hold)
    (
        "missing_table",
        json.dumps({"name": "x", "config": {"table": "invoices", "operation": "read"}}),
        ("tool 'x' not added", "config.table", "table 'invoices' does not exist"),
    ),
    (
        "bad_config",
        json.dumps({"name": "x", "config": {"table": "tasks", "operation": "list"}}),
        ("tool 'x' not added", "config.operation"),
    ),
    (
        "unknown_type",
        json.dumps({"name": "x", "type": "spreadsheet", "config": {}}),
        ("tool 'x' not added", "type: unknown tool type 'spreadsheet'"),
    ),
    (
        "bad_name",
        json.dumps({"name": "two words", "config": {"table": "tasks", "operation": "read"}}),
        ("tool 'two words' not added", "name: tool names are 1-64 letters"),
    ),
    ("bad_json", '{"name": "x", ', ("tool.json is not valid JSON",)),
    ("not_object", json.dumps([GOOD_TOOL]), ("tool.json must hold one JSON object",)),
    (
        "unknown_field",
        json.dumps({**GOOD_TOOL, "colour": "red"}),
        ("tool.json: unknown field 'colour'",),
    ),
    (
        "deleted_original_row",
        json.dumps({**GOOD_TOOL, "id": "6f1c3c2e-58a4-4a1e-9d4f-0d1b2c3d4e5f", "is_deleted": True}),
        ("tool.json: the row is marked is_deleted",),
    ),
    (
        "both_names",
        json.dumps({**GOOD_TOOL, "tool_name": "other"}),
        ("tool.json: give 'name' or 'tool_name', not both",),
    ),
    (
        "missing_name",
        json.dumps({k: v for k, v in GOOD_TOOL.items() if k != "name"}),
        ('tool.json: the tool needs a "name"',),
    ),
    (
        "duplicate_name",
        json.dumps({**GOOD_TOOL, "name": "add_task"}),
        ("agent 'assistant' already has a tool named 'add_task'",),
    ),
]


@pytest.mark.usefixtures("example")
@pytest.mark.parametrize(
    ("content", "needles"), [r[1:] for r in INVALID_ADDS], ids=[r[0] for r in INVALID_ADDS]
)
def test_tools_add_refuses_an_invalid_row(content: str, needles: tuple[str, ...]) -> None:
    before = sql("SELECT id, name, config FROM agent_tools ORDER BY id")
    write_json("tool.json", content)
    assert_error(run("tools", "add", "--agent", "assistant", "--file", "tool.json"), *needles)
    assert sql("SELECT id, name, config FROM agent_tools ORDER BY id") == before


@pytest.mark.usefixtures("example")
def test_tools_add_refuses_an_unknown_agent() -> None:
    write_json("tool.json", GOOD_TOOL)
    assert_error(
        run("tools", "add", "--agent", "nobody", "--file", "tool.json"), "no agent named 'nobody'"
    )
    assert tool_count() == 8


@pytest.mark.usefixtures("example")
def test_tools_add_names_standard_input_in_errors() -> None:
    assert_error(
        run("tools", "add", "--agent", "assistant", input="[]"), "standard input must hold"
    )
    assert_error(
        run("tools", "add", "--agent", "assistant", input=""), "standard input is not valid"
    )
    assert tool_count() == 8


@pytest.mark.usefixtures("example")
def test_tools_add_refuses_a_non_boolean_is_active() -> None:
    write_json("tool.json", {**GOOD_TOOL, "is_active": "false"})
    assert_error(run("tools", "add", "--agent", "assistant", "--file", "tool.json"), "is_active")
    assert tool_count() == 8


# -- tools disable / enable -------------------------------------------------


@pytest.mark.usefixtures("example")
def test_tools_disable_and_enable() -> None:
    result = ok("tools", "disable", "3")
    assert result.stdout == "Tool 'update_task' (row 3) is now disabled\n"
    assert sql("SELECT is_active FROM agent_tools WHERE id = 3") == [(0,)]
    assert sql("SELECT count(*) FROM agent_tools WHERE is_active") == [(7,)]

    rows = {r[0]: r for r in table_rows(ok("tools", "list").stdout)[1:]}
    assert rows["3"][4] == "no"
    assert all(rows[str(i)][4] == "yes" for i in (1, 2, 4, 5, 6, 7, 8))
    assert by_name(ok_json("tools", "list", "--json"))["update_task"]["is_active"] is False

    shown = ok("agents", "show", "assistant").stdout.splitlines()
    assert "  #3 update_task [crud] (disabled)" in shown
    assert "  #2 list_tasks [crud]" in shown
    tools = {t["name"]: t for t in ok_json("agents", "show", "assistant", "--json")["tools"]}
    assert tools["update_task"]["is_active"] is False

    # A disabled row is still checked, and marked.
    assert "ok   #3 assistant/update_task [crud] (disabled)" in ok("tools", "check").stdout

    result = ok("tools", "enable", "3")
    assert result.stdout == "Tool 'update_task' (row 3) is now enabled\n"
    assert sql("SELECT is_active FROM agent_tools WHERE id = 3") == [(1,)]
    assert "  #3 update_task [crud]" in ok("agents", "show", "assistant").stdout.splitlines()


@pytest.mark.usefixtures("example")
def test_a_disabled_tool_is_not_loaded() -> None:
    from chatwright.runtime import Runtime
    from chatwright.tools import load_tools

    async def names() -> list[str]:
        async with Runtime() as runtime:
            loaded = await load_tools(
                runtime.storage, runtime.settings, runtime.plugins, "assistant", "alice"
            )
        assert loaded.problems == []
        return [t.name for t in loaded.tools]

    ok("tools", "disable", "3")
    assert asyncio.run(names()) == [n for n in EXAMPLE_TOOLS if n != "update_task"]
    ok("tools", "enable", "3")
    assert asyncio.run(names()) == EXAMPLE_TOOLS


@pytest.mark.usefixtures("example")
def test_tools_disable_and_enable_unknown_id() -> None:
    assert_error(run("tools", "disable", "999"), "no tool row with id 999")
    assert_error(run("tools", "enable", "999"), "no tool row with id 999")
    assert sql("SELECT count(*) FROM agent_tools WHERE is_active") == [(8,)]
    result = run("tools", "disable", "three")
    assert result.exit_code == 2
    assert "'three' is not a valid integer" in result.stderr


# -- the console script -----------------------------------------------------


def test_console_script_tools_check_json_and_add_from_stdin(workdir: Path) -> None:
    init = script("init", "--example", cwd=workdir)
    assert init.returncode == 0, init.stderr

    check = script("tools", "check", "--json", cwd=workdir)
    assert check.returncode == 0, check.stderr
    assert check.stderr == ""
    reports = json.loads(check.stdout)
    assert [r["name"] for r in reports] == EXAMPLE_TOOLS
    assert all(set(r) == CHECK_KEYS and r["ok"] for r in reports)

    insert_tool("framework", "crud", {"table": "agent_tools", "operation": "read"})
    check = script("tools", "check", "--json", cwd=workdir)
    assert check.returncode == 1, check.stdout
    assert check.stderr == ""
    bad = by_name(json.loads(check.stdout))["framework"]
    assert bad["problems"] == [
        "config.table: 'agent_tools' is a chatwright table; tools may not use it"
    ]

    added = script("tools", "add", "--agent", "assistant", cwd=workdir, input=json.dumps(GOOD_TOOL))
    assert added.returncode == 0, added.stderr
    assert added.stdout.startswith("Added tool 'list_done' (row 10) to agent 'assistant'")
    assert sql("SELECT type FROM agent_tools WHERE name = 'list_done'") == [("crud",)]

    refused = script("tools", "add", "--agent", "assistant", cwd=workdir, input="[1]")
    assert refused.returncode == 1
    assert refused.stderr == "Error: standard input must hold one JSON object (a tool row)\n"
    assert tool_count() == 10


# -- run time: an update changes only what the model gives -------------------


@pytest.mark.usefixtures("example")
def test_update_with_only_some_args_leaves_the_others_alone() -> None:
    """Omitted optional args are not written as NULL (they once were: tasks.title broke)."""
    from chatwright.runtime import Runtime
    from chatwright.tools import load_tools

    async def work() -> list[str]:
        async with Runtime() as runtime:
            loaded = await load_tools(
                runtime.storage, runtime.settings, runtime.plugins, "assistant", "alice"
            )
            tools = {t.name: t for t in loaded.tools}
            out = []
            for name, args in (
                ("add_task", {"title": "Walk", "due_date": "2030-01-02"}),
                ("update_task", {"id": 1, "status": "done"}),
                ("update_task", {"id": 1}),
            ):
                message = await tools[name].ainvoke(
                    {"type": "tool_call", "id": "1", "name": name, "args": args}
                )
                out.append(str(message.content))
            return out

    created, updated, nothing = asyncio.run(work())
    assert json.loads(created)["created"]["id"] == 1
    assert updated.startswith("{"), updated
    assert json.loads(updated) == {
        "updated": 1,
        "rows": [{"id": 1, "title": "Walk", "status": "done", "due_date": "2030-01-02"}],
    }
    assert nothing == "nothing to change: give at least one of title, status, due_date"
    assert sql("SELECT title, status, due_date FROM tasks") == [("Walk", "done", "2030-01-02")]


@pytest.mark.usefixtures("example")
def test_tools_list_shows_a_row_refused_at_load_as_refused() -> None:
    row_id = insert_tool("ghost", "crud", {"table": "no_such_table", "operation": "read"})
    rows = {r[2]: r for r in table_rows(ok("tools", "list").stdout)[1:]}
    assert rows["ghost"][0] == str(row_id)
    assert rows["ghost"][4] == "refused"
    assert rows["add_task"][4] == "yes"
    listed = by_name(ok_json("tools", "list", "--json"))
    assert listed["ghost"]["is_active"] is True
    assert any("no_such_table" in p for p in listed["ghost"]["problems"])
    assert listed["add_task"]["problems"] == []
    # A disabled row is "no", whether or not it would load.
    ok("tools", "disable", str(row_id))
    assert {r[2]: r[4] for r in table_rows(ok("tools", "list").stdout)[1:]}["ghost"] == "no"


@pytest.mark.usefixtures("example")
def test_tools_add_takes_a_row_as_listed_or_as_the_original_stored_it() -> None:
    """A row from ``tools list --json``, or the original's agent_tools row (uuid id and
    agent_id, timestamps, is_deleted, its first column names): what a new row does not
    take is dropped, and said so."""
    listed = by_name(ok_json("tools", "list", "--agent", "assistant", "--json"))["list_tasks"]
    write_json("listed.json", {**listed, "name": "list_tasks_again"})
    added = ok("tools", "add", "--agent", "assistant", "--file", "listed.json")
    assert "Added tool 'list_tasks_again'" in added.stdout
    assert "ignored id, agent_id, agent, created_at, updated_at, problems" in added.stderr
    again = by_name(ok_json("tools", "list", "--agent", "assistant", "--json"))["list_tasks_again"]
    assert again["id"] != listed["id"]
    assert (again["config"], again["description"]) == (listed["config"], listed["description"])

    original = {
        "id": "6f1c3c2e-58a4-4a1e-9d4f-0d1b2c3d4e5f",
        "agent_id": "0d1b2c3d-58a4-4a1e-9d4f-6f1c3c2e4e5f",
        "tool_name": "fetch_my_tasks",
        "tool_type": "CRUDTool",
        "description": "Fetch the user's tasks.",
        "tool_config": {"table_name": "tasks", "method": "fetch"},
        "is_active": True,
        "order": 9,
        "created_at": "2025-05-01T10:00:00+00:00",
        "updated_at": "2025-05-02T10:00:00+00:00",
        "is_deleted": False,
    }
    write_json("original.json", original)
    added = ok("tools", "add", "--agent", "assistant", "--file", "original.json")
    assert "Added tool 'fetch_my_tasks'" in added.stdout
    assert "ignored is_deleted, id, agent_id, created_at, updated_at" in added.stderr
    row = by_name(ok_json("tools", "list", "--agent", "assistant", "--json"))["fetch_my_tasks"]
    assert (row["type"], row["position"], row["problems"]) == ("CRUDTool", 9, [])
