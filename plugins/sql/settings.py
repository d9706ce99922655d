"""The sql backend's keys of ``[storage]``: connection pool, pooler, SQLite locking, time bound.

The ``supabase`` backend is the sql backend underneath and reads the same keys.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from chatwright.settings import DAY, HOUR


class SQLStorageSettings(BaseModel):
    pool_size: int = Field(
        15,
        ge=1,
        description="Pooled connections kept open once opened (PostgreSQL; opened as needed).",
    )
    max_overflow: int = Field(
        0,
        ge=0,
        description="Extra connections beyond pool_size, each closed when given back.",
    )
    pool_timeout: float = Field(
        30.0, gt=0, le=HOUR, description="Seconds to wait for a free connection (an hour at most)."
    )
    statement_timeout: float = Field(
        30.0,
        ge=0,
        le=DAY,
        description="Seconds one transaction may take, waiting for a connection included, "
        "before it is abandoned and the request answered 503 (0: no bound; a day at most).",
    )
    busy_timeout: float = Field(
        5.0,
        ge=0,
        le=HOUR,
        description="Seconds SQLite waits on a locked database before failing (an hour at most).",
    )
    echo: bool = Field(False, description="Log every SQL statement.")
    pooler: Literal["none", "session", "transaction"] = Field(
        "none",
        description="A connection pooler in front of PostgreSQL (Supabase's Supavisor, "
        "PgBouncer); 'transaction' turns prepared statements off, and without direct_url "
        "nothing LISTENs: other processes' config changes arrive by each turn's version check.",
    )
    direct_url: str | None = Field(
        None,
        description="PostgreSQL URL without a transaction pooler, for the LISTEN/NOTIFY of "
        "config changes, the one thing that needs it (default: url).",
    )
    turn_lease: float = Field(
        60.0,
        ge=1,
        le=DAY,
        description="Seconds a chat's turn lease lasts unless renewed (every third of it, "
        "while the turn runs); after a crash the chat waits this long at most (1 to a day).",
    )
    turn_wait: float = Field(
        300.0,
        gt=0,
        le=DAY,
        description="Seconds a turn waits for the other turns of the same chat (queued "
        "before it in this process, or in another process) before it is refused with 409 "
        "(a day at most).",
    )
    pool_recycle: float = Field(
        900.0,
        gt=0,
        le=DAY,
        description="Seconds after which a pooled connection is replaced (below the idle "
        "timeouts of poolers and load balancers; a day at most).",
    )
