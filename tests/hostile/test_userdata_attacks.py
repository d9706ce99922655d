"""Attacks on a user's data endpoints and commands: export, erasure, deleting a chat.

Another user's chat id must be refused exactly as an unknown one and leave it
whole; malformed ids and parameters get a JSON 4xx, never a 500; an erasure
needs the caller's own id as confirmation; erasing a user with nothing is a
plain zero; a running turn holds off erasure but not export; a CRUD config
whose scope column another tool row lets the model write is never trusted to
say whose a row is; and an archive larger than the server's bound is refused
with a 413 that says how to get it, while the CLI writes it whole.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from chatwright.plugins.example import assistant as example
from chatwright.stores import ColumnSpec, TableSpec
from chatwright.userdata import ERASED_USER, crud_scopes
from tests.harness import assert_error, ok, run
from tests.hostile.conftest import MakeServer, Server, bearer, sql

AGENT = example.AGENT
ALICE, BOB = bearer("alice"), bearer("bob")


def error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    message: str = response.json()["error"]
    assert message
    return message


async def two_users(server: Server) -> dict[str, str]:
    """alice and bob each with a chat holding a note and a memory."""
    await example.seed(server.runtime.storage, "offline:assistant")
    chats = {}
    for user, headers in (("alice", ALICE), ("bob", BOB)):
        opened = await server.client.post(
            "/api/sessions", json={"agent_name": AGENT}, headers=headers
        )
        chat_id = opened.json()["chat_id"]
        for message in (f"add a note: {user} was here", f"remember that {user} likes tea"):
            said = await server.client.post(
                "/api/chat",
                json={"agent_name": AGENT, "chat_id": chat_id, "message": message},
                headers=headers,
            )
            assert said.status_code == 200, said.text
        chats[user] = chat_id
    return chats


async def archive(server: Server, headers: dict[str, str]) -> dict[str, Any]:
    got = await server.client.get("/api/me/export", headers=headers)
    assert got.status_code == 200, got.text
    data: dict[str, Any] = got.json()
    data.pop("exported_at")
    return data


async def test_another_users_chat_is_refused_as_an_unknown_one(make_server: MakeServer) -> None:
    server = await make_server()
    chats = await two_users(server)
    bobs = await archive(server, BOB)
    theirs = await server.client.delete(f"/api/chats/{chats['bob']}", headers=ALICE)
    unused = str(uuid.uuid4())
    unknown = await server.client.delete(f"/api/chats/{unused}", headers=ALICE)
    assert theirs.status_code == unknown.status_code == 404
    assert theirs.text.replace(chats["bob"], "<id>") == unknown.text.replace(unused, "<id>")
    assert await archive(server, BOB) == bobs
    # Without a token nothing at all.
    assert (await server.client.delete(f"/api/chats/{chats['bob']}")).status_code == 401
    assert (await server.client.get("/api/me/export")).status_code == 401
    assert (await server.client.delete("/api/me", params={"confirm": "bob"})).status_code == 401


async def test_malformed_ids_and_parameters_are_4xx_json(make_server: MakeServer) -> None:
    server = await make_server()
    await two_users(server)
    for bad in ("not-a-uuid", "1", "%00", "' OR 1=1 --", "x" * 5000):
        response = await server.client.delete(f"/api/chats/{bad}", headers=ALICE)
        assert response.status_code in {404, 422}, (bad, response.status_code)
        assert response.headers["content-type"].startswith("application/json")
    long = await server.client.delete("/api/me", params={"confirm": "a" * 300}, headers=ALICE)
    assert "confirm" in error(long, 422)
    assert (await archive(server, ALICE))["tables"]["chat_messages"]


async def test_erasing_needs_the_callers_own_id_as_confirmation(make_server: MakeServer) -> None:
    server = await make_server()
    await two_users(server)
    before = {"alice": await archive(server, ALICE), "bob": await archive(server, BOB)}
    bare = await server.client.delete("/api/me", headers=ALICE)
    assert "?confirm=" in error(bare, 422)
    # Another user's id (bob's) erases neither of them.
    wrong = await server.client.delete("/api/me", params={"confirm": "bob"}, headers=ALICE)
    assert "nothing was erased" in error(wrong, 422)
    empty = await server.client.delete("/api/me", params={"confirm": ""}, headers=ALICE)
    error(empty, 422)
    assert {"alice": await archive(server, ALICE), "bob": await archive(server, BOB)} == before


async def test_erasing_a_user_with_nothing_is_a_zero(make_server: MakeServer) -> None:
    server = await make_server()
    await two_users(server)
    bobs = await archive(server, BOB)
    nobody = bearer("nobody")
    erased = await server.client.delete("/api/me", params={"confirm": "nobody"}, headers=nobody)
    assert erased.status_code == 200, erased.text
    assert erased.json()["total"] == 0
    assert await archive(server, BOB) == bobs
    # Nothing erased, nothing recorded.
    recorded = await sql(
        server.runtime, "SELECT count(*) AS n FROM audit_log WHERE user_id = :u", u=ERASED_USER
    )
    assert recorded[0]["n"] == 0


async def test_a_running_turn_holds_off_erasure_but_not_export(make_server: MakeServer) -> None:
    server = await make_server()
    chats = await two_users(server)
    chat = uuid.UUID(chats["alice"])
    async with server.runtime.storage.chat_lock(chat):
        exported = await archive(server, ALICE)
        assert len(exported["tables"]["chat_messages"]) >= 4
        busy = await server.client.delete("/api/me", params={"confirm": "alice"}, headers=ALICE)
        assert "running" in error(busy, 409)
        one = await server.client.delete(f"/api/chats/{chat}", headers=ALICE)
        error(one, 409)
        # Bob's chat is not held up by alice's turn.
        bobs = await server.client.delete(f"/api/chats/{chats['bob']}", headers=BOB)
        assert bobs.status_code == 200, bobs.text
    assert await archive(server, ALICE) == exported
    done = await server.client.delete("/api/me", params={"confirm": "alice"}, headers=ALICE)
    assert done.status_code == 200, done.text
    report = done.json()
    left = await sql(server.runtime, "SELECT count(*) AS n FROM audit_log WHERE user_id = 'alice'")
    if "audit_log" in report["skipped"]:
        # Connected as a role that is not the audit log's owner: its trigger refuses.
        assert "owner" in report["skipped"]["audit_log"]
        assert left[0]["n"] == len(exported["tables"]["audit_log"]) > 0
    else:
        assert report["tables"]["audit_log"] == len(exported["tables"]["audit_log"]) > 0
        assert left[0]["n"] == 0


OWNED = TableSpec(
    "owned_items",
    (
        ColumnSpec("id", "integer", primary_key=True),
        ColumnSpec("owner", "string", nullable=False),
        ColumnSpec("title", "string", nullable=False),
    ),
)


@pytest.mark.parametrize("planted", ["owned_items", "OWNED_ITEMS"])
async def test_a_scope_column_the_model_can_write_is_not_trusted(
    make_server: MakeServer, planted: str
) -> None:
    """One row scopes owned_items by owner; another lets the model set owner to anyone.

    Bob could then plant rows with owner 'alice': an erasure of alice by that column
    would delete bob's rows, and her export would hand them to her. The table is left
    alone and reported instead, also when the planting row spells the table otherwise
    (SQLite's names ignore case: OWNED_ITEMS is owned_items).
    """
    server = await make_server()
    await two_users(server)
    storage = server.runtime.storage
    await storage.records.ensure_table(OWNED)
    await storage.tools.add(
        AGENT,
        "read_owned",
        type="crud",
        config={"table": "owned_items", "operation": "read", "scope": {"user_column": "owner"}},
    )
    await storage.tools.add(
        AGENT,
        "plant_owned",
        type="crud",
        is_active=False,  # inactive rows count too: they can be switched on
        config={
            "table": planted,
            "operation": "create",
            "args": {"title": {}, "owner": {}},
            "scope": {"user_column": None},
        },
    )
    await sql(
        server.runtime,
        "INSERT INTO owned_items (owner, title) VALUES ('alice', 'planted by bob')",
    )
    data = await archive(server, ALICE)
    assert "owned_items" not in data["app_tables"]
    assert "lets the model write the scope column 'owner'" in data["skipped"]["owned_items"]
    assert "planted by bob" not in json.dumps(data)
    erased = await server.client.delete("/api/me", params={"confirm": "alice"}, headers=ALICE)
    assert erased.status_code == 200, erased.text
    assert "owned_items" in erased.json()["skipped"]
    left = await sql(server.runtime, "SELECT title FROM owned_items")
    assert [r["title"] for r in left] == ["planted by bob"]


def test_scopes_of_every_config_shape() -> None:
    """crud_scopes reads both tool shapes and refuses ambiguous scopes."""

    class Row:
        def __init__(self, id: int, config: Any, type: str = "crud") -> None:
            self.id, self.config, self.type = id, config, type

    legacy = {"table_name": "things", "method": "fetch", "field_map": {"t": "title"}}
    found = crud_scopes(
        [
            Row(1, legacy),
            Row(2, {"table": "a", "operation": "read", "scope": {"user_column": "u1"}}),
            Row(3, {"table": "a", "operation": "read", "scope": {"user_column": "u2"}}),
            Row(4, {"table": "chat_messages", "operation": "read"}),
            Row(5, {"table": "open", "operation": "read", "scope": {"user_column": None}}),
            Row(6, "not a mapping"),
            Row(7, {"table": "x", "operation": "read"}, type="http"),
            Row(8, {"table": "legacy_owned", "method": "create"}),
        ]
    )
    assert {t: s.column for t, s in found.tables.items()} == {
        "things": "user_id",
        "legacy_owned": "user_id",
    }
    assert "different columns" in found.skipped["a"]
    assert set(found.skipped) == {"a"}


async def test_an_archive_over_the_bound_is_413_and_the_cli_writes_it_whole(
    make_server: MakeServer, tmp_path: Path, monkeypatch: Any
) -> None:
    server = await make_server(server={"max_export_rows": 5})
    await two_users(server)
    refused = await server.client.get("/api/me/export", headers=ALICE)
    message = error(refused, 413)
    assert "server.max_export_rows" in message and "chatwright users export" in message
    for key, value in server.backend.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("CHATWRIGHT_STORAGE__BACKEND", server.backend.storage["backend"])
    out = tmp_path / "alice.json"
    # The command runs its own event loop: in a thread, beside the server's.
    await asyncio.to_thread(ok, "users", "export", "alice", "--output", str(out))
    whole = json.loads(out.read_text())
    rows = sum(len(r) for r in whole["tables"].values())
    assert rows > 5 and len(whole["app_tables"]["notes"]["rows"]) == 1


def test_cli_refuses_bad_users_and_outputs(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    ok("init", "--example")
    assert_error(run("users", "erase", "a\x00b", "--yes"), "USER", "control character")
    assert_error(run("users", "export", " "), "USER", "empty")
    assert_error(run("users", "export", "x" * 300), "USER", "255")
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert_error(
        run("users", "export", "local", "--output", str(blocker / "a.json")), "cannot write"
    )
    directory = run("users", "export", "local", "--output", str(tmp_path))
    assert directory.exit_code == 2 and "Traceback" not in directory.output
    nothing = run("users", "erase", "local")  # no answer to the question
    assert nothing.exit_code == 1 and "nothing erased" in nothing.stderr


async def test_export_during_a_real_turn_is_a_snapshot_and_erasure_waits(
    make_server: MakeServer,
) -> None:
    """A turn whose model takes a while: the export meanwhile has what the turn committed
    (its first transaction stores the message, the last the answer), the erasure is
    refused until the turn ends, and then erases what it wrote."""
    server = await make_server()
    await two_users(server)
    storage = server.runtime.storage
    slow = {"responses": [{"content": "slow answer", "sleep": 1.5}]}
    await storage.agents.create(
        "slowpoke", system_prompt="p", model="scripted:x", model_settings=slow
    )
    opened = await server.client.post(
        "/api/sessions", json={"agent_name": "slowpoke"}, headers=ALICE
    )
    chat_id = opened.json()["chat_id"]
    before = len((await archive(server, ALICE))["tables"]["chat_messages"])
    turn = asyncio.create_task(
        server.client.post(
            "/api/chat",
            json={"agent_name": "slowpoke", "chat_id": chat_id, "message": "take your time"},
            headers=ALICE,
        )
    )
    for _ in range(200):  # until the turn holds its chat
        if await sql(server.runtime, "SELECT 1 AS held FROM chat_leases"):
            break
        await asyncio.sleep(0.02)
    during = await archive(server, ALICE)
    texts = json.dumps(during["tables"]["chat_messages"])
    assert "take your time" in texts and "slow answer" not in texts
    busy = await server.client.delete("/api/me", params={"confirm": "alice"}, headers=ALICE)
    assert "running" in error(busy, 409)
    answered = await turn
    assert answered.status_code == 200, answered.text
    after = await archive(server, ALICE)
    assert len(after["tables"]["chat_messages"]) == before + 2
    erased = await server.client.delete("/api/me", params={"confirm": "alice"}, headers=ALICE)
    assert erased.json()["tables"]["chat_messages"] == before + 2
