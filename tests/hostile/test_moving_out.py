"""Attack findings on a user's data leaving chatwright: export and erasure.

- ``users export`` failed on PostgreSQL columns of types JSON has no word for
  (``interval``, ``time``, ``inet``: "unexpected TypeError ... please report
  it"), leaving a truncated archive over the one it was to replace, and wrote
  a NaN as a bare ``NaN``, which is not JSON. The HTTP archive had all of them.
- ``users erase "(erased user)"`` deleted the audit log's records of erasures.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from chatwright.plugins.example import assistant as example
from chatwright.runtime import Runtime
from tests.harness import assert_error, ok, run
from tests.hostile.conftest import Backend, MakeRuntime, sql

AGENT = example.AGENT


def strict_json(text: str) -> Any:
    def refuse(constant: str) -> Any:
        raise AssertionError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture
def cli_env(backend: Backend, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for key, value in backend.env.items():
        monkeypatch.setenv(key, value)
    if backend.name == "supabase":
        monkeypatch.setenv("CHATWRIGHT_STORAGE__BACKEND", "supabase")
    monkeypatch.chdir(tmp_path)
    return tmp_path


async def odd_table(runtime: Runtime, backend: Backend, user: str) -> None:
    """A table of the database's own column types, scoped to users by a crud tool row."""
    await example.seed(runtime.storage, "scripted:x")
    if backend.name == "sqlite":
        await sql(runtime, "CREATE TABLE odd (id INTEGER PRIMARY KEY, user_id TEXT, f REAL)")
        await sql(runtime, "INSERT INTO odd (user_id, f) VALUES (:u, 9e999)", u=user)
    else:
        await sql(
            runtime,
            "CREATE TABLE odd (id serial PRIMARY KEY, user_id text, iv interval, t time, "
            "ip inet, r int4range, f float8)",
        )
        await sql(
            runtime,
            "INSERT INTO odd (user_id, iv, t, ip, r, f) "
            "VALUES (:u, '1 day 2 hours', '10:30', '10.0.0.1', '[1,5)', 'NaN')",
            u=user,
        )
    await runtime.storage.tools.add(
        AGENT, "read_odd", type="crud", config={"table": "odd", "operation": "read"}
    )


async def test_an_export_of_any_column_type_is_strict_json(
    make_runtime: MakeRuntime, backend: Backend, cli_env: Path
) -> None:
    if backend.name == "supabase":
        pytest.skip("the table would need the framework's grants; postgresql covers the types")
    runtime = await make_runtime()
    user = f"dave-{uuid.uuid4().hex[:6]}"
    await odd_table(runtime, backend, user)
    out = cli_env / "dave.json"
    await asyncio.to_thread(ok, "users", "export", user, "--output", str(out))
    (row,) = strict_json(out.read_text(encoding="utf-8"))["app_tables"]["odd"]["rows"]
    assert row["f"] is None  # NaN and infinity: null, as over HTTP
    if backend.name == "postgresql":
        assert (row["iv"], row["t"], row["ip"]) == ("P1DT2H", "10:30:00", "10.0.0.1")
        assert (row["r"]["lower"], row["r"]["upper"], row["r"]["bounds"]) == (1, 5, "[)")
    # Standard output too.
    printed = strict_json((await asyncio.to_thread(ok, "users", "export", user)).stdout)
    assert printed["app_tables"]["odd"]["rows"] == [row]


def test_a_failed_export_leaves_the_file_it_would_have_replaced(
    backend: Backend, cli_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if backend.name != "sqlite":
        pytest.skip("how the file is written does not depend on the database")
    from chatwright.commands import users

    ok("init", "--example")
    out = cli_env / "archive.json"
    out.write_text('{"the": "archive of yesterday"}', encoding="utf-8")

    def broken(data: dict[str, Any], file: Any) -> None:
        file.write('{"format": "chatwr')
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(users, "_write", broken)
    assert_error(run("users", "export", "local", "--output", str(out)), "No space left")
    assert out.read_text(encoding="utf-8") == '{"the": "archive of yesterday"}'
    assert sorted(p.name for p in cli_env.iterdir() if "archive" in p.name) == ["archive.json"]


async def test_the_erased_users_marker_cannot_be_erased(
    make_runtime: MakeRuntime, backend: Backend, cli_env: Path
) -> None:
    runtime = await make_runtime()
    await example.seed(runtime.storage, "scripted:x")
    await runtime.storage.memories.put("erin", AGENT, "likes tea")
    await asyncio.to_thread(ok, "users", "erase", "erin", "--yes")
    records = await runtime.storage.audit.list("(erased user)")
    assert len(records) == 1
    refused = await asyncio.to_thread(run, "users", "erase", "(erased user)", "--yes")
    assert_error(refused, "is no user")
    assert await runtime.storage.audit.list("(erased user)") == records


@pytest.mark.parametrize("how", ["agent deleted", "tools pointed elsewhere"])
async def test_a_users_rows_stay_covered_after_the_tool_rows_that_scoped_them_go(
    make_runtime: MakeRuntime, how: str
) -> None:
    """Before: once no tool row scoped ``tasks``, export left it out and erasure said it
    had erased everything, the user's tasks still there."""
    from chatwright.userdata import user_data_of

    runtime = await make_runtime()
    storage = runtime.storage
    await example.seed(storage, "scripted:x")
    user = f"ian-{uuid.uuid4().hex[:6]}"
    await storage.records.insert(
        user, "tasks", {"user_id": user, "title": "private"}, returning=["id"]
    )
    await storage.records.insert(
        "someone", "tasks", {"user_id": "someone", "title": "theirs"}, returning=["id"]
    )
    if how == "agent deleted":
        assert await storage.agents.delete(AGENT)
    else:
        for row in await storage.tools.list(AGENT):
            if row.type == "crud" and row.config.get("table") == "tasks":
                await storage.tools.update(row.id, config={**row.config, "table": "notes"})
    store = user_data_of(storage)
    archive = await store.export(user)
    assert [r["title"] for r in archive.app_tables["tasks"]] == ["private"]
    report = await store.erase(user, requested_by="operator")
    assert report.app_tables["tasks"] == 1
    left = await sql(runtime, "SELECT user_id FROM tasks")
    assert left == [{"user_id": "someone"}]


async def test_tool_rows_removed_by_truncate_keep_the_users_rows_covered(
    make_runtime: MakeRuntime, backend: Backend
) -> None:
    """Found by a review: a TRUNCATE fires no row trigger (PostgreSQL)."""
    if backend.name != "postgresql":
        pytest.skip("SQLite has no TRUNCATE; supabase's role may not truncate agent_tools")
    from chatwright.userdata import user_data_of

    runtime = await make_runtime()
    await example.seed(runtime.storage, "scripted:x")
    user = f"una-{uuid.uuid4().hex[:6]}"
    await runtime.storage.records.insert(
        user, "tasks", {"user_id": user, "title": "private"}, returning=["id"]
    )
    await sql(runtime, "TRUNCATE agent_tools CASCADE")
    archive = await user_data_of(runtime.storage).export(user)
    assert [r["title"] for r in archive.app_tables["tasks"]] == ["private"]


def test_a_current_unscoped_row_decides_over_a_former_scoped_one() -> None:
    """Found by a review: a current row naming the table without a scope (and letting the
    model write its user_id) left the table to a former row's scope, to be erased by a
    column the model could set."""
    from types import SimpleNamespace

    from chatwright.userdata import crud_scopes_since

    unscoped = {"table": "notes", "operation": "create", "scope": {"user_column": None}}
    current = [
        SimpleNamespace(id=2, type="crud", config={**unscoped, "args": {"user_id": {}, "text": {}}})
    ]
    scoped = {"table": "notes", "operation": "create", "args": {"text": {}}}
    former = [SimpleNamespace(id=1, type="crud", config=scoped)]
    found = crud_scopes_since(current, former)
    assert "notes" not in found.tables
    # Named by no current row, the former row's scope counts.
    assert "notes" in crud_scopes_since([], former).tables
