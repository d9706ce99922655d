"""The suite's backends are what they claim: the attacks below them would prove little otherwise.

On ``supabase`` the server must run the ``supabase`` backend as a role that is no
superuser and owns no framework table, whose statements for a user run as
``authenticated`` with that user's claims; the stock Supabase grants must have
been there before the migration (and closed by it).
"""

from __future__ import annotations

import sqlalchemy as sa

from chatwright.plugins.supabase.storage import SupabaseStorage
from tests.hostile.conftest import Backend, MakeServer, sql


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
