"""Write safety on the command line: approval modes, pending actions, the audit log, undo.

Like the other CLI tests, these drive :func:`chatwright.cli.build_cli` with
click's ``CliRunner`` in a fresh working directory after ``init --example``
(SQLite file ``chatwright.db``, the example agent on the rule-based
``offline`` model, which answers from the chat's history, so a turn resumed by
another process goes on where it stopped). What the commands left behind is
read with plain :mod:`sqlite3`. The y/N prompt of ``chatwright chat`` runs the
installed console script in a pseudo-terminal (it asks only a terminal), on
the ``scripted`` model.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import re
import select
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.harness import (
    ADMIN_URL,
    CONSOLE_SCRIPT,
    DB_FILE,
    admin_connect,
    assert_error,
    clean_env,
    libpq,
    ok,
    ok_json,
    pg_env,
    run,
    script,
    script_ok,
)
from tests.harness import sqlite_rows as query

pytestmark = pytest.mark.usefixtures("workdir")

# The example's tool rows, by id.
ADD_TASK, LIST_TASKS, UPDATE_TASK, DELETE_TASK = 1, 2, 3, 4
SAVE_MEMORY = 8
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


# -- helpers ----------------------------------------------------------------


def say(message: str, *options: str) -> str:
    """``chat -m message``: its standard output."""
    return ok("chat", *options, "-m", message).stdout


def tasks(db: Path) -> list[tuple[int, str, str, str]]:
    """(id, user, title, status) of every task."""
    return [
        (int(i), u, t, s)
        for i, u, t, s in query(db, "SELECT id, user_id, title, status FROM tasks ORDER BY id")
    ]


def pending(*options: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = ok_json("pending", "list", "--json", *options)
    return found


def only_pending(*options: str) -> dict[str, Any]:
    (action,) = pending(*options)
    return action


def audit(*options: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = ok_json("audit", "list", "--json", *options)
    return found


def require(tool_id: int) -> None:
    ok("tools", "set", str(tool_id), "--approval", "required")


def chat_of(db: Path, user: str = "local") -> str:
    ((chat_id,),) = query(db, "SELECT DISTINCT chat_id FROM chat_sessions WHERE user_id = ?", user)
    return str(uuid.UUID(str(chat_id)))


def table_rows(output: str) -> list[list[str]]:
    return [line.split() for line in output.splitlines() if line.strip()]


# -- approval modes on tool rows --------------------------------------------


@pytest.mark.usefixtures("example")
def test_tools_list_shows_the_approval_mode_of_every_row() -> None:
    require(DELETE_TASK)
    ok("tools", "set", str(UPDATE_TASK), "--approval", "user", "--approval-default", "auto")
    rows = table_rows(ok("tools", "list").stdout)
    assert rows[0][-1] == "approval"
    modes = {r[2]: " ".join(r[6:]) for r in rows[1:]}
    assert modes["delete_task"] == "required"
    assert modes["update_task"] == "user (auto)"
    assert modes["add_task"] == "auto"
    listed = {r["name"]: r for r in ok_json("tools", "list", "--json")}
    assert (listed["update_task"]["approval"], listed["update_task"]["approval_default"]) == (
        "user",
        "auto",
    )
    assert listed["add_task"]["approval"] == "auto"


@pytest.mark.usefixtures("example")
def test_tools_add_takes_the_approval_mode_and_its_default(workdir: Path) -> None:
    row = {
        "name": "drop_task",
        "config": {
            "table": "tasks",
            "operation": "delete",
            "filters": {"id": {"type": "integer", "required": True}},
        },
    }
    (workdir / "drop.json").write_text(json.dumps(row), encoding="utf-8")
    added = ok(
        "tools",
        "add",
        "--agent",
        "assistant",
        "--file",
        "drop.json",
        "--approval",
        "user",
        "--approval-default",
        "auto",
    )
    assert added.stdout.startswith("Added tool 'drop_task' (row 9)")
    assert "approval user (auto)" in added.stdout
    assert query(
        workdir / DB_FILE, "SELECT approval, approval_default FROM agent_tools WHERE id = 9"
    ) == [("user", "auto")]
    # The row's own fields do as well; an option overrides them.
    row2 = {**row, "name": "drop_task2", "approval": "required"}
    (workdir / "drop2.json").write_text(json.dumps(row2), encoding="utf-8")
    ok("tools", "add", "--agent", "assistant", "--file", "drop2.json")
    row3 = {**row, "name": "drop_task3", "approval": "required"}
    (workdir / "drop3.json").write_text(json.dumps(row3), encoding="utf-8")
    ok("tools", "add", "--agent", "assistant", "--file", "drop3.json", "--approval", "auto")
    assert query(
        workdir / DB_FILE,
        "SELECT name, approval, approval_default FROM agent_tools WHERE id > 9 ORDER BY id",
    ) == [("drop_task2", "required", "required"), ("drop_task3", "auto", "required")]


@pytest.mark.usefixtures("example")
def test_a_bad_approval_value_is_named_and_nothing_is_added(workdir: Path) -> None:
    before = query(workdir / DB_FILE, "SELECT count(*) FROM agent_tools")
    bad = {"name": "x", "config": {"table": "tasks", "operation": "read"}, "approval": "sometimes"}
    (workdir / "bad.json").write_text(json.dumps(bad), encoding="utf-8")
    assert_error(
        run("tools", "add", "--agent", "assistant", "--file", "bad.json"),
        "tool 'x' not added",
        "approval: 'sometimes' is not an approval mode",
        "auto, required, user",
    )
    bad_default = {**bad, "approval": "user", "approval_default": "never"}
    (workdir / "bad.json").write_text(json.dumps(bad_default), encoding="utf-8")
    assert_error(
        run("tools", "add", "--agent", "assistant", "--file", "bad.json"),
        "approval_default: 'never' is not a choice",
    )
    wrong_type = {**bad, "approval": 1}
    (workdir / "bad.json").write_text(json.dumps(wrong_type), encoding="utf-8")
    assert_error(
        run("tools", "add", "--agent", "assistant", "--file", "bad.json"),
        "approval must be one of auto, required, user",
    )
    for args in (
        ("tools", "add", "--agent", "assistant", "--approval", "sometimes"),
        ("tools", "set", "4", "--approval", "sometimes"),
        ("tools", "set", "4", "--approval-default", "user"),
        ("tools", "choose", "4", "sometimes", "--user", "alice"),
    ):
        result = run(*args, input="{}")
        assert result.exit_code == 2, result.output
        assert "sometimes" in result.stderr or "'user' is not one of" in result.stderr
        assert "Traceback" not in result.output
    assert query(workdir / DB_FILE, "SELECT count(*) FROM agent_tools") == before
    assert query(workdir / DB_FILE, "SELECT approval FROM agent_tools WHERE id = 4") == [("auto",)]


def test_tools_check_reports_a_bad_approval_value_written_by_hand(example: Path) -> None:
    with contextlib.closing(sqlite3.connect(example)) as conn:
        # Past the column's CHECK constraint, as a database without it would allow.
        conn.execute("PRAGMA ignore_check_constraints = ON")
        conn.execute("UPDATE agent_tools SET approval = 'sometimes' WHERE id = 4")
        conn.execute("UPDATE agent_tools SET approval_default = 'never' WHERE id = 3")
        conn.commit()
    result = run("tools", "check", "--json")
    assert result.exit_code == 1
    reports = {r["id"]: r for r in json.loads(result.stdout)}
    assert reports[4]["problems"] == [
        "approval: 'sometimes' is not an approval mode; use one of auto, required, user"
    ]
    assert reports[3]["problems"] == [
        "approval_default: 'never' is not a choice; use one of auto, required"
    ]
    assert all(r["ok"] for i, r in reports.items() if i not in {3, 4})
    text = run("tools", "check").stdout
    assert "BAD  #4 assistant/delete_task [crud]" in text
    assert "approval: 'sometimes' is not an approval mode" in text
    # A row that does not load is left out of chats rather than run unasked.
    assert "refused" in ok("tools", "list").stdout


@pytest.mark.usefixtures("example")
def test_tools_set_changes_a_row_and_validates_what_the_model_sees(workdir: Path) -> None:
    db = workdir / DB_FILE

    def row(tool_id: int) -> tuple[Any, ...]:
        (found,) = query(
            db,
            "SELECT name, description, config, is_active, position, approval, approval_default "
            "FROM agent_tools WHERE id = ?",
            tool_id,
        )
        return tuple(found)

    result = ok(
        "tools",
        "set",
        "4",
        "--name",
        "remove_task",
        "--description",
        "Remove a task.",
        "--position",
        "99",
        "--inactive",
        "--approval",
        "required",
    )
    assert "Updated tool 'remove_task' (row 4)" in result.stdout
    assert "its approval is now required" in result.stdout
    name, description, _, active, position, approval, _ = row(4)
    assert (name, description, active, position, approval) == (
        "remove_task",
        "Remove a task.",
        0,
        99,
        "required",
    )
    ok("tools", "set", "4", "--active")
    assert row(4)[3] == 1

    config = {
        "table": "tasks",
        "operation": "delete",
        "filters": {"task": {"column": "id", "type": "integer", "required": True}},
    }
    ok("tools", "set", "4", "--config", json.dumps(config))
    assert json.loads(row(4)[2]) == config

    # A config that would not load is refused, and nothing changes.
    before = row(4)
    broken = {**config, "table": "invoices"}
    assert_error(
        run("tools", "set", "4", "--config", json.dumps(broken), "--approval", "auto"),
        "tool row 4 not changed",
        "config.table: table 'invoices' does not exist",
    )
    assert_error(run("tools", "set", "4", "--name", "no spaces"), "tool row 4 not changed", "name")
    assert_error(run("tools", "set", "4", "--config", "{nope"), "--config is not valid JSON")
    assert_error(run("tools", "set", "4", "--config", "[1]"), "--config must be one JSON object")
    assert row(4) == before

    # A row that does not load can still be made to ask, or be disabled.
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute('UPDATE agent_tools SET config = \'{"table": "gone"}\' WHERE id = 3')
        conn.commit()
    ok("tools", "set", "3", "--approval", "required", "--inactive")
    assert row(3)[3:6] == (0, row(3)[4], "required")

    assert_error(run("tools", "set", "999", "--approval", "auto"), "no tool row with id 999")
    nothing = run("tools", "set", "4")
    assert nothing.exit_code == 2
    assert "nothing to change" in nothing.stderr


@pytest.mark.usefixtures("example")
def test_tools_choose_sets_and_forgets_a_users_choice(workdir: Path) -> None:
    db = workdir / DB_FILE
    ok("tools", "set", str(DELETE_TASK), "--approval", "user", "--approval-default", "auto")
    assert (
        "User 'alice': tool row 4 is now 'required'"
        in ok("tools", "choose", "4", "required", "--user", "alice").stdout
    )
    assert query(db, "SELECT user_id, tool_id, choice FROM tool_approval_choices") == [
        ("alice", 4, "required")
    ]
    # alice is asked, bob (the row's default: auto) is not.
    say("add a task to buy milk", "--user", "alice")
    say("add a task to buy tea", "--user", "bob")
    alice = say("delete task 1", "--user", "alice")
    assert "Waiting for approval" in alice
    assert "Deleted" not in alice
    assert say("delete task 2", "--user", "bob") == "Deleted task #2.\n"
    assert [t[0] for t in tasks(db)] == [1]

    ok("pending", "deny", only_pending()["id"])
    forgot = ok("tools", "choose", "4", "default", "--user", "alice").stdout
    assert "now 'auto' (the row's default)" in forgot
    assert query(db, "SELECT count(*) FROM tool_approval_choices") == [(0,)]

    assert_error(run("tools", "choose", "3", "auto", "--user", "alice"), "only rows in 'user' mode")
    assert_error(run("tools", "choose", "999", "auto", "--user", "alice"), "no tool row 999")


# -- pending actions ---------------------------------------------------------


def test_a_write_waits_then_approve_runs_it_and_the_turn_goes_on(example: Path) -> None:
    require(DELETE_TASK)
    assert say("add a task to buy milk") == "Added task #1: buy milk (pending).\n"

    waiting = ok("chat", "-m", "delete task 1")
    action = only_pending()
    # Standard output says what waits, the preview and how to decide; nothing was written.
    out = waiting.stdout
    assert out.startswith("Waiting for approval (nothing was written yet):\n")
    assert f'{action["id"]}  delete_task {{"id": 1}}' in out
    assert "delete on tasks: 1 row\n" in out
    assert 'id=1: removed (id=1, user_id="local", title="buy milk"' in out
    assert f"`chatwright pending approve {action['id']}`" in out
    assert f"`chatwright pending deny {action['id']}`" in out
    assert "→ delete_task" in waiting.stderr
    assert [t[0] for t in tasks(example)] == [1]

    assert action["status"] == "pending"
    assert (action["user_id"], action["agent_name"], action["tool_name"]) == (
        "local",
        "assistant",
        "delete_task",
    )
    assert action["tool_id"] == DELETE_TASK
    assert action["args"] == {"id": 1}
    assert action["preview"]["table"] == "tasks"
    assert action["preview"]["operation"] == "delete"
    assert action["preview"]["count"] == 1
    (change,) = action["preview"]["rows"]
    assert change["key"] == {"id": 1}
    assert change["before"]["title"] == "buy milk"
    assert change["after"] is None
    expires = datetime.fromisoformat(action["expires_at"])
    assert timedelta(hours=23) < expires - datetime.now(UTC) <= timedelta(days=1)

    listed = ok("pending", "list").stdout
    assert f"{action['id']}  delete_task" in listed
    assert "user 'local', agent 'assistant'" in listed

    approved = ok("pending", "approve", action["id"], "--by", "ops")
    assert approved.stdout == (
        f"Approved delete_task ({action['id']}) of user 'local'.\nDeleted task #1.\n"
    )
    assert "←" in approved.stderr  # the tool's result, as it happened
    assert tasks(example) == []
    assert pending() == []
    (done,) = pending("--all")
    assert (done["status"], done["decided_by"]) == ("done", "ops")

    again = run("pending", "approve", action["id"])
    assert_error(again, action["id"], "already")
    assert_error(run("pending", "deny", action["id"]), "already")
    assert tasks(example) == []
    # The chat takes messages again, and the model saw its tool's result.
    assert say("list my tasks") == "You have no tasks yet.\n"


def test_an_operators_decision_refused_by_the_users_budget_says_whose_and_what_to_do(
    example: Path,
) -> None:
    require(DELETE_TASK)
    say("add a task to buy milk")
    say("delete task 1")
    action = only_pending()
    # The user's day is spent: the decision would resume their turn, so it is refused.
    today = datetime.now(UTC).date().isoformat()
    with sqlite3.connect(example) as db:
        db.execute(
            "INSERT INTO usage_totals (user_id, period, starts, tokens) "
            "VALUES ('local', 'day', ?, 50)",
            (today,),
        )
    ok("budgets", "set", "local", "--daily", "10")

    line = assert_error(run("pending", "approve", action["id"]), "user 'local'")
    assert "their daily token budget of 10 tokens is spent" in line
    assert "your" not in line  # said to the operator, not to the user
    assert "still waits" in line
    assert "`chatwright budgets set local --daily N` (or --monthly N)" in line
    assert only_pending()["id"] == action["id"]
    assert [t[2] for t in tasks(example)] == ["buy milk"]


def test_deny_does_not_write_and_the_model_is_told(example: Path) -> None:
    require(DELETE_TASK)
    say("add a task to buy milk")
    say("delete task 1")
    action = only_pending()
    denied = ok("pending", "deny", action["id"])
    assert denied.stdout.splitlines() == [
        f"Denied delete_task ({action['id']}) of user 'local'.",
        "That did not work: Not run: the user declined this call.",
    ]
    assert [t[2] for t in tasks(example)] == ["buy milk"]
    (decided,) = pending("--all")
    assert (decided["status"], decided["decided_by"]) == ("denied", "cli")
    (entry,) = [e for e in audit() if e["tool_name"] == "delete_task"]
    assert (entry["outcome"], entry["approval"], entry["decided_by"]) == ("denied", "denied", "cli")
    assert entry["pending_id"] == action["id"]


def test_a_chat_that_waits_refuses_new_messages_until_decided(example: Path) -> None:
    require(DELETE_TASK)
    say("add a task to buy milk")
    say("delete task 1")
    action = only_pending()
    chat_id = chat_of(example)
    assert_error(
        run("chat", "-m", "list my tasks"),
        "waits for your decision on delete_task",
        action["id"],
        f"chatwright pending list --chat {chat_id}",
    )
    # Piped input is no one to ask: the interactive chat shows what waits and ends.
    piped = ok("chat", input="list my tasks\n")
    assert "This chat waits for decisions on earlier calls." in piped.stdout
    assert f"`chatwright pending approve {action['id']}`" in piped.stdout
    assert "You have no tasks" not in piped.stdout
    assert "Your tasks" not in piped.stdout
    assert pending("--chat", chat_id)[0]["id"] == action["id"]
    assert pending("--chat", str(uuid.uuid4())) == []
    assert pending("--user", "someone-else") == []


def test_piped_interactive_chat_stops_at_the_first_call_that_waits(example: Path) -> None:
    require(DELETE_TASK)
    result = ok("chat", input="add a task to buy milk\ndelete task 1\nlist my tasks\n")
    assert "Added task #1: buy milk (pending)." in result.stdout
    assert "Waiting for approval (nothing was written yet):" in result.stdout
    assert "Your tasks" not in result.stdout  # the line after was not sent
    assert [t[0] for t in tasks(example)] == [1]
    assert len(pending()) == 1


def test_an_expired_action_is_not_run_and_says_so(example: Path) -> None:
    require(DELETE_TASK)
    say("add a task to buy milk")
    say("delete task 1")
    action = only_pending()
    with contextlib.closing(sqlite3.connect(example)) as conn:
        conn.execute("UPDATE pending_actions SET expires_at = created_at")
        conn.commit()
    assert_error(run("pending", "approve", action["id"]), "expired", "was not run")
    assert [t[0] for t in tasks(example)] == [1]
    (expired,) = pending("--all")
    assert expired["status"] == "expired"
    assert [e["outcome"] for e in audit() if e["tool_name"] == "delete_task"] == ["expired"]
    # The chat goes on.
    assert say("list my tasks") == "Your tasks:\n- #1: buy milk (pending)\n"


def test_rows_changed_since_the_preview_are_shown_again_not_written(example: Path) -> None:
    require(UPDATE_TASK)
    say("add a task to buy milk")
    say("complete task 1")
    action = only_pending()
    assert action["preview"]["rows"][0]["after"]["status"] == "done"
    with contextlib.closing(sqlite3.connect(example)) as conn:
        conn.execute("UPDATE tasks SET title = 'buy oat milk' WHERE id = 1")
        conn.commit()

    changed = run("pending", "approve", action["id"])
    assert changed.exit_code == 1
    assert "Traceback" not in changed.output
    assert changed.stdout.startswith("The rows changed since the preview; the action waits again:")
    assert f"{action['id']}  update_task" in changed.stdout
    assert "update on tasks: 1 row" in changed.stdout
    (line,) = changed.stderr.splitlines()
    assert line.startswith("Error: ")
    assert "no longer as shown" in line
    assert "nothing was written" in line
    assert tasks(example) == [(1, "local", "buy oat milk", "pending")]
    again = only_pending()
    assert again["id"] == action["id"]
    assert again["preview"]["rows"][0]["before"]["title"] == "buy oat milk"

    ok("pending", "approve", action["id"])
    assert tasks(example) == [(1, "local", "buy oat milk", "done")]


def test_preview_of_an_upsert_shows_the_row_before_and_after(example: Path) -> None:
    require(SAVE_MEMORY)
    say("remember that I like tea")
    first = only_pending()
    (change,) = first["preview"]["rows"]
    assert first["preview"]["operation"] == "upsert"
    assert change["before"] is None
    assert change["after"]["notes"] == "I like tea"
    assert ok("pending", "approve", first["id"]).stdout.endswith("Noted: I like tea.\n")

    out = say("remember that I like cake")
    assert "upsert on agent_memories: 1 row" in out
    assert 'notes: "I like tea" → "I like tea\\nI like cake"' in out
    second = only_pending()
    assert second["preview"]["rows"][0]["before"]["notes"] == "I like tea"


# -- the prompt in a terminal -------------------------------------------------


class Terminal:
    """The installed console script in a pseudo-terminal: what a person at a terminal sees."""

    def __init__(self, *args: str, cwd: Path) -> None:
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen(
            [str(CONSOLE_SCRIPT), *args],
            cwd=cwd,
            env=clean_env(TERM="dumb"),
            stdin=slave,
            stdout=slave,
            stderr=slave,
            start_new_session=True,
        )
        os.close(slave)
        self.seen = ""
        self.mark = 0

    def expect(self, text: str, timeout: float = 60) -> str:
        """Wait until ``text`` shows after the last one expected; what showed up to it."""
        deadline = time.monotonic() + timeout
        while text not in self.seen[self.mark :]:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{text!r} never came; the terminal shows:\n{self.seen}")
            ready, _, _ = select.select([self.master], [], [], left)
            if not ready:
                continue
            try:
                chunk = os.read(self.master, 4096)
            except OSError:  # the process ended
                chunk = b""
            if not chunk:
                raise AssertionError(f"{text!r} never came; the terminal shows:\n{self.seen}")
            self.seen += ANSI.sub("", chunk.decode("utf-8", "replace")).replace("\r\n", "\n")
        start, self.mark = self.mark, self.seen.index(text, self.mark) + len(text)
        return self.seen[start : self.mark]

    def type(self, line: str) -> None:
        os.write(self.master, (line + "\n").encode())

    def close(self) -> int:
        try:
            return self.proc.wait(timeout=60)
        finally:
            if self.master >= 0:
                os.close(self.master)
                self.master = -1


@contextlib.contextmanager
def terminal(*args: str, cwd: Path) -> Iterator[Terminal]:
    term = Terminal(*args, cwd=cwd)
    try:
        yield term
    finally:
        if term.proc.poll() is None:
            term.proc.kill()
        term.close()


def scripted_agent(*replies: dict[str, Any]) -> None:
    ok(
        "agents",
        "set",
        "assistant",
        "--model",
        "scripted:x",
        "--setting",
        f"responses={json.dumps(list(replies))}",
    )


def test_chat_in_a_terminal_asks_and_y_writes(example: Path) -> None:
    require(DELETE_TASK)
    say("add a task to buy milk")
    scripted_agent(
        {"tool_calls": [{"name": "delete_task", "args": {"id": 1}}]},
        {"content": "Gone."},
    )
    with terminal("chat", cwd=example.parent) as term:
        term.expect("you> ")
        term.type("delete task 1")
        shown = term.expect("Approve? [y/N] ")
        assert "The agent wants to run (nothing is written until you approve):" in shown
        assert "delete on tasks: 1 row" in shown
        assert 'id=1: removed (id=1, user_id="local", title="buy milk"' in shown
        assert [t[0] for t in tasks(example)] == [1]  # nothing written while it asks
        term.type("y")
        term.expect("Gone.")
        assert tasks(example) == []
        term.expect("you> ")
        term.type("exit")
        assert term.close() == 0
    (entry,) = [e for e in audit() if e["tool_name"] == "delete_task"]
    assert (entry["outcome"], entry["approval"], entry["decided_by"]) == ("ok", "approved", "local")


def test_chat_in_a_terminal_asks_and_anything_but_y_denies(example: Path) -> None:
    require(DELETE_TASK)
    say("add a task to buy milk")
    scripted_agent(
        {"tool_calls": [{"name": "delete_task", "args": {"id": 1}}]},
        {"content": "Kept it."},
        {"tool_calls": [{"name": "delete_task", "args": {"id": 1}}]},
        {"content": "Kept it again."},
    )
    with terminal("chat", cwd=example.parent) as term:
        term.expect("you> ")
        term.type("delete task 1")
        term.expect("Approve? [y/N] ")
        term.type("N")
        seen = term.expect("Kept it.")
        assert "Denied; the agent is told you declined." in seen
        term.expect("you> ")
        term.type("delete task 1")
        term.expect("Approve? [y/N] ")
        term.type("")  # just Enter: the default is no
        term.expect("Kept it again.")
        term.expect("you> ")
        term.type("exit")
        assert term.close() == 0
    assert [t[0] for t in tasks(example)] == [1]
    assert [a["status"] for a in pending("--all")] == ["denied", "denied"]


def test_a_terminal_chat_asks_first_about_what_an_earlier_run_left_waiting(
    example: Path,
) -> None:
    require(DELETE_TASK)
    say("add a task to buy milk")
    say("delete task 1")  # -m: left waiting
    with terminal("chat", cwd=example.parent) as term:
        seen = term.expect("Approve? [y/N] ")
        assert "This chat waits for decisions on earlier calls." in seen
        term.type("yes")
        term.expect("Deleted task #1.")
        term.expect("you> ")
        term.type("exit")
        assert term.close() == 0
    assert tasks(example) == []


def test_a_terminal_chat_asks_about_each_call_of_a_reply_then_goes_on(example: Path) -> None:
    require(DELETE_TASK)
    say("add a task to buy milk")
    say("add a task to buy tea")
    scripted_agent(
        {
            "tool_calls": [
                {"name": "delete_task", "args": {"id": 1}},
                {"name": "delete_task", "args": {"id": 2}},
            ]
        },
        {"content": "One gone, one kept."},
    )
    with terminal("chat", cwd=example.parent) as term:
        term.expect("you> ")
        term.type("delete both")
        first = term.expect("Approve? [y/N] ")
        asked = first.split("The agent wants to run")[-1]
        assert 'delete_task {"id": 1}' in asked
        assert 'delete_task {"id": 2}' not in asked
        term.type("y")
        second = term.expect("Approve? [y/N] ")
        assert 'delete_task {"id": 2}' in second.split("The agent wants to run")[-1]
        assert "One gone" not in second  # the model waits for the last decision
        term.type("n")
        term.expect("One gone, one kept.")
        term.expect("you> ")
        term.type("exit")
        assert term.close() == 0
    assert [t[2] for t in tasks(example)] == ["buy tea"]
    assert sorted(a["status"] for a in pending("--all")) == ["denied", "done"]


def test_ctrl_d_at_the_question_leaves_the_call_waiting(example: Path) -> None:
    require(DELETE_TASK)
    say("add a task to buy milk")
    scripted_agent({"tool_calls": [{"name": "delete_task", "args": {"id": 1}}]})
    with terminal("chat", cwd=example.parent) as term:
        term.expect("you> ")
        term.type("delete task 1")
        term.expect("Approve? [y/N] ")
        os.write(term.master, b"\x04")
        seen = term.expect("`chatwright pending deny ")
        assert "Waiting for approval (nothing was written yet):" in seen
        assert term.close() == 0
    assert [t[0] for t in tasks(example)] == [1]
    assert only_pending()["status"] == "pending"


# -- the audit log -------------------------------------------------------------


def test_audit_list_records_every_write_with_filters(example: Path) -> None:
    say("add a task to buy milk")
    say("complete task 1")
    say("add a task to buy tea", "--user", "bob")
    say("delete task 2", "--user", "bob")
    say("remember that I like tea")
    say("list my tasks")  # a read: not in the log

    entries = audit()
    assert [(e["user_id"], e["tool_name"], e["operation"]) for e in entries] == [
        ("local", "save_memory", "upsert"),
        ("bob", "delete_task", "delete"),
        ("bob", "add_task", "create"),
        ("local", "update_task", "update"),
        ("local", "add_task", "create"),
    ]
    assert all(e["outcome"] == "ok" and e["approval"] == "auto" for e in entries)
    ids = [e["id"] for e in entries]
    assert ids == sorted(ids, reverse=True)
    created = entries[-1]
    assert created["table"] == "tasks"
    assert created["args"] == {"title": "buy milk"}
    assert created["row_ids"] in ([1], [{"id": 1}])
    assert created["chat_id"] == chat_of(example)
    uuid.UUID(created["turn_id"])
    assert created["changes"][0]["before"] is None
    assert created["changes"][0]["after"]["title"] == "buy milk"
    deleted = entries[1]
    assert deleted["changes"][0]["before"]["title"] == "buy tea"

    assert [e["tool_name"] for e in audit("--user", "bob")] == ["delete_task", "add_task"]
    assert audit("--user", "nobody") == []
    assert [e["id"] for e in audit("--limit", "2")] == ids[:2]
    assert [e["id"] for e in audit("--chat", chat_of(example, "bob"))] == ids[1:3]
    assert len(audit("--since", "1h")) == 5
    assert len(audit("--since", "2000-01-01")) == 5
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    assert audit("--since", tomorrow) == []
    assert (
        audit("--since", (datetime.now(UTC) + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M")) == []
    )

    table = table_rows(ok("audit", "list", "--user", "bob").stdout)
    assert table[0] == [
        "id",
        "at",
        "user",
        "agent",
        "chat",
        "tool",
        "operation",
        "table",
        "rows",
        "outcome",
        "approval",
    ]
    assert [r[5:7] for r in table[1:]] == [["delete_task", "delete"], ["add_task", "create"]]
    assert "No audit entries." in ok("audit", "list", "--user", "nobody").stdout


def test_audit_entries_name_who_approved(example: Path) -> None:
    require(ADD_TASK)
    say("add a task to buy milk")
    ok("pending", "approve", only_pending()["id"], "--by", "carol")
    (entry,) = audit()
    assert (entry["approval"], entry["decided_by"], entry["outcome"]) == (
        "approved",
        "carol",
        "ok",
    )
    assert entry["pending_id"] == pending("--all")[0]["id"]
    assert "approved by carol" in ok("audit", "list").stdout


# -- undo --------------------------------------------------------------------


def test_undo_reverts_the_last_turn_then_the_one_before(example: Path) -> None:
    say("add a task to buy milk")
    say("add a task to buy tea")
    say("complete task 1")
    say("delete task 2")
    say("remember that I like tea")
    chat_id = chat_of(example)
    memory = "SELECT notes FROM agent_memories WHERE user_id = 'local'"

    undone = ok("undo", chat_id)
    assert undone.stdout.startswith("Undid turn ")
    assert f"of chat {chat_id} (user 'local'): 1 row change reverted" in undone.stdout
    assert query(example, memory) == []

    ok("undo", chat_id)  # the delete
    assert [t[:3] for t in tasks(example)] == [(1, "local", "buy milk"), (2, "local", "buy tea")]
    ok("undo", chat_id)  # the update
    assert [t[3] for t in tasks(example)] == ["pending", "pending"]
    ok("undo", chat_id)
    ok("undo", chat_id)
    assert tasks(example) == []
    assert_error(run("undo", chat_id), "nothing to undo")

    undos = [e for e in audit() if e["operation"] == "undo"]
    assert len(undos) == 5
    assert all(e["undo_of"] for e in undos)
    # The chat knows: the notes of the undos are in it, and the model still answers.
    assert say("list my tasks") == "You have no tasks yet.\n"


def test_undo_of_a_given_turn_and_of_an_upsert(example: Path) -> None:
    say("remember that I like tea")
    say("remember that I like cake")
    chat_id = chat_of(example)
    first = audit()[-1]
    assert first["operation"] == "upsert"
    assert_error(run("undo", chat_id, "--turn", first["turn_id"]), "changed since")
    ok("undo", chat_id)
    notes = query(example, "SELECT notes FROM agent_memories WHERE user_id = 'local'")
    assert notes == [("I like tea",)]
    ok("undo", chat_id, "--turn", first["turn_id"])
    assert query(example, "SELECT count(*) FROM agent_memories") == [(0,)]
    assert_error(run("undo", chat_id, "--turn", first["turn_id"]), "undone already")
    assert_error(run("undo", chat_id, "--turn", str(uuid.uuid4())), "changed no rows")


def test_undo_is_refused_naming_the_rows_when_they_changed_since(example: Path) -> None:
    say("add a task to buy milk")
    say("complete task 1")
    with contextlib.closing(sqlite3.connect(example)) as conn:
        conn.execute("UPDATE tasks SET title = 'changed by hand' WHERE id = 1")
        conn.commit()
    chat_id = chat_of(example)
    assert_error(
        run("undo", chat_id),
        "cannot undo turn",
        "row id=1 of 'tasks' was changed since",
        "nothing was undone",
    )
    assert tasks(example) == [(1, "local", "changed by hand", "done")]
    assert [e["operation"] for e in audit()] == ["update", "create"]


def test_undo_of_an_unknown_chat(example: Path) -> None:
    missing = str(uuid.uuid4())
    assert_error(run("undo", missing), f"no chat {missing}", "chatwright chats list --user")
    say("list my tasks")
    assert_error(run("undo", chat_of(example)), "nothing to undo")


# -- PostgreSQL: decisions from other processes --------------------------------


@pytest.fixture
def pg_example(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh PostgreSQL database with the example, reached through the environment.

    Its direct URL for psycopg; dropped afterwards.
    """
    from sqlalchemy.engine import make_url

    admin = admin_connect()
    name = f"cw_ws_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    url = (
        make_url(ADMIN_URL)
        .set(drivername="postgresql+psycopg", database=name)
        .render_as_string(hide_password=False)
    )
    try:
        for key, value in pg_env(url).items():
            monkeypatch.setenv(key, value)
        ok("init", "--example")
        yield libpq(url)
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def pg_rows(url: str, statement: str) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(url) as conn:
        return list(conn.execute(statement).fetchall())


@pytest.mark.postgresql
def test_on_postgresql_two_processes_approve_at_once_and_it_runs_once(
    workdir: Path, pg_example: str
) -> None:
    env = clean_env(**{k: v for k, v in os.environ.items() if k.startswith("CHATWRIGHT_")})
    require(DELETE_TASK)
    say("add a task to buy milk")
    say("delete task 1")
    action = only_pending()
    assert action["preview"]["rows"][0]["before"]["title"] == "buy milk"
    assert pg_rows(pg_example, "SELECT count(*) FROM tasks") == [(1,)]

    # Two console scripts race to approve: one runs the delete, the other is told.
    procs = [
        subprocess.Popen(
            [str(CONSOLE_SCRIPT), "pending", "approve", action["id"], "--by", f"ops{n}"],
            cwd=workdir,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(2)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    results = [(p.returncode, out, err) for p, (out, err) in zip(procs, outputs, strict=True)]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 1], results
    winner = next(out for code, out, _ in results if code == 0)
    loser = next(err for code, _, err in results if code == 1)
    assert winner.endswith("Deleted task #1.\n")
    assert loser.startswith("Error: ") and "already" in loser
    assert "Traceback" not in loser
    assert pg_rows(pg_example, "SELECT count(*) FROM tasks") == [(0,)]
    (deleted,) = [e for e in audit() if e["tool_name"] == "delete_task"]
    assert (deleted["outcome"], deleted["approval"]) == ("ok", "approved")
    assert deleted["decided_by"] in {"ops0", "ops1"}

    # Undo from yet another process, then the refused undo after a change by hand.
    chat_id = action["chat_id"]
    undone = script_ok("undo", chat_id, cwd=workdir, env=env)
    assert "1 row change reverted" in undone.stdout
    assert pg_rows(pg_example, "SELECT title FROM tasks") == [("buy milk",)]
    say("complete task 1")
    import psycopg

    with psycopg.connect(pg_example) as conn:
        conn.execute("UPDATE tasks SET title = 'by hand' WHERE id = 1")
    refused = script("undo", chat_id, cwd=workdir, env=env)
    assert refused.returncode == 1
    assert refused.stderr.startswith("Error: ") and "Traceback" not in refused.stderr
    assert pg_rows(pg_example, "SELECT title, status FROM tasks") == [("by hand", "done")]
