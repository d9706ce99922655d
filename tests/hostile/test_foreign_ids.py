"""Bob with alice's chat and session ids, on every endpoint that takes one.

Every route with a ``{session_id}`` or ``{chat_id}`` in its path is found in the
app's OpenAPI document and called with each of its methods, so a route added later is
attacked too; the endpoints that take a chat id in the body (a turn, a stream,
opening a session) are called as well. Each must answer 404 with the error body,
the same answer a made-up id gets, and nothing of alice's chat may come back.
Methods a path does not have answer 404 or 405, with the error body too.
Afterwards alice's session is still active and her chat unchanged.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from chatwright.plugins.example import assistant as example
from tests.hostile.conftest import (
    AGENT,
    MakeServer,
    Server,
    assert_error_body,
    bearer,
    open_chat,
    say,
    script,
    sql,
)

ALICE_SAYS = "my locker combination is 31-7-22-marzipan"
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


async def alice_and_bob(server: Server) -> tuple[dict[str, Any], dict[str, Any]]:
    await example.seed(server.runtime.storage, "scripted:x")
    await server.runtime.storage.agents.update(AGENT, model_settings=script())
    alice = await open_chat(server.client, "alice")
    body = {"agent_name": AGENT, "chat_id": alice["chat_id"], "message": ALICE_SAYS}
    turn = await server.client.post("/api/chat", json=body, headers=bearer("alice"))
    assert turn.status_code == 200, turn.text
    await say(server, "bob", [])
    bob = await open_chat(server.client, "bob")
    return alice, bob


def id_routes(server: Server) -> list[tuple[str, str]]:
    """(method, path) of every route that takes a session or chat id in its path."""
    # From the OpenAPI document: every route the app serves is in it.
    found = [
        (method.upper(), path)
        for path, operations in server.app.openapi()["paths"].items()
        if re.search(r"\{(session|chat)_id\}", path)
        for method in sorted(operations)
    ]
    assert found, "no route takes a session or chat id: the probe list is wrong"
    return found


def fill(path: str, session_id: str, chat_id: str) -> str:
    return path.replace("{session_id}", session_id).replace("{chat_id}", chat_id)


Probe = Callable[[str, str], Awaitable[httpx.Response]]


# Routes whose body is validated before the id is looked up get a valid one, so that the
# probe reaches the lookup (a malformed body is refused alike for every id).
BODIES: dict[str, dict[str, Any]] = {
    "/api/chats/{chat_id}/undo": {"turn_id": str(uuid.uuid4())},
}


def probes(server: Server) -> dict[str, Probe]:
    """Each endpoint, as bob, given a session id and a chat id."""
    client, bob = server.client, bearer("bob")
    found: dict[str, Probe] = {}
    # A route that takes no body refuses one (422) before it looks the id up: sent none.
    with_body = {
        (method.upper(), path)
        for path, operations in server.app.openapi()["paths"].items()
        for method, operation in operations.items()
        if "requestBody" in operation
    }
    for method, path in id_routes(server):

        async def routed(s: str, c: str, method: str = method, path: str = path) -> httpx.Response:
            body = BODIES.get(path, {"agent_name": AGENT, "message": "hi", "content": "x"})
            extra: dict[str, Any] = {"json": body} if (method, path) in with_body else {}
            return await client.request(method, fill(path, s, c), headers=bob, **extra)

        found[f"{method} {path}"] = routed

    def turn(path: str, key: str = "chat_id") -> Probe:
        async def send(s: str, c: str) -> httpx.Response:
            body = {"agent_name": AGENT, key: c, "message": "show me the history"}
            return await client.post(path, json=body, headers=bob)

        return send

    found["POST /api/chat"] = turn("/api/chat")
    found["POST /api/chat (session_id)"] = turn("/api/chat", "session_id")
    found["POST /api/chat/stream"] = turn("/api/chat/stream")

    async def beacon(s: str, c: str) -> httpx.Response:
        # navigator.sendBeacon: the token in the body, no header.
        token = bearer("bob")["Authorization"].split()[1]
        return await client.post(f"/api/sessions/{s}/deactivate", json={"access_token": token})

    found["POST deactivate (beacon)"] = beacon

    async def paged(s: str, c: str) -> httpx.Response:
        return await client.get(f"/api/chats/{c}/messages?limit=500&before=999999", headers=bob)

    found["GET messages (paged)"] = paged
    return found


def same_answer(theirs: httpx.Response, unknown: httpx.Response, ids: dict[str, str]) -> None:
    """Alice's ids get the answer a made-up id gets: status and error, ids aside."""
    text = theirs.text
    for mine, made_up in ids.items():
        text = text.replace(mine, made_up)
    assert (theirs.status_code, text) == (unknown.status_code, unknown.text)


async def test_alices_ids_answer_404_on_every_endpoint_and_leak_nothing(
    make_server: MakeServer,
) -> None:
    server = await make_server()
    alice, _ = await alice_and_bob(server)
    before = await sql(server.runtime, "SELECT * FROM chat_messages WHERE user_id = 'alice'")
    assert ALICE_SAYS in str(before)
    made_up = {alice["id"]: str(uuid.uuid4()), alice["chat_id"]: str(uuid.uuid4())}

    for name, probe in probes(server).items():
        theirs = await probe(alice["id"], alice["chat_id"])
        assert_error_body(theirs, 404)
        assert ALICE_SAYS not in theirs.text, name
        assert "marzipan" not in theirs.text, name
        unknown = await probe(made_up[alice["id"]], made_up[alice["chat_id"]])
        same_answer(theirs, unknown, made_up)

    # Opening a session on her chat: 404 too (an unused id is test_opening_..._unused_id).
    for agent in (AGENT, "no-such-agent"):
        body = {"agent_name": agent, "chat_id": alice["chat_id"]}
        opened = await server.client.post("/api/sessions", json=body, headers=bearer("bob"))
        assert_error_body(opened, 404)
        assert "marzipan" not in opened.text

    # Methods no route has on these paths: the error body, never content.
    for path in {p for _, p in id_routes(server)}:
        for method in METHODS:
            url = fill(path, alice["id"], alice["chat_id"])
            response = await server.client.request(method, url, headers=bearer("bob"))
            if response.status_code in (404, 405):
                assert_error_body(response, 404, 405)
            assert "marzipan" not in response.text, (method, url)
    for url in (
        f"/api/sessions/{alice['id']}",
        f"/api/chats/{alice['chat_id']}",
        f"/api/sessions/{alice['chat_id']}/messages",
    ):
        for method in METHODS:
            response = await server.client.request(method, url, headers=bearer("bob"))
            assert_error_body(response, 404, 405)
            assert "marzipan" not in response.text

    # Her chat and an unused id get one answer, which says where bob's own are listed.
    unused = str(uuid.uuid4())
    hers = await server.client.get(f"/api/chats/{alice['chat_id']}/messages", headers=bearer("bob"))
    nobodys = await server.client.get(f"/api/chats/{unused}/messages", headers=bearer("bob"))
    assert hers.status_code == nobodys.status_code == 404
    said = nobodys.json()["error"]
    assert hers.json()["error"].replace(alice["chat_id"], unused) == said
    assert said.startswith(f"no chat {unused}") and "GET /api/chats" in said, said

    # Alice's chat is as it was and her session open; bob got no session on her chat.
    assert await sql(server.runtime, "SELECT * FROM chat_messages WHERE user_id = 'alice'") == (
        before
    )
    storage, chat = server.runtime.storage, uuid.UUID(alice["chat_id"])
    assert await storage.sessions.chat_owner(chat) == ("alice", AGENT)
    assert chat not in {s.chat_id for s in await storage.sessions.list("bob")}
    beat = await server.client.post(
        f"/api/sessions/{alice['id']}/heartbeat", headers=bearer("alice")
    )
    assert beat.status_code == 200
    assert beat.json()["is_active"] is True


async def test_opening_a_session_on_alices_chat_answers_as_an_unused_id(
    make_server: MakeServer,
) -> None:
    server = await make_server()
    alice, _ = await alice_and_bob(server)
    for chat_id in (alice["chat_id"], str(uuid.uuid4())):
        body = {"agent_name": AGENT, "chat_id": chat_id}
        response = await server.client.post("/api/sessions", json=body, headers=bearer("bob"))
        assert response.status_code == 404, (chat_id == alice["chat_id"], response.text)
        assert "marzipan" not in response.text


async def test_a_client_key_moves_only_the_callers_own_sessions(make_server: MakeServer) -> None:
    """Opening on a chat with a client key closes the key's session on another chat, and
    only the caller's: bob naming alice's key (or alice's chat) closes nothing of hers."""
    server = await make_server()
    alice, bob = await alice_and_bob(server)
    client = server.client
    key = "shared-tab"
    body = {"agent_name": AGENT, "chat_id": alice["chat_id"], "client_key": key}
    keyed = await client.post("/api/sessions", json=body, headers=bearer("alice"))
    assert keyed.status_code == 200, keyed.text
    # Bob with alice's key on his own chat: his session; hers stays active.
    mine = {"agent_name": AGENT, "chat_id": bob["chat_id"], "client_key": key}
    his = await client.post("/api/sessions", json=mine, headers=bearer("bob"))
    assert his.status_code == 200 and his.json()["chat_id"] == bob["chat_id"], his.text
    # Bob with alice's key on alice's chat: not found, as any chat not his.
    assert_error_body(await client.post("/api/sessions", json=body, headers=bearer("bob")), 404)
    sessions = await client.get("/api/sessions", headers=bearer("alice"))
    state = {s["id"]: s["is_active"] for s in sessions.json()}
    assert state[keyed.json()["id"]] is True


async def test_a_client_key_is_moved_only_by_an_open_that_succeeds_and_to_the_chat_named(
    make_server: MakeServer,
) -> None:
    """An open refused (the chat named is another agent's) closes nothing; two opens of
    one key naming two chats at once each get a session on the chat it named."""
    server = await make_server()
    await example.seed(server.runtime.storage, "scripted:x")
    await server.runtime.storage.agents.create("other", system_prompt="p", model="scripted:x")
    client, alice = server.client, bearer("alice")

    async def opened(**body: Any) -> dict[str, Any]:
        response = await client.post(
            "/api/sessions", json={"agent_name": AGENT, **body}, headers=alice
        )
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()
        return data

    others = (await open_chat(client, "alice", agent="other"))["chat_id"]
    tab = await opened(new=True, client_key="tab-1")
    refused = await client.post(
        "/api/sessions",
        json={"agent_name": AGENT, "chat_id": others, "client_key": "tab-1"},
        headers=alice,
    )
    assert_error_body(refused, 422)
    listed = (await client.get("/api/sessions", headers=alice)).json()
    state = {s["id"]: s["is_active"] for s in listed}
    assert state[tab["id"]] is True

    for n in range(8):
        key = f"raced-{n}"
        await opened(new=True, client_key=key)
        one, two = (await opened(new=True))["chat_id"], (await opened(new=True))["chat_id"]
        got = await asyncio.gather(
            opened(chat_id=one, client_key=key), opened(chat_id=two, client_key=key)
        )
        assert [g["chat_id"] for g in got] == [one, two]
