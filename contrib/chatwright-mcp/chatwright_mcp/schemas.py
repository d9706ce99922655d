"""A model's arguments, checked against an MCP server's input schema within bounds.

The schema comes from the server and the arguments from the model; neither
can be trusted to be cheap to check, and the check must not stall the
runtime's event loop (every other turn waits on it) or outlive the turn.

- Keywords that run regular expressions are not checked: ``pattern``,
  ``patternProperties``, and ``additionalProperties`` or
  ``unevaluatedProperties`` where patterns decide which properties they
  cover. Python's ``re`` holds the GIL for the whole of a match, so a pattern
  that backtracks catastrophically (``^(a+)+$`` on 30 characters) stops every
  thread of the process, the event loop's included, for seconds or for
  ever; neither a thread nor a time limit can interrupt it. The server
  checks its own input against its own patterns.
- The rest of the check runs in a worker thread, so the event loop goes on
  serving other turns meanwhile, and stops at the next keyword it evaluates
  once :data:`CHECK_SECONDS` have passed or the call was cancelled (the
  turn's time limit): a schema that nests or refers to itself deeply, or
  arguments that are costly to compare, cannot keep a thread busy after the
  call is over. ``uniqueItems`` is checked in linear time for the same reason.

A schema the check cannot get through (it refers to itself without end, it
ran out of time) raises :class:`UncheckedArguments`; the call is then not
sent. A schema that is not valid JSON Schema is the server's affair: the
arguments go to the server unchecked, and it checks them.
"""

from __future__ import annotations

import asyncio
import importlib
import itertools
import reprlib
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from chatwright.errors import one_line

CHECK_SECONDS = 2.0
"""The longest a check of one call's arguments may take."""
MAX_PROBLEMS = 5
"""How many of the arguments' problems the model is told."""

# Each worker thread's current check: when it must stop.
_limits = threading.local()


class UncheckedArguments(Exception):
    """The arguments could not be checked against the schema; the message says why."""


class _Stopped(Exception):
    """The check ran out of time, or its call was cancelled."""


def _keep_going() -> None:
    if time.monotonic() > _limits.deadline or _limits.stop.is_set():
        raise _Stopped


def _bounded(check: Callable[..., Any]) -> Callable[..., Iterator[Any]]:
    """A jsonschema keyword function that first checks the time left."""

    def bounded(validator: Any, value: Any, instance: Any, schema: Any) -> Iterator[Any]:
        _keep_going()
        yield from check(validator, value, instance, schema) or ()

    return bounded


def _skipped(validator: Any, value: Any, instance: Any, schema: Any) -> Iterator[Any]:
    return iter(())


def _equality_key(value: Any) -> Any:
    """A hashable key that is equal for values JSON Schema counts equal (1 and 1.0; not
    true and 1; objects whatever the order of their keys)."""
    if isinstance(value, bool) or value is None:
        return ("literal", value)
    if isinstance(value, int | float):
        return ("number", value)
    if isinstance(value, str):
        return ("string", value)
    if isinstance(value, list | tuple):
        return ("array", tuple(_equality_key(v) for v in value))
    if isinstance(value, Mapping):
        return ("object", frozenset((k, _equality_key(v)) for k, v in value.items()))
    return ("other", repr(value))


def _validator_class() -> Any:
    # jsonschema has no type information of its own (an MCP SDK dependency).
    jsonschema: Any = importlib.import_module("jsonschema")
    base = jsonschema.Draft202012Validator
    error = jsonschema.exceptions.ValidationError

    def unique_items(validator: Any, unique: Any, instance: Any, schema: Any) -> Iterator[Any]:
        if not unique or not validator.is_type(instance, "array"):
            return
        seen: set[Any] = set()
        for index, item in enumerate(instance):
            if index % 256 == 0:
                _keep_going()
            key = _equality_key(item)
            if key in seen:
                yield error(f"{reprlib.repr(instance)} has non-unique elements")
                return
            seen.add(key)

    keywords = base.VALIDATORS
    additional = keywords["additionalProperties"]
    unevaluated = keywords["unevaluatedProperties"]

    def additional_properties(
        validator: Any, value: Any, instance: Any, schema: Any
    ) -> Iterator[Any]:
        if "patternProperties" in schema:
            return  # which properties are additional is for its patterns to say
        yield from additional(validator, value, instance, schema) or ()

    def unevaluated_properties(
        validator: Any, value: Any, instance: Any, schema: Any
    ) -> Iterator[Any]:
        if _limits.patterns:
            return  # which properties were evaluated is, somewhere, for patterns to say
        yield from unevaluated(validator, value, instance, schema) or ()

    replaced = {name: _bounded(check) for name, check in keywords.items()}
    replaced.update(
        {
            "pattern": _skipped,
            "patternProperties": _skipped,
            "additionalProperties": _bounded(additional_properties),
            "unevaluatedProperties": _bounded(unevaluated_properties),
            "uniqueItems": _bounded(unique_items),
        }
    )
    return jsonschema.validators.extend(base, replaced)


_VALIDATOR: Any = None


def _problems(schema: dict[str, Any], arguments: dict[str, Any]) -> list[str]:
    """The arguments' problems (none: they fit); in a worker thread."""
    global _VALIDATOR
    if _VALIDATOR is None:
        _VALIDATOR = _validator_class()
    jsonschema: Any = importlib.import_module("jsonschema")
    referencing: Any = importlib.import_module("referencing")
    _limits.patterns = "patternProperties" in repr(schema)
    try:
        found = list(itertools.islice(_VALIDATOR(schema).iter_errors(arguments), 50))
    except (jsonschema.exceptions.SchemaError, referencing.exceptions.Unresolvable):
        # Not valid JSON Schema, or it refers to a schema elsewhere: the server's schema
        # is its own affair, and the server checks its input.
        return []
    found.sort(key=lambda e: [str(p) for p in e.path])
    return [
        f"{'.'.join(str(p) for p in e.path) or 'arguments'}: {e.message[:200]}"
        for e in found[:MAX_PROBLEMS]
    ]


def _check_in_thread(
    schema: dict[str, Any], arguments: dict[str, Any], stop: threading.Event
) -> list[str]:
    _limits.deadline = time.monotonic() + CHECK_SECONDS
    _limits.stop = stop
    try:
        return _problems(schema, arguments)
    except _Stopped:
        raise UncheckedArguments(
            "cancelled" if stop.is_set() else f"it took longer than {CHECK_SECONDS:g} s"
        ) from None
    except RecursionError:
        raise UncheckedArguments("the schema refers to itself, or nests, too deeply") from None
    except Exception as exc:
        raise UncheckedArguments(f"the check failed: {one_line(exc)[:200]}") from None


async def check_arguments(schema: dict[str, Any], arguments: dict[str, Any]) -> list[str]:
    """The arguments' problems against the schema, each as ``path: what is wrong``.

    Raises :class:`UncheckedArguments` when they cannot be checked.
    """
    stop = threading.Event()
    try:
        return await asyncio.get_running_loop().run_in_executor(
            None, _check_in_thread, schema, arguments, stop
        )
    finally:
        stop.set()  # a cancelled call stops its check at the next keyword
