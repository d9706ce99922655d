"""The ``sql`` backend's write-safety stores: pending actions, turns that stop, the audit log.

What the contract suite (``chatwright.testing``) cannot show from inside one
storage: decisions raced from two processes on PostgreSQL, a turn refused
while its chat waits for a decision, and what the database itself allows the
role the Data API (and the ``supabase`` backend's user transactions) act as.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from chatwright.approvals import NewAuditEntry
from chatwright.errors import ApprovalPendingError
from chatwright.plugins.sql.storage import SQLStorage
from chatwright.testing import human, new_pending
from chatwright.turns import turn_store
from tests.harness import admin_connect, libpq, storage_for

ALICE, BOB = "alice", "bob"
AGENT = "helper"


@pytest.fixture
async def storage(sql_url: str) -> AsyncIterator[SQLStorage]:
    storage = storage_for(sql_url)
    await storage.upgrade()
    yield storage
    await storage.close()


async def chat_of(storage: SQLStorage, user: str) -> uuid.UUID:
    if await storage.agents.get(AGENT) is None:
        await storage.agents.create(AGENT, system_prompt="", model="offline:x")
    return (await storage.sessions.open(user, AGENT, chat_id=uuid.uuid4())).chat_id


# -- decisions across processes -------------------------------------------------------


@pytest.mark.postgresql
async def test_of_many_concurrent_decisions_from_two_processes_exactly_one_wins(
    pg_storage: SQLStorage, pg_url: str
) -> None:
    other = storage_for(pg_url)
    try:
        for _ in range(5):
            (action,) = await pg_storage.pending.create(ALICE, AGENT, uuid.uuid4(), [new_pending()])
            racers = [
                store.pending.decide(ALICE, action.id, status, f"{n}")
                for n in range(12)
                for store, status in ((pg_storage, "approved"), (other, "denied"))
            ]
            results = await asyncio.gather(*racers)
            winners = [r for r in results if r is not None]
            assert len(winners) == 1
            stored = await other.pending.get(ALICE, action.id)
            assert stored is not None
            assert (stored.status, stored.decided_by) == (winners[0].status, winners[0].decided_by)
            # Completing is claimed once too.
            if stored.status == "approved":
                done = await asyncio.gather(
                    pg_storage.pending.complete(ALICE, action.id, "done", "a"),
                    other.pending.complete(ALICE, action.id, "failed", "b"),
                )
                assert len([d for d in done if d is not None]) == 1
    finally:
        await other.close()


# -- expiry and users -------------------------------------------------------------------


async def test_expiry_is_kept_as_utc_and_an_expired_action_stays_pending_until_decided(
    storage: SQLStorage,
) -> None:
    soon = datetime.now(UTC) + timedelta(milliseconds=300)
    (action,) = await storage.pending.create(
        ALICE, AGENT, uuid.uuid4(), [new_pending(expires_at=soon)]
    )
    stored = await storage.pending.get(ALICE, action.id)
    assert stored is not None and stored.expires_at.tzinfo is not None
    assert abs((stored.expires_at - soon).total_seconds()) < 0.01
    assert stored.created_at <= datetime.now(UTC) < stored.expires_at
    assert not stored.expired(datetime.now(UTC))
    await asyncio.sleep(0.35)
    (still,) = await storage.pending.list(ALICE)  # the store never decides by itself
    assert still.status == "pending" and still.expired(datetime.now(UTC))
    expired = await storage.pending.decide(ALICE, action.id, "expired", "expiry")
    assert expired is not None and expired.decided_by == "expiry"
    assert expired.decided_at is not None and expired.decided_at >= still.expires_at


async def test_another_users_action_id_finds_nothing_and_changes_nothing(
    storage: SQLStorage,
) -> None:
    (action,) = await storage.pending.create(
        ALICE, AGENT, uuid.uuid4(), [new_pending(preview=True)]
    )
    later = datetime.now(UTC) + timedelta(hours=1)
    assert await storage.pending.get(BOB, action.id) is None
    assert await storage.pending.list(BOB, chat_id=action.chat_id, status=None) == []
    assert await storage.pending.decide(BOB, action.id, "approved", BOB) is None
    await storage.pending.decide(ALICE, action.id, "approved", ALICE)
    assert await storage.pending.reopen(BOB, action.id, None, later) is None
    assert await storage.pending.complete(BOB, action.id, "done", "stolen") is None
    stored = await storage.pending.get(ALICE, action.id)
    assert stored is not None
    assert (stored.status, stored.decided_by, stored.result) == ("approved", ALICE, None)
    assert stored.preview is not None  # bob's reopen did not blank it
    await storage.audit.record(
        NewAuditEntry(user_id=ALICE, agent_name=AGENT, tool_name="t", operation="create")
    )
    assert await storage.audit.list(BOB) == []


# -- a turn that stops at calls, and the chat that waits --------------------------------


async def test_a_stopped_turn_stores_its_calls_and_the_chat_waits_for_a_decision(
    storage: SQLStorage,
) -> None:
    turns = turn_store(storage)
    chat = await chat_of(storage, ALICE)
    start = await turns.begin(ALICE, AGENT, chat, human("delete task 3"))
    assert start.pending == []
    stored = await turns.finish(
        start, [human("calling")], touch=True, pending=[new_pending(preview=True), new_pending()]
    )
    assert [a.status for a in stored] == ["pending", "pending"]
    assert [a.id for a in await storage.pending.list(ALICE, chat_id=chat)] == [a.id for a in stored]
    assert all(a.chat_id == chat and a.agent_name == AGENT for a in stored)

    # A new message is refused, nothing stored, and the chat is given back at once.
    with pytest.raises(ApprovalPendingError) as refused:
        await asyncio.wait_for(turns.begin(ALICE, AGENT, chat, human("and another")), 5)
    assert {a.id for a in refused.value.actions} == {a.id for a in stored}  # type: ignore[attr-defined]
    assert str(stored[0].id) in str(refused.value)
    texts = [m.content["text"] for m in await storage.messages.window(ALICE, chat, 10)]
    assert texts == ["delete task 3", "calling"]

    # A turn resumed without a message gets the actions and stores nothing of its own.
    resumed = await asyncio.wait_for(turns.begin(ALICE, AGENT, chat, None), 5)
    assert [a.id for a in resumed.pending] == [a.id for a in stored]
    assert resumed.pending[0].preview is not None
    assert [m.content["text"] for m in resumed.history] == ["delete task 3", "calling"]
    for action in stored:
        await storage.pending.decide(ALICE, action.id, "denied", ALICE)
    assert await turns.finish(resumed, [human("declined")], touch=False) == []

    start = await asyncio.wait_for(turns.begin(ALICE, AGENT, chat, human("thanks")), 5)
    assert start.pending == []
    await turns.finish(start, [], touch=False)
    # Another chat of the same user never waited.
    other = await chat_of(storage, ALICE)
    start = await asyncio.wait_for(turns.begin(ALICE, AGENT, other, human("hi")), 5)
    await turns.finish(start, [], touch=False)


async def test_another_users_pending_actions_do_not_hold_up_a_chat(storage: SQLStorage) -> None:
    turns = turn_store(storage)
    chat = await chat_of(storage, ALICE)
    # An action of bob's naming alice's chat (a planted row) does not block her.
    await storage.pending.create(BOB, AGENT, chat, [new_pending()])
    start = await asyncio.wait_for(turns.begin(ALICE, AGENT, chat, human("hello")), 5)
    assert start.pending == []
    await turns.finish(start, [], touch=False)


async def test_a_turn_whose_pending_calls_cannot_be_stored_stores_nothing(
    storage: SQLStorage,
) -> None:
    from chatwright.errors import TooLargeError

    turns = turn_store(storage)
    chat = await chat_of(storage, ALICE)
    start = await turns.begin(ALICE, AGENT, chat, human("go"))
    huge = new_pending()
    huge = type(huge)(**{**huge.__dict__, "args": {"blob": "x" * 1_100_000}})
    with pytest.raises(TooLargeError, match="arguments of update_task"):
        await turns.finish(start, [human("reply")], touch=False, pending=[huge])
    texts = [m.content["text"] for m in await storage.messages.window(ALICE, chat, 10)]
    assert texts == ["go"]
    assert await storage.pending.list(ALICE, status=None) == []
    # The lease was given back all the same.
    again = await asyncio.wait_for(turns.begin(ALICE, AGENT, chat, human("again")), 5)
    await turns.finish(again, [], touch=False)


# -- what the database allows the Data API's role (PostgreSQL) ----------------------------


@pytest.fixture
async def logins(pg_storage: SQLStorage, pg_url: str) -> AsyncIterator[dict[str, str]]:
    """Two LOGIN roles: one acting as ``authenticated``, one granted everything on audit_log."""
    tag = uuid.uuid4().hex[:10]
    user, svc = f"cw_ws_user_{tag}", f"cw_ws_svc_{tag}"
    admin = admin_connect()
    admin.execute(f'CREATE ROLE "{user}" LOGIN NOSUPERUSER NOBYPASSRLS IN ROLE authenticated')
    admin.execute(f'CREATE ROLE "{svc}" LOGIN NOSUPERUSER BYPASSRLS')
    try:
        with psycopg.connect(libpq(pg_url), autocommit=True) as db:
            db.execute(f'GRANT ALL ON audit_log, pending_actions TO "{svc}"')
        yield {"user": user, "svc": svc}
    finally:
        with psycopg.connect(libpq(pg_url), autocommit=True) as db:
            for role in (user, svc):
                db.execute(f'REVOKE ALL ON audit_log, pending_actions FROM "{role}"')
        for role in (user, svc):
            admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        admin.close()


async def seed_both(storage: SQLStorage) -> None:
    for user in (ALICE, BOB):
        await storage.pending.create(user, AGENT, uuid.uuid4(), [new_pending()])
        await storage.audit.record(
            NewAuditEntry(user_id=user, agent_name=AGENT, tool_name="t", operation="create")
        )


def login_dsn(url: str, role: str) -> str:
    return libpq(make_url(url).set(username=role, password=None).render_as_string(False))


async def rows(conn: psycopg.AsyncConnection[Any], statement: str) -> list[tuple[Any, ...]]:
    cursor = await conn.execute(statement)
    return await cursor.fetchall()


@pytest.mark.postgresql
async def test_authenticated_reads_and_appends_its_own_audit_rows_and_changes_none(
    pg_storage: SQLStorage, pg_url: str, logins: dict[str, str]
) -> None:
    await seed_both(pg_storage)
    dsn = login_dsn(pg_url, logins["user"])
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute("SET ROLE authenticated")
        claims = json.dumps({"sub": ALICE, "role": "authenticated"})
        await conn.execute("SELECT set_config('request.jwt.claims', %s, false)", (claims,))
        assert await rows(conn, "SELECT DISTINCT user_id FROM audit_log") == [(ALICE,)]
        assert await rows(conn, "SELECT DISTINCT user_id FROM pending_actions") == [(ALICE,)]
        await conn.execute(
            "INSERT INTO audit_log (user_id, agent_name, tool_name, operation, outcome) "
            "VALUES ('alice', 'helper', 'mine', 'create', 'ok')"
        )
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            await conn.execute(
                "INSERT INTO audit_log (user_id, agent_name, tool_name, operation, outcome) "
                "VALUES ('bob', 'helper', 'planted', 'delete', 'ok')"
            )
        for statement in (
            "UPDATE audit_log SET outcome = 'error' WHERE user_id = 'alice'",
            "DELETE FROM audit_log WHERE user_id = 'alice'",
            "TRUNCATE audit_log",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                await conn.execute(statement)
        # Bob's pending actions cannot be reached to decide or remove.
        cursor = await conn.execute(
            "UPDATE pending_actions SET status = 'approved' WHERE user_id = 'bob'"
        )
        assert cursor.rowcount == 0
        cursor = await conn.execute("DELETE FROM pending_actions WHERE user_id = 'bob'")
        assert cursor.rowcount == 0
    async with pg_storage.read() as sql:
        log = (
            await sql.execute(sa.text("SELECT user_id, tool_name, outcome FROM audit_log"))
        ).all()
        pending = (
            await sql.execute(sa.text("SELECT user_id, status FROM pending_actions ORDER BY 1"))
        ).all()
    assert sorted(tuple(r) for r in log) == [
        (ALICE, "mine", "ok"),
        (ALICE, "t", "ok"),
        (BOB, "t", "ok"),
    ]
    assert [tuple(r) for r in pending] == [(ALICE, "pending"), (BOB, "pending")]


@pytest.mark.postgresql
async def test_a_role_granted_everything_still_cannot_rewrite_the_audit_log(
    pg_storage: SQLStorage, pg_url: str, logins: dict[str, str]
) -> None:
    await seed_both(pg_storage)
    dsn = login_dsn(pg_url, logins["svc"])
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        assert len(await rows(conn, "SELECT id FROM audit_log")) == 2  # BYPASSRLS
        for statement in (
            "UPDATE audit_log SET outcome = 'error'",
            "DELETE FROM audit_log",
            "TRUNCATE audit_log",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
                await conn.execute(statement)
        # Its grants on other tables stand: only the audit log is append-only.
        cursor = await conn.execute("UPDATE pending_actions SET status = 'denied'")
        assert cursor.rowcount == 2
    async with pg_storage.read() as sql:
        assert await sql.scalar(sa.text("SELECT count(*) FROM audit_log WHERE outcome = 'ok'")) == 2
