"""The statements of a chat turn (:mod:`.turns`), each built once.

Building a statement costs more than running it on SQLite (SQLAlchemy works
out a new statement's cache key each time; a built one keeps it), so every
statement a turn makes is built here, once per shape.
"""

from __future__ import annotations

import functools
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from chatwright.plugins.sql import schema
from chatwright.plugins.sql.budgets import override_columns, user_lock

COLUMNS = ("part", "a", "b", "rank", "n")
"""The columns of :func:`prompt_statement`'s rows."""

_m, _leases = schema.chat_messages, schema.chat_leases

WINDOW = (
    sa.select(_m.c.id, _m.c.role, sa.cast(_m.c.content, sa.Text).label("raw"), _m.c.created_at)
    .where(_m.c.chat_id == sa.bindparam("chat_id"), _m.c.user_id == sa.bindparam("user_id"))
    .order_by(_m.c.id.desc())
    .limit(sa.bindparam("limit", type_=sa.Integer))
)
"""The chat's last ``limit`` messages of the user, newest first."""

GIVE_BACK = _leases.delete().where(
    _leases.c.chat_id == sa.bindparam("chat_id"), _leases.c.holder == sa.bindparam("holder")
)


@functools.cache
def take_lease(dialect: str) -> sa.Executable:
    """Take a chat's lease when it is free or expired (``at``: now); returns it when taken."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(_leases).values(
        chat_id=sa.bindparam("chat_id"),
        holder=sa.bindparam("holder"),
        expires_at=sa.bindparam("expires_at"),
    )
    return stmt.on_conflict_do_update(
        index_elements=["chat_id"],
        set_={"holder": stmt.excluded.holder, "expires_at": stmt.excluded.expires_at},
        where=_leases.c.expires_at < sa.bindparam("at", type_=_leases.c.expires_at.type),
    ).returning(_leases.c.holder)


@functools.cache
def prompt_statement(dialect: str, *, check_owner: bool, summary: bool) -> sa.Executable:
    """The statement of :meth:`SQLTurnStore._owner_and_prompt` for ``user_id``,
    ``agent_name`` and ``chat_id`` given when it runs."""
    user_id: sa.BindParameter[Any] = sa.bindparam("user_id")
    agent_name: sa.BindParameter[Any] = sa.bindparam("agent_name")
    chat_id: sa.BindParameter[Any] = sa.bindparam("chat_id")
    s, mem, c = schema.chat_sessions, schema.agent_memories, schema.prompt_customizations
    p = schema.pending_actions
    zero, empty = sa.literal(0), sa.literal("")
    parts = [
        sa.select(sa.literal(1), mem.c.notes, empty, zero, zero).where(
            mem.c.user_id == user_id, mem.c.agent_name == agent_name
        ),
        sa.select(sa.literal(2), c.c.content, empty, c.c.priority, c.c.id).where(
            c.c.user_id == user_id, c.c.agent_name == agent_name, c.c.is_active
        ),
        sa.select(sa.literal(3), empty, empty, sa.func.count(), zero).where(
            p.c.chat_id == chat_id, p.c.user_id == user_id, p.c.status == "pending"
        ),
    ]
    if summary:
        # Its time comes back as text, as the column it shares is one: ISO 8601 in
        # UTC whatever the session's DateStyle and TimeZone (SQLite stores it so).
        cs = schema.chat_summaries
        updated: sa.ColumnElement[Any] = (
            sa.func.to_char(sa.func.timezone("UTC", cs.c.updated_at), 'YYYY-MM-DD"T"HH24:MI:SS.US')
            if dialect == "postgresql"
            else sa.cast(cs.c.updated_at, sa.String)
        )
        parts.append(
            sa.select(
                sa.literal(4),
                cs.c.text,
                updated,
                cs.c.through_id,
                cs.c.messages,
            ).where(cs.c.chat_id == chat_id, cs.c.user_id == user_id)
        )
    if check_owner:
        # The first session decides (as SQLSessionStore.owner).
        first = (
            sa.select(s.c.user_id, s.c.agent_name)
            .where(s.c.chat_id == chat_id)
            .order_by(s.c.created_at, s.c.id)
            .limit(1)
            .subquery()
        )
        parts.insert(0, sa.select(zero, first.c.user_id, first.c.agent_name, zero, zero))
    named = [
        part.with_only_columns(
            *(
                column.label(name)
                for column, name in zip(part.selected_columns, COLUMNS, strict=True)
            )
        )
        for part in parts
    ]
    return sa.union_all(*named).order_by("part", sa.desc("rank"), "n")


@functools.cache
def agent_statement(dialect: str, *, budget: bool, lock: bool) -> sa.Executable:
    """What a turn reads of its agent (``agent_name``): the row's config version only
    (see :meth:`SQLTurnStore._agent`); with ``budget``, the user's (``user_id``) budget
    override; with ``lock``, taking the user's budget lock (PostgreSQL)."""
    a = schema.agents
    columns: list[Any] = [a.c.id, a.c.created_at, a.c.config_version]
    user_id = sa.bindparam("user_id", type_=sa.String)
    if budget:
        daily, monthly = override_columns(user_id)
        columns += [daily.label("budget_daily"), monthly.label("budget_monthly")]
    if lock:
        taken = user_lock(dialect, user_id)
        assert taken is not None
        columns.append(taken.label("budget_lock"))
    return sa.select(*columns).where(a.c.name == sa.bindparam("agent_name"))
