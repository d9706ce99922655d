"""The idle-session sweeper at scale: batches, several sweepers at once, the hook, yielding.

The store side of batching (``SessionStore.sweep(..., limit=)``) is in the
contract suite (:mod:`chatwright.testing`); here is the pass that drives it,
:func:`chatwright.sessions.sweep`, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from chatwright import hookimpl
from chatwright.plugins.sql import schema
from chatwright.plugins.sql.storage import SQLStorage
from chatwright.registry import LoadPolicy, Plugins
from chatwright.runtime import Runtime
from chatwright.sessions import HOOKED_BATCH, HOOKS_BETWEEN_YIELDS, sweep
from chatwright.stores import ChatSession
from chatwright.testing import settings
from tests.harness import Recorder, pg_storage_settings

AGENT = "assistant"
LATER = timedelta(hours=1)  # a pass "an hour from now" finds every session idle


async def idle_sessions(storage: Any, count: int, prefix: str = "user") -> set[uuid.UUID]:
    """``count`` sessions, one per user, opened through the store (all active)."""
    return {(await storage.sessions.open(f"{prefix}-{i}", AGENT)).id for i in range(count)}


async def bulk_sessions(storage: SQLStorage, count: int) -> set[uuid.UUID]:
    """``count`` active sessions inserted in one statement (PostgreSQL)."""
    async with storage.write() as conn:
        rows = await conn.execute(
            sa.text(
                "WITH s AS (INSERT INTO chat_sessions (id, chat_id, user_id, agent_name, "
                "created_at, updated_at, metadata) "
                "SELECT gen_random_uuid(), gen_random_uuid(), 'bulk-' || g, :agent, "
                "now(), now(), '{}' FROM generate_series(1, :n) AS g "
                "RETURNING id, user_id, agent_name, updated_at) "
                "INSERT INTO active_sessions (session_id, user_id, agent_name, updated_at) "
                "SELECT * FROM s RETURNING session_id"
            ),
            {"agent": AGENT, "n": count},
        )
        return {r[0] for r in rows}


async def started(url: str, batch: int, *, recorder: Recorder | None = None) -> Runtime:
    plugins = Plugins.load(LoadPolicy())
    if recorder is not None:
        plugins.register(recorder, "recorder")
    # Through the run's PgBouncer, when it has one.
    cfg = settings(plugins, storage=pg_storage_settings(url), sessions={"sweep_batch": batch})
    return await Runtime(cfg, plugins).start(upgrade=True)


async def test_a_pass_deactivates_more_sessions_than_a_batch_and_fires_each_hook_once(
    sql_url: str,
) -> None:
    recorder = Recorder()
    runtime = await started(sql_url, 7, recorder=recorder)
    try:
        opened = await idle_sessions(runtime.storage, 30)
        report = await sweep(runtime, datetime.now(UTC) + LATER, keep_ids=True)
        assert report.deactivated == 30
        assert report.batches == 5  # 7 + 7 + 7 + 7 + 2
        assert report.ids is not None and sorted(report.ids) == sorted(opened)
        assert sorted(s.id for s, _ in recorder.deactivated) == sorted(opened)
        assert {reason for _, reason in recorder.deactivated} == {"idle"}
        assert not any(s.is_active for s, _ in recorder.deactivated)
        assert await runtime.storage.sessions.count_active() == 0
        assert report.active_keys == 0
        again = await sweep(runtime, datetime.now(UTC) + LATER)
        assert (again.deactivated, again.batches, again.ids) == (0, 1, None)
        assert len(recorder.deactivated) == 30
    finally:
        await runtime.close()


async def test_a_pass_with_the_hook_takes_at_most_hooked_batch_sessions_a_step(
    sql_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fetching and reporting each session costs the event loop: with a
    ``session_deactivated`` plugin a step takes HOOKED_BATCH sessions at most, whatever
    sessions.sweep_batch says; without one, sweep_batch. (HOOKED_BATCH made small here,
    to open few sessions.)"""
    assert HOOKED_BATCH == 1000
    monkeypatch.setattr("chatwright.sessions.HOOKED_BATCH", 10)
    count = 25
    recorder = Recorder()
    runtime = await started(sql_url, 50, recorder=recorder)
    try:
        await idle_sessions(runtime.storage, count)
        report = await sweep(runtime, datetime.now(UTC) + LATER)
        assert (report.deactivated, report.batches) == (count, 3)
        assert len(recorder.deactivated) == count
    finally:
        await runtime.close()
    runtime = await started(sql_url, 50)
    try:
        await idle_sessions(runtime.storage, count, prefix="quiet")
        report = await sweep(runtime, datetime.now(UTC) + LATER)
        assert (report.deactivated, report.batches) == (count, 1)
    finally:
        await runtime.close()


async def test_an_exact_multiple_of_the_batch_ends_with_an_empty_batch(
    sql_url: str,
) -> None:
    runtime = await started(sql_url, 5)
    try:
        await idle_sessions(runtime.storage, 10)
        report = await sweep(runtime, datetime.now(UTC) + LATER)
        assert (report.deactivated, report.batches) == (10, 3)
    finally:
        await runtime.close()


@pytest.mark.parametrize("counting", [False, True], ids=["hooks", "counting"])
async def test_concurrent_sweepers_on_postgresql_deactivate_each_session_once(
    pg_storage: SQLStorage, pg_url: str, counting: bool
) -> None:
    """With a hook, each session's hook fires once; without one the batches return
    counts only (sweep_count), and the counts add up to the sessions."""
    url = pg_url
    opened = await bulk_sessions(pg_storage, 3000)
    recorders = [Recorder() for _ in range(3)]
    # Three runtimes, as three server processes: each its own engine and plugins.
    runtimes = [await started(url, 40, recorder=None if counting else r) for r in recorders]
    try:
        later = datetime.now(UTC) + LATER
        reports = await asyncio.gather(
            *(sweep(rt, later, keep_ids=not counting) for rt in runtimes)
        )
        if counting:
            assert all(report.ids is None for report in reports)
        else:
            fired = [s.id for r in recorders for s, _ in r.deactivated]
            assert len(fired) == len(set(fired)), "a session's hook fired twice"
            assert set(fired) == opened
            reported = [i for report in reports for i in report.ids or []]
            assert sorted(reported) == sorted(fired)
        assert sum(report.deactivated for report in reports) == 3000
        # They really ran side by side: every one of them took some batches.
        assert all(report.deactivated > 0 for report in reports), [
            report.deactivated for report in reports
        ]
        assert await pg_storage.sessions.count_active() == 0
    finally:
        for rt in runtimes:
            await rt.close()


async def test_rows_are_fetched_only_when_a_plugin_listens_and_ids_only_when_kept(
    tmp_path: Any,
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'sweep.db'}"
    runtime = await started(url, 3)
    try:
        assert not runtime.plugins.implemented("session_deactivated")
        store = runtime.storage.sessions
        calls: list[str] = []

        def spy(name: str) -> Any:
            real = getattr(store, name)

            async def spied(*args: Any, **kwargs: Any) -> Any:
                calls.append(name)
                return await real(*args, **kwargs)

            return spied

        for name in ("sweep", "sweep_ids", "sweep_count"):
            setattr(store, name, spy(name))
        opened = await idle_sessions(runtime.storage, 4)
        report = await sweep(runtime, datetime.now(UTC) + LATER)
        assert (report.deactivated, report.ids) == (4, None)
        assert calls == ["sweep_count", "sweep_count"]

        calls.clear()
        opened = await idle_sessions(runtime.storage, 4, prefix="kept")
        report = await sweep(runtime, datetime.now(UTC) + LATER, keep_ids=True)
        assert report.deactivated == 4 and sorted(report.ids or []) == sorted(opened)
        assert calls == ["sweep_ids", "sweep_ids"]

        recorder = Recorder()
        runtime.plugins.register(recorder, "recorder")
        assert runtime.plugins.implemented("session_deactivated")
        calls.clear()
        await idle_sessions(runtime.storage, 4, prefix="again")
        report = await sweep(runtime, datetime.now(UTC) + LATER)
        assert report.deactivated == 4 and calls == ["sweep", "sweep"]
        assert len(recorder.deactivated) == 4
        assert await store.count_active() == 0
    finally:
        await runtime.close()


async def test_clients_closing_sessions_while_sweepers_sweep_them_report_each_once(
    pg_storage: SQLStorage, pg_url: str
) -> None:
    """A client's close and a sweeper's pass that deactivate one session at the same
    moment: ``session_deactivated`` fires for it once, by whichever deleted its active
    row (``deactivate_once``), not also by the other, which found it active a moment
    before. Every close answers the session, inactive."""
    from chatwright.sessions import deactivate

    opened = await bulk_sessions(pg_storage, 600)
    recorders = [Recorder() for _ in range(3)]
    runtimes = [await started(pg_url, 20, recorder=r) for r in recorders]
    async with pg_storage.read() as conn:
        rows = await conn.execute(
            sa.select(schema.chat_sessions.c.id, schema.chat_sessions.c.user_id)
        )
        users: dict[uuid.UUID, str] = dict(rows.all())
    try:
        later = datetime.now(UTC) + LATER
        closes = [
            deactivate(runtimes[n % 2], users[sid], sid) for n, sid in enumerate(sorted(opened))
        ]
        results = await asyncio.gather(sweep(runtimes[2], later), *closes)
        assert all(not session.is_active for session in results[1:])
        fired = [(s.id, reason) for r in recorders for s, reason in r.deactivated]
        ids = [sid for sid, _ in fired]
        assert len(ids) == len(set(ids)), "a session was reported twice"
        assert set(ids) == opened
        # Both kinds of close happened: the race was run.
        assert {reason for _, reason in fired} == {"idle", "client"}, len(fired)
        assert await pg_storage.sessions.count_active() == 0
    finally:
        for rt in runtimes:
            await rt.close()


async def test_deactivate_once_says_whether_this_call_deactivated(sql_url: str) -> None:
    runtime = await started(sql_url, 5)
    try:
        sessions = runtime.storage.sessions
        opened = await sessions.open("ann", AGENT)
        first = await sessions.deactivate_once("ann", opened.id)
        assert first is not None and first[1] is True and not first[0].is_active
        again = await sessions.deactivate_once("ann", opened.id)
        assert again is not None and again[1] is False and again[0].id == opened.id
        assert await sessions.deactivate_once("bob", opened.id) is None
        assert await sessions.deactivate_once("ann", uuid.uuid4()) is None
        closed = await sessions.deactivate("ann", opened.id)
        assert closed is not None and (closed.id, closed.is_active) == (opened.id, False)
    finally:
        await runtime.close()


async def test_a_store_without_deactivate_once_is_closed_as_before(
    tmp_path: Any, monkeypatch: Any
) -> None:
    """A session store written before ``deactivate_once`` (a subclass of the protocol
    inherits its empty body): a close reads whether the session was active, then
    deactivates it, and reports it when it was."""
    from chatwright.plugins.sql.sessions import SQLSessionStore
    from chatwright.sessions import deactivate
    from chatwright.stores import SessionStore

    monkeypatch.setattr(SQLSessionStore, "deactivate_once", SessionStore.deactivate_once)
    original = SQLSessionStore.deactivate

    async def plain(self: Any, user_id: str, session_id: uuid.UUID) -> ChatSession | None:
        async with self.db.write(user_id) as conn:  # as a store before deactivate_once did
            await conn.execute(
                schema.active_sessions.delete().where(
                    schema.active_sessions.c.session_id == session_id
                )
            )
        return await self.get(user_id, session_id)

    monkeypatch.setattr(SQLSessionStore, "deactivate", plain)
    recorder = Recorder()
    url = f"sqlite+aiosqlite:///{tmp_path / 'close.db'}"
    runtime = await started(url, 3, recorder=recorder)
    try:
        opened = await runtime.storage.sessions.open("ann", AGENT)
        closed = await deactivate(runtime, "ann", opened.id)
        assert not closed.is_active
        await deactivate(runtime, "ann", opened.id)
        assert [(s.id, reason) for s, reason in recorder.deactivated] == [(opened.id, "client")]
    finally:
        await runtime.close()
    assert original is not plain


@pytest.mark.parametrize("without", ["none", "the protocol's"])
async def test_a_store_without_sweep_count_is_swept_by_its_ids(
    tmp_path: Any, monkeypatch: Any, without: str
) -> None:
    """A session store written before ``sweep_count`` existed still works, whether it has
    no such method or a subclass of the protocol inherits its empty body: the sweeper
    counts the ids its ``sweep_ids`` returns."""
    from chatwright.plugins.sql.sessions import SQLSessionStore
    from chatwright.stores import SessionStore

    if without == "none":
        monkeypatch.delattr(SQLSessionStore, "sweep_count")
    else:
        monkeypatch.setattr(SQLSessionStore, "sweep_count", SessionStore.sweep_count)
    url = f"sqlite+aiosqlite:///{tmp_path / 'sweep.db'}"
    runtime = await started(url, 3)
    try:
        await idle_sessions(runtime.storage, 7)
        report = await sweep(runtime, datetime.now(UTC) + LATER)
        assert (report.deactivated, report.batches, report.ids) == (7, 3, None)
        assert await runtime.storage.sessions.count_active() == 0
    finally:
        await runtime.close()


async def test_the_pass_yields_to_the_event_loop_between_batches(tmp_path: Any) -> None:
    """Even when a store answers without awaiting anything, other tasks run between batches."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'sweep.db'}"
    runtime = await started(url, 100)
    try:
        order: list[str] = []
        left = [100, 100, 100, 40]

        async def instant_batch(idle_before: datetime, *, limit: int) -> int:
            order.append("batch")
            return left.pop(0)

        runtime.storage.sessions.sweep_count = instant_batch  # type: ignore[method-assign]
        done = asyncio.Event()

        async def request() -> None:
            while not done.is_set():
                order.append("request")
                await asyncio.sleep(0)

        other = asyncio.create_task(request())
        await asyncio.sleep(0)
        report = await sweep(runtime, datetime.now(UTC) + LATER)
        done.set()
        await other
        assert report.deactivated == 340 and report.batches == 4
        batches = [i for i, step in enumerate(order) if step == "batch"]
        assert len(batches) == 4
        # A request ran between any two batches.
        assert all("request" in order[a:b] for a, b in itertools.pairwise(batches))
    finally:
        await runtime.close()


async def test_hooks_of_one_batch_let_other_tasks_run_every_few_hundred(tmp_path: Any) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'sweep.db'}"
    order: list[str] = []

    class Listener:
        @hookimpl
        def session_deactivated(self, session: ChatSession, reason: str) -> None:
            order.append("hook")

    plugins = Plugins.load(LoadPolicy())
    plugins.register(Listener(), "listener")
    cfg = settings(plugins, storage={"url": url}, sessions={"sweep_batch": 1000})
    runtime = await Runtime(cfg, plugins).start(upgrade=True)
    try:
        template = await runtime.storage.sessions.open("someone", AGENT)

        async def instant_batch(idle_before: datetime, *, limit: int) -> list[ChatSession]:
            return [replace(template, id=uuid.uuid4(), is_active=False) for _ in range(450)]

        runtime.storage.sessions.sweep = instant_batch  # type: ignore[method-assign]
        done = asyncio.Event()

        async def request() -> None:
            while not done.is_set():
                if not order or order[-1] != "request":
                    order.append("request")
                await asyncio.sleep(0)

        other = asyncio.create_task(request())
        await asyncio.sleep(0)
        report = await sweep(runtime, datetime.now(UTC) + LATER)
        done.set()
        await other
        assert report.deactivated == 450 and order.count("hook") == 450
        runs = "".join("h" if step == "hook" else "r" for step in order).split("r")
        assert max(len(run) for run in runs) == HOOKS_BETWEEN_YIELDS
    finally:
        await runtime.close()


async def test_a_counting_pass_resumes_where_its_last_batch_ended(pg_storage: SQLStorage) -> None:
    """The newest ``updated_at`` of a counted batch is where the next one starts, and a
    short batch sends the next call back to the start, as with the ids."""
    store = pg_storage.sessions
    opened = [await store.open(f"count-{i}", AGENT) for i in range(7)]
    cutoff = datetime.now(UTC) + LATER
    assert await store.sweep_count(cutoff, limit=3) == 3
    newest = max(s.updated_at for s in opened[:3])
    assert store._resume == (cutoff, newest)
    assert await store.sweep_count(cutoff, limit=3) == 3
    assert await store.sweep_count(cutoff, limit=3) == 1
    assert store._resume is None
    assert await store.sweep_count(cutoff, limit=3) == 0
    assert await store.count_active() == 0


async def test_a_session_another_transaction_holds_is_skipped_then_swept(
    pg_storage: SQLStorage,
) -> None:
    """A step gives up on a row another transaction holds (after SWEEP_LOCK_WAIT), then
    takes its batch with SKIP LOCKED, which passes over the row; a later call finds it.
    Without the step's lock_timeout it would wait for as long as the row is held."""
    import psycopg

    store = pg_storage.sessions
    opened = [await store.open(f"held-{i}", AGENT) for i in range(10)]
    cutoff = datetime.now(UTC) + LATER
    url = pg_storage.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(url) as holder:
        # The oldest idle session, held as a heartbeat's UPDATE would hold it.
        holder.execute(
            "SELECT 1 FROM active_sessions WHERE session_id = %s FOR UPDATE", (opened[0].id,)
        )
        # Counted and with ids: the step after the held row's gives both ways' rows.
        assert await asyncio.wait_for(store.sweep_count(cutoff, limit=3), 10) == 3
        assert await store.count_active() == 7
        swept: list[uuid.UUID] = []
        while True:
            batch = await asyncio.wait_for(store.sweep_ids(cutoff, limit=3), 10)
            swept += batch
            if len(batch) < 3:
                break
        assert sorted(swept) == sorted(s.id for s in opened[4:])
        holder.rollback()
    # The pass ended on a short batch, so the next call looks from the start again.
    assert await store.sweep_ids(cutoff, limit=3) == [opened[0].id]
    assert await store.count_active() == 0


async def test_a_session_heartbeated_as_a_step_reaches_it_stays_active(
    pg_storage: SQLStorage,
) -> None:
    """A step that reaches a session's row while a heartbeat updates it does not delete
    the row as updated: it gives the row up, and the delete checks the cutoff again on
    a row as it is now (a server's recheck of a TID scan alone has not always done so)."""
    import psycopg

    store = pg_storage.sessions
    opened = [await store.open(f"beat-{i}", AGENT) for i in range(4)]
    long_ago = datetime.now(UTC) - timedelta(hours=2)
    async with pg_storage.write() as conn:
        await conn.execute(schema.chat_sessions.update().values(updated_at=long_ago))
    cutoff = datetime.now(UTC) - LATER
    url = pg_storage.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(url) as beat:
        # A heartbeat of the second oldest, not yet committed when the step reaches it.
        beat.execute("UPDATE chat_sessions SET updated_at = now() WHERE id = %s", (opened[1].id,))
        step = asyncio.ensure_future(store.sweep_ids(cutoff, limit=10))
        await asyncio.sleep(0.02)
        beat.commit()
        swept = await asyncio.wait_for(step, 10)
    assert opened[1].id not in swept
    assert sorted(swept) == sorted(s.id for i, s in enumerate(opened) if i != 1)
    kept = await store.get("beat-1", opened[1].id)
    assert kept is not None and kept.is_active


async def test_a_step_while_another_sweeper_holds_the_sweep_lock_takes_its_batch_anyway(
    pg_storage: SQLStorage,
) -> None:
    """While another process's sweep step holds the sweepers' advisory lock, a step
    takes a disjoint batch with SKIP LOCKED rather than nothing (or waiting), so the
    sweepers of several processes all take batches."""
    import psycopg

    store = pg_storage.sessions
    opened = [await store.open(f"lock-{i}", AGENT) for i in range(7)]
    cutoff = datetime.now(UTC) + LATER
    url = pg_storage.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(url) as other:
        other.execute("SELECT pg_advisory_xact_lock(hashtextextended('chatwright:sweep', 0))")
        # Its batch's oldest rows are being deleted by that sweeper's step.
        other.execute("DELETE FROM active_sessions WHERE session_id = %s", (opened[0].id,))
        first = await asyncio.wait_for(store.sweep_ids(cutoff, limit=3), 10)
        assert first == [s.id for s in opened[1:4]]
        assert await asyncio.wait_for(store.sweep_count(cutoff, limit=3), 10) == 3
        other.commit()
    assert await store.count_active() == 0


@pytest.mark.parametrize("answer", ["ids", "count", "rows"])
async def test_a_step_that_deleted_sessions_answers_them_whatever_comes_after(
    pg_storage: SQLStorage, monkeypatch: pytest.MonkeyPatch, answer: str
) -> None:
    """A step is atomic: the sessions its first statement deleted are in its answer,
    so a short batch (the end of a pass) does not run a second statement whose
    failure would lose them, deleted and never reported. Here any second statement
    fails."""
    from chatwright.plugins.sql import sessions as sql_sessions
    from chatwright.plugins.sql.sweeps import sweep_statement

    def failing_second(postgresql: bool, resume: bool, answer: str, skip_locked: bool = False):
        if skip_locked:
            return sa.text("SELECT 1 / 0")
        return sweep_statement(postgresql, resume, answer, skip_locked)

    monkeypatch.setattr(sql_sessions, "sweep_statement", failing_second)
    store = pg_storage.sessions
    opened = {(await store.open(f"atomic-{i}", AGENT)).id for i in range(5)}
    cutoff = datetime.now(UTC) + LATER
    if answer == "ids":
        assert set(await store.sweep_ids(cutoff, limit=10)) == opened
    elif answer == "count":
        assert await store.sweep_count(cutoff, limit=10) == 5
    else:
        assert {s.id for s in await store.sweep(cutoff, limit=10)} == opened
    assert await store.count_active() == 0


async def test_a_sweep_step_deletes_without_locking_its_rows_first(
    pg_storage: SQLStorage,
) -> None:
    """Locking a row is a write of its own (a WAL record per row): the plan of a step
    deletes its batch with no LockRows node; the way that never waits has one."""
    from chatwright.plugins.sql.sweeps import sweep_statement

    params = {"idle_before": datetime.now(UTC), "batch": 10, "mark": datetime.now(UTC)}
    plans = {}
    for skip_locked in (False, True):
        for answer in ("count", "ids", "rows"):
            stmt = sweep_statement(True, True, answer, skip_locked)
            compiled = stmt.compile(dialect=pg_storage.engine.dialect)
            async with pg_storage.write() as conn:
                explained = await conn.exec_driver_sql(
                    f"EXPLAIN (VERBOSE) {compiled}", compiled.construct_params(params)
                )
                plans[(skip_locked, answer)] = "\n".join(r[0] for r in explained)
    for answer in ("count", "ids", "rows"):
        assert "LockRows" not in plans[(False, answer)], plans[(False, answer)]
        assert "pg_try_advisory_xact_lock" in plans[(False, answer)]
        assert "LockRows" in plans[(True, answer)], plans[(True, answer)]


async def test_a_sweep_step_deletes_its_batch_by_tid_whatever_the_statistics_say(
    pg_storage: SQLStorage,
) -> None:
    """The delete's own cutoff ("IS TRUE") gives the planner no index to use: with
    statistics that have not seen the sessions gone idle, an index scan on updated_at
    would compare every idle row's ctid with the whole batch (seconds a step), where
    the TID scan takes the batch's rows alone."""
    from chatwright.plugins.sql.sweeps import sweep_statement

    statements = [
        "ALTER TABLE active_sessions SET (autovacuum_enabled = false)",
        "INSERT INTO chat_sessions (id, chat_id, user_id, agent_name, updated_at) "
        "SELECT gen_random_uuid(), gen_random_uuid(), 'r' || g, 'a', now() "
        "FROM generate_series(1, 20000) AS g",
        "INSERT INTO active_sessions SELECT id, user_id, agent_name, NULL, updated_at "
        "FROM chat_sessions",
        "ANALYZE active_sessions",
        "INSERT INTO chat_sessions (id, chat_id, user_id, agent_name, updated_at) "
        "SELECT gen_random_uuid(), gen_random_uuid(), 'i' || g, 'a', "
        "now() - interval '2 hours' - g * interval '1 ms' FROM generate_series(1, 30000) AS g",
        "INSERT INTO active_sessions SELECT id, user_id, agent_name, NULL, updated_at "
        "FROM chat_sessions WHERE user_id LIKE 'i%%'",
    ]
    async with pg_storage.write() as conn:
        for statement in statements:
            await conn.exec_driver_sql(statement)
    try:
        stmt = sweep_statement(True, False, "count")
        compiled = stmt.compile(dialect=pg_storage.engine.dialect)
        params = {"idle_before": datetime.now(UTC) - LATER, "batch": 10_000}
        async with pg_storage.write() as conn:
            explained = await conn.exec_driver_sql(
                f"EXPLAIN {compiled}", compiled.construct_params(params)
            )
            plan = "\n".join(r[0] for r in explained)
        assert "TID Cond: (ctid = ANY" in plan and "Filter: (ctid = ANY" not in plan, plan
    finally:
        async with pg_storage.write() as conn:
            await conn.exec_driver_sql("ALTER TABLE active_sessions RESET (autovacuum_enabled)")


async def test_a_turn_keeps_its_session_from_the_sweeper_and_a_swept_one_keeps_its_time(
    sql_url: str,
) -> None:
    """The end of a turn touches the chat's sessions on ``chat_sessions``; the trigger
    of migration 0009 carries the time to the active rows the sweeper reads. A
    session swept reads the time it was last used, not the sweep's."""
    runtime = await started(sql_url, 100)
    storage = runtime.storage
    try:
        await storage.agents.create(AGENT, system_prompt="p", model="offline:assistant")
        used = await storage.sessions.open("ann", AGENT)
        idle = await storage.sessions.open("ben", AGENT)
        long_ago = datetime.now(UTC) - timedelta(hours=2)
        async with storage.write() as conn:
            await conn.execute(schema.chat_sessions.update().values(updated_at=long_ago))
        await runtime.chat("ann", AGENT, used.chat_id, "hello")
        cutoff = datetime.now(UTC) - timedelta(hours=1)
        report = await sweep(runtime, cutoff, keep_ids=True)
        assert report.ids == [idle.id]
        after = await storage.sessions.get("ann", used.id)
        assert after is not None and after.is_active and after.updated_at > cutoff
        swept = await storage.sessions.get("ben", idle.id)
        assert swept is not None and not swept.is_active
        assert abs((swept.updated_at - long_ago).total_seconds()) < 1
    finally:
        await runtime.close()


@pytest.mark.parametrize("other", ["heartbeat", "touch"])
async def test_closing_a_session_while_it_is_touched_does_not_deadlock(
    pg_storage: SQLStorage, other: str
) -> None:
    """Closing a session and touching it (a heartbeat; the end of a turn, whose touch
    is ``touch_chat``'s) lock its two rows in one order. A third transaction holds
    the active row for a moment, so that both are under way at once."""
    import psycopg

    store = pg_storage.sessions
    session = await store.open("ann", AGENT)
    url = pg_storage.url.set(drivername="postgresql").render_as_string(hide_password=False)
    async with await psycopg.AsyncConnection.connect(url) as holder:
        await holder.execute(
            "SELECT 1 FROM active_sessions WHERE session_id = %s FOR UPDATE", (session.id,)
        )
        closing = asyncio.create_task(store.deactivate("ann", session.id))
        await asyncio.sleep(0.2)
        if other == "heartbeat":
            touching = asyncio.create_task(store.heartbeat("ann", session.id))
        else:
            touching = asyncio.create_task(store.touch_chat("ann", session.chat_id))
        await asyncio.sleep(0.2)
        await holder.commit()
        closed, _ = await asyncio.wait_for(asyncio.gather(closing, touching), 10)
    assert closed is not None and not closed.is_active
    found = await store.get("ann", session.id)
    assert found is not None and not found.is_active
