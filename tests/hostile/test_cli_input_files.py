"""Files that are not UTF-8 text, given to the CLI or the server.

A prompt file, a tool row (a file or standard input), a configuration file
(``--config`` and ``CHATWRIGHT_CONFIG``) and a JWKS file in Latin-1: one clear error naming the
file and what to do, never "unexpected UnicodeDecodeError … please report it",
and nothing is stored.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from chatwright import testing
from chatwright.errors import SettingsError
from chatwright.plugins.server import auth
from tests.harness import assert_error, run
from tests.test_cli_tools import sql

pytestmark = pytest.mark.usefixtures("example")

LATIN1 = "café".encode("latin-1")
SAID = "is not UTF-8 text (invalid continuation byte at byte 3); save it as UTF-8"


def test_a_prompt_file(workdir: Path) -> None:
    (workdir / "prompt.txt").write_bytes(b"You are " + LATIN1 + b".\n")
    for command in (["agents", "add", "latin"], ["agents", "set", "assistant"]):
        result = run(*command, "--model", "offline:x", "--prompt-file", "prompt.txt")
        assert_error(result, "prompt.txt " + SAID.replace("byte 3", "byte 11"))
    assert sql("SELECT count(*) FROM agents WHERE name = 'latin'") == [(0,)]
    assert "caf" not in sql("SELECT system_prompt FROM agents WHERE name = 'assistant'")[0][0]


def test_a_tool_row_from_a_file_and_from_standard_input(workdir: Path) -> None:
    row = b'{"name": "t", "type": "crud", "description": "' + LATIN1 + b'", "config": {}}'
    (workdir / "tool.json").write_bytes(row)
    at = row.index(LATIN1) + 3
    said = SAID.replace("byte 3", f"byte {at}")
    assert_error(
        run("tools", "add", "--agent", "assistant", "--file", "tool.json"), "tool.json " + said
    )
    stdin = run("tools", "add", "--agent", "assistant", input=row)  # type: ignore[arg-type]
    assert_error(stdin, "standard input " + said)
    assert sql("SELECT count(*) FROM agent_tools WHERE name = 't'") == [(0,)]


def test_a_configuration_file(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (workdir / "bad.toml").write_bytes(b"# " + LATIN1 + b"\n[storage]\n")
    said = "configuration file bad.toml " + SAID.replace("byte 3", "byte 5").replace(
        "; save it", "; TOML files are UTF-8: save it"
    )
    assert_error(run("--config", "bad.toml", "agents", "list"), said)
    monkeypatch.setenv("CHATWRIGHT_CONFIG", "bad.toml")
    assert_error(run("agents", "list"), said)


def test_a_jwks_file(workdir: Path) -> None:
    (workdir / "keys.json").write_bytes(b'{"keys": ["' + LATIN1 + b'"]}')
    settings = testing.settings(server={"auth": "jwt", "jwt_jwks_file": "keys.json"})
    with pytest.raises(SettingsError) as caught:
        auth.check_bind(settings, "127.0.0.1")
    assert str(caught.value) == (
        "server.jwt_jwks_file keys.json " + SAID.replace("byte 3", "byte 14")
    )
