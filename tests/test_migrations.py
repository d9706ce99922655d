"""The Alembic migrations build exactly the schema the code describes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from chatwright.plugins.sql import schema
from chatwright.plugins.sql.storage import SQLStorage
from chatwright.settings import Settings
from tests.harness import storage_for


def for_dialect(dialect: str) -> Any:
    """Alembic compares what the metadata creates on ``dialect``: an index made only on
    another (``ddl_if``) is not expected here."""

    def include(obj: Any, name: Any, kind: str, reflected: bool, compare_to: Any) -> bool:
        only = getattr(obj, "_ddl_if", None)
        return only is None or only.dialect in (None, dialect)

    return include


def _schema_diff(storage: SQLStorage) -> Any:
    async def diff() -> list[Any]:
        def compare(conn: sa.Connection) -> list[Any]:
            context = MigrationContext.configure(
                conn,
                opts={
                    "compare_type": True,
                    "version_table": schema.VERSION_TABLE,
                    "include_object": for_dialect(conn.dialect.name),
                },
            )
            return list(compare_metadata(context, schema.metadata))

        async with storage.read() as conn:
            return await conn.run_sync(compare)

    return diff()


async def _tables(storage: SQLStorage) -> set[str]:
    async with storage.read() as conn:
        return set(await conn.run_sync(lambda c: sa.inspect(c).get_table_names()))


async def _indexes(storage: SQLStorage, table: str) -> dict[str, dict[str, Any]]:
    async with storage.read() as conn:
        found = await conn.run_sync(lambda c: sa.inspect(c).get_indexes(table))
    return {i["name"]: i for i in found}


async def check_fresh_database(storage: SQLStorage) -> None:
    assert await storage.current_revision() is None
    assert await _tables(storage) == set()
    assert await storage.upgrade() == storage.head_revision()
    assert await _tables(storage) == {t.name for t in schema.metadata.sorted_tables} | {
        schema.VERSION_TABLE
    }
    assert await _schema_diff(storage) == []
    active = await _indexes(storage, "active_sessions")
    assert active["ux_active_sessions_client_key"]["unique"]
    assert active["ix_active_sessions_updated_at"]["column_names"] == ["updated_at"]
    sessions = await _indexes(storage, "chat_sessions")
    assert not any("is_active" in i["column_names"] for i in sessions.values())
    messages = await _indexes(storage, "chat_messages")
    assert messages["ix_chat_messages_chat_id_id"]["column_names"] == ["chat_id", "id"]
    if storage.dialect == "postgresql":
        window = messages["ix_chat_messages_chat_id_user_id_id"]["column_names"]
        assert window == ["chat_id", "user_id", "id"]
        await check_window_plan_without_statistics(storage)
    else:
        assert "ix_chat_messages_chat_id_user_id_id" not in messages
    await check_write_safety_migration(storage)
    await check_active_sessions_migration(storage)
    await check_choices_migration(storage)


OLD_SESSIONS = [
    # id, user, client key, active
    ("00000000-0000-4000-8000-000000000001", "ann", "tab-1", True),
    ("00000000-0000-4000-8000-000000000002", "ann", "tab-1", False),
    ("00000000-0000-4000-8000-000000000003", "bob", None, True),
    ("00000000-0000-4000-8000-000000000004", "bob", None, False),
]


async def check_active_sessions_migration(storage: SQLStorage) -> None:
    """0009: the sessions active under 0008's flag are the active ones after it, with
    their client keys and times; the trigger keeps the active row's time; and back."""
    import uuid
    from datetime import UTC, datetime

    async with storage._transaction(None, write=True, bounded=False) as conn:
        await conn.run_sync(_downgrade, "0008")
    assert "is_active" in await _columns(storage, "chat_sessions")
    assert "active_sessions" not in await _tables(storage)
    chat = uuid.uuid4()
    old = sa.table(
        "chat_sessions",
        *(sa.column(name, sa.Uuid) for name in ("id", "chat_id")),
        *(sa.column(name, sa.String) for name in ("user_id", "agent_name", "client_key")),
        sa.column("is_active", sa.Boolean),
        *(sa.column(name, schema.UTCDateTime()) for name in ("created_at", "updated_at")),
    )
    async with storage.write() as conn:
        for n, (sid, user, key, on) in enumerate(OLD_SESSIONS):
            at = datetime(2026, 1, 1 + n, tzinfo=UTC)
            await conn.execute(
                old.insert().values(
                    id=uuid.UUID(sid),
                    chat_id=chat,
                    user_id=user,
                    agent_name="a",
                    client_key=key,
                    is_active=on,
                    created_at=at,
                    updated_at=at,
                )
            )
    assert await storage.upgrade() == storage.head_revision()
    assert "is_active" not in await _columns(storage, "chat_sessions")
    sessions = storage.sessions
    for n, (sid, user, key, on) in enumerate(OLD_SESSIONS):
        found = await sessions.get(user, uuid.UUID(sid))
        assert found is not None
        assert (found.is_active, found.client_key) == (on, key)
        assert found.updated_at == datetime(2026, 1, 1 + n, tzinfo=UTC)
    assert await sessions.count_active() == 2
    # The idempotent open finds the session active under the old flag.
    again = await sessions.open("ann", "a", client_key="tab-1")
    assert str(again.id) == OLD_SESSIONS[0][0]
    # A heartbeat's time reaches the active row, where the sweeper reads it.
    await sessions.heartbeat("bob", uuid.UUID(OLD_SESSIONS[2][0]))
    swept = await sessions.sweep_ids(datetime(2026, 6, 1, tzinfo=UTC), limit=10)
    assert [str(i) for i in swept] == [OLD_SESSIONS[0][0]]
    # An active row's key changed since its session opened (as a user's own UPDATE
    # could on Supabase), and the key opened again: two active sessions whose
    # chat_sessions rows hold the same key. Going back takes the active rows' keys.
    first = await sessions.open("cy", "a", client_key="tab-2")
    async with storage.write() as conn:
        await conn.execute(
            sa.text("UPDATE active_sessions SET client_key = 'renamed' WHERE client_key = 'tab-2'")
        )
    second = await sessions.open("cy", "a", client_key="tab-2")
    assert second.id != first.id
    async with storage._transaction(None, write=True, bounded=False) as conn:
        await conn.run_sync(_downgrade, "0008")
    async with storage.read() as conn:
        flags = dict((await conn.execute(sa.text("SELECT id, is_active FROM chat_sessions"))).all())
        keys = dict((await conn.execute(sa.text("SELECT id, client_key FROM chat_sessions"))).all())
    flags = {str(uuid.UUID(str(k))): bool(v) for k, v in flags.items()}
    keys = {str(uuid.UUID(str(k))): v for k, v in keys.items()}
    assert (flags[str(first.id)], keys[str(first.id)]) == (True, "renamed")
    assert (flags[str(second.id)], keys[str(second.id)]) == (True, "tab-2")
    assert {k: v for k, v in flags.items() if k not in {str(first.id), str(second.id)}} == {
        OLD_SESSIONS[0][0]: False,
        OLD_SESSIONS[1][0]: False,
        OLD_SESSIONS[2][0]: True,
        OLD_SESSIONS[3][0]: False,
    }
    async with storage.write() as conn:
        await conn.execute(sa.text("DELETE FROM chat_sessions"))
    assert await storage.upgrade() == storage.head_revision()
    assert await _schema_diff(storage) == []


async def check_window_plan_without_statistics(storage: SQLStorage) -> None:
    """A turn's window on a table PostgreSQL has no statistics for walks an index
    backwards and stops at the window: no sort of the chat (which grew with it)."""
    from chatwright.plugins.sql.turn_statements import WINDOW, WINDOW_UPTO

    chat = "7a0f5d2e-58c1-4c36-9d51-30c1f1f3b8a4"
    async with storage.write() as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO chat_messages (chat_id, user_id, role, content) "
                "SELECT CAST(:chat AS uuid), 'u' || (n % 3), 'human', '{}'::jsonb "
                "FROM generate_series(1, 6000) AS n"
            ),
            {"chat": chat},
        )
        analysed = await conn.scalar(
            sa.text(
                "SELECT last_analyze IS NULL AND last_autoanalyze IS NULL "
                "FROM pg_stat_user_tables WHERE relname = 'chat_messages'"
            )
        )
        plans = []
        # Whole, after a kept window's last message, and up to a message.
        for statement, bounds in (
            (WINDOW, {"after": 0}),
            (WINDOW, {"after": 5900}),
            (WINDOW_UPTO, {"after": 0, "upto": 5900}),
        ):
            rows = await conn.exec_driver_sql(
                "EXPLAIN " + str(statement.compile(dialect=conn.dialect)),
                {"chat_id": chat, "user_id": "u1", "limit": 50, **bounds},
            )
            plans.append("\n".join(r[0] for r in rows))
        await conn.execute(sa.text("DELETE FROM chat_messages"))
    assert analysed
    for plan in plans:
        assert "ix_chat_messages_chat_id_user_id_id" in plan and "Sort" not in plan, plan


def _downgrade(sync_conn: sa.Connection, revision: str) -> None:
    from alembic import command

    from chatwright.plugins.sql import migrate

    config = migrate._alembic_config()
    config.attributes["connection"] = sync_conn
    command.downgrade(config, revision)


async def _columns(storage: SQLStorage, table: str) -> set[str]:
    async with storage.read() as conn:
        found = await conn.run_sync(lambda c: sa.inspect(c).get_columns(table))
    return {c["name"] for c in found}


async def check_write_safety_migration(storage: SQLStorage) -> None:
    """0005: approval columns bump the agent's config version, CHECKs hold, downgrade works."""
    async with storage.write() as conn:
        agent_id = await conn.scalar(
            sa.text("INSERT INTO agents (name, model) VALUES ('m', 'x') RETURNING id")
        )
        tool_id = await conn.scalar(
            sa.text(
                "INSERT INTO agent_tools (agent_id, name, type, config) "
                "VALUES (:a, 't', 'crud', '{}') RETURNING id"
            ),
            {"a": agent_id},
        )
        row = (
            await conn.execute(sa.text("SELECT approval, approval_default FROM agent_tools"))
        ).one()
        assert tuple(row) == ("auto", "required")  # rows of the original format run unattended
        before = await conn.scalar(sa.text("SELECT config_version FROM agents"))
    async with storage.write() as conn:
        await conn.execute(
            sa.text("UPDATE agent_tools SET approval = 'required' WHERE id = :t"), {"t": tool_id}
        )
    async with storage.read() as conn:
        assert await conn.scalar(sa.text("SELECT config_version FROM agents")) > before
    for bad in ("approval = 'maybe'", "approval_default = 'user'"):
        with pytest.raises(sa.exc.IntegrityError):
            async with storage.write() as conn:
                await conn.execute(sa.text(f"UPDATE agent_tools SET {bad}"))
    async with storage.write() as conn:
        await conn.execute(sa.text("DELETE FROM agent_tools"))
        await conn.execute(sa.text("DELETE FROM agents"))

    async with storage._transaction(None, write=True, bounded=False) as conn:
        await conn.run_sync(_downgrade, "0004")
    assert await storage.current_revision() == "0004"
    tables = await _tables(storage)
    assert not tables & {"pending_actions", "audit_log", "tool_approval_choices"}
    assert not await _columns(storage, "agent_tools") & {"approval", "approval_default"}
    # 0004's config-version triggers on agent_tools survived the round trip.
    async with storage.write() as conn:
        agent_id = await conn.scalar(
            sa.text("INSERT INTO agents (name, model) VALUES ('m', 'x') RETURNING id")
        )
        await conn.execute(
            sa.text(
                "INSERT INTO agent_tools (agent_id, name, type, config) "
                "VALUES (:a, 't', 'crud', '{}')"
            ),
            {"a": agent_id},
        )
    async with storage.read() as conn:
        assert await conn.scalar(sa.text("SELECT config_version FROM agents")) == 1
    assert await storage.upgrade() == storage.head_revision()
    assert await _schema_diff(storage) == []
    async with storage.write() as conn:
        await conn.execute(sa.text("UPDATE agent_tools SET approval = 'user'"))
    async with storage.read() as conn:
        assert await conn.scalar(sa.text("SELECT config_version FROM agents")) == 2


async def check_choices_migration(storage: SQLStorage) -> None:
    """0013: choices stored before it count as they did, until their rows change; and back."""
    async with storage._transaction(None, write=True, bounded=False) as conn:
        await conn.run_sync(_downgrade, "0012")
    assert "tool_digest" not in await _columns(storage, "tool_approval_choices")
    async with storage.write() as conn:
        agent_id = await conn.scalar(
            sa.text("INSERT INTO agents (name, model) VALUES ('c', 'x') RETURNING id")
        )
        tool_id = await conn.scalar(
            sa.text(
                "INSERT INTO agent_tools (agent_id, name, type, config, approval) "
                "VALUES (:a, 't', 'crud', :config, 'user') RETURNING id"
            ),
            {"a": agent_id, "config": '{"operation": "read", "table": "notes"}'},
        )
        for user, choice in (("ann", "auto"), ("bob", "required")):
            await conn.execute(
                sa.text(
                    "INSERT INTO tool_approval_choices (user_id, tool_id, choice) "
                    "VALUES (:u, :t, :c)"
                ),
                {"u": user, "t": tool_id, "c": choice},
            )
    assert await storage.upgrade() == storage.head_revision()
    assert await storage.pending.choices("ann", "c") == {tool_id: "auto"}
    await storage.tools.update(tool_id, config={"operation": "delete", "table": "notes"})
    assert await storage.pending.choices("ann", "c") == {}
    assert await storage.pending.choices("bob", "c") == {tool_id: "required"}
    async with storage._transaction(None, write=True, bounded=False) as conn:
        await conn.run_sync(_downgrade, "0012")
    assert "tool_digest" not in await _columns(storage, "tool_approval_choices")
    async with storage.write() as conn:
        await conn.execute(sa.text("DELETE FROM agents WHERE name = 'c'"))
    assert await storage.upgrade() == storage.head_revision()
    assert await _schema_diff(storage) == []


async def test_sqlite_migrates_from_empty(tmp_path: Path) -> None:
    storage = storage_for(f"sqlite:///{tmp_path / 'fresh.db'}")
    try:
        await check_fresh_database(storage)
    finally:
        await storage.close()


async def test_postgresql_migrates_from_empty(pg_url: str) -> None:
    # A schema of its own inside the run's database, so this starts from empty.
    from sqlalchemy.engine import make_url

    storage = storage_for(pg_url)
    schema_name = "fresh_migration"
    async with storage.write() as conn:
        await conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {schema_name} CASCADE"))
        await conn.execute(sa.text(f"CREATE SCHEMA {schema_name}"))
    await storage.close()
    url = make_url(pg_url).update_query_dict({"options": f"-csearch_path={schema_name}"})
    # Direct: a transaction pooler refuses the startup option (and would not keep it).
    direct = {"url": url.render_as_string(hide_password=False)}
    fresh = SQLStorage.from_settings(Settings(storage=direct))  # type: ignore[arg-type]
    try:
        await check_fresh_database(fresh)
    finally:
        await fresh.close()


async def test_sqlite_pragmas(tmp_path: Path) -> None:
    storage = storage_for(f"sqlite:///{tmp_path / 'pragmas.db'}")
    try:
        async with storage.read() as conn:
            journal = await conn.scalar(sa.text("PRAGMA journal_mode"))
            foreign_keys = await conn.scalar(sa.text("PRAGMA foreign_keys"))
            busy = await conn.scalar(sa.text("PRAGMA busy_timeout"))
        assert (journal, foreign_keys, busy) == ("wal", 1, 5000)
    finally:
        await storage.close()


async def test_unmigrated_database_gives_a_clear_error(tmp_path: Path) -> None:
    from chatwright.errors import StorageError

    storage = storage_for(f"sqlite:///{tmp_path / 'empty.db'}")
    try:
        with pytest.raises(StorageError, match="db upgrade"):
            await storage.agents.list()
    finally:
        await storage.close()


def test_two_processes_creating_a_missing_role_at_once_both_go_on(pg_url: str) -> None:
    """Roles belong to the whole server: two databases migrated at once both find a role
    missing. The second to create it used to fail on its unique name, ending its
    migration; it now finds the role there."""
    import importlib
    import threading
    import uuid

    import psycopg

    from tests.harness import admin_connect, libpq

    security = importlib.import_module(
        "chatwright.plugins.sql.migrations.versions.0002_postgresql_security"
    )
    role = f"cw_race_{uuid.uuid4().hex[:10]}"
    statement = security.create_role(role, "NOLOGIN")
    first = psycopg.connect(libpq(pg_url))  # a transaction, held open
    second = psycopg.connect(libpq(pg_url), autocommit=True)
    failed: list[BaseException] = []
    try:
        first.execute(statement)  # the role made, not yet committed

        def create() -> None:
            try:
                second.execute(statement)  # missing to it: waits on the first's new row
            except BaseException as error:
                failed.append(error)

        waiting = threading.Thread(target=create)
        waiting.start()
        waiting.join(0.5)
        assert waiting.is_alive(), f"the second did not wait for the first: {failed}"
        first.commit()
        waiting.join(10)
        assert not waiting.is_alive()
        assert failed == []
        found = second.execute("SELECT count(*) FROM pg_roles WHERE rolname = %s", (role,))
        assert found.fetchone() == (1,)
    finally:
        first.close()
        second.close()
        admin = admin_connect()
        admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        admin.close()
