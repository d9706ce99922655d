"""Write safety through the real server: approval, preview, audit log and undo over HTTP.

Every test starts the app under uvicorn on a loopback port (JWT auth, users
``alice`` and ``bob``) and talks to it with httpx; the ``writer`` agent runs the
``scripted`` model, whose crud tool rows wait for approval unless a test says
otherwise (see :mod:`tests.write_safety`). Rows are checked with plain SQL.

What is checked:

1. a turn stops before a tool that needs approval: ``approval_required``, the
   pending action with its preview (delete, update, upsert; SQLite and
   PostgreSQL), nothing written; approve runs it with the stored arguments and
   answers the continuation; deny writes nothing and the model is told the user
   declined;
2. a chat that waits answers 409 with the pending actions; an expired action
   answers 409 saying so, and the next message goes on;
3. another user's action is not found on every route, and absent from their list;
4. two concurrent approvals run the tool once (one 200, one 409);
5. rows changed between preview and approval: 409 with the fresh preview, then
   approved again;
6. a restart between the pending action and the decision, and (PostgreSQL) a
   decision on another process;
7. the audit log: own entries only, paged with ``more``, ``since``;
8. undo: create, update and delete reverted; a row changed since makes undo 409
   naming it; another user's chat is not found;
9. a user's approval choice for a ``user``-mode tool row;
10. the stream sends ``approval`` before ``done``.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import ServerProcess, clean_env, pg_env
from tests.write_safety import (
    AGENT,
    SECRET,
    Api,
    add_schedule_all,
    bearer,
    calls,
    seed_writer,
    serving,
)

pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")

PENDING_KEYS = {
    "id",
    "agent_name",
    "chat_id",
    "turn_id",
    "tool_id",
    "tool_name",
    "tool_call_id",
    "args",
    "preview",
    "status",
    "created_at",
    "expires_at",
    "decided_at",
    "decided_by",
    "result",
}


def parse_sse(text: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in text.split("\n\n"):
        if not block.strip() or block.startswith(":"):
            continue
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((fields["event"], json.loads(fields["data"])))
    return events


def only_pending(turn: dict[str, Any]) -> dict[str, Any]:
    assert turn["status"] == "approval_required", turn
    assert turn["response"] == "", turn
    assert len(turn["pending"]) == 1, turn["pending"]
    action: dict[str, Any] = turn["pending"][0]
    assert set(action) == PENDING_KEYS, action
    assert action["status"] == "pending"
    return action


async def messages(api: Api, user: str, chat_id: str) -> list[dict[str, Any]]:
    page = await api.client.get(f"/api/chats/{chat_id}/messages", headers=bearer(user))
    assert page.status_code == 200, page.text
    found: list[dict[str, Any]] = page.json()["messages"]
    return found


# -- approve and deny -----------------------------------------------------------------


async def test_delete_waits_with_a_preview_and_approve_runs_it(sql_url: str) -> None:
    async with serving(sql_url) as api:
        await seed_writer(api.runtime, [])
        keep = await api.task("alice", "keep me")
        milk = await api.task("alice", "buy milk")
        # The script names the row to delete: the id is only known now.
        await seed_writer(api.runtime, calls(("delete_task", {"id": milk}), reply="Deleted."))
        chat_id = await api.open_chat("alice")

        turn = await api.say_ok("alice", chat_id, "delete the milk task")
        action = only_pending(turn)
        assert action["tool_name"] == "delete_task"
        assert action["args"] == {"id": milk}
        assert action["chat_id"] == chat_id
        assert action["turn_id"] == turn["turn_id"]
        preview = action["preview"]
        assert preview["table"] == "tasks" and preview["operation"] == "delete"
        assert preview["count"] == 1
        [row] = preview["rows"]
        assert row["key"] == {"id": milk}
        assert row["before"]["title"] == "buy milk" and row["after"] is None
        # Nothing ran yet.
        assert set(await api.tasks("alice")) == {keep, milk}
        listed = await api.client.get("/api/pending", headers=bearer("alice"))
        assert [a["id"] for a in listed.json()["actions"]] == [action["id"]]

        approved = await api.client.post(
            f"/api/pending/{action['id']}/approve", headers=bearer("alice")
        )
        assert approved.status_code == 200, approved.text
        done = approved.json()
        assert done["status"] == "done" and done["pending"] == []
        assert done["response"] == "Deleted."
        assert done["turn_id"] == turn["turn_id"]
        assert done["tool_calls"][0]["name"] == "delete_task"
        assert done["tool_calls"][0]["error"] is False
        assert set(await api.tasks("alice")) == {keep}

        got = await api.client.get(f"/api/pending/{action['id']}", headers=bearer("alice"))
        assert got.json()["status"] == "done"
        assert got.json()["decided_by"] == "alice"
        assert (await api.client.get("/api/pending", headers=bearer("alice"))).json() == {
            "actions": []
        }
        everything = await api.client.get("/api/pending?status=all", headers=bearer("alice"))
        assert [a["status"] for a in everything.json()["actions"]] == ["done"]

        entries = (await api.client.get("/api/audit", headers=bearer("alice"))).json()["entries"]
        [entry] = [e for e in entries if e["operation"] == "delete"]
        assert entry["outcome"] == "ok" and entry["table"] == "tasks"
        assert entry["approval"] == "approved" and entry["decided_by"] == "alice"
        assert entry["pending_id"] == action["id"]
        assert entry["turn_id"] == turn["turn_id"]
        assert entry["changes"][0]["before"]["title"] == "buy milk"


async def test_deny_writes_nothing_and_the_model_is_told(sql_url: str) -> None:
    async with serving(sql_url) as api:
        await seed_writer(api.runtime, [])
        milk = await api.task("alice", "buy milk")
        await seed_writer(api.runtime, calls(("delete_task", {"id": milk}), reply="Kept it."))
        chat_id = await api.open_chat("alice")
        action = only_pending(await api.say_ok("alice", chat_id))

        denied = await api.client.post(f"/api/pending/{action['id']}/deny", headers=bearer("alice"))
        assert denied.status_code == 200, denied.text
        assert denied.json()["response"] == "Kept it."
        assert denied.json()["status"] == "done"
        assert denied.json()["tool_calls"][0]["error"] is True
        assert "declined" in str(denied.json()["tool_calls"][0]["result"])
        assert set(await api.tasks("alice")) == {milk}
        tool_messages = [m for m in await messages(api, "alice", chat_id) if m["role"] == "tool"]
        assert len(tool_messages) == 1 and "declined" in tool_messages[0]["text"]
        got = await api.client.get(f"/api/pending/{action['id']}", headers=bearer("alice"))
        assert got.json()["status"] == "denied"
        again = await api.client.post(
            f"/api/pending/{action['id']}/approve", headers=bearer("alice")
        )
        assert again.status_code == 409, again.text
        assert "denied" in again.json()["error"]
        assert set(await api.tasks("alice")) == {milk}
        entries = (await api.client.get("/api/audit", headers=bearer("alice"))).json()["entries"]
        assert [(e["outcome"], e["approval"]) for e in entries] == [("denied", "denied")]


async def test_update_and_upsert_previews_show_before_and_after(sql_url: str) -> None:
    async with serving(sql_url) as api:
        await seed_writer(api.runtime, [])
        milk = await api.task("alice", "buy milk")
        await api.task("bob", "bob's task")
        await api.sql(
            "INSERT INTO agent_memories (user_id, agent_name, notes, updated_at) "
            "VALUES ('alice', :agent, 'likes tea', CURRENT_TIMESTAMP)",
            agent=AGENT,
        )
        script = calls(
            ("update_task", {"id": milk, "title": "buy oat milk", "status": "done"}),
            ("save_memory", {"fact": "likes coffee"}),
            reply="Both done.",
        )
        await seed_writer(api.runtime, script)
        chat_id = await api.open_chat("alice")
        turn = await api.say_ok("alice", chat_id)
        assert turn["status"] == "approval_required"
        update, upsert = sorted(turn["pending"], key=lambda a: a["tool_name"])[::-1]
        assert update["tool_name"] == "update_task"
        [row] = update["preview"]["rows"]
        assert update["preview"]["count"] == 1
        assert (row["before"]["title"], row["before"]["status"]) == ("buy milk", "pending")
        assert (row["after"]["title"], row["after"]["status"]) == ("buy oat milk", "done")
        assert upsert["tool_name"] == "save_memory"
        assert upsert["preview"]["operation"] == "upsert"
        [mem] = upsert["preview"]["rows"]
        assert mem["before"]["notes"] == "likes tea"
        assert mem["after"]["notes"] == "likes tea\nlikes coffee"

        # The first decision leaves the other waiting: no reply yet.
        first = await api.client.post(
            f"/api/pending/{update['id']}/approve", headers=bearer("alice")
        )
        assert first.status_code == 200, first.text
        assert first.json()["status"] == "approval_required"
        assert [a["id"] for a in first.json()["pending"]] == [upsert["id"]]
        assert first.json()["response"] == ""
        second = await api.client.post(
            f"/api/pending/{upsert['id']}/approve", headers=bearer("alice")
        )
        assert second.status_code == 200, second.text
        assert second.json()["response"] == "Both done."
        assert (await api.tasks("alice"))[milk] == ("buy oat milk", "done")
        notes = await api.sql("SELECT notes FROM agent_memories WHERE user_id = 'alice'")
        assert notes == [{"notes": "likes tea\nlikes coffee"}]


async def test_preview_is_capped_with_a_count(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/cap.db"
    async with serving(url, tools={"preview_rows": 2}) as api:
        await seed_writer(api.runtime, [])
        for i in range(5):
            await api.task("alice", f"task {i}")
        # A crud update whose filter matches several rows: a due date for every pending task.
        await add_schedule_all(api.runtime)
        script = calls(("schedule_all", {"status": "pending", "due_date": "2027-01-04"}))
        await seed_writer(api.runtime, script)
        chat_id = await api.open_chat("alice")
        action = only_pending(await api.say_ok("alice", chat_id))
        assert action["preview"]["count"] == 5
        assert len(action["preview"]["rows"]) == 2


# -- waiting, expiry, conflicts -----------------------------------------------------------


async def test_a_waiting_chat_answers_409_with_its_actions_and_expiry_is_said(
    sql_url: str,
) -> None:
    async with serving(sql_url) as api:
        await seed_writer(api.runtime, [])
        milk = await api.task("alice", "buy milk")
        script = [
            *calls(("delete_task", {"id": milk}), reply="unused")[:1],
            {"content": "Fine, moving on."},
            {"content": "Still here."},
        ]
        await seed_writer(api.runtime, script)
        chat_id = await api.open_chat("alice")
        action = only_pending(await api.say_ok("alice", chat_id))

        busy = await api.say("alice", chat_id, "hello?")
        assert busy.status_code == 409, busy.text
        assert [a["id"] for a in busy.json()["pending"]] == [action["id"]]
        assert busy.json()["error"]

        await api.expire(action["id"], datetime.now(UTC) - timedelta(seconds=1))
        late = await api.client.post(
            f"/api/pending/{action['id']}/approve", headers=bearer("alice")
        )
        assert late.status_code == 409, late.text
        assert "expired" in late.json()["error"]
        assert set(await api.tasks("alice")) == {milk}
        got = await api.client.get(f"/api/pending/{action['id']}", headers=bearer("alice"))
        assert got.json()["status"] == "expired"

        # The chat goes on: the model is told the call was not run.
        goes_on = await api.say_ok("alice", chat_id, "what now?")
        assert goes_on["status"] == "done"
        assert goes_on["response"] == "Fine, moving on."
        texts = [m["text"] for m in await messages(api, "alice", chat_id) if m["role"] == "tool"]
        assert len(texts) == 1 and "expired" in texts[0]
        entries = (await api.client.get("/api/audit", headers=bearer("alice"))).json()["entries"]
        assert [e["outcome"] for e in entries] == ["expired"]


async def test_an_expired_action_lets_the_next_message_through(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/expiry.db"
    async with serving(url, tools={"approval_timeout": 60}) as api:
        await seed_writer(api.runtime, [])
        milk = await api.task("alice", "buy milk")
        script = [calls(("delete_task", {"id": milk}))[0], {"content": "Moving on."}]
        await seed_writer(api.runtime, script)
        chat_id = await api.open_chat("alice")
        action = only_pending(await api.say_ok("alice", chat_id))
        # tools.approval_timeout sets the expiry the client is shown.
        waits = datetime.fromisoformat(action["expires_at"]) - datetime.now(UTC)
        assert timedelta(seconds=50) < waits <= timedelta(seconds=60), waits
        await api.expire(action["id"], datetime.now(UTC) - timedelta(seconds=1))
        turn = await api.say_ok("alice", chat_id, "never mind")
        assert turn["response"] == "Moving on."
        assert set(await api.tasks("alice")) == {milk}
        late = await api.client.post(f"/api/pending/{action['id']}/deny", headers=bearer("alice"))
        assert late.status_code == 409 and "expired" in late.json()["error"]


async def test_another_users_action_is_not_found_anywhere(sql_url: str) -> None:
    async with serving(sql_url) as api:
        await seed_writer(api.runtime, [])
        milk = await api.task("alice", "buy milk")
        await seed_writer(api.runtime, calls(("delete_task", {"id": milk})))
        alice_chat = await api.open_chat("alice")
        action = only_pending(await api.say_ok("alice", alice_chat))
        unused = str(uuid.uuid4())
        for action_id in (action["id"], unused):
            answers = [
                await api.client.get(f"/api/pending/{action_id}", headers=bearer("bob")),
                await api.client.post(f"/api/pending/{action_id}/approve", headers=bearer("bob")),
                await api.client.post(f"/api/pending/{action_id}/deny", headers=bearer("bob")),
            ]
            for answer in answers:
                assert answer.status_code == 404, answer.text
                assert "buy milk" not in answer.text
        # Bob's 404 for alice's action reads as his 404 for an unused id, but for the id.
        real = await api.client.get(f"/api/pending/{action['id']}", headers=bearer("bob"))
        fake = await api.client.get(f"/api/pending/{unused}", headers=bearer("bob"))
        assert real.json()["error"].replace(action["id"], unused) == fake.json()["error"]
        for query in ("", "?status=all", f"?chat_id={alice_chat}"):
            listed = await api.client.get(f"/api/pending{query}", headers=bearer("bob"))
            assert listed.json() == {"actions": []}
        assert (await api.client.get("/api/audit", headers=bearer("bob"))).json()["entries"] == []
        undo = await api.client.post(f"/api/chats/{alice_chat}/undo", headers=bearer("bob"))
        assert undo.status_code == 404
        # Alice's action is untouched and still hers to decide.
        assert set(await api.tasks("alice")) == {milk}
        ok = await api.client.post(f"/api/pending/{action['id']}/approve", headers=bearer("alice"))
        assert ok.status_code == 200, ok.text
        assert await api.tasks("alice") == {}


async def test_two_concurrent_approvals_run_the_tool_once(sql_url: str) -> None:
    async with serving(sql_url) as api:
        await seed_writer(api.runtime, calls(("add_task", {"title": "only once"})))
        chat_id = await api.open_chat("alice")
        action = only_pending(await api.say_ok("alice", chat_id))
        path = f"/api/pending/{action['id']}/approve"
        answers = await asyncio.gather(
            *(api.client.post(path, headers=bearer("alice")) for _ in range(2))
        )
        assert sorted(a.status_code for a in answers) == [200, 409], [a.text for a in answers]
        loser = next(a for a in answers if a.status_code == 409)
        assert "already" in loser.json()["error"]
        assert [t[0] for t in (await api.tasks("alice")).values()] == ["only once"]
        entries = (await api.client.get("/api/audit", headers=bearer("alice"))).json()["entries"]
        assert [e["operation"] for e in entries] == ["create"]


async def test_rows_changed_since_the_preview_ask_again(sql_url: str) -> None:
    async with serving(sql_url) as api:
        await seed_writer(api.runtime, [])
        milk = await api.task("alice", "buy milk")
        script = calls(("update_task", {"id": milk, "status": "done"}), reply="Marked.")
        await seed_writer(api.runtime, script)
        chat_id = await api.open_chat("alice")
        action = only_pending(await api.say_ok("alice", chat_id))
        assert action["preview"]["rows"][0]["before"]["title"] == "buy milk"

        await api.sql("UPDATE tasks SET title = 'buy almond milk' WHERE id = :id", id=milk)
        changed = await api.client.post(
            f"/api/pending/{action['id']}/approve", headers=bearer("alice")
        )
        assert changed.status_code == 409, changed.text
        body = changed.json()
        assert "no longer as shown" in body["error"]
        fresh = body["action"]
        assert fresh["id"] == action["id"] and fresh["status"] == "pending"
        assert fresh["preview"]["rows"][0]["before"]["title"] == "buy almond milk"
        assert (await api.tasks("alice"))[milk] == ("buy almond milk", "pending")

        again = await api.client.post(
            f"/api/pending/{action['id']}/approve", headers=bearer("alice")
        )
        assert again.status_code == 200, again.text
        assert again.json()["response"] == "Marked."
        assert (await api.tasks("alice"))[milk] == ("buy almond milk", "done")


async def test_a_restart_between_the_action_and_the_decision(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/restart.db"
    async with serving(url) as api:
        await seed_writer(api.runtime, [])
        milk = await api.task("alice", "buy milk")
        await seed_writer(api.runtime, calls(("delete_task", {"id": milk}), reply="Gone."))
        chat_id = await api.open_chat("alice")
        action = only_pending(await api.say_ok("alice", chat_id))
    async with serving(url) as api:
        listed = await api.client.get("/api/pending", headers=bearer("alice"))
        assert [a["id"] for a in listed.json()["actions"]] == [action["id"]]
        assert listed.json()["actions"][0]["chat_id"] == chat_id
        # A new process replays a script from its start: give it the rest of the turn.
        await seed_writer(api.runtime, [{"content": "Gone."}])
        approved = await api.client.post(
            f"/api/pending/{action['id']}/approve", headers=bearer("alice")
        )
        assert approved.status_code == 200, approved.text
        assert approved.json()["response"] == "Gone."
        assert approved.json()["tool_calls"][0]["name"] == "delete_task"
        assert await api.tasks("alice") == {}


async def test_a_decision_on_another_server_process(
    pg_storage: Any, pg_url: str, tmp_path: Path
) -> None:
    # pg_storage empties the run's database: an agent row left there by another test
    # (its approval mode, its tools) is not this test's.
    async with serving(pg_url) as api:
        await seed_writer(api.runtime, [])
        milk = await api.task("alice", "buy milk")
        await seed_writer(api.runtime, calls(("delete_task", {"id": milk}), reply="Gone."))
        chat_id = await api.open_chat("alice")
        action = only_pending(await api.say_ok("alice", chat_id))
        # A new process replays a script from its start: give it the rest of the turn.
        await seed_writer(api.runtime, [{"content": "Gone."}])

        env = clean_env(
            **pg_env(pg_url),
            CHATWRIGHT_SERVER__AUTH="jwt",
            CHATWRIGHT_SERVER__JWT_SECRET=SECRET,
        )
        other = ServerProcess(cwd=tmp_path / "other", env=env)
        try:
            await asyncio.to_thread(other.wait_ready)
            async with httpx.AsyncClient(base_url=other.url, timeout=30) as client:
                approved = await client.post(
                    f"/api/pending/{action['id']}/approve", headers=bearer("alice")
                )
                assert approved.status_code == 200, approved.text + other.log()
                assert approved.json()["status"] == "done"
                assert approved.json()["response"] == "Gone."
        finally:
            other.stop()
        assert await api.tasks("alice") == {}
        # This process sees the decision.
        again = await api.client.post(
            f"/api/pending/{action['id']}/approve", headers=bearer("alice")
        )
        assert again.status_code == 409


# -- the audit log and undo ------------------------------------------------------------


async def test_audit_lists_own_entries_paged(sql_url: str) -> None:
    async with serving(sql_url) as api:
        script = calls(*(("add_task", {"title": f"t{i}"}) for i in range(3)))
        await seed_writer(api.runtime, script, approval="auto")
        alice_chat = await api.open_chat("alice")
        turn = await api.say_ok("alice", alice_chat)
        assert turn["status"] == "done" and len(turn["tool_calls"]) == 3
        bob_chat = await api.open_chat("bob")
        await api.say_ok("bob", bob_chat)

        first = await api.client.get("/api/audit?limit=2", headers=bearer("alice"))
        assert first.status_code == 200, first.text
        page = first.json()
        assert len(page["entries"]) == 2 and page["more"] is True
        ids = [e["id"] for e in page["entries"]]
        assert ids == sorted(ids, reverse=True)
        rest = await api.client.get(f"/api/audit?limit=2&before={ids[-1]}", headers=bearer("alice"))
        assert len(rest.json()["entries"]) == 1 and rest.json()["more"] is False
        mine = page["entries"] + rest.json()["entries"]
        assert {e["args"]["title"] for e in mine} == {"t0", "t1", "t2"}
        assert all(e["approval"] == "auto" and e["chat_id"] == alice_chat for e in mine)
        assert all("user_id" not in e for e in mine)
        assert all(e["changes"][0]["before"] is None for e in mine)

        by_chat = await api.client.get(f"/api/audit?chat_id={bob_chat}", headers=bearer("alice"))
        assert by_chat.json() == {"entries": [], "more": False}
        bobs = await api.client.get("/api/audit", headers=bearer("bob"))
        assert len(bobs.json()["entries"]) == 3
        assert {e["chat_id"] for e in bobs.json()["entries"]} == {bob_chat}
        later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        future = await api.client.get("/api/audit", params={"since": later}, headers=bearer("bob"))
        assert future.json()["entries"] == []
        earlier = (datetime.now(UTC) - timedelta(hours=1)).replace(tzinfo=None).isoformat()
        past = await api.client.get("/api/audit", params={"since": earlier}, headers=bearer("bob"))
        assert len(past.json()["entries"]) == 3


@pytest.mark.parametrize("operation", ["create", "update", "delete"])
async def test_undo_restores_the_turns_rows(sql_url: str, operation: str) -> None:
    async with serving(sql_url) as api:
        await seed_writer(api.runtime, [], approval="auto")
        milk = await api.task("alice", "buy milk")
        made = {
            "create": ("add_task", {"title": "new one"}),
            "update": ("update_task", {"id": milk, "title": "buy oat milk"}),
            "delete": ("delete_task", {"id": milk}),
        }[operation]
        await seed_writer(api.runtime, calls(made))
        chat_id = await api.open_chat("alice")
        before = await api.tasks("alice")
        turn = await api.say_ok("alice", chat_id)
        assert await api.tasks("alice") != before

        undone = await api.client.post(f"/api/chats/{chat_id}/undo", headers=bearer("alice"))
        assert undone.status_code == 200, undone.text
        body = undone.json()
        assert body["turn_id"] == turn["turn_id"]
        assert len(body["entries"]) == 1 and len(body["changes"]) == 1
        assert "reverted" in body["message"]
        assert await api.tasks("alice") == before
        # Audited, and noted in the chat.
        entries = (await api.client.get("/api/audit", headers=bearer("alice"))).json()["entries"]
        assert entries[0]["operation"] == "undo" and entries[0]["undo_of"] == turn["turn_id"]
        assert any("Undone" in m["text"] for m in await messages(api, "alice", chat_id))
        # Once only.
        twice = await api.client.post(
            f"/api/chats/{chat_id}/undo",
            json={"turn_id": turn["turn_id"]},
            headers=bearer("alice"),
        )
        assert twice.status_code == 409, twice.text
        assert "undone already" in twice.json()["error"]


async def test_undo_refuses_rows_changed_since_and_names_them(sql_url: str) -> None:
    async with serving(sql_url) as api:
        await seed_writer(api.runtime, [], approval="auto")
        milk = await api.task("alice", "buy milk")
        await seed_writer(api.runtime, calls(("update_task", {"id": milk, "title": "oat milk"})))
        chat_id = await api.open_chat("alice")
        turn = await api.say_ok("alice", chat_id)
        await api.sql("UPDATE tasks SET title = 'rice milk' WHERE id = :id", id=milk)

        refused = await api.client.post(
            f"/api/chats/{chat_id}/undo", json={"turn_id": turn["turn_id"]}, headers=bearer("alice")
        )
        assert refused.status_code == 409, refused.text
        error = refused.json()["error"]
        assert "tasks" in error and str(milk) in error
        assert (await api.tasks("alice"))[milk] == ("rice milk", "pending")
        nothing = await api.client.post(
            f"/api/chats/{chat_id}/undo",
            json={"turn_id": str(uuid.uuid4())},
            headers=bearer("alice"),
        )
        assert nothing.status_code == 404, nothing.text


# -- a user's approval choice ------------------------------------------------------------


async def test_a_user_chooses_approval_for_a_user_mode_tool(sql_url: str) -> None:
    async with serving(sql_url) as api:
        script = [
            *calls(("add_task", {"title": "one"}), reply="Added one."),
            *calls(("add_task", {"title": "two"}), reply="Added two."),
        ]
        await seed_writer(api.runtime, script, approval="user", tools=("add_task",))
        detail = await api.client.get(f"/api/agents/{AGENT}", headers=bearer("alice"))
        [tool] = detail.json()["tools"]
        assert (tool["approval"], tool["approval_default"]) == ("user", "required")

        chosen = await api.client.put(
            f"/api/tools/{tool['id']}/approval", json={"choice": "auto"}, headers=bearer("alice")
        )
        assert chosen.status_code == 200, chosen.text
        assert chosen.json() == {
            "tool_id": tool["id"],
            "approval": "user",
            "approval_default": "required",
            "choice": "auto",
        }
        chat_id = await api.open_chat("alice")
        first = await api.say_ok("alice", chat_id)
        assert first["status"] == "done" and first["response"] == "Added one."

        # Bob has not chosen: the row's default asks him.
        bob_chat = await api.open_chat("bob")
        only_pending(await api.say_ok("bob", bob_chat))

        cleared = await api.client.put(
            f"/api/tools/{tool['id']}/approval", json={"choice": None}, headers=bearer("alice")
        )
        assert cleared.status_code == 200 and cleared.json()["choice"] is None
        second = await api.say_ok("alice", chat_id)
        assert only_pending(second)["args"] == {"title": "two"}


async def test_a_choice_on_a_row_in_another_mode_is_refused(tmp_path: Path) -> None:
    async with serving(f"sqlite+aiosqlite:///{tmp_path}/modes.db") as api:
        await seed_writer(api.runtime, [], tools=("add_task",))
        [tool] = await api.runtime.storage.tools.list(AGENT)
        refused = await api.client.put(
            f"/api/tools/{tool.id}/approval", json={"choice": "auto"}, headers=bearer("alice")
        )
        assert refused.status_code == 422, refused.text
        assert "'user' mode" in refused.json()["error"]
        missing = await api.client.put(
            "/api/tools/999999/approval", json={"choice": "auto"}, headers=bearer("alice")
        )
        assert missing.status_code == 404, missing.text


# -- the stream ----------------------------------------------------------------------------


async def test_the_stream_sends_approval_then_done(sql_url: str) -> None:
    async with serving(sql_url) as api:
        await seed_writer(api.runtime, [])
        milk = await api.task("alice", "buy milk")
        await seed_writer(api.runtime, calls(("delete_task", {"id": milk})))
        chat_id = await api.open_chat("alice")
        body = {"agent_name": AGENT, "chat_id": chat_id, "message": "go"}
        streamed = await api.client.post("/api/chat/stream", json=body, headers=bearer("alice"))
        assert streamed.status_code == 200, streamed.text
        events = parse_sse(streamed.text)
        names = [name for name, _ in events]
        assert names[-2:] == ["approval", "done"], names
        approval, done = events[-2][1], events[-1][1]
        [action] = approval["pending"]
        assert action["tool_name"] == "delete_task" and action["preview"]["count"] == 1
        assert done["status"] == "approval_required"
        assert [a["id"] for a in done["pending"]] == [action["id"]]
        assert done["turn_id"] == action["turn_id"]

        waiting = await api.client.post("/api/chat/stream", json=body, headers=bearer("alice"))
        [(name, error)] = parse_sse(waiting.text)
        assert name == "error" and error["status"] == 409
        assert [a["id"] for a in error["pending"]] == [action["id"]]
        assert set(await api.tasks("alice")) == {milk}
