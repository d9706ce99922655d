"""Rows of the framework tables turned into the dataclasses of :mod:`chatwright.stores`.

One mapper serves every store: each field of the dataclass is read from the
column of the same name, through the conversion named for that field, if any.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa

from chatwright.stores import InvalidJSON

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

    Model = TypeVar("Model", bound=DataclassInstance)
else:
    Model = TypeVar("Model")


def now() -> datetime:
    return datetime.now(UTC)


def message_content(value: Any) -> Any:
    """A message's content as stored; one whose JSON does not parse is still shown as such."""
    if isinstance(value, InvalidJSON):
        return {"type": "invalid", "text": value.text, "error": value.error}
    return value


def _metadata(value: Any) -> Any:
    return value if isinstance(value, Mapping) else {}


# By field name; the same name means the same thing in every table.
CONVERSIONS: Mapping[str, Callable[[Any], Any]] = {
    "is_active": bool,
    "metadata": _metadata,
    "content": message_content,
}


@functools.cache
def _reading(model: type[Any]) -> tuple[tuple[str, Callable[[Any], Any] | None], ...]:
    """Each field of ``model`` and its conversion: worked out once per model, not per row."""
    return tuple((f.name, CONVERSIONS.get(f.name)) for f in dataclasses.fields(model))


def from_row(model: type[Model], row: sa.Row[Any]) -> Model:
    """The ``model`` dataclass with each field read from the row's column of that name."""
    return from_mapping(model, row._mapping)


def from_mapping(model: type[Model], columns: Mapping[Any, Any]) -> Model:
    """:func:`from_row` of columns given by name."""
    values = {}
    for name, convert in _reading(model):
        value = columns[name]
        values[name] = convert(value) if convert else value
    return model(**values)
