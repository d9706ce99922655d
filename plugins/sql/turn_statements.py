"""The statements of a chat turn (:mod:`.turns`), each built once.

Building a statement costs more than running it on SQLite (SQLAlchemy works
out a new statement's cache key each time; a built one keeps it), so every
statement a turn makes is built here, once per shape.
"""

from __future__ import annotations

import functools
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from chatwright.plugins.sql import schema
from chatwright.plugins.sql.budgets import (
    DROP_RESERVATION,
    add_to_totals,
    override_columns,
    user_lock,
)
from chatwright.plugins.sql.chats import TOUCH

COLUMNS = ("part", "a", "b", "rank", "n")
"""The columns of :func:`prompt_statement`'s rows."""

_m, _leases = schema.chat_messages, schema.chat_leases

EVERY_CHAT = uuid.UUID(int=0)

WAITING = ("pending", "approved")
"""The statuses of a chat's actions a turn's start reads: waiting for a decision, or
approved and not ended (held by a decision, or left by a process that stopped)."""


def held_actions(actions: sa.Table) -> sa.ColumnElement[bool]:
    """Its actions in :data:`WAITING`; as plain comparisons, not an IN of an expanding
    parameter, so that the statement's compiled form is kept (see :mod:`.direct`)."""
    return sa.or_(*(actions.c.status == status for status in WAITING))


"""The ``chat_revisions`` row that PostgreSQL's ``TRUNCATE`` of the messages moves: a
turn's revision is its chat's plus this one's (migration 0008)."""

WINDOW = (
    sa.select(_m.c.id, _m.c.role, sa.cast(_m.c.content, sa.Text).label("raw"), _m.c.created_at)
    .where(
        _m.c.chat_id == sa.bindparam("chat_id"),
        _m.c.user_id == sa.bindparam("user_id"),
        _m.c.id > sa.bindparam("after", type_=_m.c.id.type),
    )
    .order_by(_m.c.id.desc())
    .limit(sa.bindparam("limit", type_=sa.Integer))
)
"""The chat's last ``limit`` messages of the user newer than message ``after`` (0:
any), newest first."""

WINDOW_UPTO = WINDOW.where(_m.c.id <= sa.bindparam("upto", type_=_m.c.id.type))
"""PostgreSQL: :data:`WINDOW` of the messages up to message ``upto``: read again in a
statement after the one that stored the turn's human message, which it must not see."""


def _span() -> sa.ColumnElement[bool]:
    """The user's messages of the chat from message ``first`` to ``after``."""
    return sa.and_(
        _m.c.chat_id == sa.bindparam("chat_id"),
        _m.c.user_id == sa.bindparam("user_id"),
        _m.c.id.between(
            sa.bindparam("first", type_=_m.c.id.type), sa.bindparam("after", type_=_m.c.id.type)
        ),
    )


WINDOW_TEXT = (
    sa.select(
        _m.c.id,
        _m.c.role,
        sa.cast(_m.c.content, sa.Text).label("raw"),
        sa.type_coerce(_m.c.created_at, sa.Text).label("at"),
    )
    .where(
        _m.c.chat_id == sa.bindparam("chat_id"),
        _m.c.user_id == sa.bindparam("user_id"),
        _m.c.id > sa.bindparam("after", type_=_m.c.id.type),
    )
    .order_by(_m.c.id.desc())
    .limit(sa.bindparam("limit", type_=sa.Integer))
)
"""SQLite: :data:`WINDOW` with ``created_at`` as stored (text), converted only for a
message not seen before (see ``SQLTurnStore._message``)."""
_newest = WINDOW_TEXT.subquery()

GIVE_BACK = _leases.delete().where(
    _leases.c.chat_id == sa.bindparam("chat_id"), _leases.c.holder == sa.bindparam("holder")
)
HELD = sa.select(_leases.c.holder).where(
    _leases.c.chat_id == sa.bindparam("chat_id"), _leases.c.holder == sa.bindparam("holder")
)
"""The chat's lease when ``holder`` holds it (a row), else no row."""


_a = schema.agents


@functools.cache
def held_as_started(dialect: str, *, lock: bool) -> sa.Executable:
    """:data:`HELD`, and whether the turn's agent is as it was when the turn started: the
    same row (id, creation time) with the same change counter, which every change of the
    row or of its tool rows bumps (migration 0004).

    With ``lock``, for a tool's write on PostgreSQL, the lease's row and the agent's are
    locked (``FOR SHARE``) until the write commits: a turn or a deletion taking the lease
    over, and a change of the agent or its tool rows (whose trigger updates the agent's
    row), wait for the write, which so never commits under a configuration changed
    after its check.
    """
    created = sa.bindparam("agent_created", type_=_a.c.created_at.type)
    if dialect == "sqlite":
        # Stored as text: a row inserted by plain SQL has CURRENT_TIMESTAMP's spelling
        # (no fraction), which the value read back and bound again does not have.
        same_time = sa.func.julianday(_a.c.created_at) == sa.func.julianday(created)
    else:
        same_time = _a.c.created_at == created
    agent = sa.select(_a.c.id).where(
        _a.c.id == sa.bindparam("agent_id"),
        same_time,
        _a.c.config_version == sa.bindparam("agent_counter"),
    )
    postgres = dialect == "postgresql" and lock
    if postgres:
        agent = agent.with_for_update(read=True)
    found = agent.cte("turn_agent") if postgres else agent.subquery("turn_agent")
    same = sa.exists(sa.select(found.c.id)).label("same_agent")
    held = sa.select(_leases.c.holder, same).where(
        _leases.c.chat_id == sa.bindparam("chat_id"), _leases.c.holder == sa.bindparam("holder")
    )
    return held.with_for_update(read=True, of=_leases) if postgres else held


@functools.cache
def held_for_write(dialect: str) -> sa.Executable:
    """:data:`HELD`, for a tool's write: on PostgreSQL the row is locked (``FOR SHARE``)
    until the transaction ends, so that a turn or a deletion taking the lease over
    waits for the write to commit (and a deletion then deletes it too)."""
    return HELD.with_for_update(read=True) if dialect == "postgresql" else HELD


@functools.cache
def take_lease(dialect: str) -> sa.Executable:
    """Take a chat's lease when it is free or expired (``at``: now); returns it when taken."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(_leases).values(
        chat_id=sa.bindparam("chat_id"),
        holder=sa.bindparam("holder"),
        expires_at=sa.bindparam("expires_at"),
    )
    at = sa.bindparam("at", type_=_leases.c.expires_at.type)
    taking: sa.Executable = unless_held(stmt, at).returning(_leases.c.holder)
    return taking


def unless_held(rows: Any, at: Any) -> Any:
    """``rows`` (an insert into ``chat_leases``, either dialect's) taking each chat's lease
    over only where the lease there has expired by ``at``: a lease held stays as it is."""
    return rows.on_conflict_do_update(
        index_elements=["chat_id"],
        set_={"holder": rows.excluded.holder, "expires_at": rows.excluded.expires_at},
        where=_leases.c.expires_at < at,
    )


@functools.cache
def prompt_statement(
    dialect: str, *, check_owner: bool, summary: bool, window: bool = False, human: bool = False
) -> sa.Executable:
    """The statement of :meth:`SQLTurnStore._owner_and_prompt` for ``user_id``,
    ``agent_name`` and ``chat_id`` given when it runs.

    With ``window``, also the chat's last ``limit`` messages of the user after
    message ``after`` (part 5, newest first: ``a`` the role, ``b`` the content as
    text, ``rank`` the id, ``at`` the time; on SQLite as stored) and how many of the user's
    messages it holds from message ``first`` to ``after`` (part 6, ``rank``); with
    ``human``, the statement also stores the turn's human message (``role``,
    ``content``, ``created_at``) when ``taken`` is true, which none of its reads sees.
    """
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
        # Approved ones too: held, the chat's, their process stopped while they ran.
        sa.select(sa.literal(3), empty, empty, sa.func.count(), zero).where(
            p.c.chat_id == chat_id, p.c.user_id == user_id, held_actions(p)
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
    names: tuple[str, ...] = COLUMNS
    if window:
        # Part 6: how many of the user's messages the chat holds from ``first`` to
        # ``after`` (see .windows).
        parts.append(sa.select(sa.literal(6), empty, empty, sa.func.count(), zero).where(_span()))
        names = (*COLUMNS, "at")
        if dialect == "postgresql":
            no_time: sa.ColumnElement[Any] = sa.cast(sa.null(), _m.c.created_at.type)
            w = WINDOW.subquery()
            at = w.c.created_at
        else:
            # The time as SQLite stores it, converted only for a message not seen before.
            no_time, w = sa.type_coerce(sa.null(), sa.Text), _newest
            at = w.c.at
        parts = [part.add_columns(no_time) for part in parts]
        parts.append(sa.select(sa.literal(5), w.c.role, w.c.raw, w.c.id, zero, at))
    named = [
        part.with_only_columns(
            *(column.label(name) for column, name in zip(part.selected_columns, names, strict=True))
        )
        for part in parts
    ]
    stmt = sa.union_all(*named).order_by("part", sa.desc("rank"), "n")
    if human:
        stmt = stmt.add_cte(_human_message(check_owner))
    return stmt


def _human_message(check_owner: bool) -> sa.CTE:
    """Storing the turn's human message when ``taken`` (a data-modifying CTE, PostgreSQL).

    With ``check_owner``, only when the chat has a session of the user: otherwise the
    turn is refused as not the user's chat, and a message of theirs in another's chat
    would be refused under row-level security (migration 0017), failing the statement
    instead. (A session of the user's is what their role sees there.) Without it the
    sessions live elsewhere (a session store), which checked the chat's owner."""
    columns = ("chat_id", "user_id", "role", "content", "created_at")
    params = {name: sa.bindparam(name, type_=_m.c[name].type) for name in columns}
    values = sa.select(*params.values()).where(sa.bindparam("taken", type_=sa.Boolean))
    if check_owner:
        s = schema.chat_sessions
        chat, user = params["chat_id"], params["user_id"]
        values = values.where(sa.exists().where(s.c.chat_id == chat, s.c.user_id == user))
    return _m.insert().from_select(columns, values).cte("human")


@functools.cache
def start_statement(*, budget: bool, lock: bool) -> sa.Executable:
    """PostgreSQL: :func:`agent_statement` and :func:`take_lease` in one statement.

    Its row (none when there is no agent ``agent_name``) says in ``taken``
    whether the lease is this turn's now. With ``lock``, the user's budget lock
    is taken before the lease, as when they were two statements: the lease's
    row is inserted from the row that takes it.
    """
    source = sa.select(*(sa.bindparam(name, type_=_leases.c[name].type) for name in _LEASE_COLUMNS))
    if lock:
        taken = user_lock("postgresql", sa.bindparam("user_id", type_=sa.String))
        assert taken is not None
        source = source.select_from(sa.select(taken.label("budget_lock")).subquery("budget"))
    stmt = postgresql.insert(_leases).from_select(_LEASE_COLUMNS, source)
    took = (
        stmt.on_conflict_do_update(
            index_elements=["chat_id"],
            set_={"holder": stmt.excluded.holder, "expires_at": stmt.excluded.expires_at},
            where=_leases.c.expires_at < sa.bindparam("at", type_=_leases.c.expires_at.type),
        )
        .returning(_leases.c.holder)
        .cte("took")
    )
    read = agent_statement("postgresql", budget=budget, lock=False)
    assert isinstance(read, sa.Select)
    return read.add_columns(sa.exists(sa.select(took.c.holder)).label("taken")).add_cte(took)


_LEASE_COLUMNS = ("chat_id", "holder", "expires_at")


@functools.cache
def agent_statement(dialect: str, *, budget: bool, lock: bool) -> sa.Executable:
    """What a turn reads of its agent (``agent_name``): the row's config version only
    (see :meth:`SQLTurnStore._agent`), and the revision of the chat's messages
    (``chat_id``; see :mod:`.windows`); with ``budget``, the user's
    (``user_id``) budget override; with ``lock``, taking the user's budget lock
    (PostgreSQL)."""
    a, r = schema.agents, schema.chat_revisions
    # The chat's counter and the one TRUNCATE moves for every chat (migration 0008).
    chats = [
        sa.bindparam("chat_id", type_=r.c.chat_id.type),
        sa.literal(EVERY_CHAT, r.c.chat_id.type),
    ]
    revision = (
        sa.select(sa.cast(sa.func.coalesce(sa.func.sum(r.c.revision), 0), sa.BigInteger))
        .where(r.c.chat_id.in_(chats))
        .scalar_subquery()
    )
    columns: list[Any] = [a.c.id, a.c.created_at, a.c.config_version, revision.label("revision")]
    user_id = sa.bindparam("user_id", type_=sa.String)
    if budget:
        daily, monthly = override_columns(user_id)
        columns += [daily.label("budget_daily"), monthly.label("budget_monthly")]
    if lock:
        taken = user_lock(dialect, user_id)
        assert taken is not None
        columns.append(taken.label("budget_lock"))
    return sa.select(*columns).where(a.c.name == sa.bindparam("agent_name"))


# -- the end of a turn on PostgreSQL: its writes in one statement ---------------------------

MOST_FUSED_MESSAGES = 16
"""Most messages :func:`finish_statement` stores (one statement shape per count)."""


def _the_chat() -> sa.BindParameter[Any]:
    return sa.bindparam("the_chat", type_=_m.c.chat_id.type)


_USAGE = tuple(c.name for c in schema.token_usage.c if c.name != "id")


@functools.lru_cache(maxsize=256)
def finish_statement(
    *,
    give_back: bool,
    usage: tuple[bool, bool, bool],
    messages: int,
    touch: bool,
    held: bool = False,
) -> sa.Executable:
    """PostgreSQL: what ends a turn, as data-modifying CTEs of one statement.

    ``give_back``: giving the lease of ``the_chat`` back (``holder``); ``usage``:
    which of :func:`~.budgets.usage_writes`' statements apply (dropping the
    reservation: ``turn_id``; the usage row: its columns prefixed ``usage_``; the
    totals: ``the_user``, ``day``, ``month``, ``tokens``); ``messages``: how many
    messages to store in ``the_chat`` for ``the_user`` (``role_i``,
    ``content_i``, ``created_at_i`` for each); ``touch``: :data:`~.chats.TOUCH`
    (``the_chat``, ``the_user``, ``updated_at``). Every part sees the database
    as it was before the statement; none reads what another writes.

    No parameter is named after a column of ``chat_sessions`` but ``updated_at``:
    SQLAlchemy adds a parameter named after a column to the SET of an UPDATE
    in a CTE.

    With ``give_back``, and with ``held`` (the lease checked, not given back),
    the statement fails as a whole (a division by zero, SQLSTATE
    :data:`LEASE_LOST`) when ``holder`` does not hold the chat's lease: a turn
    that outlived its lease (taken over by another turn, by an erasure or a
    chat's deletion) must store nothing, not even its usage.
    """
    drop, record, totals = usage
    parts: list[Any] = []
    if give_back:
        parts.append(
            _leases.delete().where(
                _leases.c.chat_id == _the_chat(), _leases.c.holder == sa.bindparam("holder")
            )
        )
    if drop:
        parts.append(DROP_RESERVATION)
    if record:
        u = schema.token_usage
        parts.append(
            u.insert().values({c: sa.bindparam(f"usage_{c}", type_=u.c[c].type) for c in _USAGE})
        )
    if totals:
        parts.append(add_to_totals("postgresql", "the_user"))
    if messages:
        # From a SELECT: SQLAlchemy caches no statement with a multi-row VALUES.
        columns = ("chat_id", "user_id", "role", "content", "created_at")
        rows = [
            sa.select(
                _the_chat(),
                sa.bindparam("the_user", type_=_m.c.user_id.type),
                sa.bindparam(f"role_{i}", type_=_m.c.role.type),
                sa.bindparam(f"content_{i}", type_=_m.c.content.type),
                sa.bindparam(f"created_at_{i}", type_=_m.c.created_at.type),
            )
            for i in range(messages)
        ]
        source = rows[0] if messages == 1 else sa.union_all(*rows)
        parts.append(_m.insert().from_select(columns, source))
    if touch:
        parts.append(TOUCH)
    ctes = [part.cte(f"w{i}") for i, part in enumerate(parts)]
    if give_back:
        given = ctes[0].element.returning(_leases.c.holder)
        ctes[0] = given.cte("w0")
        kept = sa.select(sa.func.count()).select_from(ctes[0]).scalar_subquery()
    elif held:
        kept = (
            sa.select(sa.func.count())
            .where(_leases.c.chat_id == _the_chat(), _leases.c.holder == sa.bindparam("holder"))
            .scalar_subquery()
        )
    else:
        return sa.select(sa.literal(len(ctes))).add_cte(*ctes)
    # 1 / 0 when the lease is not the turn's: the whole statement fails (LEASE_LOST).
    # Integer division: an integer result, which the turn's statements run on psycopg
    # directly (.direct) can read, where ``/`` would make it NUMERIC.
    return sa.select(sa.literal(1, sa.Integer) // kept).add_cte(*ctes)


LEASE_LOST = "22012"
"""The SQLSTATE of a :func:`finish_statement` that found its turn's lease gone."""
