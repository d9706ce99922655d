"""Tokens an attacker makes: every user endpoint answers 401 with ``WWW-Authenticate``.

A token signed with another secret, expired, for another audience, with
``alg: none``, with another algorithm than the server's, without a subject or
with an unusable one, a truncated one, another scheme than Bearer, or none at
all: each is refused with 401, the ``WWW-Authenticate: Bearer`` challenge and
the error body, on every endpoint that acts for a user (the beacon's token in
the body too), before anything is read or written. All of them claim to be
alice, whose chat must come out untouched.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import jwt
import pytest

from chatwright.plugins.example import assistant as example
from tests.hostile.conftest import (
    AGENT,
    SECRET,
    MakeServer,
    assert_error_body,
    bearer,
    open_chat,
    script,
    sql,
)

ALICE_SAYS = "the spare key is under the blue flowerpot"


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def claims(**extra: Any) -> dict[str, Any]:
    return {"sub": "alice", "aud": "authenticated", "exp": int(time.time()) + 86400, **extra}


def signed(payload: dict[str, Any], key: str = SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(payload, key, algorithm=algorithm)


def forged_headers() -> dict[str, dict[str, str]]:
    """Authorization headers that must not get anyone in, by what is wrong with them."""
    valid = signed(claims())
    head, body, _ = valid.split(".")
    tokens = {
        "another secret": signed(claims(), "an-attackers-secret-of-at-least-32-bytes"),
        "expired": signed(claims(exp=int(time.time()) - 120)),
        "another audience": signed(claims(aud="service")),
        "no audience": signed({k: v for k, v in claims().items() if k != "aud"}),
        "no expiry": signed({k: v for k, v in claims().items() if k != "exp"}),
        "expiry as a string": signed(claims(exp="9999999999")),
        "no subject": signed({k: v for k, v in claims().items() if k != "sub"}),
        "empty subject": signed(claims(sub="")),
        "NUL in the subject": signed(claims(sub="alice\x00")),
        "numeric subject": signed(claims(sub=12345)),
        "alg none": f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims())}.",
        "alg None": f"{b64({'alg': 'None', 'typ': 'JWT'})}.{b64(claims())}.",
        "HS512 with the right secret": signed(claims(), algorithm="HS512"),
        "RS256 header, HMAC signature": (
            f"{b64({'alg': 'RS256', 'typ': 'JWT', 'kid': 'k1'})}.{body}." + valid.split(".")[2]
        ),
        "signature stripped": f"{head}.{body}.",
        "payload swapped": f"{head}.{b64(claims(sub='admin'))}.{valid.split('.')[2]}",
        "truncated": valid[: len(valid) // 2],
        "garbage": "not.a.token",
        "huge": "a" * 15_000,  # within the 16 KiB head the server serves (431 past it)
    }
    headers = {name: {"Authorization": f"Bearer {token}"} for name, token in tokens.items()}
    headers["no header"] = {}
    headers["Bearer without a token"] = {"Authorization": "Bearer"}
    headers["Basic scheme"] = {"Authorization": f"Basic {valid}"}
    headers["token without a scheme"] = {"Authorization": valid}
    return headers


# The HS512 token is signed with the server's (short for SHA-512) secret on purpose.
@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
async def test_forged_tokens_answer_401_with_a_challenge_on_every_user_endpoint(
    make_server: MakeServer,
) -> None:
    server = await make_server()
    client = server.client
    await example.seed(server.runtime.storage, "scripted:x")
    await server.runtime.storage.agents.update(AGENT, model_settings=script())
    alice = await open_chat(client, "alice")
    said = await client.post(
        "/api/chat",
        json={"agent_name": AGENT, "chat_id": alice["chat_id"], "message": ALICE_SAYS},
        headers=bearer("alice"),
    )
    assert said.status_code == 200, said.text
    before = await sql(server.runtime, "SELECT * FROM chat_sessions ORDER BY created_at")
    messages = await sql(server.runtime, "SELECT * FROM chat_messages ORDER BY id")
    session, chat = alice["id"], alice["chat_id"]
    turn = {"agent_name": AGENT, "chat_id": chat, "message": "what did I say?"}
    endpoints: list[tuple[str, str, Any]] = [
        ("GET", "/api/sessions", None),
        ("POST", "/api/sessions", {"agent_name": AGENT}),
        ("POST", "/api/sessions", {"agent_name": AGENT, "chat_id": chat}),
        ("POST", f"/api/sessions/{session}/heartbeat", None),
        ("POST", f"/api/sessions/{session}/deactivate", None),
        ("GET", f"/api/chats/{chat}/messages", None),
        ("POST", "/api/chat", turn),
        ("POST", "/api/chat/stream", turn),
        ("GET", "/api/agents", None),
        ("GET", f"/api/agents/{AGENT}", None),
        ("GET", f"/api/agents/{AGENT}/customizations", None),
        ("PUT", f"/api/agents/{AGENT}/customizations", {"content": "obey bob"}),
    ]
    for name, headers in forged_headers().items():
        for method, path, body in endpoints:
            response = await client.request(method, path, json=body, headers=headers)
            assert_error_body(response, 401)
            challenge = response.headers.get("www-authenticate", "")
            assert challenge.startswith("Bearer "), (name, method, path, challenge)
            assert ALICE_SAYS not in response.text
        # navigator.sendBeacon's way: the same bearer token in the body.
        scheme, _, token = headers.get("Authorization", "Bearer").partition(" ")
        if scheme != "Bearer":
            continue
        beacon = await client.post(
            f"/api/sessions/{session}/deactivate", json={"access_token": token}
        )
        assert_error_body(beacon, 401)
        assert beacon.headers.get("www-authenticate", "").startswith("Bearer ")

    # Nothing was opened, closed, said or customized in alice's name.
    assert await sql(server.runtime, "SELECT * FROM chat_sessions ORDER BY created_at") == before
    assert await sql(server.runtime, "SELECT * FROM chat_messages ORDER BY id") == messages
    assert await server.runtime.storage.customizations.list("alice", AGENT) == []
    # The real alice still gets in: the refusals were about the tokens.
    beat = await client.post(f"/api/sessions/{session}/heartbeat", headers=bearer("alice"))
    assert beat.status_code == 200
    assert beat.json()["is_active"] is True
    assert str(uuid.UUID(beat.json()["chat_id"])) == chat


async def test_hostile_beacon_bodies_answer_401_not_500(make_server: MakeServer) -> None:
    """The beacon's body is read before anyone is known: nested past the JSON parser's
    depth, a token that is not text, or one no JWT can be (a lone surrogate), each is a
    401 with the challenge, and the session stays open."""
    server = await make_server()
    client = server.client
    await example.seed(server.runtime.storage, "scripted:x")
    alice = await open_chat(client, "alice")
    path = f"/api/sessions/{alice['id']}/deactivate"
    headers = {"content-type": "application/json"}
    bodies = {
        "nested lists": "[" * 5000 + "]" * 5000,
        "nested objects": '{"a":' * 3000 + "1" + "}" * 3000,
        "a lone surrogate": '{"access_token": "\\ud800.a.b"}',
        "not ASCII": '{"access_token": "\u00e9t\u00e9.a.b"}',
    }
    for name, body in bodies.items():
        answer = await client.post(path, content=body.encode(), headers=headers)
        assert_error_body(answer, 401)
        assert answer.headers.get("www-authenticate", "").startswith("Bearer "), name
    for token in (5, ["a", "b"], {"t": 1}):
        answer = await client.post(path, json={"access_token": token})
        assert_error_body(answer, 401)
        assert "must be the JWT, as a string" in answer.json()["error"], token
    listed = await client.get("/api/sessions", headers=bearer("alice"))
    assert [(s["id"], s["is_active"]) for s in listed.json()] == [(alice["id"], True)]
