"""Row images: rows as the JSON-ready values previews and the audit log keep, and back.

A preview shows rows as a client reads them, and the audit log keeps the same
images so that undo can compare a row with what a write left and put back what
was there before. Both directions live here so that they stay each other's
inverse: :func:`image` turns a row read from the database into JSON-ready
values (the crud tool's :func:`~chatwright.plugins.crud.tool.to_json`
conventions, then :func:`~chatwright.history.storable_value`, exactly as
:mod:`.audit` stores them), and :func:`bindable` turns an image's value back
into what the column takes.

Images are exact for text without NUL, integers, booleans, dates and times,
UUIDs, JSON, and floats (NaN and infinity are kept as their names). A binary
value is kept as its size only, so a row holding one cannot be put back (undo
says so), and a decimal is kept as a JSON number (a float past 15 significant
digits). What is written is checked first (:func:`check_writable`): NUL
characters and non-finite numbers are refused by name on every database,
since neither PostgreSQL nor the audit log could keep them.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
import uuid
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from chatwright.errors import InvalidInputError
from chatwright.history import MAX_DEPTH, storable_value

DEEPEST = MAX_DEPTH - 5
"""How deeply a written value may nest: deeper, a pending action's preview (where a
column's value sits four levels down) would keep it as text, not as structure."""


def _default(value: Any) -> Any:
    from chatwright.plugins.crud.tool import to_json

    try:
        return to_json(value)
    except TypeError:
        # A type the crud tool never returns (an interval, a network address):
        # shown as the database's text, and compared the same way on both sides.
        return str(value)


def json_ready(value: Any) -> Any:
    """``value`` as JSON-ready data, the way the audit log stores it."""
    try:
        text = json.dumps(value, default=_default)
        return storable_value(json.loads(text))
    except RecursionError:
        raise InvalidInputError(
            "a value is nested too deeply to be shown or kept in the audit log"
        ) from None
    except ValueError as error:
        # An integer of more digits than Python converts to text: refused, not cut.
        raise InvalidInputError(
            f"a value cannot be shown or kept in the audit log: {error}"
        ) from None


def image(row: Mapping[str, Any]) -> dict[str, Any]:
    """A whole row (column -> database value) as JSON-ready values."""
    shown = {}
    for name, value in row.items():
        try:
            shown[str(name)] = json_ready(value)
        except InvalidInputError as error:
            raise InvalidInputError(f"column {name!r}: {error}") from None
    return shown


def key_of(table: sa.Table, row: Mapping[str, Any]) -> dict[str, Any]:
    """The primary key values of a row (JSON-ready); empty when the table has no key."""
    return {c.name: json_ready(row[c.name]) for c in table.primary_key.columns if c.name in row}


def row_id(key: Mapping[str, Any]) -> Any:
    """What the audit log's ``row_ids`` holds for a key: a one-column key as its bare value."""
    if len(key) == 1:
        return next(iter(key.values()))
    return dict(key)


def binary(column: sa.Column[Any]) -> bool:
    return isinstance(column.type, sa.LargeBinary | sa.BINARY | sa.VARBINARY)


def bindable(column: sa.Column[Any], value: Any) -> Any:
    """An image's value as the column takes it again (the inverse of :func:`json_ready`).

    :raises InvalidInputError: the image cannot give the value back (binary data).
    """
    if value is None:
        return None
    kind = column.type
    if binary(column):
        raise InvalidInputError(
            f"column {column.name!r} of {column.table.name!r} holds binary data, which the "
            "audit log keeps only as its size: the row cannot be put back"
        )
    try:
        if isinstance(kind, sa.DateTime) and isinstance(value, str):
            return dt.datetime.fromisoformat(value)
        if isinstance(kind, sa.Date) and isinstance(value, str):
            return dt.date.fromisoformat(value)
        if isinstance(kind, sa.Time) and isinstance(value, str):
            return dt.time.fromisoformat(value)
        if isinstance(kind, sa.Uuid) and kind.as_uuid and isinstance(value, str):
            return uuid.UUID(value)
        if isinstance(kind, sa.Float) or (isinstance(kind, sa.Numeric) and not kind.asdecimal):
            return float(value) if isinstance(value, int | float | str) else value
        if isinstance(kind, sa.Numeric) and isinstance(value, int | float | str):
            return decimal.Decimal(str(value))
    except (ValueError, decimal.InvalidOperation):
        raise InvalidInputError(
            f"the audit log's value for column {column.name!r} of {column.table.name!r} "
            f"is not of the column's type: {value!r}"
        ) from None
    return value


def check_writable(table: str, values: Mapping[str, Any]) -> None:
    """Refuse values no database and no audit entry can hold as they are.

    A NUL character (PostgreSQL text and JSON refuse it; SQLite would keep it
    where the audit log cannot), a non-finite number (SQLite stores NaN as
    NULL, JSON cannot spell it), a value nested deeper than the audit log keeps
    as structure, or one JSON cannot spell at all (an integer of thousands of
    digits).
    """
    for name, value in values.items():
        fault = _fault(value, 0)
        if fault is None:
            try:
                json_ready(value)
            except InvalidInputError:
                fault = "cannot be kept in the audit log (an integer of too many digits?)"
        if fault:
            raise InvalidInputError(f"the value for column {name!r} of {table!r} {fault}")


def _fault(value: Any, depth: int) -> str | None:
    if isinstance(value, str):
        return (
            "holds a NUL character, which cannot be stored; remove it" if "\x00" in value else None
        )
    if isinstance(value, float) and not math.isfinite(value):
        return f"is {value}, which cannot be stored everywhere; give a finite number or null"
    if isinstance(value, decimal.Decimal) and not value.is_finite():
        return f"is {value}, which cannot be stored everywhere; give a finite number or null"
    if depth > DEEPEST:
        return f"is nested more than {DEEPEST} levels deep, which cannot be kept; flatten it"
    if isinstance(value, Mapping):
        for k, v in value.items():
            fault = _fault(k, depth + 1) or _fault(v, depth + 1)
            if fault:
                return fault
    elif isinstance(value, list | tuple):
        for item in value:
            fault = _fault(item, depth + 1)
            if fault:
                return fault
    return None
