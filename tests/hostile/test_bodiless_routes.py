"""Routes that take no body, sent one: approve, deny, deleting a chat or oneself.

They did not read the body, so a garbled request, or one meaning otherwise
(``{"approve": false}`` sent to ``/approve``), ran a call that waited for
approval or deleted a chat, while every route that reads a body refuses such
bodies with 422. A body sent to them must now be nothing, ``{}`` or ``null``.
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.routing import APIRoute

from tests.hostile.conftest import MakeServer, Server, assert_error_body, bearer, sql
from tests.write_safety import AGENT, calls, seed_writer

TASK = "alice-errand"
BODIES = [b"{not json", b'{"a": 1, "a": 2}', b"\xff\xfe", b"[" * 100_000, b'{"approve": false}']
JSON = {"Content-Type": "application/json"}


async def alice_waits(server: Server) -> tuple[str, dict[str, Any]]:
    """Alice's chat whose turn waits for approval to delete her task."""
    await seed_writer(server.runtime, [])
    (row,) = await sql(
        server.runtime,
        "INSERT INTO tasks (user_id, title, status, created_at, updated_at) VALUES "
        "('alice', :title, 'pending', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP) RETURNING id",
        title=TASK,
    )
    await seed_writer(server.runtime, calls(("delete_task", {"id": row["id"]})))
    opened = await server.client.post(
        "/api/sessions", json={"agent_name": AGENT, "new": True}, headers=bearer("alice")
    )
    chat_id = str(opened.json()["chat_id"])
    body = {"agent_name": AGENT, "chat_id": chat_id, "message": "go"}
    answer = await server.client.post("/api/chat", json=body, headers=bearer("alice"))
    assert answer.json()["status"] == "approval_required", answer.text
    return chat_id, answer.json()["pending"][0]


def routes(found: Any) -> Any:
    """Every route, those of included routers too."""
    for route in found:
        inner = getattr(route, "original_router", None)
        yield from routes(inner.routes) if inner is not None else [route]


async def alices_tasks(server: Server) -> list[str]:
    rows = await sql(server.runtime, "SELECT title FROM tasks WHERE user_id = 'alice'")
    return [str(r["title"]) for r in rows]


@pytest.mark.parametrize("verb", ["approve", "deny"])
async def test_a_decision_sent_a_body_decides_nothing(make_server: MakeServer, verb: str) -> None:
    server = await make_server()
    _, action = await alice_waits(server)
    decide = f"/api/pending/{action['id']}/{verb}"
    for content in BODIES:
        sent = await server.client.post(
            decide, content=content, headers={**bearer("alice"), **JSON}
        )
        assert_error_body(sent, 422)
        assert "takes no request body" in sent.json()["error"], sent.text
    still = await server.client.get(f"/api/pending/{action['id']}", headers=bearer("alice"))
    assert still.json()["status"] == "pending"
    assert await alices_tasks(server) == [TASK]
    # Nothing, {} or null is no body: the decision is made.
    done = await server.client.post(decide, content=b"{}", headers={**bearer("alice"), **JSON})
    assert done.status_code == 200, done.text


async def test_deleting_a_chat_or_oneself_sent_a_body_deletes_nothing(
    make_server: MakeServer,
) -> None:
    server = await make_server()
    chat_id, _ = await alice_waits(server)
    for method, path in (("DELETE", f"/api/chats/{chat_id}"), ("DELETE", "/api/me")):
        for content in BODIES:
            sent = await server.client.request(
                method, path, content=content, headers={**bearer("alice"), **JSON}
            )
            assert_error_body(sent, 422)
    messages = await sql(server.runtime, "SELECT id FROM chat_messages WHERE user_id = 'alice'")
    assert messages and await alices_tasks(server) == [TASK]
    gone = await server.client.request("DELETE", f"/api/chats/{chat_id}", headers=bearer("alice"))
    assert gone.status_code == 200, gone.text


async def test_every_route_without_a_body_refuses_one(make_server: MakeServer) -> None:
    server = await make_server()
    bodiless = [
        (method, route.path)
        for route in routes(server.app.routes)
        if isinstance(route, APIRoute)
        and route.body_field is None
        and "requestBody" not in (route.openapi_extra or {})
        for method in sorted(route.methods or ())
        if method != "HEAD"
    ]
    assert len(bodiless) >= 10, bodiless
    for method, path in bodiless:
        url = path.replace("{", "").replace("}", "")  # the check comes before the path's
        sent = await server.client.request(
            method, url, content=b'{"x": 1}', headers={**bearer("alice"), **JSON}
        )
        assert_error_body(sent, 422)
        assert f"{path} takes no request body" in sent.json()["error"], (method, path, sent.text)
