"""One user's data exported, erased, one chat deleted: on SQLite, PostgreSQL and supabase.

Two users get a row of every kind (messages with a tool call and its result, a
summary, a session, a customization, a memory, an approval choice, a pending
action, an audit entry, token usage and a budget, and notes in the example's
CRUD table). The export must hold exactly the first user's rows; the erasure's
counts must match what the export held; and the second user's rows must all be
there after, compared with a full dump of the database taken before. The
supabase backend runs the user's part of each operation as ``authenticated``
under row-level security, on a database with Supabase's roles and default
privileges (see tests/test_supabase.py).
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from chatwright.approvals import NewAuditEntry, NewPending
from chatwright.errors import ChatBusyError, NotFoundError
from chatwright.plugins.example import assistant as example
from chatwright.plugins.sql import schema
from chatwright.plugins.sql.storage import SQLStorage
from chatwright.plugins.sql.turn_statements import take_lease
from chatwright.stores import ColumnSpec, NewMessage, NewSummary, TableSpec
from chatwright.usage import TurnUsage
from chatwright.userdata import ARCHIVE_FORMAT, ARCHIVE_VERSION, ERASED_USER, USER_TABLES
from tests.harness import DATA_TABLES, Cluster, ok, run, storage_for
from tests.test_server import JWT, Running, Start, bearer, chat_ok, error_of, open_session
from tests.test_server import start as start
from tests.test_supabase import cluster as cluster
from tests.test_supabase import supabase

AGENT = example.AGENT
APP_TABLES = ("notes", "tasks")
USERS = ("alice", "bob")


async def _empty(storage: SQLStorage) -> None:
    async with storage.write() as conn:
        for table in (*APP_TABLES, "owned_items"):
            await conn.execute(sa.text(f'DROP TABLE IF EXISTS "{table}"'))
        if storage.dialect == "postgresql":
            await conn.execute(sa.text(f"TRUNCATE {', '.join(DATA_TABLES)} RESTART IDENTITY"))


@pytest.fixture(params=["sqlite", "postgresql", "supabase"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """(backend, database URL): a SQLite file, the run's PostgreSQL database, or a
    database with Supabase's roles (made by a synchronous fixture, hence this one)."""
    if request.param == "sqlite":
        return "sql", f"sqlite+aiosqlite:///{tmp_path}/userdata.db"
    if request.param == "postgresql":
        return "sql", str(request.getfixturevalue("pg_url"))
    c: Cluster = request.getfixturevalue("cluster")
    return "supabase", c.url()


@pytest.fixture
async def storage(backend: tuple[str, str]) -> AsyncIterator[SQLStorage]:
    """A migrated, emptied database with the example installed, on each backend."""
    kind, url = backend
    made = storage_for(url) if kind == "sql" else supabase(url)
    await made.upgrade()
    await _empty(made)
    await example.seed(made, "offline:x")
    yield made
    await made.close()


def _messages(user: str) -> list[NewMessage]:
    call = {"name": "add_note", "args": {"body": f"{user}'s note"}, "id": f"call-{user}"}
    return [
        NewMessage("human", {"type": "human", "data": {"content": f"{user} says hi"}}),
        NewMessage("ai", {"type": "ai", "data": {"content": "", "tool_calls": [call], "id": None}}),
        NewMessage(
            "tool",
            {"type": "tool", "data": {"content": '{"id": 1}', "tool_call_id": f"call-{user}"}},
        ),
        NewMessage("ai", {"type": "ai", "data": {"content": f"noted, {user}"}}),
    ]


async def seed_user(storage: SQLStorage, user: str, *, notes: int = 2) -> uuid.UUID:
    """One row of every kind for ``user``; returns the chat's id."""
    now = datetime.now(UTC)
    session = await storage.sessions.open(user, AGENT)
    chat = session.chat_id
    stored = await storage.messages.append(user, chat, _messages(user))
    await storage.summaries.put(user, chat, NewSummary(f"{user} summary", stored[0].id, 1))
    await storage.customizations.put(user, AGENT, "instruction_set", f"{user}'s style")
    await storage.memories.put(user, AGENT, f"{user} likes tea")
    tool = (await storage.tools.list(AGENT))[0]
    await storage.pending.choose(user, tool.id, "auto")
    pending = NewPending(
        turn_id=uuid.uuid4(),
        tool_id=tool.id,
        tool_name=tool.name,
        tool_call_id=f"held-{user}",
        args={"body": f"{user}'s held note"},
        preview=None,
        expires_at=now + timedelta(hours=1),
    )
    await storage.pending.create(user, AGENT, chat, [pending])
    await storage.audit.record(
        NewAuditEntry(
            user_id=user,
            agent_name=AGENT,
            tool_name="add_note",
            operation="create",
            table="notes",
            args={"body": f"{user}'s note"},
            chat_id=chat,
        )
    )
    await storage.usage.record(
        user, AGENT, chat, uuid.uuid4(), TurnUsage("offline:x", 1, 10, 5), now
    )
    await storage.usage.set_budget(user, daily_tokens=1000, monthly_tokens=None)
    async with storage.write() as conn:  # a running turn's reservation
        await conn.execute(
            schema.usage_reservations.insert().values(
                turn_id=uuid.uuid4(), user_id=user, tokens=50, expires_at=now + timedelta(hours=1)
            )
        )
    for n in range(notes):
        await storage.records.insert(
            user,
            "notes",
            {"user_id": user, "body": f"{user} note {n}"},
            returning=["id"],
            scope={"user_id": user},
        )
    return chat


async def dump(storage: SQLStorage) -> dict[str, list[dict[str, Any]]]:
    """Every row of every table chatwright and the example keep, as the connecting role."""
    out: dict[str, list[dict[str, Any]]] = {}
    async with storage.read() as conn:
        for table in (*DATA_TABLES, *APP_TABLES):
            rows = (await conn.execute(sa.text(f'SELECT * FROM "{table}"'))).mappings().all()
            out[table] = sorted(
                (dict(r) for r in rows), key=lambda r: json.dumps(r, sort_keys=True, default=str)
            )
    return out


def of(rows: dict[str, list[dict[str, Any]]], user: str) -> dict[str, list[dict[str, Any]]]:
    return {t: [r for r in found if r.get("user_id") == user] for t, found in rows.items()}


async def test_export_holds_exactly_the_users_rows(storage: SQLStorage) -> None:
    chats = {user: await seed_user(storage, user) for user in USERS}
    archive = await storage.user_data.export("alice")
    data = archive.as_dict()
    assert (data["format"], data["version"], data["user_id"]) == (
        ARCHIVE_FORMAT,
        ARCHIVE_VERSION,
        "alice",
    )
    assert list(data["tables"]) == list(USER_TABLES)
    # One row of each kind but the messages (four) and usage totals (a day and a month).
    expected = dict.fromkeys(USER_TABLES, 1) | {"chat_messages": 4, "usage_totals": 2}
    assert archive.counts() == expected
    for table, rows in data["tables"].items():
        assert {r["user_id"] for r in rows} == {"alice"}, table
    assert data["app_tables"]["notes"]["scope_column"] == "user_id"
    assert sorted(r["body"] for r in data["app_tables"]["notes"]["rows"]) == [
        "alice note 0",
        "alice note 1",
    ]
    assert data["app_tables"].get("tasks", {"rows": []})["rows"] == []
    messages = data["tables"]["chat_messages"]
    assert {m["chat_id"] for m in messages} == {str(chats["alice"])}
    assert messages[1]["content"]["data"]["tool_calls"][0]["args"] == {"body": "alice's note"}
    assert messages[2]["content"]["type"] == "tool"
    assert data["tables"]["audit_log"][0]["args"] == {"body": "alice's note"}
    assert "bob" not in json.dumps(data)
    # Whether a session is active, which active_sessions keeps, is in its row.
    assert [s["is_active"] for s in data["tables"]["chat_sessions"]] == [True]
    json.dumps(data)  # JSON-ready throughout


async def test_erase_counts_what_was_there_and_leaves_the_other_user(
    storage: SQLStorage,
) -> None:
    for user in USERS:
        await seed_user(storage, user, notes=3 if user == "alice" else 2)
    before = await dump(storage)
    archive = await storage.user_data.export("alice")
    report = await storage.user_data.erase("alice", requested_by="test")
    assert dict(report.tables) == archive.counts()
    assert dict(report.app_tables) == {"notes": 3, "tasks": 0}
    assert report.total == sum(archive.counts().values()) + 3
    after = await dump(storage)
    assert of(after, "bob") == of(before, "bob")
    assert all(rows == [] for rows in of(after, "alice").values())
    assert (await storage.user_data.export("alice")).counts() == dict.fromkeys(USER_TABLES, 0)
    # The erasure is in the audit log, with the counts and without the user.
    (entry,) = [r for r in after["audit_log"] if r["user_id"] == ERASED_USER]
    args = entry["args"] if isinstance(entry["args"], dict) else json.loads(entry["args"])
    assert args["total"] == report.total and args["requested_by"] == "test"
    assert "alice" not in json.dumps(entry, default=str)
    # Erasing again finds nothing, and says so with zeros.
    assert (await storage.user_data.erase("alice", requested_by="test")).total == 0


async def test_delete_chat(storage: SQLStorage) -> None:
    first = await seed_user(storage, "alice")
    kept = await storage.sessions.open("alice", AGENT, chat_id=uuid.uuid4())
    other = kept.chat_id
    await storage.messages.append("alice", other, _messages("alice")[:1])
    bob = await seed_user(storage, "bob")
    before = await dump(storage)
    report = await storage.user_data.delete_chat("alice", first)
    assert dict(report.tables) == {
        "chat_messages": 4,
        "chat_summaries": 1,
        "pending_actions": 1,
        "chat_sessions": 1,
    }
    after = await dump(storage)
    assert of(after, "bob") == of(before, "bob")
    left = of(after, "alice")
    assert {uuid.UUID(str(r["chat_id"])) for r in left["chat_messages"]} == {other}
    assert len(left["prompt_customizations"]) == 1  # not a chat's
    # The deleted chat's active session went with it, the other chat's stayed.
    assert [uuid.UUID(str(r["session_id"])) for r in left["active_sessions"]] == [kept.id]
    # Another user's chat is refused as an unknown one, and nothing of it is touched.
    with pytest.raises(NotFoundError) as theirs:
        await storage.user_data.delete_chat("alice", bob)
    nobodys = uuid.uuid4()
    with pytest.raises(NotFoundError) as unknown:
        await storage.user_data.delete_chat("alice", nobodys)
    assert str(theirs.value).replace(str(bob), "ID") == str(unknown.value).replace(
        str(nobodys), "ID"
    )
    assert of(await dump(storage), "bob") == of(before, "bob")


async def test_a_running_turn_holds_off_erasure_and_chat_deletion(storage: SQLStorage) -> None:
    chat = await seed_user(storage, "alice")
    async with storage.chat_lock(chat):
        with pytest.raises(ChatBusyError, match="running") as busy:
            await storage.user_data.erase("alice", requested_by="test")
        # When it lets go if no one renews it (its process stopped), not turns.timeout.
        assert re.search(
            rf"a turn of chat {chat} holds it until \d\d:\d\d:\d\d UTC;", str(busy.value)
        )
        assert "turns.timeout" not in str(busy.value)
        with pytest.raises(ChatBusyError):
            await storage.user_data.delete_chat("alice", chat)
        # An export reads a snapshot meanwhile.
        assert (await storage.user_data.export("alice")).counts()["chat_messages"] == 4
    assert (await storage.user_data.erase("alice", requested_by="test")).tables[
        "chat_messages"
    ] == 4


async def test_a_turn_taking_its_lease_meanwhile_holds_off_erasure_and_chat_deletion(
    storage: SQLStorage,
) -> None:
    """On PostgreSQL a turn takes its chat's lease in a transaction that also checks the
    chat is the user's and stores its message: a deletion that only read the leases would
    not see that lease before the turn commits, and both would go through (the turn's
    messages left behind, in no session). The deletion takes the leases itself: it waits
    for the turn's transaction, then finds the lease held."""
    if storage.dialect != "postgresql":
        pytest.skip("SQLite runs one write transaction at a time: the two cannot overlap")
    chat = await seed_user(storage, "alice")
    leases = schema.chat_leases
    deletions = {
        "delete_chat": lambda: storage.user_data.delete_chat("alice", chat),
        "erase": lambda: storage.user_data.erase("alice", requested_by="test"),
    }
    for name, deletion in deletions.items():
        turn = await storage.engine.connect()
        try:
            # A turn's first transaction: its lease taken, not committed yet.
            at = datetime.now(UTC)
            until = at + timedelta(minutes=1)
            values = {"chat_id": chat, "holder": "turn", "expires_at": until, "at": at}
            await turn.execute(take_lease("postgresql"), values)
            deleting = asyncio.ensure_future(deletion())
            await asyncio.sleep(0.5)
            assert not deleting.done(), name  # waiting for the turn's transaction
            await turn.commit()
        finally:
            await turn.close()
        with pytest.raises(ChatBusyError, match="running"):
            await deleting
        async with storage.write() as conn:
            found = await conn.scalar(sa.select(leases.c.holder).where(leases.c.chat_id == chat))
            assert found == "turn", name  # the turn's lease, as it left it
            await conn.execute(leases.delete())
    assert (await storage.user_data.export("alice")).counts()["chat_messages"] == 4
    # With no turn running, the deletion takes the leases and they go with the chat.
    assert (await storage.user_data.delete_chat("alice", chat)).tables["chat_messages"] == 4
    async with storage.read() as conn:
        assert await conn.scalar(sa.select(sa.func.count()).select_from(leases)) == 0


# --------------------------------------------------------------------------- over HTTP


async def http_server(start: Start, backend: tuple[str, str]) -> Running:
    kind, url = backend
    if url.startswith("sqlite"):
        return await start(**JWT)
    return await start(url, storage={"backend": kind}, fresh_postgres=True, **JWT)


def _without_time(archive: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in archive.items() if k != "exported_at"}


async def test_http_export_erase_and_delete_chat(start: Start, backend: tuple[str, str]) -> None:
    srv = await http_server(start, backend)
    client = srv.client
    alice, bob = bearer("alice"), bearer("bob")
    chats = {}
    for who, headers in (("alice", alice), ("bob", bob)):
        session = await open_session(client, headers=headers)
        chats[who] = session["chat_id"]
        await chat_ok(client, session["chat_id"], f"add a note: {who} secret", headers=headers)
        await chat_ok(client, session["chat_id"], f"remember that {who} likes tea", headers=headers)
    bobs = (await client.get("/api/me/export", headers=bob)).json()

    got = await client.get("/api/me/export", headers=alice)
    assert got.status_code == 200, got.text
    assert got.headers["content-disposition"] == 'attachment; filename="chatwright-alice.json"'
    archive = got.json()
    assert (archive["format"], archive["version"], archive["user_id"]) == (
        ARCHIVE_FORMAT,
        ARCHIVE_VERSION,
        "alice",
    )
    assert [r["body"] for r in archive["app_tables"]["notes"]["rows"]] == ["alice secret"]
    assert "alice likes tea" in archive["tables"]["agent_memories"][0]["notes"]
    calls = [
        m for m in archive["tables"]["chat_messages"] if m["content"]["data"].get("tool_calls")
    ]
    assert len(calls) == 2 and all(m["chat_id"] == chats["alice"] for m in calls)
    assert archive["tables"]["token_usage"] and archive["tables"]["audit_log"]
    assert "bob" not in got.text

    # Another user's chat is refused as an unknown one; nothing of it is touched.
    theirs = error_of(await client.delete(f"/api/chats/{chats['bob']}", headers=alice), 404)
    unknown_id = uuid.uuid4()
    unknown = error_of(await client.delete(f"/api/chats/{unknown_id}", headers=alice), 404)
    assert theirs.replace(chats["bob"], "ID") == unknown.replace(str(unknown_id), "ID")

    deleted = await client.delete(f"/api/chats/{chats['alice']}", headers=alice)
    assert deleted.status_code == 200, deleted.text
    assert deleted.json()["tables"]["chat_messages"] == len(archive["tables"]["chat_messages"])
    gone = f"/api/chats/{chats['alice']}/messages"
    assert (await client.get(gone, headers=alice)).status_code == 404

    report = await client.delete("/api/me", params={"confirm": "alice"}, headers=alice)
    assert report.status_code == 200, report.text
    counts = report.json()
    assert counts["app_tables"]["notes"] == 1
    assert counts["tables"]["agent_memories"] == 1
    assert counts["tables"]["token_usage"] == len(archive["tables"]["token_usage"])
    after = (await client.get("/api/me/export", headers=alice)).json()
    assert all(rows == [] for rows in after["tables"].values())
    assert after["app_tables"]["notes"]["rows"] == []
    # The other user's archive is what it was; a new chat of the erased user starts empty.
    assert _without_time((await client.get("/api/me/export", headers=bob)).json()) == (
        _without_time(bobs)
    )
    session = await open_session(client, headers=alice)
    answer = await chat_ok(client, session["chat_id"], "what do you remember", headers=alice)
    assert "tea" not in json.dumps(answer)


# --------------------------------------------------------------------------- the CLI


def test_cli_export_then_erase_prints_matching_counts(example: Path, tmp_path: Path) -> None:
    for message in ("add a note: the door code is 4711", "remember that I like tea"):
        ok("chat", "assistant", "-m", message)
    ok("chat", "assistant", "--user", "other", "-m", "add a note: others' note")
    out = tmp_path / "local.json"
    written = ok("users", "export", "local", "--output", str(out))
    assert f"to {out}" in written.stderr
    archive = json.loads(out.read_text())
    assert archive["format"] == ARCHIVE_FORMAT and archive["user_id"] == "local"
    assert [r["body"] for r in archive["app_tables"]["notes"]["rows"]] == ["the door code is 4711"]
    stdout = json.loads(ok("users", "export", "local").stdout)
    assert _without_time(stdout) == _without_time(archive)
    report = json.loads(ok("users", "erase", "local", "--yes", "--json").stdout)
    assert report["tables"] == {t: len(rows) for t, rows in archive["tables"].items()}
    assert report["app_tables"]["notes"] == 1
    again = json.loads(ok("users", "export", "local").stdout)
    assert all(rows == [] for rows in again["tables"].values())
    others = json.loads(ok("users", "export", "other").stdout)
    assert [r["body"] for r in others["app_tables"]["notes"]["rows"]] == ["others' note"]


def test_cli_erase_asks_first(example: Path) -> None:
    ok("chat", "assistant", "-m", "add a note: keep me")
    refused = run("users", "erase", "local", input="n\n")
    assert refused.exit_code == 1 and "nothing erased" in refused.stderr
    assert "Traceback" not in refused.output
    kept = json.loads(ok("users", "export", "local").stdout)
    assert len(kept["app_tables"]["notes"]["rows"]) == 1
    erased = ok("users", "erase", "local", input="y\n")
    assert "Erased" in erased.stdout and "notes (tool table)" in erased.stdout


async def test_the_users_part_runs_under_their_row_level_security(
    storage: SQLStorage, backend: tuple[str, str]
) -> None:
    """A tool row scopes owned_items by owner; the table's policy (supabase) is by user_id.

    A row bob holds (user_id) that names alice as its owner is alice's by the tool's
    scope: the sql backends export and erase it with hers. On supabase the user's part
    runs as alice under row-level security, so PostgreSQL itself keeps bob's row out.
    """
    spec = TableSpec(
        "owned_items",
        (
            ColumnSpec("id", "integer", primary_key=True),
            ColumnSpec("user_id", "string", nullable=False),
            ColumnSpec("owner", "string", nullable=False),
            ColumnSpec("title", "string", nullable=False),
        ),
    )
    await storage.records.ensure_table(spec)
    await storage.tools.add(
        AGENT,
        "read_owned",
        type="crud",
        config={"table": "owned_items", "operation": "read", "scope": {"user_column": "owner"}},
    )
    async with storage.write() as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO owned_items (user_id, owner, title) VALUES "
                "('alice', 'alice', 'hers'), ('bob', 'alice', 'bob''s')"
            )
        )
    archive = await storage.user_data.export("alice")
    titles = sorted(r["title"] for r in archive.app_tables["owned_items"])
    report = await storage.user_data.erase("alice", requested_by="test")
    async with storage.read() as conn:
        left = (await conn.scalars(sa.text("SELECT title FROM owned_items"))).all()
    if backend[0] == "supabase":
        assert titles == ["hers"] and report.app_tables["owned_items"] == 1
        assert left == ["bob's"]
    else:
        assert titles == ["bob's", "hers"] and report.app_tables["owned_items"] == 2
        assert left == []
