"""What the write-safety commands accept: user ids, who decided, points in time.

The checks happen before a database is opened, so that a bad value is one
``Error: …`` line naming the option and what to give instead, never a
database error about a column it does not fit.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from chatwright.errors import InvalidInputError

MAX_NAME = 255
"""The longest user id (and ``decided_by``) the user_id columns hold."""

_CONTROL = re.compile(r"[\x00-\x1f\x7f]|[\ud800-\udfff]")
_AGE = re.compile(r"^(\d{1,6})\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def name(option: str, value: str) -> str:
    """A user id or a decider's name as the database stores it: 1-255 characters of text."""
    if not value.strip():
        raise InvalidInputError(f"{option} is empty; give a user id")
    if len(value) > MAX_NAME:
        raise InvalidInputError(
            f"{option} is {len(value)} characters long; a user id has at most {MAX_NAME}"
        )
    if _CONTROL.search(value):
        raise InvalidInputError(f"{option} holds a control character; give a plain user id")
    return value


def since(value: str, *, now: datetime | None = None) -> datetime:
    """``--since``: an ISO 8601 date or time (UTC when it names no zone), or an age (``2h``).

    An age counts back from ``now``: ``30m``, ``2h``, ``1d``, ``1w`` (``s``, ``m``,
    ``h``, ``d``, ``w``).
    """
    text = value.strip()
    age = _AGE.match(text.lower())
    if age is not None:
        amount, unit = int(age[1]), age[2]
        try:
            return (now or datetime.now(UTC)) - timedelta(**{_UNITS[unit]: amount})
        except OverflowError:
            raise InvalidInputError(f"--since {value!r} reaches back too far") from None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInputError(
            f"--since {value[:80]!r} is not a time: give an ISO 8601 date or time "
            "(2026-11-30, 2026-11-30T12:00:00Z) or an age such as 30m, 2h or 1d"
        ) from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
