"""Malformed and oversized requests: 4xx with the error body, never a 500, never a hang.

Bob, signed in, sends what no client would: bodies that are not JSON or not
UTF-8, the wrong JSON types, NUL characters and lone surrogates, strings far past
every limit, JSON nested thousands deep, bodies past the size limit with and
without a Content-Length, and bad path and query parameters. Every answer must
be a 4xx with ``{"error": "..."}``, and the server must go on serving.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from chatwright.plugins.example import assistant as example
from tests.hostile.conftest import (
    AGENT,
    MakeServer,
    Server,
    assert_error_body,
    bearer,
    open_chat,
    script,
)

DEEP = 100_000


def deep(depth: int) -> str:
    return "[" * depth + "]" * depth


async def ready(server: Server) -> dict[str, Any]:
    await example.seed(server.runtime.storage, "scripted:x")
    await server.runtime.storage.agents.update(AGENT, model_settings=script())
    return await open_chat(server.client, "bob")


def json_bodies(chat_id: str) -> dict[str, list[Any]]:
    """Per endpoint, JSON bodies with the wrong shape, types or characters."""
    turn = {"agent_name": AGENT, "chat_id": chat_id, "message": "hi"}
    wrong = [
        None,
        [],
        "a string",
        12,
        {},
        {**turn, "agent_name": 1},
        {**turn, "agent_name": None},
        {**turn, "agent_name": ["assistant"]},
        {**turn, "agent_name": "x" * 100_000},
        {**turn, "agent_name": "assist\x00ant"},
        {**turn, "chat_id": "not-a-uuid"},
        {**turn, "chat_id": 12345},
        {**turn, "chat_id": {"$ne": None}},
        {**turn, "chat_id": chat_id + "' OR '1'='1"},
        {**turn, "message": ["hi"]},
        {**turn, "message": {"text": "hi"}},
        {**turn, "message": True},
        {**turn, "message": 1e308},
        {**turn, "message": ""},
        {**turn, "message": "nul \x00 byte"},
        {**turn, "message": "x" * 16_001},
        {**turn, "message": "x" * 70_000},
        {**turn, "unknown": "key"},
        {**turn, "user_id": "alice"},
        {**turn, "session_id": "00000000-0000-0000-0000-000000000000"},
    ]
    session = [
        {"agent_name": AGENT, "chat_id": "nope"},
        {"agent_name": AGENT, "client_key": "k\x00"},
        {"agent_name": AGENT, "client_key": "k" * 10_000},
        {"agent_name": AGENT, "user_id": "alice"},
        {"agent_name": {"name": AGENT}},
        {"agent_name": "\x00"},
        [],
    ]
    customization = [
        {"content": "x" * 30_000},
        {"content": "nul \x00"},
        {"content": 1},
        {"content": "ok", "priority": 2**80},
        {"content": "ok", "priority": "high"},
        {"content": "ok", "kind": "k" * 1000},
        {"content": "ok", "is_active": "maybe"},
        {"content": "ok", "user_id": "alice"},
        {"kind": "x"},
    ]
    return {
        "/api/chat": wrong,
        "/api/chat/stream": wrong,
        "/api/sessions": session,
        f"/api/agents/{AGENT}/customizations": customization,
    }


RAW = [
    b"",
    b"{",
    b'{"agent_name": "assistant",',
    b"\xff\xfe\x00\x01",
    b'{"agent_name": "\xff\xfe"}',
    b"1e999999",
    b'{"message": NaN}',
    b'{"message": "\\ud800", "agent_name": 1}',
    b'{"a": 1, "a": 2}',
]


async def test_malformed_bodies_answer_4xx_with_the_error_body(make_server: MakeServer) -> None:
    server = await make_server()
    session = await ready(server)
    client, bob = server.client, bearer("bob")
    for path, bodies in json_bodies(session["chat_id"]).items():
        method = "PUT" if path.endswith("customizations") else "POST"
        for body in bodies:
            response = await client.request(method, path, json=body, headers=bob)
            assert_error_body(response, 400, 404, 413, 422)
        for raw in RAW:
            for content_type in ("application/json", "text/plain"):
                headers = {**bob, "Content-Type": content_type}
                response = await client.request(method, path, content=raw, headers=headers)
                assert_error_body(response, 400, 404, 413, 415, 422)

    # Bad path and query parameters.
    chat = session["chat_id"]
    for url in (
        "/api/sessions/not-a-uuid/heartbeat",
        "/api/sessions/%00/heartbeat",
        f"/api/sessions/{'9' * 5000}/deactivate",
        f"/api/chats/{chat}/messages?limit=abc",
        f"/api/chats/{chat}/messages?limit=0",
        f"/api/chats/{chat}/messages?limit={10**30}",
        f"/api/chats/{chat}/messages?before=-1",
        f"/api/chats/{chat}/messages?before={2**80}",
        "/api/chats/%ff%fe/messages",
        "/api/sessions?active=perhaps",
    ):
        method = "GET" if "messages" in url or url.startswith("/api/sessions?") else "POST"
        response = await client.request(method, url, headers=bob)
        assert_error_body(response, 400, 404, 405, 422)

    # Still serving, and bob's session is untouched by all of it.
    beat = await client.post(f"/api/sessions/{session['id']}/heartbeat", headers=bob)
    assert beat.status_code == 200, beat.text


async def test_a_body_that_is_not_json_says_so_and_where(make_server: MakeServer) -> None:
    server = await make_server()
    await ready(server)
    headers = {**bearer("bob"), "Content-Type": "application/json"}
    for raw, why, at in (
        (b"notjson", "Expecting value", 0),
        (b'{"message": "hi",', "Expecting property name enclosed in double quotes", 17),
    ):
        response = await server.client.post("/api/chat", content=raw, headers=headers)
        assert response.status_code == 422, response.text
        said = response.json()["error"]
        assert said.startswith("invalid request: the body is not valid JSON ("), said
        assert why in said and f"at character {at}); send a JSON object" in said, said


async def test_a_whole_number_of_thousands_of_digits_is_a_clear_422(
    make_server: MakeServer,
) -> None:
    """Before: 400 "There was an error parsing the body"."""
    server = await make_server()
    session = await ready(server)
    raw = b'{"agent_name": "x", "chat_id": "' + session["chat_id"].encode() + b'", "message": '
    headers = {**bearer("bob"), "Content-Type": "application/json"}
    response = await server.client.post(
        "/api/chat", content=raw + b"1" * 5000 + b"}", headers=headers
    )
    assert response.status_code == 422, response.text
    said = response.json()["error"]
    assert "whole number of more than 4300 digits" in said and "set_int_max" not in said


async def test_a_body_past_the_limit_is_refused_with_413(make_server: MakeServer) -> None:
    server = await make_server()
    session = await ready(server)
    body = json.dumps({"agent_name": AGENT, "chat_id": session["chat_id"], "pad": "x" * 500_000})
    response = await server.client.post("/api/chat", content=body, headers=bearer("bob"))
    assert_error_body(response, 413)


async def test_one_chat_id_under_both_names_may_be_spelled_two_ways(
    make_server: MakeServer,
) -> None:
    """docs/http.md: the same value in ``chat_id`` and ``session_id`` is fine, whatever its
    spelling (case, hyphens); two different chats are refused."""
    server = await make_server()
    session = await ready(server)
    chat = session["chat_id"]
    turn = {"agent_name": AGENT, "chat_id": chat, "message": "hi"}
    for same in (chat.upper(), chat.replace("-", "")):
        response = await server.client.post(
            "/api/chat", json={**turn, "session_id": same}, headers=bearer("bob")
        )
        assert response.status_code == 200, response.text
        assert response.json()["session_id"] == chat
    other = "00000000-0000-4000-8000-000000000000"
    for wrong in (other, "not-a-uuid", 12):
        response = await server.client.post(
            "/api/chat", json={**turn, "session_id": wrong}, headers=bearer("bob")
        )
        assert_error_body(response, 422)
        assert "not both" in response.json()["error"], response.text


# A chunked body past the limit: tests/hostile/test_request_body.py, on raw sockets
# (the server answers 413 and closes while an HTTP client would still be writing).


@pytest.mark.parametrize("where", ["message", "agent_name", "chat_id"])
async def test_json_nested_thousands_deep_answers_4xx(make_server: MakeServer, where: str) -> None:
    server = await make_server()
    session = await ready(server)
    fields = {"agent_name": json.dumps(AGENT), "chat_id": json.dumps(session["chat_id"])}
    fields["message"] = json.dumps("hi")
    fields[where] = deep(DEEP)
    body = "{" + ", ".join(f'"{k}": {v}' for k, v in fields.items()) + "}"
    for path in ("/api/chat", "/api/chat/stream", "/api/sessions"):
        response = await server.client.post(
            path, content=body, headers={**bearer("bob"), "Content-Type": "application/json"}
        )
        assert_error_body(response, 400, 413, 422)


async def test_a_lone_surrogate_in_a_message_is_a_4xx_or_a_stored_turn(
    make_server: MakeServer,
) -> None:
    server = await make_server()
    session = await ready(server)
    body = json.dumps({"agent_name": AGENT, "chat_id": session["chat_id"], "message": "\ud83d"})
    assert "\\ud83d" in body
    for path in ("/api/chat", "/api/chat/stream"):
        response = await server.client.post(
            path, content=body, headers={**bearer("bob"), "Content-Type": "application/json"}
        )
        assert response.status_code < 500, (path, response.text)
        if response.status_code >= 400:
            assert_error_body(response, 400, 413, 422)
    history = await server.client.get(
        f"/api/chats/{session['chat_id']}/messages", headers=bearer("bob")
    )
    assert history.status_code == 200, history.text
