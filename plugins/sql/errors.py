"""Driver errors of the ``sql`` backend translated into chatwright's errors.

A refused row-level-security check or a value the database cannot hold is the
caller's mistake (:class:`InvalidInputError`); a missing table, a rejected
statement, an unreachable server, a full connection pool or a transaction
that took too long is the database's (:class:`StorageError`, answered 503).

What these errors say reaches the model, the API client and the terminal, so
it never holds the database's URL or file path, the SQL text or another row's
values: those go to the log (logger ``chatwright.plugins.sql.errors``) only.
"""

from __future__ import annotations

import logging
import re
from contextvars import ContextVar
from typing import Any

from sqlalchemy import exc

from chatwright.errors import InvalidInputError, StorageError, ToolNameTakenError

log = logging.getLogger(__name__)

# Where the details are, for the operator who reads a user's error.
DETAILS = "the server log has the details"


def driver_text(error: BaseException) -> str:
    """The driver's own message on one line (for the log, never for a user)."""
    orig = getattr(error, "orig", None)
    return " ".join(str(orig if orig is not None else error).split())


def locked(description: str | None = None) -> StorageError:
    """SQLite's write lock was held by another writer for longer than storage.busy_timeout.

    :param description: the database, to log (the driver's error is logged already
        when None).
    """
    if description is not None:
        log.warning("database %s: the write lock stayed taken past busy_timeout", description)
    return StorageError(
        "the database is locked by another writer (longer than storage.busy_timeout); try again"
    )


class RowsHeld(StorageError):
    """A statement waited too long for rows another transaction holds (PostgreSQL: its
    ``lock_timeout`` ran out, or it was chosen to end a deadlock), and nothing of its
    transaction was done. The sweeper's steps set a short ``lock_timeout`` of their own
    and take another way on it (see :data:`EXPECTED_WAITS`); anyone else gets a 503."""


EXPECTED_WAITS: ContextVar[bool] = ContextVar("chatwright_sql_expected_waits", default=False)
"""Set by a caller that expects :class:`RowsHeld` now and then and handles it (the
sweeper): it is then logged at debug level, not as a warning."""

_HELD = {"55P03", "40P01"}  # lock_not_available, deadlock_detected


def _damaged(reason: str) -> bool:
    # SQLite's words for a file that is not one of its databases, or a broken one.
    return reason.startswith(("file is not a database", "database disk image is malformed"))


def _statement_fault(reason: str) -> bool:
    # SQLite reports a statement that no longer fits the schema as an operational error.
    return reason.startswith(("no such column", "table ", "near ", "ambiguous column"))


LONE_SURROGATE = (
    "a value holds a lone surrogate (a half of a UTF-16 pair, such as \\ud800), which is "
    "not a character and cannot be stored; remove it"
)


class DatabaseErrors:
    """Turns driver errors about reaching the database into :class:`StorageError`.

    :param description: how the database is named in the log (its URL without
        the password); never in an error's message.
    """

    def __init__(self, description: str, statement_timeout: float = 0) -> None:
        self.description = description
        self.statement_timeout = statement_timeout

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, error: BaseException | None, tb: Any) -> None:
        if isinstance(error, exc.TimeoutError):
            # The pool's own timeout (pool_timeout): every connection is in use.
            log.warning("database %s: no free connection in the pool", self.description)
            raise StorageError(
                "the database has no free connection (all in use for storage.pool_timeout); "
                "try again, or raise storage.pool_size or storage.max_overflow"
            ) from error
        if isinstance(error, TimeoutError):
            log.warning(
                "database %s did not answer within %g s", self.description, self.statement_timeout
            )
            raise StorageError(
                f"the database did not answer within {self.statement_timeout:g} s "
                "(storage.statement_timeout); try again later"
            ) from error
        unencodable = error if isinstance(error, UnicodeEncodeError) else None
        if isinstance(getattr(error, "orig", None), UnicodeEncodeError):
            unencodable = error.orig  # type: ignore[union-attr]
        if unencodable is not None:
            bad = unencodable.object[unencodable.start : unencodable.end]
            if all(0xD800 <= ord(c) <= 0xDFFF for c in bad):
                # Not a character, so no database text can hold it. What callers
                # validate never gets here; a plugin's or an embedder's value may.
                raise InvalidInputError(LONE_SURROGATE) from error
            # A character the connection's encoding lacks: a database not in UTF-8.
            log.warning("database %s: %s", self.description, unencodable)
            raise StorageError(
                f"the database cannot hold a character of a value in its encoding "
                f"({unencodable.encoding}); chatwright needs a database in UTF-8 "
                "(CREATE DATABASE … ENCODING 'UTF8')"
            ) from error
        sqlstate = getattr(getattr(error, "orig", None), "sqlstate", None)
        if sqlstate in _HELD and error is not None:
            level = logging.DEBUG if EXPECTED_WAITS.get() else logging.WARNING
            log.log(level, "database %s: %s", self.description, driver_text(error))
            raise RowsHeld(
                "the database kept rows this request needs locked by another transaction "
                "for too long; try again"
            ) from error
        if isinstance(error, exc.ProgrammingError) and sqlstate == "42501":
            # insufficient_privilege: a row-level-security policy refused the row.
            raise InvalidInputError(
                "the database refused the change (not allowed for this user)"
            ) from error
        if isinstance(error, exc.DataError) and "surrogate" in driver_text(error):
            # PostgreSQL's jsonb refuses the escape of a lone surrogate.
            raise InvalidInputError(LONE_SURROGATE) from error
        if isinstance(error, exc.DataError):
            # A value the database cannot hold (a NUL character, an integer out of range).
            log.warning("database %s refused a value: %s", self.description, driver_text(error))
            raise InvalidInputError(
                "the database refused a value (out of range or not of the column's type)"
            ) from error
        if isinstance(error, exc.DatabaseError) and _damaged(driver_text(error)):
            log.warning("database %s: %s", self.description, driver_text(error))
            raise StorageError(
                "the database file is not a SQLite database, or is damaged; restore it from "
                "a backup, or point storage.url at another file"
            ) from error
        # InternalError too: a pooler (PgBouncer) reports a server connection lost
        # mid-transaction as one, and it means the same as a lost connection here.
        lost = exc.OperationalError | exc.InterfaceError | exc.InternalError
        if not isinstance(error, lost | exc.ProgrammingError):
            return
        reason = driver_text(error)
        log.warning("database %s: %s", self.description, reason)
        if reason.startswith("no such table") or sqlstate == "42P01":  # 42P01: undefined_table
            raise StorageError("the database lacks a table; run `chatwright db upgrade`") from error
        if "database is locked" in reason:
            # SQLite: another connection held the write lock past storage.busy_timeout.
            raise locked() from error
        if isinstance(error, exc.ProgrammingError) or _statement_fault(reason):
            raise StorageError(f"the database rejected a statement; {DETAILS}") from error
        if reason.startswith("attempt to write a readonly database"):
            raise StorageError(
                "the SQLite database cannot be written (the file or its directory is "
                "read-only for this user, or storage.url opens it read-only); give this user "
                "write access to both, or point storage.url at a file it may write"
            ) from error
        if reason.startswith("unable to open database file"):
            raise StorageError(
                "the SQLite database file cannot be opened (a directory, a path in a folder "
                "that does not exist, or not readable by this user); point storage.url at a "
                "SQLite file this user can read and write"
            ) from error
        raise StorageError(f"the database is unavailable; {DETAILS}") from error


_SQLITE_CONSTRAINT = re.compile(r"^(UNIQUE|NOT NULL) constraint failed: (.+)$")
_POSTGRES_KEY = re.compile(r"Key \(([^)]*)\)=")


def _columns_of_sqlite(listed: str) -> list[str]:
    # "tasks.user_id, tasks.title": the columns, without the table.
    return [part.strip().rsplit(".", 1)[-1] for part in listed.split(",") if part.strip()]


def integrity_message(error: exc.IntegrityError, table: str) -> str:
    """What a refused row did wrong, naming columns and never another row's values.

    PostgreSQL's detail quotes the conflicting row ("Key (email)=(alice@…)
    already exists"): only the column names are taken from it.
    """
    orig = error.orig
    diag = getattr(orig, "diag", None)
    sqlstate = getattr(orig, "sqlstate", None)
    text = str(orig) if orig is not None else str(error)
    first = text.strip().splitlines()[0] if text.strip() else ""
    columns: list[str] = []
    kind = ""
    found = _SQLITE_CONSTRAINT.match(first)
    if found:
        kind = "unique" if found.group(1) == "UNIQUE" else "not null"
        columns = _columns_of_sqlite(found.group(2))
    elif sqlstate == "23505":
        kind = "unique"
        key = _POSTGRES_KEY.search(getattr(diag, "message_detail", None) or text)
        columns = [c.strip().strip('"') for c in key.group(1).split(",")] if key else []
    elif sqlstate == "23502":
        kind = "not null"
        column = getattr(diag, "column_name", None)
        columns = [column] if column else []
    log.info("table %r refused a row: %s", table, " ".join(text.split()))
    names = ", ".join(repr(c) for c in columns)
    if kind == "unique" and columns:
        plural = "s" if len(columns) > 1 else ""
        return (
            f"another row of {table!r} already has the same value{plural} of {names} "
            "(unique); use another value"
        )
    if kind == "unique":
        return f"another row of {table!r} already has the same unique value; use another value"
    if kind == "not null" and columns:
        return f"column {names} of {table!r} needs a value"
    if "FOREIGN KEY" in first or sqlstate == "23503":
        return f"a value given for {table!r} refers to a row that does not exist"
    if "CHECK" in first or sqlstate == "23514":
        return f"a value given for {table!r} breaks one of its checks"
    return f"the values do not fit the constraints of {table!r}"


def name_taken(agent_name: str, row: Any) -> ToolNameTakenError:
    """A tool row's name that another row of the agent has (``row``, disabled or not)."""
    return ToolNameTakenError(agent_name, row.name, row.id, active=row.is_active)
