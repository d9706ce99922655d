"""``chatwright import llm-agent``: the report never hands the terminal a control sequence.

The original's rows are another system's data: a user id or a customization
kind may hold an escape sequence (ESC, a C1 control such as U+009B, the CSI of
some terminals) or a line break that, printed as it is, clears the operator's
screen, hides text, or fakes a line of the report. The report wrote them as
they were (click leaves them in on a terminal; the tests' runner is told it is
one). Each such character is now written as its escape (``\\u001b``), in the
text report and in the JSON one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner

from chatwright.cli import build_cli
from tests.test_bundles import db as db
from tests.test_import_llm_agent import bare_tables, original_database

CHAT = "1b2c3d4e-5f60-4a7b-8c9d-0e1f2a3b4c5d"
AGENT = "ops\x1b]0;owned\x07\x1b[2J"
USER = "mallory\u2028\x9b31m"
KIND = "tone\x1b[8m\nimport  agent  agent 'fake'"


def build(conn: Any) -> None:
    conn.execute(bare_tables())
    conn.execute(
        "INSERT INTO agent_configurations VALUES "
        "(1, %s, '{\"model\": \"offline:assistant\"}', 'Hi'), "
        "(2, 'plain', '{\"model\": \"offline:assistant\"}', 'Hi')",
        (AGENT,),
    )
    conn.execute(
        "INSERT INTO user_agent_prompt_customizations VALUES (1, %s, 'plain', %s, '\"x\"')",
        (USER, KIND),
    )


@pytest.fixture(scope="module")
def original() -> Iterator[str]:
    with original_database("report_controls", build) as url:
        yield url


CONTROLS = ("\x1b", "\x07", "\x9b", "\u2028")


def on_a_terminal(*args: str) -> str:
    """What the command prints where its output is a terminal (click strips nothing)."""
    result = CliRunner().invoke(build_cli(None), list(args), prog_name="chatwright", color=True)
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.mark.usefixtures("db")
def test_the_text_report_escapes_every_control_a_row_holds(original: str) -> None:
    out = on_a_terminal("import", "llm-agent", "--from", original, "--dry-run")
    assert not [c for c in CONTROLS if c in out], repr(out)
    # Each row is still named, its controls written as escapes, on a line of its own.
    (line,) = [line for line in out.splitlines() if "customization" in line and "<-" in line]
    assert "mallory\\u2028\\u009b31m/plain/tone\\u001b[8m\\u000aimport  agent" in line
    assert not [line for line in out.splitlines() if "'fake'" in line and "<-" not in line]
    assert "ops\\x1b]0;owned\\x07\\x1b[2J" in out


@pytest.mark.usefixtures("db")
def test_the_json_report_holds_no_control_either(original: str) -> None:
    out = on_a_terminal("import", "llm-agent", "--from", original, "--dry-run", "--json")
    assert not [c for c in CONTROLS if c in out], repr(out)
    items = {i["source"]: i for i in json.loads(out)["items"]}
    target = items["user_agent_prompt_customizations 1"]["target"]
    assert target.startswith("customization mallory\\u2028\\u009b31m/plain/tone\\u001b[8m")
