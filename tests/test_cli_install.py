"""`chatwright install|uninstall`: pip in the environment chatwright runs in.

The real thing runs in scripts/test-contrib, which installs the contrib plugins
into a fresh environment with `chatwright install` and uninstalls one; here the
pip command lines and the error handling are checked.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests import harness


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    seen: list[list[str]] = []

    def fake_call(command: list[str]) -> int:
        seen.append(command)
        return 3 if "broken-package" in command else 0

    monkeypatch.setattr(subprocess, "call", fake_call)
    return seen


def run(*args: str) -> tuple[int, str]:
    result = harness.run(*args)
    return result.exit_code, result.output


def test_install_runs_pip_of_this_interpreter(calls: list[list[str]]) -> None:
    code, _ = run("install", "chatwright-redis", "./contrib/chatwright-s3fifo")
    assert code == 0
    assert calls == [
        [sys.executable, "-m", "pip", "install", "chatwright-redis", "./contrib/chatwright-s3fifo"]
    ]


def test_install_upgrade_and_editable(calls: list[list[str]]) -> None:
    code, _ = run("install", "-U", "-e", "./mine", "other")
    assert code == 0
    assert calls[0][3:] == ["install", "--upgrade", "--editable", "./mine", "other"]


def test_uninstall_with_yes(calls: list[list[str]]) -> None:
    # A distribution that is installed wherever the tests run (pip itself is faked).
    code, _ = run("uninstall", "-y", "Hypothesis", "hypothesis>=1.0")
    assert code == 0
    assert calls[0][3:] == ["uninstall", "--yes", "Hypothesis", "hypothesis>=1.0"]


def test_uninstalling_what_is_not_installed_is_an_error_and_runs_no_pip(
    calls: list[list[str]],
) -> None:
    code, output = run("uninstall", "-y", "hypothesis", "chatwright-nosuch", "../x")
    assert code == 1
    assert output.strip().splitlines()[-1] == (
        "Error: not installed here: 'chatwright-nosuch', '../x'; nothing was uninstalled. "
        "`chatwright plugins` lists the plugins installed, with their distributions"
    )
    assert calls == []


def test_pip_failure_is_one_error_line(calls: list[list[str]]) -> None:
    code, output = run("install", "broken-package")
    assert code == 1
    assert output.strip().splitlines()[-1] == (
        "Error: pip failed (exit status 3); see its output above"
    )


def test_refusals(calls: list[list[str]]) -> None:
    code, output = run("install")
    assert code == 2 and "name at least one package" in output
    for itself in ("chatwright", "chatwright>=0", "Chatwright[test]", " chatwright==0.1"):
        code, output = run("uninstall", "-y", itself)
        assert code == 2 and "would remove this command" in output, itself
    assert calls == []
