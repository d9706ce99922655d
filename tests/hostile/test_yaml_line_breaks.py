"""A YAML bundle reads back what was exported, line breaks YAML alone knows included.

YAML takes NEL (U+0085), LINE SEPARATOR (U+2028) and PARAGRAPH SEPARATOR
(U+2029) for line breaks, which a plain, single quoted or block scalar folds
into a space or a newline: a system prompt or a model setting's key holding
one came back changed, where JSON kept it. Such strings are written double
quoted, escaped.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from chatwright.bundles import dump, parse
from tests.harness import ok
from tests.hostile.conftest import AGENT
from tests.test_bundles import db as db
from tests.test_bundles import stored_agent

TEXTS = [
    "x\x85y",
    "\x85",
    "a\nb\x85",
    "a\n\x85b\n",
    "line\u2028sep",
    "para\u2029sep\n",
    " \x85 \u2028 \u2029 ",
    "long " * 30 + "\x85" + " end" * 30,
]


@pytest.mark.parametrize("fmt", ["yaml", "json"])
@pytest.mark.parametrize("text", TEXTS)
def test_a_string_with_a_yaml_line_break_reads_back_unchanged(text: str, fmt: str) -> None:
    bundle = {
        "format": "chatwright-agent",
        "version": 1,
        "agent": {"name": "a", "system_prompt": text, "model_settings": {text: [text]}},
        "tools": [],
    }
    assert parse(dump(bundle, fmt).encode(), f"b.{fmt}") == bundle


def test_export_import_export_of_such_a_prompt_gives_the_same_bytes(db: str, workdir: Path) -> None:
    prompt = "First\x85second\u2028third\u2029fourth.\nLast line."
    ok("agents", "set", AGENT, "--prompt", prompt, "--setting", 'stop=["\x85"]')
    text = ok("agents", "export", AGENT, "--format", "yaml").stdout
    path = workdir / "a.yaml"
    path.write_text(text, encoding="utf-8")
    ok("agents", "set", AGENT, "--prompt", "Other.")
    ok("agents", "import", str(path))
    agent = stored_agent(db)
    assert agent.system_prompt == prompt and agent.model_settings["stop"] == ["\x85"]
    assert ok("agents", "export", AGENT, "--format", "yaml").stdout == text
