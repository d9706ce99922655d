"""Write safety's endpoints under attack, on SQLite, PostgreSQL and Supabase (row-level security).

Bob holds alice's pending action id, her chat id and her turn id; every route
answers him 404 (the answer a made-up id gets) and nothing of alice's comes
back. A write previewed for alice names only rows she can see: a delete aimed
at bob's task previews nothing and, approved, deletes nothing of his. Every
parameter and body of the new routes is fed malformed, oversized and
out-of-range values: each gets a 4xx with the error body, never a 500.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from chatwright.plugins.server.limits import body_limit
from tests.hostile.conftest import (
    MakeServer,
    Server,
    any_text,
    assert_error_body,
    bearer,
    sql,
)
from tests.write_safety import AGENT, calls, seed_writer

ALICE_TASK = "alice's secret errand 7c1f"
BOB_TASK = "bob's private chore 93ad"


async def plant_task(server: Server, user: str, title: str) -> int:
    rows = await sql(
        server.runtime,
        "INSERT INTO tasks (user_id, title, status, created_at, updated_at) "
        "VALUES (:user, :title, 'pending', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP) RETURNING id",
        user=user,
        title=title,
    )
    return int(rows[0]["id"])


async def titles(server: Server, user: str) -> list[str]:
    rows = await sql(server.runtime, "SELECT title FROM tasks WHERE user_id = :u", u=user)
    return sorted(str(r["title"]) for r in rows)


async def chat_of(server: Server, user: str) -> str:
    opened = await server.client.post(
        "/api/sessions", json={"agent_name": AGENT, "new": True}, headers=bearer(user)
    )
    assert opened.status_code == 200, opened.text
    return str(opened.json()["chat_id"])


async def turn(server: Server, user: str, chat_id: str) -> dict[str, Any]:
    body = {"agent_name": AGENT, "chat_id": chat_id, "message": "go"}
    answer = await server.client.post("/api/chat", json=body, headers=bearer(user))
    assert answer.status_code == 200, answer.text
    data: dict[str, Any] = answer.json()
    return data


async def alice_waits(server: Server) -> tuple[str, dict[str, Any], int]:
    """Alice's chat, her pending delete of her own task, and the task's id."""
    await seed_writer(server.runtime, [])
    task = await plant_task(server, "alice", ALICE_TASK)
    await seed_writer(server.runtime, calls(("delete_task", {"id": task})))
    chat_id = await chat_of(server, "alice")
    answer = await turn(server, "alice", chat_id)
    assert answer["status"] == "approval_required", answer
    return chat_id, answer["pending"][0], task


async def test_bob_cannot_see_or_decide_alices_action(make_server: MakeServer) -> None:
    server = await make_server()
    chat_id, action, task = await alice_waits(server)
    # Her own row is previewed (under row-level security on supabase too).
    assert action["preview"]["count"] == 1
    [row] = action["preview"]["rows"]
    assert row["key"] == {"id": task} and row["before"]["title"] == ALICE_TASK
    assert row["after"] is None
    made_up = str(uuid.uuid4())
    seen: dict[str, list[str]] = {}
    for action_id in (action["id"], made_up):
        for method, path in (
            ("GET", f"/api/pending/{action_id}"),
            ("POST", f"/api/pending/{action_id}/approve"),
            ("POST", f"/api/pending/{action_id}/deny"),
        ):
            answer = await server.client.request(method, path, headers=bearer("bob"))
            message = assert_error_body(answer, 404)
            assert ALICE_TASK not in answer.text
            seen.setdefault(action_id, []).append(message.replace(action_id, "ID"))
    # Her action's answers read as a made-up id's: they do not tell that it exists.
    assert seen[action["id"]] == seen[made_up]
    for query in ("", "?status=all", f"?chat_id={chat_id}", f"?chat_id={chat_id}&status=all"):
        listed = await server.client.get(f"/api/pending{query}", headers=bearer("bob"))
        assert listed.status_code == 200 and listed.json() == {"actions": []}, listed.text
    audit = await server.client.get(f"/api/audit?chat_id={chat_id}", headers=bearer("bob"))
    assert audit.json() == {"entries": [], "more": False}
    undo = await server.client.post(
        f"/api/chats/{chat_id}/undo", json={"turn_id": action["turn_id"]}, headers=bearer("bob")
    )
    assert_error_body(undo, 404)
    # Still alice's, still pending, and the row untouched.
    mine = await server.client.get(f"/api/pending/{action['id']}", headers=bearer("alice"))
    assert mine.json()["status"] == "pending"
    assert await titles(server, "alice") == [ALICE_TASK]


async def test_a_preview_shows_only_the_users_rows(make_server: MakeServer) -> None:
    """Alice's model aims a delete and an update at bob's task: nothing of his is shown or hit."""
    server = await make_server()
    await seed_writer(server.runtime, [])
    bobs = await plant_task(server, "bob", BOB_TASK)
    script = calls(("delete_task", {"id": bobs}), ("update_task", {"id": bobs, "title": "pwned"}))
    await seed_writer(server.runtime, script)
    chat_id = await chat_of(server, "alice")
    answer = await turn(server, "alice", chat_id)
    assert answer["status"] == "approval_required"
    assert BOB_TASK not in any_text(answer)
    for action in answer["pending"]:
        assert action["preview"]["count"] == 0, action
        assert action["preview"]["rows"] == []
    for action in answer["pending"]:
        decided = await server.client.post(
            f"/api/pending/{action['id']}/approve", headers=bearer("alice")
        )
        assert decided.status_code in {200, 409}, decided.text
        assert BOB_TASK not in decided.text
    assert await titles(server, "bob") == [BOB_TASK]
    entries = await server.client.get("/api/audit", headers=bearer("alice"))
    assert BOB_TASK not in entries.text


BAD_IDS = ("not-a-uuid", "1", "x" * 5000, "%00", "00000000-0000-0000-0000-00000000000g")


@pytest.mark.parametrize("bad", BAD_IDS)
async def test_malformed_action_ids(make_server: MakeServer, bad: str) -> None:
    server = await make_server()
    for method, path in (
        ("GET", f"/api/pending/{bad}"),
        ("POST", f"/api/pending/{bad}/approve"),
        ("POST", f"/api/pending/{bad}/deny"),
        ("POST", f"/api/chats/{bad}/undo"),
    ):
        answer = await server.client.request(method, path, headers=bearer("alice"))
        assert_error_body(answer, 404, 422)


@pytest.mark.parametrize(
    "query",
    [
        "status=bogus",
        "status=",
        "chat_id=nope",
        "chat_id=" + "9" * 4000,
    ],
)
async def test_bad_pending_queries(make_server: MakeServer, query: str) -> None:
    server = await make_server()
    answer = await server.client.get(f"/api/pending?{query}", headers=bearer("alice"))
    assert_error_body(answer, 422)


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=201",
        "limit=-1",
        "limit=" + "9" * 40,
        "limit=x",
        "before=0",
        f"before={2**63}",
        "before=1.5",
        "since=yesterday",
        "since=2026-13-45T00:00:00",
        "since=" + "2" * 5000,
        "chat_id=nope",
    ],
)
async def test_bad_audit_queries(make_server: MakeServer, query: str) -> None:
    server = await make_server()
    answer = await server.client.get(f"/api/audit?{query}", headers=bearer("alice"))
    assert_error_body(answer, 422)


@pytest.mark.parametrize(
    "body",
    [
        {"turn_id": "nope"},
        {"turn_id": 12},
        {"turn_id": str(uuid.uuid4()), "extra": 1},
        {"turn_id": "\x00"},
        [],
        "turn",
    ],
)
async def test_bad_undo_bodies(make_server: MakeServer, body: Any) -> None:
    server = await make_server()
    chat_id, _, _ = await alice_waits(server)
    answer = await server.client.post(
        f"/api/chats/{chat_id}/undo", json=body, headers=bearer("alice")
    )
    assert_error_body(answer, 422)


async def test_undo_of_someone_elses_turn_or_an_oversized_body(make_server: MakeServer) -> None:
    server = await make_server()
    await seed_writer(server.runtime, calls(("add_task", {"title": BOB_TASK})), approval="auto")
    bob_chat = await chat_of(server, "bob")
    bob_turn = await turn(server, "bob", bob_chat)
    assert bob_turn["status"] == "done"
    alice_chat = await chat_of(server, "alice")
    # Bob's turn id on alice's own chat: nothing of alice's to undo, and bob's row stays.
    crossed = await server.client.post(
        f"/api/chats/{alice_chat}/undo",
        json={"turn_id": bob_turn["turn_id"]},
        headers=bearer("alice"),
    )
    assert_error_body(crossed, 404)
    assert BOB_TASK not in crossed.text
    assert await titles(server, "bob") == [BOB_TASK]
    # Just past the bound (a far larger body is cut off mid-send, see test_request_body).
    past = body_limit(server.app.state.settings) + 100
    huge = await server.client.post(
        f"/api/chats/{alice_chat}/undo",
        content=b'{"turn_id": "' + b"x" * past + b'"}',
        headers={**bearer("alice"), "Content-Type": "application/json"},
    )
    assert_error_body(huge, 413)
    bad_json = await server.client.post(
        f"/api/chats/{alice_chat}/undo",
        content=b"{not json",
        headers={**bearer("alice"), "Content-Type": "application/json"},
    )
    assert_error_body(bad_json, 422)


@pytest.mark.parametrize(
    "body",
    [
        {"choice": "yes"},
        {"choice": 1},
        {"choice": "AUTO"},
        {"choice": "auto\x00"},
        {},
        {"choice": "auto", "user_id": "bob"},
        ["auto"],
        {"choice": "a" * 100_000},
    ],
)
async def test_bad_approval_choices(make_server: MakeServer, body: Any) -> None:
    server = await make_server()
    await seed_writer(server.runtime, [], approval="user", tools=("add_task",))
    [tool] = await server.runtime.storage.tools.list(AGENT)
    answer = await server.client.put(
        f"/api/tools/{tool.id}/approval", json=body, headers=bearer("alice")
    )
    assert_error_body(answer, 413, 422)
    assert await server.runtime.storage.pending.choices("alice", AGENT) == {}
    assert await server.runtime.storage.pending.choices("bob", AGENT) == {}


@pytest.mark.parametrize("tool_id", ["0", "-1", str(2**63), "abc", "1.5", "9" * 400])
async def test_bad_tool_ids_for_a_choice(make_server: MakeServer, tool_id: str) -> None:
    server = await make_server()
    answer = await server.client.put(
        f"/api/tools/{tool_id}/approval", json={"choice": "auto"}, headers=bearer("alice")
    )
    assert_error_body(answer, 422)


async def test_a_choice_is_the_callers_own(make_server: MakeServer) -> None:
    server = await make_server()
    await seed_writer(server.runtime, [], approval="user", tools=("add_task",))
    [tool] = await server.runtime.storage.tools.list(AGENT)
    chosen = await server.client.put(
        f"/api/tools/{tool.id}/approval", json={"choice": "auto"}, headers=bearer("bob")
    )
    assert chosen.status_code == 200, chosen.text
    assert await server.runtime.storage.pending.choices("bob", AGENT) == {tool.id: "auto"}
    assert await server.runtime.storage.pending.choices("alice", AGENT) == {}
    missing = await server.client.put(
        f"/api/tools/{2**31 - 1}/approval", json={"choice": "auto"}, headers=bearer("bob")
    )
    assert_error_body(missing, 404)


async def test_an_auto_choice_does_not_follow_its_row_into_what_it_became(
    make_server: MakeServer,
) -> None:
    from chatwright.plugins.example.assistant import TOOLS

    server = await make_server()
    storage = server.runtime.storage
    await seed_writer(server.runtime, [], approval="user", tools=("list_tasks",))
    task = await plant_task(server, "alice", ALICE_TASK)
    [tool] = await storage.tools.list(AGENT)
    # Alice trusts the read to run unattended.
    chosen = await server.client.put(
        f"/api/tools/{tool.id}/approval", json={"choice": "auto"}, headers=bearer("alice")
    )
    assert chosen.status_code == 200, chosen.text
    # An admin turns that row into a delete, under the same name.
    delete = next(t for t in TOOLS if t["name"] == "delete_task")
    await storage.tools.update(tool.id, config=delete["config"])
    await seed_writer(server.runtime, calls((tool.name, {"id": task})))
    chat_id = await chat_of(server, "alice")
    answer = await turn(server, "alice", chat_id)
    # Her trust was in the read: the delete waits for her, with its preview.
    assert answer["status"] == "approval_required", answer
    [action] = answer["pending"]
    assert action["preview"]["count"] == 1
    assert await titles(server, "alice") == [ALICE_TASK]
    denied = await server.client.post(
        f"/api/pending/{action['id']}/deny", json={}, headers=bearer("alice")
    )
    assert denied.status_code == 200, denied.text
    # Chosen again, for the row as it is now, it runs unattended.
    again = await server.client.put(
        f"/api/tools/{tool.id}/approval", json={"choice": "auto"}, headers=bearer("alice")
    )
    assert again.status_code == 200, again.text
    await seed_writer(server.runtime, calls((tool.name, {"id": task})))
    assert (await turn(server, "alice", chat_id))["status"] == "done"
    assert await titles(server, "alice") == []


async def test_a_choice_for_a_row_that_changed_since_it_was_seen_is_refused(
    make_server: MakeServer,
) -> None:
    """The user reads the agent's tools, then chooses ``auto`` for the read she saw; an
    admin turned it into a delete in between. With the digest she saw, her choice is
    refused (409) and nothing is stored: the delete still waits for her. Without a
    digest the choice is for the row as it is now, as before."""
    from chatwright.plugins.example.assistant import TOOLS

    server = await make_server()
    storage = server.runtime.storage
    await seed_writer(server.runtime, [], approval="user", tools=("list_tasks",))
    [tool] = await storage.tools.list(AGENT)
    shown = await server.client.get(f"/api/agents/{AGENT}", headers=bearer("alice"))
    assert shown.status_code == 200, shown.text
    [entry] = shown.json()["tools"]
    seen = entry["digest"]
    assert len(seen) == 64
    delete = next(t for t in TOOLS if t["name"] == "delete_task")
    await storage.tools.update(tool.id, config=delete["config"])
    url = f"/api/tools/{tool.id}/approval"
    refused = await server.client.put(
        url, json={"choice": "auto", "digest": seen}, headers=bearer("alice")
    )
    assert refused.status_code == 409, refused.text
    assert "has changed since you saw it" in refused.json()["error"]
    assert await storage.pending.choices("alice", AGENT) == {}
    # Clearing a choice with a stale digest is refused too: nothing changes unseen.
    cleared = await server.client.put(
        url, json={"choice": None, "digest": seen}, headers=bearer("alice")
    )
    assert cleared.status_code == 409, cleared.text
    # Seen again, the row as it is now can be chosen.
    again = await server.client.get(f"/api/agents/{AGENT}", headers=bearer("alice"))
    fresh = again.json()["tools"][0]["digest"]
    assert fresh != seen
    chosen = await server.client.put(
        url, json={"choice": "auto", "digest": fresh}, headers=bearer("alice")
    )
    assert chosen.status_code == 200, chosen.text
    assert await storage.pending.choices("alice", AGENT) == {tool.id: "auto"}
    # A digest that is not one is refused as input, and one of another row as changed.
    bad = await server.client.put(
        url, json={"choice": "auto", "digest": "x" * 65}, headers=bearer("alice")
    )
    assert bad.status_code == 422, bad.text
    other = await server.client.put(
        url, json={"choice": "required", "digest": "0" * 64}, headers=bearer("bob")
    )
    assert other.status_code == 409, other.text
    assert await storage.pending.choices("bob", AGENT) == {}
