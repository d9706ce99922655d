"""The ``crud`` tool's config: the pydantic model, and the original system's shape.

A config names one application table and one operation, the model-facing
arguments (``args``: values written; ``filters``: equality conditions), and the
scope the framework injects. The rules that do not need the database are here;
the rules that do (the table and every column exist, types fit, the scope
column is present) are checked by :mod:`.tool` against the reflected schema.

Rows written for the original system (``table_name``, ``method``,
``field_map``, ``runtime_args_schema``) are normalized by
:func:`normalize_legacy` before validation, so they can be imported unchanged.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_]{0,62}$"
Identifier = Annotated[str, StringConstraints(pattern=IDENTIFIER)]
OrderKey = Annotated[str, StringConstraints(pattern=r"^-?[A-Za-z_][A-Za-z0-9_]{0,62}$")]

ArgType = Literal[
    "string", "integer", "number", "boolean", "date", "datetime", "json", "uuid", "auto"
]
Operation = Literal["create", "read", "update", "delete", "upsert"]
Scalar = str | int | float | bool | None

MAX_SEPARATOR = 100

LEGACY_TYPES: dict[str, ArgType] = {
    "str": "string",
    "int": "integer",
    "float": "number",
    "bool": "boolean",
    "dict": "json",
    "list": "json",
}
LEGACY_METHODS = {"create": "create", "fetch": "read", "update": "update", "delete": "delete"}


class ArgSpec(BaseModel):
    """One model-facing argument and the column it maps to."""

    model_config = ConfigDict(extra="forbid")

    column: Identifier | None = None
    """The column; defaults to the argument's own name."""
    type: ArgType = "string"
    """``auto`` takes the column's type (used for untyped legacy arguments)."""
    required: bool = False
    description: str = ""
    enum: list[str | int] | None = Field(None, min_length=1)


class Scope(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_column: Identifier | None = "user_id"
    """Set to the caller's user id in every write and every WHERE; null = unscoped."""
    agent_column: Identifier | None = None
    """Set to the agent's name in every write and every WHERE, when given."""

    @model_validator(mode="after")
    def _distinct(self) -> Scope:
        user, agent = self.user_column, self.agent_column
        # SQLite's column names are case-insensitive: ``User_Id`` is ``user_id`` there.
        if user and agent and user.casefold() == agent.casefold():
            raise ValueError(
                f"user_column and agent_column name the same column {user!r}: the agent's "
                "name would take the place of the user's id in every statement, and every "
                "user of the agent would share one set of rows; give agent_column a "
                "column of its own, or leave it out"
            )
        return self

    def columns(self) -> list[str]:
        return [c for c in (self.user_column, self.agent_column) if c]


class CrudConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    table: Identifier
    operation: Operation
    args: dict[Identifier, ArgSpec] = Field(default_factory=dict)
    filters: dict[Identifier, ArgSpec] = Field(default_factory=dict)
    scope: Scope = Field(default_factory=Scope)
    defaults: dict[Identifier, Scalar] = Field(default_factory=dict)
    returning: list[Identifier] | None = None
    order_by: OrderKey | list[OrderKey] | None = None
    limit: int = Field(25, ge=1, le=500)
    append: dict[Identifier, str] = Field(default_factory=dict)
    """update and upsert: text columns (of args) whose value is added to the end of the
    stored text, after the separator given, instead of replacing it.

    The database adds it in the write's own statement, so two calls at once both
    keep their text (a model that reads the text, adds to it and writes it all
    back loses one of them).
    """
    conflict: list[Identifier] | None = None
    """upsert only: the unique columns that find the row to update (default: the scope).

    They must include every scope column: a target without the user column (``id``,
    say) would find another user's row, and the upsert would overwrite it.
    """

    @model_validator(mode="before")
    @classmethod
    def _legacy(cls, data: Any) -> Any:
        if (
            isinstance(data, dict)
            and "table" not in data
            and ("table_name" in data or "method" in data)
        ):
            return normalize_legacy(data)
        return data

    @field_validator("append")
    @classmethod
    def _separators(cls, append: dict[str, str]) -> dict[str, str]:
        for column, separator in append.items():
            if "\x00" in separator:
                raise ValueError(
                    f"the separator for {column!r} holds a NUL character, which no text "
                    "column can store; use another (a newline, say)"
                )
            if len(separator) > MAX_SEPARATOR:
                raise ValueError(
                    f"the separator for {column!r} is {len(separator)} characters long; "
                    f"at most {MAX_SEPARATOR} are allowed"
                )
        return append

    @field_validator("conflict")
    @classmethod
    def _conflict_within_scope(
        cls, conflict: list[str] | None, info: ValidationInfo
    ) -> list[str] | None:
        scope = info.data.get("scope")
        if conflict is None or not isinstance(scope, Scope):
            return conflict  # the default target is the scope; a bad scope is reported already
        missing = [c for c in scope.columns() if c not in conflict]
        if missing:
            names = ", ".join(repr(c) for c in missing)
            raise ValueError(
                f"must include the scope column(s) {names}: without them the conflict "
                "can find another user's row and the upsert would overwrite it; add "
                "them (the table needs a unique constraint over all these columns)"
            )
        return conflict

    @model_validator(mode="after")
    def _rules(self) -> CrudConfig:
        op = self.operation
        a = "an" if op in {"update", "upsert"} else "a"
        if op in {"create", "update", "upsert"} and not self.args:
            raise ValueError(
                f"{a} {op} tool needs at least one entry in args (the values it writes)"
            )
        if op in {"read", "delete"} and self.args:
            raise ValueError(f"{a} {op} tool writes nothing: move args to filters")
        if op in {"create", "upsert"} and self.filters:
            raise ValueError(f"{a} {op} tool takes no filters")
        if op in {"update", "delete"} and not any(f.required for f in self.filters.values()):
            raise ValueError(
                f"{a} {op} tool needs at least one required filter, so it can never touch "
                "every row in scope"
            )
        both = sorted(set(self.args) & set(self.filters))
        if both:
            raise ValueError(f"names used in both args and filters: {', '.join(both)}")
        scoped = set(self.scope.columns())
        for group, specs in (("args", self.args), ("filters", self.filters)):
            for name, spec in specs.items():
                if (spec.column or name) in scoped:
                    raise ValueError(
                        f"{group}.{name} maps to scope column {spec.column or name!r}; the "
                        "framework sets it, the model never does"
                    )
        for name in self.defaults:
            if name in scoped:
                raise ValueError(f"defaults.{name} is a scope column; the framework sets it")
        if self.append:
            if op not in {"update", "upsert"}:
                raise ValueError(
                    f"append is for update and upsert tools: {a} {op} tool "
                    + ("makes a new row each time" if op == "create" else "writes no text")
                )
            written = {spec.column or name for name, spec in self.args.items()}
            for column in self.append:
                if column in (self.conflict or []):
                    raise ValueError(
                        f"append.{column}: {column!r} is a conflict column, which finds the "
                        "row; it cannot be appended to"
                    )
                if column not in written:
                    raise ValueError(
                        f"append.{column}: {column!r} is not the column of any entry in "
                        "args; name the column an argument writes"
                    )
        if self.conflict is not None and op != "upsert":
            raise ValueError("conflict is for upsert tools only")
        if op == "upsert" and not (self.conflict or scoped):
            raise ValueError("an upsert tool needs conflict columns (or a scope)")
        return self

    def appending(self) -> list[str]:
        """The names of the args whose text is appended."""
        return [n for n, spec in self.args.items() if (spec.column or n) in self.append]

    def column(self, name: str) -> str:
        spec = self.args.get(name) or self.filters[name]
        return spec.column or name

    def order(self) -> list[tuple[str, bool]]:
        keys = [self.order_by] if isinstance(self.order_by, str) else self.order_by or []
        return [(k.lstrip("-"), k.startswith("-")) for k in keys]


def _legacy_schema(raw: Any) -> dict[str, Any]:
    default = {"data": {"type": "dict"}, "filters": {"type": "dict"}}
    if raw is None:
        return default
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            return default  # what the original did with malformed JSON
    return raw if isinstance(raw, dict) else default


def _legacy_arg(spec: Any, column: str) -> dict[str, Any]:
    spec = spec if isinstance(spec, dict) else {}
    arg: dict[str, Any] = {
        "type": LEGACY_TYPES.get(str(spec.get("type")), "auto"),
        "required": spec.get("optional", True) is False,
        "description": str(spec.get("description") or ""),
    }
    if column:
        arg["column"] = column
    return arg


def normalize_legacy(data: dict[str, Any]) -> dict[str, Any]:
    """The original system's CRUDTool config in this tool's shape.

    ``table_name`` -> ``table``; ``method`` (fetch -> read); the properties of
    ``runtime_args_schema.data`` through ``field_map`` -> ``args`` (without
    properties, the keys of ``field_map``); the properties of
    ``runtime_args_schema.filters`` -> ``filters`` (update and delete get a
    required ``id`` when none is declared, as the original demanded); scope
    ``user_id``. Unknown methods are kept, so validation reports them.
    """
    method = data.get("method")
    if method not in LEGACY_METHODS:
        raise ValueError(
            f"method {method!r} is not one of {', '.join(LEGACY_METHODS)} "
            "(the original system's CRUDTool methods)"
        )
    operation = LEGACY_METHODS[method]
    normalized: dict[str, Any] = {
        "table": data.get("table_name"),
        "operation": operation,
        "scope": {"user_column": "user_id"},
    }
    if operation == "read":
        normalized["order_by"] = "-updated_at"
    raw_map = data.get("field_map")
    field_map: dict[str, Any] = raw_map if isinstance(raw_map, dict) else {}
    schema = _legacy_schema(data.get("runtime_args_schema"))
    data_schema = schema.get("data")
    data_props = data_schema.get("properties") if isinstance(data_schema, dict) else None
    args: dict[str, Any] = {}
    if isinstance(data_props, dict) and data_props:
        for key, spec in data_props.items():
            args[key] = _legacy_arg(spec, str(field_map.get(key, key)))
    else:
        for key, column in field_map.items():
            args[key] = _legacy_arg({}, str(column))
    filter_schema = schema.get("filters")
    filter_props = filter_schema.get("properties") if isinstance(filter_schema, dict) else None
    filters: dict[str, Any] = {}
    if isinstance(filter_props, dict):
        for key, spec in filter_props.items():
            filters[key] = _legacy_arg(spec, key)
    if operation in {"update", "delete"}:
        filters.setdefault("id", {"type": "auto"})
        filters["id"]["required"] = True
    if operation in {"read", "update", "delete"}:
        normalized["filters"] = filters
    if operation in {"create", "update"}:
        normalized["args"] = args
    return normalized
