"""A record store's method run again on an application table changed under it.

The record store (:mod:`.records`) reflects an application's table once and
keeps the reflection. A table changed while chatwright runs (``ALTER TABLE``,
``DROP TABLE``) makes a statement built from the old reflection fail. A method
decorated with :func:`fresh_tables` then forgets the reflection of its tables
and runs once more, on the tables as they are now: its transaction was rolled
back with the failed statement, so nothing it did is repeated, and it answers
as a process that never saw the old table would (a dropped table: 404 naming
it). Any other failure, and a second failure, goes on unchanged.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, ParamSpec, TypeVar

from sqlalchemy import exc

from chatwright.errors import StorageError
from chatwright.plugins.sql.errors import driver_text


def stale_schema(error: BaseException) -> bool:
    """Whether a statement failed because a table or a column it names is gone: the
    table changed since it was reflected (``ALTER TABLE``, ``DROP TABLE``)."""
    cause = error.__cause__ if isinstance(error, StorageError) else error
    if not isinstance(cause, exc.DBAPIError):
        return False
    if getattr(cause.orig, "sqlstate", None) in {"42P01", "42703"}:  # undefined table, column
        return True
    reason = driver_text(cause)
    return (
        reason.startswith(("no such table", "no such column")) or " has no column named " in reason
    )


P = ParamSpec("P")
R = TypeVar("R")


def fresh_tables(
    names: Callable[..., Iterable[str | None]],
) -> Callable[[Callable[P, Coroutine[Any, Any, R]]], Callable[P, Coroutine[Any, Any, R]]]:
    """A record store method run again, once, on the tables as they are now, when its
    statement found one of them changed since it was reflected (:func:`stale_schema`):
    its transaction was rolled back, so the second run starts afresh, and gives what a
    process that never saw the old table gives (the table gone: 404 naming it).

    :param names: the method's table names, from its arguments (without ``self``).
    """

    def wrap(method: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]:
        @functools.wraps(method)
        async def run(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return await method(*args, **kwargs)
            except StorageError as error:
                if not stale_schema(error):
                    raise
            store = args[0]
            for name in names(*args[1:], **kwargs):
                store._tables.pop(name, None)  # type: ignore[attr-defined]
            return await method(*args, **kwargs)

        return run

    return wrap


def table_arg(user_id: Any, table: Any = None, *args: Any, **kwargs: Any) -> list[str | None]:
    return [kwargs.get("table", table)]


def write_arg(user_id: Any, write: Any = None, *args: Any, **kwargs: Any) -> list[str | None]:
    return [getattr(kwargs.get("write", write), "table", None)]


def entries_arg(user_id: Any, entries: Any = (), *args: Any, **kwargs: Any) -> list[str | None]:
    return [getattr(e, "table", None) for e in kwargs.get("entries", entries)]
