"""Write safety in the runtime: approval, preview, resume, expiry, audit, undo, write hooks.

Every test runs on SQLite and on PostgreSQL, with the example agent (tables
``tasks`` and ``notes``, crud tools) on the ``scripted`` model. "Two
processes" are two runtimes on one database, each with its own engine, cache
and locks, as two server processes would have.
"""

from __future__ import annotations

import asyncio
import re
import sys
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from chatwright import hookimpl
from chatwright.approvals import WriteCall, WriteOutcome
from chatwright.errors import (
    AlreadyDecidedError,
    ApprovalPendingError,
    InvalidInputError,
    NotFoundError,
    PreviewChangedError,
    UndoConflictError,
)
from chatwright.history import NOT_RUN, answered
from chatwright.plugins.example import assistant as example
from chatwright.runtime import Runtime
from tests.conftest import MakeRuntime

ALICE, BOB = "alice", "bob"
AGENT = example.AGENT


class Policy:
    """A before_write/after_write plugin: refuses titles in capitals, records outcomes."""

    def __init__(self) -> None:
        self.before: list[WriteCall] = []
        self.after: list[tuple[WriteCall, WriteOutcome]] = []

    @hookimpl
    def before_write(self, call: WriteCall) -> str | None:
        self.before.append(call)
        title = call.args.get("title")
        if isinstance(title, str) and title.isupper():
            return "no shouting in task titles"
        return None

    @hookimpl
    def after_write(self, call: WriteCall, outcome: WriteOutcome) -> None:
        self.after.append((call, outcome))


@pytest.fixture(autouse=True)
def _users(monkeypatch: pytest.MonkeyPatch) -> None:
    """Users of this test only: application tables outlive a test on PostgreSQL."""
    suffix = uuid.uuid4().hex[:8]
    monkeypatch.setattr(sys.modules[__name__], "ALICE", f"alice-{suffix}")
    monkeypatch.setattr(sys.modules[__name__], "BOB", f"bob-{suffix}")


async def setup(runtime: Runtime, script: list[dict[str, Any]], **modes: str) -> None:
    """The example agent on a script, with approval modes by tool name."""
    await example.seed(runtime.storage, "scripted:x")
    await runtime.storage.agents.update(AGENT, model_settings={"responses": script})
    for row in await runtime.storage.tools.list(AGENT):
        if row.name in modes:
            await runtime.storage.tools.update(row.id, approval=modes[row.name])


async def chat_of(runtime: Runtime, user: str) -> uuid.UUID:
    return (await runtime.storage.sessions.open(user, AGENT, chat_id=uuid.uuid4())).chat_id


async def tasks(runtime: Runtime, user: str) -> list[dict[str, Any]]:
    return await runtime.storage.records.select(
        user, "tasks", {"user_id": user}, columns=["id", "title", "status"], order_by=[], limit=100
    )


async def add_task(runtime: Runtime, user: str, title: str) -> int:
    row = await runtime.storage.records.insert(
        user, "tasks", {"user_id": user, "title": title}, returning=["id"]
    )
    return int(row["id"])


def call(name: str, **args: Any) -> dict[str, Any]:
    return {"tool_calls": [{"name": name, "args": args}]}


async def stored_tool_results(runtime: Runtime, user: str, chat: uuid.UUID) -> list[str]:
    page = await runtime.storage.messages.page(user, chat, limit=100)
    return [str(m.content["data"]["content"]) for m in page if m.role == "tool"]


# -- approve, deny ----------------------------------------------------------------------


async def test_a_required_update_waits_with_a_preview_and_runs_once_approved(
    runtimes: MakeRuntime,
) -> None:
    runtime = await runtimes()
    script = [call("update_task", id=0, status="done"), {"content": "Marked done."}]
    await setup(runtime, script, update_task="required")
    task = await add_task(runtime, ALICE, "milk")
    script[0]["tool_calls"][0]["args"]["id"] = task
    await runtime.storage.agents.update(AGENT, model_settings={"responses": script})
    chat = await chat_of(runtime, ALICE)

    turn = await runtime.chat(ALICE, AGENT, chat, "milk is done")
    assert turn.status == "approval_required"
    assert turn.response == ""
    (action,) = turn.pending
    assert (action.tool_name, dict(action.args)) == ("update_task", {"id": task, "status": "done"})
    assert action.preview is not None and action.preview.count == 1
    (change,) = action.preview.rows
    assert change.before is not None and change.after is not None
    assert (change.before["status"], change.after["status"]) == ("pending", "done")
    assert dict(change.key) == {"id": task}
    assert (await tasks(runtime, ALICE))[0]["status"] == "pending"  # not written yet
    assert [a.id for a in await runtime.pending(ALICE)] == [action.id]

    done = await runtime.decide(ALICE, action.id, True)
    assert (done.status, done.response) == ("done", "Marked done.")
    assert done.tool_calls[0].name == "update_task" and not done.tool_calls[0].error
    assert (await tasks(runtime, ALICE))[0]["status"] == "done"
    assert await runtime.pending(ALICE) == []
    stored = await runtime.storage.pending.get(ALICE, action.id)
    assert stored is not None and stored.status == "done" and stored.decided_by == ALICE

    (entry,) = await runtime.storage.audit.list(ALICE)
    assert (entry.operation, entry.outcome, entry.approval) == ("update", "ok", "approved")
    assert (entry.decided_by, entry.pending_id, entry.table) == (ALICE, action.id, "tasks")
    assert list(entry.row_ids) == [task]
    assert entry.turn_id == turn.turn_id and entry.chat_id == chat


async def test_a_denied_call_is_not_run_and_the_model_is_told(runtimes: MakeRuntime) -> None:
    runtime = await runtimes()
    await setup(runtime, [], delete_task="required")
    task = await add_task(runtime, ALICE, "milk")
    script = [call("delete_task", id=task), {"content": "Kept it."}]
    await runtime.storage.agents.update(AGENT, model_settings={"responses": script})
    chat = await chat_of(runtime, ALICE)
    turn = await runtime.chat(ALICE, AGENT, chat, "delete milk")
    (action,) = turn.pending
    assert action.preview is not None
    assert action.preview.rows[0].after is None  # a deletion
    done = await runtime.decide(ALICE, action.id, False)
    assert done.response == "Kept it."
    assert [t["title"] for t in await tasks(runtime, ALICE)] == ["milk"]
    assert any("declined" in r for r in await stored_tool_results(runtime, ALICE, chat))
    (entry,) = await runtime.storage.audit.list(ALICE)
    assert (entry.outcome, entry.approval, entry.decided_by) == ("denied", "denied", ALICE)
    with pytest.raises(AlreadyDecidedError, match="denied"):
        await runtime.decide(ALICE, action.id, True)


async def test_calls_that_need_no_approval_in_a_held_reply_run_at_once(
    runtimes: MakeRuntime,
) -> None:
    runtime = await runtimes()
    reply = {
        "tool_calls": [
            {"name": "add_task", "args": {"title": "bread"}},
            {"name": "add_task", "args": {"title": "eggs"}},
            {"name": "add_note", "args": {"body": "shopping"}},
        ]
    }
    await setup(runtime, [reply, {"content": "All saved."}], add_note="required")
    chat = await chat_of(runtime, ALICE)
    turn = await runtime.chat(ALICE, AGENT, chat, "shopping")
    assert [a.tool_name for a in turn.pending] == ["add_note"]
    assert sorted(t["title"] for t in await tasks(runtime, ALICE)) == ["bread", "eggs"]
    create = turn.pending[0].preview
    assert create is not None and create.operation == "create" and create.count == 1
    assert create.rows[0].before is None
    done = await runtime.decide(ALICE, turn.pending[0].id, True)
    assert done.response == "All saved."
    notes = await runtime.storage.records.select(
        ALICE, "notes", {"user_id": ALICE}, columns=["body"], order_by=[], limit=5
    )
    assert notes == [{"body": "shopping"}]


async def test_several_held_calls_wait_for_every_decision_before_the_model_goes_on(
    runtimes: MakeRuntime,
) -> None:
    runtime = await runtimes()
    reply = {
        "tool_calls": [
            {"name": "add_note", "args": {"body": "one"}},
            {"name": "add_note", "args": {"body": "two"}},
        ]
    }
    await setup(runtime, [reply, {"content": "Done."}], add_note="required")
    chat = await chat_of(runtime, ALICE)
    first, second = (await runtime.chat(ALICE, AGENT, chat, "notes")).pending
    partial = await runtime.decide(ALICE, first.id, True)
    assert partial.status == "approval_required" and [a.id for a in partial.pending] == [second.id]
    with pytest.raises(ApprovalPendingError):
        await runtime.chat(ALICE, AGENT, chat, "hello?")
    done = await runtime.decide(ALICE, second.id, False)
    assert (done.status, done.response) == ("done", "Done.")
    notes = await runtime.storage.records.select(
        ALICE, "notes", {"user_id": ALICE}, columns=["body"], order_by=[], limit=5
    )
    assert notes == [{"body": "one"}]


# -- whose, how often, how long -----------------------------------------------------------


async def test_another_user_can_neither_see_nor_decide_an_action(runtimes: MakeRuntime) -> None:
    runtime = await runtimes()
    await setup(runtime, [call("add_note", body="x"), {"content": "ok"}], add_note="required")
    chat = await chat_of(runtime, ALICE)
    (action,) = (await runtime.chat(ALICE, AGENT, chat, "note")).pending
    assert await runtime.pending(BOB) == []
    assert await runtime.storage.pending.get(BOB, action.id) is None
    with pytest.raises(NotFoundError):
        await runtime.decide(BOB, action.id, True)
    with pytest.raises(NotFoundError):
        await runtime.decide(BOB, uuid.uuid4(), True)
    with pytest.raises(NotFoundError):
        await runtime.undo(BOB, chat)
    still = await runtime.storage.pending.get(ALICE, action.id)
    assert still is not None and still.status == "pending"


async def test_two_processes_approving_at_once_run_the_call_once(runtimes: MakeRuntime) -> None:
    one = await runtimes()
    two = await runtimes()
    await setup(one, [call("add_note", body="once"), {"content": "ok"}], add_note="required")
    chat = await chat_of(one, ALICE)
    (action,) = (await one.chat(ALICE, AGENT, chat, "note")).pending
    results = await asyncio.gather(
        one.decide(ALICE, action.id, True),
        two.decide(ALICE, action.id, True),
        return_exceptions=True,
    )
    errors = [r for r in results if isinstance(r, BaseException)]
    assert len(errors) == 1 and isinstance(errors[0], AlreadyDecidedError), results
    notes = await one.storage.records.select(
        ALICE, "notes", {"user_id": ALICE}, columns=["body"], order_by=[], limit=5
    )
    assert notes == [{"body": "once"}]
    assert [e.outcome for e in await one.storage.audit.list(ALICE)] == ["ok"]


async def test_an_action_survives_a_restart_and_is_decided_by_another_process(
    runtimes: MakeRuntime,
) -> None:
    first = await runtimes()
    await setup(first, [call("add_note", body="later")], add_note="required")
    chat = await chat_of(first, ALICE)
    (action,) = (await first.chat(ALICE, AGENT, chat, "note")).pending
    await first.close()
    second = await runtimes()
    # The script of the new process's model (a real model would just go on).
    await second.storage.agents.update(
        AGENT, model_settings={"responses": [{"content": "Saved after all."}]}
    )
    (waiting,) = await second.pending(ALICE)
    assert waiting.id == action.id and dict(waiting.args) == {"body": "later"}
    done = await second.decide(ALICE, action.id, True)
    assert done.response == "Saved after all."
    notes = await second.storage.records.select(
        ALICE, "notes", {"user_id": ALICE}, columns=["body"], order_by=[], limit=5
    )
    assert notes == [{"body": "later"}]


async def test_an_expired_action_counts_as_denied_and_says_so(runtimes: MakeRuntime) -> None:
    runtime = await runtimes(approval_timeout=10)
    script = [call("add_note", body="late"), {"content": "Hello again."}]
    await setup(runtime, script, add_note="required")
    chat = await chat_of(runtime, ALICE)
    (action,) = (await runtime.chat(ALICE, AGENT, chat, "note")).pending
    with pytest.raises(ApprovalPendingError, match="add_note"):
        await runtime.chat(ALICE, AGENT, chat, "hello")
    await expire(runtime, action.id)
    with pytest.raises(AlreadyDecidedError, match="expired"):
        await runtime.decide(ALICE, action.id, True)
    results = await stored_tool_results(runtime, ALICE, chat)
    assert any("expired" in r for r in results)
    # The chat goes on at once.
    turn = await runtime.chat(ALICE, AGENT, chat, "hello")
    assert turn.response == "Hello again."
    notes = await runtime.storage.records.select(
        ALICE, "notes", {"user_id": ALICE}, columns=["body"], order_by=[], limit=5
    )
    assert notes == []
    assert [e.outcome for e in await runtime.storage.audit.list(ALICE)] == ["expired"]


async def test_a_new_message_settles_expired_actions_first(runtimes: MakeRuntime) -> None:
    runtime = await runtimes(approval_timeout=10)
    script = [call("add_note", body="late"), {"content": "Hello again."}]
    await setup(runtime, script, add_note="required")
    chat = await chat_of(runtime, ALICE)
    (action,) = (await runtime.chat(ALICE, AGENT, chat, "note")).pending
    await expire(runtime, action.id)
    turn = await runtime.chat(ALICE, AGENT, chat, "hello")
    assert turn.response == "Hello again."
    stored = await runtime.storage.pending.get(ALICE, action.id)
    assert stored is not None and stored.status == "expired"
    assert any("expired" in r for r in await stored_tool_results(runtime, ALICE, chat))


async def expire(runtime: Runtime, action_id: uuid.UUID) -> None:
    """Move an action's expiry into the past, as time passing would."""
    from chatwright.plugins.sql import schema

    t = schema.pending_actions
    past = datetime.now(UTC) - timedelta(seconds=1)
    async with runtime.storage.write() as conn:  # type: ignore[attr-defined]
        await conn.execute(t.update().where(t.c.id == action_id).values(expires_at=past))


# -- rows changed since the preview ------------------------------------------------------


async def test_rows_changed_since_the_preview_are_shown_again_not_written(
    runtimes: MakeRuntime,
) -> None:
    runtime = await runtimes()
    await setup(runtime, [], update_task="required")
    task = await add_task(runtime, ALICE, "milk")
    script = [call("update_task", id=task, status="done"), {"content": "Done."}]
    await runtime.storage.agents.update(AGENT, model_settings={"responses": script})
    chat = await chat_of(runtime, ALICE)
    (action,) = (await runtime.chat(ALICE, AGENT, chat, "milk done")).pending
    await runtime.storage.records.update(
        ALICE, "tasks", {"id": task, "user_id": ALICE}, {"title": "oat milk"}, returning=["id"]
    )
    with pytest.raises(PreviewChangedError, match="no longer") as caught:
        await runtime.decide(ALICE, action.id, True)
    fresh = caught.value.preview
    assert fresh is not None and fresh.rows[0].before["title"] == "oat milk"  # type: ignore[attr-defined]
    assert (await tasks(runtime, ALICE))[0]["status"] == "pending"
    again = await runtime.storage.pending.get(ALICE, action.id)
    assert again is not None and again.status == "pending"
    assert again.preview is not None and again.preview.rows[0].before["title"] == "oat milk"  # type: ignore[index]
    done = await runtime.decide(ALICE, action.id, True)
    assert done.response == "Done."
    assert (await tasks(runtime, ALICE))[0] == {"id": task, "title": "oat milk", "status": "done"}


# -- user mode ------------------------------------------------------------------------------


async def test_user_mode_asks_by_default_and_each_user_chooses(runtimes: MakeRuntime) -> None:
    runtime = await runtimes()
    script = [call("add_task", title="milk"), {"content": "Added."}]
    await setup(runtime, script, add_task="user")
    row = next(r for r in await runtime.storage.tools.list(AGENT) if r.name == "add_task")
    other = next(r for r in await runtime.storage.tools.list(AGENT) if r.name == "list_tasks")
    alices, bobs = await chat_of(runtime, ALICE), await chat_of(runtime, BOB)
    await runtime.choose_approval(BOB, row.id, "auto")
    assert (await runtime.chat(ALICE, AGENT, alices, "milk")).status == "approval_required"
    bob_turn = await runtime.chat(BOB, AGENT, bobs, "milk")
    assert (bob_turn.status, bob_turn.response) == ("done", "Added.")
    assert [t["title"] for t in await tasks(runtime, BOB)] == ["milk"]
    with pytest.raises(InvalidInputError, match="'user' mode"):
        await runtime.choose_approval(BOB, other.id, "auto")
    with pytest.raises(InvalidInputError, match="sometimes"):
        await runtime.choose_approval(BOB, row.id, "sometimes")
    with pytest.raises(NotFoundError):
        await runtime.choose_approval(BOB, 10**6, "auto")


@pytest.mark.parametrize(
    ("before", "during", "held"), [("auto", "required", True), ("required", "auto", False)]
)
async def test_a_choice_changed_during_a_turn_counts_for_its_next_call(
    runtimes: MakeRuntime, before: str, during: str, held: bool
) -> None:
    runtime = await runtimes()
    script = [call("list_tasks"), call("add_task", title="milk"), {"content": "Added."}]
    await setup(runtime, script, add_task="user")
    row = next(r for r in await runtime.storage.tools.list(AGENT) if r.name == "add_task")
    chat = await chat_of(runtime, ALICE)
    await runtime.choose_approval(ALICE, row.id, before)

    async def choose_at_first_reply(message: Any) -> None:
        # The turn's first reply calls another tool; meanwhile the user changes their mind.
        if getattr(message, "tool_calls", None) and message.tool_calls[0]["name"] == "list_tasks":
            await runtime.choose_approval(ALICE, row.id, during)

    turn = await runtime.chat(ALICE, AGENT, chat, "milk", on_message=choose_at_first_reply)
    if held:
        assert turn.status == "approval_required"
        assert [a.tool_name for a in turn.pending] == ["add_task"]
        assert await tasks(runtime, ALICE) == []
    else:
        assert (turn.status, turn.response) == ("done", "Added.")
        assert [t["title"] for t in await tasks(runtime, ALICE)] == ["milk"]


async def test_a_decision_that_lost_its_chat_while_it_waited_says_so(
    runtimes: MakeRuntime,
) -> None:
    from chatwright.userdata import user_data_of

    runtime = await runtimes()
    chat, action = await held_milk(runtime, "Added.")
    # The decision waits for the chat (another request of this process holds it) ...
    lock = runtime.turn_lock(ALICE, chat)
    await lock.acquire()
    deciding = asyncio.create_task(runtime.decide(ALICE, action.id, True))
    await asyncio.sleep(0.05)
    assert not deciding.done()
    # ... and meanwhile the chat, with its pending action, is deleted.
    await user_data_of(runtime.storage).delete_chat(ALICE, chat)
    lock.release()
    with pytest.raises(NotFoundError) as lost:
        await deciding
    assert str(lost.value) == (
        f"no pending action {action.id} for this user: it went with its chat {chat}, "
        "deleted meanwhile"
    )
    assert await tasks(runtime, ALICE) == []


async def held_milk(runtime: Runtime, reply: str) -> tuple[uuid.UUID, Any]:
    """A chat of alice's whose turn holds ``add_task(milk)`` for approval (the model then
    answers ``reply``): the chat and the action."""
    script = [call("add_task", title="milk"), {"content": reply}]
    await setup(runtime, script, add_task="required")
    chat = await chat_of(runtime, ALICE)
    (action,) = (await runtime.chat(ALICE, AGENT, chat, "milk")).pending
    return chat, action


async def _stopped_while_running(
    runtime: Runtime, chat: uuid.UUID, action: Any, write: bool
) -> None:
    """What a process that approved ``action`` leaves when it stops while the call runs: the
    action claimed, its write made or not, no result, the chat's lease given up (expired)."""
    from chatwright.approvals import Decision
    from chatwright.tools import TurnContext
    from chatwright.turns import holding_turn
    from chatwright.writes import call_tool

    assert await runtime.storage.pending.decide(ALICE, action.id, "approved", ALICE) is not None
    start = await runtime.turns.begin(ALICE, AGENT, chat, None)
    held = holding_turn.set(start)
    try:
        if write:
            built = await runtime.agent_for(ALICE, AGENT)
            context = TurnContext(ALICE, AGENT, chat, turn_id=action.turn_id)
            made = {"name": action.tool_name, "args": dict(action.args)}
            call = {**made, "id": action.tool_call_id, "type": "tool_call"}
            decision = Decision("approved", ALICE, action.id, expect=action.preview)
            await call_tool(
                runtime.plugins, runtime.storage, built.by_name, call, context, decision
            )
    finally:
        holding_turn.reset(held)
        await runtime.turns.finish(start, [], touch=False)


@pytest.mark.parametrize("written", [True, False])
async def test_an_approved_call_whose_process_stopped_is_told_as_it_ended(
    runtimes: MakeRuntime, model_inputs: list[list[Any]], written: bool
) -> None:
    runtime = await runtimes()
    chat, action = await held_milk(runtime, "Noted.")
    await _stopped_while_running(runtime, chat, action, written)
    assert [t["title"] for t in await tasks(runtime, ALICE)] == (["milk"] if written else [])

    before = len(model_inputs)
    turn = await runtime.chat(ALICE, AGENT, chat, "did you add it?")
    prompts = model_inputs[before:]
    assert turn.response == "Noted."
    (result,) = [m for m in prompts[0] if getattr(m, "tool_call_id", None) == action.tool_call_id]
    ended = await runtime.storage.pending.get(ALICE, action.id)
    assert ended is not None and ended.result == result.content
    if written:
        assert ended.status == "done" and result.status == "success"
        assert result.content.startswith("add_task ran and its write was made (audit entry ")
        assert "(its process stopped while it ran); do not run it again" in result.content
    else:
        assert ended.status == "failed" and result.status == "error"
        assert result.content == (
            "error: add_task was cut off before it finished (its process stopped while it "
            "ran); nothing it had not committed was written"
        )
    assert NOT_RUN not in [m.content for m in prompts[0]]
    # Stored where it belongs, before the next message, so later turns read it as is.
    stored = await runtime.storage.messages.window(ALICE, chat, 20)
    roles = [m.role for m in stored]
    assert roles == ["human", "ai", "tool", "human", "ai"], roles
    assert stored[2].content["data"]["content"] == result.content
    # Deciding it again says what became of it.
    word = "approved and run" if written else "approved (it failed)"
    with pytest.raises(AlreadyDecidedError, match=re.escape(f"({action.tool_name}) was {word}")):
        await runtime.decide(ALICE, action.id, True)


async def test_deciding_an_approved_call_whose_process_stopped_ends_it(
    runtimes: MakeRuntime,
) -> None:
    runtime = await runtimes()
    chat, action = await held_milk(runtime, "Noted.")
    await _stopped_while_running(runtime, chat, action, True)
    # Before: "was approved ... already", for ever, whatever the user did.
    with pytest.raises(AlreadyDecidedError, match=re.escape("was approved and run at")):
        await runtime.decide(ALICE, action.id, False)
    ended = await runtime.storage.pending.get(ALICE, action.id)
    assert ended is not None and ended.status == "done"
    assert ended.result is not None and "its write was made" in ended.result


async def test_an_interrupted_call_is_found_however_many_actions_the_chat_had(
    runtimes: MakeRuntime,
) -> None:
    """The chat's actions are not read a page at a time: its newest is the lost one."""
    from chatwright.approvals import NewPending

    runtime = await runtimes()
    await setup(
        runtime, [call("add_task", title="milk"), {"content": "Noted."}], add_task="required"
    )
    chat = await chat_of(runtime, ALICE)
    expires = datetime.now(UTC) + timedelta(hours=1)
    old = [
        NewPending(uuid.uuid4(), None, "add_task", f"old-{i}", {"title": "x"}, None, expires)
        for i in range(120)
    ]
    for made in await runtime.storage.pending.create(ALICE, AGENT, chat, old):
        assert await runtime.storage.pending.decide(ALICE, made.id, "denied", ALICE)
    # The 121st action of the chat, its newest.
    (action,) = (await runtime.chat(ALICE, AGENT, chat, "milk")).pending
    await _stopped_while_running(runtime, chat, action, True)
    assert (await runtime.chat(ALICE, AGENT, chat, "and?")).response == "Noted."
    ended = await runtime.storage.pending.get(ALICE, action.id)
    assert ended is not None and ended.status == "done"


async def test_an_interrupted_call_stays_approved_while_the_audit_log_cannot_be_read(
    runtimes: MakeRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chatwright.errors import StorageError

    runtime = await runtimes()
    chat, action = await held_milk(runtime, "Noted.")
    await _stopped_while_running(runtime, chat, action, True)
    audit = runtime.storage.audit
    real = audit.list

    async def away(*args: Any, **kwargs: Any) -> Any:
        raise StorageError("the database is unavailable; the server log has the details")

    monkeypatch.setattr(audit, "list", away)
    with pytest.raises(StorageError):
        await runtime.chat(ALICE, AGENT, chat, "and?")
    # Not ended "failed" for want of a read: the write is there. Nothing was stored.
    still = await runtime.storage.pending.get(ALICE, action.id)
    assert still is not None and still.status == "approved"
    assert [m.role for m in await runtime.storage.messages.window(ALICE, chat, 20)] == [
        "human",
        "ai",
    ]
    monkeypatch.setattr(audit, "list", real)
    assert (await runtime.chat(ALICE, AGENT, chat, "and?")).response == "Noted."
    ended = await runtime.storage.pending.get(ALICE, action.id)
    assert ended is not None and ended.status == "done"


async def test_an_undo_ends_an_interrupted_call_before_its_note(runtimes: MakeRuntime) -> None:
    runtime = await runtimes()
    chat, action = await held_milk(runtime, "Noted.")
    await _stopped_while_running(runtime, chat, action, True)
    report = await runtime.undo(ALICE, chat)
    assert len(report.changes) == 1
    stored = await runtime.storage.messages.window(ALICE, chat, 20)
    assert [m.role for m in stored] == ["human", "ai", "tool", "ai"]
    assert stored[2].content["data"]["content"].startswith("add_task ran and its write was made")
    assert stored[3].content["data"]["content"].startswith("Undone: the 1 row change")
    assert await tasks(runtime, ALICE) == []


async def test_a_decision_stores_its_result_before_the_model_runs_on(
    runtimes: MakeRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process that stops while the resumed model runs leaves the approved call's
    result in the chat (the action is done, so nothing else would tell the model)."""
    from chatwright.plugins.models.scripted import ScriptedChatModel

    runtime = await runtimes()
    chat, action = await held_milk(runtime, "Added.")
    seen: list[list[str]] = []
    original = ScriptedChatModel._agenerate

    async def looking(self: Any, messages: list[Any], *args: Any, **kwargs: Any) -> Any:
        seen.append([m.role for m in await runtime.storage.messages.window(ALICE, chat, 20)])
        return await original(self, messages, *args, **kwargs)

    monkeypatch.setattr(ScriptedChatModel, "_agenerate", looking)
    assert (await runtime.decide(ALICE, action.id, True)).response == "Added."
    assert seen == [["human", "ai", "tool"]]
    stored = await runtime.storage.messages.window(ALICE, chat, 20)
    assert [m.role for m in stored] == ["human", "ai", "tool", "ai"]  # stored once


# -- the write hooks ---------------------------------------------------------------------


async def test_before_write_vetoes_and_after_write_hears_every_write(runtimes: MakeRuntime) -> None:
    policy = Policy()
    runtime = await runtimes(policy)
    reply = {
        "tool_calls": [
            {"name": "add_task", "args": {"title": "MILK"}},
            {"name": "add_task", "args": {"title": "bread"}},
            {"name": "list_tasks", "args": {}},
        ]
    }
    await setup(runtime, [reply, {"content": "ok"}])
    chat = await chat_of(runtime, ALICE)
    turn = await runtime.chat(ALICE, AGENT, chat, "add")
    assert [t["title"] for t in await tasks(runtime, ALICE)] == ["bread"]
    vetoed = next(c for c in turn.tool_calls if c.args.get("title") == "MILK")
    assert vetoed.error and "no shouting" in str(vetoed.result)
    # The reply's calls run concurrently: in no particular order. Reads are not asked.
    assert sorted(str(c.args.get("title")) for c in policy.before) == ["MILK", "bread"]
    after = sorted((str(c.args.get("title")), o.ok, o.vetoed) for c, o in policy.after)
    assert after == [("MILK", False, True), ("bread", True, False)]
    outcomes = sorted(e.outcome for e in await runtime.storage.audit.list(ALICE))
    assert outcomes == ["ok", "vetoed"]


async def test_an_approved_call_goes_through_the_write_hooks_too(runtimes: MakeRuntime) -> None:
    policy = Policy()
    runtime = await runtimes(policy)
    await setup(runtime, [call("add_task", title="LOUD"), {"content": "ok"}], add_task="required")
    chat = await chat_of(runtime, ALICE)
    (action,) = (await runtime.chat(ALICE, AGENT, chat, "add")).pending
    assert policy.before == []  # nothing runs before the decision
    await runtime.decide(ALICE, action.id, True)
    assert [(c.approval, c.decided_by) for c in policy.before] == [("approved", ALICE)]
    assert await tasks(runtime, ALICE) == []
    stored = await runtime.storage.pending.get(ALICE, action.id)
    assert stored is not None and stored.status == "failed" and "no shouting" in str(stored.result)


# -- audit and undo --------------------------------------------------------------------------


async def test_every_crud_write_is_audited_and_a_turn_is_undone_in_one_go(
    runtimes: MakeRuntime,
) -> None:
    runtime = await runtimes()
    await setup(runtime, [])
    keep = await add_task(runtime, ALICE, "keep")
    gone = await add_task(runtime, ALICE, "gone")
    bobs_task = await add_task(runtime, BOB, "bob's")
    reply = {
        "tool_calls": [
            {"name": "add_task", "args": {"title": "new"}},
            {"name": "update_task", "args": {"id": keep, "status": "done"}},
            {"name": "delete_task", "args": {"id": gone}},
            {"name": "save_memory", "args": {"fact": "likes milk"}},
        ]
    }
    await runtime.storage.agents.update(
        AGENT, model_settings={"responses": [reply, {"content": "Done."}]}
    )
    chat = await chat_of(runtime, ALICE)
    turn = await runtime.chat(ALICE, AGENT, chat, "do things")
    assert not any(c.error for c in turn.tool_calls), turn.tool_calls
    entries = await runtime.storage.audit.list(ALICE)
    assert sorted(e.operation for e in entries) == ["create", "delete", "update", "upsert"]
    assert all(e.turn_id == turn.turn_id and e.approval == "auto" for e in entries)
    assert sorted(t["title"] for t in await tasks(runtime, ALICE)) == ["keep", "new"]

    report = await runtime.undo(ALICE, chat)
    assert report.turn_id == turn.turn_id
    assert sorted((t["title"], t["status"]) for t in await tasks(runtime, ALICE)) == [
        ("gone", "pending"),
        ("keep", "pending"),
    ]
    assert await runtime.storage.memories.get(ALICE, AGENT) is None
    assert [t["title"] for t in await tasks(runtime, BOB)] == ["bob's"] and bobs_task
    last = (await runtime.storage.audit.list(ALICE))[0]
    assert (last.operation, last.undo_of) == ("undo", turn.turn_id)
    page = await runtime.storage.messages.page(ALICE, chat, limit=100)
    assert "Undone" in str(page[-1].content["data"]["content"])
    with pytest.raises(UndoConflictError, match="already"):
        await runtime.undo(ALICE, chat, turn_id=turn.turn_id)
    with pytest.raises(NotFoundError, match="nothing to undo"):
        await runtime.undo(ALICE, chat)


async def test_undo_is_refused_naming_the_rows_changed_since(runtimes: MakeRuntime) -> None:
    runtime = await runtimes()
    await setup(runtime, [])
    task = await add_task(runtime, ALICE, "milk")
    script = [call("update_task", id=task, status="done"), {"content": "Done."}]
    await runtime.storage.agents.update(AGENT, model_settings={"responses": script})
    chat = await chat_of(runtime, ALICE)
    await runtime.chat(ALICE, AGENT, chat, "done")
    await runtime.storage.records.update(
        ALICE, "tasks", {"id": task, "user_id": ALICE}, {"title": "oat milk"}, returning=["id"]
    )
    with pytest.raises(UndoConflictError, match=str(task)):
        await runtime.undo(ALICE, chat)
    assert (await tasks(runtime, ALICE))[0] == {"id": task, "title": "oat milk", "status": "done"}


# -- the history stays valid model input ---------------------------------------------------


def test_a_call_left_without_a_result_gets_one_saying_it_was_not_run() -> None:
    from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

    calls = [
        {"name": "a", "args": {}, "id": "1", "type": "tool_call"},
        {"name": "b", "args": {}, "id": "2", "type": "tool_call"},
    ]
    messages = [
        HumanMessage("hi"),
        AIMessage(content="", tool_calls=calls),
        ToolMessage(content="ok", tool_call_id="1"),
        HumanMessage("again"),
    ]
    fixed = answered(messages)
    assert [type(m).__name__ for m in fixed] == [
        "HumanMessage",
        "AIMessage",
        "ToolMessage",
        "ToolMessage",
        "HumanMessage",
    ]
    assert fixed[3].content == NOT_RUN and fixed[3].tool_call_id == "2"  # type: ignore[attr-defined]
    complete = [*messages[:3], ToolMessage(content="ok", tool_call_id="2"), messages[3]]
    assert answered(complete) == complete
