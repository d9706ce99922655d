"""One user's data in the ``sql`` backend: export, erasure, deleting one chat.

Each operation is one transaction in two parts. The framework's part runs
first, as the connecting role: the tables a user may not change by design
(``audit_log`` is append-only to them, the usage tables and ``chat_leases`` are
closed to them), reached with an explicit ``user_id`` filter. Then the
transaction enters the user (``users.enter``: on the ``supabase`` backend the
request's claims and ``role authenticated``), and every per-user table — chats,
customizations, memories, approval choices, pending actions and the
application tables CRUD tools scope to the user — is read or deleted under the
user's row-level security, as a turn would.

An export on PostgreSQL is one ``REPEATABLE READ`` snapshot, so a turn that
commits meanwhile is in it entirely or not at all. An erasure or a chat
deletion is refused while a turn of one of the chats holds its lease (the turn
would write to what is being deleted). The audit log's rows of the user are
deleted, not redacted: their arguments and before/after images are the user's
data, and a row stripped of them is no record of anything. Only a role of the
table's owner may delete from it (its trigger refuses any other, migration
0005); connected as another, the erasure reports the table in ``skipped``. The erasure itself
is appended to the log under :data:`~chatwright.userdata.ERASED_USER` with the
counts, so an operator sees it happened without learning whose data it was
(an erasure that found nothing is not recorded: there was nothing to erase).

Each application table is read or deleted inside a savepoint: one the user's
role may not read, or whose rows another table's foreign keys still need, is
reported in ``skipped`` instead of failing the whole operation.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from chatwright.approvals import NewAuditEntry
from chatwright.errors import (
    ChatBusyError,
    InvalidInputError,
    NotFoundError,
    TooLargeError,
    one_line,
)
from chatwright.plugins.sql import schema
from chatwright.plugins.sql.audit import insert_audit
from chatwright.plugins.sql.records import column_kind, reflect_table
from chatwright.plugins.sql.sessions import SESSIONS
from chatwright.plugins.sql.turn_statements import unless_held
from chatwright.usage import day_of, month_of
from chatwright.userdata import (
    ERASED_USER,
    KEPT_BUDGET,
    KEPT_RESERVATIONS,
    KEPT_TOTALS,
    USER_TABLES,
    CrudScope,
    ErasureReport,
    UserArchive,
    crud_scopes_since,
    no_chat,
    plain,
    too_many,
)

if TYPE_CHECKING:
    from chatwright.plugins.sql.storage import SQLStorage

LEASES_AT_ONCE = 500
"""Most chat leases a deletion takes in one statement (SQLite bounds its parameters)."""

# The framework's part: tables the user may not change (or read) under row-level security.
FRAMEWORK_PART: tuple[sa.Table, ...] = (
    schema.audit_log,
    schema.token_usage,
    schema.usage_totals,
    schema.usage_reservations,
    schema.user_budgets,
)
# The user's part, children before what they belong to.
USER_PART: tuple[sa.Table, ...] = (
    schema.chat_messages,
    schema.chat_summaries,
    schema.pending_actions,
    schema.chat_sessions,
    schema.prompt_customizations,
    schema.agent_memories,
    schema.tool_approval_choices,
)
# The tables that hold a chat's rows (with a user_id), for deleting one chat.
CHAT_PART: tuple[sa.Table, ...] = (
    schema.chat_messages,
    schema.chat_summaries,
    schema.pending_actions,
    schema.chat_sessions,
)


def _budget_kept(now: datetime) -> dict[str, tuple[sa.ColumnElement[bool], str]]:
    """What an erasure that keeps the user's budget keeps of each framework table (a
    condition on its rows), and why."""
    totals = schema.usage_totals
    current = sa.or_(
        sa.and_(totals.c.period == "day", totals.c.starts == day_of(now)),
        sa.and_(totals.c.period == "month", totals.c.starts == month_of(now)),
    )
    return {
        totals.name: (current, KEPT_TOTALS),
        schema.usage_reservations.name: (
            schema.usage_reservations.c.expires_at >= now,
            KEPT_RESERVATIONS,
        ),
        schema.user_budgets.name: (sa.true(), KEPT_BUDGET),
    }


def _rows_of(table: sa.Table) -> sa.Select[Any]:
    """What the export shows of a table: a session with whether it is active, which
    ``active_sessions`` keeps (its row goes with its session)."""
    return SESSIONS if table is schema.chat_sessions else sa.select(table)


def _order(table: sa.Table) -> list[sa.ColumnElement[Any]]:
    return list(table.primary_key.columns)


class SQLUserData:
    """The storage's ``user_data``: see :class:`chatwright.userdata.UserDataStore`."""

    def __init__(self, db: SQLStorage) -> None:
        self.db = db

    # -- pieces ------------------------------------------------------------

    async def _snapshot(self, conn: AsyncConnection) -> None:
        if self.db.dialect == "postgresql":
            await conn.execute(sa.text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))

    async def _scopes(
        self, conn: AsyncConnection
    ) -> tuple[dict[str, tuple[sa.Table, CrudScope]], dict[str, str]]:
        """The application tables scoped to users, reflected, and those skipped with why:
        by the current tool rows and by those deleted or changed since (migration 0016),
        so that a user's rows stay covered after the row that scoped them went."""
        t, f = schema.agent_tools, schema.former_tool_rows
        rows = (await conn.execute(sa.select(t.c.id, t.c.type, t.c.config).order_by(t.c.id))).all()
        former = sa.select(f.c.tool_id.label("id"), f.c.type, f.c.config).order_by(f.c.id)
        found = crud_scopes_since(rows, (await conn.execute(former)).all())
        skipped = dict(found.skipped)
        names = sorted(found.tables)

        def reflect(sync: sa.Connection) -> dict[str, sa.Table]:
            inspector = sa.inspect(sync)
            return {name: reflect_table(sync, name) for name in names if inspector.has_table(name)}

        reflected = await conn.run_sync(reflect)
        tables: dict[str, tuple[sa.Table, CrudScope]] = {}
        for name in names:
            table = reflected.get(name)
            if table is None:
                continue  # not made yet: nobody has rows in it
            scope = found.tables[name]
            if scope.column not in table.c:
                skipped[name] = (
                    f"tool row {scope.tool_ids[0]} scopes it by column {scope.column!r}, "
                    "which the table does not have"
                )
                continue
            tables[name] = (table, scope)
        return tables, skipped

    async def _user_chats(self, conn: AsyncConnection, user_id: str) -> set[uuid.UUID]:
        """The ids of every chat with a row of the user's (as the connecting role)."""
        chats: set[uuid.UUID] = set()
        for table in CHAT_PART:
            stmt = sa.select(table.c.chat_id).where(table.c.user_id == user_id).distinct()
            chats |= set((await conn.scalars(stmt)).all())
        return chats

    async def _refuse_running(self, conn: AsyncConnection, chats: Collection[uuid.UUID]) -> None:
        """Take the leases of ``chats`` for the deletion (they go with the chats' rows), or
        refuse when a turn holds one.

        Taken, not only read: on PostgreSQL a turn that has taken its lease in a
        transaction not committed yet is invisible to a read, and would store its
        messages after the deletion. Taking the lease waits for that transaction,
        then finds the lease held; a turn that starts meanwhile waits for this
        transaction, then finds no chat. Taken in the chats' order, a part at a time.
        """
        if not chats:
            return
        leases = schema.chat_leases
        insert = postgresql.insert if self.db.dialect == "postgresql" else sqlite.insert
        at = datetime.now(UTC)
        holder = f"deletion-{uuid.uuid4().hex}"
        until = at + timedelta(seconds=self.db.turn_lease)
        ordered = sorted(chats)
        for first in range(0, len(ordered), LEASES_AT_ONCE):
            part = ordered[first : first + LEASES_AT_ONCE]
            rows = insert(leases).values(
                [{"chat_id": c, "holder": holder, "expires_at": until} for c in part]
            )
            take = unless_held(rows, at).returning(leases.c.chat_id)
            taken = set((await conn.scalars(take)).all())
            busy = next((c for c in part if c not in taken), None)
            if busy is not None:
                held = await conn.scalar(
                    sa.select(leases.c.expires_at).where(leases.c.chat_id == busy)
                )
                shown = f" until {held:%H:%M:%S} UTC" if held is not None else ""
                raise ChatBusyError(
                    f"a turn of chat {busy} holds it{shown}; try again when it has ended "
                    "(a running turn holds it longer; one whose process stopped lets go then)"
                )

    @staticmethod
    async def _rows(
        conn: AsyncConnection, stmt: sa.Select[Any], budget: list[int] | None, max_rows: int | None
    ) -> list[dict[str, Any]]:
        if budget is not None:
            stmt = stmt.limit(budget[0] + 1)
        rows = [
            {k: plain(v) for k, v in row.items()} for row in (await conn.execute(stmt)).mappings()
        ]
        if budget is not None and max_rows is not None:
            budget[0] -= len(rows)
            if budget[0] < 0:
                raise TooLargeError(too_many(max_rows))
        return rows

    # -- the operations ----------------------------------------------------

    async def export(self, user_id: str, *, max_rows: int | None = None) -> UserArchive:
        budget = [max_rows] if max_rows is not None else None
        tables: dict[str, list[dict[str, Any]]] = {}
        app_tables: dict[str, list[dict[str, Any]]] = {}
        async with self.db.read() as conn:
            await self._snapshot(conn)
            scoped, skipped = await self._scopes(conn)
            for table in FRAMEWORK_PART:
                stmt = sa.select(table).where(table.c.user_id == user_id).order_by(*_order(table))
                tables[table.name] = await self._rows(conn, stmt, budget, max_rows)
            await self.db.users.enter(conn, user_id)
            for table in USER_PART:
                stmt = _rows_of(table).where(table.c.user_id == user_id).order_by(*_order(table))
                tables[table.name] = await self._rows(conn, stmt, budget, max_rows)
            for name, (table, scope) in scoped.items():
                owned = _owner_is(table.c[scope.column], user_id)
                if owned is None:
                    app_tables[name] = []
                    continue
                stmt = sa.select(table).where(owned)
                if table.primary_key.columns:
                    stmt = stmt.order_by(*table.primary_key.columns)
                try:
                    async with conn.begin_nested():
                        app_tables[name] = await self._rows(conn, stmt, budget, max_rows)
                except exc.DBAPIError as error:
                    skipped[name] = f"could not be read as the user: {_reason(error)}"
        ordered = {name: tables[name] for name in _names()}
        return UserArchive(
            user_id=user_id,
            exported_at=datetime.now(UTC),
            tables=ordered,
            app_tables=app_tables,
            scopes={name: scoped[name][1].column for name in app_tables},
            skipped=skipped,
        )

    async def erase(
        self, user_id: str, *, requested_by: str, keep_budget: bool = False
    ) -> ErasureReport:
        if user_id == ERASED_USER:
            # Its audit entries are the records of erasures, no user's data.
            raise InvalidInputError(
                f"{ERASED_USER!r} is no user: it stands for erased users in the audit log, "
                "whose erasure records are kept; give a user's id"
            )
        counts: dict[str, int] = {}
        app_counts: dict[str, int] = {}
        kept = _budget_kept(datetime.now(UTC)) if keep_budget else {}
        kept_why: dict[str, str] = {}
        async with self.db.write() as conn:
            scoped, skipped = await self._scopes(conn)
            chats = await self._user_chats(conn, user_id)
            await self._refuse_running(conn, chats)
            for table in FRAMEWORK_PART:
                try:
                    async with conn.begin_nested():
                        mine = table.c.user_id == user_id
                        if table.name in kept:
                            keeping, why = kept[table.name]
                            left = await conn.scalar(
                                sa.select(sa.func.count()).where(mine, keeping)
                            )
                            if left:
                                kept_why[table.name] = why
                            mine = sa.and_(mine, sa.not_(keeping))
                        result = await conn.execute(table.delete().where(mine))
                        counts[table.name] = result.rowcount
                except exc.DBAPIError as error:
                    # The audit log's trigger lets only its owner's roles delete (0005).
                    counts[table.name] = 0
                    skipped[table.name] = (
                        f"the role chatwright connects as may not delete from it "
                        f"({_reason(error)}); the table's owner deletes the user's rows"
                    )
            if chats:
                leases = schema.chat_leases
                await conn.execute(leases.delete().where(leases.c.chat_id.in_(list(chats))))
            await self.db.users.enter(conn, user_id)
            for table in USER_PART:
                result = await conn.execute(table.delete().where(table.c.user_id == user_id))
                counts[table.name] = result.rowcount
            for name, (table, scope) in scoped.items():
                owned = _owner_is(table.c[scope.column], user_id)
                if owned is None:
                    app_counts[name] = 0
                    continue
                try:
                    async with conn.begin_nested():
                        result = await conn.execute(table.delete().where(owned))
                        app_counts[name] = result.rowcount
                except exc.DBAPIError as error:
                    skipped[name] = f"could not be deleted as the user: {_reason(error)}"
            report = ErasureReport(
                user_id=user_id,
                tables={name: counts[name] for name in _names()},
                app_tables=app_counts,
                skipped=skipped,
                kept=kept_why,
            )
            if report.total:  # a user with nothing left nothing to record
                await self._record(conn, report, requested_by)
        return report

    async def _record(self, conn: AsyncConnection, report: ErasureReport, by: str) -> None:
        """Append the erasure to the audit log: counts, no personal data."""
        # Back from the user to the connecting role: the entry is not the user's row.
        await self.db.users.leave(conn)
        await insert_audit(
            conn,
            NewAuditEntry(
                user_id=ERASED_USER,
                agent_name="",
                tool_name="users.erase",
                operation="erase",
                outcome="ok",
                args={
                    "requested_by": by,
                    "total": report.total,
                    "tables": dict(report.tables),
                    "app_tables": dict(report.app_tables),
                    "skipped": sorted(report.skipped),
                },
            ),
        )

    async def delete_chat(self, user_id: str, chat_id: uuid.UUID) -> ErasureReport:
        counts: dict[str, int] = {}
        async with self.db.write() as conn:
            owned = await self._owns_chat(conn, user_id, chat_id)
            if not owned:
                raise NotFoundError(no_chat(chat_id))
            await self._refuse_running(conn, [chat_id])
            leases = schema.chat_leases
            await conn.execute(leases.delete().where(leases.c.chat_id == chat_id))
            await self.db.users.enter(conn, user_id)
            for table in CHAT_PART:
                result = await conn.execute(
                    table.delete().where(table.c.user_id == user_id, table.c.chat_id == chat_id)
                )
                counts[table.name] = result.rowcount
        return ErasureReport(user_id=user_id, tables=counts)

    async def _owns_chat(self, conn: AsyncConnection, user_id: str, chat_id: uuid.UUID) -> bool:
        for table in CHAT_PART:
            found = await conn.scalar(
                sa.select(sa.literal(1))
                .where(table.c.user_id == user_id, table.c.chat_id == chat_id)
                .limit(1)
            )
            if found is not None:
                return True
        return False


def _owner_is(column: sa.Column[Any], user_id: str) -> sa.ColumnElement[bool] | None:
    """``column == user_id`` as the column keeps user ids; None when none of it can be hers.

    A uuid column matches only a user id that is its UUID's canonical text, as the crud
    tool writes it: "0F8F…", "{0f8f…}" or "urn:uuid:0f8f…" are other users' ids.
    """
    if column_kind(column.type) != "uuid":
        return column == user_id
    try:
        key = uuid.UUID(user_id)
    except ValueError:
        return None
    return column == key if str(key) == user_id else None


def _reason(error: exc.DBAPIError) -> str:
    return one_line(error.orig or error)


def _names() -> Iterable[str]:
    return USER_TABLES
