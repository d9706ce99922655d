"""Building and running ``crud`` tools.

:func:`build` checks a validated :class:`~.config.CrudConfig` against the live
table and returns a LangChain ``StructuredTool`` whose argument schema holds
only the config's ``args`` and ``filters`` (``extra="forbid"``: a model that
passes ``user_id``, a scope column or any unknown key gets a readable error
back and the turn goes on). At run time the scope columns are added to every
written row and every WHERE clause, and the statement goes through the
storage's :class:`~chatwright.stores.RecordStore`, which binds every value.
A write goes through the store's ``apply``, which keeps the rows' before- and
after-images and appends the call's audit entry in the write's transaction; a
tool also previews a call (``metadata["chatwright_preview"]``) for approval.

Longer than 450 lines because the configuration's checks against the live
table and the calls they allow are one concept, read together.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Mapping
from dataclasses import replace
from typing import Annotated, Any, Literal

from langchain_core.tools import BaseTool, ToolException
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, FiniteFloat, create_model
from pydantic_core import PydanticCustomError

from chatwright.approvals import (
    Preview,
    Write,
    compact_json,
    current_decision,
    json_default,
    unwritten,
    write_entry,
)
from chatwright.errors import InvalidInputError, NotFoundError, StorageError
from chatwright.plugins.crud.config import ArgSpec, CrudConfig
from chatwright.plugins.crud.settings import CrudSettings
from chatwright.stores import ColumnInfo, TableInfo, ToolRow, is_framework_table
from chatwright.tools import (
    ConfigProblem,
    StrictTool,
    ToolConfigError,
    ToolContext,
    invalid_arguments,
)

# Which column kinds each argument type may be written to or compared with.
COMPATIBLE: dict[str, set[str]] = {
    # A text argument on a uuid column takes the text of a UUID (the original
    # system's rows declare their uuid keys as "str").
    "string": {"string", "other", "uuid"},
    "integer": {"integer", "number"},
    "number": {"number"},
    "boolean": {"boolean"},
    "date": {"date"},
    "datetime": {"datetime"},
    "json": {"json"},
    "uuid": {"uuid", "string"},
}


def not_a_boolean(expected: str) -> BeforeValidator:
    """Refuse true and false where ``expected`` (a number) is wanted.

    Pydantic reads them as 1 and 0 (``bool`` is an ``int`` in Python), so
    ``{"id": true}`` would find row 1 of the user's table: a model that sent a
    boolean meant something else, and is told so by the argument's name.
    """

    def check(value: Any) -> Any:
        if isinstance(value, bool):
            raise PydanticCustomError(
                "number_not_boolean",
                "Input should be {expected}, not {value}",
                {"expected": expected, "value": "true" if value else "false"},
            )
        return value

    return BeforeValidator(check)


PYTHON_TYPES: dict[str, Any] = {
    "string": str,
    # Numbers given as text ("3") are still read as numbers; true and false are not
    # (see not_a_boolean), nor NaN and infinity, which JSON cannot hold.
    "integer": Annotated[int, not_a_boolean("a valid integer")],
    "number": Annotated[FiniteFloat, not_a_boolean("a valid number")],
    "boolean": bool,
    "date": dt.date,
    "datetime": dt.datetime,
    "json": Any,
    "uuid": uuid.UUID,
}
MAX_STRING = 10_000


# A result's values as the audit log and the errors show them (chatwright.approvals).
to_json = json_default
dumps = compact_json


def capped(data: dict[str, Any], limit: int) -> str:
    """Compact JSON no longer than ``limit``: rows are dropped from the end if needed."""
    text = dumps(data)
    rows = data.get("rows")
    if len(text) <= limit:
        return text
    for key in ("created", "saved"):
        if isinstance(data.get(key), dict):
            # The row is written: say so, or a model would retry and write it twice.
            row = data[key]
            short = {k: row[k] for k in ("id",) if k in row}
            return dumps(
                {
                    key: short,
                    "note": f"done; the full row ({len(text)} characters) is too long to show",
                }
            )
    if not isinstance(rows, list):
        return _too_large(len(text))
    total = len(rows)
    while rows and len(text) > limit:
        rows = rows[: len(rows) // 2] if len(rows) > 1 else []
        text = dumps(
            {
                **data,
                "rows": rows,
                "truncated": f"showing {len(rows)} of {total} rows; narrow the filters",
            }
        )
    return text if len(text) <= limit else _too_large(len(text))


def _too_large(size: int) -> str:
    return dumps({"error": f"result too large ({size} characters); narrow the request"})


class CrudToolType:
    """The ``crud`` tool type (also registered as ``CRUDTool``, the original's name)."""

    @property
    def config_model(self) -> type[BaseModel]:
        return CrudConfig

    async def build(self, row: ToolRow, config: Any, context: ToolContext) -> BaseTool:
        assert isinstance(config, CrudConfig)
        table = await self._check(config, context)
        return CrudTool(row, config, table, context).as_tool()

    async def _check(self, config: CrudConfig, context: ToolContext) -> TableInfo:
        # The record store refuses these tables too; checked here as well so that the
        # refusal is a problem of the row at load, not an error of its first call.
        if is_framework_table(config.table):
            raise ToolConfigError(
                [
                    ConfigProblem(
                        "config.table",
                        f"{config.table!r} is a chatwright table; tools may not use it",
                    )
                ]
            )
        table = await context.describe(config.table)
        if table is None:
            raise ToolConfigError(
                [
                    ConfigProblem(
                        "config.table", f"table {config.table!r} does not exist in the database"
                    )
                ]
            )
        problems: list[ConfigProblem] = []
        cols = table.columns

        def need(path: str, column: str) -> ColumnInfo | None:
            if column not in cols:
                problems.append(
                    ConfigProblem(path, f"table {table.name!r} has no column {column!r}")
                )
                return None
            return cols[column]

        scope = config.scope
        if scope.user_column is None:
            if config.table not in context.settings.section(CrudSettings).unscoped_tables:
                problems.append(
                    ConfigProblem(
                        "config.scope.user_column",
                        "is null, but table "
                        f"{config.table!r} is not in the setting tools.unscoped_tables; "
                        "scope it to a user column or allow the table explicitly",
                    )
                )
        else:
            need("config.scope.user_column", scope.user_column)
        if scope.agent_column is not None:
            need("config.scope.agent_column", scope.agent_column)
        for group, specs in (("args", config.args), ("filters", config.filters)):
            for name, spec in specs.items():
                path = f"config.{group}.{name}"
                column = need(f"{path}.column" if spec.column else path, spec.column or name)
                if (
                    column is not None
                    and spec.type != "auto"
                    and column.kind not in COMPATIBLE[spec.type]
                ):
                    problems.append(
                        ConfigProblem(
                            f"{path}.type",
                            f"{spec.type!r} does not fit column {column.name!r} "
                            f"of type {column.kind!r}",
                        )
                    )
        if config.operation in {"update", "upsert"}:
            # A row's key is how its preview, its audit entry and an undo find it again.
            finding = (
                set(config.conflict or scope.columns()) if config.operation == "upsert" else set()
            )
            for name, spec in config.args.items():
                found = cols.get(spec.column or name)
                if found is not None and found.primary_key and found.name not in finding:
                    problems.append(
                        ConfigProblem(
                            f"config.args.{name}",
                            f"writes column {found.name!r}, the primary key of {table.name!r}, "
                            f"which {'an update' if config.operation == 'update' else 'an upsert'} "
                            "does not change (previews, the audit log and undo find rows by "
                            "it); leave it out",
                        )
                    )
        for column_name in config.append:
            found = cols.get(column_name)
            if found is not None and found.kind != "string":
                problems.append(
                    ConfigProblem(
                        f"config.append.{column_name}",
                        f"column {column_name!r} of {table.name!r} is of type {found.kind!r}; "
                        "only text columns can be appended to",
                    )
                )
        for name in config.appending():
            if config.args[name].type not in {"string", "auto"}:
                problems.append(
                    ConfigProblem(
                        f"config.args.{name}.type",
                        f"is {config.args[name].type!r}, but its column is appended to; "
                        "appended args take text: use 'string'",
                    )
                )
        for name in config.defaults:
            need(f"config.defaults.{name}", name)
        for i, name in enumerate(config.returning or []):
            need(f"config.returning[{i}]", name)
        for i, (name, _) in enumerate(config.order()):
            need("config.order_by" + (f"[{i}]" if isinstance(config.order_by, list) else ""), name)
        if config.operation == "create":
            written = {spec.column or n for n, spec in config.args.items()} | set(config.defaults)
            written |= set(scope.columns())
            for column in cols.values():
                if not (column.nullable or column.has_default or column.name in written):
                    problems.append(
                        ConfigProblem(
                            "config.args",
                            f"column {column.name!r} is NOT NULL without a default; "
                            "add it to args or defaults",
                        )
                    )
        if config.operation == "upsert":
            conflict = frozenset(config.conflict or scope.columns())
            for name in conflict:
                need("config.conflict", name)
            if conflict <= set(cols) and conflict not in table.unique:
                problems.append(
                    ConfigProblem(
                        "config.conflict",
                        f"no unique constraint on ({', '.join(sorted(conflict))}) of "
                        f"{table.name!r}; upsert needs one to find the row",
                    )
                )
        if problems:
            raise ToolConfigError(problems)
        return table


class CrudTool:
    """One built tool: a config checked against one table, for one user and agent."""

    def __init__(
        self, row: ToolRow, config: CrudConfig, table: TableInfo, context: ToolContext
    ) -> None:
        self.row = row
        self.config = config
        self.table = table
        self.context = context
        scoped = set(config.scope.columns())
        default_back = [c for c in table.columns if c not in scoped]
        self.returning = list(config.returning or default_back)
        self.order = config.order() or self._default_order()

    def _default_order(self) -> list[tuple[str, bool]]:
        for name in ("updated_at", "created_at"):
            if name in self.table.columns:
                return [(name, True)]
        keys = [c.name for c in self.table.columns.values() if c.primary_key]
        return [(k, True) for k in keys]

    def _kind(self, spec: ArgSpec, name: str) -> str:
        kind = self.table.columns[spec.column or name].kind
        if spec.type == "string" and kind == "uuid":
            # Validated as a UUID, so a malformed one is the model's argument error.
            return "uuid"
        if spec.type != "auto":
            return spec.type
        return kind if kind in PYTHON_TYPES else "string"

    def args_model(self) -> type[BaseModel]:
        fields: dict[str, Any] = {}
        for group in (self.config.filters, self.config.args):
            for name, spec in group.items():
                kind = self._kind(spec, name)
                annotation: Any = Literal[tuple(spec.enum)] if spec.enum else PYTHON_TYPES[kind]
                if spec.enum and any(isinstance(v, int) for v in spec.enum):
                    # Literal[1] takes true as 1 too.
                    listed = " or ".join(json.dumps(v) for v in spec.enum)
                    annotation = Annotated[annotation, not_a_boolean(listed)]
                constraints: dict[str, Any] = {"description": spec.description or None}
                if kind == "string" and not spec.enum:
                    constraints["max_length"] = MAX_STRING
                if spec.required:
                    fields[name] = (annotation, Field(..., **constraints))
                else:
                    fields[name] = (annotation | None, Field(None, **constraints))
        return create_model(
            f"{self.row.name}_args",
            __config__=ConfigDict(extra="forbid"),
            **fields,
        )

    def description(self) -> str:
        if self.row.description:
            return self.row.description
        verbs = {
            "create": "Add a row to",
            "read": "List rows of",
            "update": "Change rows of",
            "delete": "Delete rows of",
            "upsert": "Save the row of",
        }
        return f"{verbs[self.config.operation]} {self.config.table}."

    def as_tool(self) -> BaseTool:
        return StrictTool.from_function(
            coroutine=self.run,
            name=self.row.name,
            description=self.description(),
            args_schema=self.args_model(),
            handle_tool_error=True,
            handle_validation_error=invalid_arguments,
            # What the tool does, for models that pick tools by rule (the offline model).
            metadata={
                "chatwright_crud": {
                    "table": self.config.table,
                    "operation": self.config.operation,
                    # Args whose text is added to what is stored, not written over it.
                    "append": self.config.appending(),
                },
                # Write safety (chatwright.approvals): whether the tool writes, and
                # how to show the rows a call would change before it runs.
                "chatwright_writes": self.config.operation != "read",
                "chatwright_preview": self.preview,
                # Its writes check the turn's lease in their own transaction.
                "chatwright_checks_held": True,
            },
        )

    def _scope(self) -> dict[str, Any]:
        if self.context.user_id is None:
            raise ToolException("this tool was built for checking only and cannot run")
        scope = self.config.scope
        values: dict[str, Any] = {}
        if scope.user_column:
            values[scope.user_column] = self._user_key(scope.user_column, self.context.user_id)
        if scope.agent_column:
            values[scope.agent_column] = self.context.agent_name
        return values

    def _user_key(self, column_name: str, user_id: str) -> Any:
        """The user id as the scope column holds it: a UUID for a uuid column."""
        column = self.table.columns.get(column_name)
        if column is None or column.kind != "uuid":
            return user_id
        try:
            key = uuid.UUID(user_id)
        except ValueError:
            key = None
        # Only the canonical text: Python also reads upper case, braces, "urn:uuid:" and
        # unhyphenated text as that UUID, and a subject spelled so would be another user's.
        if key is None or str(key) != user_id:
            raise ToolException(
                f"the rows of {self.config.table!r} belong to users by a UUID in column "
                f"{column_name!r}, and this user's id ({user_id[:80]!r}) is not one in its "
                "canonical form (lower-case 8-4-4-4-12 hex); only users with such ids can "
                "use this tool"
            ) from None
        return key

    def _bind(self, spec: ArgSpec, name: str, value: Any) -> Any:
        column = self.table.columns[spec.column or name]
        if isinstance(value, uuid.UUID) and column.kind != "uuid":
            return str(value)
        if isinstance(value, str) and column.kind == "uuid":
            try:
                return uuid.UUID(value)
            except ValueError:
                raise ToolException(
                    f"{name}: {value[:80]!r} is not a UUID (column {column.name!r} of "
                    f"{self.config.table!r} holds UUIDs)"
                ) from None
        return value

    def _write(self, kwargs: Mapping[str, Any]) -> tuple[Write, dict[str, Any]]:
        """The call's write (``write.values`` empty for an update that changes nothing)."""
        config = self.config
        scope = self._scope()
        # LangChain passes omitted optional arguments as None: they are not written,
        # so an update changes only what the model gave and defaults stay in force.
        values = {
            config.column(n): self._bind(config.args[n], n, v)
            for n, v in kwargs.items()
            if n in config.args and v is not None
        }
        where = {
            config.column(n): self._bind(config.filters[n], n, v)
            for n, v in kwargs.items()
            if n in config.filters and v is not None
        }
        # An optional appended arg the model left out is not written at all.
        append = {c: sep for c, sep in config.append.items() if c in values}
        op = config.operation
        if op in {"create", "upsert"}:
            # Validation already demands that an upsert's conflict target include the
            # scope; passing the scope as well makes the statement itself refuse to
            # update (or reassign) a row outside it, should a config get by.
            write = Write(
                table=config.table,
                operation=op,
                values={**config.defaults, **values, **scope},
                scope=scope,
                returning=self.returning,
                conflict=(config.conflict or list(scope)) if op == "upsert" else (),
                append=append,
            )
        else:
            write = Write(
                table=config.table,
                operation=op,
                values=values,
                where={**where, **scope},
                scope=scope,
                returning=self.returning,
                append=append,
            )
        return write, where

    async def preview(self, **kwargs: Any) -> Preview | None:
        """The rows this call would change, for the user of the turn; None for a read.

        Arguments are validated as for a call; a fault raises :class:`ToolException`.
        """
        if self.config.operation == "read":
            return None
        args = self.args_model().model_validate(kwargs).model_dump()
        write, where = self._write(args)
        self._check_write(write, where)
        cap = self.context.settings.tools.preview_rows
        try:
            return await self.context.storage.records.preview(
                str(self.context.user_id), write, cap=cap
            )
        except (InvalidInputError, NotFoundError, StorageError) as exc:
            raise ToolException(str(exc)) from None

    def _check_write(self, write: Write, where: Mapping[str, Any]) -> None:
        if write.operation == "update" and not write.values:
            names = ", ".join(self.config.args)
            raise ToolException(f"nothing to change: give at least one of {names}")

    async def run(self, **kwargs: Any) -> str:
        config = self.config
        write, where = self._write(kwargs)
        records = self.context.storage.records
        user = str(self.context.user_id)
        limit = self.context.settings.tools.max_result_chars
        try:
            if config.operation == "read":
                result = await self._read(records, user, write)
            else:
                self._check_write(write, where)
                result = await self._apply(records, user, write, kwargs)
        except (InvalidInputError, NotFoundError, StorageError) as exc:
            # The model reads the error and the turn goes on (it may tell the user
            # or try again); the database's own failures included.
            raise ToolException(str(exc)) from None
        return capped(result, limit)

    async def _read(self, records: Any, user: str, write: Write) -> dict[str, Any]:
        rows = await records.select(
            user,
            write.table,
            write.where,
            columns=self.returning,
            order_by=self.order,
            limit=self.config.limit,
        )
        return {"rows": rows, "count": len(rows)}

    async def _apply(
        self,
        records: Any,
        user: str,
        write: Write,
        kwargs: Mapping[str, Any],
    ) -> dict[str, Any]:
        """Run a write with its audit entry, in one transaction of the record store."""
        entry = write_entry(self.context, self.row, write.operation, write.table, kwargs)
        decision = current_decision()
        try:
            applied = await records.apply(
                user,
                write,
                expect=decision.expect,
                audit=entry,
                cap=self.context.settings.tools.preview_rows,
            )
        except (InvalidInputError, NotFoundError, StorageError) as exc:
            # A write that failed is on record too (in a transaction of its own).
            await self.context.storage.audit.record(replace(entry, outcome="error", error=str(exc)))
            raise
        op = write.operation
        if op in {"create", "upsert"}:
            if not applied.rows:
                raise InvalidInputError(unwritten(write))
            return {"saved" if op == "upsert" else "created": applied.rows[0]}
        if not applied.changes:
            # The same words whether the row is missing or someone else's.
            raise ToolException(unwritten(write))
        if op == "update":
            return {"updated": len(applied.rows), "rows": applied.rows}
        return {"deleted": len(applied.changes)}
