"""The sweeper's statements of the ``sql`` backend: deactivating a batch of idle sessions.

A step deletes a batch of the oldest idle rows of ``active_sessions`` (see
:class:`chatwright.plugins.sql.sessions.SQLSessionStore`, which runs them and
keeps where a pass has got to).
"""

from __future__ import annotations

import functools
from typing import Any

import sqlalchemy as sa

from chatwright.plugins.sql import schema

_s, _a = schema.chat_sessions, schema.active_sessions


def _time(name: str) -> sa.BindParameter[Any]:
    """A parameter of the statements compared with ``active_sessions.updated_at``."""
    return sa.bindparam(name, type_=_a.c.updated_at.type)


def _batch(postgresql: bool) -> sa.Select[Any]:
    """The ids of the next ``batch`` idle active sessions (before ``idle_before``), the
    longest idle first (on SQLite, ties in the order of their ids, so that reading the
    batch again in the same transaction reads the same sessions)."""
    order = [_a.c.updated_at] if postgresql else [_a.c.updated_at, _a.c.session_id]
    return (
        sa.select(_a.c.session_id)
        .where(_a.c.updated_at < _time("idle_before"))
        .order_by(*order)
        .limit(sa.bindparam("batch", type_=sa.Integer))
    )


SWEEP_LOCK_WAIT = "1ms"
"""How long a sweep step on PostgreSQL waits for a row another transaction holds
before it gives up and takes its batch the way that never waits for a row
(see :meth:`.sessions.SQLSessionStore._pg_step`).

PostgreSQL's ``lock_timeout`` bounds each wait, not the statement: a step kept
waiting by one row after another holds the rows it has deleted meanwhile, and
a transaction waiting for those could reach its ``deadlock_timeout`` and be
the one ended. Giving up at the first wait of more than a millisecond keeps
what the sweeper makes others wait for to about its own work (tens of
milliseconds a batch); held rows are rare (a client heartbeating a session as
it turns idle, another sweeper's batch), and a step given up is taken again
at once the other way."""


def _sweeping() -> sa.ScalarSelect[Any]:
    """Whether this step may sweep (PostgreSQL), decided once before it reads a row.

    It takes the sweepers' transaction-scoped advisory lock: when a step of
    another process's sweeper running now holds it, this one takes nothing
    rather than wait for the rows that one is deleting (and takes its batch
    with ``skip_locked`` instead). It also sets the step's
    ``lock_timeout`` (``set_config(..., true)`` lasts until the step's
    transaction ends, whether or not it is in a ``BEGIN`` block). Both are
    transaction-scoped, so this works through a transaction pooler.
    """
    key = sa.func.hashtextextended("chatwright:sweep", 0)
    wait = sa.func.set_config("lock_timeout", SWEEP_LOCK_WAIT, sa.true())
    return sa.select(
        sa.and_(sa.func.pg_try_advisory_xact_lock(key), wait.is_not(None))
    ).scalar_subquery()


@functools.cache
def sweep_statement(
    postgresql: bool, resume: bool, answer: str, skip_locked: bool = False
) -> sa.Executable:
    """One sweep step: deactivate a batch of idle sessions by deleting their active rows.

    Built once per shape, with the cutoff (``idle_before``), the batch's size
    (``batch``) and, with ``resume``, the pass's mark (``mark``) as parameters.
    ``answer``: nothing (``""``), ``"ids"`` (each deleted row's ``session_id``
    and ``updated_at``), ``"count"`` (PostgreSQL: one row, how many and the
    newest ``updated_at``) or ``"rows"`` (PostgreSQL: each session's row, with its
    active row's ``updated_at`` as ``mark``).

    The batch is found through the index on ``active_sessions.updated_at``,
    oldest first. On PostgreSQL it starts where the previous batch of the same
    pass ended (see :meth:`.sessions.SQLSessionStore._swept`) and its rows are
    deleted by ``ctid`` (a TID scan); ``= ANY (ARRAY(...))`` keeps the planner from joining
    the whole table to the batch. A row updated while the step waited for it
    (a heartbeat) is deleted only if it is still idle as updated (the cutoff is
    in the delete's own condition, which the server checks again on the row as
    it is now); a row deleted meanwhile is not deleted twice, so each session
    is in one step's answer only.

    By default the step holds the sweepers' advisory lock (:func:`_sweeping`)
    and deletes without locking its rows first. With ``skip_locked`` (the way
    taken when the first statement took nothing: another sweeper held that
    lock, or rows were held past the step's ``lock_timeout``) the rows are
    locked first with ``FOR UPDATE SKIP LOCKED``, which passes over held rows
    without waiting for them, but writes each row twice: locking a row is a
    write of its own, which made a pass of a million sessions take 2.3 s where
    the delete alone takes 1.4 s (batches of 10,000).

    SQLite serializes write transactions, so the subquery alone is enough there.
    """
    batch = _batch(postgresql)
    if not postgresql:
        delete = _a.delete().where(_a.c.session_id.in_(batch.scalar_subquery()))
        return delete.returning(_a.c.session_id, _a.c.updated_at) if answer == "ids" else delete
    if resume:
        batch = batch.where(_a.c.updated_at >= _time("mark"))
    ctid: sa.ColumnElement[Any] = sa.literal_column("ctid")
    if skip_locked:
        taken = batch.with_only_columns(ctid).with_for_update(skip_locked=True)
    else:
        taken = batch.where(_sweeping()).with_only_columns(ctid)
    # Still idle: a row updated while the step waited for it (a heartbeat) is checked
    # again as it is now, whatever the server's recheck of a TID scan does.
    # "IS TRUE": no index serves it, so the planner keeps to the TID scan of the batch
    # (through the index on updated_at, the ctid list would be a filter on every idle row).
    idle = (_a.c.updated_at < _time("idle_before")).is_(sa.true())
    delete = _a.delete().where(ctid == sa.any_(sa.func.array(taken.scalar_subquery())), idle)
    if answer == "ids":
        return delete.returning(_a.c.session_id, _a.c.updated_at)
    if answer == "count":
        done = delete.returning(_a.c.updated_at).cte("swept")
        return sa.select(sa.func.count(), sa.func.max(done.c.updated_at))
    if answer == "rows":
        gone = delete.returning(_a.c.session_id, _a.c.updated_at).cte("gone")
        return sa.select(_s, gone.c.updated_at.label("mark")).join(
            gone, gone.c.session_id == _s.c.id
        )
    return delete


@functools.cache
def swept_sessions() -> sa.Select[Any]:
    """SQLite: the sessions of the batch the next step deletes."""
    return _s.select().where(_s.c.id.in_(_batch(False).scalar_subquery()))
