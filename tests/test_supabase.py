"""The ``supabase`` backend: row-level security enforced by PostgreSQL itself.

Superusers and table owners bypass row-level security, so every isolation check
here runs its statements as a role that is subject to it: ``authenticated``
(which the backend switches to for each user transaction), a LOGIN role that is
a plain member of ``authenticated``, or the backend connected as a non-superuser
that owns nothing. Each check is paired with a contrast that shows it bites (the
plain ``sql`` backend, connected as the superuser, does leak what RLS hides).

The module creates its own database (``cw_rls_<hex>``) and LOGIN roles on the
server at ``CHATWRIGHT_TEST_DATABASE_URL`` (default: ``postgres`` on
127.0.0.1:5432) and drops them at the end. Without a server it skips, unless
``CI=true``, where it fails.

Covered: (1) a CRUD tool that forgot its scope still sees and changes only the
caller's rows; (2) the policies bind a LOGIN role acting as ``authenticated``,
and the backend keeps users apart when it connects as a non-superuser; (3) every
user endpoint of the HTTP server; (4) the migration on a Supabase-like database
(auth functions and roles already there) is idempotent and leaves them alone;
(5) pooler settings; (6) config changes are NOTIFYed with the agent's name and
reach ``watch_config``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import jwt
import psycopg
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from langchain_core.tools import BaseTool
from sqlalchemy.engine import make_url

from chatwright import testing
from chatwright.errors import InvalidInputError, StorageError
from chatwright.plugins.example import assistant as example
from chatwright.plugins.server.app import create_app
from chatwright.plugins.sql.storage import SQLStorage
from chatwright.plugins.supabase.storage import SupabaseStorage
from chatwright.registry import Plugins
from chatwright.stores import ColumnSpec, NewMessage, TableSpec
from chatwright.tools import load_tools
from tests import pgbouncer
from tests.harness import (
    ADMIN_URL,
    DATA_TABLES,
    SUPABASE_DEFAULT_PRIVILEGES,
    SUPABASE_ROLES,
    Cluster,
    admin_connect,
    libpq,
    pg_storage_settings,
    storage_for,
)
from tests.harness import call_tool as call
from tests.harness import tool_err as err
from tests.harness import tool_ok as ok

pytestmark = pytest.mark.postgresql

PLUGINS = Plugins.load()
USER_TABLES = (
    "chat_sessions",
    "active_sessions",
    "chat_messages",
    "prompt_customizations",
    "agent_memories",
)
# The user tables of write safety (migration 0005): per-user rows too, the audit log append-only.
WRITE_SAFETY_TABLES = ("tool_approval_choices", "pending_actions", "audit_log")
# Bounded turns (migration 0006): chats' summaries are per-user rows; the usage tables are
# the framework's, closed to every Data API role (a user must not rewrite what they spent).
SUMMARY_TABLES = ("chat_summaries",)
USAGE_TABLES = ("token_usage", "usage_totals", "usage_reservations", "user_budgets")
ITEMS = "rls_items"
APP_TABLES = (ITEMS, "tasks", "notes")
AGENT = example.AGENT
SECRET = "chatwright-test-secret-of-at-least-32-bytes"

ITEMS_SPEC = TableSpec(
    ITEMS,
    (
        ColumnSpec("id", "integer", primary_key=True),
        ColumnSpec("user_id", "string", nullable=False),
        ColumnSpec("title", "string", nullable=False),
    ),
    indexes=(("user_id",),),
)
UNSCOPED = {"user_column": None}
# The "keeper" agent's tools: one scoped create for seeding, and read / update /
# delete / create rows whose config forgot the scope (allowed by tools.unscoped_tables).
KEEPER_TOOLS: dict[str, dict[str, Any]] = {
    "add_item": {"table": ITEMS, "operation": "create", "args": {"title": {"required": True}}},
    "read_any": {
        "table": ITEMS,
        "operation": "read",
        "filters": {"id": {"type": "integer"}},
        "scope": UNSCOPED,
        "order_by": "id",
    },
    "rename_any": {
        "table": ITEMS,
        "operation": "update",
        "args": {"title": {}},
        "filters": {"id": {"type": "integer", "required": True}},
        "scope": UNSCOPED,
    },
    "delete_any": {
        "table": ITEMS,
        "operation": "delete",
        "filters": {"id": {"type": "integer", "required": True}},
        "scope": UNSCOPED,
    },
    "add_for_anyone": {
        "table": ITEMS,
        "operation": "create",
        "args": {"title": {"required": True}, "owner": {"column": "user_id", "required": True}},
        "scope": UNSCOPED,
    },
}


# --------------------------------------------------------------------------- database


async def _migrate(url: str) -> None:
    storage = supabase(url)
    try:
        await storage.upgrade()
    finally:
        await storage.close()


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    admin = admin_connect()
    tag = uuid.uuid4().hex[:10]
    c = Cluster(name=f"cw_rls_{tag}", app_role=f"cw_rls_app_{tag}", svc_role=f"cw_rls_svc_{tag}")
    admin.execute(f'CREATE DATABASE "{c.name}"')
    try:
        # The migration creates anon / authenticated / service_role when they are missing.
        asyncio.run(_migrate(c.url()))
        admin.execute(
            f'CREATE ROLE "{c.app_role}" LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE '
            "IN ROLE authenticated"
        )
        admin.execute(
            f'CREATE ROLE "{c.svc_role}" LOGIN NOSUPERUSER BYPASSRLS NOCREATEDB NOCREATEROLE '
            "IN ROLE authenticated"
        )
        with psycopg.connect(libpq(c.url()), autocommit=True) as db:
            svc = f'"{c.svc_role}"'
            db.execute(
                f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {svc}"
            )
            db.execute(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {svc}")
        yield c
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{c.name}" WITH (FORCE)')
        for role in (c.app_role, c.svc_role):
            admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        admin.close()


def supabase(url: str, *, direct: bool = False, **storage: Any) -> SupabaseStorage:
    """The supabase backend on ``url``: through the run's PgBouncer if it has one, unless
    ``direct`` (for the tests of the pooler settings themselves)."""
    reach = {"url": url} if direct else pg_storage_settings(url)
    settings = testing.settings(
        storage={"backend": "supabase", **reach, **storage},
        tools={"unscoped_tables": [ITEMS]},
    )
    return SupabaseStorage.from_settings(settings)


@pytest.fixture
async def supa(cluster: Cluster) -> AsyncIterator[SupabaseStorage]:
    """The supabase backend connected as the superuser, on an emptied database."""
    storage = supabase(cluster.url())
    await storage.upgrade()
    async with storage.write() as conn:
        for table in APP_TABLES:
            await conn.execute(sa.text(f'DROP TABLE IF EXISTS "{table}"'))
        await conn.execute(sa.text(f"TRUNCATE {', '.join(DATA_TABLES)} RESTART IDENTITY"))
    yield storage
    await storage.close()


async def admin_rows(cluster: Cluster, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Rows read as the superuser (no row-level security), outside the backend."""
    async with await psycopg.AsyncConnection.connect(libpq(cluster.url()), autocommit=True) as conn:
        cursor = await conn.execute(sql, params)  # type: ignore[arg-type]
        return await cursor.fetchall() if cursor.description is not None else []


async def role_attributes(cluster: Cluster, role: str) -> tuple[bool, bool]:
    ((superuser, bypass),) = await admin_rows(
        cluster, "SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = %s", role
    )
    return superuser, bypass


async def table_owners(cluster: Cluster) -> set[str]:
    rows = await admin_rows(
        cluster,
        "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public' "
        "AND tablename = ANY(%s)",
        list(USER_TABLES),
    )
    return {r[0] for r in rows}


async def seed_two_users(storage: SupabaseStorage) -> dict[str, Any]:
    """A session, a message, a memory and a customization for alice and for bob."""
    if await storage.agents.get(AGENT) is None:
        await storage.agents.create(AGENT, system_prompt="p", model="offline:x")
    chats = {}
    for user in ("alice", "bob"):
        session = await storage.sessions.open(user, AGENT)
        await storage.messages.append(
            user,
            session.chat_id,
            [NewMessage("human", {"type": "human", "data": {"content": f"{user} says hi"}})],
        )
        await storage.customizations.put(user, AGENT, "instruction_set", f"{user}'s style")
        chats[user] = session
    # Only bob has a memory: alice asking for hers must find none.
    await storage.memories.put("bob", AGENT, "bob likes coffee")
    await storage.memories.put("alice", "other-agent", "alice likes tea")
    return chats


# --------------------------------------------------------------------------- tools


async def keeper(storage: SQLStorage, user: str) -> dict[str, BaseTool]:
    settings = testing.settings(tools={"unscoped_tables": [ITEMS]})
    loaded = await load_tools(storage, settings, PLUGINS, "keeper", user)
    assert loaded.problems == [], [str(p) for p in loaded.problems]
    return {t.name: t for t in loaded.tools}


async def setup_keeper(storage: SupabaseStorage) -> None:
    assert await storage.records.ensure_table(ITEMS_SPEC) is True
    await storage.agents.create("keeper", system_prompt="p", model="offline:x")
    for name, config in KEEPER_TOOLS.items():
        await storage.tools.add("keeper", name, type="crud", config=config)


async def items(cluster: Cluster) -> list[tuple[int, str, str]]:
    rows = await admin_rows(cluster, f"SELECT id, user_id, title FROM {ITEMS} ORDER BY id")
    return [(r[0], r[1], r[2]) for r in rows]


# --------------------------------------------------------------------------- 1. CRUD + RLS


async def test_rls_isolates_users_even_when_a_crud_tool_forgot_its_scope(
    cluster: Cluster, supa: SupabaseStorage
) -> None:
    await setup_keeper(supa)
    # ensure_table gave the new table the framework's policy.
    ((rls,),) = await admin_rows(
        cluster, "SELECT relrowsecurity FROM pg_class WHERE relname = %s", ITEMS
    )
    assert rls is True
    policies = await admin_rows(
        cluster,
        "SELECT policyname, roles::text[], cmd FROM pg_policies WHERE tablename = %s",
        ITEMS,
    )
    assert policies == [("chatwright_own_rows", ["authenticated"], "ALL")]

    alice, bob = await keeper(supa, "alice"), await keeper(supa, "bob")
    for tools, titles in ((alice, ["alice milk", "alice tea"]), (bob, ["bob bread", "bob coffee"])):
        for title in titles:
            ok(await call(tools["add_item"], title=title))
    seeded = await items(cluster)
    assert [(u, t) for _, u, t in seeded] == [
        ("alice", "alice milk"),
        ("alice", "alice tea"),
        ("bob", "bob bread"),
        ("bob", "bob coffee"),
    ]
    alice_ids = [i for i, u, _ in seeded if u == "alice"]
    bob_ids = [i for i, u, _ in seeded if u == "bob"]
    bobs_rows = [r for r in seeded if r[1] == "bob"]

    # Read with no scope and no filter: only alice's rows, in her transaction.
    read = ok(await call(alice["read_any"]))
    assert [(r["id"], r["user_id"]) for r in read["rows"]] == [(i, "alice") for i in alice_ids]
    assert ok(await call(alice["read_any"], id=bob_ids[0])) == {"rows": [], "count": 0}
    assert {r["user_id"] for r in ok(await call(bob["read_any"]))["rows"]} == {"bob"}

    # Update / delete of bob's rows: "not found", and bob's rows are untouched.
    for bob_id in bob_ids:
        assert "not found" in err(await call(alice["rename_any"], id=bob_id, title="hacked"))
        assert "not found" in err(await call(alice["delete_any"], id=bob_id))
    assert [r for r in await items(cluster) if r[1] == "bob"] == bobs_rows

    # A create that writes user_id itself cannot plant a row for bob (WITH CHECK).
    # (How the refusal surfaces is pinned by the xfail test below.)
    try:
        outcome = (await call(alice["add_for_anyone"], title="planted", owner="bob")).status
    except StorageError as exc:
        outcome = str(exc)
    assert outcome == "error" or "row-level security" in outcome
    assert "planted" not in {t for _, _, t in await items(cluster)}

    # Her own rows she can still change: the tools work, RLS only narrows them.
    renamed = ok(await call(alice["rename_any"], id=alice_ids[0], title="alice oat milk"))
    assert renamed["updated"] == 1
    assert ok(await call(alice["delete_any"], id=alice_ids[1])) == {"deleted": 1}
    assert await items(cluster) == [(alice_ids[0], "alice", "alice oat milk"), *bobs_rows]

    # Contrast: the same config on the plain sql backend, connected as the superuser,
    # leaks bob's rows and lets alice change them. Isolation above came from RLS.
    plain = storage_for(cluster.url())
    try:
        leaky = await keeper(plain, "alice")
        leaked = ok(await call(leaky["read_any"]))
        assert {r["user_id"] for r in leaked["rows"]} == {"alice", "bob"}
        changed = ok(await call(leaky["rename_any"], id=bob_ids[0], title="overwritten"))
        assert changed["rows"][0]["user_id"] == "bob"
    finally:
        await plain.close()
    assert (bob_ids[0], "bob", "overwritten") in await items(cluster)


async def test_rls_refusal_of_a_crud_write_comes_back_as_a_tool_error(
    cluster: Cluster, supa: SupabaseStorage
) -> None:
    await setup_keeper(supa)
    alice = await keeper(supa, "alice")
    refused = err(await call(alice["add_for_anyone"], title="planted", owner="bob"))
    assert "Traceback" not in refused
    assert await items(cluster) == []


# --------------------------------------------------------------------------- 2. roles


async def test_policies_bind_a_login_role_acting_as_authenticated(
    cluster: Cluster, supa: SupabaseStorage
) -> None:
    seeded = await seed_two_users(supa)
    bob_session, alice_session = seeded["bob"].id, seeded["alice"].id
    bob_closed = (await supa.sessions.open("bob", AGENT, metadata={"closed": True})).id
    await supa.sessions.deactivate("bob", bob_closed)
    for table in USER_TABLES:  # both users' rows exist, so the filtering is not vacuous
        rows = await admin_rows(cluster, f"SELECT DISTINCT user_id FROM {table}")
        assert {r[0] for r in rows} == {"alice", "bob"}, table
    assert await role_attributes(cluster, cluster.app_role) == (False, False)
    assert cluster.app_role not in await table_owners(cluster)

    dsn = libpq(cluster.url(user=cluster.app_role))
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:

        async def users(table: str) -> set[str]:
            cursor = await conn.execute(f"SELECT DISTINCT user_id FROM {table}")
            return {r[0] for r in await cursor.fetchall()}

        async def claims(sub: str | None) -> None:
            value = json.dumps({"sub": sub, "role": "authenticated"}) if sub else ""
            await conn.execute("SELECT set_config('request.jwt.claims', %s, false)", (value,))

        await conn.execute("SET ROLE authenticated")
        cursor = await conn.execute("SELECT current_user, session_user")
        assert await cursor.fetchone() == ("authenticated", cluster.app_role)

        for table in USER_TABLES:  # no claims: no rows at all
            assert await users(table) == set(), table
        await claims("alice")
        for table in USER_TABLES:
            assert await users(table) == {"alice"}, table
        await claims("bob")
        for table in USER_TABLES:
            assert await users(table) == {"bob"}, table

        await claims("alice")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            await conn.execute(
                "INSERT INTO agent_memories (user_id, agent_name, notes) "
                "VALUES ('bob', 'planted', 'x')"
            )
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            await conn.execute(
                "INSERT INTO prompt_customizations (user_id, agent_name, content) "
                "VALUES ('bob', %s, 'planted')",
                (AGENT,),
            )
        with pytest.raises(
            psycopg.errors.InsufficientPrivilege, match=r"row-level security|another user's"
        ):
            # Handing one's own row to bob is refused too (WITH CHECK on UPDATE, and the
            # trigger of migration 0017 first: her chat is not his).
            await conn.execute("UPDATE chat_messages SET user_id = 'bob'")
        # Bob's rows cannot be reached to change or delete.
        for statement in (
            "UPDATE chat_messages SET role = 'system' WHERE user_id = 'bob'",
            "DELETE FROM chat_sessions WHERE user_id = 'bob'",
            "DELETE FROM active_sessions WHERE user_id = 'bob'",
            "UPDATE chat_sessions SET updated_at = '2000-01-01' WHERE user_id = 'bob'",
            "DELETE FROM agent_memories WHERE user_id = 'bob'",
        ):
            cursor = await conn.execute(statement)
            assert cursor.rowcount == 0, statement
        # Only the framework writes active rows (migration 0010): no row of hers makes
        # Bob's closed session active, and whether his session is active or closed,
        # or hers, the refusal is the same (no oracle of his sessions).
        refusals = set()
        for session_id, user in (
            (bob_closed, "alice"),
            (bob_session, "alice"),
            (bob_session, "bob"),
            (alice_session, "alice"),
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege) as refused:
                async with conn.transaction():
                    await conn.execute(
                        "INSERT INTO active_sessions "
                        "(session_id, user_id, agent_name, updated_at) "
                        "VALUES (%s, %s, %s, now())",
                        (session_id, user, AGENT),
                    )
            refusals.add(str(refused.value))
        assert refusals == {"permission denied for table active_sessions"}
        for change in ("client_key = 'renamed'", "updated_at = now() + interval '1 year'"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
                async with conn.transaction():
                    await conn.execute(f"UPDATE active_sessions SET {change}")
        # A row of her own is accepted: the refusals above are the policy, not grants.
        await conn.execute(
            "INSERT INTO agent_memories (user_id, agent_name, notes) VALUES ('alice', 'mine', 'ok')"
        )

    assert await admin_rows(cluster, "SELECT notes FROM agent_memories WHERE user_id = 'bob'") == [
        ("bob likes coffee",)
    ]
    assert await admin_rows(
        cluster, "SELECT count(*) FROM active_sessions WHERE user_id = 'bob'"
    ) == [(1,)]
    assert await admin_rows(cluster, "SELECT role FROM chat_messages WHERE user_id = 'bob'") == [
        ("human",)
    ]


async def test_user_transactions_run_as_authenticated_and_reset_afterwards(
    cluster: Cluster, supa: SupabaseStorage
) -> None:
    await seed_two_users(supa)
    # One pooled connection, so every transaction below reuses the same session.
    storage = supabase(cluster.url(), pool_size=1, max_overflow=0)
    probe = sa.text(
        "SELECT pg_backend_pid(), current_user, auth.jwt() ->> 'sub', "
        "(SELECT array_agg(DISTINCT user_id ORDER BY user_id) FROM chat_sessions)"
    )
    try:
        async with storage.read("alice") as conn:
            pid, role, sub, seen = (await conn.execute(probe)).one()
        assert (role, sub, seen) == ("authenticated", "alice", ["alice"])
        async with storage.write("bob") as conn:
            row = (await conn.execute(probe)).one()
        assert row[1:] == ("authenticated", "bob", ["bob"])
        assert row[0] == pid
        # The role and claims ended with the transaction: an admin statement on the
        # same connection runs as the connecting role and sees every row.
        async with storage.read() as conn:
            row = (await conn.execute(probe)).one()
        assert row[0] == pid
        assert row[1] == make_url(ADMIN_URL).username
        assert row[2] is None
        assert row[3] == ["alice", "bob"]
        # An error inside a user transaction does not leave the role behind either.
        with pytest.raises(StorageError):
            async with storage.write("alice") as conn:
                await conn.execute(sa.text("SELECT no_such_column FROM chat_sessions"))
        async with storage.read() as conn:
            assert (await conn.execute(probe)).one()[1] == make_url(ADMIN_URL).username
    finally:
        await storage.close()


async def test_backend_connected_as_a_non_superuser_never_returns_other_users_data(
    cluster: Cluster, supa: SupabaseStorage
) -> None:
    chats = await seed_two_users(supa)
    bob_chat = chats["bob"].chat_id
    # On Supabase chatwright connects as the project's `postgres` role: the service
    # role of docs/deploy.md. It is not a superuser, but it owns the tables it
    # creates and has BYPASSRLS, so framework (admin) statements see every row;
    # (`service_role` is PostgREST's equivalent API role, also BYPASSRLS). Here the
    # connecting role owns nothing, so it needs BYPASSRLS for the admin statements
    # that must look across users (chat_owner, the sweeper): without it RLS would
    # show it no rows at all, since no policy applies to it. User statements switch
    # to `authenticated`, which does not inherit BYPASSRLS.
    assert await role_attributes(cluster, cluster.svc_role) == (False, True)
    assert cluster.svc_role not in await table_owners(cluster)
    svc = supabase(cluster.url(user=cluster.svc_role))
    try:
        assert await svc.current_revision() == svc.head_revision()
        sessions = await svc.sessions.list("alice")
        assert [s.user_id for s in sessions] == ["alice"]
        assert await svc.messages.window("alice", bob_chat, 10) == []
        assert await svc.messages.page("alice", bob_chat, limit=10) == []
        assert await svc.memories.get("alice", AGENT) is None
        customizations = await svc.customizations.list("alice", AGENT)
        assert [c.content for c in customizations] == ["alice's style"]
        assert await svc.sessions.get("alice", chats["bob"].id) is None
        assert await svc.sessions.heartbeat("alice", chats["bob"].id) is None
        assert await svc.sessions.deactivate("alice", chats["bob"].id) is None
        assert await svc.sessions.touch_chat("alice", bob_chat) == 0

        # A user transaction through this role: a statement with no WHERE at all
        # still sees only the user's rows (the policy, not the stores' filters).
        for user in ("alice", "bob"):
            async with svc.read(user) as conn:
                for table in USER_TABLES:
                    seen = await conn.scalars(sa.text(f"SELECT DISTINCT user_id FROM {table}"))
                    assert set(seen) <= {user}, (user, table)
        with pytest.raises(InvalidInputError, match="not allowed for this user"):
            async with svc.write("alice") as conn:
                await conn.execute(
                    sa.text(
                        "INSERT INTO agent_memories (user_id, agent_name, notes) "
                        f"VALUES ('bob', '{AGENT}', 'planted')"
                    )
                )

        # The positive side works through the same role: bob's own data, admin
        # statements across users, and writes of one's own rows.
        assert [m.user_id for m in await svc.messages.window("bob", bob_chat, 10)] == ["bob"]
        bob_memory = await svc.memories.get("bob", AGENT)
        assert bob_memory is not None
        assert bob_memory.notes == "bob likes coffee"
        assert await svc.sessions.chat_owner(bob_chat) == ("bob", AGENT)
        assert {s.user_id for s in await svc.sessions.list()} == {"alice", "bob"}
        await svc.memories.put("alice", AGENT, "alice likes tea")
        await svc.messages.append(
            "alice",
            chats["alice"].chat_id,
            [NewMessage("human", {"type": "human", "data": {"content": "more"}})],
        )
        memory = await svc.memories.get("alice", AGENT)
        assert memory is not None
        assert memory.notes == "alice likes tea"
    finally:
        await svc.close()
    assert await admin_rows(cluster, "SELECT notes FROM agent_memories WHERE user_id = 'bob'") == [
        ("bob likes coffee",)
    ]
    assert await admin_rows(
        cluster,
        "SELECT (id IN (SELECT session_id FROM active_sessions)) FROM chat_sessions "
        "WHERE user_id = 'bob'",
    ) == [(True,)]


# --------------------------------------------------------------------------- 3. HTTP


def token(sub: str, **claims: Any) -> str:
    payload = {"sub": sub, "aud": "authenticated", "exp": int(time.time()) + 86400, **claims}
    return jwt.encode(payload, SECRET, algorithm="HS256")


def auth(sub: str, **claims: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(sub, **claims)}"}


async def test_every_user_endpoint_keeps_users_apart(
    cluster: Cluster, supa: SupabaseStorage
) -> None:
    settings = testing.settings(
        storage={"backend": "supabase", **pg_storage_settings(cluster.url())},
        server={"auth": "jwt", "jwt_secret": SECRET},
    )
    app = create_app(settings)
    alice, bob = auth("alice"), auth("bob")
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        assert isinstance(app.state.runtime.storage, SupabaseStorage)
        await example.seed(app.state.runtime.storage, "offline:assistant")

        async def opened(headers: dict[str, str], **body: Any) -> httpx.Response:
            return await client.post(
                "/api/sessions", json={"agent_name": AGENT, **body}, headers=headers
            )

        async def say(headers: dict[str, str], chat_id: str, text: str) -> httpx.Response:
            body = {"agent_name": AGENT, "session_id": chat_id, "message": text}
            return await client.post("/api/chat", json=body, headers=headers)

        async def reply(headers: dict[str, str], chat_id: str, text: str) -> str:
            response = await say(headers, chat_id, text)
            assert response.status_code == 200, response.text
            assert response.json()["error"] is None
            return str(response.json()["response"])

        a = (await opened(alice)).json()
        b = (await opened(bob)).json()
        assert "Added task" in await reply(alice, a["chat_id"], "add a task to buy milk")
        assert "Noted" in await reply(alice, a["chat_id"], "remember that I like tea")
        assert "Added task" in await reply(bob, b["chat_id"], "add a task to buy bread")
        assert "Noted" in await reply(bob, b["chat_id"], "remember that I like coffee")
        for headers, content in ((alice, "alice: be brief"), (bob, "bob: be verbose")):
            put = await client.put(
                f"/api/agents/{AGENT}/customizations", json={"content": content}, headers=headers
            )
            assert put.status_code == 200, put.text

        # The rows landed under the right users (checked as the superuser).
        tasks = await admin_rows(cluster, "SELECT id, user_id, title FROM tasks ORDER BY id")
        assert [(u, t) for _, u, t in tasks] == [("alice", "buy milk"), ("bob", "buy bread")]
        bob_task = tasks[1][0]
        memories = await admin_rows(
            cluster, "SELECT user_id, notes FROM agent_memories ORDER BY user_id"
        )
        assert memories == [("alice", "I like tea"), ("bob", "I like coffee")]

        # Alice reaching for bob's session and chat: 404 on every endpoint.
        probes: list[Callable[[], Awaitable[httpx.Response]]] = [
            lambda: client.post(f"/api/sessions/{b['id']}/heartbeat", headers=alice),
            lambda: client.post(f"/api/sessions/{b['id']}/deactivate", headers=alice),
            lambda: client.get(f"/api/chats/{b['chat_id']}/messages", headers=alice),
            lambda: say(alice, b["chat_id"], "list my tasks"),
            lambda: client.post(
                "/api/chat/stream",
                json={"agent_name": AGENT, "session_id": b["chat_id"], "message": "hi"},
                headers=alice,
            ),
            lambda: opened(alice, chat_id=b["chat_id"]),
        ]
        for probe in probes:
            response = await probe()
            assert response.status_code == 404, (response.request.url, response.text)
            assert "bread" not in response.text
            assert "coffee" not in response.text

        listed = (await client.get("/api/sessions", headers=alice)).json()
        assert [s["id"] for s in listed] == [a["id"]]
        mine = (await client.get(f"/api/agents/{AGENT}/customizations", headers=alice)).json()
        assert [c["content"] for c in mine] == ["alice: be brief"]
        recalled = await reply(alice, a["chat_id"], "what do you remember")
        assert "tea" in recalled
        assert "coffee" not in recalled
        listing = await reply(alice, a["chat_id"], "list my tasks")
        assert "milk" in listing
        assert "bread" not in listing
        assert "not found" in await reply(alice, a["chat_id"], f"complete task {bob_task}")
        assert "not found" in await reply(alice, a["chat_id"], f"delete task {bob_task}")
        history = (await client.get(f"/api/chats/{a['chat_id']}/messages", headers=alice)).json()
        texts = json.dumps(history["messages"])
        assert "milk" in texts
        assert "bread" not in texts
        assert "coffee" not in texts

        # Bob's data is intact and his session still active.
        assert await admin_rows(cluster, "SELECT status FROM tasks WHERE id = %s", bob_task) == [
            ("pending",)
        ]
        beat = await client.post(f"/api/sessions/{b['id']}/heartbeat", headers=bob)
        assert beat.status_code == 200
        assert beat.json()["is_active"] is True
        bobs = (await client.get(f"/api/chats/{b['chat_id']}/messages", headers=bob)).json()
        assert "bread" in json.dumps(bobs["messages"])
        theirs = (await client.get(f"/api/agents/{AGENT}/customizations", headers=bob)).json()
        assert [c["content"] for c in theirs] == ["bob: be verbose"]

        # A service-role token acts for no user: 403 on every user endpoint.
        service = auth("service", role="service_role")
        refused: list[Callable[[], Awaitable[httpx.Response]]] = [
            lambda: client.get("/api/sessions", headers=service),
            lambda: opened(service),
            lambda: client.post(f"/api/sessions/{b['id']}/heartbeat", headers=service),
            lambda: client.post(f"/api/sessions/{b['id']}/deactivate", headers=service),
            lambda: client.get(f"/api/chats/{b['chat_id']}/messages", headers=service),
            lambda: say(service, b["chat_id"], "list my tasks"),
            lambda: client.get(f"/api/agents/{AGENT}/customizations", headers=service),
            lambda: client.put(
                f"/api/agents/{AGENT}/customizations", json={"content": "x"}, headers=service
            ),
        ]
        for probe in refused:
            response = await probe()
            assert response.status_code == 403, (response.request.url, response.text)
            assert "bread" not in response.text
        beat = await client.post(f"/api/sessions/{b['id']}/heartbeat", headers=bob)
        assert beat.json()["is_active"] is True


# --------------------------------------------------------------------------- 4. migration

SUPABASE_JWT = """
CREATE FUNCTION auth.jwt() RETURNS jsonb LANGUAGE sql STABLE AS $f$
  -- Supabase's own definition (this comment marks it as not chatwright's)
  select coalesce(
    nullif(current_setting('request.jwt.claim', true), ''),
    nullif(current_setting('request.jwt.claims', true), '')
  )::jsonb
$f$"""
SUPABASE_UID = """
CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS $f$
  -- Supabase's own definition
  select coalesce(
    nullif(current_setting('request.jwt.claim.sub', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
  )::uuid
$f$"""


async def test_migration_on_a_supabase_like_database_is_idempotent_and_keeps_its_auth(
    cluster: Cluster,
) -> None:
    tag = uuid.uuid4().hex[:10]
    name, owner = f"cw_rls_sb_{tag}", f"cw_rls_owner_{tag}"
    sb = Cluster(name=name, app_role=owner, svc_role=owner)
    admin_dsn = libpq(ADMIN_URL)
    functions = (
        "SELECT p.oid, pg_get_functiondef(p.oid) FROM pg_proc p "
        "JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname = 'auth' ORDER BY p.proname"
    )
    roles = (
        "SELECT rolname, rolsuper, rolinherit, rolcanlogin, rolbypassrls FROM pg_roles "
        "WHERE rolname IN ('anon', 'authenticated', 'service_role') ORDER BY rolname"
    )
    async with await psycopg.AsyncConnection.connect(admin_dsn, autocommit=True) as admin:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            # What a Supabase project has before chatwright arrives: the roles, the auth
            # schema and functions (owned by Supabase's admin, here the superuser), and
            # a `postgres` role that is not a superuser but may create objects.
            await admin.execute(SUPABASE_ROLES)
            await admin.execute(
                f'CREATE ROLE "{owner}" LOGIN NOSUPERUSER NOBYPASSRLS IN ROLE authenticated'
            )
            async with await psycopg.AsyncConnection.connect(
                libpq(sb.url()), autocommit=True
            ) as db:
                await db.execute("CREATE SCHEMA auth")
                await db.execute(SUPABASE_JWT)
                await db.execute(SUPABASE_UID)
                await db.execute("GRANT USAGE ON SCHEMA auth TO anon, authenticated, service_role")
                await db.execute(f'GRANT CREATE ON DATABASE "{name}" TO "{owner}"')
                await db.execute(f'GRANT USAGE, CREATE ON SCHEMA public TO "{owner}"')
            before_functions = await admin_rows(sb, functions)
            before_roles = await admin_rows(sb, roles)
            assert len(before_functions) == 2

            storage = supabase(sb.url(user=owner))
            try:
                assert await storage.upgrade() == storage.head_revision()
                assert await storage.current_revision() == storage.head_revision()
                assert await storage.upgrade() == storage.head_revision()  # idempotent
                assert await storage.current_revision() == storage.head_revision()

                after_functions = await admin_rows(sb, functions)
                assert after_functions == before_functions
                assert "Supabase's own definition" in after_functions[0][1]
                assert await admin_rows(sb, roles) == before_roles

                policies = await admin_rows(
                    sb,
                    "SELECT tablename, qual, with_check FROM pg_policies "
                    "WHERE policyname = 'chatwright_own_rows' ORDER BY tablename",
                )
                assert sorted(p[0] for p in policies) == sorted(
                    USER_TABLES + WRITE_SAFETY_TABLES + SUMMARY_TABLES
                )
                for _, using, check in policies:
                    assert "auth.jwt()" in using
                    assert "auth.jwt()" in check
                # Every policy column leads an index.
                indexed = await admin_rows(
                    sb,
                    "SELECT DISTINCT t.relname FROM pg_index i "
                    "JOIN pg_class t ON t.oid = i.indrelid "
                    "JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = i.indkey[0] "
                    "WHERE a.attname = 'user_id' AND t.relname = ANY(%s)",
                    list(USER_TABLES + WRITE_SAFETY_TABLES + SUMMARY_TABLES),
                )
                assert sorted(r[0] for r in indexed) == sorted(
                    USER_TABLES + WRITE_SAFETY_TABLES + SUMMARY_TABLES
                )

                # The policies work with Supabase's auth.jwt(), the owner's framework
                # statements see every row, and a user transaction only its own.
                await storage.agents.create(AGENT, system_prompt="p", model="offline:x")
                await storage.sessions.open("alice", AGENT)
                await storage.sessions.open("bob", AGENT)
                assert {s.user_id for s in await storage.sessions.list()} == {"alice", "bob"}
                async with storage.read("alice") as conn:
                    seen = await conn.scalars(sa.text("SELECT user_id FROM chat_sessions"))
                    assert list(seen) == ["alice"]
            finally:
                await storage.close()
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.execute(f'DROP ROLE IF EXISTS "{owner}"')


# --------------------------------------------------------------------------- 5. pooler


async def prepared_after_repeats(storage: SupabaseStorage) -> tuple[Any, int]:
    """The driver's prepare_threshold, and server-side prepared statements after 8 repeats."""
    async with storage.engine.connect() as conn:
        raw = await conn.get_raw_connection()
        threshold = raw.driver_connection.prepare_threshold  # type: ignore[union-attr]
        for i in range(8):
            await conn.execute(sa.text("SELECT CAST(:x AS integer) + 1"), {"x": i})
        count = await conn.scalar(sa.text("SELECT count(*) FROM pg_prepared_statements"))
    return threshold, int(count or 0)


async def test_transaction_pooler_settings_and_a_round_trip_through_them(
    cluster: Cluster, supa: SupabaseStorage
) -> None:
    pooled = supabase(cluster.url(), direct=True, pooler="transaction", pool_recycle=123.0)
    default = supabase(cluster.url(), direct=True)
    try:
        assert pooled.engine.pool._recycle == 123.0  # type: ignore[attr-defined]
        assert default.engine.pool._recycle == 900.0  # type: ignore[attr-defined]
        # Connections are checked before use when idle (ping_when_idle), not every time.
        assert pooled.engine.pool._pre_ping is False  # type: ignore[attr-defined]
        assert len(pooled.engine.sync_engine.pool.dispatch.checkout) == 1
        assert pooled.direct_url == pooled.url
        # No statement is ever prepared server-side through the transaction pooler...
        assert await prepared_after_repeats(pooled) == (None, 0)
        # ...while the default connection does prepare repeated statements.
        threshold, prepared = await prepared_after_repeats(default)
        assert threshold is not None
        assert prepared > 0

        # The whole store works through it, repeatedly (past psycopg's threshold).
        assert await pooled.upgrade() == pooled.head_revision()
        await pooled.agents.create(AGENT, system_prompt="p", model="offline:x")
        session = await pooled.sessions.open("alice", AGENT, client_key="tab")
        for i in range(7):
            again = await pooled.sessions.open("alice", AGENT, client_key="tab")
            assert again.id == session.id
            await pooled.messages.append(
                "alice",
                session.chat_id,
                [NewMessage("human", {"type": "human", "data": {"content": f"m{i}"}})],
            )
        window = await pooled.messages.window("alice", session.chat_id, 3)
        assert [m.content["data"]["content"] for m in window] == ["m4", "m5", "m6"]
        assert await pooled.messages.window("bob", session.chat_id, 10) == []
        async with pooled.chat_lock(session.chat_id):
            pass
    finally:
        await pooled.close()
        await default.close()


async def test_direct_url_is_what_listen_uses_and_nothing_else(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    broken = make_url(cluster.url()).set(port=1).render_as_string(hide_password=False)
    storage = supabase(cluster.url(), direct=True, pooler="transaction", direct_url=broken)
    try:
        assert storage.direct_url.drivername == "postgresql+psycopg"
        assert storage.direct_url.port == 1
        assert storage.url.port != 1
        await storage.ping()  # statements use url...
        await storage.upgrade()
        async with storage.chat_lock(uuid.uuid4()):  # ...a turn's lease is a row...
            pass
        async with storage.exclusive("sweeper") as held:  # ...a named lock a transaction's
            assert held
        # ...and only the config listener connects to direct_url.
        with caplog.at_level("WARNING"):
            listening = asyncio.create_task(storage.watch_config(lambda agent: None))
            for _ in range(100):
                if "config listener lost its connection" in caplog.text:
                    break
                await asyncio.sleep(0.05)
            listening.cancel()
        assert "config listener lost its connection" in caplog.text
        assert ":1" in caplog.text or "port 1" in caplog.text, caplog.text
    finally:
        await storage.close()


async def test_a_user_transaction_leaves_nothing_to_the_next_client_of_a_pooled_connection(
    cluster: Cluster, supa: SupabaseStorage
) -> None:
    """Through PgBouncer in transaction mode the next transaction on a server connection
    may be another process's: the role and claims must have ended with the user's."""
    if pgbouncer.running() is None:
        pytest.skip("needs the run's PgBouncer (CHATWRIGHT_TEST_PGBOUNCER=1 or direct_url)")
    await seed_two_users(supa)
    alices, admins = (supabase(cluster.url(), pool_size=1, max_overflow=0) for _ in range(2))
    probe = sa.text(
        "SELECT pg_backend_pid(), current_user, auth.jwt() ->> 'sub', "
        "(SELECT array_agg(DISTINCT user_id ORDER BY user_id) FROM chat_sessions)"
    )
    try:
        async with alices.read("alice") as conn:
            pid, role, sub, seen = (await conn.execute(probe)).one()
        assert (role, sub, seen) == ("authenticated", "alice", ["alice"])
        # PgBouncer gives the server connection it got back last to the next client.
        async with admins.read() as conn:
            row = (await conn.execute(probe)).one()
        assert row[0] == pid, "the two clients did not share a server connection"
        assert row[1:] == (make_url(ADMIN_URL).username, None, ["alice", "bob"])
    finally:
        await alices.close()
        await admins.close()


async def test_watch_config_does_not_listen_through_a_transaction_pooler(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    listening = (
        "SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
        "AND query = 'LISTEN chatwright_config'"
    )
    before = await admin_rows(cluster, listening, cluster.name)
    pooled = supabase(cluster.url(), direct=True, pooler="transaction")
    with_direct = supabase(
        cluster.url(), direct=True, pooler="transaction", direct_url=cluster.url()
    )
    try:
        assert (pooled.can_listen, with_direct.can_listen) == (False, True)
        with caplog.at_level(logging.INFO, logger="chatwright.plugins.sql.storage"):
            # It returns at once (a LISTEN would wait for notifications forever)...
            await asyncio.wait_for(pooled.watch_config(lambda agent: None), timeout=2)
        # ...having said once why, and without having listened anywhere.
        said = [r for r in caplog.records if "storage.direct_url is unset" in r.getMessage()]
        assert [r.levelno for r in said] == [logging.INFO]
        assert await admin_rows(cluster, listening, cluster.name) == before
        # With direct_url, it listens there.
        task = asyncio.create_task(with_direct.watch_config(lambda agent: None))
        try:
            deadline = time.monotonic() + 5
            while await admin_rows(cluster, listening, cluster.name) == before:
                assert not task.done(), task
                assert time.monotonic() < deadline, "watch_config with direct_url never listened"
                await asyncio.sleep(0.05)
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    finally:
        await pooled.close()
        await with_direct.close()


# --------------------------------------------------------------------------- 6. NOTIFY


async def test_config_changes_notify_the_agent_name_and_reach_watch_config(
    cluster: Cluster, supa: SupabaseStorage
) -> None:
    for agent in ("alpha", "beta"):
        await supa.agents.create(agent, system_prompt="p", model="offline:x")
    listen = libpq(cluster.url())
    async with await psycopg.AsyncConnection.connect(listen, autocommit=True) as listener:
        await listener.execute("LISTEN chatwright_config")

        async def payloads() -> list[str]:
            got = [n.payload async for n in listener.notifies(timeout=2.0, stop_after=1)]
            # Anything else that came with it must name the same agent.
            got += [n.payload async for n in listener.notifies(timeout=0.2)]
            return got

        await supa.tools.add("alpha", "noop", type="crud", config={"table": "x"})
        assert set(await payloads()) == {"alpha"}
        await supa.agents.update("beta", system_prompt="changed")
        assert set(await payloads()) == {"beta"}
        # A user's data is no part of a built agent: changing it notifies nobody.
        await supa.customizations.put("alice", "alpha", "instruction_set", "be brief")
        await supa.memories.put("bob", "beta", "likes coffee")
        assert [n.payload async for n in listener.notifies(timeout=0.5)] == []
        # A hand edit in plain SQL (another process) as well.
        await admin_rows(cluster, "UPDATE agents SET model = 'offline:y' WHERE name = 'alpha'")
        assert set(await payloads()) == {"alpha"}

    listening = (
        "SELECT pid FROM pg_stat_activity WHERE datname = %s AND query = 'LISTEN chatwright_config'"
    )
    before = {r[0] for r in await admin_rows(cluster, listening, cluster.name)}
    if not supa.can_listen:
        # Through a transaction pooler with no direct_url (CHATWRIGHT_TEST_PGBOUNCER=1)
        # nothing may LISTEN: the watch ends at once, each turn's version check covers it.
        await asyncio.wait_for(supa.watch_config(lambda agent: None), timeout=2)
        now = {r[0] for r in await admin_rows(cluster, listening, cluster.name)}
        assert not now - before
        return
    seen: list[str] = []
    arrived = asyncio.Event()

    def changed(agent: str) -> None:
        seen.append(agent)
        arrived.set()

    task = asyncio.create_task(supa.watch_config(changed))
    try:
        # Wait until its own connection has run LISTEN (a new backend in the list).
        deadline = time.monotonic() + 5
        while not {r[0] for r in await admin_rows(cluster, listening, cluster.name)} - before:
            assert time.monotonic() < deadline, "watch_config never started listening"
            await asyncio.sleep(0.05)
        await supa.agents.update("beta", system_prompt="changed again")
        await asyncio.wait_for(arrived.wait(), timeout=1.0)
        assert seen == ["beta"]
        arrived.clear()
        await supa.tools.add("alpha", "noop2", type="crud", config={"table": "x"})
        await asyncio.wait_for(arrived.wait(), timeout=1.0)
        assert seen == ["beta", "alpha"]
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


# --------------------------------------------------------------------------- 7. Data API roles

API_KEY = "sk-test-do-not-leak-0123456789"


@dataclass(frozen=True)
class StockSupabase:
    """A database with Supabase's default privileges, migrated and seeded afterwards."""

    db: Cluster
    anon_login: str
    """LOGIN, a member of ``anon`` only: what the Data API does with the anon key."""
    user_login: str
    """LOGIN, a member of ``authenticated`` only: the Data API with a user's JWT."""


@pytest.fixture(scope="module")
def stock_supabase(cluster: Cluster) -> Iterator[StockSupabase]:
    tag = uuid.uuid4().hex[:10]
    db = Cluster(name=f"cw_rls_api_{tag}", app_role=cluster.app_role, svc_role=cluster.svc_role)
    stock = StockSupabase(db, anon_login=f"cw_rls_anon_{tag}", user_login=f"cw_rls_user_{tag}")
    admin = admin_connect()
    admin.execute(f'CREATE DATABASE "{db.name}"')
    try:
        admin.execute(SUPABASE_ROLES)
        admin.execute(f'CREATE ROLE "{stock.anon_login}" LOGIN IN ROLE anon')
        admin.execute(f'CREATE ROLE "{stock.user_login}" LOGIN IN ROLE authenticated')
        with psycopg.connect(libpq(db.url()), autocommit=True) as conn:
            conn.execute(SUPABASE_DEFAULT_PRIVILEGES)
        asyncio.run(_seed_stock(db))
        yield stock
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{db.name}" WITH (FORCE)')
        for role in (stock.anon_login, stock.user_login):
            admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        admin.close()


async def _seed_stock(db: Cluster) -> None:
    """chatwright init --example, an agent holding a provider key, two users' chats."""
    storage = supabase(db.url())
    try:
        await storage.upgrade()
        await example.seed(storage, "offline:assistant")
        await storage.agents.create(
            "paid",
            system_prompt="p",
            model="openai:gpt-4o-mini",
            model_settings={"api_key": API_KEY},
        )
        await storage.tools.add("paid", "list_tasks", type="crud", config=EXAMPLE_LIST_TASKS)
        await seed_two_users(storage)
        await storage.records.insert(
            "alice", "tasks", {"user_id": "alice", "title": "alice's secret"}, returning=["id"]
        )
        await storage.records.insert(
            "alice", "notes", {"user_id": "alice", "body": "alice's diary"}, returning=["id"]
        )
        await _seed_write_safety(storage)
        await _seed_usage(storage)
        await _seed_revision(storage)
        await _seed_former_tool_row(storage)
    finally:
        await storage.close()


async def _seed_write_safety(storage: SupabaseStorage) -> None:
    """A pending action, an audit entry and an approval choice of alice's."""
    from chatwright.approvals import NewAuditEntry
    from chatwright.testing import new_pending

    chat = (await storage.sessions.open("alice", "paid")).chat_id
    await storage.pending.create("alice", "paid", chat, [new_pending(preview=True)])
    await storage.audit.record(
        NewAuditEntry(user_id="alice", agent_name="paid", tool_name="t", operation="create")
    )
    (tool,) = await storage.tools.list("paid")
    await storage.tools.update(tool.id, approval="user")
    await storage.pending.choose("alice", tool.id, "auto")


async def _seed_usage(storage: SupabaseStorage) -> None:
    """A turn of alice's that spent tokens, one still running (its reservation), a summary
    of her chat and a budget override: a row in each table of migration 0006."""
    from chatwright.stores import NewSummary
    from chatwright.usage import BudgetLimits, TurnUsage

    chat = (await storage.sessions.open("alice", "paid")).chat_id
    limits = BudgetLimits(daily=10**6, monthly=None, estimate=100)
    start = await storage.turns.begin(
        "alice", "paid", chat, None, turn_id=uuid.uuid4(), budget=limits
    )
    await storage.turns.finish(
        start,
        [],
        touch=False,
        usage=TurnUsage("openai:gpt-4o-mini", 1, 120, 30),
        summary=NewSummary("alice asked about her tasks", 1, 2),
    )
    await storage.usage.reserve("alice", uuid.uuid4(), limits, datetime.now(UTC))
    await storage.usage.set_budget("alice", daily_tokens=5000, monthly_tokens=None)


async def _seed_revision(storage: SupabaseStorage) -> None:
    """A chat of alice's that she deleted, as herself: its messages' deletion ran the
    revision trigger under row-level security (migration 0008), leaving its row."""
    from chatwright.stores import NewMessage
    from chatwright.userdata import user_data_of

    chat = (await storage.sessions.open("alice", "paid", chat_id=uuid.uuid4())).chat_id
    content = {"type": "human", "data": {"type": "human", "content": "forget this"}}
    await storage.messages.append("alice", chat, [NewMessage("human", content)])
    report = await user_data_of(storage).delete_chat("alice", chat)
    assert report.tables["chat_messages"] == 1


async def _seed_former_tool_row(storage: SupabaseStorage) -> None:
    """A crud tool row configured otherwise: its trigger keeps the row as it was
    (migration 0016)."""
    row = next(r for r in await storage.tools.list(example.AGENT) if r.type == "crud")
    await storage.tools.update(row.id, config={**row.config, "limit": 20})


EXAMPLE_LIST_TASKS = {t["name"]: t["config"] for t in example.TOOLS}["list_tasks"]


async def connect_as(login: str, db: Cluster, role: str) -> psycopg.AsyncConnection[Any]:
    conn = await psycopg.AsyncConnection.connect(libpq(db.url(user=login)), autocommit=True)
    await conn.execute(f"SET ROLE {role}")
    return conn


async def claim(conn: psycopg.AsyncConnection[Any], sub: str) -> None:
    """The request claims of a user's JWT, as the Data API sets them."""
    await conn.execute(
        "SELECT set_config('request.jwt.claims', %s, false)",
        (json.dumps({"sub": sub, "role": "authenticated"}),),
    )


@contextlib.asynccontextmanager
async def api_roles(
    stock: StockSupabase, sub: str | None = None
) -> AsyncIterator[tuple[psycopg.AsyncConnection[Any], psycopg.AsyncConnection[Any]]]:
    """Connections as the Data API with the anon key and with a user's JWT (claiming
    ``sub``, when given)."""
    anon = await connect_as(stock.anon_login, stock.db, "anon")
    user = await connect_as(stock.user_login, stock.db, "authenticated")
    try:
        if sub is not None:
            await claim(user, sub)
        yield anon, user
    finally:
        await anon.close()
        await user.close()


async def refused(conn: psycopg.AsyncConnection[Any], statements: Iterable[str]) -> None:
    for statement in statements:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            await conn.execute(statement)


async def test_every_table_and_sequence_is_closed_to_the_data_api_roles(
    stock_supabase: StockSupabase,
) -> None:
    db = stock_supabase.db
    tables = await admin_rows(
        db,
        "SELECT c.relname, c.relrowsecurity FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') ORDER BY 1",
    )
    names = {t[0] for t in tables}
    seeded = {*DATA_TABLES, "chatwright_schema_version", "tasks", "notes"}
    assert seeded <= names
    # Row-level security on every table, whoever created it and whatever it holds.
    assert [t for t, rls in tables if not rls] == []
    # No privilege at all for anon or PUBLIC, on any table or sequence.
    granted = await admin_rows(
        db,
        "SELECT c.relname, c.relkind, "
        "CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END, "
        "a.privilege_type FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "CROSS JOIN LATERAL aclexplode(c.relacl) a "
        "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'S') "
        "AND (a.grantee = 0 OR a.grantee IN ('anon'::regrole, 'authenticated'::regrole))",
    )
    assert [g for g in granted if g[2] != "authenticated"] == []
    # authenticated only where a policy keeps it to its own rows, and only what
    # the supabase backend's user transactions use.
    policed = {
        r[0]
        for r in await admin_rows(
            db,
            "SELECT tablename FROM pg_policies WHERE schemaname = 'public' "
            "AND policyname = 'chatwright_own_rows' AND roles = '{authenticated}'",
        )
    }
    for table, kind, _, privilege in granted:
        if kind == "S":
            assert privilege == "USAGE", (table, privilege)
        else:
            assert table in policed, (table, privilege)
            assert privilege in {"SELECT", "INSERT", "UPDATE", "DELETE"}, (table, privilege)
    assert {g[0] for g in granted if g[1] != "S"} == {
        *USER_TABLES,
        *WRITE_SAFETY_TABLES,
        *SUMMARY_TABLES,
        "tasks",
        "notes",
    }
    # The audit log is append-only for authenticated: no UPDATE, DELETE or TRUNCATE.
    assert {g[3] for g in granted if g[0] == "audit_log"} == {"SELECT", "INSERT"}

    # And as the roles themselves: anon may read nothing; authenticated with no
    # claims reads nothing (the seeded tables hold rows: the emptiness is not vacuous).
    # A turn's lease lives only while the turn runs: one held now.
    await admin_rows(
        db, "INSERT INTO chat_leases VALUES (gen_random_uuid(), 'held', now() + interval '1h')"
    )
    for table in sorted(seeded):
        assert (await admin_rows(db, f'SELECT count(*) FROM "{table}"'))[0][0] > 0, table
    async with api_roles(stock_supabase) as (anon, user):
        for table in sorted(names):
            await refused(anon, [f'SELECT * FROM "{table}"'])
            try:
                cursor = await user.execute(f'SELECT * FROM "{table}"')
            except psycopg.errors.InsufficientPrivilege:
                continue
            assert await cursor.fetchall() == [], table


async def test_the_anon_key_and_a_user_jwt_cannot_reach_chatwrights_tables(
    stock_supabase: StockSupabase,
) -> None:
    db = stock_supabase.db
    agents_before = await admin_rows(db, "SELECT * FROM agents ORDER BY id")
    tools_before = await admin_rows(db, "SELECT * FROM agent_tools ORDER BY id")
    ((paid_id,),) = await admin_rows(db, "SELECT id FROM agents WHERE name = 'paid'")
    attacks = [
        "SELECT name, model_settings FROM agents",
        'UPDATE agents SET model_settings = \'{"base_url": "http://attacker.invalid"}\'',
        "INSERT INTO agent_tools (agent_id, name, type, config) "
        f"VALUES ({paid_id}, 'planted', 'crud', '{{}}')",
        "DELETE FROM agent_tools",
        "SELECT * FROM chatwright_schema_version",
        "UPDATE chatwright_schema_version SET version_num = '0001'",
        "SELECT nextval('agents_id_seq')",
    ]
    async with api_roles(stock_supabase, "bob") as (anon, user):
        for conn in (anon, user):
            await refused(conn, attacks)
        # Other users' chats and application rows: refused (anon) or empty (bob).
        for statement in (
            "SELECT content FROM chat_messages WHERE user_id = 'alice'",
            "SELECT title FROM tasks WHERE user_id = 'alice'",
            "SELECT notes FROM agent_memories WHERE user_id = 'alice'",
        ):
            await refused(anon, [statement])
            assert await (await user.execute(statement)).fetchall() == [], statement
        await refused(anon, ["INSERT INTO tasks (user_id, title) VALUES ('alice', 'planted')"])
        # Bob still reads his own messages: the policy works, it is not a blanket refusal.
        cursor = await user.execute("SELECT DISTINCT user_id FROM chat_messages")
        assert await cursor.fetchall() == [("bob",)]
    assert await admin_rows(db, "SELECT * FROM agents ORDER BY id") == agents_before
    assert await admin_rows(db, "SELECT * FROM agent_tools ORDER BY id") == tools_before
    secret = await admin_rows(db, "SELECT model_settings FROM agents WHERE name = 'paid'")
    assert secret == [({"api_key": API_KEY},)]


async def test_no_data_api_role_reads_or_moves_a_chats_revision(
    stock_supabase: StockSupabase,
) -> None:
    """The counters turns trust to reuse a window are the framework's: a user's token
    cannot read them, set one back (to have a process serve a window it kept past an
    edit), or run their trigger function by hand."""
    db = stock_supabase.db
    before = await admin_rows(db, "SELECT * FROM chat_revisions ORDER BY 1")
    assert before  # seeded: a refusal is not an empty table
    attacks = [
        "SELECT * FROM chat_revisions",
        "UPDATE chat_revisions SET revision = 0",
        "DELETE FROM chat_revisions",
        "INSERT INTO chat_revisions VALUES (gen_random_uuid(), 1)",
        "TRUNCATE chat_revisions",
    ]
    async with api_roles(stock_supabase, "alice") as (anon, user):
        for conn in (anon, user):
            await refused(conn, attacks)
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                await conn.execute("SELECT chatwright_revise_chats()")
    assert await admin_rows(db, "SELECT * FROM chat_revisions ORDER BY 1") == before


async def test_a_user_jwt_cannot_take_over_another_users_chat(
    stock_supabase: StockSupabase,
) -> None:
    """A chat is its first session's user's (``owner``): through the Data API bob can
    neither insert a session of his own into alice's chat, dated before hers, nor move
    his own session there or back in time (migration 0014). His own sessions he still
    opens and touches."""
    db = stock_supabase.db
    owners = (
        "SELECT DISTINCT ON (chat_id) chat_id, user_id, agent_name FROM chat_sessions "
        "ORDER BY chat_id, created_at, id"
    )
    before = await admin_rows(db, owners)
    ((chat, agent),) = await admin_rows(
        db,
        "SELECT chat_id, agent_name FROM chat_sessions WHERE user_id = 'alice' AND agent_name = %s",
        AGENT,
    )
    async with api_roles(stock_supabase, "bob") as (_, user):
        for statement in (
            "INSERT INTO chat_sessions (id, chat_id, user_id, agent_name, created_at, "
            f"updated_at) VALUES (gen_random_uuid(), '{chat}', 'bob', '{agent}', "
            "'2000-01-01', now())",
            f"UPDATE chat_sessions SET chat_id = '{chat}' WHERE user_id = 'bob'",
            "UPDATE chat_sessions SET created_at = '2000-01-01' WHERE user_id = 'bob'",
            "UPDATE chat_sessions SET user_id = 'alice' WHERE user_id = 'bob'",
        ):
            async with user.transaction(force_rollback=True):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    await user.execute(statement)
        # Not a blanket refusal: his own new chat, and the time of his own sessions.
        async with user.transaction(force_rollback=True):
            await user.execute(
                "INSERT INTO chat_sessions (id, chat_id, user_id, agent_name, created_at, "
                f"updated_at) VALUES (gen_random_uuid(), gen_random_uuid(), 'bob', '{agent}', "
                "now(), now())"
            )
            touched = await user.execute(
                "UPDATE chat_sessions SET updated_at = now() WHERE user_id = 'bob'"
            )
            assert touched.rowcount >= 2
    assert await admin_rows(db, owners) == before
    assert ("alice", agent) in {(u, a) for c, u, a in before if c == chat}


async def test_a_user_jwt_cannot_put_messages_into_another_users_chat(
    stock_supabase: StockSupabase,
) -> None:
    """Found by an attack: bob could insert a row of his own into alice's chat and delete
    it again, moving her chat's revision (0008's triggers), which kept her next turn from
    being told of a write her stopped turn had made (migration 0017 refuses the row). His
    own chats' messages he still writes."""
    db = stock_supabase.db
    ((chat,),) = await admin_rows(
        db, "SELECT chat_id FROM chat_sessions WHERE user_id = 'alice' AND agent_name = %s", AGENT
    )
    revision = "SELECT revision FROM chat_revisions WHERE chat_id = %s"
    before = await admin_rows(db, revision, chat)
    content = '{"type": "human", "data": {"type": "human", "content": "x"}}'
    async with api_roles(stock_supabase, "bob") as (_, user):
        async with user.transaction(force_rollback=True):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                await user.execute(
                    "INSERT INTO chat_messages (chat_id, user_id, role, content) "
                    f"VALUES ('{chat}', 'bob', 'human', '{content}')"
                )
        async with user.transaction(force_rollback=True):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                await user.execute(
                    f"UPDATE chat_messages SET chat_id = '{chat}' WHERE user_id = 'bob'"
                )
        # His own chat: written as before.
        ((mine,),) = await admin_rows(
            db, "SELECT chat_id FROM chat_sessions WHERE user_id = 'bob' LIMIT 1"
        )
        async with user.transaction(force_rollback=True):
            await user.execute(
                "INSERT INTO chat_messages (chat_id, user_id, role, content) "
                f"VALUES ('{mine}', 'bob', 'human', '{content}')"
            )
    assert await admin_rows(db, revision, chat) == before


async def test_a_user_jwt_can_neither_read_nor_write_the_usage_tables(
    stock_supabase: StockSupabase,
) -> None:
    """What a user spent and their budget are the framework's: no Data API role reaches
    them, not even the user's own rows; a chat's summary is the user's own row."""
    db = stock_supabase.db
    before = {t: await admin_rows(db, f"SELECT * FROM {t} ORDER BY 1") for t in USAGE_TABLES}
    assert all(before.values()), before  # seeded: a refusal is not an empty table
    attacks = [
        *(f"SELECT * FROM {t} WHERE user_id = 'alice'" for t in USAGE_TABLES),
        "UPDATE usage_totals SET tokens = 0",
        "DELETE FROM token_usage",
        "INSERT INTO token_usage (user_id, agent_name, model, input_tokens) "
        "VALUES ('alice', 'paid', 'm', -1000000)",
        "DELETE FROM usage_reservations",
        "INSERT INTO user_budgets (user_id, daily_tokens) VALUES ('bob', -1)",
        "UPDATE user_budgets SET daily_tokens = -1",
        "TRUNCATE usage_totals",
    ]
    async with api_roles(stock_supabase, "alice") as (anon, user):
        for conn in (anon, user):
            await refused(conn, attacks)
        # Summaries: alice reads hers; as bob, none, and he cannot plant one in her chat.
        cursor = await user.execute("SELECT user_id, text FROM chat_summaries")
        assert await cursor.fetchall() == [("alice", "alice asked about her tasks")]
        await claim(user, "bob")
        assert await (await user.execute("SELECT * FROM chat_summaries")).fetchall() == []
        await refused(
            user,
            [
                "INSERT INTO chat_summaries (chat_id, user_id, text, through_id) "
                "VALUES (gen_random_uuid(), 'alice', 'planted', 1)"
            ],
        )
        await refused(anon, ["SELECT * FROM chat_summaries"])
    after = {t: await admin_rows(db, f"SELECT * FROM {t} ORDER BY 1") for t in USAGE_TABLES}
    assert after == before


def deployment_check() -> str:
    """The verification query of docs/deploy.md, as a user would copy it."""
    text = (Path(__file__).resolve().parent.parent / "docs" / "deploy.md").read_text("utf-8")
    section = text[text.index("**Check a deployment.**") :]
    return section[section.index("```sql\n") + 7 : section.index("```\n", 7)]


async def test_the_documented_deployment_check_passes_and_catches_an_open_table(
    stock_supabase: StockSupabase,
) -> None:
    db = stock_supabase.db
    check = deployment_check()
    assert await admin_rows(db, check) == []
    # A table created the plain way gets Supabase's default grants, and no
    # row-level security: the query names both.
    await admin_rows(db, "CREATE TABLE cw_open_probe (id serial PRIMARY KEY, secret text)")
    try:
        found = {(r[0], r[1]): r for r in await admin_rows(db, check)}
        assert set(found) == {("cw_open_probe", "table"), ("cw_open_probe_id_seq", "sequence")}
        table = found["cw_open_probe", "table"]
        assert table[2] is False
        assert "anon SELECT" in table[3]
        assert "authenticated SELECT" in table[3]
    finally:
        await admin_rows(db, "DROP TABLE cw_open_probe")


async def test_upgrading_a_deployment_made_before_0003_closes_it() -> None:
    tag = uuid.uuid4().hex[:10]
    db = Cluster(name=f"cw_rls_up_{tag}", app_role="", svc_role="")
    admin = admin_connect()
    admin.execute(f'CREATE DATABASE "{db.name}"')
    storage = supabase(db.url())
    try:
        admin.execute(SUPABASE_ROLES)
        await admin_rows(db, SUPABASE_DEFAULT_PRIVILEGES)

        def to_0002(conn: sa.Connection) -> None:
            config = Config()
            config.set_main_option("script_location", "chatwright.plugins.sql:migrations")
            config.attributes["connection"] = conn
            command.upgrade(config, "0002")

        async with storage.write() as conn:
            await conn.run_sync(to_0002)
            # An application table as the supabase backend secured it before 0003.
            for statement in (
                "CREATE TABLE habits (id serial PRIMARY KEY, user_id text NOT NULL)",
                "ALTER TABLE habits ENABLE ROW LEVEL SECURITY",
                "CREATE POLICY chatwright_own_rows ON habits FOR ALL TO authenticated "
                "USING (user_id = (SELECT auth.jwt() ->> 'sub'))",
                "GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO authenticated",
            ):
                await conn.execute(sa.text(statement))
        opened = {r[0] for r in await admin_rows(db, deployment_check())}
        assert {"agents", "agent_tools", "chatwright_schema_version", "habits"} <= opened

        assert await storage.upgrade() == storage.head_revision()
        assert await admin_rows(db, deployment_check()) == []
        policed = await admin_rows(
            db,
            "SELECT privilege_type FROM information_schema.role_table_grants "
            "WHERE table_name = 'habits' AND grantee = 'authenticated' ORDER BY 1",
        )
        assert policed == [("DELETE",), ("INSERT",), ("SELECT",), ("UPDATE",)]
    finally:
        await storage.close()
        admin.execute(f'DROP DATABASE IF EXISTS "{db.name}" WITH (FORCE)')
        admin.close()
