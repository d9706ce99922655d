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


def _batch(postgresql: bool) -> sa.Select[Any]:
    """The ids of the next ``batch`` idle active sessions (before ``idle_before``), the
    longest idle first (on SQLite, ties in the order of their ids, so that reading the
    batch again in the same transaction reads the same sessions)."""
    order = [_a.c.updated_at] if postgresql else [_a.c.updated_at, _a.c.session_id]
    return (
        sa.select(_a.c.session_id)
        .where(_a.c.updated_at < sa.bindparam("idle_before", type_=_a.c.updated_at.type))
        .order_by(*order)
        .limit(sa.bindparam("batch", type_=sa.Integer))
    )


@functools.cache
def sweep_statement(postgresql: bool, resume: bool, answer: str) -> sa.Executable:
    """One sweep step: deactivate a batch of idle sessions by deleting their active rows.

    Built once per shape, with the cutoff (``idle_before``), the batch's size
    (``batch``) and, with ``resume``, the pass's mark (``mark``) as parameters.
    ``answer``: nothing (``""``), ``"ids"`` (each deleted row's ``session_id``
    and ``updated_at``), ``"count"`` (PostgreSQL: one row, how many and the
    newest ``updated_at``) or ``"rows"`` (PostgreSQL: each session's row, with its
    active row's ``updated_at`` as ``mark``).

    The batch is found through the index on ``active_sessions.updated_at``,
    oldest first. On PostgreSQL it starts where the previous batch of the same
    pass ended (see :meth:`.sessions.SQLSessionStore._swept`), its rows are locked with
    ``FOR UPDATE SKIP LOCKED``, so concurrent sweepers take disjoint batches and
    none waits for another, and they are deleted by ``ctid`` (a TID scan: the
    rows are locked, so they cannot move before the delete); ``= ANY
    (ARRAY(...))`` keeps the planner from joining the whole table to the batch.
    SQLite serializes write transactions, so the subquery alone is enough there.
    """
    batch = _batch(postgresql)
    if not postgresql:
        delete = _a.delete().where(_a.c.session_id.in_(batch.scalar_subquery()))
        return delete.returning(_a.c.session_id, _a.c.updated_at) if answer == "ids" else delete
    if resume:
        batch = batch.where(_a.c.updated_at >= sa.bindparam("mark", type_=_a.c.updated_at.type))
    ctid: sa.ColumnElement[Any] = sa.literal_column("ctid")
    locked = batch.with_only_columns(ctid).with_for_update(skip_locked=True)
    delete = _a.delete().where(ctid == sa.any_(sa.func.array(locked.scalar_subquery())))
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
