"""JSON nested deeper than the parser goes, given to ``tools`` and ``agents``.

Twenty thousand ``[`` in a tool row, a ``--config`` or a ``--setting`` made the
JSON parser itself give up (a ``RecursionError``, not a ``ValueError``), and the
command printed "unexpected RecursionError … please report it". It now gets the
error JSON nested a little too deep gets, naming where it was given, and
nothing is stored.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from chatwright.agents import MAX_JSON_DEPTH
from tests.harness import assert_error, run
from tests.test_cli_tools import sql

pytestmark = pytest.mark.usefixtures("example")

DEEP = "[" * 20_000 + "]" * 20_000
TOO_DEEP = f"is nested deeper than {MAX_JSON_DEPTH} levels of objects and lists; flatten it"


def stored() -> tuple[object, ...]:
    return (
        sql("SELECT name, system_prompt, model_settings, updated_at FROM agents ORDER BY name"),
        sql("SELECT id, name, description, config, updated_at FROM agent_tools ORDER BY id"),
    )


def test_a_tool_row_from_a_file_and_from_standard_input(workdir: Path) -> None:
    (workdir / "deep.json").write_text(DEEP, encoding="utf-8")
    row = '{"name": "t", "type": "crud", "description": "d", "config": {"x": ' + DEEP + "}}"
    (workdir / "row.json").write_text(row, encoding="utf-8")
    before = stored()
    command = ("tools", "add", "--agent", "assistant")
    assert_error(run(*command, "--file", "deep.json"), f"deep.json {TOO_DEEP}")
    assert_error(run(*command, "--file", "row.json"), f"row.json {TOO_DEEP}")
    assert_error(run(*command, input=row), f"standard input {TOO_DEEP}")
    assert stored() == before


def test_a_tools_config() -> None:
    before = stored()
    assert_error(run("tools", "set", "1", "--config", DEEP), f"--config {TOO_DEEP}")
    assert_error(run("tools", "set", "1", "--config", '{"x": ' + DEEP + "}"), TOO_DEEP)
    assert stored() == before


def test_an_agents_setting() -> None:
    before = stored()
    for command in (("agents", "set", "assistant"), ("agents", "add", "deep1")):
        said = f"--setting 'x' {TOO_DEEP}"
        assert_error(run(*command, "--setting", f"x={DEEP}"), said)
        assert_error(run(*command, "--setting", "y=1", "--setting", f"x={DEEP}"), said)
    assert stored() == before
    assert sql("SELECT count(*) FROM agents WHERE name = 'deep1'") == [(0,)]
    # The words of a value only a little too deep for a setting.
    shallow = "[" * 30 + "]" * 30
    assert_error(run("agents", "set", "assistant", "--setting", f"x={shallow}"), TOO_DEEP)
