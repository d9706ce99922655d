"""A user's data against tool rows that spell a table or column otherwise, and the
erasure records' subject.

SQLite matches table and column names without regard to case, so a crud row on
``OWNED_ITEMS`` that lets the model write ``OWNER`` reaches the very table and
column another row scopes ``owned_items`` by: the scopes treat spellings of one
name as one (the export and erasure through such rows are attacked in
``test_userdata_attacks.py``). A token whose subject is the erasure records'
marker is no one's.
"""

from __future__ import annotations

from typing import Any

from chatwright.plugins.example import assistant as example
from chatwright.stores import ColumnSpec, TableSpec
from chatwright.userdata import ERASED_USER, crud_scopes
from tests.hostile.conftest import MakeServer, bearer, sql

AGENT = example.AGENT
ALICE = bearer("alice")
OWNED = TableSpec(
    "owned_items",
    (
        ColumnSpec("id", "integer", primary_key=True),
        ColumnSpec("owner", "string", nullable=False),
        ColumnSpec("title", "string", nullable=False),
    ),
)


class Row:
    def __init__(self, id: int, config: Any) -> None:
        self.id, self.config, self.type = id, config, "crud"


def test_spellings_of_one_table_and_column_are_one() -> None:
    read = {"table": "owned_items", "operation": "read", "scope": {"user_column": "owner"}}
    cases = [
        {"table": "OWNED_ITEMS", "operation": "create", "args": {"owner": {}}},
        {"table": "owned_items", "operation": "create", "args": {"OWNER": {}}},
        {"table": "Owned_Items", "operation": "update", "args": {"o": {"column": "Owner"}}},
    ]
    for plant in cases:
        found = crud_scopes([Row(1, read), Row(2, {**plant, "scope": {"user_column": None}})])
        assert found.tables == {}, plant
        assert "lets the model write the scope column" in found.skipped["owned_items"], plant
    other = {"table": "OWNED_ITEMS", "operation": "read", "scope": {"user_column": "title"}}
    found = crud_scopes([Row(1, read), Row(2, other)])
    assert found.tables == {} and "different columns" in found.skipped["owned_items"]
    same = {"table": "Owned_Items", "operation": "read", "scope": {"user_column": "OWNER"}}
    found = crud_scopes([Row(1, read), Row(2, same)])
    assert {t: (s.column, s.tool_ids) for t, s in found.tables.items()} == {
        "owned_items": ("owner", (1, 2))
    }


async def test_the_erasure_records_user_id_is_no_one_s_token(make_server: MakeServer) -> None:
    """Erasures are recorded under "(erased user)"; a token with that subject would
    export every erasure record and, erasing "itself", delete them all."""
    server = await make_server()
    await example.seed(server.runtime.storage, "offline:assistant")
    opened = await server.client.post("/api/sessions", json={"agent_name": AGENT}, headers=ALICE)
    assert opened.status_code == 200, opened.text
    erased = await server.client.delete("/api/me", params={"confirm": "alice"}, headers=ALICE)
    assert erased.status_code == 200, erased.text
    records = "SELECT count(*) AS n FROM audit_log WHERE user_id = :u"
    assert (await sql(server.runtime, records, u=ERASED_USER))[0]["n"] == 1
    ghost = bearer(ERASED_USER)
    got = await server.client.get("/api/me/export", headers=ghost)
    assert got.status_code == 401, got.text
    assert "subject" in got.json()["error"]
    gone = await server.client.delete("/api/me", params={"confirm": ERASED_USER}, headers=ghost)
    assert gone.status_code == 401, gone.text
    assert (await sql(server.runtime, records, u=ERASED_USER))[0]["n"] == 1
