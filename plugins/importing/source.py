"""Reading the original system's database: its tables as plain rows, whatever is there.

The original kept everything in PostgreSQL (``public`` schema by default):
``agent_configurations``, ``agent_tools`` (in one of three shapes over its
life), ``tools`` (the last shape's definitions), ``chat_sessions``,
``chat_message_history``, ``user_agent_prompt_customizations`` and
``agent_long_term_memory``. Each is read whole if it exists, but for the
history, which may hold millions of rows: it is read as a stream
(:meth:`Source.history`), one chat's rows together, a batch at a time, once to
plan and once to import. A missing table is simply absent from
:attr:`Source.columns`, so that the plan can say what was not there instead of
failing. Nothing is written to the source.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncGenerator, Mapping
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
HISTORY = "chat_message_history"
HISTORY_BATCH = 1000
"""How many rows of the history are held at once while it is streamed."""
# chatwright's own tables of the same names, told apart by a column the original's lack:
# read from chatwright's database without --schema, they are not the original's.
OWN_TABLES = {"agent_tools": "position", "chat_sessions": "client_key"}


class SourceError(ChatwrightError):
    """The original database could not be read at all."""


@dataclass
class Source:
    """What was read: each table found, as its column names and rows (dicts)."""

    url: str
    """The database's URL as shown: its password hidden."""
    schema: str
    columns: dict[str, list[str]] = field(default_factory=dict)
    """Each table found, by its column names (the history included)."""
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """Each table read whole, by its rows: every table found but the history."""
    notes: list[str] = field(default_factory=list)
    json_columns: dict[str, set[str]] = field(default_factory=dict)
    """Each table's json and jsonb columns, whose values are decoded when read."""
    history_rows: int | None = None
    """How many rows the history held when it was last streamed whole."""
    session_id_type: str = ""
    """The type of the history's ``session_id`` column, as the database names it."""
    _connect: str = field(default="", repr=False)
    _history: Any = field(default=None, repr=False)
    """The statement that streams the history (a SQLAlchemy select), when there is one."""

    def rows(self, table: str) -> list[dict[str, Any]]:
        return self.tables.get(table, [])

    def sizes(self) -> dict[str, int]:
        """How many rows each table found holds (the history's once it was streamed)."""
        sizes = {table: len(rows) for table, rows in self.tables.items()}
        if HISTORY in self.columns and self.history_rows is not None:
            sizes[HISTORY] = self.history_rows
        return sizes

    async def history(self) -> AsyncGenerator[list[dict[str, Any]]]:
        """The history's rows, in batches of at most :data:`HISTORY_BATCH`: ordered by chat
        (:func:`chat_key`, so that one chat's rows, however its ``session_id`` is spelled,
        come together), then as the chat was written (``id``; ``created_at``, then ``id``,
        when the id is not a whole number). Each stream is one read of the table, on a
        connection of its own, held only while it runs; the whole history is never held.
        """
        if self._history is None:
            return
        import sqlalchemy as sa
        from sqlalchemy.ext.asyncio import create_async_engine

        decoded = self.json_columns.get(HISTORY, set())
        engine = create_async_engine(
            engine_url(self._connect),
            connect_args={"connect_timeout": CONNECT_TIMEOUT},
            poolclass=sa.pool.NullPool,
        )
        try:
            async with engine.connect() as conn:
                result = await conn.stream(self._history)
                async for part in result.mappings().partitions(HISTORY_BATCH):
                    yield [
                        {k: decode(v) if k in decoded and isinstance(v, str) else v
                         for k, v in r.items()}
                        for r in part
                    ]  # fmt: skip
        except sa.exc.SQLAlchemyError as error:
            raise SourceError(_unreadable(self.url, self.schema, error)) from None
        except OSError as error:
            reach = f"cannot reach the original database at {self.url}: {error}"
            raise SourceError(reach) from None
        finally:
            await engine.dispose()

    def value(self, table: str, row: Mapping[str, Any], column: str) -> Any:
        """``row``'s value of ``column`` decoded: a json or jsonb value as it was read (a
        string is that string, never decoded again), text as :func:`jsonish` reads it.

        Raises :class:`UnreadableJSON` for a json or jsonb value that could not be read.
        """
        found = row.get(column)
        if column in self.json_columns.get(table, ()) and not isinstance(found, Unreadable):
            return found
        return jsonish(found)


_HEX = re.compile(r"[0-9a-fA-F]{32}")


def chat_id(value: Any) -> uuid.UUID | None:
    """The chat a ``session_id`` or ``chat_id`` names, in any spelling of a UUID that
    PostgreSQL's key of :func:`history_key_sql` also reads as one (upper or lower case,
    hyphens or none, in braces, after ``urn:uuid:``); None when it is not a UUID."""
    if isinstance(value, uuid.UUID):
        return value
    digits = str(value).replace("urn:", "").replace("uuid:", "").strip("{}").replace("-", "")
    return uuid.UUID(hex=digits) if _HEX.fullmatch(digits) else None


def chat_key(value: Any) -> str:
    """Which chat a history row's ``session_id`` names: its UUID written one way, or,
    when it is not a UUID, the text as it is (no value: "")."""
    text = "" if value is None else str(value)
    found = chat_id(text)
    return text if found is None else str(found)


def history_key_sql(column: Any) -> Any:
    """PostgreSQL's sort key of a ``session_id`` column: one value for every spelling
    :func:`chat_id` reads as one UUID, the text itself for any other (a json or jsonb
    string's text, unquoted, as it is decoded), so that ordering by it brings one chat's
    rows together as :func:`chat_key` groups them. In the "C" collation, whatever the
    column's: a nondeterministic one allows no text search, and bytes sort fastest."""
    import sqlalchemy as sa

    if isinstance(column.type, sa.JSON):
        value: Any = sa.type_coerce(column.op("#>>")(sa.literal_column("'{}'")), sa.Text)
    else:
        value = sa.cast(column, sa.Text)
    text = sa.func.coalesce(value.collate("C"), "")
    digits = sa.func.replace(
        sa.func.btrim(sa.func.replace(sa.func.replace(text, "urn:", ""), "uuid:", ""), "{}"),
        "-",
        "",
    )
    return sa.case((digits.op("~")("^[0-9a-fA-F]{32}$"), sa.func.lower(digits)), else_=text)


def _unreadable(shown: str, schema: str, error: Exception) -> str:
    reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
    return (
        f"cannot read the original database at {shown}: {reason}; check the URL, that the "
        f"server answers, and that the user may read the schema {schema!r}"
    )


def engine_url(url: str) -> str:
    """``url`` with the driver chatwright uses for PostgreSQL (psycopg, async)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # a port that is not a number: ValueError
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
    source = Source(url=shown, schema=schema, _connect=url)

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
            if name == HISTORY and not serial:
                keys = ("created_at", "id")  # an id that is not a serial: as written
            order = [sa.text(k) for k in keys if k.strip('"') in table.c]
            # json and jsonb are read as their text, and decoded where a row is mapped.
            decoded = {c.name for c in table.columns if isinstance(c.type, sa.JSON)}
            picked = [
                sa.cast(c, sa.Text).label(c.name) if c.name in decoded else c for c in table.columns
            ]
            source.json_columns[name] = decoded
            if name == HISTORY:
                chat = history_key_sql(table.c.session_id) if "session_id" in table.c else None
                if chat is not None:
                    source.session_id_type = str(table.c.session_id.type)
                by_chat = [] if chat is None else [chat]
                # ctid last: rows alike in every key (no id, or one id twice) come in the
                # same order to both reads.
                source._history = sa.select(*picked).order_by(
                    *by_chat, *order, sa.literal_column("ctid")
                )
                continue
            result = conn.execute(sa.select(*picked).order_by(*order))
            source.tables[name] = [
                {k: decode(v) if k in decoded and isinstance(v, str) else v for k, v in r.items()}
                for r in result.mappings()
            ]

    try:
        async with engine.connect() as conn:
            await conn.run_sync(load)
    except sa.exc.SQLAlchemyError as error:
        raise SourceError(_unreadable(shown, schema, error)) from None
    except OSError as error:
        raise SourceError(f"cannot reach the original database at {shown}: {error}") from None
    finally:
        await engine.dispose()
    return source
