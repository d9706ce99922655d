"""Pending actions and users' approval choices of the ``sql`` backend.

Every statement about a user's actions runs in a transaction for that user, so
that the storage's user transactions apply (on the ``supabase`` backend the
database's row-level security keeps users apart); the ``user_id`` condition in
every statement does the same on a plain database. Only administration
(``user_id`` None: the CLI) reads across users.

A decision is one ``UPDATE … WHERE status = 'pending' … RETURNING``: the
database lets exactly one of two concurrent deciders change the row, and the
other gets nothing back, so an approved call runs at most once whichever
process decides it.
"""

from __future__ import annotations

import builtins
import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import exc
from sqlalchemy.ext.asyncio import AsyncConnection

from chatwright.approvals import (
    USER_CHOICES,
    NewPending,
    PendingAction,
    Preview,
    choice_counts,
    digest_of,
    no_tool_row,
    tool_changed,
)
from chatwright.errors import InvalidInputError, NotFoundError, TooLargeError
from chatwright.plugins.sql import schema
from chatwright.plugins.sql.rows import now
from chatwright.plugins.sql.stores import BoundStore

if TYPE_CHECKING:
    from chatwright.plugins.sql.storage import SQLStorage

DECISIONS = ("approved", "denied", "expired")
OUTCOMES = ("done", "failed")
STATUSES = ("pending", "approved", "denied", "expired", "done", "failed")
MAX_ARGS_BYTES = 1_000_000
"""A tool call's arguments as stored: a model's call is far smaller; more is an attack."""
MAX_PREVIEW_BYTES = 4_000_000
MAX_LIMIT = 1000


def _json_ready(value: Any, what: str, limit: int) -> Any:
    """``value`` as JSON-ready data, refused by name when it is too large to store."""
    from chatwright.plugins.sql.audit import _json

    plain = _json(value)
    size = len(json.dumps(plain, ensure_ascii=False, separators=(",", ":")).encode())
    if size > limit:
        raise TooLargeError(
            f"{what} is {size} bytes as JSON, over the {limit} bytes a pending action keeps; "
            "make the call smaller"
        )
    return plain


def pending_values(
    user_id: str, agent_name: str, chat_id: uuid.UUID, action: NewPending
) -> dict[str, Any]:
    """The ``pending_actions`` row of a new action."""
    preview = action.preview.as_dict() if action.preview is not None else None
    return {
        "id": uuid.uuid4(),
        "user_id": user_id,
        "agent_name": agent_name,
        "chat_id": chat_id,
        "turn_id": action.turn_id,
        "tool_id": action.tool_id,
        "tool_name": action.tool_name,
        "tool_call_id": action.tool_call_id,
        "args": _json_ready(
            dict(action.args), f"the arguments of {action.tool_name}", MAX_ARGS_BYTES
        ),
        "preview": None
        if preview is None
        else _json_ready(preview, f"the preview of {action.tool_name}", MAX_PREVIEW_BYTES),
        "status": "pending",
        "created_at": now(),
        "expires_at": action.expires_at,
        "tool_digest": action.tool_digest,
    }


def pending_from_row(row: Mapping[str, Any]) -> PendingAction:
    """A stored row as a :class:`PendingAction`; JSON that does not parse reads as empty."""
    args = row["args"] if isinstance(row["args"], dict) else {}
    preview = None
    if isinstance(row["preview"], dict):
        try:
            preview = Preview.from_dict(row["preview"])
        except (KeyError, TypeError, ValueError):
            preview = None  # a row edited by hand: shown without its preview
    return PendingAction(
        id=row["id"],
        user_id=row["user_id"],
        agent_name=row["agent_name"],
        chat_id=row["chat_id"],
        turn_id=row["turn_id"],
        tool_id=row["tool_id"],
        tool_name=row["tool_name"],
        tool_call_id=row["tool_call_id"],
        args=args,
        preview=preview,
        status=row["status"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        decided_at=row["decided_at"],
        decided_by=row["decided_by"],
        result=row["result"],
        tool_digest=row.get("tool_digest"),
    )


async def insert_pending(
    conn: AsyncConnection,
    user_id: str,
    agent_name: str,
    chat_id: uuid.UUID,
    actions: Sequence[NewPending],
) -> list[PendingAction]:
    """Store ``actions`` on ``conn`` (inside the caller's transaction, as the user)."""
    if not actions:
        return []
    t = schema.pending_actions
    rows = [pending_values(user_id, agent_name, chat_id, a) for a in actions]
    await conn.execute(t.insert(), rows)
    # Every column is known already: no statement to read them back.
    unset = {"decided_at": None, "decided_by": None, "result": None}
    return [pending_from_row({**row, **unset}) for row in rows]


MAX_INTEGER = 2**31 - 1
"""The largest tool row id (an INTEGER column); larger numbers name no row."""


def as_uuid(value: Any, what: str) -> uuid.UUID:
    """``value`` as a UUID, or an error naming it: ids from a caller are checked here too."""
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, str) and len(value) <= 64:
        try:
            return uuid.UUID(value)
        except ValueError:
            pass
    shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
    raise InvalidInputError(f"{what} {shown} is not an id; ids are UUIDs (as listed)")


def as_tool_id(value: Any) -> int:
    """A tool row id, refused as missing when it cannot name a row (the CLI lists them)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_INTEGER:
        shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
        raise NotFoundError(no_tool_row(shown))
    return value


def _limit(limit: int) -> int:
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_LIMIT:
        raise InvalidInputError(f"limit {limit!r} must be a whole number from 1 to {MAX_LIMIT}")
    return limit


class SQLPendingStore(BoundStore):
    """The storage's ``pending``: see :class:`chatwright.approvals.PendingStore`."""

    def __init__(self, db: SQLStorage) -> None:
        super().__init__(db)

    async def create(
        self, user_id: str, agent_name: str, chat_id: uuid.UUID, actions: Sequence[NewPending]
    ) -> builtins.list[PendingAction]:
        async with self.db.write(user_id) as conn:
            return await insert_pending(conn, user_id, agent_name, chat_id, actions)

    async def get(self, user_id: str | None, action_id: uuid.UUID) -> PendingAction | None:
        t = schema.pending_actions
        action_id = as_uuid(action_id, "pending action")
        stmt = sa.select(t).where(t.c.id == action_id)
        if user_id is not None:
            stmt = stmt.where(t.c.user_id == user_id)
        async with self.db.read(user_id) as conn:
            row = (await conn.execute(stmt)).mappings().first()
        return pending_from_row(dict(row)) if row is not None else None

    async def list(
        self,
        user_id: str | None,
        *,
        chat_id: uuid.UUID | None = None,
        status: str | None = "pending",
        limit: int = 100,
    ) -> builtins.list[PendingAction]:
        t = schema.pending_actions
        if status is not None and status not in STATUSES:
            raise InvalidInputError(
                f"status {status!r} is not one of {', '.join(STATUSES)} (or none, for all)"
            )
        stmt = sa.select(t).order_by(t.c.created_at, t.c.id).limit(_limit(limit))
        if user_id is not None:
            stmt = stmt.where(t.c.user_id == user_id)
        if chat_id is not None:
            stmt = stmt.where(t.c.chat_id == as_uuid(chat_id, "chat"))
        if status is not None:
            stmt = stmt.where(t.c.status == status)
        async with self.db.read(user_id) as conn:
            rows = (await conn.execute(stmt)).mappings().all()
        return [pending_from_row(dict(r)) for r in rows]

    async def _change(
        self, user_id: str, action_id: uuid.UUID, was: str, values: Mapping[str, Any]
    ) -> PendingAction | None:
        """Change the user's action if its status is ``was``: one atomic statement."""
        t = schema.pending_actions
        action_id = as_uuid(action_id, "pending action")
        stmt = (
            t.update()
            .where(t.c.id == action_id, t.c.user_id == user_id, t.c.status == was)
            .values(dict(values))
            .returning(t)
        )
        async with self.db.write(user_id) as conn:
            row = (await conn.execute(stmt)).mappings().first()
        return pending_from_row(dict(row)) if row is not None else None

    async def decide(
        self, user_id: str, action_id: uuid.UUID, status: str, decided_by: str
    ) -> PendingAction | None:
        if status not in DECISIONS:
            raise InvalidInputError(
                f"a pending action is decided as one of {', '.join(DECISIONS)}, not {status!r}"
            )
        return await self._change(
            user_id,
            action_id,
            "pending",
            {"status": status, "decided_at": now(), "decided_by": decided_by},
        )

    async def reopen(
        self,
        user_id: str,
        action_id: uuid.UUID,
        preview: Preview | None,
        expires_at: datetime,
        *,
        tool_id: int | None = None,
        tool_digest: str | None = None,
    ) -> PendingAction | None:
        stored = None
        if preview is not None:
            stored = _json_ready(preview.as_dict(), "the preview", MAX_PREVIEW_BYTES)
        values: dict[str, Any] = {
            "status": "pending",
            "preview": stored,
            "expires_at": expires_at,
            "decided_at": None,
            "decided_by": None,
        }
        if tool_id is not None:
            values["tool_id"] = tool_id
        if tool_digest is not None:
            values["tool_digest"] = tool_digest
        return await self._change(user_id, action_id, "approved", values)

    async def complete(
        self, user_id: str, action_id: uuid.UUID, status: str, result: str
    ) -> PendingAction | None:
        if status not in OUTCOMES:
            raise InvalidInputError(
                f"an approved action ends as one of {', '.join(OUTCOMES)}, not {status!r}"
            )
        return await self._change(
            user_id, action_id, "approved", {"status": status, "result": result}
        )

    async def choices(self, user_id: str, agent_name: str) -> dict[int, str]:
        t, a, c = schema.agent_tools, schema.agents, schema.tool_approval_choices
        async with self.db.read() as conn:
            # The agent's tool rows are configuration (a framework statement);
            # the choices are the user's, read as the user.
            tools = await conn.execute(
                sa.select(t.c.id, t.c.type, t.c.config)
                .join(a, a.c.id == t.c.agent_id)
                .where(a.c.name == agent_name, t.c.approval == "user")
            )
            digests = {r.id: digest_of(r.id, r.type, r.config) for r in tools}
            if not digests:
                return {}
            await self.db.users.enter(conn, user_id)
            rows = await conn.execute(
                sa.select(c.c.tool_id, c.c.choice, c.c.tool_digest).where(
                    c.c.user_id == user_id, c.c.tool_id.in_(list(digests))
                )
            )
            return {
                r.tool_id: r.choice
                for r in rows
                if choice_counts(r.choice, r.tool_digest, digests[r.tool_id])
            }

    async def choose(
        self, user_id: str, tool_id: int, choice: str | None, *, digest: str | None = None
    ) -> None:
        c = schema.tool_approval_choices
        tool_id = as_tool_id(tool_id)
        if choice is not None and choice not in USER_CHOICES:
            raise InvalidInputError(
                f"{choice!r} is not an approval choice; use one of {', '.join(USER_CHOICES)}"
            )
        missing = NotFoundError(no_tool_row(tool_id))
        t = schema.agent_tools
        row = None
        if choice is not None or digest is not None:
            async with self.db.read() as conn:
                row = (
                    await conn.execute(sa.select(t.c.type, t.c.config).where(t.c.id == tool_id))
                ).first()
            if row is None:
                raise missing
            if digest is not None and digest != digest_of(tool_id, row.type, row.config):
                raise tool_changed(tool_id)
        if choice is None or row is None:
            async with self.db.write(user_id) as conn:
                await conn.execute(c.delete().where(c.c.user_id == user_id, c.c.tool_id == tool_id))
            return
        # Chosen for the row as it is now: a change of the row after this read makes
        # an ``auto`` count no more (see chatwright.approvals.choice_counts).
        values = {
            "user_id": user_id,
            "tool_id": tool_id,
            "choice": choice,
            "tool_digest": digest_of(tool_id, row.type, row.config),
            "updated_at": now(),
        }
        try:
            await self.db.upsert(c, values, keys=("user_id", "tool_id"), user_id=user_id)
        except exc.IntegrityError:
            raise missing from None
