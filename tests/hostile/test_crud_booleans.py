"""A model passing true or false where a ``crud`` tool takes a number.

Pydantic reads a JSON boolean as 1 or 0 for an integer (``bool`` is an
``int`` in Python), so ``update_task {"id": true}`` changed the user's task #1
and ``delete_task {"id": true}`` deleted it; a number argument took true as
1.0, a choice of numbers took it as 1, and the text "nan" was read as NaN (to
be refused only by the record store, once written). Now each is an invalid
argument, named in the tool's result, and nothing is written.
"""

from __future__ import annotations

from typing import Any

from chatwright.plugins.example import assistant as example
from chatwright.tables import ColumnSpec, TableCreator, TableSpec
from tests.hostile.conftest import MakeServer, Server, say, sql

AGENT = example.AGENT
SCORES = TableSpec(
    "scores",
    (
        ColumnSpec("id", "integer", primary_key=True),
        ColumnSpec("user_id", "string", nullable=False),
        ColumnSpec("rank", "integer", nullable=False),
        ColumnSpec("points", "number", nullable=False),
    ),
)
SET_POINTS = {
    "table": "scores",
    "operation": "update",
    "args": {"points": {"type": "number"}},
    "filters": {
        "id": {"type": "integer", "required": True},
        "rank": {"type": "integer", "enum": [1, 2]},
    },
}


async def tasks(server: Server) -> list[dict[str, Any]]:
    return await sql(server.runtime, "SELECT id, user_id, title FROM tasks ORDER BY id")


def refusals(answer: dict[str, Any]) -> list[str]:
    """The result of each tool call, all of them errors."""
    made = answer["tool_calls"]
    assert all(c["error"] for c in made), made
    return [str(c["result"]) for c in made]


async def test_true_and_false_are_not_task_ids(make_server: MakeServer) -> None:
    server = await make_server()
    await example.seed(server.runtime.storage, "scripted:x")
    first = await say(server, "alice", [("add_task", {"title": "one"})])
    second = await say(server, "alice", [("add_task", {"title": "two"})])
    assert [c["error"] for c in first["tool_calls"] + second["tool_calls"]] == [False, False]
    before = await tasks(server)
    # Task #1 (what true would be read as) is alice's.
    assert [(r["id"], r["user_id"]) for r in before] == [(1, "alice"), (2, "alice")]
    answer = await say(
        server,
        "alice",
        [
            ("update_task", {"id": True, "title": "changed through true"}),
            ("update_task", {"id": False, "title": "changed through false"}),
            ("delete_task", {"id": True}),
            ("delete_task", {"id": False}),
            ("list_tasks", {"id": True}),
        ],
    )
    results = refusals(answer)
    for result, word in zip(results, ("true", "false", "true", "false", "true"), strict=True):
        assert result.startswith("Invalid arguments: id: "), result
        assert f"not {word}" in result, result
    assert await tasks(server) == before
    # An id given as a number still works.
    done = await say(server, "alice", [("update_task", {"id": 1, "title": "renamed"})])
    assert [c["error"] for c in done["tool_calls"]] == [False], done
    assert (await tasks(server))[0]["title"] == "renamed"


async def test_numbers_and_numeric_choices_refuse_booleans(make_server: MakeServer) -> None:
    server = await make_server()
    storage = server.runtime.storage
    await example.seed(storage, "scripted:x")
    assert isinstance(storage.records, TableCreator)
    await storage.records.ensure_table(SCORES)
    await storage.tools.add(AGENT, "set_points", type="crud", config=SET_POINTS)
    await sql(
        server.runtime,
        "INSERT INTO scores (id, user_id, rank, points) VALUES (1, 'alice', 1, 5)",
    )
    answer = await say(
        server,
        "alice",
        [
            ("set_points", {"id": 1, "points": True}),
            ("set_points", {"id": 1, "points": "nan"}),
            ("set_points", {"id": 1, "points": "Infinity"}),
            ("set_points", {"id": 1, "rank": True, "points": 9}),
        ],
    )
    results = refusals(answer)
    assert results[0].startswith("Invalid arguments: points: "), results[0]
    assert "not true" in results[0]
    for result in results[1:3]:
        assert result.startswith("Invalid arguments: points: "), result
        assert "finite" in result, result
    assert results[3].startswith("Invalid arguments: rank: "), results[3]
    assert "not true" in results[3]
    (row,) = await sql(server.runtime, "SELECT rank, points FROM scores")
    assert (row["rank"], float(row["points"])) == (1, 5.0)
