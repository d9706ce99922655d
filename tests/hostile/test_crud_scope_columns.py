"""A ``crud`` scope whose user and agent columns are one column.

The agent's name would be written over the user's id in the scope, so every
user of the agent would read and write the rows of a "user" named after the
agent. Such a config is refused wherever it comes in, and a row stored by
hand before the rule is reported and never runs.
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from chatwright.plugins.crud.config import CrudConfig
from tests.harness import assert_error, run
from tests.test_cli_tools import by_name, check_json, insert_tool, write_json

SAME = [("user_id", "user_id"), ("user_id", "USER_ID"), ("owner", "Owner")]


def config(user: str, agent: str) -> dict[str, object]:
    return {
        "table": "tasks",
        "operation": "read",
        "scope": {"user_column": user, "agent_column": agent},
    }


@pytest.mark.parametrize(("user", "agent"), SAME)
def test_one_column_for_both_is_refused(user: str, agent: str) -> None:
    with pytest.raises(ValidationError) as caught:
        CrudConfig.model_validate(config(user, agent))
    text = str(caught.value)
    assert "user_column and agent_column name the same column" in text
    assert "give agent_column a column of its own" in text


def test_two_columns_are_fine() -> None:
    made = CrudConfig.model_validate(config("user_id", "agent_name"))
    assert made.scope.columns() == ["user_id", "agent_name"]


@pytest.mark.usefixtures("example")
def test_tools_add_refuses_it_and_stores_nothing() -> None:
    row = {
        "name": "shared",
        "type": "crud",
        "description": "d",
        "config": config("user_id", "user_id"),
    }
    write_json("tool.json", row)
    assert_error(
        run("tools", "add", "--agent", "assistant", "--file", "tool.json"),
        "user_column and agent_column name the same column",
    )
    _, reports = check_json()
    assert "shared" not in by_name(reports)


@pytest.mark.usefixtures("example")
def test_a_row_stored_by_hand_is_reported_not_run() -> None:
    insert_tool("shared", "crud", config("user_id", "user_id"))
    code, reports = check_json()
    assert code != 0
    problems = by_name(reports)["shared"]["problems"]
    assert any("user_column and agent_column name the same column" in p for p in problems), problems
