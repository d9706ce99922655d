"""The write-safety commands against hostile input: other users' ids, bad and huge values.

Each command answers one ``Error: …`` line naming what is wrong (exit status
1), or a usage error naming the value (exit status 2), and never a traceback;
and a refused command changes nothing. The commands run in-process on the
example's SQLite database, like the other CLI tests.
"""

from __future__ import annotations

import contextlib
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result

from tests.harness import DB_FILE, assert_error, ok, ok_json, run
from tests.harness import sqlite_rows as query

pytestmark = pytest.mark.usefixtures("workdir")

DELETE_TASK = 4


def usage_error(result: Result, *needles: str) -> None:
    """Click's answer to a malformed value: exit 2, the value named, no traceback."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in result.stderr, result.stderr


def waiting(example: Path, user: str = "alice") -> dict[str, Any]:
    """A task of ``user``'s and a delete of it that waits for approval."""
    ok("tools", "set", str(DELETE_TASK), "--approval", "required")
    ok("chat", "--user", user, "-m", "add a task to buy milk")
    ok("chat", "--user", user, "-m", "delete task 1")
    (action,) = ok_json("pending", "list", "--json", "--user", user)
    assert action["status"] == "pending"
    return dict(action)


def still_pending(example: Path, action: dict[str, Any]) -> None:
    (current,) = ok_json("pending", "list", "--json", "--all", "--user", action["user_id"])
    assert (current["id"], current["status"]) == (action["id"], "pending")
    assert query(example, "SELECT count(*) FROM tasks") == [(1,)]


def test_unknown_and_malformed_action_ids(example: Path) -> None:
    action = waiting(example)
    for verb in ("approve", "deny"):
        missing = str(uuid.uuid4())
        assert_error(run("pending", verb, missing), f"no pending action {missing}")
        usage_error(run("pending", verb, "not-a-uuid"), "not-a-uuid")
        usage_error(run("pending", verb, "1" * 5000))
        usage_error(run("pending", verb, "' OR 1=1 --"), "OR 1=1")
    usage_error(run("pending", "list", "--chat", "nope"), "nope")
    still_pending(example, action)


def test_an_action_is_decided_for_its_own_user_only(example: Path) -> None:
    action = waiting(example, "alice")
    # bob's chat and list never show alice's action, and his messages do not decide it.
    assert ok_json("pending", "list", "--json", "--user", "bob") == []
    assert "Deleted" not in ok("chat", "--user", "bob", "-m", "delete task 1").stdout
    still_pending(example, action)
    # bob cannot resume alice's chat to reach it.
    assert_error(
        run("chat", "--user", "bob", "--chat-id", action["chat_id"], "-m", "delete task 1"),
    )
    still_pending(example, action)
    # The administrator's decision is the owner's action, run as the owner.
    ok("pending", "approve", action["id"])
    (decided,) = ok_json("pending", "list", "--json", "--all", "--user", "alice")
    assert decided["status"] == "done"
    assert query(example, "SELECT count(*) FROM tasks") == [(0,)]


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("x" * 256, "--by is 256 characters long; a user id has at most 255"),
        ("x" * 100_000, "at most 255"),
        ("", "--by is empty"),
        ("   ", "--by is empty"),
        ("ops\x00admin", "--by holds a control character"),
        ("ops\nadmin", "--by holds a control character"),
    ],
)
def test_decided_by_must_be_a_storable_name(example: Path, value: str, needle: str) -> None:
    action = waiting(example)
    assert_error(run("pending", "approve", action["id"], "--by", value), needle)
    assert_error(run("pending", "deny", action["id"], "--by", value), needle)
    still_pending(example, action)


@pytest.mark.parametrize(
    "command",
    [
        ("pending", "list"),
        ("audit", "list"),
        ("tools", "choose", "4", "auto"),
    ],
)
@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("u" * 300, "--user is 300 characters long"),
        ("", "--user is empty"),
        ("al\x1bice", "--user holds a control character"),
    ],
)
def test_user_ids_must_be_storable(
    example: Path, command: tuple[str, ...], value: str, needle: str
) -> None:
    ok("tools", "set", str(DELETE_TASK), "--approval", "user")
    assert_error(run(*command, "--user", value), needle)
    assert query(example, "SELECT count(*) FROM tool_approval_choices") == [(0,)]


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("yesterday", "--since 'yesterday' is not a time"),
        ("2026-13-45", "is not a time"),
        ("1y", "is not a time"),
        ("-2h", "is not a time"),
        ("999999w", "reaches back too far"),
        ("9" * 5000, "is not a time"),
    ],
)
def test_audit_since_refuses_what_is_not_a_time(example: Path, value: str, needle: str) -> None:
    line = assert_error(run("audit", "list", "--since", value), needle)
    assert len(line) < 400  # an oversized value is not echoed whole


@pytest.mark.parametrize("value", ["0", "-1", "1001", "99999999999999999999", "ten"])
def test_audit_limit_out_of_range(example: Path, value: str) -> None:
    usage_error(run("audit", "list", "--limit", value), "--limit")


def test_audit_of_another_chat_or_user_is_empty(example: Path) -> None:
    ok("chat", "--user", "alice", "-m", "add a task to buy milk")
    assert ok_json("audit", "list", "--json", "--user", "bob") == []
    assert ok_json("audit", "list", "--json", "--chat", str(uuid.uuid4())) == []
    usage_error(run("audit", "list", "--chat", "1; DROP TABLE audit_log"), "DROP TABLE")
    assert query(example, "SELECT count(*) FROM audit_log") == [(1,)]


@pytest.mark.parametrize(
    "tool_id", ["0", "-4", "2147483648", "99999999999999999999999", "four", "4.0"]
)
def test_tool_ids_out_of_range_or_malformed(example: Path, tool_id: str) -> None:
    usage_error(run("tools", "set", tool_id, "--approval", "required"), "ID")
    usage_error(run("tools", "choose", tool_id, "auto", "--user", "alice"), "ID")
    assert query(example, "SELECT count(*) FROM agent_tools WHERE approval != 'auto'") == [(0,)]


def test_tools_set_refuses_oversized_and_malformed_values(example: Path) -> None:
    before = query(example, "SELECT * FROM agent_tools WHERE id = 4")
    usage_error(run("tools", "set", "4", "--position", str(2**31)), "--position")
    usage_error(run("tools", "set", "4", "--position", "x"), "--position")
    assert_error(run("tools", "set", "4", "--name", "n" * 65), "tool row 4 not changed", "name")
    assert_error(run("tools", "set", "4", "--name", ""), "tool row 4 not changed", "name")
    assert_error(run("tools", "set", "4", "--config", "{" * 10_000), "--config is not valid JSON")
    assert_error(run("tools", "set", "4", "--config", '"a string"'), "one JSON object")
    huge = '{"table": "tasks", "operation": "delete", "x": "' + "a" * 1_000_000 + '"}'
    assert_error(run("tools", "set", "4", "--config", huge), "tool row 4 not changed")
    # A config that widens the scope to every user's rows is a config that does not load.
    widened = (
        '{"table": "tasks", "operation": "delete", "scope": {"user_column": null},'
        ' "filters": {"id": {"type": "integer", "required": true}}}'
    )
    assert_error(run("tools", "set", "4", "--config", widened), "unscoped_tables")
    assert query(example, "SELECT * FROM agent_tools WHERE id = 4") == before


def test_choose_on_a_row_not_in_user_mode_changes_nothing(example: Path) -> None:
    assert_error(
        run("tools", "choose", "4", "auto", "--user", "alice"),
        "has approval 'auto'",
        "only rows in 'user' mode",
    )
    assert_error(run("tools", "choose", "4242", "auto", "--user", "alice"), "no tool row 4242")
    assert query(example, "SELECT count(*) FROM tool_approval_choices") == [(0,)]


def test_undo_of_unknown_malformed_or_another_chats_turn(example: Path) -> None:
    ok("chat", "--user", "alice", "-m", "add a task to buy milk")
    ok("chat", "--user", "bob", "-m", "add a task to buy tea")
    entries = ok_json("audit", "list", "--json")
    alice = next(e for e in entries if e["user_id"] == "alice")
    bob = next(e for e in entries if e["user_id"] == "bob")
    # bob's turn, named in alice's chat, is no turn of hers: nothing of bob's is undone.
    assert_error(run("undo", alice["chat_id"], "--turn", bob["turn_id"]), "changed no rows")
    usage_error(run("undo", "12"), "12")
    usage_error(run("undo", alice["chat_id"], "--turn", "x" * 3000))
    missing = str(uuid.uuid4())
    assert_error(run("undo", missing), f"no chat {missing}")
    with contextlib.closing(sqlite3.connect(example)) as conn:
        assert conn.execute("SELECT count(*) FROM tasks").fetchone() == (2,)


def test_decisions_on_a_database_without_the_action_table_are_one_line(workdir: Path) -> None:
    """A database never migrated: the commands say so, they do not crash."""
    assert not (workdir / DB_FILE).exists()
    for args in (
        ("pending", "list"),
        ("pending", "approve", str(uuid.uuid4())),
        ("audit", "list"),
        ("undo", str(uuid.uuid4())),
    ):
        result = run(*args)
        assert result.exit_code == 1, (args, result.output)
        assert "Traceback" not in result.output
        assert result.stderr.startswith("Error: "), result.stderr


def test_previews_in_the_terminal_escape_controls_and_cut_long_values(example: Path) -> None:
    """A row's values (or a model's arguments) cannot drive the administrator's terminal."""
    ok("tools", "set", str(DELETE_TASK), "--approval", "required")
    ok("chat", "--user", "alice", "-m", "add a task to buy milk")
    title = "\x1b[2J\x1b]0;owned\x07\x9b31m\x7f\u2028" + "x" * 50_000
    with contextlib.closing(sqlite3.connect(example)) as conn:
        conn.execute("UPDATE tasks SET title = ? WHERE id = 1", (title,))
        conn.commit()
    shown = ok("chat", "--user", "alice", "-m", "delete task 1").stdout
    listed = ok("pending", "list").stdout
    for out in (shown, listed):
        assert "delete on tasks: 1 row" in out
        assert not any(c in out for c in "\x1b\x07\x9b\x7f\u2028"), repr(out[:300])
        assert "\\u001b[2J" in out
        assert max(len(line) for line in out.splitlines()) < 1000
    # The stored preview keeps the value whole, for clients that show it their own way.
    (action,) = ok_json("pending", "list", "--json")
    assert action["preview"]["rows"][0]["before"]["title"] == title
