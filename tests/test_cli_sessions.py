"""`chatwright sessions list|sweep` and `chatwright serve`'s refusals, through the CLI."""

from __future__ import annotations

import json
import re
import sqlite3
import uuid
from pathlib import Path

import pytest

from tests.harness import Recorder, ServerProcess, clean_env, pg_env, run


def sql(path: Path, query: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as db:
        return db.execute(query).fetchall()


def test_sessions_list_and_sweep(example: Path) -> None:
    assert run("sessions", "list").output.strip() == "No sessions."
    assert run("chat", "-m", "list my tasks").exit_code == 0
    assert run("chat", "--user", "bob", "-m", "list my tasks").exit_code == 0
    # Reopen one session by hand so that something is active, then age it.
    sql(example, REACTIVATE + " WHERE user_id = 'bob'")
    listed = json.loads(run("sessions", "list", "--json").output)
    assert {(s["user_id"], s["is_active"]) for s in listed} == {("local", False), ("bob", True)}
    assert [
        s["user_id"] for s in json.loads(run("sessions", "list", "--active", "--json").output)
    ] == ["bob"]
    only_local = json.loads(run("sessions", "list", "--user", "local", "--json").output)
    assert [s["user_id"] for s in only_local] == ["local"]
    table = run("sessions", "list").output.splitlines()
    assert table[0].split() == ["id", "chat", "user", "agent", "active", "last", "seen"]

    fresh = run("sessions", "sweep")
    assert fresh.exit_code == 0
    assert re.fullmatch(
        r"Deactivated 0 session\(s\) idle for over 1800 s in \d+\.\d\d s \(1 batch\(es\)\); "
        r"1 \(user, agent\) pair\(s\) still have an active session; "
        r"0 cached agent\(s\) evicted\n",
        fresh.output,
    ), fresh.output

    sql(
        example, "UPDATE chat_sessions SET updated_at = '2000-01-01 00:00:00' WHERE user_id = 'bob'"
    )
    swept = json.loads(run("sessions", "sweep", "--json").output)
    assert sql(example, "SELECT count(*) FROM active_sessions") == [(0,)]
    assert swept["deactivated"] == 1 and swept["active_keys"] == 0
    assert "ids" not in swept  # counts only, unless --verbose
    assert swept["batches"] == 1 and swept["seconds"] >= 0


REACTIVATE = (
    "INSERT OR IGNORE INTO active_sessions (session_id, user_id, agent_name, client_key, "
    "updated_at) SELECT id, user_id, agent_name, client_key, updated_at FROM chat_sessions"
)


def age_all(database: Path, active: bool = True) -> None:
    sql(database, REACTIVATE if active else "DELETE FROM active_sessions")
    # The trigger of migration 0009 ages the active rows with their sessions.
    sql(database, "UPDATE chat_sessions SET updated_at = '2000-01-01 00:00:00'")


def session_ids(database: Path) -> set[str]:
    return {str(uuid.UUID(str(r[0]))) for r in sql(database, "SELECT id FROM chat_sessions")}


def test_sweep_prints_a_summary_and_the_ids_only_when_verbose(
    example: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for user in ("ann", "ben", "cat", "dan", "eve"):
        assert run("chat", "--user", user, "-m", "list my tasks").exit_code == 0
    ids = session_ids(example)
    assert len(ids) == 5
    monkeypatch.setenv("CHATWRIGHT_SESSIONS__SWEEP_BATCH", "2")

    age_all(example)
    quiet = run("sessions", "sweep")
    assert quiet.exit_code == 0, quiet.output
    assert len(quiet.output.splitlines()) == 1
    assert quiet.output.startswith("Deactivated 5 session(s) idle for over 1800 s in ")
    assert "(3 batch(es))" in quiet.output  # 2 + 2 + 1

    age_all(example)
    verbose = run("sessions", "sweep", "--verbose")
    lines = verbose.output.splitlines()
    assert lines[0].startswith("Deactivated 5 session(s)")
    assert {line.strip() for line in lines[1:]} == ids
    assert all(line.startswith("  ") for line in lines[1:])

    age_all(example)
    as_json = json.loads(run("sessions", "sweep", "--json", "-v").output)
    assert as_json["deactivated"] == 5 and as_json["batches"] == 3
    assert set(as_json["ids"]) == ids

    nothing = json.loads(run("sessions", "sweep", "--json").output)
    assert (nothing["deactivated"], nothing["batches"]) == (0, 1)


def test_sweep_refuses_a_bad_batch_size(example: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATWRIGHT_SESSIONS__SWEEP_BATCH", "0")
    result = run("sessions", "sweep")
    assert result.exit_code == 1
    assert result.output.startswith("Error: ")
    assert "sweep_batch" in result.output and "Traceback" not in result.output


@pytest.mark.usefixtures("example")
def test_serve_refuses_local_auth_on_a_public_address() -> None:
    result = run("serve", "--host", "0.0.0.0")
    assert result.exit_code == 1
    assert result.output.startswith(
        "Error: refusing to serve on 0.0.0.0 with server.auth = 'local'"
    )
    assert "Traceback" not in result.output


def test_serve_refuses_jwt_without_a_secret(monkeypatch: pytest.MonkeyPatch, example: Path) -> None:
    monkeypatch.setenv("CHATWRIGHT_SERVER__AUTH", "jwt")
    result = run("serve")
    assert result.exit_code == 1
    assert "server.jwt_secret" in result.output


def test_serve_refuses_several_workers_on_sqlite(example: Path) -> None:
    result = run("serve", "--workers", "2")
    assert result.exit_code == 1
    assert "server.workers > 1 needs PostgreSQL" in result.output


def test_serve_workers_runs_that_many_processes(pg_url: str, tmp_path: Path) -> None:
    import subprocess

    server = ServerProcess("--workers", "2", cwd=tmp_path, env=clean_env(**pg_env(pg_url)))
    try:
        server.wait_ready(timeout=40)
        children = subprocess.run(
            ["pgrep", "-P", str(server.proc.pid)], capture_output=True, text=True
        ).stdout.split()
        # uvicorn's supervisor spawns one process per worker (and a resource tracker).
        workers = [
            pid
            for pid in children
            if "spawn_main" in Path(f"/proc/{pid}/cmdline").read_text(errors="replace")
        ]
        assert len(workers) == 2, children
    finally:
        server.stop()


def test_chat_fires_session_deactivated_when_it_ends(example: Path) -> None:
    from chatwright.registry import LoadPolicy, Plugins

    recorder = Recorder()
    plugins = Plugins.load(LoadPolicy())
    plugins.register(recorder, "recorder")
    result = run("chat", "-m", "list my tasks", plugins=plugins)
    assert result.exit_code == 0, result.output
    seen = [(s.user_id, reason, s.is_active) for s, reason in recorder.deactivated]
    assert seen == [("local", "client", False)]
