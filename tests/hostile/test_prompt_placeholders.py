"""System prompts whose placeholders carry a conversion or a format spec.

``{memory:d}``, ``{memory!x}``, ``{custom_instructions:%}`` or a huge width such
as ``{memory:>99999999999}`` once passed the prompt check and then failed (or
tried to allocate gigabytes) on every turn, reported as the model's failure.
They are refused where a prompt is set (CLI and API, one error naming them), and
a prompt stored by hand with one is filled as the bare placeholder, so its
turns run.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from chatwright.prompts import NO_MEMORY, fill
from tests.harness import ok
from tests.test_admin_api import call, cli_error, error_of
from tests.test_cli_tools import sql

pytestmark = pytest.mark.usefixtures("example")

SHAPED = ["{memory:d}", "{memory!x}", "{custom_instructions:%}", "{memory:>99999999999}"]


@pytest.mark.parametrize("placeholder", SHAPED)
def test_cli_and_api_refuse_it_alike_and_store_nothing(workdir: Path, placeholder: str) -> None:
    prompt = f"You help. {placeholder}"
    said = cli_error("agents", "add", "shaped", "--model", "offline:x", "--prompt", prompt)
    assert f"placeholder {placeholder} has a conversion or format spec" in said
    body = {"name": "shaped", "model": "offline:x", "system_prompt": prompt}
    assert error_of(call(workdir, "POST", "/api/agents", body), 422) == said
    changed = cli_error("agents", "set", "assistant", "--prompt", prompt)
    assert f"placeholder {placeholder}" in changed
    assert sql("SELECT count(*) FROM agents WHERE name = 'shaped'") == [(0,)]
    assert placeholder not in sql("SELECT system_prompt FROM agents WHERE name = 'assistant'")[0][0]


def test_fill_takes_a_shaped_placeholder_as_the_bare_one() -> None:
    assert fill("{memory:>99999999999}|{custom_instructions!r}", "", ["be brief"]) == (
        f"{NO_MEMORY}|be brief"
    )
    # Not a placeholder, or braces that do not balance: the text as written.
    assert fill("{nosuch:>5} {memory}", "notes", []) == "{nosuch:>5} notes"
    assert fill("{memory", "notes", []) == "{memory"


def test_a_prompt_stored_by_hand_with_one_still_runs_its_turns() -> None:
    ok("agents", "set", "assistant", "--model", "scripted:x")
    ok("agents", "set", "assistant", "--setting", 'responses=[{"content": "fine"}]')
    sql("UPDATE agents SET system_prompt = 'Notes: {memory:>99999999999}' WHERE name = 'assistant'")
    result = ok("chat", "assistant", "-m", "hello", "--new")
    assert "fine" in result.stdout
