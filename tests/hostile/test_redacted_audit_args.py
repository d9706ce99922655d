"""A tool's own redaction of its arguments holds in every audit entry core records.

A tool type whose calls may carry values it must keep out of the audit log (an
MCP server's secrets, filled in from the environment) records its own ``ok``
and ``error`` entries through its redaction. The entries core records of its
calls — a ``before_write`` veto, a denial, an expiry — recorded the arguments
as the model gave them. Now they go through the tool's
``metadata["chatwright_redact"]`` too (``chatwright.writes.audit_args``), the
tool taken from the agent's cached build or built for it; the pending action
itself keeps the arguments as given, since approving runs them. SQLite and
PostgreSQL.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from chatwright import hookimpl
from chatwright.plugins.example import assistant as example
from chatwright.plugins.sql import schema
from chatwright.runtime import Runtime
from tests.conftest import MakeRuntime
from tests.hostile.test_lease_lost_calls import Outbox

SECRET = "sk-vault-3f9a27c1"
SENT: list[str] = []


def hide(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace(SECRET, "[redacted]")
    if isinstance(value, dict):
        return {k: hide(v) for k, v in value.items()}
    return value


class Vault(Outbox):
    """The outbox's tool type, keeping its messages in :data:`SENT`, its tools hiding
    :data:`SECRET` in what the audit log records of them."""

    sent = SENT
    metadata = {"chatwright_redact": hide}


class Plugin:
    @hookimpl
    def register_tool_types(self, register: Any) -> None:
        register("vault", Vault())


class Veto:
    @hookimpl
    def before_write(self, call: Any) -> str | None:
        return "not today"


async def seeded(runtime: Runtime, approval: str = "auto") -> uuid.UUID:
    storage = runtime.storage
    await example.seed(storage, "scripted:x")
    if not any(t.name == "send_message" for t in await storage.tools.list(example.AGENT)):
        await storage.tools.add(
            example.AGENT, "send_message", type="vault", config={}, approval=approval
        )
    script = [
        {"tool_calls": [{"name": "send_message", "args": {"text": f"use {SECRET}"}}]},
        {"content": "done"},
    ]
    await storage.agents.update(example.AGENT, model_settings={"responses": script})
    session = await storage.sessions.open("alice", example.AGENT, chat_id=uuid.uuid4())
    return session.chat_id


async def entries(runtime: Runtime) -> list[tuple[str, Any]]:
    return [(e.outcome, e.args) for e in await runtime.storage.audit.list("alice")]


async def test_a_vetoed_call_is_recorded_redacted(runtimes: MakeRuntime) -> None:
    SENT.clear()
    runtime = await runtimes(Plugin(), Veto())
    chat = await seeded(runtime)
    turn = await runtime.chat("alice", example.AGENT, chat, "send it")
    assert turn.response == "done" and SENT == []
    assert await entries(runtime) == [("vetoed", {"text": "use [redacted]"})]


async def test_a_denied_call_is_recorded_redacted_built_or_not(runtimes: MakeRuntime) -> None:
    SENT.clear()
    runtime = await runtimes(Plugin())
    for evicted in (False, True):
        chat = await seeded(runtime, approval="required")
        turn = await runtime.chat("alice", example.AGENT, chat, "send it")
        (action,) = turn.pending
        assert action.args == {"text": f"use {SECRET}"}  # kept as given: approving runs it
        if evicted:
            runtime.cache.evict(example.AGENT, "test")
        await runtime.decide("alice", action.id, False)
        assert (await entries(runtime))[0] == ("denied", {"text": "use [redacted]"})
    assert SENT == []


async def test_a_denial_once_the_tool_is_gone_leaves_the_arguments_out(
    runtimes: MakeRuntime,
) -> None:
    """Its row disabled between the hold and the denial: no tool to hide what the
    arguments hold, so the entry does not hold them (the pending action does)."""
    runtime = await runtimes(Plugin())
    chat = await seeded(runtime, approval="required")
    turn = await runtime.chat("alice", example.AGENT, chat, "send it")
    (action,) = turn.pending
    (row,) = [t for t in await runtime.storage.tools.list(example.AGENT) if t.type == "vault"]
    await runtime.storage.tools.update(row.id, is_active=False)
    runtime.cache.evict(example.AGENT, "test")  # the change has reached the cache
    await runtime.decide("alice", action.id, False)
    ((outcome, args),) = await entries(runtime)
    assert outcome == "denied" and SECRET not in repr(args)
    assert "send_message" in args["[left out]"]


async def test_an_expired_call_is_recorded_redacted(runtimes: MakeRuntime) -> None:
    SENT.clear()
    runtime = await runtimes(Plugin())
    chat = await seeded(runtime, approval="required")
    turn = await runtime.chat("alice", example.AGENT, chat, "send it")
    (action,) = turn.pending
    t = schema.pending_actions
    async with runtime.storage.write() as conn:  # type: ignore[attr-defined]
        await conn.execute(
            t.update()
            .where(t.c.id == action.id)
            .values(expires_at=datetime.now(UTC) - timedelta(minutes=1))
        )
    await runtime.decisions.settle_expired("alice", example.AGENT, chat)
    assert await entries(runtime) == [("expired", {"text": "use [redacted]"})]


async def test_an_approved_call_runs_with_its_arguments_as_given(runtimes: MakeRuntime) -> None:
    SENT.clear()
    runtime = await runtimes(Plugin())
    chat = await seeded(runtime, approval="required")
    turn = await runtime.chat("alice", example.AGENT, chat, "send it")
    (action,) = turn.pending
    await runtime.decide("alice", action.id, True)
    assert [f"use {SECRET}"] == SENT  # sent as the model gave it
