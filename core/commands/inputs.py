"""What the commands accept: user ids, agent names, free text, points in time.

The checks happen before a database is opened, so that a bad value is one
``Error: …`` line naming the option and what to give instead, never a
database error about a column it does not fit, nor an encoding error.

A byte of the command line that is not UTF-8 text reaches a command as a lone
surrogate (the byte 0xff as ``\\udcff``), which no database stores and no
terminal prints: :func:`text` refuses it, and the parameter types :data:`TEXT`
and :data:`AGENT` check an option or an argument as click reads it.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import click

from chatwright.errors import InvalidInputError

MAX_FILE_BYTES = 4 * 1024 * 1024
"""The most bytes a command reads of a file it is given (a prompt, a tool's definition):
the size of the largest bundle ``agents import`` reads."""
MAX_NAME = 255
"""The longest user id (and ``decided_by``) the user_id columns hold."""
MAX_AGENT_NAME = 200
"""The longest agent name (the rule every agent's name follows when it is added)."""

_CONTROL = re.compile(r"[\x00-\x1f\x7f]|[\ud800-\udfff]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_AGE = re.compile(r"^(\d{1,6})\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def read_text_file(path: Any, option: str) -> str:
    """The UTF-8 text of the file at ``path`` (a path, or a file click opened in text mode),
    read up to :data:`MAX_FILE_BYTES`: a larger one (or an endless one, such as
    ``/dev/zero``) is refused, not read into memory.

    Raises :class:`UnicodeDecodeError` for a file that is not UTF-8.
    """
    if hasattr(path, "read"):
        found = path.read(MAX_FILE_BYTES + 1)  # characters: at most four bytes each
        source = "standard input" if getattr(path, "name", "") == "<stdin>" else path.name
    else:
        with open(path, "rb") as file:
            found = file.read(MAX_FILE_BYTES + 1)
        source = str(path)
    if len(found) > MAX_FILE_BYTES or (
        isinstance(found, str) and len(found.encode("utf-8", "surrogatepass")) > MAX_FILE_BYTES
    ):
        raise InvalidInputError(
            f"{option} {source} is larger than {MAX_FILE_BYTES:,} bytes, more than any "
            "prompt or tool definition holds; give the file it should be"
        )
    return found if isinstance(found, str) else found.decode("utf-8")


def name(option: str, value: str) -> str:
    """A user id or a decider's name as the database stores it: 1-255 characters of text."""
    return _plain(
        option, value, "a user id", MAX_NAME, "holds a control character; give a plain user id"
    )


def _plain(option: str, value: str, what: str, longest: int, control: str) -> str:
    """``value`` when it is text (:func:`text`), not blank, at most ``longest`` characters
    long and without control characters; else an error naming ``option`` and ``what``."""
    text(option, value)
    if not value.strip():
        raise InvalidInputError(f"{option} is empty; give {what}")
    if len(value) > longest:
        raise InvalidInputError(
            f"{option} is {len(value)} characters long; {what} has at most {longest}"
        )
    if _CONTROL.search(value):
        raise InvalidInputError(f"{option} {control}")
    return value


def text(option: str, value: str) -> str:
    """Any text but a lone surrogate (what a byte that is not UTF-8 becomes on the command line)."""
    found = _SURROGATE.search(value)
    if found is None:
        return value
    code = ord(found.group())
    # Python reads the byte 0xNN that is not UTF-8 as the surrogate U+DCNN.
    byte = f", the byte 0x{code - 0xDC00:02x}," if 0xDC80 <= code <= 0xDCFF else ","
    raise InvalidInputError(
        f"{option} holds a lone surrogate (\\u{code:04x}{byte} which is not UTF-8 text); "
        "remove it or give the value as UTF-8"
    )


def agent(option: str, value: str) -> str:
    """An agent's name, to name one or to narrow a list to one: 1-200 characters of text."""
    return _plain(
        option,
        value,
        "an agent name",
        MAX_AGENT_NAME,
        "holds a control character, which no agent name has; give an agent name as "
        "`chatwright agents list` shows it",
    )


def _label(param: click.Parameter | None) -> str:
    """How an error names a parameter: its long option (``--agent``) or its argument (``NAME``)."""
    if isinstance(param, click.Option):
        return max(param.opts, key=len)
    return param.human_readable_name if param is not None else "the value"


class Text(click.types.StringParamType):
    """A free-text option or argument, checked by :func:`text` as click reads it.

    A bad value is the command's own error (one ``Error:`` line, exit status 1),
    as from every other check here, not a usage error.
    """

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        return text(_label(param), super().convert(value, param, ctx))


class AgentName(click.types.StringParamType):
    """An agent-name option or argument, checked by :func:`agent` as click reads it."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        return agent(_label(param), super().convert(value, param, ctx))


TEXT = Text()
AGENT = AgentName()


def json_value(value: str, where: str) -> Any:
    """``value`` read as JSON (``ValueError`` when it is not JSON), named ``where`` in errors.

    JSON nested deeper than the parser goes (thousands of ``[``) is refused as too
    deep, in the words a value nested a little too deep is refused in. An object
    giving a key twice is refused, naming the key and its place (``config.table``):
    a reader could take either value, and json takes the last one silently.
    """
    from chatwright.bundles import loads

    try:
        return loads(value, where)
    except RecursionError:
        from chatwright.agents import MAX_JSON_DEPTH

        raise InvalidInputError(
            f"{where} is nested deeper than {MAX_JSON_DEPTH} levels of objects and lists; "
            "flatten it"
        ) from None


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
