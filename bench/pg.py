"""PostgreSQL for the benchmarks: a fresh database per run, and its activity counters."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo


class Unreachable(Exception):
    """PostgreSQL does not answer at the given URL."""


def server_version(admin_url: str) -> str:
    with connect(admin_url) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "?"


def connect(url: str) -> psycopg.Connection[tuple[object, ...]]:
    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        raise Unreachable(f"PostgreSQL at {safe(url)} does not answer: {exc}".strip()) from None


def safe(url: str) -> str:
    """The URL without its password."""
    params = conninfo_to_dict(url)
    params.pop("password", None)
    return make_conninfo(**params)  # type: ignore[arg-type]


@contextmanager
def fresh_database(admin_url: str) -> Iterator[str]:
    """Create a database for the run; yield its URL; drop it at the end."""
    name = f"chatwright_bench_{secrets.token_hex(4)}"
    with connect(admin_url) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    params = conninfo_to_dict(admin_url)
    params["dbname"] = name
    host, port = params.get("host", "127.0.0.1"), params.get("port", "5432")
    user = params.get("user", "postgres")
    password = f":{params['password']}" if params.get("password") else ""
    try:
        yield f"postgresql://{user}{password}@{host}:{port}/{name}"
    finally:
        with connect(admin_url) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass(frozen=True)
class Activity:
    transactions: int
    sessions: int

    def __sub__(self, other: Activity) -> Activity:
        return Activity(self.transactions - other.transactions, self.sessions - other.sessions)


def activity(admin_url: str, database: str, *, settle: float = 30.0) -> Activity:
    """Commits + rollbacks and sessions started on ``database``, as PostgreSQL counts them.

    Read over a connection to the admin database, so the reading itself is not counted.
    Backends report their counts when idle (at most every 10 s) and when they exit,
    before they leave ``pg_stat_activity``: the reading waits (``settle`` seconds at
    most) until no backend is left on ``database``, so that every count is in. A
    fixed pause after closing a runtime was too short on a busy machine (a window
    read half its turns' transactions, or none).
    """
    deadline = time.monotonic() + settle
    with connect(admin_url) as conn:
        while conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (database,)
        ).fetchone() != (0,):
            if time.monotonic() > deadline:
                raise RuntimeError(f"backends still open on {database} after {settle:.0f} s")
            time.sleep(0.05)
        row = conn.execute(
            "SELECT xact_commit + xact_rollback, sessions FROM pg_stat_database WHERE datname = %s",
            (database,),
        ).fetchone()
    if row is None:
        raise RuntimeError(f"pg_stat_database has no row for {database}")
    return Activity(int(str(row[0])), int(str(row[1])))
