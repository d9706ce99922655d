"""A turn that outlived its chat's lease must store nothing once the chat was taken over.

A lease is renewed while its turn runs; a process whose event loop stalls (or
whose database was away) stops renewing, and after ``storage.turn_lease`` the
chat may be taken over: by another turn, by the user's erasure, by the chat's
deletion. The late turn then stored its messages, usage and totals all the
same: an erasure that had gone through was undone in part (the erased user's
words back in a chat of no session). Now its end (and a tool exchange it
records) finds the lease gone and stores nothing; the caller gets 409.

The lease's expiry is made by moving ``expires_at`` into the past, as renewals
that failed would leave it. SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest

from chatwright.errors import ChatBusyError
from chatwright.plugins.example import assistant as example
from chatwright.plugins.sql import schema
from chatwright.runtime import Runtime
from tests.conftest import MakeRuntime
from tests.harness import EchoModels

EXPIRED = datetime(2000, 1, 1, tzinfo=UTC)


async def expire_lease(runtime: Runtime, chat: uuid.UUID) -> None:
    leases = schema.chat_leases
    async with runtime.storage.write() as conn:  # type: ignore[attr-defined]
        moved = await conn.execute(
            leases.update().where(leases.c.chat_id == chat).values(expires_at=EXPIRED)
        )
    assert moved.rowcount == 1


async def test_a_turn_ending_after_its_user_was_erased_stores_nothing(
    runtimes: MakeRuntime,
) -> None:
    serving = await runtimes(EchoModels())  # the process running the turn
    admin = await runtimes(EchoModels())  # another one, erasing the user
    await serving.storage.agents.create(
        "a", system_prompt="You help.", model="echo:x", model_settings={"delay": 2.0}
    )
    user = f"alice-{uuid.uuid4().hex[:6]}"
    chat = (await serving.storage.sessions.open(user, "a", chat_id=uuid.uuid4())).chat_id
    turn = asyncio.ensure_future(serving.chat(user, "a", chat, "my secret, forget me"))
    await asyncio.sleep(0.7)  # the model is thinking
    await expire_lease(admin, chat)
    report = await admin.storage.user_data.erase(user, requested_by="test")
    assert report.tables["chat_messages"] >= 1
    with pytest.raises(ChatBusyError, match="lost the chat's turn") as lost:
        await turn
    assert lost.value.http_status == 409
    after = await admin.storage.user_data.export(user)
    assert {k: len(v) for k, v in after.tables.items() if v} == {}


async def test_a_turn_ending_after_its_chat_was_deleted_stores_nothing(
    runtimes: MakeRuntime,
) -> None:
    serving = await runtimes(EchoModels())
    other = await runtimes(EchoModels())
    await serving.storage.agents.create(
        "a", system_prompt="You help.", model="echo:x", model_settings={"delay": 2.0}
    )
    user = f"bob-{uuid.uuid4().hex[:6]}"
    chat = (await serving.storage.sessions.open(user, "a", chat_id=uuid.uuid4())).chat_id
    turn = asyncio.ensure_future(serving.chat(user, "a", chat, "delete this chat"))
    await asyncio.sleep(0.7)
    await expire_lease(other, chat)
    await other.storage.user_data.delete_chat(user, chat)
    with pytest.raises(ChatBusyError, match="lost the chat's turn"):
        await turn
    listed = await other.storage.messages.chats(user, limit=10)
    assert [c for c in listed if c.chat_id == chat] == []


async def test_a_tool_exchange_recorded_after_the_chat_was_taken_over_is_not_stored(
    runtimes: MakeRuntime,
) -> None:
    """The model's reply calling a tool comes after the lease was lost and another turn
    took the chat: its exchange is not recorded into that turn's chat."""
    runtime = await runtimes()
    storage = runtime.storage
    await example.seed(storage, "scripted:x")
    call = {"tool_calls": [{"name": "add_task", "args": {"title": "late"}}], "sleep": 2.0}
    await storage.agents.update(
        example.AGENT, model_settings={"responses": [call, {"content": "done"}]}
    )
    user = f"carol-{uuid.uuid4().hex[:6]}"
    chat = (await storage.sessions.open(user, example.AGENT, chat_id=uuid.uuid4())).chat_id
    turn = asyncio.ensure_future(runtime.chat(user, example.AGENT, chat, "add it"))
    await asyncio.sleep(0.7)
    await expire_lease(runtime, chat)
    leases = schema.chat_leases
    async with storage.write() as conn:  # type: ignore[attr-defined]
        # Another process's turn takes the expired lease over.
        await conn.execute(
            leases.update().where(leases.c.chat_id == chat).values(holder="another process")
        )
    with pytest.raises(ChatBusyError, match="lost the chat's turn"):
        await turn
    stored = await storage.messages.page(user, chat, limit=10)
    assert [m.role for m in stored] == ["human"]
    # Nor was the tool's write made: no row, no audit entry, while another turn holds the chat.
    assert await tasks_of(runtime, user) == []
    assert await storage.audit.list(user, limit=10) == []


async def tasks_of(runtime: Runtime, user: str) -> list[str]:
    rows = await runtime.storage.records.select(
        user, "tasks", {"user_id": user}, columns=["title"], order_by=(), limit=100
    )
    return [str(r["title"]) for r in rows]


async def test_a_tool_write_after_its_user_was_erased_is_not_made(runtimes: MakeRuntime) -> None:
    """A turn stalls between two tool calls, past its lease; the user is erased meanwhile
    (by another process). The second call's write is refused: nothing of the user comes
    back after the erasure answered."""
    serving = await runtimes()
    admin = await runtimes()
    storage = serving.storage
    await example.seed(storage, "scripted:x")
    first = {"tool_calls": [{"name": "add_task", "args": {"title": "before"}}]}
    second = {"tool_calls": [{"name": "add_task", "args": {"title": "after"}}], "sleep": 2.0}
    await storage.agents.update(
        example.AGENT, model_settings={"responses": [first, second, {"content": "done"}]}
    )
    user = f"dana-{uuid.uuid4().hex[:6]}"
    chat = (await storage.sessions.open(user, example.AGENT, chat_id=uuid.uuid4())).chat_id
    turn = asyncio.ensure_future(serving.chat(user, example.AGENT, chat, "add two"))
    for _ in range(100):  # until the first write is made and the model thinks again
        await asyncio.sleep(0.05)
        if await tasks_of(admin, user) == ["before"]:
            break
    assert await tasks_of(admin, user) == ["before"]
    await expire_lease(admin, chat)
    report = await admin.storage.user_data.erase(user, requested_by="test")
    assert report.app_tables["tasks"] == 1
    with pytest.raises(ChatBusyError, match="lost the chat's turn") as lost:
        await turn
    assert lost.value.http_status == 409
    after = await admin.storage.user_data.export(user)
    assert {k: len(v) for k, v in after.tables.items() if v} == {}
    assert await tasks_of(admin, user) == []


async def test_an_audit_entry_a_tool_records_after_the_chat_was_taken_over_is_refused(
    runtimes: MakeRuntime,
) -> None:
    """A tool writing elsewhere records its write with ``record_write`` (the audit
    store): a turn that lost its chat records nothing more, so an erased user's
    entries do not come back; while the turn holds the chat it records as before."""
    from chatwright.approvals import NewAuditEntry
    from chatwright.turns import holding_turn

    runtime = await runtimes(EchoModels())
    storage = runtime.storage
    await storage.agents.create("a", system_prompt="", model="echo:x")
    user = f"erin-{uuid.uuid4().hex[:6]}"
    chat = (await storage.sessions.open(user, "a", chat_id=uuid.uuid4())).chat_id
    start = await runtime.turns.begin(user, "a", chat, None)
    entry = NewAuditEntry(
        user_id=user, agent_name="a", tool_name="post_order", operation="create", chat_id=chat
    )
    token = holding_turn.set(start)
    try:
        assert (await storage.audit.record(entry)).tool_name == "post_order"
        leases = schema.chat_leases
        async with storage.write() as conn:  # type: ignore[attr-defined]
            await conn.execute(
                leases.update().where(leases.c.chat_id == chat).values(holder="another process")
            )
        with pytest.raises(ChatBusyError, match="lost the chat's turn"):
            await storage.audit.record(entry)
    finally:
        holding_turn.reset(token)
    assert len(await storage.audit.list(user, limit=10)) == 1
    # Outside the turn (an admin, the CLI), recording is not the turn's to refuse.
    assert (await storage.audit.record(entry)).tool_name == "post_order"


async def test_a_lease_that_expired_unnoticed_but_was_not_taken_still_lets_the_turn_write(
    runtimes: MakeRuntime,
) -> None:
    """The check is the turn's own end's: the lease must be the turn's, expired or not.
    A lease that expired while nobody wanted the chat (a loop that stalled, renewals
    late) lets the turn's tool write, as its end then stores the turn."""
    from chatwright.approvals import NewAuditEntry
    from chatwright.turns import holding_turn

    runtime = await runtimes(EchoModels())
    storage = runtime.storage
    await storage.agents.create("a", system_prompt="", model="echo:x")
    user = f"fay-{uuid.uuid4().hex[:6]}"
    chat = (await storage.sessions.open(user, "a", chat_id=uuid.uuid4())).chat_id
    start = await runtime.turns.begin(user, "a", chat, None)
    await expire_lease(runtime, chat)
    entry = NewAuditEntry(
        user_id=user, agent_name="a", tool_name="post_order", operation="create", chat_id=chat
    )
    token = holding_turn.set(start)
    try:
        assert (await storage.audit.record(entry)).tool_name == "post_order"
    finally:
        holding_turn.reset(token)
    await runtime.turns.finish(start, [], touch=False)
