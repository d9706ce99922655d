"""Attacks on the command line as a terminal user meets it: Ctrl-C at a prompt, bytes
that are not text on standard input, a price no cost can be computed from, a NUL in a
database path, and uninstalling what chatwright runs on.

Each runs the installed ``chatwright`` in a process of its own (a pseudo-terminal for
Ctrl-C), as a user would.
"""

from __future__ import annotations

import json
import os
import select
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from chatwright.cli import build_cli
from chatwright.commands import install as install_module
from tests.harness import CONSOLE_SCRIPT

CONSOLE = str(CONSOLE_SCRIPT)


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("CHATWRIGHT_")}


def cw(cwd: Path, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[Any]:
    options: dict[str, Any] = {"capture_output": True, "timeout": 120, "text": True, **kwargs}
    return subprocess.run([CONSOLE, *args], cwd=cwd, env=env(), check=False, **options)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    assert cw(tmp_path, "init", "--example").returncode == 0
    return tmp_path


# -- Ctrl-C at the interactive chat's prompts ----------------------------------------


class Terminal:
    """``chatwright`` on a pseudo-terminal, as a user types into it."""

    def __init__(self, args: list[str], cwd: Path) -> None:
        import pty

        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: the command
            os.chdir(cwd)
            os.execve(CONSOLE, [CONSOLE, *args], env())
        self.out = b""

    def read_until(self, text: bytes, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while text not in self.out and time.monotonic() < end:
            ready, _, _ = select.select([self.fd], [], [], 0.1)
            if ready:
                try:
                    data = os.read(self.fd, 4096)
                except OSError:
                    break
                if not data:
                    break
                self.out += data
        return text in self.out

    def exit_code(self, timeout: float) -> int | None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.read_until(b"\0", 0.2)
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
        return None

    def kill(self) -> None:
        try:
            os.kill(self.pid, 9)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def test_ctrl_c_at_the_prompt_ends_the_chat(workdir: Path) -> None:
    """Before: the line was read in asyncio's executor, which Ctrl-C never reached, and
    the command then waited for that thread: the chat hung until Enter was pressed."""
    terminal = Terminal(["chat", "assistant"], workdir)
    try:
        assert terminal.read_until(b"you> ", 60), terminal.out
        time.sleep(0.3)
        os.write(terminal.fd, b"\x03")
        assert terminal.exit_code(15) is not None, f"still running: {terminal.out!r}"
        assert b"Traceback" not in terminal.out
    finally:
        terminal.kill()


def test_ctrl_c_at_the_approval_question_leaves_the_call_waiting(workdir: Path) -> None:
    made = cw(workdir, "tools", "set", "1", "--approval", "required")
    assert made.returncode == 0, made.stderr
    terminal = Terminal(["chat", "assistant"], workdir)
    try:
        assert terminal.read_until(b"you> ", 60), terminal.out
        os.write(terminal.fd, b"add a task to buy bread\n")
        assert terminal.read_until(b"Approve? [y/N] ", 60), terminal.out
        time.sleep(0.3)
        os.write(terminal.fd, b"\x03")
        assert terminal.exit_code(15) is not None, f"still running: {terminal.out!r}"
        assert b"Traceback" not in terminal.out
        # What the chat leaves waiting, and how to decide it later.
        assert b"chatwright pending approve" in terminal.out, terminal.out
    finally:
        terminal.kill()
    listed = cw(workdir, "pending", "list")
    assert "add_task" in listed.stdout, listed.stdout + listed.stderr


# -- standard input that is not text -------------------------------------------------


def rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql).fetchall()


@pytest.mark.parametrize("bad", [b"\xff\xfe", b"\x00"], ids=["not UTF-8", "NUL"])
def test_a_line_that_is_not_text_is_refused_not_stored_mangled(workdir: Path, bad: bytes) -> None:
    """Before: each bad byte became U+FFFD in the stored message and in the task the tool
    wrote from it (exit 0), where ``chat -m`` and the API refuse the same text."""
    db = workdir / "chatwright.db"
    messages = rows(db, "SELECT count(*) FROM chat_messages")
    lines = b"add a task to buy " + bad + b" milk\nadd a task to buy milk\n"
    done = cw(workdir, "chat", "assistant", input=lines, text=False)
    said = (done.stdout + done.stderr).decode("utf-8", "replace")
    assert "Error: your message" in said, said
    # The bad line is refused, and the chat goes on with the next one.
    assert rows(db, "SELECT title FROM tasks") == [("buy milk",)], said
    assert rows(db, "SELECT count(*) FROM chat_messages")[0][0] > messages[0][0]
    stored = rows(db, "SELECT content FROM chat_messages")
    assert not any("\ufffd" in content for (content,) in stored), said


# -- settings and arguments ----------------------------------------------------------


@pytest.mark.parametrize("price", ["inf", "1e308"])
def test_a_price_no_cost_can_be_computed_from_is_refused_by_name(
    tmp_path: Path, price: str
) -> None:
    """Before: ``chat --usage`` printed the reply, then "unexpected ValueError", and no
    turn's cost was recorded."""
    assert cw(tmp_path, "init").returncode == 0
    replies = [{"content": "ok", "usage": {"input_tokens": 120, "output_tokens": 30}}]
    made = cw(
        tmp_path,
        *("agents", "add", "scr", "--model", "scripted:a", "--prompt", "hi"),
        *("--setting", "responses=" + json.dumps(replies)),
    )
    assert made.returncode == 0, made.stderr
    (tmp_path / "price.toml").write_text(
        f'[usage.prices."scripted:a"]\ninput = {price}\noutput = 1\n', encoding="utf-8"
    )
    done = cw(tmp_path, "--config", "price.toml", "chat", "scr", "-m", "hello", "--usage")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "unexpected" not in done.stderr and "usage.prices" in done.stderr, done.stderr
    assert "1000000" in done.stderr.replace(",", "").replace("_", ""), done.stderr


@pytest.mark.parametrize("command", [["init"], ["db", "upgrade"], ["agents", "list"]])
def test_a_nul_in_the_sqlite_path_is_one_clear_error(tmp_path: Path, command: list[str]) -> None:
    """Before: "no database at …/ab cd.db; create it with `chatwright init`", and ``init``
    then failed with "unexpected ValueError: embedded null byte"."""
    done = cw(tmp_path, "--database", "sqlite:///ab%00cd.db", *command)
    assert done.returncode == 1
    assert "unexpected" not in done.stderr, done.stderr
    assert "NUL character (%00)" in done.stderr, done.stderr


@pytest.mark.parametrize(
    "package",
    [
        "pluggy",
        "click",
        "SQLAlchemy",
        "pydantic",
        "pip",
        # What those run on, in turn (review: only direct requirements were refused).
        "pydantic-core",
        "starlette",
        "langgraph",
        "psycopg-binary",
        "typing-extensions",
    ],
)
def test_uninstalling_what_chatwright_runs_on_is_refused(
    package: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: it went through to pip, and every later command, ``install`` included,
    died of a ModuleNotFoundError."""
    called: list[list[str]] = []
    monkeypatch.setattr(install_module, "_pip", lambda args: called.append(list(args)))
    result = CliRunner().invoke(build_cli(), ["uninstall", package, "-y"])
    assert called == []
    assert result.exit_code == 2
    assert f"chatwright needs {package!r} to run" in result.output, result.output


def test_a_warning_a_command_prints_is_one_escaped_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """Review: a warning whose text held a line break printed over several lines (and
    could fake an ``Error:`` line); terminal control characters went through raw."""
    import io
    import logging
    import sys

    from chatwright.cli import TerminalWarnings

    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    record = logging.LogRecord(
        "chatwright.x",
        logging.WARNING,
        __file__,
        1,
        "the call failed: %s",
        ("line one\nError: faked line\x1b[2J",),
        None,
    )
    TerminalWarnings().emit(record)
    out = err.getvalue()
    assert out.count("\n") == 1 and out.startswith("the call failed: line one Error: faked"), out
    assert "\x1b" not in out
