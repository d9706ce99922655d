"""The ``sql`` storage backend on SQLAlchemy 2 (async): SQLite and PostgreSQL.

One :class:`SQLStorage` owns one async engine and exposes the stores of
:mod:`chatwright.stores` over the tables in :mod:`.schema`. Every statement is
awaited on the engine's async driver (``aiosqlite`` or ``psycopg`` 3), so no
call blocks the event loop, and a connection is held only for the statement
or transaction at hand, never across a model call.

SQLite is tuned for a server: WAL journal (readers never wait for the writer),
a busy timeout, foreign keys on, and ``BEGIN IMMEDIATE`` for transactions that
write, so two writers queue instead of failing halfway. Reads use deferred
transactions. PostgreSQL uses a pre-pinged connection pool.
"""

from __future__ import annotations

import builtins
import contextlib
import functools
import hashlib
import json
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event, exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool

from chatwright.errors import AlreadyExistsError, InvalidInputError, NotFoundError, StorageError
from chatwright.plugins.sql import schema
from chatwright.plugins.sql.records import SQLRecordStore
from chatwright.settings import Settings
from chatwright.stores import (
    DEFAULT_HISTORY_WINDOW,
    Agent,
    AgentMemory,
    ChatSession,
    InvalidJSON,
    Message,
    NewMessage,
    PromptCustomization,
    ToolRow,
)

log = logging.getLogger(__name__)

MIGRATIONS = "chatwright.plugins.sql:migrations"
# Any constant works; it only has to be the same in every process.
_UPGRADE_LOCK_KEY = 0x63687477_0001

AGENT_FIELDS = frozenset({"system_prompt", "model", "model_settings", "history_window"})


def now() -> datetime:
    return datetime.now(UTC)


def normalize_url(raw: str) -> URL:
    """Pick the async driver for a URL: sqlite -> aiosqlite, postgresql -> psycopg."""
    try:
        url = make_url(raw)
    except exc.ArgumentError:
        raise StorageError(
            f"storage.url {raw!r} is not a database URL; use sqlite:///path/to/file.db "
            "or postgresql://user@host:5432/dbname"
        ) from None
    backend = url.get_backend_name()
    if backend == "sqlite":
        return url.set(drivername="sqlite+aiosqlite")
    if backend in {"postgresql", "postgres"}:
        return url.set(drivername="postgresql+psycopg")
    raise StorageError(
        f"storage.url uses {backend!r}; the sql backend supports sqlite and postgresql"
    )


def redact(url: URL) -> str:
    return url.render_as_string(hide_password=True)


@functools.cache
def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", MIGRATIONS)
    return config


@functools.cache
def _head() -> str | None:
    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


def _agent(row: sa.Row[Any]) -> Agent:
    return Agent(
        id=row.id,
        name=row.name,
        system_prompt=row.system_prompt,
        model=row.model,
        model_settings=row.model_settings,
        history_window=row.history_window,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _tool(row: sa.Row[Any]) -> ToolRow:
    return ToolRow(
        id=row.id,
        agent_id=row.agent_id,
        name=row.name,
        type=row.type,
        description=row.description,
        config=row.config,
        is_active=bool(row.is_active),
        position=row.position,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _session(row: sa.Row[Any]) -> ChatSession:
    metadata = row._mapping["metadata"]
    return ChatSession(
        id=row.id,
        chat_id=row.chat_id,
        user_id=row.user_id,
        agent_name=row.agent_name,
        is_active=bool(row.is_active),
        client_key=row.client_key,
        created_at=row.created_at,
        updated_at=row.updated_at,
        metadata=metadata if isinstance(metadata, Mapping) else {},
    )


def _message(row: sa.Row[Any]) -> Message:
    content = row.content
    if isinstance(content, InvalidJSON):
        content = {"type": "invalid", "text": content.text, "error": content.error}
    return Message(
        id=row.id,
        chat_id=row.chat_id,
        user_id=row.user_id,
        role=row.role,
        content=content,
        created_at=row.created_at,
    )


def _customization(row: sa.Row[Any]) -> PromptCustomization:
    return PromptCustomization(
        id=row.id,
        user_id=row.user_id,
        agent_name=row.agent_name,
        kind=row.kind,
        content=row.content,
        is_active=bool(row.is_active),
        priority=row.priority,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _memory(row: sa.Row[Any]) -> AgentMemory:
    return AgentMemory(
        user_id=row.user_id, agent_name=row.agent_name, notes=row.notes, updated_at=row.updated_at
    )


class _Base:
    def __init__(self, db: SQLStorage) -> None:
        self.db = db


class SQLAgentStore(_Base):
    async def get(self, name: str) -> Agent | None:
        async with self.db.read() as conn:
            row = (await conn.execute(sa.select(schema.agents).filter_by(name=name))).first()
        return _agent(row) if row else None

    async def list(self) -> builtins.list[Agent]:
        async with self.db.read() as conn:
            rows = await conn.execute(sa.select(schema.agents).order_by(schema.agents.c.name))
        return [_agent(r) for r in rows]

    async def create(
        self,
        name: str,
        *,
        system_prompt: str,
        model: str,
        model_settings: Mapping[str, Any] | None = None,
        history_window: int = DEFAULT_HISTORY_WINDOW,
    ) -> Agent:
        ts = now()
        values = {
            "name": name,
            "system_prompt": system_prompt,
            "model": model,
            "model_settings": dict(model_settings or {}),
            "history_window": history_window,
            "created_at": ts,
            "updated_at": ts,
        }
        try:
            async with self.db.write() as conn:
                row = (
                    await conn.execute(
                        schema.agents.insert().values(values).returning(schema.agents)
                    )
                ).one()
        except exc.IntegrityError as error:
            if await self.get(name) is not None:
                raise AlreadyExistsError(
                    f"an agent named {name!r} already exists; change it with "
                    f"`chatwright agents set {name}`"
                ) from None
            raise InvalidInputError(
                f"agent {name!r} rejected by the database: {error.orig}"
            ) from None
        return _agent(row)

    async def update(self, name: str, **changes: Any) -> Agent:
        unknown = set(changes) - AGENT_FIELDS
        if unknown:
            raise InvalidInputError(
                f"cannot change {', '.join(sorted(unknown))} of agent {name!r}; "
                f"changeable fields: {', '.join(sorted(AGENT_FIELDS))}"
            )
        stmt = (
            schema.agents.update()
            .where(schema.agents.c.name == name)
            .values(**changes, updated_at=now())
            .returning(schema.agents)
        )
        try:
            async with self.db.write() as conn:
                row = (await conn.execute(stmt)).first()
        except exc.IntegrityError as error:
            raise InvalidInputError(
                f"agent {name!r} rejected by the database: {error.orig}"
            ) from None
        if row is None:
            raise NotFoundError(f"no agent named {name!r}; see `chatwright agents list`")
        return _agent(row)

    async def delete(self, name: str) -> bool:
        async with self.db.write() as conn:
            result = await conn.execute(schema.agents.delete().where(schema.agents.c.name == name))
        return bool(result.rowcount)

    async def config_version(self, name: str) -> str | None:
        a, t = schema.agents, schema.agent_tools
        stmt = (
            sa.select(
                a.c.id,
                a.c.system_prompt,
                a.c.model,
                a.c.model_settings,
                a.c.history_window,
                a.c.updated_at,
                t.c.id.label("tool_id"),
                t.c.name.label("tool_name"),
                t.c.type,
                t.c.description,
                t.c.config,
                t.c.is_active,
                t.c.position,
                t.c.updated_at.label("tool_updated_at"),
            )
            .select_from(a.outerjoin(t, t.c.agent_id == a.c.id))
            .where(a.c.name == name)
            .order_by(t.c.id)
        )
        async with self.db.read() as conn:
            rows = (await conn.execute(stmt)).all()
        if not rows:
            return None
        digest = hashlib.sha256()
        for row in rows:
            digest.update(json.dumps(list(row), default=str, sort_keys=True).encode())
        return digest.hexdigest()


class SQLToolStore(_Base):
    async def list(
        self, agent_name: str | None = None, *, active_only: bool = False
    ) -> builtins.list[ToolRow]:
        t, a = schema.agent_tools, schema.agents
        stmt = sa.select(t).join(a, a.c.id == t.c.agent_id).order_by(a.c.name, t.c.position, t.c.id)
        if agent_name is not None:
            stmt = stmt.where(a.c.name == agent_name)
        if active_only:
            stmt = stmt.where(t.c.is_active)
        async with self.db.read() as conn:
            rows = await conn.execute(stmt)
        return [_tool(r) for r in rows]

    async def get(self, tool_id: int) -> ToolRow | None:
        async with self.db.read() as conn:
            row = (await conn.execute(sa.select(schema.agent_tools).filter_by(id=tool_id))).first()
        return _tool(row) if row else None

    async def add(
        self,
        agent_name: str,
        name: str,
        *,
        type: str,
        config: Any,
        description: str = "",
        is_active: bool = True,
        position: int | None = None,
    ) -> ToolRow:
        t = schema.agent_tools
        if config is None:
            raise InvalidInputError(f"tool {name!r} needs a config (a JSON object)")
        try:
            async with self.db.write() as conn:
                agent_id = await conn.scalar(
                    sa.select(schema.agents.c.id).where(schema.agents.c.name == agent_name)
                )
                if agent_id is None:
                    raise NotFoundError(
                        f"no agent named {agent_name!r}; see `chatwright agents list`"
                    )
                if position is None:
                    last = await conn.scalar(
                        sa.select(sa.func.max(t.c.position)).where(t.c.agent_id == agent_id)
                    )
                    position = 0 if last is None else last + 1
                ts = now()
                row = (
                    await conn.execute(
                        t.insert()
                        .values(
                            agent_id=agent_id,
                            name=name,
                            type=type,
                            description=description,
                            config=config,
                            is_active=is_active,
                            position=position,
                            created_at=ts,
                            updated_at=ts,
                        )
                        .returning(t)
                    )
                ).one()
        except exc.IntegrityError as error:
            if any(r.name == name for r in await self.list(agent_name)):
                raise AlreadyExistsError(
                    f"agent {agent_name!r} already has a tool named {name!r}; pick another name "
                    "or disable the old one with `chatwright tools disable`"
                ) from None
            raise InvalidInputError(
                f"tool {name!r} rejected by the database: {error.orig}"
            ) from None
        return _tool(row)

    async def set_active(self, tool_id: int, active: bool) -> ToolRow:
        t = schema.agent_tools
        stmt = (
            t.update()
            .where(t.c.id == tool_id)
            .values(is_active=active, updated_at=now())
            .returning(t)
        )
        async with self.db.write() as conn:
            row = (await conn.execute(stmt)).first()
        if row is None:
            raise NotFoundError(f"no tool row with id {tool_id}; see `chatwright tools list`")
        return _tool(row)


class SQLSessionStore(_Base):
    async def open(
        self,
        user_id: str,
        agent_name: str,
        *,
        chat_id: uuid.UUID | None = None,
        client_key: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> ChatSession:
        s = schema.chat_sessions
        if chat_id is not None:
            # Ownership is checked across all users (with row-level security a user's
            # own transaction could not see that the chat belongs to someone else).
            owner = await self.chat_owner(chat_id)
            if owner is not None and owner[0] != user_id:
                raise NotFoundError(f"no chat {chat_id} for this user")
            if owner is not None and owner[1] != agent_name:
                raise InvalidInputError(
                    f"chat {chat_id} belongs to agent {owner[1]!r}, not {agent_name!r}"
                )
        try:
            async with self.db.write(user_id) as conn:
                if client_key is not None:
                    existing = await self._active_with_key(conn, user_id, agent_name, client_key)
                    if existing is not None:
                        return existing
                if chat_id is None:
                    chat_id = (
                        await conn.scalar(
                            sa.select(s.c.chat_id)
                            .where(s.c.user_id == user_id, s.c.agent_name == agent_name)
                            .order_by(s.c.created_at.desc())
                            .limit(1)
                        )
                        or uuid.uuid4()
                    )
                ts = now()
                row = (
                    await conn.execute(
                        s.insert()
                        .values(
                            id=uuid.uuid4(),
                            chat_id=chat_id,
                            user_id=user_id,
                            agent_name=agent_name,
                            is_active=True,
                            client_key=client_key,
                            created_at=ts,
                            updated_at=ts,
                            metadata=dict(metadata or {}),
                        )
                        .returning(s)
                    )
                ).one()
                return _session(row)
        except exc.IntegrityError:
            # A concurrent open with the same client_key won the race: return its session.
            if client_key is not None:
                async with self.db.read(user_id) as conn:
                    existing = await self._active_with_key(conn, user_id, agent_name, client_key)
                if existing is not None:
                    return existing
            raise

    @staticmethod
    async def _active_with_key(
        conn: AsyncConnection, user_id: str, agent_name: str, client_key: str
    ) -> ChatSession | None:
        s = schema.chat_sessions
        row = (
            await conn.execute(
                sa.select(s).where(
                    s.c.user_id == user_id,
                    s.c.agent_name == agent_name,
                    s.c.client_key == client_key,
                    s.c.is_active,
                )
            )
        ).first()
        return _session(row) if row else None

    @staticmethod
    async def _owner(conn: AsyncConnection, chat_id: uuid.UUID) -> tuple[str, str] | None:
        s = schema.chat_sessions
        row = (
            await conn.execute(
                sa.select(s.c.user_id, s.c.agent_name).where(s.c.chat_id == chat_id).limit(1)
            )
        ).first()
        return (row.user_id, row.agent_name) if row else None

    async def get(self, user_id: str, session_id: uuid.UUID) -> ChatSession | None:
        s = schema.chat_sessions
        async with self.db.read(user_id) as conn:
            row = (
                await conn.execute(sa.select(s).where(s.c.id == session_id, s.c.user_id == user_id))
            ).first()
        return _session(row) if row else None

    async def _update(
        self, user_id: str, session_id: uuid.UUID, **values: Any
    ) -> ChatSession | None:
        s = schema.chat_sessions
        stmt = (
            s.update()
            .where(s.c.id == session_id, s.c.user_id == user_id)
            .values(**values)
            .returning(s)
        )
        async with self.db.write(user_id) as conn:
            row = (await conn.execute(stmt)).first()
        return _session(row) if row else None

    async def heartbeat(self, user_id: str, session_id: uuid.UUID) -> ChatSession | None:
        return await self._update(user_id, session_id, updated_at=now())

    async def deactivate(self, user_id: str, session_id: uuid.UUID) -> ChatSession | None:
        return await self._update(user_id, session_id, is_active=False, updated_at=now())

    async def list(
        self, user_id: str | None = None, *, active: bool | None = None
    ) -> builtins.list[ChatSession]:
        s = schema.chat_sessions
        stmt = sa.select(s).order_by(s.c.updated_at.desc())
        if user_id is not None:
            stmt = stmt.where(s.c.user_id == user_id)
        if active is not None:
            stmt = stmt.where(s.c.is_active == active)
        async with self.db.read(user_id) as conn:
            rows = await conn.execute(stmt)
        return [_session(r) for r in rows]

    async def sweep(self, idle_before: datetime) -> builtins.list[ChatSession]:
        s = schema.chat_sessions
        stmt = (
            s.update()
            .where(s.c.is_active, s.c.updated_at < idle_before)
            .values(is_active=False)
            .returning(s)
        )
        async with self.db.write() as conn:
            rows = (await conn.execute(stmt)).all()
        return [_session(r) for r in rows]

    async def active_keys(self) -> set[tuple[str, str]]:
        s = schema.chat_sessions
        stmt = sa.select(s.c.user_id, s.c.agent_name).where(s.c.is_active).distinct()
        async with self.db.read() as conn:
            rows = await conn.execute(stmt)
        return {(r.user_id, r.agent_name) for r in rows}

    async def count_active(self) -> int:
        s = schema.chat_sessions
        async with self.db.read() as conn:
            count = await conn.scalar(
                sa.select(sa.func.count()).select_from(s).where(s.c.is_active)
            )
        return int(count or 0)

    async def chat_owner(self, chat_id: uuid.UUID) -> tuple[str, str] | None:
        async with self.db.read() as conn:
            return await self._owner(conn, chat_id)

    async def touch_chat(self, user_id: str, chat_id: uuid.UUID) -> int:
        s = schema.chat_sessions
        stmt = (
            s.update()
            .where(s.c.chat_id == chat_id, s.c.user_id == user_id, s.c.is_active)
            .values(updated_at=now())
        )
        async with self.db.write(user_id) as conn:
            result = await conn.execute(stmt)
        return int(result.rowcount)


class SQLMessageStore(_Base):
    async def append(
        self, user_id: str, chat_id: uuid.UUID, messages: Sequence[NewMessage]
    ) -> builtins.list[Message]:
        if not messages:
            return []
        m = schema.chat_messages
        ts = now()
        rows = [
            {
                "chat_id": chat_id,
                "user_id": user_id,
                "role": msg.role,
                "content": dict(msg.content),
                "created_at": ts,
            }
            for msg in messages
        ]
        async with self.db.write(user_id) as conn:
            result = await conn.execute(m.insert().returning(m, sort_by_parameter_order=True), rows)
            stored = result.all()
        return [_message(r) for r in stored]

    async def window(self, user_id: str, chat_id: uuid.UUID, limit: int) -> builtins.list[Message]:
        return await self.page(user_id, chat_id, limit=limit)

    async def page(
        self, user_id: str, chat_id: uuid.UUID, *, limit: int, before: int | None = None
    ) -> builtins.list[Message]:
        if limit <= 0:
            return []
        m = schema.chat_messages
        stmt = (
            sa.select(m)
            .where(m.c.chat_id == chat_id, m.c.user_id == user_id)
            .order_by(m.c.id.desc())
            .limit(limit)
        )
        if before is not None:
            stmt = stmt.where(m.c.id < before)
        async with self.db.read(user_id) as conn:
            rows = (await conn.execute(stmt)).all()
        return [_message(r) for r in reversed(rows)]


class SQLCustomizationStore(_Base):
    async def list(
        self, user_id: str, agent_name: str, *, active_only: bool = False
    ) -> builtins.list[PromptCustomization]:
        c = schema.prompt_customizations
        stmt = (
            sa.select(c)
            .where(c.c.user_id == user_id, c.c.agent_name == agent_name)
            .order_by(c.c.priority.desc(), c.c.id)
        )
        if active_only:
            stmt = stmt.where(c.c.is_active)
        async with self.db.read(user_id) as conn:
            rows = await conn.execute(stmt)
        return [_customization(r) for r in rows]

    async def put(
        self,
        user_id: str,
        agent_name: str,
        kind: str,
        content: str,
        *,
        priority: int = 0,
        is_active: bool = True,
    ) -> PromptCustomization:
        ts = now()
        row = await self.db.upsert(
            schema.prompt_customizations,
            {
                "user_id": user_id,
                "agent_name": agent_name,
                "kind": kind,
                "content": content,
                "priority": priority,
                "is_active": is_active,
                "created_at": ts,
                "updated_at": ts,
            },
            keys=("user_id", "agent_name", "kind"),
            user_id=user_id,
        )
        return _customization(row)


class SQLMemoryStore(_Base):
    async def get(self, user_id: str, agent_name: str) -> AgentMemory | None:
        m = schema.agent_memories
        async with self.db.read(user_id) as conn:
            row = (
                await conn.execute(
                    sa.select(m).where(m.c.user_id == user_id, m.c.agent_name == agent_name)
                )
            ).first()
        return _memory(row) if row else None

    async def put(self, user_id: str, agent_name: str, notes: str) -> AgentMemory:
        ts = now()
        row = await self.db.upsert(
            schema.agent_memories,
            {
                "user_id": user_id,
                "agent_name": agent_name,
                "notes": notes,
                "created_at": ts,
                "updated_at": ts,
            },
            keys=("user_id", "agent_name"),
            user_id=user_id,
        )
        return _memory(row)


class SQLStorage:
    """Storage on one SQLAlchemy async engine."""

    def __init__(self, url: URL, engine: AsyncEngine, direct_url: URL | None = None) -> None:
        self.url = url
        self.engine = engine
        self.direct_url = direct_url or url
        self.agents = SQLAgentStore(self)
        self.tools = SQLToolStore(self)
        self.sessions = SQLSessionStore(self)
        self.messages = SQLMessageStore(self)
        self.customizations = SQLCustomizationStore(self)
        self.memories = SQLMemoryStore(self)
        self.records = SQLRecordStore(self)

    @classmethod
    def from_settings(cls, settings: Settings) -> SQLStorage:
        from chatwright.plugins.sql.settings import SQLStorageSettings

        cfg = settings.section(SQLStorageSettings)
        url = normalize_url(settings.storage.url)
        if url.get_backend_name() == "sqlite":
            return cls(url, _sqlite_engine(url, busy_timeout=cfg.busy_timeout, echo=cfg.echo))
        connect_args: dict[str, Any] = {"connect_timeout": 10}
        if cfg.pooler == "transaction":
            # A transaction pooler hands each transaction to any server connection:
            # statements prepared on one would be missing on the next.
            connect_args["prepare_threshold"] = None
        engine = create_async_engine(
            url,
            pool_size=cfg.pool_size,
            max_overflow=cfg.max_overflow,
            pool_timeout=cfg.pool_timeout,
            pool_recycle=cfg.pool_recycle,
            pool_pre_ping=True,
            echo=cfg.echo,
            connect_args=connect_args,
        )
        direct = normalize_url(cfg.direct_url) if cfg.direct_url else url
        return cls(url, engine, direct_url=direct)

    @property
    def dialect(self) -> str:
        return self.url.get_backend_name()

    @property
    def description(self) -> str:
        return redact(self.url)

    # -- connections -------------------------------------------------------

    @asynccontextmanager
    async def read(self, user_id: str | None = None) -> AsyncIterator[AsyncConnection]:
        """A connection for reads (a deferred transaction, rolled back at the end).

        :param user_id: the user the statements run for; None for framework
            (admin) statements. This backend scopes by column and ignores it;
            the ``supabase`` backend sets row-level-security claims from it.
        """
        with self._errors():
            async with self.engine.connect() as conn:
                await conn.execution_options(chatwright_write=False)
                await self.enter_user(conn, user_id)
                yield conn

    @asynccontextmanager
    async def write(self, user_id: str | None = None) -> AsyncIterator[AsyncConnection]:
        """A transaction that commits at the end (``BEGIN IMMEDIATE`` on SQLite)."""
        with self._errors():
            async with self.engine.begin() as conn:
                await self.enter_user(conn, user_id)
                yield conn

    async def enter_user(self, conn: AsyncConnection, user_id: str | None) -> None:
        """Hook run at the start of every transaction; see :meth:`read`."""

    def _errors(self) -> _DatabaseErrors:
        return _DatabaseErrors(self)

    async def upsert(
        self,
        table: sa.Table,
        values: Mapping[str, Any],
        *,
        keys: Sequence[str],
        user_id: str | None = None,
    ) -> sa.Row[Any]:
        """Insert a row, or update the row with the same ``keys`` (keeping created_at)."""
        dialect_insert = postgresql.insert if self.dialect == "postgresql" else sqlite.insert
        stmt = dialect_insert(table).values(dict(values))
        changed = {k: stmt.excluded[k] for k in values if k not in keys and k != "created_at"}
        stmt = stmt.on_conflict_do_update(index_elements=list(keys), set_=changed)
        async with self.write(user_id) as conn:
            row: sa.Row[Any] = (await conn.execute(stmt.returning(table))).one()
        return row

    # -- schema ------------------------------------------------------------

    def head_revision(self) -> str | None:
        return _head()

    async def current_revision(self) -> str | None:
        def current(sync_conn: Connection) -> str | None:
            context = MigrationContext.configure(
                sync_conn, opts={"version_table": schema.VERSION_TABLE}
            )
            return context.get_current_revision()

        async with self.read() as conn:
            return await conn.run_sync(current)

    async def upgrade(self) -> str | None:
        def run(sync_conn: Connection) -> None:
            if sync_conn.dialect.name == "postgresql":
                # Several processes starting at once migrate one after the other.
                sync_conn.execute(
                    sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _UPGRADE_LOCK_KEY}
                )
            config = _alembic_config()
            config.attributes["connection"] = sync_conn
            command.upgrade(config, "head")

        async with self.write() as conn:
            await conn.run_sync(run)
        return await self.current_revision()

    async def ping(self) -> None:
        async with self.read() as conn:
            await conn.execute(sa.text("SELECT 1"))

    # -- several processes (PostgreSQL) ------------------------------------------
    #
    # Locks and LISTEN use their own psycopg connections, outside the pool: a turn
    # that waits on a model must not hold one of the pool's connections.

    @asynccontextmanager
    async def _direct(self) -> AsyncIterator[Any]:
        import psycopg

        conninfo = self.direct_url.set(drivername="postgresql").render_as_string(
            hide_password=False
        )
        try:
            conn = await psycopg.AsyncConnection.connect(
                conninfo, autocommit=True, connect_timeout=10
            )
        except psycopg.OperationalError as error:
            reason = " ".join(str(error).split())
            raise StorageError(f"database {self.description} is unavailable: {reason}") from None
        try:
            yield conn
        finally:
            await conn.close()

    async def _advisory(self, conn: Any, function: str, key: str) -> bool:
        """Call pg_advisory_<function> on a lock connection; a lost connection is a StorageError."""
        import psycopg

        try:
            cursor = await conn.execute(f"SELECT pg_{function}(hashtextextended(%s, 0))", (key,))
            row = await cursor.fetchone()
        except psycopg.Error as error:
            reason = " ".join(str(error).split()) or type(error).__name__
            raise StorageError(f"database {self.description} is unavailable: {reason}") from None
        return bool(row and row[0] is not False)

    async def _release(self, conn: Any, key: str) -> None:
        # When the lock's connection is gone the server has dropped its locks already.
        if conn.broken or conn.closed:
            return
        with contextlib.suppress(StorageError):
            await self._advisory(conn, "advisory_unlock", key)

    @asynccontextmanager
    async def chat_lock(self, chat_id: uuid.UUID) -> AsyncIterator[None]:
        if self.dialect != "postgresql":
            yield  # one process: the runtime's own lock is enough
            return
        key = f"chatwright:chat:{chat_id}"
        async with self._direct() as conn:
            await self._advisory(conn, "advisory_lock", key)
            try:
                yield
            finally:
                await self._release(conn, key)

    @asynccontextmanager
    async def exclusive(self, name: str) -> AsyncIterator[bool]:
        if self.dialect != "postgresql":
            yield True
            return
        key = f"chatwright:exclusive:{name}"
        async with self._direct() as conn:
            held = await self._advisory(conn, "try_advisory_lock", key)
            try:
                yield held
            finally:
                if held:
                    await self._release(conn, key)

    async def watch_config(self, changed: Callable[[str], None]) -> None:
        if self.dialect != "postgresql":
            return
        import asyncio

        delay = 1.0
        while True:
            try:
                async with self._direct() as conn:
                    await conn.execute("LISTEN chatwright_config")
                    delay = 1.0
                    async for note in conn.notifies():
                        changed(note.payload)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning("config listener lost its connection (%s); retrying", error)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    async def close(self) -> None:
        await self.engine.dispose()


class _DatabaseErrors:
    """Turns driver errors about reaching the database into :class:`StorageError`."""

    def __init__(self, storage: SQLStorage) -> None:
        self.storage = storage

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, error: BaseException | None, tb: Any) -> None:
        sqlstate = getattr(getattr(error, "orig", None), "sqlstate", None)
        if isinstance(error, exc.ProgrammingError) and sqlstate == "42501":
            # insufficient_privilege: a row-level-security policy refused the row.
            raise InvalidInputError(
                "the database refused the change (not allowed for this user)"
            ) from error
        if isinstance(error, exc.DataError):
            # A value the database cannot hold (a NUL character, an integer out of range).
            reason = " ".join(str(error.orig).split()) if error.orig else str(error)
            raise InvalidInputError(f"the database refused a value: {reason}") from error
        if not isinstance(error, exc.OperationalError | exc.InterfaceError | exc.ProgrammingError):
            return
        reason = " ".join(str(error.orig).split()) if error.orig else str(error)
        where = f"database {self.storage.description}"
        if "no such table" in reason or ("relation" in reason and "does not exist" in reason):
            raise StorageError(
                f"{where} lacks a table ({reason}); run `chatwright db upgrade`"
            ) from error
        if isinstance(error, exc.ProgrammingError):
            raise StorageError(f"{where} rejected a statement: {reason}") from error
        raise StorageError(f"{where} is unavailable: {reason}") from error


def _sqlite_engine(url: URL, *, busy_timeout: float, echo: bool) -> AsyncEngine:
    memory = url.database in (None, "", ":memory:")
    kwargs: dict[str, Any] = {"echo": echo, "connect_args": {"timeout": busy_timeout}}
    if memory:
        # Every new connection to :memory: would see a new, empty database, so keep
        # exactly one, and let tasks queue for it rather than share it mid-transaction.
        kwargs.update(poolclass=AsyncAdaptedQueuePool, pool_size=1, max_overflow=0)
    engine = create_async_engine(url, **kwargs)

    @event.listens_for(engine.sync_engine, "connect")
    def configure(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
        if not memory:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def begin(conn: Connection) -> None:
        write = conn.get_execution_options().get("chatwright_write", True)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine
