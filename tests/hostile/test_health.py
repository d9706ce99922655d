"""Review finding "/healthz tells anyone where the database is", replayed on a real server.

``/healthz`` used to answer the database URL or file path to anyone, and the
driver's error (host, port, user) when the database was down. Here an
unauthenticated caller must get ``{"status": "ok"}`` or an error body naming
nothing of the deployment, while the details are behind ``/api/health`` for
admins only.
"""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest

from chatwright.errors import StorageError
from tests.hostile.conftest import SECRET, MakeServer, any_text, bearer


def admin() -> dict[str, str]:
    claims = {"sub": "root", "aud": "authenticated", "exp": int(time.time()) + 86400}
    token = jwt.encode({**claims, "chatwright_admin": True}, SECRET, algorithm="HS256")
    return {"Authorization": f"Bearer {token}"}


async def test_healthz_tells_an_anonymous_caller_only_ok(make_server: MakeServer) -> None:
    server = await make_server()
    client = server.client
    where = server.runtime.storage.description
    health = await client.get("/healthz")
    assert health.status_code == 200
    assert health.json() == {"status": "ok"}

    for headers in ({}, bearer("mallory")):
        details = await client.get("/api/health", headers=headers)
        assert details.status_code in (401, 403)
        assert where not in details.text
    details = await client.get("/api/health", headers=admin())
    assert details.status_code == 200, details.text
    assert details.json() == {"status": "ok", "database": where, "error": None}


async def test_a_database_that_is_down_is_not_described_to_anyone(
    make_server: MakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = await make_server()
    storage = server.runtime.storage
    secret_detail = f"connection to {storage.description} refused (user chatwright)"

    async def down() -> None:
        raise StorageError(secret_detail)

    monkeypatch.setattr(storage, "ping", down)
    health = await server.client.get("/healthz")
    assert health.status_code == 503
    assert health.json() == {"status": "unavailable", "error": "the database does not answer"}
    assert storage.description not in any_text(health.json())

    details = await server.client.get("/api/health", headers=admin())
    assert details.status_code == 503
    assert details.json()["error"] == secret_detail


async def test_a_password_given_as_a_query_parameter_is_not_shown(
    make_server: MakeServer, backend: Any
) -> None:
    # libpq takes `?password=` as well as `user:password@`; both are credentials.
    if backend.name == "sqlite":
        pytest.skip("a SQLite URL holds no password")
    from sqlalchemy.engine import make_url

    url = make_url(backend.url)
    with_password = url.update_query_dict({"password": "hunter2-in-the-query"})
    storage = {"url": with_password.render_as_string(hide_password=False)}
    server = await make_server(storage=storage)
    where = server.runtime.storage.description
    assert "hunter2" not in where and "password=**********" in where
    details = await server.client.get("/api/health", headers=admin())
    assert details.status_code == 200, details.text
    assert "hunter2" not in details.text
    assert details.json()["database"] == where


def test_a_separate_session_store_is_named_with_the_database() -> None:
    """Attack: with Redis sessions down, /api/health named only the SQL database, while
    its error was Redis's."""
    from chatwright.plugins.server.routes.health import described
    from chatwright.stores import WithSessionStore

    class Backend:
        description = "postgresql://chatwright@db/chat"

    class Redis:
        description = "Redis at redis://cache:6379/0"

    class Nameless:
        pass

    both = WithSessionStore(Backend(), Redis())  # type: ignore[arg-type]
    assert (
        described(both)
        == "postgresql://chatwright@db/chat; sessions: Redis at redis://cache:6379/0"
    )
    assert described(WithSessionStore(Backend(), Nameless())) == "postgresql://chatwright@db/chat"  # type: ignore[arg-type]
    assert described(Backend()) == "postgresql://chatwright@db/chat"
