"""``chatwright chat`` (DESIGN §8): terminal chat with history kept in the database.

Most tests drive :func:`chatwright.cli.build_cli` with click's ``CliRunner`` in
a fresh working directory with every ``CHATWRIGHT_*`` variable removed, after
``init --example``, so the zero-configuration SQLite file ``chatwright.db`` and
the ``offline`` model are used. What the commands left behind is read with
plain :mod:`sqlite3`. The acceptance flow and the interactive mode also run
the installed console script in real subprocesses.
"""

from __future__ import annotations

import json
import re
import sqlite3
import uuid
from pathlib import Path

import pytest
from click.testing import Result

from tests.harness import ACTIVE, DB_FILE, assert_error, ok, run, script, script_ok
from tests.harness import sqlite_rows as query

pytestmark = pytest.mark.usefixtures("workdir")

BANNER = re.compile(
    r"^Chat (?P<chat_id>[0-9a-f-]{36}) with '(?P<agent>[^']+)' as '(?P<user>[^']+)'\. "
    r"Ctrl-D or 'exit' to leave\.$",
    re.MULTILINE,
)


# -- helpers ----------------------------------------------------------------


def say(*args: str) -> Result:
    """``chatwright chat … -m`` with the last argument as the message."""
    *options, message = args
    return ok("chat", *options, "-m", message)


def sessions(db: Path) -> list[tuple[uuid.UUID, str, str, int]]:
    """(chat_id, user_id, agent_name, is_active) of every session, oldest first."""
    return [
        (uuid.UUID(str(chat_id)), user, agent, int(active))
        for chat_id, user, agent, active in query(
            db,
            f"SELECT chat_id, user_id, agent_name, {ACTIVE} FROM chat_sessions ORDER BY created_at",
        )
    ]


def chat_ids(db: Path) -> list[uuid.UUID]:
    return [s[0] for s in sessions(db)]


def messages(db: Path, chat_id: uuid.UUID) -> list[tuple[str, str, str]]:
    """(user_id, role, text) of a chat's stored messages, in order."""
    found = []
    for user, role, content in query(
        db,
        "SELECT user_id, role, content FROM chat_messages WHERE chat_id IN (?, ?) ORDER BY id",
        chat_id.hex,
        str(chat_id),
    ):
        found.append((user, role, json.loads(content)["data"]["content"]))
    return found


def tasks(db: Path) -> list[tuple[str, str]]:
    return query(db, "SELECT user_id, title FROM tasks ORDER BY id")


# -- acceptance, in real processes ------------------------------------------


def test_acceptance_add_then_list_in_separate_processes(workdir: Path) -> None:
    script_ok("init", "--example", cwd=workdir)
    db = workdir / DB_FILE

    added = script_ok("chat", "assistant", "-m", "add a task to buy milk", cwd=workdir)
    # Standard output holds the reply alone; the tool call goes to standard error.
    assert added.stdout == "Added task #1: buy milk (pending).\n"
    assert '→ add_task {"title": "buy milk"}' in added.stderr
    assert "←" in added.stderr
    assert "Error" not in added.stderr
    assert tasks(db) == [("local", "buy milk")]

    listed = script_ok("chat", "assistant", "-m", "list my tasks", cwd=workdir)
    assert listed.stdout == "Your tasks:\n- #1: buy milk (pending)\n"
    assert "→ list_tasks {}" in listed.stderr
    assert "buy milk" in listed.stderr  # the tool result line

    # Both turns went to the same, resumed chat, and both sessions were closed.
    found = sessions(db)
    assert len(found) == 2
    assert found[0][0] == found[1][0]
    assert [s[1:] for s in found] == [("local", "assistant", 0)] * 2
    assert [role for _, role, _ in messages(db, found[0][0])] == ["human", "ai", "tool", "ai"] * 2


def test_interactive_in_a_real_process(workdir: Path) -> None:
    script_ok("init", "--example", cwd=workdir)
    script_ok("chat", "-m", "add a task to buy milk", cwd=workdir)
    proc = script_ok("chat", cwd=workdir, input="list my tasks\nexit\n")
    banner = BANNER.search(proc.stdout)
    assert banner is not None, proc.stdout
    assert uuid.UUID(banner["chat_id"]) == chat_ids(workdir / DB_FILE)[0]
    # The earlier exchange is replayed, then the new question is answered.
    assert "you> add a task to buy milk" in proc.stdout
    assert "Added task #1: buy milk (pending)." in proc.stdout
    assert "Your tasks:\n- #1: buy milk (pending)" in proc.stdout
    assert "→ list_tasks {}" in proc.stderr
    # Standard input closed without "exit" ends the chat too.
    eof = script_ok("chat", cwd=workdir, input="list my notes\n")
    assert "You have no notes yet." in eof.stdout
    assert all(s[3] == 0 for s in sessions(workdir / DB_FILE))


# -- choosing the agent, the user and the chat -------------------------------


def test_without_agent_it_picks_the_assistant(example: Path) -> None:
    ok("agents", "add", "helper", "--prompt", "Be helpful.")
    reply = say("add a task to buy milk")
    assert reply.stdout == "Added task #1: buy milk (pending).\n"
    assert [s[2] for s in sessions(example)] == ["assistant"]


def test_without_agent_and_no_assistant_asks_which(example: Path) -> None:
    query_db = sqlite3.connect(example)
    try:
        query_db.execute("UPDATE agents SET name = 'other' WHERE name = 'assistant'")
        query_db.commit()
    finally:
        query_db.close()
    ok("agents", "add", "helper", "--prompt", "Be helpful.")
    assert_error(run("chat", "-m", "list my tasks"), "which agent?", "helper", "other")


def test_users_keep_their_tasks_apart(example: Path) -> None:
    say("add a task to buy milk")
    say("--user", "bob", "add a task to walk the dog")
    assert sorted(tasks(example)) == [("bob", "walk the dog"), ("local", "buy milk")]

    mine = say("list my tasks").stdout
    assert "buy milk" in mine
    assert "walk the dog" not in mine
    bobs = say("--user", "bob", "list my tasks").stdout
    assert "walk the dog" in bobs
    assert "buy milk" not in bobs

    # Bob cannot touch local's task either.
    refused = say("--user", "bob", "delete task 1")
    assert "That did not work" in refused.stdout
    assert ("local", "buy milk") in tasks(example)

    by_user = {(s[1], s[0]) for s in sessions(example)}
    assert len({chat for _, chat in by_user}) == 2


def test_default_resumes_the_latest_chat_and_new_starts_one(example: Path) -> None:
    say("add a task to buy milk")
    say("list my tasks")
    first, resumed = chat_ids(example)
    assert first == resumed

    say("--new", "add a note: the door code is 4711")
    new = chat_ids(example)[-1]
    assert new != first
    assert [role for _, role, _ in messages(example, new)] == ["human", "ai", "tool", "ai"]

    # Without --new or --chat-id the latest chat is resumed: the new one.
    say("list my notes")
    assert chat_ids(example)[-1] == new
    assert len(messages(example, new)) == 8
    assert len(messages(example, first)) == 8

    # --chat-id goes back to an older chat.
    say("--chat-id", str(first), "list my tasks")
    assert chat_ids(example)[-1] == first
    assert len(messages(example, first)) == 12
    assert all(s[3] == 0 for s in sessions(example))


def test_chat_id_of_another_users_chat_is_not_found(example: Path) -> None:
    say("--user", "bob", "add a task to walk the dog")
    (bobs_chat,) = chat_ids(example)
    before = messages(example, bobs_chat)

    result = run("chat", "--chat-id", str(bobs_chat), "-m", "list my tasks")
    assert_error(result, "no chat", str(bobs_chat))
    assert "walk the dog" not in result.output
    assert messages(example, bobs_chat) == before
    assert [s[1] for s in sessions(example)] == ["bob"]

    interactive = run("chat", "--chat-id", str(bobs_chat), input="list my tasks\n")
    assert_error(interactive, "no chat", str(bobs_chat))
    assert messages(example, bobs_chat) == before


def test_unknown_agent_is_an_error(example: Path) -> None:
    assert_error(run("chat", "nobody", "-m", "list my tasks"), "no agent named 'nobody'")
    assert sessions(example) == []


def test_chat_id_and_new_together_are_a_usage_error(example: Path) -> None:
    result = run("chat", "--chat-id", str(uuid.uuid4()), "--new", "-m", "hi")
    assert result.exit_code == 2, result.output
    assert "--chat-id" in result.stderr
    assert "--new" in result.stderr
    assert sessions(example) == []


def test_chat_id_must_be_a_uuid(example: Path) -> None:
    result = run("chat", "--chat-id", "not-a-uuid", "-m", "hi")
    assert result.exit_code == 2, result.output
    assert "not-a-uuid" in result.stderr


# -- sessions ----------------------------------------------------------------


def test_the_session_is_closed_after_the_command(example: Path) -> None:
    say("add a task to buy milk")
    assert [s[3] for s in sessions(example)] == [0]
    ok("chat", input="list my tasks\nexit\n")
    assert [s[3] for s in sessions(example)] == [0, 0]
    # Also when the turn fails.
    ok("agents", "set", "assistant", "--model", "scripted:x", "--setting", 'fail="boom"')
    assert_error(run("chat", "-m", "hello"), "boom")
    assert [s[3] for s in sessions(example)] == [0, 0, 0]
    listed = json.loads(ok("sessions", "list", "--json").stdout)
    assert len(listed) == 3
    assert not any(s["is_active"] for s in listed)


# -- interactive mode -------------------------------------------------------


def test_interactive_answers_and_exits_on_exit(example: Path) -> None:
    result = ok("chat", input="add a task to buy milk\nlist my tasks\nexit\nlist my notes\n")
    banner = BANNER.search(result.stdout)
    assert banner is not None, result.stdout
    assert (banner["agent"], banner["user"]) == ("assistant", "local")
    (chat_id,) = chat_ids(example)
    assert uuid.UUID(banner["chat_id"]) == chat_id
    assert "Added task #1: buy milk (pending)." in result.stdout
    assert "Your tasks:\n- #1: buy milk (pending)" in result.stdout
    assert "→ add_task" in result.stderr
    # Nothing after "exit" was read.
    assert "notes" not in result.stdout
    assert [text for _, role, text in messages(example, chat_id) if role == "human"] == [
        "add a task to buy milk",
        "list my tasks",
    ]
    assert sessions(example)[0][3] == 0


def test_interactive_replays_recent_messages_when_resuming(example: Path) -> None:
    say("add a task to buy milk")
    result = ok("chat", input="")  # EOF at once
    banner = BANNER.search(result.stdout)
    assert banner is not None, result.stdout
    after_banner = result.stdout[banner.end() :]
    assert "you> add a task to buy milk" in after_banner
    assert "Added task #1: buy milk (pending)." in after_banner
    # A new chat has nothing to replay.
    fresh = ok("chat", "--new", input="")
    assert "buy milk" not in fresh.stdout
    assert BANNER.search(fresh.stdout) is not None


def test_interactive_ends_on_eof_and_skips_blank_lines(example: Path) -> None:
    result = ok("chat", input="\n   \nlist my tasks\n")
    assert "You have no tasks yet." in result.stdout
    (chat_id,) = chat_ids(example)
    assert [text for _, role, text in messages(example, chat_id) if role == "human"] == [
        "list my tasks"
    ]
    assert sessions(example)[0][3] == 0


def test_interactive_keeps_going_after_a_model_error(example: Path) -> None:
    ok("agents", "set", "assistant", "--model", "scripted:x", "--setting", 'fail="boom"')
    result = ok("chat", input="hello\nagain\nexit\n")
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 2
    assert all("boom" in line for line in errors)
    (chat_id,) = chat_ids(example)
    assert [text for _, _, text in messages(example, chat_id)] == ["hello", "again"]


# -- model failures ---------------------------------------------------------


def test_model_failure_in_message_mode(example: Path) -> None:
    ok("agents", "set", "assistant", "--model", "scripted:x", "--setting", 'fail="boom"')
    result = run("chat", "-m", "hello there")
    line = assert_error(result, "boom", "'assistant'")
    assert "scripted:x" in line
    assert result.stdout == ""
    (chat_id,) = chat_ids(example)
    assert messages(example, chat_id) == [("local", "human", "hello there")]
    assert sessions(example)[0][3] == 0


def test_model_failure_in_a_real_process(workdir: Path) -> None:
    script_ok("init", "--example", cwd=workdir)
    script_ok(
        "agents",
        "set",
        "assistant",
        "--model",
        "scripted:x",
        "--setting",
        'fail="boom"',
        cwd=workdir,
    )
    proc = script("chat", "assistant", "-m", "hello there", cwd=workdir)
    assert proc.returncode == 1
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("Error:")
    assert "boom" in lines[0]
    db = workdir / DB_FILE
    (chat_id,) = chat_ids(db)
    assert messages(db, chat_id) == [("local", "human", "hello there")]


def test_missing_provider_package_is_an_error_at_first_chat(example: Path) -> None:
    ok("agents", "set", "assistant", "--model", "anthropic:claude-3-5-haiku-latest")
    assert_error(run("chat", "-m", "list my tasks"), "pip install langchain-anthropic")
    assert sessions(example)[0][3] == 0


def test_model_with_openai_and_no_key_is_an_error(
    example: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_ADMIN_KEY"):
        monkeypatch.delenv(name, raising=False)
    ok("agents", "set", "assistant", "--model", "openai:gpt-4o-mini")
    assert_error(run("chat", "-m", "list my tasks"), "OPENAI_API_KEY")


@pytest.mark.parametrize(
    ("message", "needle"),
    [
        pytest.param("", "empty", id="empty"),
        pytest.param("   ", "empty", id="blank"),
        pytest.param("x" * 20_000, "at most 16000", id="too-long"),
    ],
)
def test_chat_refuses_what_the_http_api_refuses(example: Path, message: str, needle: str) -> None:
    before = sessions(example)
    assert_error(run("chat", "assistant", "-m", message), needle)
    # Refused before a session was opened or anything stored.
    assert sessions(example) == before
