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
# How each table's rows are read, so that the plan and its report keep an order.
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

    def rows(self, table: str) -> list[dict[str, Any]]:
        return self.tables.get(table, [])


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


def jsonish(value: Any) -> Any:
    """A jsonb value, or JSON kept as text (the original stored some configs so)."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
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
            order = [sa.text(k) for k in ORDER.get(name, ()) if k.strip('"') in table.c]
            result = conn.execute(sa.select(table).order_by(*order))
            source.tables[name] = [dict(r) for r in result.mappings()]

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
