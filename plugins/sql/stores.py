"""The framework's configuration and per-user stores of the ``sql`` backend.

Agents and their tool rows (admin statements), and each user's prompt
customizations and agent memories (statements made for that user, so that the
storage's user transactions apply). Chat sessions and messages are in
:mod:`.chats`.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import exc
from sqlalchemy.dialects import postgresql, sqlite

from chatwright.approvals import APPROVAL_MODES, USER_CHOICES
from chatwright.catalog import MAX_ROW_ID
from chatwright.errors import (
    AlreadyExistsError,
    InvalidInputError,
    NotFoundError,
    TooLargeError,
    UnknownAgentError,
)
from chatwright.plugins.sql import schema
from chatwright.plugins.sql.errors import integrity_message, name_taken
from chatwright.plugins.sql.rows import from_row, now
from chatwright.stores import (
    DEFAULT_HISTORY_WINDOW,
    Agent,
    AgentMemory,
    PromptCustomization,
    ToolRow,
    config_version,
)

if TYPE_CHECKING:
    from chatwright.plugins.sql.storage import SQLStorage

LIMIT_FIELDS = frozenset(
    {"turn_timeout", "max_model_calls", "max_tool_calls", "history_tokens", "summarize"}
)
AGENT_FIELDS = frozenset({"system_prompt", "model", "model_settings", "history_window"}) | (
    LIMIT_FIELDS
)
TOOL_FIELDS = frozenset(
    {"name", "description", "config", "is_active", "position", "approval", "approval_default"}
)


INT_MAX = 2**31 - 1


def check_limits(agent: str, limits: Mapping[str, Any]) -> dict[str, Any]:
    """The agent's limits as stored, refusing a value of the wrong kind by name.

    None sets a limit back to its setting (``summarize``: off). The database's
    CHECK constraints refuse zero and negative limits too; this says what to
    write instead of naming a constraint.
    """
    checked: dict[str, Any] = {}
    for key, value in limits.items():
        if value is None:
            checked[key] = False if key == "summarize" else None
            continue
        if key == "summarize":
            if not isinstance(value, bool):
                raise InvalidInputError(
                    f"agent {agent!r}: summarize {value!r} is not true or false"
                )
        elif key == "turn_timeout":
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not 0 < value <= 86_400 * 7
            ):
                raise InvalidInputError(
                    f"agent {agent!r}: turn_timeout {value!r} is not a number of seconds "
                    "above 0 (at most a week); leave it unset to follow turns.timeout"
                )
            value = float(value)
        elif isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= INT_MAX:
            raise InvalidInputError(
                f"agent {agent!r}: {key} {value!r} is not a whole number above 0; "
                "leave it unset to follow its setting"
            )
        checked[key] = value
    return checked


def check_approval(tool: str, approval: Any, approval_default: Any) -> None:
    """Refuse an approval mode or default that is not one of the allowed words, by name.

    The database's CHECK constraints would refuse them too, but with a message
    that names a constraint instead of what to write.
    """
    if approval is not None and approval not in APPROVAL_MODES:
        raise InvalidInputError(
            f"tool {tool!r}: approval {approval!r} is not one of {', '.join(APPROVAL_MODES)}"
        )
    if approval_default is not None and approval_default not in USER_CHOICES:
        raise InvalidInputError(
            f"tool {tool!r}: approval_default {approval_default!r} is not one of "
            f"{', '.join(USER_CHOICES)}"
        )


class BoundStore:
    """A store over the tables of one :class:`SQLStorage`."""

    def __init__(self, db: SQLStorage) -> None:
        self.db = db


class SQLAgentStore(BoundStore):
    async def get(self, name: str) -> Agent | None:
        async with self.db.read() as conn:
            row = (await conn.execute(sa.select(schema.agents).filter_by(name=name))).first()
        return from_row(Agent, row) if row else None

    async def list(self) -> builtins.list[Agent]:
        async with self.db.read() as conn:
            rows = await conn.execute(sa.select(schema.agents).order_by(schema.agents.c.name))
        return [from_row(Agent, r) for r in rows]

    async def create(
        self,
        name: str,
        *,
        system_prompt: str,
        model: str,
        model_settings: Mapping[str, Any] | None = None,
        history_window: int = DEFAULT_HISTORY_WINDOW,
        **limits: Any,
    ) -> Agent:
        unknown = set(limits) - LIMIT_FIELDS
        if unknown:
            raise InvalidInputError(
                f"agent {name!r} has no setting {', '.join(sorted(unknown))}; "
                f"the limits are {', '.join(sorted(LIMIT_FIELDS))}"
            )
        limits = check_limits(name, limits)
        ts = now()
        values = {
            "name": name,
            "system_prompt": system_prompt,
            "model": model,
            "model_settings": dict(model_settings or {}),
            "history_window": history_window,
            **limits,
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
                f"agent {name!r} rejected by the database: {integrity_message(error, 'agents')}"
            ) from None
        return from_row(Agent, row)

    async def update(self, name: str, **changes: Any) -> Agent:
        unknown = set(changes) - AGENT_FIELDS
        if unknown:
            raise InvalidInputError(
                f"cannot change {', '.join(sorted(unknown))} of agent {name!r}; "
                f"changeable fields: {', '.join(sorted(AGENT_FIELDS))}"
            )
        changes.update(check_limits(name, {k: changes[k] for k in LIMIT_FIELDS if k in changes}))
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
                f"agent {name!r} rejected by the database: {integrity_message(error, 'agents')}"
            ) from None
        if row is None:
            raise UnknownAgentError(name)
        return from_row(Agent, row)

    async def delete(self, name: str) -> bool:
        async with self.db.write() as conn:
            result = await conn.execute(schema.agents.delete().where(schema.agents.c.name == name))
        return bool(result.rowcount)

    async def config_version(self, name: str) -> str | None:
        a = schema.agents
        stmt = sa.select(a.c.id, a.c.created_at, a.c.config_version).where(a.c.name == name)
        async with self.db.read() as conn:
            row = (await conn.execute(stmt)).first()
        if row is None:
            return None
        return config_version(row.id, row.created_at, row.config_version)


class SQLToolStore(BoundStore):
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
        return [from_row(ToolRow, r) for r in rows]

    async def _agent_names(self) -> dict[int, str]:
        async with self.db.read() as conn:
            rows = await conn.execute(sa.select(schema.agents.c.id, schema.agents.c.name))
        return {row.id: row.name for row in rows}

    async def get(self, tool_id: int) -> ToolRow | None:
        if not _a_row_id(tool_id):
            return None  # PostgreSQL would refuse it as out of its column's range
        async with self.db.read() as conn:
            row = (await conn.execute(sa.select(schema.agent_tools).filter_by(id=tool_id))).first()
        return from_row(ToolRow, row) if row else None

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
        approval: str = "auto",
        approval_default: str = "required",
    ) -> ToolRow:
        t = schema.agent_tools
        if config is None:
            raise InvalidInputError(f"tool {name!r} needs a config (a JSON object)")
        check_approval(name, approval, approval_default)
        try:
            async with self.db.write() as conn:
                agent_id = await conn.scalar(
                    sa.select(schema.agents.c.id).where(schema.agents.c.name == agent_name)
                )
                if agent_id is None:
                    raise UnknownAgentError(agent_name)
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
                            approval=approval,
                            approval_default=approval_default,
                            created_at=ts,
                            updated_at=ts,
                        )
                        .returning(t)
                    )
                ).one()
        except exc.IntegrityError as error:
            for old in (r for r in await self.list(agent_name) if r.name == name):
                raise name_taken(agent_name, old) from None
            raise InvalidInputError(
                f"tool {name!r} rejected by the database: {integrity_message(error, 'agent_tools')}"
            ) from None
        return from_row(ToolRow, row)

    async def delete(self, tool_id: int) -> bool:
        if not _a_row_id(tool_id):
            return False
        t = schema.agent_tools
        async with self.db.write() as conn:
            result = await conn.execute(t.delete().where(t.c.id == tool_id))
        return bool(result.rowcount)

    async def set_active(self, tool_id: int, active: bool) -> ToolRow:
        if not _a_row_id(tool_id):
            raise NotFoundError(f"no tool row with id {tool_id}; see `chatwright tools list`")
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
        return from_row(ToolRow, row)

    async def update(self, tool_id: int, **changes: Any) -> ToolRow:
        unknown = set(changes) - TOOL_FIELDS
        if unknown:
            raise InvalidInputError(
                f"cannot change {', '.join(sorted(unknown))} of tool row {tool_id}; "
                f"changeable fields: {', '.join(sorted(TOOL_FIELDS))}"
            )
        check_approval(
            str(changes.get("name", tool_id)),
            changes.get("approval"),
            changes.get("approval_default"),
        )
        if "config" in changes and changes["config"] is None:
            raise InvalidInputError(f"tool row {tool_id} needs a config (a JSON object)")
        if not _a_row_id(tool_id):
            raise NotFoundError(f"no tool row with id {tool_id}; see `chatwright tools list`")
        t = schema.agent_tools
        stmt = t.update().where(t.c.id == tool_id).values(**changes, updated_at=now()).returning(t)
        try:
            async with self.db.write() as conn:
                row = (await conn.execute(stmt)).first()
        except exc.IntegrityError as error:
            current = await self.get(tool_id) if "name" in changes else None
            if current is not None:
                for other in await self.list():
                    same = (other.agent_id, other.name) == (current.agent_id, changes["name"])
                    if same and other.id != tool_id:
                        agent_name = (await self._agent_names()).get(current.agent_id, "?")
                        raise name_taken(agent_name, other) from None
            raise InvalidInputError(
                f"tool row {tool_id} rejected by the database: "
                f"{integrity_message(error, 'agent_tools')}"
            ) from None
        if row is None:
            raise NotFoundError(f"no tool row with id {tool_id}; see `chatwright tools list`")
        return from_row(ToolRow, row)


MAX_CUSTOMIZATIONS = 50
"""Most customizations (kinds) one user keeps for one agent: every turn reads them all."""


class SQLCustomizationStore(BoundStore):
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
        return [from_row(PromptCustomization, r) for r in rows]

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
        # One transaction counts and writes, serialised per user and agent (SQLite: its write
        # lock; PostgreSQL: an advisory lock), or concurrent puts would pass the limit together.
        c = schema.prompt_customizations
        mine = (c.c.user_id == user_id, c.c.agent_name == agent_name, c.c.kind != kind)
        ts = now()
        insert = postgresql.insert if self.db.dialect == "postgresql" else sqlite.insert
        found = {"user_id": user_id, "agent_name": agent_name, "kind": kind}
        data = {"content": content, "priority": priority, "is_active": is_active, "updated_at": ts}
        new = insert(c).values({**found, **data, "created_at": ts})
        changed = {k: new.excluded[k] for k in data}
        upsert = new.on_conflict_do_update(index_elements=list(found), set_=changed).returning(c)
        name = f"chatwright:customizations:{user_id}:{agent_name}"
        async with self.db.write() as conn:
            if self.db.dialect == "postgresql":
                key = sa.func.hashtextextended(name, 0)  # taken as the framework, like chat claims
                await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(key)))
            await self.db.users.enter(conn, user_id)
            kept = int((await conn.execute(sa.select(sa.func.count()).where(*mine))).scalar_one())
            if kept >= MAX_CUSTOMIZATIONS:
                raise TooLargeError(
                    f"you have {kept} customizations of agent {agent_name!r}, the most one user "
                    "keeps for an agent; give the kind of one of them to replace it"
                )
            row = (await conn.execute(upsert)).one()
        return from_row(PromptCustomization, row)


class SQLMemoryStore(BoundStore):
    async def get(self, user_id: str, agent_name: str) -> AgentMemory | None:
        m = schema.agent_memories
        async with self.db.read(user_id) as conn:
            row = (
                await conn.execute(
                    sa.select(m).where(m.c.user_id == user_id, m.c.agent_name == agent_name)
                )
            ).first()
        return from_row(AgentMemory, row) if row else None

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
        return from_row(AgentMemory, row)


def _a_row_id(tool_id: int) -> bool:
    """Whether ``tool_id`` can be a tool row's id: a larger one finds no row on either
    database, instead of an error of PostgreSQL's that names no row."""
    return not isinstance(tool_id, bool) and 0 < tool_id <= MAX_ROW_ID
