"""A turn's statements run straight on the driver's connection in an inline transaction.

SQLAlchemy's execution of one statement costs some 30 µs of Python on SQLite
(its cache key, execution context, result wrapping, and a greenlet each way
under asyncio), where SQLite runs a turn's small indexed statements in about
one. A turn runs a dozen of them. On an inline SQLite transaction
(``SQLStorage.inline_write``), :class:`DirectConnection` runs a statement it
has seen before on the driver's connection itself: prepared once (compiled for
the dialect, with the bind and result processors of its columns' types, as
SQLAlchemy would apply them), then each run is its parameters processed, one
call into SQLite (:class:`.sqlite_driver.Inline`, which waits for another
process's lock without blocking the loop), and rows with SQLAlchemy's row
access (attributes, indexes, ``_mapping``). Errors are SQLAlchemy's, wrapped as
it wraps them. The transaction itself (begin, commit, rollback, the pool) stays
SQLAlchemy's (on SQLite's kept connection, begin and commit are the driver's:
see :mod:`.inline`).

On PostgreSQL the same runs on the connection's psycopg connection
(:class:`.psycopg_direct.PsycopgRunner`), where SQLAlchemy's execution of a statement costs
about 100 µs of Python besides psycopg's own: the statement is compiled with
positional placeholders (:func:`positional`) and runs in the transaction
SQLAlchemy began (psycopg begins it with the first statement), or in
autocommit for a write of one statement. A connection lost under it is
invalidated, as SQLAlchemy invalidates one. Two more kinds of statement keep
SQLAlchemy's execution there: an INSERT to which SQLAlchemy adds RETURNING for
its ``inserted_primary_key``, and one with a result column SQLAlchemy converts
by the cursor's type code (``NUMERIC`` to float), which a prepared statement
does not know.

Only statements built once and run again take this path: a statement object
is prepared at its second run (one built for each call never is), and one that
SQLAlchemy would run differently from its compiled text — parameters expanded
at execution, Python-side column defaults — or whose parameters name no bound
value keeps SQLAlchemy's execution. So does everything while anyone listens to
the engine's cursor events or echoes its statements (tests and tracing see
every statement).
"""

from __future__ import annotations

import copy
import operator
import sqlite3
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc
from sqlalchemy.engine.interfaces import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import sqltypes
from sqlalchemy.sql.base import Executable
from sqlalchemy.types import TypeDecorator

from chatwright.plugins.sql.psycopg_direct import PsycopgRunner, lost
from chatwright.plugins.sql.sqlite_driver import OneHopConnection

KEPT = 512
"""Most statements a storage remembers (seen once, prepared, or not preparable)."""

Processor = Callable[[Any], Any] | None


class DirectRow(tuple):  # type: ignore[type-arg]
    """A result row: by index, by attribute, and as ``_mapping`` (like SQLAlchemy's Row).

    Each statement's rows are of a subclass with one property per column
    (:func:`_row_type`), as a named tuple's are.
    """

    __slots__ = ()
    _fields: tuple[str, ...] = ()

    @property
    def _mapping(self) -> dict[str, Any]:
        return _RowMapping(zip(self._fields, self, strict=True))

    def _asdict(self) -> dict[str, Any]:
        return dict(zip(self._fields, self, strict=True))


class _RowMapping(dict):  # type: ignore[type-arg]
    """A row's values by column name, or by the column itself (as SQLAlchemy's)."""

    def __missing__(self, key: Any) -> Any:
        name = getattr(key, "key", None)
        if isinstance(name, str) and name in self:
            return self[name]
        raise KeyError(key)


def _row_type(names: Sequence[str]) -> type[DirectRow]:
    fields = tuple(names)
    attributes: dict[str, Any] = {"__slots__": (), "_fields": fields}
    for index, name in enumerate(fields):
        if name.isidentifier() and not hasattr(DirectRow, name):
            attributes[name] = property(operator.itemgetter(index))
    return type("DirectRow", (DirectRow,), attributes)


class DirectResult:
    """SQLAlchemy's ``Result`` for a statement run directly: its rows, all fetched.

    What a ``Result`` has that needs SQLAlchemy's execution context
    (``inserted_primary_key``, ``context``) it does not: a statement whose caller
    reads those is one to run through SQLAlchemy (``execution_options``).
    """

    __slots__ = ("_fields", "_key", "_rows", "lastrowid", "rowcount")

    def __init__(
        self,
        rows: list[Any],
        rowcount: int,
        fields: tuple[str, ...] = (),
        lastrowid: int | None = None,
        key: tuple[Any, ...] | None = None,
    ) -> None:
        self._rows = rows
        self.rowcount = rowcount
        self._fields = fields
        self.lastrowid = lastrowid
        self._key = key

    @property
    def inserted_primary_key(self) -> tuple[Any, ...]:
        """The primary key of a one-row INSERT (given, or SQLite's row id)."""
        if self._key is None:
            raise exc.InvalidRequestError(
                "inserted_primary_key is available only for a one-row INSERT of a table "
                "with a one-column primary key"
            )
        return self._key

    @property
    def returns_rows(self) -> bool:
        return bool(self._fields)

    def keys(self) -> list[str]:
        return list(self._fields)

    def fetchone(self) -> Any:
        return self._rows.pop(0) if self._rows else None

    def fetchall(self) -> list[Any]:
        rows, self._rows = self._rows, []
        return rows

    def scalars(self) -> DirectResult:
        """The first column's values (``all``, ``first``, ``one`` give values, not rows)."""
        return DirectResult([row[0] for row in self._rows], self.rowcount, self._fields[:1])

    def close(self) -> None:
        self._rows = []

    def __iter__(self) -> Iterator[Any]:
        return iter(self._rows)

    def all(self) -> list[Any]:
        return list(self._rows)

    def first(self) -> Any:
        return self._rows[0] if self._rows else None

    def one_or_none(self) -> Any:
        if len(self._rows) > 1:
            raise exc.MultipleResultsFound("Multiple rows were found when one or none was required")
        return self.first()

    def one(self) -> Any:
        if not self._rows:
            raise exc.NoResultFound("No row was found when one was required")
        return self.one_or_none()

    def scalar(self) -> Any:
        return self._rows[0][0] if self._rows else None

    def scalar_one(self) -> Any:
        return self.one()[0]

    def mappings(self) -> DirectResult:
        return DirectResult([row._mapping for row in self._rows], self.rowcount, self._fields)


@dataclass(frozen=True, slots=True)
class Prepared:
    sql: str
    names: tuple[str, ...]
    """The parameters' names in the order of the statement's placeholders."""
    processors: tuple[Processor, ...]
    defaults: Mapping[str, Any]
    """The values of bound parameters that carry one (literals), by name."""
    row: type[DirectRow] | None
    """None for a statement that returns no rows."""
    results: tuple[Processor, ...]
    key: str | None = None
    """An INSERT's one-column primary key (for ``inserted_primary_key``)."""

    def values(self, params: Mapping[str, Any]) -> list[Any]:
        out = []
        for name, process in zip(self.names, self.processors, strict=True):
            value = params[name] if name in params else self.defaults[name]
            out.append(value if process is None else process(value))
        return out


_ONCE, _NEVER = object(), object()


def positional(dialect: Dialect) -> Dialect:
    """``dialect``, compiling with positional placeholders (``%s`` for psycopg's named
    ``%(name)s``): a prepared statement's values are then a list in their order."""
    if dialect.positional:
        return dialect
    made = copy.copy(dialect)
    made.paramstyle = "format"
    made.positional = True
    return made


# What psycopg returns for these, SQLAlchemy's processors make the same without the
# column's type code from the cursor (which a prepared statement does not have).
_PLAIN_RESULTS = (
    sqltypes.Integer,
    sqltypes.String,
    sqltypes.Boolean,
    sqltypes.Uuid,
    sqltypes.DateTime,
    sqltypes.Date,
    sqltypes.Time,
    sqltypes.JSON,
    sqltypes.NullType,
)


def _plain(type_: Any, dialect: Dialect) -> bool:
    impl = type_.dialect_impl(dialect)
    if isinstance(impl, TypeDecorator):
        impl = impl.impl_instance
    return isinstance(impl, _PLAIN_RESULTS)


def prepare(stmt: Any, dialect: Dialect, keys: Sequence[str]) -> Prepared | None:
    """``stmt`` ready to run on a DB-API cursor, or None when SQLAlchemy must run it."""
    if stmt.get_execution_options():
        return None  # options only SQLAlchemy's execution honours
    compiled = stmt.compile(dialect=dialect, column_keys=list(keys))
    names = compiled.positiontup
    if names is None or not compiled.string:
        return None
    if getattr(compiled, "implicit_returning", None):
        return None  # RETURNING added for inserted_primary_key, read from the context
    if getattr(compiled, "insert_prefetch", None) or getattr(compiled, "update_prefetch", None):
        return None  # Python-side defaults, computed per execution
    if compiled.literal_execute_params or compiled.post_compile_params:
        return None  # rendered per execution
    binds = compiled.binds
    defaults: dict[str, Any] = {}
    processors: list[Processor] = []
    for name in names:
        bind = binds[name]
        if bind.expanding or bind.callable is not None:
            return None
        if name not in keys:
            if bind.value is None and bind.required:
                return None
            defaults[name] = bind.value
        processors.append(bind.type.dialect_impl(dialect).bind_processor(dialect))
    row: type[DirectRow] | None = None
    results: list[Processor] = []
    columns = compiled._result_columns
    if dialect.name != "sqlite" and not all(_plain(c[3], dialect) for c in columns):
        return None
    if columns:
        row = _row_type([c[0] for c in columns])
        results = [c[3].dialect_impl(dialect).result_processor(dialect, None) for c in columns]
    key = None
    if getattr(stmt, "is_insert", False) and isinstance(stmt.table, sa.Table):
        primary = list(stmt.table.primary_key.columns)
        key = primary[0].key if len(primary) == 1 else None
    return Prepared(
        compiled.string, tuple(names), tuple(processors), defaults, row, tuple(results), key
    )


class Statements:
    """The statements one storage has seen on inline connections (see the module)."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self._seen: OrderedDict[tuple[int, tuple[str, ...]], tuple[Any, Any]] = OrderedDict()

    def lookup(self, stmt: Any, keys: tuple[str, ...]) -> Prepared | None:
        """``stmt`` prepared for parameters named ``keys`` (sorted), or None."""
        key = (id(stmt), keys)
        entry = self._seen.get(key)
        if entry is not None and entry[0] is stmt:
            self._seen.move_to_end(key)  # a turn's statements stay, whatever else runs
        else:
            # Kept with the statement itself, so that its id is not another's meanwhile.
            self._seen[key] = (stmt, _ONCE)
            if len(self._seen) > KEPT:
                self._seen.popitem(last=False)
            return None
        state = entry[1]
        if state is _ONCE:
            try:
                # A copy made now: the engine has connected, and its dialect knows the
                # server (what it compiles may depend on the server's version).
                state = prepare(stmt, positional(self.dialect), keys) or _NEVER
            except Exception:
                state = _NEVER
            self._seen[key] = (stmt, state)
        return None if state is _NEVER else state


class DirectConnection(AsyncConnection):
    """An ``AsyncConnection`` whose inline statements seen before run on the driver."""

    __slots__ = ("_direct", "_driver")

    def direct(self, statements: Statements, driver: OneHopConnection | PsycopgRunner) -> None:
        """Run the prepared ``statements`` on ``driver`` (this connection's: SQLite's,
        inline, or psycopg's)."""
        self._direct = statements
        self._driver = driver

    async def execute(
        self,
        statement: Any,
        parameters: Any = None,
        *,
        execution_options: Any = None,
    ) -> Any:
        statements: Statements | None = getattr(self, "_direct", None)
        if statements is not None and execution_options is None:
            ran = await self._run(statements, statement, parameters)
            if ran is not None:
                return ran
        return await super().execute(statement, parameters, execution_options=execution_options)

    async def _run(self, statements: Statements, stmt: Any, parameters: Any) -> Any:
        if not isinstance(stmt, Executable) or isinstance(stmt, sa.TextClause):
            return None
        many = isinstance(parameters, list | tuple)
        if many and not parameters:
            return None
        first: Mapping[str, Any] = (parameters[0] if many else parameters) or {}
        keys = tuple(sorted(first))
        prepared = statements.lookup(stmt, keys)
        driver = self._driver
        if prepared is None or (isinstance(driver, OneHopConnection) and driver.inline is None):
            return None
        if self.sync_engine.echo or self.sync_engine.dispatch.before_cursor_execute:
            return None
        if many and prepared.row is not None:
            return None  # RETURNING for several rows: SQLAlchemy batches them itself
        try:
            values: Any = (
                [prepared.values(p) for p in parameters] if many else prepared.values(first)
            )
        except Exception as error:  # a value its column's type refuses, as SQLAlchemy says it
            raise exc.StatementError(str(error), prepared.sql, parameters, error) from error
        if isinstance(driver, PsycopgRunner):
            try:
                description, rows, rowcount, lastrowid = await driver.run(
                    prepared.sql, values, many, statements.dialect, names=prepared.row is None
                )
            except exc.DBAPIError as error:
                if error.connection_invalidated:
                    await self.run_sync(lost, error)
                raise
        else:
            assert driver.inline is not None
            try:
                description, rows, rowcount, lastrowid = await driver.inline.run(
                    driver._connection._conn, prepared.sql, values, many
                )
            except sqlite3.Error as error:
                raise exc.DBAPIError.instance(
                    prepared.sql, values, error, sqlite3.Error, dialect=statements.dialect
                ) from error
        key = None
        if prepared.key is not None and not many:
            given = first.get(prepared.key)
            key = (given if given is not None else lastrowid,)
        if description is None:
            return DirectResult([], rowcount, (), lastrowid, key)
        make, results = prepared.row, prepared.results
        if make is None:  # rows of a statement SQLAlchemy gave no result columns
            make, results = _row_type([d[0] for d in description]), ()
        if any(results):
            rows = [
                make(v if p is None else p(v) for v, p in zip(r, results, strict=True))
                for r in rows
            ]
        else:
            rows = [make(r) for r in rows]
        return DirectResult(rows, rowcount, make._fields, lastrowid, key)
