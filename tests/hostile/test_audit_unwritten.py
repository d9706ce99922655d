"""A write that wrote nothing is on record as failed, not ``ok``.

The crud tool told the model "not found" for an update or delete that matched
no row of the caller's (the row missing, or another user's), and "nothing
saved" for a create whose values met a row outside the caller's scope, yet the
audit entry its transaction committed said ``outcome: ok`` with no rows: the
log a user or an operator reads said the write was made. The entry now says
``error``, with the words the model got, in the same transaction.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.harness import call_tool as call
from tests.harness import tool_err as err
from tests.harness import tool_ok as ok
from tests.test_crud import backend as backend
from tests.test_crud import db_rows
from tests.test_crud import seeded as seeded
from tests.test_crud import storage as storage
from tests.test_crud import world as world


async def entries(storage: Any, user: str, operation: str) -> list[Any]:
    return [e for e in await storage.audit.list(user) if e.operation == operation]


@pytest.mark.parametrize(
    ("tool", "operation"), [("update_task", "update"), ("delete_task", "delete")]
)
async def test_an_update_or_delete_that_matched_nothing_is_recorded_as_an_error(
    world: dict[str, Any], tool: str, operation: str
) -> None:
    storage, alice, ids = world["storage"], world["alice"], world["ids"]
    change = {"title": "hacked"} if operation == "update" else {}
    before = await db_rows(storage, "tasks")
    for target in (ids["bob"][0], max(ids["alice"] + ids["bob"]) + 1000):
        told = err(await call(alice[tool], id=target, **change))
        assert told == f"not found: no row of 'tasks' matches id={target}"
        entry = (await entries(storage, "alice", operation))[0]
        assert (entry.outcome, entry.error) == ("error", told)
        assert not entry.row_ids and not entry.changes
    assert await db_rows(storage, "tasks") == before
    # A write that was made is still ok, with its row.
    ok(await call(alice[tool], id=ids["alice"][0], **change))
    made = (await entries(storage, "alice", operation))[0]
    assert (made.outcome, made.error) == ("ok", None)
    assert len(made.row_ids) == 1
    assert [e.outcome for e in await entries(storage, "alice", operation)] == [
        "ok",
        "error",
        "error",
    ]


def test_the_words_are_the_tools_whatever_the_filter_holds() -> None:
    """The entry's words are the tool's for a date, a time or bytes in the filter too."""
    import datetime as dt

    from chatwright.approvals import Write, unwritten
    from chatwright.plugins.crud.tool import dumps

    when = dt.datetime(2026, 1, 2, 9, 30)
    where = {"starts_at": when, "blob": b"\x00\x01", "user_id": "alice"}
    write = Write(table="events", operation="delete", where=where, scope={"user_id": "alice"})
    assert unwritten(write) == (
        f"not found: no row of 'events' matches starts_at={dumps(when)}, blob={dumps(b'xy')}"
    )
    assert dumps(when) == '"2026-01-02T09:30:00"'
