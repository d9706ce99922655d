"""What the server gives away without a token, and to pages of other sites.

``/healthz`` answers anyone (load balancers call it): it may say that the
database answers, not where the database is or whose it is. In local mode every
request is the user ``local``, so a page on another site that makes a browser
send requests to the loopback server (DNS rebinding: its own name, resolving to
127.0.0.1) must be refused by its ``Host`` header before it reads anyone's chats.
"""

from __future__ import annotations

import re

from sqlalchemy.engine import make_url

from tests.hostile.conftest import (
    Backend,
    MakeServer,
    assert_error_body,
)


async def test_healthz_names_no_database_host_user_or_file(
    make_server: MakeServer, backend: Backend
) -> None:
    server = await make_server()
    response = await server.client.get("/healthz")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "ok"
    url = make_url(backend.url)
    secrets = [url.username, url.host, url.database]
    for secret in filter(None, secrets):
        # As a word: the user "postgres" is not in "postgresql" (a dialect says little).
        assert not re.search(rf"(?<![\w.]){re.escape(secret)}(?![\w.])", response.text), secret


async def test_local_mode_refuses_a_foreign_host_header(make_server: MakeServer) -> None:
    server = await make_server(server={"auth": "local"})
    mine = await server.client.get("/api/sessions")
    assert mine.status_code == 200, mine.text
    for host in ("attacker.example", "attacker.example:8000", "127.0.0.1.attacker.example"):
        for path in ("/api/sessions", "/api/agents", "/"):
            response = await server.client.get(path, headers={"Host": host})
            assert_error_body(response, 400, 403, 421)
