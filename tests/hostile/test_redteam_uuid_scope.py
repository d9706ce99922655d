"""Spellings of another user's UUID as one's own user id, against a crud table keyed by UUID.

A table whose scope column is a ``uuid`` (Supabase's ``auth.users.id``) gets the
caller's user id as a UUID. Python reads ``{…}``, ``urn:uuid:…``, upper case and
unhyphenated text as the same UUID, so a token whose subject is alice's id spelled
another way would have reached her rows, on every backend. Only a user id that is
already the canonical text of its UUID may use such a table.
"""

from __future__ import annotations

import uuid

from chatwright.plugins.example import assistant as example
from chatwright.stores import ColumnSpec, TableSpec
from tests.hostile.conftest import MakeServer, Server, any_text, bearer, say, sql

ALICE = str(uuid.UUID("0f8fad5b-d9cb-469f-a165-70867728950e"))
# Not hex, so no random id in an answer (a turn id, a session id) can contain it.
SECRET = "vault code qwzx"
VAULT = TableSpec(
    "vault",
    (
        ColumnSpec("id", "integer", primary_key=True),
        ColumnSpec("user_id", "uuid", nullable=False),
        ColumnSpec("body", "string", nullable=False),
    ),
)
SPELLINGS = [
    ALICE.upper(),
    f"{{{ALICE}}}",
    f"urn:uuid:{ALICE}",
    ALICE.replace("-", ""),
]


async def vault_of_alice(server: Server) -> None:
    """The vault table, its tools put/peek/wipe, and alice's row in it."""
    storage = server.runtime.storage
    await example.seed(storage, "scripted:x")
    if server.backend.name == "sqlite":
        # Declared "uuid" as tables copied from PostgreSQL are, so the column holds UUIDs.
        await sql(
            server.runtime,
            "CREATE TABLE vault "
            "(id INTEGER PRIMARY KEY, user_id uuid NOT NULL, body TEXT NOT NULL)",
        )
    else:
        await storage.records.ensure_table(VAULT)
    for name, operation, args in [
        ("put", "create", {"body": {"required": True}}),
        ("peek", "read", {}),
        ("wipe", "delete", {}),
    ]:
        config = {"table": "vault", "operation": operation, "args": args}
        if operation == "delete":
            config["filters"] = {"id": {"type": "integer", "required": True}}
        await storage.tools.add(example.AGENT, name, type="crud", config=config)
    said = await say(server, ALICE, [("put", {"body": f"alice's {SECRET}"})])
    assert [c["error"] for c in said["tool_calls"]] == [False], said


async def test_another_spelling_of_alices_uuid_reaches_nothing(make_server: MakeServer) -> None:
    server = await make_server()
    await vault_of_alice(server)
    for spelling in SPELLINGS:
        answer = await say(server, spelling, [("peek", {}), ("wipe", {"id": 1})])
        assert SECRET not in any_text(answer), spelling
        for call in answer["tool_calls"]:
            assert call["error"], (spelling, call)
            assert "canonical" in any_text(call["result"]), (spelling, call)
    rows = await sql(server.runtime, "SELECT body FROM vault")
    assert [r["body"] for r in rows] == [f"alice's {SECRET}"]
    # Alice herself still reads her row.
    mine = await say(server, ALICE, [("peek", {})])
    assert SECRET in any_text(mine["tool_calls"])


async def test_export_and_erasure_by_another_spelling_reach_nothing(
    make_server: MakeServer,
) -> None:
    server = await make_server()
    await vault_of_alice(server)
    for spelling in SPELLINGS:
        who = bearer(spelling)
        got = await server.client.get("/api/me/export", headers=who)
        assert SECRET not in got.text, spelling
        gone = await server.client.delete("/api/me", params={"confirm": spelling}, headers=who)
        assert gone.status_code < 500, (spelling, gone.text)
    rows = await sql(server.runtime, "SELECT body FROM vault")
    assert [r["body"] for r in rows] == [f"alice's {SECRET}"]
    got = await server.client.get("/api/me/export", headers=bearer(ALICE))
    assert SECRET in got.text
