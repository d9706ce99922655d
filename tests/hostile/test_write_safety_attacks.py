"""Write safety attacked from outside: approvals that would run something else than asked.

A pending action shows the user one call of one tool row; approving it must
run that call of that row as it was, or nothing. The runtime is the one the
server and the CLI use; a scripted model says what a hostile model could.
SQLite and PostgreSQL.
"""

from __future__ import annotations

import sys
import uuid
from typing import Any

import pytest

from chatwright.approvals import NewAuditEntry, PendingAction, Write
from chatwright.errors import PreviewChangedError
from chatwright.plugins.example import assistant as example
from chatwright.runtime import Runtime
from chatwright.undo import UNDO_SCAN
from tests.conftest import MakeRuntime
from tests.hostile.conftest import MakeServer, assert_error_body, bearer, sql

ALICE = "alice"
AGENT = example.AGENT


@pytest.fixture(autouse=True)
def _users(monkeypatch: pytest.MonkeyPatch) -> None:
    """Users of this test only: application tables outlive a test on PostgreSQL."""
    monkeypatch.setattr(sys.modules[__name__], "ALICE", f"alice-{uuid.uuid4().hex[:8]}")


async def held_add_task(runtime: Runtime) -> tuple[int, uuid.UUID]:
    """Alice's pending ``add_task`` call (row in ``required`` mode): its row id and action id."""
    await example.seed(runtime.storage, "scripted:x")
    script = [{"tool_calls": [{"name": "add_task", "args": {"title": "milk"}}]}, {"content": "ok"}]
    await runtime.storage.agents.update(AGENT, model_settings={"responses": script})
    (row,) = [r for r in await runtime.storage.tools.list(AGENT) if r.name == "add_task"]
    await runtime.storage.tools.update(row.id, approval="required")
    chat = (await runtime.storage.sessions.open(ALICE, AGENT, chat_id=uuid.uuid4())).chat_id
    (action,) = (await runtime.chat(ALICE, AGENT, chat, "add milk")).pending
    assert action.tool_id == row.id
    return row.id, action.id


async def alices_tasks(runtime: Runtime) -> list[dict[str, Any]]:
    return await runtime.storage.records.select(
        ALICE, "tasks", {"user_id": ALICE}, columns=["title", "status"], order_by=[], limit=100
    )


async def test_approving_does_not_run_a_tool_row_that_replaced_the_one_asked_about(
    runtimes: MakeRuntime,
) -> None:
    runtime = await runtimes()
    row_id, action_id = await held_add_task(runtime)
    old = await runtime.storage.tools.get(row_id)
    assert old is not None
    # The row asked about is renamed away; another row takes its name, writing otherwise.
    await runtime.storage.tools.update(row_id, name="add_task_old", is_active=False)
    config = {**old.config, "defaults": {"status": "done"}}
    await runtime.storage.tools.add(AGENT, "add_task", type=old.type, config=config)
    with pytest.raises(PreviewChangedError):
        await runtime.decide(ALICE, action_id, True)
    assert await alices_tasks(runtime) == []
    stored = await runtime.storage.pending.get(ALICE, action_id)
    assert stored is not None and stored.status == "pending"


async def test_approving_does_not_run_a_tool_row_changed_since_it_was_asked(
    runtimes: MakeRuntime,
) -> None:
    runtime = await runtimes()
    row_id, action_id = await held_add_task(runtime)
    old = await runtime.storage.tools.get(row_id)
    assert old is not None
    # Same row, other config: the call would now write something the user was not shown.
    await runtime.storage.tools.update(
        row_id, config={**old.config, "defaults": {"status": "done"}}
    )
    with pytest.raises(PreviewChangedError) as asked_again:
        await runtime.decide(ALICE, action_id, True)
    assert await alices_tasks(runtime) == []
    # Asked again, with what the call would now write.
    fresh = asked_again.value.preview
    assert fresh is not None and "done" in str(fresh.as_dict())


async def test_an_undo_reverts_every_write_of_its_turn_however_long_the_chat(
    runtimes: MakeRuntime,
) -> None:
    """A turn's writes followed by hundreds of later audit entries of the chat (denials, other
    turns' calls) are still all undone together, or none: never some of them."""
    runtime = await runtimes()
    await example.seed(runtime.storage, "scripted:x")
    two = {
        "tool_calls": [
            {"name": "add_task", "args": {"title": "first"}},
            {"name": "add_task", "args": {"title": "second"}},
        ]
    }
    await runtime.storage.agents.update(
        AGENT, model_settings={"responses": [two, {"content": "Added both."}]}
    )
    chat = (await runtime.storage.sessions.open(ALICE, AGENT, chat_id=uuid.uuid4())).chat_id
    turn = await runtime.chat(ALICE, AGENT, chat, "add two")
    assert sorted(str(r["title"]) for r in await alices_tasks(runtime)) == ["first", "second"]
    # The chat goes on: many later entries that changed no rows (e.g. declined calls).
    for _ in range(UNDO_SCAN - 1):
        await runtime.storage.audit.record(
            NewAuditEntry(
                user_id=ALICE,
                agent_name=AGENT,
                tool_name="add_task",
                operation="create",
                outcome="denied",
                chat_id=chat,
                turn_id=uuid.uuid4(),
                approval="denied",
                decided_by=ALICE,
            )
        )
    report = await runtime.undo(ALICE, chat, turn_id=turn.turn_id)
    assert len(report.changes) == 2, report
    assert await alices_tasks(runtime) == []


async def test_a_row_past_the_previews_cap_that_changed_is_not_written_blindly(
    runtimes: MakeRuntime,
) -> None:
    runtime = await runtimes()
    await example.seed(runtime.storage, "scripted:x")
    records = runtime.storage.records
    ids = [
        (
            await records.insert(
                ALICE,
                "tasks",
                {"user_id": ALICE, "title": t, "status": "pending"},
                returning=["id"],
            )
        )["id"]
        for t in ("shown", "not shown")
    ]
    scope = {"user_id": ALICE}
    write = Write(
        table="tasks",
        operation="delete",
        where={**scope, "status": "pending"},
        scope=scope,
        returning=["id"],
    )
    preview = await records.preview(ALICE, write, cap=1)
    assert preview.count == 2 and [c.key["id"] for c in preview.rows] == ids[:1]
    # The row the preview counted but did not show becomes something else meanwhile.
    await sql(runtime, "UPDATE tasks SET title = 'the tax return' WHERE id = :id", id=ids[1])
    with pytest.raises(PreviewChangedError):
        await records.apply(ALICE, write, expect=preview, cap=1)
    assert len(await alices_tasks(runtime)) == 2


@pytest.mark.parametrize(
    "since",
    [
        "0001-01-01T00:00:00%2B23:59",
        "0001-01-01T00:00:00",
        "9999-12-31T23:59:59-23:59",
        "9999-12-31T23:59:59.999999",
        "2026-01-01T00:00:00%2B00:00:01.5",
    ],
)
async def test_times_at_the_ends_of_the_calendar_are_answered_not_a_500(
    make_server: MakeServer, since: str
) -> None:
    server = await make_server()
    answer = await server.client.get(f"/api/audit?since={since}", headers=bearer("alice"))
    if answer.status_code != 200:
        assert_error_body(answer, 422)
    else:
        assert answer.json()["entries"] == []


async def held_read_turned_delete(runtime: Runtime) -> PendingAction:
    """Alice's pending call of ``list_tasks`` (a read in ``required`` mode, no preview)
    for her task "keep me", whose row then becomes a delete by id."""
    storage = runtime.storage
    await example.seed(storage, "scripted:x")
    (row,) = [r for r in await storage.tools.list(AGENT) if r.name == "list_tasks"]
    await storage.tools.update(row.id, approval="required")
    task = await storage.records.insert(
        ALICE, "tasks", {"user_id": ALICE, "title": "keep me"}, returning=["id"]
    )
    call = {"tool_calls": [{"name": "list_tasks", "args": {"id": task["id"]}}]}
    await storage.agents.update(AGENT, model_settings={"responses": [call, {"content": "ok"}]})
    chat = (await storage.sessions.open(ALICE, AGENT, chat_id=uuid.uuid4())).chat_id
    (action,) = (await runtime.chat(ALICE, AGENT, chat, "show the task")).pending
    assert action.preview is None and action.tool_id == row.id
    delete = {
        "table": "tasks",
        "operation": "delete",
        "filters": {"id": {"type": "integer", "required": True}},
    }
    await storage.tools.update(row.id, config=delete)
    return action


async def test_approving_a_call_without_a_preview_does_not_run_what_its_row_became(
    runtimes: MakeRuntime,
) -> None:
    """A read needing approval has no preview: the row itself must be checked. Here the
    same row (same id, same name) becomes a delete before the approval."""
    runtime = await runtimes()
    storage = runtime.storage
    action = await held_read_turned_delete(runtime)
    with pytest.raises(PreviewChangedError, match="changed since you were asked") as asked:
        await runtime.decide(ALICE, action.id, True)
    assert [t["title"] for t in await alices_tasks(runtime)] == ["keep me"]
    # Asked again, with what the call would now do: approving that runs it.
    again = asked.value.action
    assert again is not None and again.status == "pending"
    assert asked.value.preview is not None and asked.value.preview.operation == "delete"
    await runtime.decide(ALICE, action.id, True)
    assert await alices_tasks(runtime) == []
    done = await storage.pending.get(ALICE, action.id)
    assert done is not None and done.status == "done"


async def test_an_approval_whose_agent_cannot_be_built_leaves_the_action_pending(
    runtimes: MakeRuntime,
) -> None:
    from chatwright.errors import ModelConfigError

    runtime = await runtimes()
    _, action_id = await held_add_task(runtime)
    await runtime.storage.agents.update(AGENT, model="nosuchprovider:x")
    with pytest.raises(ModelConfigError):
        await runtime.decide(ALICE, action_id, True)
    stored = await runtime.storage.pending.get(ALICE, action_id)
    assert stored is not None and stored.status == "pending"
    assert await alices_tasks(runtime) == []
    # Fixed, the same action is approved and runs once.
    await runtime.storage.agents.update(AGENT, model="scripted:x")
    await runtime.decide(ALICE, action_id, True)
    assert [t["title"] for t in await alices_tasks(runtime)] == ["milk"]


async def test_an_approved_call_cut_off_while_it_runs_ends_failed_not_approved(
    runtimes: MakeRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cancelled approval (a client gone, a server stopping) must not leave the action
    approved forever: never run to its end, never decidable again."""
    import asyncio

    from chatwright import decisions

    runtime = await runtimes()
    _, action_id = await held_add_task(runtime)
    started = asyncio.Event()

    async def hangs(*args: Any, **kwargs: Any) -> Any:
        started.set()
        await asyncio.sleep(60)

    monkeypatch.setattr(decisions.Decisions, "_run_approved", hangs)
    deciding = asyncio.ensure_future(runtime.decide(ALICE, action_id, True))
    await asyncio.wait_for(started.wait(), 10)
    deciding.cancel()
    with pytest.raises(asyncio.CancelledError):
        await deciding
    stored = await runtime.storage.pending.get(ALICE, action_id)
    assert stored is not None and stored.status == "failed"
    assert stored.result is not None and "cut off" in stored.result
    # The chat is free, and its history answers the call.
    chat = stored.chat_id
    messages = await runtime.storage.messages.window(ALICE, chat, 100)
    assert messages[-1].role == "tool" and "cut off" in str(messages[-1].content)


async def test_a_held_call_with_a_long_tool_call_id_keeps_its_turn(
    make_server: MakeServer,
) -> None:
    """The model's ids are kept as given: on PostgreSQL an id over 200 characters made
    storing the held call fail, and with it the turn's whole end (the other call's
    committed write then had no record in the chat)."""
    from tests.write_safety import AGENT as WRITER
    from tests.write_safety import seed_writer

    server = await make_server()
    long_id = "c" * 300
    script = [
        {
            "tool_calls": [
                {"name": "add_task", "args": {"title": "milk"}, "id": "short"},
                {"name": "delete_task", "args": {"id": 1}, "id": long_id},
            ]
        },
        {"content": "Done."},
    ]
    await seed_writer(server.runtime, script, tools=("add_task", "delete_task"))
    await sql(server.runtime, "UPDATE agent_tools SET approval = 'auto' WHERE name = 'add_task'")
    headers = bearer(ALICE)
    opened = await server.client.post(
        "/api/sessions", json={"agent_name": WRITER, "new": True}, headers=headers
    )
    chat = opened.json()["chat_id"]
    body = {"agent_name": WRITER, "chat_id": chat, "message": "add milk"}
    answer = await server.client.post("/api/chat", json=body, headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "approval_required"
    (held,) = answer.json()["pending"]
    assert held["tool_call_id"] == long_id
    roles = await sql(
        server.runtime, "SELECT role FROM chat_messages WHERE user_id = :u ORDER BY id", u=ALICE
    )
    assert [r["role"] for r in roles] == ["human", "ai", "tool"]


async def test_a_turn_is_not_undone_while_it_still_waits_for_a_decision(
    runtimes: MakeRuntime,
) -> None:
    """Undoing the first approved write of a turn whose second call still waited let the
    second, approved after, escape every later undo ("undone already")."""
    from chatwright.errors import UndoConflictError

    runtime = await runtimes()
    storage = runtime.storage
    await example.seed(storage, "scripted:x")
    (row,) = [r for r in await storage.tools.list(AGENT) if r.name == "add_task"]
    await storage.tools.update(row.id, approval="required")
    two = {
        "tool_calls": [
            {"name": "add_task", "args": {"title": "first"}},
            {"name": "add_task", "args": {"title": "second"}},
        ]
    }
    await storage.agents.update(AGENT, model_settings={"responses": [two, {"content": "ok"}]})
    chat = (await storage.sessions.open(ALICE, AGENT, chat_id=uuid.uuid4())).chat_id
    first, second = (await runtime.chat(ALICE, AGENT, chat, "add two")).pending
    await runtime.decide(ALICE, first.id, True)
    for target in (None, first.turn_id):
        with pytest.raises(
            UndoConflictError, match=f"still waits for your decision on add_task \\({second.id}\\)"
        ):
            await runtime.undo(ALICE, chat, turn_id=target)
    assert [t["title"] for t in await alices_tasks(runtime)] == ["first"]
    # Decided, the whole turn is undone together.
    await runtime.decide(ALICE, second.id, True)
    report = await runtime.undo(ALICE, chat)
    assert len(report.changes) == 2
    assert await alices_tasks(runtime) == []


async def test_a_row_that_changed_is_never_approved_unseen_when_its_preview_failed_once(
    runtimes: MakeRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Asked again without a preview (the database away a moment), the action must not
    take the changed row as the one the user saw: the next approval checks again."""
    from chatwright.errors import StorageError

    runtime = await runtimes()
    storage = runtime.storage
    action = await held_read_turned_delete(runtime)
    real = storage.records.preview
    failures = [StorageError("the database went away for a moment")]

    async def flaky(*args: Any, **kwargs: Any) -> Any:
        if failures:
            raise failures.pop()
        return await real(*args, **kwargs)

    monkeypatch.setattr(storage.records, "preview", flaky)
    with pytest.raises(PreviewChangedError, match="could not be shown") as first:
        await runtime.decide(ALICE, action.id, True)
    assert first.value.preview is None
    # Approved again: checked again, now with what the call would delete.
    with pytest.raises(PreviewChangedError) as second:
        await runtime.decide(ALICE, action.id, True)
    assert second.value.preview is not None and second.value.preview.operation == "delete"
    assert [t["title"] for t in await alices_tasks(runtime)] == ["keep me"]
    await runtime.decide(ALICE, action.id, True)
    assert await alices_tasks(runtime) == []


async def test_an_approval_cut_off_after_its_write_committed_says_the_write_was_made(
    runtimes: MakeRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelled while recording the outcome of a call whose write committed: the action is
    done, and the model is told the write was made (not that it was cut off before, which
    invites running it again)."""
    import asyncio

    runtime = await runtimes()
    _, action_id = await held_add_task(runtime)
    pending = runtime.storage.pending
    real = pending.complete
    stuck = asyncio.Event()

    async def complete(*args: Any, **kwargs: Any) -> Any:
        if not stuck.is_set():
            stuck.set()
            await asyncio.sleep(60)
        return await real(*args, **kwargs)

    monkeypatch.setattr(pending, "complete", complete)
    deciding = asyncio.ensure_future(runtime.decide(ALICE, action_id, True))
    await asyncio.wait_for(stuck.wait(), 10)
    deciding.cancel()
    with pytest.raises(asyncio.CancelledError):
        await deciding
    assert [t["title"] for t in await alices_tasks(runtime)] == ["milk"]
    stored = await pending.get(ALICE, action_id)
    assert stored is not None and stored.status == "done"
    assert stored.result is not None and "do not run it again" in stored.result
    messages = await runtime.storage.messages.window(ALICE, stored.chat_id, 100)
    assert messages[-1].role == "tool" and "its write was made" in str(messages[-1].content)
