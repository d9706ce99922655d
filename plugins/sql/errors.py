"""Driver errors of the ``sql`` backend translated into chatwright's errors.

A refused row-level-security check or a value the database cannot hold is the
caller's mistake (:class:`InvalidInputError`); a missing table, a rejected
statement, an unreachable server, a full connection pool or a transaction
that took too long is the database's (:class:`StorageError`, answered 503),
with the database named and, when something can be done, what.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import exc

from chatwright.errors import InvalidInputError, StorageError


class DatabaseErrors:
    """Turns driver errors about reaching the database into :class:`StorageError`.

    :param description: how the database is named in messages (its URL
        without the password).
    """

    def __init__(self, description: str, statement_timeout: float = 0) -> None:
        self.description = description
        self.statement_timeout = statement_timeout

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, error: BaseException | None, tb: Any) -> None:
        where = f"database {self.description}"
        if isinstance(error, exc.TimeoutError):
            # The pool's own timeout (pool_timeout): every connection is in use.
            raise StorageError(
                f"{where} has no free connection (all in use for storage.pool_timeout); "
                "try again, or raise storage.pool_size or storage.max_overflow"
            ) from error
        if isinstance(error, TimeoutError):
            raise StorageError(
                f"{where} did not answer within {self.statement_timeout:g} s "
                "(storage.statement_timeout); try again later"
            ) from error
        sqlstate = getattr(getattr(error, "orig", None), "sqlstate", None)
        if isinstance(error, exc.ProgrammingError) and sqlstate == "42501":
            # insufficient_privilege: a row-level-security policy refused the row.
            raise InvalidInputError(
                "the database refused the change (not allowed for this user)"
            ) from error
        if isinstance(error, exc.DataError):
            # A value the database cannot hold (a NUL character, an integer out of range).
            reason = " ".join(str(error.orig).split()) if error.orig else str(error)
            raise InvalidInputError(f"the database refused a value: {reason}") from error
        if not isinstance(error, exc.OperationalError | exc.InterfaceError | exc.ProgrammingError):
            return
        reason = " ".join(str(error.orig).split()) if error.orig else str(error)
        if "no such table" in reason or ("relation" in reason and "does not exist" in reason):
            raise StorageError(
                f"{where} lacks a table ({reason}); run `chatwright db upgrade`"
            ) from error
        if isinstance(error, exc.ProgrammingError):
            raise StorageError(f"{where} rejected a statement: {reason}") from error
        raise StorageError(f"{where} is unavailable: {reason}") from error
