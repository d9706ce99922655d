"""A command that only reads never creates the SQLite database it was pointed at.

Before, ``chatwright agents list`` (or any command that only reads) run where
there was no database, or with ``--database sqlite:///typo.db``, created an
empty database file and then said the database was "not initialised". Now it
says there is no database at that path and how to create one, exits with 1,
and leaves no file behind; ``init`` and ``db upgrade`` still create it.
``db current``, the command that answers "is there a database, at which
revision?", says so without an error and without creating it.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import click
import pytest

from chatwright.cli import READ_ONLY_COMMANDS, build_cli
from tests.harness import assert_error, ok, ok_json, run, script

# Every command that only reads, with the arguments it needs.
READERS = [
    ("agents", "list"),
    ("agents", "show", "assistant"),
    ("agents", "export", "assistant"),
    ("tools", "list"),
    ("tools", "check"),
    ("sessions", "list"),
    ("chats", "list"),
    ("chats", "show", str(uuid.UUID(int=1))),
    ("pending", "list"),
    ("audit", "list"),
    ("usage",),
    ("budgets", "list"),
    ("budgets", "show", "alice"),
    ("users", "export", "alice"),
]


# Every test in its own empty working directory.
pytestmark = pytest.mark.usefixtures("workdir")


def test_every_read_only_command_is_a_command() -> None:
    root = build_cli()
    ctx = click.Context(root)
    for path in READ_ONLY_COMMANDS:
        command: click.Command | None = root
        for word in path.split():
            assert isinstance(command, click.Group), path
            command = command.get_command(ctx, word)
        assert command is not None, path
    assert {" ".join(c[:2]) if c[0] != "usage" else "usage" for c in READERS} == set(
        READ_ONLY_COMMANDS
    )


@pytest.mark.parametrize("command", READERS, ids=" ".join)
def test_a_reader_does_not_create_the_default_database(
    workdir: Path, command: tuple[str, ...]
) -> None:
    line = assert_error(
        run(*command),
        f"there is no database at {workdir / 'chatwright.db'} ",
        "create it with `chatwright init`",
        "`chatwright db upgrade`",
    )
    assert "not initialised" not in line
    assert list(workdir.iterdir()) == []


@pytest.mark.parametrize("command", READERS, ids=" ".join)
def test_a_reader_does_not_create_a_database_named_by_url(
    workdir: Path, command: tuple[str, ...]
) -> None:
    elsewhere = workdir / "typo" / "chatwrigth.db"
    (workdir / "typo").mkdir()
    assert_error(
        run("--database", f"sqlite:///{elsewhere}", *command),
        f"there is no database at {elsewhere} ",
    )
    assert list((workdir / "typo").iterdir()) == []


def test_the_console_script_says_it_without_a_traceback(workdir: Path) -> None:
    proc = script("agents", "list", cwd=workdir)
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.startswith(f"Error: there is no database at {workdir / 'chatwright.db'} ")
    assert "Traceback" not in proc.stderr
    assert list(workdir.iterdir()) == []


def test_db_current_reports_a_missing_database_without_creating_it(workdir: Path) -> None:
    info = ok_json("db", "current", "--json")
    assert (info["exists"], info["current"], info["up_to_date"]) == (False, None, False)
    assert info["head"]
    text = ok("db", "current").output
    assert "no database yet" in text and "`chatwright init`" in text
    elsewhere = workdir / "typo.db"
    assert (
        ok_json("--database", f"sqlite:///{elsewhere}", "db", "current", "--json")["exists"]
        is False
    )
    assert list(workdir.iterdir()) == []
    ok("db", "upgrade")
    info = ok_json("db", "current", "--json")
    assert (info["exists"], info["up_to_date"]) == (True, True)


@pytest.mark.parametrize("command", [("init",), ("db", "upgrade")], ids=" ".join)
def test_init_and_db_upgrade_still_create_it(workdir: Path, command: tuple[str, ...]) -> None:
    ok(*command)
    assert (workdir / "chatwright.db").is_file()
    assert "revision" in ok("db", "current").stdout
    ok("agents", "list")


def test_an_existing_empty_file_is_still_opened(workdir: Path) -> None:
    (workdir / "chatwright.db").write_bytes(b"")
    assert_error(run("agents", "list"), "not initialised", "chatwright db upgrade")


# Commands that write, with the arguments they need: they would refuse the empty
# database they made, so they refuse before making it.
WRITERS = [
    ("sessions", "sweep"),
    ("agents", "add", "helper", "--prompt", "Help.", "--model", "scripted:x"),
    ("agents", "delete", "assistant", "--yes"),
]


@pytest.mark.parametrize("command", WRITERS, ids=" ".join)
def test_a_writer_does_not_create_a_database_either(
    workdir: Path, command: tuple[str, ...]
) -> None:
    elsewhere = workdir / "typo.db"
    line = assert_error(
        run("--database", f"sqlite:///{elsewhere}", *command),
        f"there is no database at {elsewhere} ",
        "create it with `chatwright init`",
    )
    assert "not initialised" not in line
    assert list(workdir.iterdir()) == []
