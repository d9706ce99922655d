"""Application tables for tool types: reflection and parameterised statements.

The CRUD tool never writes SQL. It asks this store to describe a table (one
reflection per call, so a table or column added while the server runs is seen
at the next tool load) and to run insert/select/update/delete statements built
with SQLAlchemy Core from the reflected :class:`sqlalchemy.Table`. Identifiers
are checked against that table, values are always bound parameters, and the
framework's own tables are refused outright.

Writes that approval and undo rely on go through :meth:`SQLRecordStore.preview`
and :meth:`SQLRecordStore.apply` (in :mod:`.writes`), which read the rows a
write changes before it runs, so that a write approved on a preview runs only
on the rows previewed and leaves whole-row before/after images (:mod:`.images`)
in its audit entry, in the same transaction; :mod:`.undo` puts them back.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import exc
from sqlalchemy.dialects import postgresql, sqlite

from chatwright.approvals import (
    Applied,
    AuditEntry,
    NewAuditEntry,
    Preview,
    UndoReport,
    Write,
)
from chatwright.errors import InvalidInputError, NotFoundError, one_line
from chatwright.plugins.sql.errors import integrity_message
from chatwright.plugins.sql.stale import entries_arg, fresh_tables, table_arg, write_arg
from chatwright.plugins.sql.turns import check_held
from chatwright.stores import (
    ColumnInfo,
    ColumnKind,
    ColumnSpec,
    OrderBy,
    TableInfo,
    TableSpec,
    is_framework_table,
)

if TYPE_CHECKING:
    from chatwright.plugins.sql.storage import SQLStorage


class UuidText(sa.types.TypeDecorator[Any]):
    """A SQLite column declared ``uuid``: UUIDs kept as their text (``8-4-4-4-12``).

    SQLite gives such a column numeric affinity and SQLAlchemy reflects it as
    NUMERIC; tables made for PostgreSQL and copied to SQLite hold the UUIDs'
    text there, so they are compared and written as that text.
    """

    impl = sa.Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: sa.Dialect) -> Any:
        if isinstance(value, uuid.UUID):
            return str(value)
        return value

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> Any:
        return value


def column_kind(type_: sa.types.TypeEngine[Any]) -> ColumnKind:
    if isinstance(type_, UuidText):
        return "uuid"
    checks: list[tuple[type[sa.types.TypeEngine[Any]], ColumnKind]] = [
        (sa.Boolean, "boolean"),
        (sa.Integer, "integer"),
        (sa.Numeric, "number"),
        (sa.DateTime, "datetime"),
        (sa.Date, "date"),
        (sa.JSON, "json"),
        (sa.Uuid, "uuid"),
        (sa.String, "string"),
    ]
    for generic, kind in checks:
        if isinstance(type_, generic):
            return kind
    return "other"


def _column_type(spec: ColumnSpec) -> sa.types.TypeEngine[Any]:
    types: dict[str, sa.types.TypeEngine[Any]] = {
        "string": sa.Text(),
        "integer": sa.Integer(),
        "number": sa.Numeric(),
        "boolean": sa.Boolean(),
        "date": sa.Date(),
        "datetime": sa.DateTime(timezone=True),
        "json": sa.JSON(),
        "uuid": sa.Uuid(),
        "other": sa.Text(),
    }
    return types[spec.kind]


def _server_default(spec: ColumnSpec) -> Any:
    if spec.default is None:
        return None
    if spec.default == "now":
        return sa.func.now()
    if isinstance(spec.default, bool):
        return sa.true() if spec.default else sa.false()
    return str(spec.default)


def appended(stored: Any, separator: str, value: str) -> Any:
    """The text an appending write leaves: ``value`` after ``stored`` and ``separator``.

    ``stored`` is the column (in a statement, so the database adds to the text
    as it is when the row is written, never to a copy read earlier) or the text
    itself (in a preview). Empty or NULL text gets ``value`` alone.
    """
    if isinstance(stored, sa.ColumnElement):
        text = sa.literal(value, sa.Text())
        return sa.case(
            (sa.func.coalesce(stored, "") == "", text),
            else_=stored.concat(sa.literal(separator, sa.Text())).concat(text),
        )
    return f"{stored}{separator}{value}" if stored else value


@contextmanager
def refused(table: str) -> Iterator[None]:
    """Values the database refused, as :class:`InvalidInputError` naming ``table``'s columns."""
    try:
        yield
    except exc.IntegrityError as error:
        raise InvalidInputError(
            f"the database rejected the values: {integrity_message(error, table)}"
        ) from None
    except (OverflowError, UnicodeError) as error:
        # Raised by the driver while binding, before the database sees anything:
        # an integer beyond 64 bits on SQLite, a lone surrogate in a string.
        raise InvalidInputError(f"the database cannot hold a value: {one_line(error)}") from None


def sqlite_uuid_columns(conn: sa.Connection, table: str) -> set[str]:
    """The columns of a SQLite table declared with the type ``uuid``."""
    rows = conn.exec_driver_sql(f"PRAGMA table_info({_quoted(table)})").all()
    return {str(r[1]) for r in rows if str(r[2]).strip().lower() == "uuid"}


def reflect_table(sync: sa.Connection, name: str) -> sa.Table:
    """An application table as the crud tool sees it (a SQLite ``uuid`` column holds text)."""
    metadata = sa.MetaData()
    if sync.dialect.name == "sqlite":
        declared = sqlite_uuid_columns(sync, name)

        @sa.event.listens_for(metadata, "column_reflect")
        def uuid_text(inspector: Any, table: sa.Table, column: dict[str, Any]) -> None:
            if column["name"] in declared:
                column["type"] = UuidText()

    return sa.Table(name, metadata, autoload_with=sync)


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class SQLRecordStore:
    def __init__(self, db: SQLStorage) -> None:
        self.db = db
        self._tables: dict[str, sa.Table] = {}

    def _check_name(self, table: str) -> None:
        # The one place the framework's tables are refused: every public method
        # that takes a table name calls it first, whatever the tool type.
        if is_framework_table(table):
            raise InvalidInputError(
                f"table {table!r} belongs to chatwright and is not writable by tools"
            )

    async def _reflect(self, table: str) -> sa.Table | None:
        def reflect(conn: sa.Connection) -> sa.Table | None:
            if not sa.inspect(conn).has_table(table):
                return None
            return reflect_table(conn, table)

        async with self.db.read() as conn:
            reflected = await conn.run_sync(reflect)
        if reflected is None:
            self._tables.pop(table, None)
        else:
            self._tables[table] = reflected
        return reflected

    async def _table(self, table: str) -> sa.Table:
        self._check_name(table)
        found = self._tables.get(table)
        if found is None:
            found = await self._reflect(table)
        if found is None:
            raise NotFoundError(f"table {table!r} does not exist")
        return found

    @staticmethod
    def _columns(table: sa.Table, names: Sequence[str] | Mapping[str, Any]) -> list[sa.Column[Any]]:
        missing = [n for n in names if n not in table.c]
        if missing:
            raise InvalidInputError(
                f"table {table.name!r} has no column {', '.join(map(repr, missing))}"
            )
        return [table.c[n] for n in names]

    def _where(self, table: sa.Table, where: Mapping[str, Any]) -> sa.ColumnElement[bool]:
        columns = self._columns(table, where)
        return sa.and_(sa.true(), *(c == where[c.name] for c in columns))

    async def describe(self, table: str) -> TableInfo | None:
        self._check_name(table)
        reflected = await self._reflect(table)
        if reflected is None:
            return None
        columns = {
            c.name: ColumnInfo(
                name=c.name,
                kind=column_kind(c.type),
                nullable=bool(c.nullable),
                has_default=c.server_default is not None
                or bool(c.autoincrement is True)
                or (c.primary_key and column_kind(c.type) == "integer"),
                primary_key=bool(c.primary_key),
            )
            for c in reflected.columns
        }
        unique = [frozenset(c.name for c in reflected.primary_key.columns)]
        for constraint in reflected.constraints:
            if isinstance(constraint, sa.UniqueConstraint):
                unique.append(frozenset(c.name for c in constraint.columns))
        for index in reflected.indexes:
            if index.unique and index.dialect_kwargs.get(f"{self.db.dialect}_where") is None:
                unique.append(frozenset(c.name for c in index.columns if isinstance(c, sa.Column)))
        return TableInfo(name=table, columns=columns, unique=tuple(u for u in unique if u))

    async def _execute(
        self, stmt: sa.Executable, user_id: str, table: str, *, write: bool = True
    ) -> tuple[list[dict[str, Any]], int]:
        """Rows (as dicts) and row count of one statement in its own transaction.

        :param write: False for a statement that only reads, which then runs in a
            read transaction (on SQLite: without taking the write lock).
        """
        with refused(table):
            if write:
                async with self.db.write() as conn:
                    # The turn's lease first (a framework table), then the rest as the user.
                    await check_held(conn, self.db, user_id)
                    await self.db.users.enter(conn, user_id)
                    result = await conn.execute(stmt)
                    rows = [dict(r) for r in result.mappings()] if result.returns_rows else []
                    return rows, result.rowcount
            async with self.db.read(user_id) as conn:
                result = await conn.execute(stmt)
                rows = [dict(r) for r in result.mappings()] if result.returns_rows else []
                return rows, result.rowcount

    @fresh_tables(table_arg)
    async def insert(
        self,
        user_id: str,
        table: str,
        values: Mapping[str, Any],
        *,
        returning: Sequence[str],
        conflict: Sequence[str] | None = None,
        scope: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        t = await self._table(table)
        self._columns(t, values)
        back = self._columns(t, returning)
        if conflict:
            self._columns(t, conflict)
            scope = scope or {}
            dialect_insert = postgresql.insert if self.db.dialect == "postgresql" else sqlite.insert
            upsert = dialect_insert(t).values(dict(values))
            changed = {
                k: upsert.excluded[k] for k in values if k not in conflict and k not in scope
            }
            # Only a row inside the scope is updated, whatever the conflict target
            # found; any other row is left as it is and nothing of it is returned.
            stmt: Any = upsert.on_conflict_do_update(
                index_elements=list(conflict),
                set_=changed,
                where=self._where(t, scope) if scope else None,
            )
        else:
            stmt = t.insert().values(dict(values))
        rows, _ = await self._execute(stmt.returning(*back), user_id, table)
        if not rows:
            raise InvalidInputError(
                f"nothing saved: the values conflict with a row of {table!r} "
                "that is not the caller's to change"
            )
        return rows[0]

    @fresh_tables(table_arg)
    async def select(
        self,
        user_id: str,
        table: str,
        where: Mapping[str, Any],
        *,
        columns: Sequence[str],
        order_by: Sequence[OrderBy] = (),
        limit: int,
    ) -> list[dict[str, Any]]:
        t = await self._table(table)
        stmt = sa.select(*self._columns(t, columns)).where(self._where(t, where)).limit(limit)
        for name, descending in order_by:
            (column,) = self._columns(t, [name])
            stmt = stmt.order_by(column.desc() if descending else column.asc())
        rows, _ = await self._execute(stmt, user_id, table, write=False)
        return rows

    @fresh_tables(table_arg)
    async def update(
        self,
        user_id: str,
        table: str,
        where: Mapping[str, Any],
        values: Mapping[str, Any],
        *,
        returning: Sequence[str],
    ) -> list[dict[str, Any]]:
        if not where:
            raise InvalidInputError(f"refusing to update every row of {table!r}: no condition")
        t = await self._table(table)
        self._columns(t, values)
        stmt = (
            t.update()
            .where(self._where(t, where))
            .values(dict(values))
            .returning(*self._columns(t, returning))
        )
        rows, _ = await self._execute(stmt, user_id, table)
        return rows

    @fresh_tables(table_arg)
    async def delete(self, user_id: str, table: str, where: Mapping[str, Any]) -> int:
        if not where:
            raise InvalidInputError(f"refusing to delete every row of {table!r}: no condition")
        t = await self._table(table)
        _, count = await self._execute(t.delete().where(self._where(t, where)), user_id, table)
        return count

    # -- writes with images (chatwright.plugins.sql.writes, chatwright.plugins.sql.undo) ---

    @fresh_tables(write_arg)
    async def preview(self, user_id: str, write: Write, *, cap: int) -> Preview:
        from chatwright.plugins.sql.writes import Writes

        return await Writes(self).preview(user_id, write, cap=cap)

    @fresh_tables(write_arg)
    async def apply(
        self,
        user_id: str,
        write: Write,
        *,
        expect: Preview | None = None,
        audit: NewAuditEntry | None = None,
        cap: int,
    ) -> Applied:
        from chatwright.plugins.sql.writes import Writes

        return await Writes(self).apply(user_id, write, expect=expect, audit=audit, cap=cap)

    @fresh_tables(entries_arg)
    async def undo(
        self, user_id: str, entries: Sequence[AuditEntry], audit: NewAuditEntry
    ) -> UndoReport:
        from chatwright.plugins.sql.undo import Undo

        return await Undo(self, user_id).run(entries, audit)

    async def ensure_table(self, spec: TableSpec) -> bool:
        self._check_name(spec.name)
        metadata = sa.MetaData()
        table = sa.Table(
            spec.name,
            metadata,
            *(
                sa.Column(
                    c.name,
                    _column_type(c),
                    primary_key=c.primary_key,
                    nullable=c.nullable and not c.primary_key,
                    server_default=_server_default(c),
                )
                for c in spec.columns
            ),
        )
        for columns in spec.indexes:
            sa.Index(f"ix_{spec.name}_{'_'.join(columns)}", *(table.c[n] for n in columns))
        for columns in spec.unique:
            table.append_constraint(
                sa.UniqueConstraint(*columns, name=f"uq_{spec.name}_{'_'.join(columns)}")
            )

        def create(conn: sa.Connection) -> bool:
            if sa.inspect(conn).has_table(spec.name):
                return False
            metadata.create_all(conn)
            return True

        async with self.db.write() as conn:
            created = await conn.run_sync(create)
            if any(c.name == "user_id" for c in spec.columns):
                # Also for a table that existed already, so one made earlier is secured too.
                await self.db.users.secure_table(conn, spec.name)
        self._tables.pop(spec.name, None)
        return bool(created)
