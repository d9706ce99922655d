"""Undo and expired approvals against the chat's history, on SQLite and PostgreSQL.

- An undo of an earlier turn while a later turn waits for a decision is refused:
  its note would come between the waiting call and its result, and the model
  would then be told the call was not run, although it ran once approved.
- A turn undone long ago (its undo no longer among the chat's latest audit
  entries) is still "undone already": undoing it again would revert a later
  turn's write.
- Approving the last live action of a reply whose other action expired goes on
  with the turn: the expired one is answered as not run and listed as waiting
  no more.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.write_safety import AGENT, bearer, calls, seed_writer, serving


async def roles_and_calls(api: Any) -> list[tuple[str, str]]:
    """The chat's stored messages in order: role, and the tool call ids each answers/makes."""
    rows = await api.sql("SELECT role, content FROM chat_messages ORDER BY id")
    out = []
    for row in rows:
        content = row["content"]
        if isinstance(content, str):
            content = json.loads(content)
        data = content.get("data", {})
        ids = [c["id"] for c in data.get("tool_calls") or []] or [data.get("tool_call_id") or ""]
        out.append((row["role"], ",".join(i for i in ids if i)))
    return out


async def two_waiting_deletes(api: Any) -> tuple[str, int, dict[str, Any], dict[str, Any]]:
    """Alice's chat whose last reply deletes her tasks "one" and "two", both waiting:
    the chat, the id of "two", and the two pending actions in order."""
    await seed_writer(api.runtime, [])
    one = await api.task("alice", "one")
    two = await api.task("alice", "two")
    script = calls(("delete_task", {"id": one}), ("delete_task", {"id": two}), reply="Done.")
    await seed_writer(api.runtime, script)
    chat = await api.open_chat("alice")
    first, second = (await api.say_ok("alice", chat))["pending"]
    return chat, two, first, second


async def test_an_undo_while_another_turn_waits_for_a_decision_is_refused(sql_url: str) -> None:
    async with serving(sql_url) as api:
        await seed_writer(api.runtime, [], approval="required")
        [add] = [r for r in await api.runtime.storage.tools.list(AGENT) if r.name == "add_task"]
        await api.runtime.storage.tools.update(add.id, approval="auto")
        keep = await api.task("alice", "keep")
        chat = await api.open_chat("alice")
        await seed_writer(api.runtime, calls(("add_task", {"title": "new"}), reply="Added."))
        first = await api.say_ok("alice", chat)
        assert first["status"] == "done", first
        await seed_writer(api.runtime, calls(("delete_task", {"id": keep}), reply="Deleted."))
        second = await api.say_ok("alice", chat)
        assert second["status"] == "approval_required", second
        stored = await roles_and_calls(api)

        undo = await api.client.post(
            f"/api/chats/{chat}/undo", json={"turn_id": first["turn_id"]}, headers=bearer("alice")
        )
        assert undo.status_code == 409, undo.text
        assert "waits for your decision on delete_task" in undo.json()["error"]
        assert await roles_and_calls(api) == stored  # no note between the call and its result
        assert "new" in [title for title, _ in (await api.tasks("alice")).values()]

        # Decided, the turn goes on and ends; then the undo is made.
        action = second["pending"][0]["id"]
        approved = await api.client.post(f"/api/pending/{action}/approve", headers=bearer("alice"))
        assert approved.status_code == 200 and approved.json()["response"] == "Deleted."
        undo = await api.client.post(
            f"/api/chats/{chat}/undo", json={"turn_id": first["turn_id"]}, headers=bearer("alice")
        )
        assert undo.status_code == 200, undo.text
        assert "new" not in [title for title, _ in (await api.tasks("alice")).values()]
        history = await roles_and_calls(api)
        # Every tool result follows the message that made its call.
        for before, (role, ids) in itertools.pairwise(history):
            if role == "tool":
                assert before[0] in {"ai", "tool"} and (before[1] == ids or before[0] == "tool")


async def test_a_turn_undone_long_ago_is_not_undone_again(
    sql_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Few latest entries looked through, so that a few writes push the undo out of them.
    monkeypatch.setattr("chatwright.undo.UNDO_SCAN", 2)
    async with serving(sql_url) as api:
        await seed_writer(api.runtime, [], approval="auto")
        chat = await api.open_chat("alice")
        await seed_writer(api.runtime, calls(("add_task", {"title": "first"}), reply="Added."))
        first = await api.say_ok("alice", chat)
        undo = await api.client.post(
            f"/api/chats/{chat}/undo", json={"turn_id": first["turn_id"]}, headers=bearer("alice")
        )
        assert undo.status_code == 200, undo.text
        script = calls(*[("add_task", {"title": f"later {i}"}) for i in range(3)], reply="Added.")
        await seed_writer(api.runtime, script)
        await api.say_ok("alice", chat)

        again = await api.client.post(
            f"/api/chats/{chat}/undo", json={"turn_id": first["turn_id"]}, headers=bearer("alice")
        )
        assert again.status_code == 409, again.text
        assert "undone already" in again.json()["error"]
        undos = await api.sql("SELECT count(*) AS n FROM audit_log WHERE operation = 'undo'")
        assert undos[0]["n"] == 1
        titles = sorted(title for title, _ in (await api.tasks("alice")).values())
        assert titles == ["later 0", "later 1", "later 2"]


async def test_approving_the_last_live_action_beside_an_expired_one_goes_on(
    sql_url: str,
) -> None:
    async with serving(sql_url) as api:
        chat, two, first, second = await two_waiting_deletes(api)
        await api.expire(second["id"], datetime.now(UTC) - timedelta(minutes=1))

        approved = await api.client.post(
            f"/api/pending/{first['id']}/approve", headers=bearer("alice")
        )
        assert approved.status_code == 200, approved.text
        body = approved.json()
        assert body["status"] == "done" and body["response"] == "Done.", body
        assert body["pending"] == []
        # One deleted, the expired one not run, each answered once, after its call.
        assert sorted(await api.tasks("alice")) == [two]
        listed = await api.client.get(f"/api/pending?chat_id={chat}", headers=bearer("alice"))
        assert listed.json()["actions"] == []  # nothing waits any more
        history = await roles_and_calls(api)
        assert [role for role, _ in history] == ["human", "ai", "tool", "tool", "ai"]
        entries = await api.sql(
            "SELECT outcome FROM audit_log WHERE pending_id IS NOT NULL ORDER BY id"
        )
        assert sorted(e["outcome"] for e in entries) == ["expired", "ok"]


async def test_a_decision_tells_its_caller_of_the_expired_calls_it_answered(
    sql_url: str,
) -> None:
    """``on_message`` (the CLI's chat shows what it gets) hears every message the decision
    stores, the expired call's "not run" result too, in the order they are stored."""
    import uuid

    async with serving(sql_url) as api:
        _, _, first, second = await two_waiting_deletes(api)
        await api.expire(second["id"], datetime.now(UTC) - timedelta(minutes=1))
        heard: list[Any] = []

        async def hear(message: Any) -> None:
            heard.append(message)

        turn = await api.runtime.decide("alice", uuid.UUID(first["id"]), True, on_message=hear)
        assert turn.response == "Done."
        assert [(m.type, getattr(m, "tool_call_id", None)) for m in heard] == [
            ("tool", first["tool_call_id"]),
            ("tool", second["tool_call_id"]),
            ("ai", None),
        ]
        assert "expired" in heard[1].text and heard[1].status == "error"
        history = await roles_and_calls(api)
        stored = [(role, ids) for role, ids in history[2:]]
        assert stored == [
            ("tool", first["tool_call_id"]),
            ("tool", second["tool_call_id"]),
            ("ai", ""),
        ]


async def test_a_call_that_expires_while_the_approved_one_runs_waits_no_more(
    sql_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chatwright.decisions import Decisions

    ran = Decisions._run_bounded

    async def slow(self: Any, *args: Any) -> Any:
        await asyncio.sleep(1.5)  # the other call expires meanwhile
        return await ran(self, *args)

    monkeypatch.setattr(Decisions, "_run_bounded", slow)
    async with serving(sql_url) as api:
        _, two, first, second = await two_waiting_deletes(api)
        await api.expire(second["id"], datetime.now(UTC) + timedelta(seconds=1))

        approved = await api.client.post(
            f"/api/pending/{first['id']}/approve", headers=bearer("alice")
        )
        assert approved.status_code == 200, approved.text
        body = approved.json()
        assert (body["status"], body["response"], body["pending"]) == ("done", "Done.", [])
        assert sorted(await api.tasks("alice")) == [two]
        history = await roles_and_calls(api)
        assert [role for role, _ in history] == ["human", "ai", "tool", "tool", "ai"]


async def test_deciding_an_expired_call_answers_every_expired_call_of_the_reply(
    sql_url: str,
) -> None:
    async with serving(sql_url) as api:
        await seed_writer(api.runtime, [])
        ids = [await api.task("alice", title) for title in ("one", "two", "three")]
        script = calls(*[("delete_task", {"id": i}) for i in ids], reply="Done.")
        await seed_writer(api.runtime, script)
        chat = await api.open_chat("alice")
        live, late, later = (await api.say_ok("alice", chat))["pending"]
        past = datetime.now(UTC) - timedelta(minutes=1)
        await api.expire(late["id"], past)
        await api.expire(later["id"], past)

        denied = await api.client.post(f"/api/pending/{late['id']}/deny", headers=bearer("alice"))
        assert denied.status_code == 409 and "expired" in denied.json()["error"]
        listed = await api.client.get(f"/api/pending?chat_id={chat}", headers=bearer("alice"))
        assert [a["id"] for a in listed.json()["actions"]] == [live["id"]]
        # The live one decided last goes on with the turn.
        approved = await api.client.post(
            f"/api/pending/{live['id']}/approve", headers=bearer("alice")
        )
        body = approved.json()
        assert (body["status"], body["response"]) == ("done", "Done."), body
        history = await roles_and_calls(api)
        assert [role for role, _ in history] == ["human", "ai", "tool", "tool", "tool", "ai"]
