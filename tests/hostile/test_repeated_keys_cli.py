"""JSON given to ``tools`` and ``agents`` that gives a key twice.

``chatwright agents import`` refuses a bundle giving a key twice, but a tool row
of ``tools add --file`` saying ``"table": "tasks", "table": "notes"``, a
``tools set --config`` or an ``agents add|set --setting`` value was read by
taking the last value, silently: what was stored was not what the user (or a
reviewer) read. Each is now refused as one ``Error:`` line naming the key, its
JSON path and the file or option, and nothing is stored.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.harness import assert_error, ok, run
from tests.test_cli_tools import GOOD_TOOL, sql

pytestmark = pytest.mark.usefixtures("example")

AGAIN = "give each key once"


def stored() -> tuple[object, ...]:
    return (
        sql("SELECT name, system_prompt, model_settings, updated_at FROM agents ORDER BY name"),
        sql("SELECT id, name, description, config, updated_at FROM agent_tools ORDER BY id"),
    )


def row_text(**twice: str) -> str:
    """GOOD_TOOL as JSON, each ``old=new`` fragment of ``twice`` replaced once."""
    text = json.dumps(GOOD_TOOL)
    for old, new in twice.items():
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    return text


NESTED = row_text(**{'"table": "tasks"': '"table": "tasks", "table": "notes"'})
DEEPER = row_text(**{'"type": "string"': '"type": "string", "type": "integer"'})
TOP = row_text(**{'"name": "list_done"': '"name": "list_done", "name": "list_all"'})


@pytest.mark.parametrize(
    ("text", "said"),
    [
        (NESTED, "the key 'table' is given twice at config.table"),
        (DEEPER, "the key 'type' is given twice at config.filters.status.type"),
        (TOP, "the key 'name' is given twice at the top level"),
    ],
)
def test_a_tool_row_from_a_file_and_from_standard_input(
    workdir: Path, text: str, said: str
) -> None:
    (workdir / "row.json").write_text(text, encoding="utf-8")
    before = stored()
    command = ("tools", "add", "--agent", "assistant")
    assert_error(run(*command, "--file", "row.json"), f"row.json: {said}; {AGAIN}")
    assert_error(run(*command, input=text), f"standard input: {said}; {AGAIN}")
    assert stored() == before
    ok(*command, input=json.dumps(GOOD_TOOL))
    assert stored() != before


def test_a_tools_config() -> None:
    before = stored()
    config = '{"table": "tasks", "operation": "read", "limit": 5, "limit": 500}'
    said = f"--config: the key 'limit' is given twice at the top level; {AGAIN}"
    assert_error(run("tools", "set", "1", "--config", config), said)
    nested = '{"table": "tasks", "operation": "read", "filters": {"id": {}, "id": {}}}'
    assert_error(run("tools", "set", "1", "--config", nested), "given twice at filters.id;")
    assert stored() == before


def test_an_agents_setting() -> None:
    before = stored()
    value = '{"retries": {"max": 1, "max": 9}}'
    said = f"--setting 'client': the key 'max' is given twice at retries.max; {AGAIN}"
    for command in (("agents", "set", "assistant"), ("agents", "add", "twice")):
        # Read as text it would not be: it is JSON, only ambiguous.
        assert_error(run(*command, "--setting", f"client={value}"), said)
        assert_error(run(*command, "--setting", "x=1", "--setting", f"client={value}"), said)
    assert stored() == before
    assert sql("SELECT count(*) FROM agents WHERE name = 'twice'") == [(0,)]
    ok("agents", "set", "assistant", "--setting", 'client={"retries": {"max": 1}}')
    assert stored() != before
