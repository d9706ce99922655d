"""``chatwright agents add/set/show`` with an agent's bounds.

The options ``--turn-timeout``, ``--max-model-calls``, ``--max-tool-calls``,
``--history-tokens`` and ``--summarize/--no-summarize`` store the agent's
columns; ``none`` sets one back to its setting; ``agents show`` prints them
(text and JSON); and a turn run by ``chatwright chat`` obeys the stored limit.
"""

from __future__ import annotations

import json

import pytest

from tests.harness import ok, ok_json

pytestmark = pytest.mark.usefixtures("workdir")


def test_add_set_and_show_the_bounds() -> None:
    ok("db", "upgrade")
    ok(
        "agents",
        "add",
        "bounded",
        "--model",
        "offline:assistant",
        "--turn-timeout",
        "2.5",
        "--max-model-calls",
        "5",
        "--history-tokens",
        "2000",
        "--summarize",
    )
    shown = ok_json("agents", "show", "bounded", "--json")
    assert shown["turn_timeout"] == 2.5
    assert shown["max_model_calls"] == 5
    assert shown["max_tool_calls"] is None
    assert shown["history_tokens"] == 2000
    assert shown["summarize"] is True

    result = ok("agents", "set", "bounded", "--max-model-calls", "none", "--max-tool-calls", "7")
    assert "max_model_calls, max_tool_calls" in result.output
    shown = ok_json("agents", "show", "bounded", "--json")
    assert shown["max_model_calls"] is None
    assert shown["max_tool_calls"] == 7
    assert shown["turn_timeout"] == 2.5  # untouched

    ok("agents", "set", "bounded", "--no-summarize", "--history-tokens", "NONE")
    text = ok("agents", "show", "bounded").output
    assert "turn_timeout: 2.5" in text
    assert "max_model_calls: none (the setting turns.max_model_calls)" in text
    assert "max_tool_calls: 7" in text
    assert "history_tokens: none (no token bound)" in text
    assert "summarize: False" in text


def test_a_stored_limit_bounds_the_next_turn() -> None:
    ok("db", "upgrade")
    loop = [{"tool_calls": [{"name": "nothing", "args": {}}]}] * 50
    ok(
        "agents",
        "add",
        "looping",
        "--model",
        "scripted:x",
        "--setting",
        f"responses={json.dumps(loop)}",
        "--max-model-calls",
        "3",
    )
    result = ok("chat", "looping", "-m", "go")
    assert "limit of 3 model calls" in result.output
