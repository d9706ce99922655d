"""``chatwright mcp serve --http`` against requests a hostile web page or user could send.

In local mode every request acts as the local user, so a page on another site
must not reach it through the browser: a Host or Origin that is not loopback
(DNS rebinding) is refused. With JWTs, a session id taken from another user's
session does not make its bearer act as that user.
"""

from __future__ import annotations

import httpx

# The fixtures of test_serve: a served database, and mcp serve --http with JWTs or local.
from test_serve import Served, http, initialize_body, local_http, served, token  # noqa: F401

ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def post(url: str, **headers: str) -> httpx.Response:
    return httpx.post(url, json=initialize_body(), headers={**ACCEPT, **headers}, timeout=30)


def test_local_mode_refuses_a_foreign_host_or_origin(local_http: Served) -> None:  # noqa: F811
    local = local_http
    assert post(local.url).status_code == 200
    port = local.url.split(":")[2].split("/")[0]
    for headers in [
        {"Host": "attacker.example"},
        {"Host": f"attacker.example:{port}"},
        {"Origin": "http://attacker.example"},
        {"Host": f"127.0.0.1.attacker.example:{port}"},
    ]:
        response = post(local.url, **headers)
        assert response.status_code in {400, 403, 421}, (headers, response.status_code)


def test_another_users_session_id_does_not_make_one_them(http: Served) -> None:  # noqa: F811
    alice = {"Authorization": f"Bearer {token('alice')}"}
    opened = post(http.url, **alice)
    assert opened.status_code == 200, opened.text
    session = opened.headers.get("mcp-session-id")
    assert session
    # Without a token, or with a bad one, alice's session id gets nothing.
    body = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
    for headers in [{}, {"Authorization": "Bearer not-a-jwt"}]:
        response = httpx.post(
            http.url,
            json=body,
            headers={**ACCEPT, "mcp-session-id": session, **headers},
            timeout=30,
        )
        assert response.status_code == 401, (headers, response.text)
