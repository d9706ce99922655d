"""What an attack on the command line found, each fixed:

- a ``--database``, ``storage.url`` or ``--from`` URL whose port is not a number, or
  a SQLite URL whose query its driver cannot take, failed with "unexpected
  ValueError … please report it";
- a file given to a command (a tool row, a prompt, the settings) was read whole,
  however large: ``/dev/zero`` ran the machine out of memory;
- a system prompt had no bound, so an agent could be exported to a bundle that
  ``agents import`` refuses: a backup that cannot be restored;
- ``chat -m`` took bytes that are not UTF-8 and stored U+FFFD in their place, where
  every other option refuses them;
- a tool name taken by a disabled row was refused with advice to disable the old
  row, which frees nothing;
- an in-memory SQLite database was "not initialised; run db upgrade", advice that
  cannot work (each command starts on an empty one), and a ``file:`` URI of a file
  that does not exist was created by a command that only reads.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chatwright.agents import MAX_PROMPT
from tests.harness import assert_error, ok, run
from tests.test_cli_tools import sql

pytestmark = pytest.mark.usefixtures("example")


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://postgres:s3cret@127.0.0.1:abc/x",
        "postgresql://postgres:s3cret@[::1/x",
    ],
    ids=["port not a number", "unclosed bracket"],
)
def test_a_database_url_that_does_not_parse_is_one_clear_error(url: str) -> None:
    for args in (("agents", "list"), ("db", "current")):
        said = assert_error(run("--database", url, *args), "is not a database URL")
        assert "s3cret" not in said
    imported = run("import", "llm-agent", "--from", url, "--dry-run")
    said = assert_error(imported, "--from", "is not a database URL")
    assert "s3cret" not in said


def test_a_sqlite_url_whose_query_its_driver_refuses_says_so(workdir: Path) -> None:
    url = f"sqlite+aiosqlite:///{workdir / 'chatwright.db'}?timeout=abc"
    assert_error(run("--database", url, "agents", "list"), "has a query parameter", "timeout")


@pytest.mark.parametrize(
    "args",
    [
        ("tools", "add", "--agent", "assistant", "--file", "/dev/zero"),
        ("agents", "add", "endless", "--model", "offline:x", "--prompt-file", "/dev/zero"),
        ("agents", "set", "assistant", "--prompt-file", "/dev/zero"),
        ("--config", "/dev/zero", "agents", "list"),
    ],
    ids=["tool row", "prompt of a new agent", "prompt of an agent", "settings"],
)
def test_an_endless_file_is_refused_not_read_into_memory(args: tuple[str, ...]) -> None:
    before = sql("SELECT system_prompt FROM agents WHERE name = 'assistant'")
    assert_error(run(*args), "/dev/zero is larger than")
    assert sql("SELECT system_prompt FROM agents WHERE name = 'assistant'") == before
    assert sql("SELECT count(*) FROM agents WHERE name = 'endless'") == [(0,)]


def test_a_prompt_has_a_bound_and_an_export_import_would_refuse_is_refused(
    workdir: Path,
) -> None:
    (workdir / "long.txt").write_text("a" * (MAX_PROMPT + 1))
    said = assert_error(
        run("agents", "add", "long", "--model", "offline:x", "--prompt-file", "long.txt")
    )
    assert f"a system prompt has at most {MAX_PROMPT:,}" in said
    # The longest prompt and a large model setting: more than a bundle holds.
    (workdir / "longest.txt").write_text("a" * MAX_PROMPT)
    ok("agents", "add", "big", "--model", "offline:x", "--prompt-file", "longest.txt")
    ok("agents", "set", "big", "--setting", "notes=" + json.dumps("b" * 3_500_000))
    for fmt in ("json", "yaml"):
        exported = run("agents", "export", "big", "--format", fmt, "-o", f"big.{fmt}")
        assert_error(
            exported, "the bundle of agent 'big' would be", "`agents import` reads at most"
        )
        assert not (workdir / f"big.{fmt}").exists()
    # One within the bound is exported and imported back.
    ok("agents", "set", "big", "--setting", "notes=1")
    ok("agents", "export", "big", "-o", "big.json")
    ok("agents", "import", "big.json", "--dry-run")


def test_a_chat_message_that_is_not_utf8_is_refused_and_not_stored() -> None:
    before = sql("SELECT count(*) FROM chat_messages")
    said = assert_error(run("chat", "-m", "hi \udcff"))
    assert "lone surrogate" in said and "0xff" in said
    assert sql("SELECT count(*) FROM chat_messages") == before


def test_a_name_a_disabled_row_holds_gets_advice_that_works() -> None:
    ((row, name),) = sql("SELECT id, name FROM agent_tools WHERE name = 'list_tasks'")
    ok("tools", "disable", str(row))
    ((other,),) = sql("SELECT id FROM agent_tools WHERE name = 'add_task'")
    refused = run("tools", "copy", str(other), "--to", "assistant", "--name", name)
    said = assert_error(refused, f"(row {row}, disabled)", f"`chatwright tools remove {row}`")
    assert "tools disable" not in said
    # Following it: the old row renamed, the name is free.
    ok("tools", "set", str(row), "--name", "list_tasks_old")
    ok("tools", "copy", str(other), "--to", "assistant", "--name", name)
    assert sql("SELECT count(*) FROM agent_tools WHERE name = ?", (name,)) == [(1,)]


def test_a_setting_key_or_model_no_model_takes_is_refused() -> None:
    before = sql("SELECT model, model_settings FROM agents WHERE name = 'assistant'")
    for args in (
        ("--setting", "\x01=1"),
        ("--setting", "max-tokens=5"),
        ("--model", "openai:gpt\x1b[31mX"),
        ("--model", "openai:gpt\n"),
    ):
        said = assert_error(run("agents", "set", "assistant", *args))
        assert "setting" in said or "model" in said
    assert sql("SELECT model, model_settings FROM agents WHERE name = 'assistant'") == before
    ok("agents", "set", "assistant", "--setting", "max_tokens=5")


def test_what_anyone_stored_is_printed_escaped() -> None:
    sql(
        "UPDATE agents SET model = ?, system_prompt = ? WHERE name = 'assistant'",
        ("offline:x\x1b]0;owned\x07", "Hello\x1b[2J there\u2028\tand on"),
    )
    shown = ok("agents", "show", "assistant").output
    listed = ok("agents", "list").output
    for output in (shown, listed):
        assert "\x1b" not in output and "\x07" not in output, output
        assert "offline:x\\u001b]0;owned\\u0007" in output
    assert "  Hello\\u001b[2J there\n  \tand on" in shown  # U+2028: a line of its own


def test_a_database_that_cannot_be_written_or_opened_says_what_to_do(workdir: Path) -> None:
    read_only = f"sqlite+aiosqlite:///file:{workdir / 'chatwright.db'}?mode=ro&uri=true"
    added = run("--database", read_only, "agents", "add", "x", "--model", "offline:x")
    assert_error(added, "cannot be written", "write access")
    (workdir / "adir").mkdir()
    listed = run("--database", f"sqlite+aiosqlite:///{workdir / 'adir'}", "agents", "list")
    assert_error(listed, "cannot be opened", "point storage.url at a SQLite file")


def test_a_connection_that_failed_to_open_leaves_no_thread_behind(workdir: Path) -> None:
    """Its thread answered the failed open's stop on the command's event loop, at times
    after the loop had closed: a traceback on the terminal after the error."""
    import asyncio
    import threading

    from chatwright.errors import StorageError
    from tests.harness import storage_for

    (workdir / "adir").mkdir()

    async def attempt() -> None:
        storage = storage_for(f"sqlite+aiosqlite:///{workdir / 'adir'}")
        try:
            async with storage.read():
                pass
        finally:
            await storage.close()

    for _ in range(5):
        with pytest.raises(StorageError):
            asyncio.run(attempt())
        workers = [t for t in threading.enumerate() if "_connection_worker_thread" in t.name]
        assert workers == [], workers


def test_a_setting_key_stored_before_the_check_can_still_be_removed(workdir: Path) -> None:
    sql("UPDATE agents SET model_settings = ? WHERE name = 'assistant'", ('{"max-tokens": 5}',))
    ok("agents", "set", "assistant", "--setting", "max-tokens=null")
    assert sql("SELECT model_settings FROM agents WHERE name = 'assistant'") == [("{}",)]
    # Adding one is still refused.
    assert_error(run("agents", "set", "assistant", "--setting", "max-tokens=5"), "max-tokens")


def test_a_tool_file_is_bounded_in_bytes_not_characters(workdir: Path) -> None:
    row = {"name": "t1", "type": "crud", "description": "é" * 3_000_000, "config": {}}
    (workdir / "wide.json").write_text(json.dumps(row, ensure_ascii=False), encoding="utf-8")
    said = assert_error(run("tools", "add", "--agent", "assistant", "--file", "wide.json"))
    assert "wide.json is larger than 4,194,304 bytes" in said
    assert sql("SELECT count(*) FROM agent_tools WHERE name = 't1'") == [(0,)]


def test_numbers_of_thousands_of_digits_are_written_as_text() -> None:
    from decimal import Decimal

    from chatwright.approvals import compact_json

    assert json.loads(compact_json({"a": Decimal("1e5000"), "b": Decimal("-1e-5000")})) == {
        "a": "1E+5000",
        "b": "-1E-5000",
    }
    assert json.loads(compact_json({"c": Decimal("12.50"), "d": Decimal("3")})) == {
        "c": 12.5,
        "d": 3,
    }


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///:memory:",
        "sqlite://",
        "sqlite:///file:kept?mode=memory&cache=shared&uri=true",
        "sqlite:///file::memory:?uri=true",
        "sqlite:///file:/kept?vfs=memdb&uri=true",
    ],
)
def test_an_in_memory_database_is_refused_with_advice_that_works(url: str) -> None:
    # Each command would start on an empty database: "run db upgrade" could never help.
    said = assert_error(run("--database", url, "agents", "list"), "in-memory", "a file")
    assert "db upgrade" not in said


def test_a_file_uri_of_a_missing_file_is_not_created_by_a_reading_command(
    workdir: Path,
) -> None:
    missing = workdir / "elsewhere.db"
    for url in (
        f"sqlite:///file:{missing}?uri=true",
        f"sqlite:///file://{missing}?mode=rw&uri=true",
    ):
        assert_error(run("--database", url, "agents", "list"), "there is no database at")
        assert not missing.exists()
    # An existing file named by a URI is read.
    existing = workdir / "chatwright.db"
    listed = ok("--database", f"sqlite:///file:{existing}?uri=true", "agents", "list")
    assert "assistant" in listed.stdout


def test_bidirectional_controls_and_row_values_are_printed_escaped() -> None:
    # A right-to-left override makes the rest of a line read backwards; a table named
    # in a tool row reaches `tools check`'s problem text.
    sql(
        "UPDATE agent_tools SET name = ?, type = ?, config = ? WHERE id = 3",
        ("evil\u202etxt.exe", "crud\x1b[8m", '{"table": "gone\\u2066\\u001b[2J"}'),
    )
    sql("UPDATE agents SET system_prompt = ? WHERE name = 'assistant'", ("a\u200fb\u061cc",))
    shown = ok("agents", "show", "assistant").output
    listed = run("tools", "list", "--agent", "assistant").output
    checked = run("tools", "check").output
    for output in (shown, listed, checked):
        assert not any(c in output for c in "\u202e\u2066\u200f\u061c\x1b"), output
        assert "evil\\u202etxt.exe" in output
    assert "a\\u200fb\\u061cc" in shown
    assert "crud\\u001b[8m" in shown and "crud\\u001b[8m" in checked


def test_the_import_report_escapes_what_a_terminal_would_act_on() -> None:
    from chatwright.plugins.importing.plan import shown

    assert shown("user\u202e1\u2069\t\x1b[2J\ud800") == (
        "user\\u202e1\\u2069\\u0009\\u001b[2J\\ud800"
    )


def test_a_pending_actions_stored_words_are_printed_escaped() -> None:
    # On Supabase a user may write their own pending_actions rows through the Data API.
    preview = {
        "operation": "update",
        "table": "tasks\x1b[2J",
        "count": 1,
        "rows": [{"key": {"id\x1b[31m": 1}, "before": {"t": 1}, "after": {"t": 2}}],
    }
    sql(
        "INSERT INTO pending_actions (id, user_id, agent_name, chat_id, turn_id, tool_name, "
        "tool_call_id, args, preview, status, created_at, expires_at, decided_by) VALUES "
        "(?, 'mallory', 'assistant', ?, ?, ?, 'c1', '{}', ?, 'denied', "
        "'2026-01-01 00:00:00.000000', '2030-01-01 00:00:00.000000', ?)",
        (
            "0" * 32,
            "1" * 32,
            "2" * 32,
            "add_task\x1b]0;owned\x07\u202e",
            json.dumps(preview),
            "bob\x1b[8m",
        ),
    )
    listed = ok("pending", "list", "--all").output
    assert not any(c in listed for c in "\x1b\x07\u202e"), repr(listed)
    assert "add_task\\u001b]0;owned\\u0007\\u202e" in listed
    assert "by bob\\u001b[8m" in listed and "tasks\\u001b[2J" in listed
