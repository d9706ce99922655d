"""A byte that is not UTF-8 text in any text option or argument of the built-in commands.

Python reads such a byte of the command line (0xff) as a lone surrogate
(``\\udcff``), which no database stores and no terminal prints. An agent's name
in ``agents set``, ``delete``, ``export``, ``tools list --agent``, ``tools copy
--to``, ``chat``, ``usage --agent``, a ``--user`` of ``chat`` or ``sessions
list`` and ``tools set --description`` got "unexpected UnicodeEncodeError …
please report it". Every one now gets one ``Error:`` line naming the option (or
the value) and changes nothing.

The cases are walked from the commands themselves: every text parameter of
every built-in command must have one here, so that a parameter added later is
checked too.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from chatwright.cli import build_cli
from chatwright.registry import LoadPolicy, Plugins
from tests.harness import assert_error, ok, run
from tests.test_cli_tools import sql

pytestmark = pytest.mark.usefixtures("example")

S = "x\udcff"
"""What ``$(printf 'x\\xff')`` is as an argument."""
SURROGATE = "holds a lone surrogate (\\udcff, the byte 0xff, which is not UTF-8 text)"
ANY_ID = str(uuid.uuid4())

# "<command> <option or ARGUMENT>": the command line that gives it S, and what the error says.
CASES: dict[str, tuple[list[str], str]] = {
    "init --example": (["init", "--example", S], "no example named 'x\\udcff'"),
    "agents show NAME": (["agents", "show", S], f"NAME {SURROGATE}"),
    "agents add NAME": (["agents", "add", S], f"NAME {SURROGATE}"),
    "agents add --prompt": (
        ["agents", "add", "new", "--prompt", S],
        "system_prompt: it holds a lone surrogate (\\udcff)",
    ),
    "agents add --model": (
        ["agents", "add", "new", "--model", f"openai:{S}"],
        f"--model {SURROGATE}",
    ),
    "agents add --setting": (
        ["agents", "add", "new", "--setting", f"k={S}"],
        "model_settings.k holds a lone surrogate (\\udcff)",
    ),
    "agents set NAME": (["agents", "set", S, "--history-window", "5"], f"NAME {SURROGATE}"),
    "agents set --prompt": (
        ["agents", "set", "assistant", "--prompt", S],
        "system_prompt: it holds a lone surrogate (\\udcff)",
    ),
    "agents set --model": (
        ["agents", "set", "assistant", "--model", f"openai:{S}"],
        f"--model {SURROGATE}",
    ),
    "agents set --setting": (
        ["agents", "set", "assistant", "--setting", f"{S}=1"],
        "has a key 'x\\udcff' holding a lone surrogate (\\udcff)",
    ),
    "agents delete NAME": (["agents", "delete", S, "-y"], f"NAME {SURROGATE}"),
    "agents export NAME": (["agents", "export", S], f"NAME {SURROGATE}"),
    "agents import --secret": (
        ["agents", "import", "bundle.json", "--secret", f"model_settings.api_key={S}"],
        "the secret given for model_settings.api_key holds a lone surrogate (\\udcff)",
    ),
    "chat AGENT": (["chat", S, "-m", "hi"], f"AGENT {SURROGATE}"),
    "chat --user": (["chat", "--user", S, "-m", "hi"], f"--user {SURROGATE}"),
    "sessions list --user": (["sessions", "list", "--user", S], f"--user {SURROGATE}"),
    "chats list --user": (["chats", "list", "--user", S], f"--user {SURROGATE}"),
    "chats list --agent": (["chats", "list", "--agent", S], f"--agent {SURROGATE}"),
    "tools list --agent": (["tools", "list", "--agent", S], f"--agent {SURROGATE}"),
    "tools add --agent": (
        ["tools", "add", "--agent", S, "--file", "row.json"],
        f"--agent {SURROGATE}",
    ),
    "tools check --agent": (["tools", "check", "--agent", S], f"--agent {SURROGATE}"),
    "tools set --name": (["tools", "set", "1", "--name", S], "name: tool names are"),
    "tools set --description": (
        ["tools", "set", "1", "--description", S],
        f"--description {SURROGATE}",
    ),
    "tools set --config": (
        ["tools", "set", "1", "--config", '{"table": "' + S + '"}'],
        "config.table holds a lone surrogate (\\udcff)",
    ),
    "tools copy --to": (["tools", "copy", "1", "--to", S], f"--to {SURROGATE}"),
    "tools copy --name": (
        ["tools", "copy", "1", "--to", "assistant", "--name", S],
        "name holds a lone surrogate (\\udcff)",
    ),
    "tools choose --user": (["tools", "choose", "1", "auto", "--user", S], f"--user {SURROGATE}"),
    "pending list --user": (["pending", "list", "--user", S], f"--user {SURROGATE}"),
    "pending approve --by": (["pending", "approve", ANY_ID, "--by", S], f"--by {SURROGATE}"),
    "pending deny --by": (["pending", "deny", ANY_ID, "--by", S], f"--by {SURROGATE}"),
    "audit list --user": (["audit", "list", "--user", S], f"--user {SURROGATE}"),
    "audit list --since": (["audit", "list", "--since", S], "--since 'x\\udcff' is not a time"),
    "usage --user": (["usage", "--user", S], f"--user {SURROGATE}"),
    "usage --agent": (["usage", "--agent", S], f"--agent {SURROGATE}"),
    "usage --since": (["usage", "--since", S], "--since 'x\\udcff' is not a date or a time"),
    "usage --until": (["usage", "--until", S], "--until 'x\\udcff' is not a date or a time"),
    "budgets show USER": (["budgets", "show", S], f"USER {SURROGATE}"),
    "budgets set USER": (["budgets", "set", S, "--daily", "1"], f"USER {SURROGATE}"),
    "budgets clear USER": (["budgets", "clear", S], f"USER {SURROGATE}"),
    "users export USER": (["users", "export", S], f"USER {SURROGATE}"),
    "users erase USER": (["users", "erase", S, "-y"], f"USER {SURROGATE}"),
}

# Text that is not refused, and why.
LEFT_AS_GIVEN = {
    # A chat message is made storable as over HTTP (the byte becomes U+FFFD), so that
    # what the terminal accepts the API accepts too.
    "chat --message",
    # Names, paths and URLs handed to pip, which takes any bytes a file name may hold.
    "install PACKAGES",
    "install --editable",
    "uninstall PACKAGES",
}


def _commands(group: click.Group, path: str = "") -> Iterator[tuple[str, click.Command]]:
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from _commands(command, f"{path}{name} ")
        else:
            yield f"{path}{name}", command


def text_parameters() -> list[str]:
    """``"<command> <option or ARGUMENT>"`` of every text parameter of a built-in command."""
    root = build_cli(Plugins.load(LoadPolicy(allow=frozenset())))
    found = []
    for path, command in _commands(root):
        callback = command.callback
        if callback is None or not callback.__module__.startswith("chatwright.commands."):
            continue  # a bundled plugin's command (serve, import llm-agent)
        for param in command.params:
            if not isinstance(param.type, click.types.StringParamType):
                continue
            if isinstance(param, click.Option):
                found.append(f"{path} {max(param.opts, key=len)}")
            else:
                found.append(f"{path} {param.human_readable_name}")
    return sorted(found)


PARAMETERS = text_parameters()


def everything() -> list[tuple[object, ...]]:
    """Every row of every table."""
    tables = [name for (name,) in sql("SELECT name FROM sqlite_master WHERE type = 'table'")]
    return [(table, sql(f'SELECT * FROM "{table}"')) for table in sorted(tables)]


@pytest.mark.parametrize("parameter", sorted({*PARAMETERS, *CASES} - LEFT_AS_GIVEN))
def test_a_byte_that_is_not_utf8_is_one_clear_error(parameter: str, workdir: Path) -> None:
    assert parameter in PARAMETERS, f"{parameter!r} is not a parameter any more: drop its case"
    assert set(PARAMETERS) >= LEFT_AS_GIVEN, "an exception names no parameter: drop it"
    assert parameter in CASES, f"no case for {parameter!r}: add one to CASES"
    argv, said = CASES[parameter]
    ok("agents", "export", "assistant", "-o", "bundle.json")
    bundle = json.loads((workdir / "bundle.json").read_text(encoding="utf-8"))
    bundle["agent"]["model_settings"] = {"api_key": {"$secret": "model_settings.api_key"}}
    (workdir / "bundle.json").write_text(json.dumps(bundle), encoding="utf-8")
    (workdir / "row.json").write_text(
        '{"name": "t", "type": "crud", "description": "d", "config": {}}', encoding="utf-8"
    )
    before = everything()
    line = assert_error(run(*argv), said)
    assert "unexpected" not in line and "report it" not in line
    assert everything() == before
