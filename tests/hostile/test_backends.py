"""The suite's backends are what they claim: the attacks below them would prove little otherwise.

On ``supabase`` the server must run the ``supabase`` backend as a role that is no
superuser and owns no framework table, whose statements for a user run as
``authenticated`` with that user's claims; the stock Supabase grants must have
been there before the migration (and closed by it). On ``postgresql`` and
``supabase`` the server must reach the database as the run says: directly, or
through the run's PgBouncer in transaction mode.
"""

from __future__ import annotations

import socket

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from chatwright.plugins.supabase.storage import SupabaseStorage
from tests import pgbouncer
from tests.harness import ADMIN_URL
from tests.hostile.conftest import Backend, MakeServer, bearer, sql


async def test_the_server_runs_the_backend_as_described(
    make_server: MakeServer, backend: Backend
) -> None:
    server = await make_server()
    storage = server.runtime.storage
    assert storage.dialect == ("sqlite" if backend.name == "sqlite" else "postgresql")  # type: ignore[attr-defined]
    assert isinstance(storage, SupabaseStorage) == (backend.name == "supabase")
    if backend.name != "supabase":
        return
    (me,) = await sql(
        server.runtime,
        "SELECT current_user AS role, r.rolsuper, r.rolbypassrls FROM pg_roles r "
        "WHERE r.rolname = current_user",
    )
    assert me["rolsuper"] is False
    owned = await sql(
        server.runtime,
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tableowner = :me",
        me=me["role"],
    )
    assert owned == []
    async with storage.read("alice") as conn:  # type: ignore[attr-defined]
        row = (await conn.execute(sa.text("SELECT current_user, auth.jwt() ->> 'sub'"))).one()
    assert tuple(row) == ("authenticated", "alice")
    # The stock default privileges were in place: the migration had to revoke them.
    defaults = await sql(
        server.runtime,
        "SELECT count(*) AS n FROM pg_default_acl d JOIN pg_namespace n "
        "ON n.oid = d.defaclnamespace WHERE n.nspname = 'public'",
    )
    assert defaults[0]["n"] >= 2


async def test_the_server_reaches_postgresql_the_way_the_run_says(
    make_server: MakeServer, backend: Backend
) -> None:
    """Directly, or through the run's PgBouncer in transaction mode
    (``CHATWRIGHT_TEST_PGBOUNCER``): the connection a request's transaction runs on is
    the one the run claims, so that a pooled run cannot silently run direct."""
    server = await make_server()
    storage = server.runtime.storage
    answer = await server.client.get("/api/sessions", headers=bearer("eve"))
    assert answer.status_code == 200, answer.text
    if backend.name == "sqlite":
        assert storage.dialect == "sqlite"  # type: ignore[attr-defined]
        return
    bouncer = pgbouncer.running()
    async with storage.read() as conn:  # type: ignore[attr-defined]
        raw = await conn.get_raw_connection()
        fd = raw.driver_connection.pgconn.socket  # type: ignore[union-attr]
        with socket.fromfd(fd, socket.AF_INET, socket.SOCK_STREAM) as sock:
            mine = sock.getsockname()[1]  # chatwright's end of its connection
        query = sa.text("SELECT pg_backend_pid(), inet_client_port(), current_database()")
        pid, seen, database = (await conn.execute(query)).one()
        # Asked while the transaction holds its server connection.
        clients = bouncer.show("CLIENTS") if bouncer else []
        servers = bouncer.show("SERVERS") if bouncer else []
        pools = bouncer.show("POOLS") if bouncer else []
    if bouncer is None:
        assert seen == mine, "the server sees another client than chatwright's socket"
        assert storage.pooler == "none"  # type: ignore[attr-defined]
        return
    assert storage.url.port == bouncer.port  # type: ignore[attr-defined]
    assert storage.pooler == "transaction"  # type: ignore[attr-defined]
    assert seen != mine, "PostgreSQL sees chatwright's own socket: no pooler in between"
    assert [c["database"] for c in clients if c["port"] == mine] == [database]
    assert [(s["database"], s["local_port"]) for s in servers if s["remote_pid"] == pid] == [
        (database, seen)
    ]
    modes = {p["pool_mode"] for p in pools if p["database"] == database}
    assert modes == {"transaction"}, pools
    direct = storage.direct_url  # type: ignore[attr-defined]
    if pgbouncer.MODE == "direct_url":
        assert (direct.port, storage.can_listen) == (make_url(ADMIN_URL).port or 5432, True)  # type: ignore[attr-defined]
    else:
        assert (direct, storage.can_listen) == (storage.url, False)  # type: ignore[attr-defined]
