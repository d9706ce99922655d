"""Reading the original system's database: its tables as plain rows, whatever is there.

The original kept everything in PostgreSQL (``public`` schema by default):
``agent_configurations``, ``agent_tools`` (in one of three shapes over its
life), ``tools`` (the last shape's definitions), ``chat_sessions``,
``chat_message_history``, ``user_agent_prompt_customizations`` and
``agent_long_term_memory``. Each is read whole if it exists; a missing table
is simply absent from :attr:`Source.tables`, so that the plan can say what was
not there instead of failing. Nothing is written to the source.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from chatwright.errors import ChatwrightError
from chatwright.redaction import hide_url

TABLES = (
    "agent_configurations",
    "agent_tools",
    "tools",
    "chat_sessions",
    "chat_message_history",
    "user_agent_prompt_customizations",
    "agent_long_term_memory",
)
# How each table's rows are read, so that the plan and its report keep an order; history
# whose id is not a whole number (a uuid) is read by created_at, then id.
ORDER = {
    "agent_tools": ('"order"', "id"),
    "chat_message_history": ("id",),
    "chat_sessions": ("created_at", "id"),
}
CONNECT_TIMEOUT = 10
# chatwright's own tables of the same names, told apart by a column the original's lack:
# read from chatwright's database without --schema, they are not the original's.
OWN_TABLES = {"agent_tools": "position", "chat_sessions": "client_key"}


class SourceError(ChatwrightError):
    """The original database could not be read at all."""


@dataclass
class Source:
    """What was read: each table found, as its column names and rows (dicts)."""

    url: str
    schema: str
    columns: dict[str, list[str]] = field(default_factory=dict)
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    json_columns: dict[str, set[str]] = field(default_factory=dict)
    """Each table's json and jsonb columns, whose values are decoded when read."""

    def rows(self, table: str) -> list[dict[str, Any]]:
        return self.tables.get(table, [])

    def value(self, table: str, row: Mapping[str, Any], column: str) -> Any:
        """``row``'s value of ``column`` decoded: a json or jsonb value as it was read (a
        string is that string, never decoded again), text as :func:`jsonish` reads it.

        Raises :class:`UnreadableJSON` for a json or jsonb value that could not be read.
        """
        found = row.get(column)
        if column in self.json_columns.get(table, ()) and not isinstance(found, Unreadable):
            return found
        return jsonish(found)


def engine_url(url: str) -> str:
    """``url`` with the driver chatwright uses for PostgreSQL (psycopg, async)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        raise SourceError(
            f"--from {hide_url(url)!r} is not a database URL; give one like "
            "postgresql://user:password@host:5432/postgres"
        ) from None
    if parsed.get_backend_name() != "postgresql":
        raise SourceError(
            f"--from {hide_url(url)!r} is not a PostgreSQL URL; the original system's data "
            "lives in PostgreSQL (postgresql://…)"
        )
    return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


class Unreadable:
    """A json or jsonb value of one row that Python's JSON reader cannot read (a number of
    thousands of digits, nesting of thousands of levels: PostgreSQL stores both)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __repr__(self) -> str:
        return f"<unreadable JSON: {self.reason}>"


class UnreadableJSON(ValueError):
    """Raised by :func:`jsonish` for an :class:`Unreadable` value."""


def decode(text: str) -> Any:
    """A json or jsonb column's text decoded, or :class:`Unreadable` with why not."""
    try:
        return json.loads(text)
    except RecursionError:
        return Unreadable("nested too deeply")
    except ValueError as error:
        return Unreadable(str(error)[:120])


def jsonish(value: Any) -> Any:
    """A json or jsonb value (decoded when read), or JSON kept as text (the original stored
    some configs so) decoded; text that is not JSON is returned as it is.

    Raises :class:`UnreadableJSON` for a json or jsonb value that could not be read.
    """
    if isinstance(value, Unreadable):
        raise UnreadableJSON(
            f"its JSON cannot be read ({value.reason}); change the value in the original and "
            "run the import again"
        )
    if isinstance(value, str):
        found = decode(value)
        return value if isinstance(found, Unreadable) else found
    return value


async def read(url: str, schema: str = "public") -> Source:
    """Every table of the original found in ``schema`` of the database at ``url``."""
    import sqlalchemy as sa
    from sqlalchemy.ext.asyncio import create_async_engine

    shown = hide_url(url)
    engine = create_async_engine(
        engine_url(url),
        connect_args={"connect_timeout": CONNECT_TIMEOUT},
        poolclass=sa.pool.NullPool,
    )
    source = Source(url=shown, schema=schema)

    def load(conn: sa.Connection) -> None:
        inspector = sa.inspect(conn)
        present = set(inspector.get_table_names(schema=schema))
        for name in TABLES:
            if name not in present:
                continue
            table = sa.Table(name, sa.MetaData(), schema=schema, autoload_with=conn)
            marker = OWN_TABLES.get(name)
            if marker is not None and marker in table.c:
                source.notes.append(
                    f"{schema}.{name} is chatwright's own table, not the original's; "
                    "not read (give --schema for the original's tables)"
                )
                continue
            source.columns[name] = [c.name for c in table.columns]
            keys = ORDER.get(name, ())
            serial = "id" in table.c and isinstance(table.c.id.type, sa.Integer)
            if name == "chat_message_history" and not serial:
                keys = ("created_at", "id")  # an id that is not a serial: as written
            order = [sa.text(k) for k in keys if k.strip('"') in table.c]
            # json and jsonb are read as their text, and decoded where a row is mapped.
            decoded = {c.name for c in table.columns if isinstance(c.type, sa.JSON)}
            picked = [
                sa.cast(c, sa.Text).label(c.name) if c.name in decoded else c for c in table.columns
            ]
            result = conn.execute(sa.select(*picked).order_by(*order))
            source.json_columns[name] = decoded
            source.tables[name] = [
                {k: decode(v) if k in decoded and isinstance(v, str) else v for k, v in r.items()}
                for r in result.mappings()
            ]

    try:
        async with engine.connect() as conn:
            await conn.run_sync(load)
    except sa.exc.SQLAlchemyError as error:
        reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
        raise SourceError(
            f"cannot read the original database at {shown}: {reason}; check the URL, that the "
            "server answers, and that the user may read the schema "
            f"{schema!r}"
        ) from None
    except OSError as error:
        raise SourceError(f"cannot reach the original database at {shown}: {error}") from None
    finally:
        await engine.dispose()
    return source
