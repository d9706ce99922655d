"""The write-safety stores under hostile input: malformed and foreign ids, oversized
arguments, out-of-range numbers, planted rows.

These are the stores the server, the CLI and the runtime hand ids and
arguments to; whatever a caller forgot to check, the answer is a clear error
naming the value (or "not found"), never a driver exception, and nothing is
stored or changed. Every backend of the suite (the ``supabase`` one with
row-level security under every user statement).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from chatwright.approvals import NewAuditEntry
from chatwright.errors import InvalidInputError, NotFoundError, TooLargeError
from chatwright.runtime import Runtime
from chatwright.testing import new_pending
from tests.hostile.conftest import MakeRuntime, sql

AGENT = "helper"
MALFORMED_IDS: list[Any] = [
    "not-a-uuid",
    "",
    "' OR 1=1 --",
    "0" * 10_000,
    "00000000-0000-0000-0000-00000000000g",
    12,
    b"\x00" * 16,
]


async def users_data(runtime: Runtime) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    pending = await sql(runtime, "SELECT id, user_id, status FROM pending_actions ORDER BY id")
    audit = await sql(runtime, "SELECT id, user_id, outcome FROM audit_log ORDER BY id")
    return pending, audit


async def seeded(make_runtime: MakeRuntime) -> tuple[Runtime, uuid.UUID]:
    runtime = await make_runtime()
    (action,) = await runtime.storage.pending.create(
        "alice", AGENT, uuid.uuid4(), [new_pending(preview=True)]
    )
    await runtime.storage.audit.record(
        NewAuditEntry(user_id="alice", agent_name=AGENT, tool_name="t", operation="create")
    )
    return runtime, action.id


@pytest.mark.parametrize("bad", MALFORMED_IDS, ids=lambda v: repr(v)[:20])
async def test_malformed_action_ids_are_refused_by_name(
    make_runtime: MakeRuntime, bad: Any
) -> None:
    runtime, _ = await seeded(make_runtime)
    before = await users_data(runtime)
    pending = runtime.storage.pending
    later = datetime.now(UTC) + timedelta(hours=1)
    attempts: list[Callable[[], Awaitable[Any]]] = [
        lambda: pending.get("bob", bad),
        lambda: pending.get(None, bad),
        lambda: pending.decide("bob", bad, "approved", "bob"),
        lambda: pending.reopen("bob", bad, None, later),
        lambda: pending.complete("bob", bad, "done", "x"),
        lambda: pending.list("bob", chat_id=bad),
        lambda: runtime.storage.audit.list("bob", chat_id=bad),
        lambda: runtime.storage.audit.list("bob", turn_id=bad),
    ]
    for attempt in attempts:
        with pytest.raises(InvalidInputError, match="is not an id"):
            await attempt()
    assert await users_data(runtime) == before


async def test_another_users_action_id_is_not_found_and_not_decided(
    make_runtime: MakeRuntime,
) -> None:
    runtime, action_id = await seeded(make_runtime)
    before = await users_data(runtime)
    pending = runtime.storage.pending
    assert await pending.get("bob", action_id) is None
    assert await pending.get("bob", str(action_id)) is None  # as text, the same
    assert await pending.decide("bob", action_id, "approved", "bob") is None
    assert await pending.list("bob", status=None) == []
    assert await runtime.storage.audit.list("bob") == []
    assert await users_data(runtime) == before


async def test_oversized_arguments_are_refused_and_nothing_is_stored(
    make_runtime: MakeRuntime,
) -> None:
    runtime = await make_runtime()
    chat = uuid.uuid4()
    fine = new_pending()
    huge = type(fine)(**{**fine.__dict__, "args": {"title": "x" * 2_000_000}})
    wide = type(fine)(**{**fine.__dict__, "args": {f"k{i}": i for i in range(200_000)}})
    for action in (huge, wide):
        with pytest.raises(TooLargeError, match="arguments of update_task"):
            # One too large among fine ones: none of them is stored.
            await runtime.storage.pending.create("alice", AGENT, chat, [fine, action])
    assert await runtime.storage.pending.list(None, status=None) == []


async def test_odd_argument_values_are_stored_as_plain_json(make_runtime: MakeRuntime) -> None:
    runtime = await make_runtime()
    fine = new_pending()
    odd = type(fine)(
        **{
            **fine.__dict__,
            "args": {
                "nul": "a\x00b",
                "nan": float("nan"),
                "when": datetime(2026, 1, 2, tzinfo=UTC),
            },
        }
    )
    (stored,) = await runtime.storage.pending.create("alice", AGENT, uuid.uuid4(), [odd])
    fetched = await runtime.storage.pending.get("alice", stored.id)
    assert fetched is not None and fetched.args == stored.args
    assert "\x00" not in fetched.args["nul"]
    assert isinstance(fetched.args["nan"], str) and isinstance(fetched.args["when"], str)


@pytest.mark.parametrize("limit", [0, -1, 10**12, True, "10"])
async def test_page_sizes_out_of_range_are_refused_by_name(
    make_runtime: MakeRuntime, limit: Any
) -> None:
    runtime = await make_runtime()
    with pytest.raises(InvalidInputError, match="limit"):
        await runtime.storage.pending.list("alice", limit=limit)
    with pytest.raises(InvalidInputError, match="limit"):
        await runtime.storage.audit.list("alice", limit=limit)


@pytest.mark.parametrize("before_id", [0, -5, 2**64, 10**30, "1; DROP TABLE audit_log", 1.5])
async def test_audit_pages_refuse_impossible_entry_ids(
    make_runtime: MakeRuntime, before_id: Any
) -> None:
    runtime, _ = await seeded(make_runtime)
    with pytest.raises(InvalidInputError, match="before_id"):
        await runtime.storage.audit.list("alice", before_id=before_id)
    assert len(await runtime.storage.audit.list("alice")) == 1


async def test_audit_since_must_be_a_time_with_a_zone(make_runtime: MakeRuntime) -> None:
    runtime = await make_runtime()
    for since in (datetime(2026, 1, 1), "yesterday"):
        with pytest.raises(InvalidInputError, match="time zone"):
            await runtime.storage.audit.list("alice", since=since)  # type: ignore[arg-type]


@pytest.mark.parametrize("status", ["pending' OR '1'='1", "PENDING", "done ", "x" * 5000])
async def test_status_words_outside_the_list_are_refused(
    make_runtime: MakeRuntime, status: str
) -> None:
    runtime, action_id = await seeded(make_runtime)
    with pytest.raises(InvalidInputError):
        await runtime.storage.pending.list("alice", status=status)
    with pytest.raises(InvalidInputError):
        await runtime.storage.pending.decide("alice", action_id, status, "alice")
    stored = await runtime.storage.pending.get("alice", action_id)
    assert stored is not None and stored.status == "pending"


@pytest.mark.parametrize("tool_id", [0, -1, 2**31, 2**63, 10**40, True, "1", 1.0])
async def test_approval_choices_for_impossible_tool_rows_are_not_found(
    make_runtime: MakeRuntime, tool_id: Any
) -> None:
    runtime = await make_runtime()
    with pytest.raises(NotFoundError, match="no tool row"):
        await runtime.storage.pending.choose("alice", tool_id, "auto")
    assert await sql(runtime, "SELECT * FROM tool_approval_choices") == []


async def test_planted_rows_with_broken_json_read_as_empty_not_as_a_crash(
    make_runtime: MakeRuntime,
) -> None:
    runtime, action_id = await seeded(make_runtime)
    # A preview that is JSON but not a preview, and arguments that are not an object.
    await sql(
        runtime,
        "UPDATE pending_actions SET preview = :p, args = :a",
        p='{"rows": "everything"}',
        a="[1, 2, 3]",
    )
    stored = await runtime.storage.pending.get("alice", action_id)
    assert stored is not None
    assert (stored.preview, dict(stored.args)) == (None, {})
    # The audit log takes no UPDATE (on PostgreSQL not even from this role): a planted row.
    await sql(
        runtime,
        "INSERT INTO audit_log (user_id, agent_name, tool_name, operation, outcome, args, "
        "row_ids, changes) VALUES ('alice', 'helper', 'planted', 'update', 'ok', :a, :r, :c)",
        a='"text"',
        r='{"not": "a list"}',
        c='{"x": 1}',
    )
    planted, _ = await runtime.storage.audit.list("alice")
    assert planted.tool_name == "planted"
    assert (dict(planted.args), list(planted.row_ids), planted.changes) == ({}, [], ())
