"""A chat turn streamed as server-sent events.

The events are ``token``, ``tool_call`` and ``tool_result`` while the turn
runs, ``approval`` when it stopped at calls that wait for the user's decision,
then ``done`` or ``error``; their data are the models of
:mod:`chatwright.plugins.server.schemas` as JSON, with U+2028 and U+2029
escaped (JavaScript counts them as line ends, which would cut a data line in
two for a client that splits lines the way the web page does). A token's text
is made storable as the reply is (:func:`chatwright.history.storable_value`: a
NUL or a lone surrogate becomes U+FFFD), so the tokens spell the stored reply
that ``done`` answers. While the turn runs and sends nothing, a ``: keep-alive``
comment goes out every ``server.stream_keepalive`` seconds, so that proxies do
not drop an idle stream. A client that leaves does not cancel the turn: it
finishes and is stored.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from typing import TYPE_CHECKING, Any

from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from chatwright.errors import ApprovalPendingError, BudgetExceededError, ChatwrightError
from chatwright.plugins.server.metrics import outcome_of
from chatwright.plugins.server.schemas import (
    ApprovalEvent,
    ChatTurn,
    DoneEvent,
    ErrorEvent,
    TokenEvent,
    ToolCallEvent,
    ToolResultEvent,
)

if TYPE_CHECKING:
    import uuid
    from collections.abc import AsyncIterator

    from chatwright.plugins.server.metrics import ServerMetrics
    from chatwright.runtime import Runtime

log = logging.getLogger(__name__)

EVENTS = """Server-sent events, in this order:

| event | data |
|---|---|
| `token` | `TokenEvent` `{text}`: a piece of the reply (all at once if the model cannot stream) |
| `tool_call` | `ToolCallEvent` `{id, name, args}` |
| `tool_result` | `ToolResultEvent` `{id, name, result, error}` |
| `approval` | `ApprovalEvent` `{pending}`: the turn stopped at calls that wait for the user |
| `done` | `DoneEvent` `{session_id, response, tool_calls, turn_id, status, pending, usage, \
stopped}`, the last event of a turn that worked |
| `error` | `ErrorEvent` `{error, status, pending?, resets_at?, retry_after?}`, the last event \
of a turn that failed (`pending` with status 409 when the chat waits for decisions; \
`resets_at` and `retry_after` with status 429 when the token budget is spent; status 504 \
when it ran past its time limit) |
"""


class EventStreamResponse(StreamingResponse):
    media_type = "text/event-stream"


KEEPALIVE = b": keep-alive\n\n"


def sse(event: str, data: BaseModel) -> bytes:
    # Dumped in python mode so tool arguments of any type go through json's default=str.
    dumped = data.model_dump()
    try:
        payload = json.dumps(dumped, ensure_ascii=False, default=str, allow_nan=False)
    except ValueError:
        # NaN or an infinity (a row a tool read, say), which JSON cannot spell: null, as
        # POST /api/chat answers them.
        payload = json.dumps(finite(dumped), ensure_ascii=False, default=str, allow_nan=False)
    # Still JSON, and one line for every client.
    payload = payload.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    line = f"event: {event}\ndata: {payload}\n\n"
    try:
        return line.encode()
    except UnicodeEncodeError:
        # A lone surrogate (in a provider's error text, say), which UTF-8 cannot carry.
        from chatwright.history import storable_value

        return str(storable_value(line)).encode()


def finite(value: Any) -> Any:
    """``value`` with every float that JSON cannot spell (NaN, infinities) as None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        # A key JSON cannot spell either (json writes other float keys as text).
        return {
            (str(k) if isinstance(k, float) and not math.isfinite(k) else k): finite(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def tool_result(text: str) -> Any:
    """A tool's reply as ``POST /api/chat`` gives it: the JSON value, or the text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


async def refuse_spent(runtime: Runtime, user_id: str) -> None:
    """Refuse a turn before its stream starts when one of the user's budgets is spent.

    Only a refusal a status code can still carry: the turn's own check, with
    its reservation for concurrent turns, happens when it begins, and its
    refusal then is an ``error`` event with status 429.
    """
    from datetime import UTC, datetime

    from chatwright.usage import budget_states

    store = getattr(runtime.storage, "usage", None)
    settings = runtime.settings
    if store is None or (
        settings.budgets.daily_tokens is None
        and settings.budgets.monthly_tokens is None
        and await store.budget(user_id) is None
    ):
        return
    now = datetime.now(UTC)
    for state in await budget_states(store, settings, user_id, now):
        if state.limit is not None and state.used >= state.limit:
            period = "daily" if state.period == "day" else "monthly"
            raise BudgetExceededError(
                f"{{your}} {period} token budget of {state.limit} tokens is spent ({state.used} "
                f"used); it resets at {state.resets_at:%Y-%m-%d %H:%M} UTC",
                resets_at=state.resets_at,
                retry_after=(state.resets_at - now).total_seconds(),
            )


def stream_turn(
    runtime: Runtime,
    keepalive: float,
    metrics: ServerMetrics,
    user_id: str,
    agent_name: str,
    chat_id: uuid.UUID,
    message: str,
) -> EventStreamResponse:
    """Run one turn in the background and answer its events as they come."""
    from langchain_core.messages import AIMessage, ToolMessage

    from chatwright.history import storable_value
    from chatwright.limits import stopped_by

    queue: asyncio.Queue[bytes | None] = asyncio.Queue()

    async def on_token(text: str) -> None:
        # Made storable as the reply is (a NUL or a lone surrogate becomes U+FFFD), so that
        # the tokens spell what ``done`` answers and what is stored.
        await queue.put(sse("token", TokenEvent(text=storable_value(text))))

    async def on_message(message: Any) -> None:
        if isinstance(message, AIMessage):
            if stopped_by(message) is not None:
                # Said by the runtime, not streamed by the model: sent whole.
                await queue.put(sse("token", TokenEvent(text=storable_value(message.text))))
            for call in message.tool_calls:
                event = ToolCallEvent(id=call.get("id"), name=call["name"], args=call["args"])
                await queue.put(sse("tool_call", event))
        elif isinstance(message, ToolMessage):
            result = ToolResultEvent(
                id=message.tool_call_id,
                name=message.name,
                result=tool_result(message.text),
                error=message.status == "error",
            )
            await queue.put(sse("tool_result", result))

    async def run() -> None:
        started = time.perf_counter()
        try:
            turn = await runtime.chat(
                user_id, agent_name, chat_id, message, on_message=on_message, on_token=on_token
            )
        except ChatwrightError as exc:
            metrics.ended(outcome_of(exc), exc.usage)
            failed = ErrorEvent(error=str(exc), status=exc.http_status)
            if isinstance(exc, ApprovalPendingError):
                from chatwright.plugins.server.errors import pending_of

                failed.pending = pending_of(exc.actions)
            if isinstance(exc, BudgetExceededError):
                from chatwright.plugins.server.errors import resets_at, retry_after

                failed.resets_at = resets_at(exc)
                failed.retry_after = retry_after(exc)
            await queue.put(sse("error", failed))
        except Exception as exc:
            metrics.turns.labels("error").inc()
            log.exception("streamed turn failed")
            failed = ErrorEvent(error=f"internal error ({type(exc).__name__})", status=500)
            await queue.put(sse("error", failed))
        else:
            metrics.ended("ok", turn.usage)
            metrics.turn_seconds.observe(time.perf_counter() - started)
            out = ChatTurn.of(turn)
            if out.pending:
                await queue.put(sse("approval", ApprovalEvent(pending=out.pending)))
            done = DoneEvent(
                session_id=out.session_id,
                response=out.response,
                tool_calls=out.tool_calls,
                turn_id=out.turn_id,
                status=out.status,
                pending=out.pending,
                usage=out.usage,
                stopped=out.stopped,
            )
            await queue.put(sse("done", done))
        finally:
            metrics.sync(runtime.cache.stats, len(runtime.cache))
            await queue.put(None)

    async def events() -> AsyncIterator[bytes]:
        task = asyncio.create_task(run())
        getter: asyncio.Task[bytes | None] | None = None
        try:
            while True:
                # One pending get, kept across keep-alives, so that no event is lost.
                getter = getter or asyncio.create_task(queue.get())
                done, _ = await asyncio.wait({getter}, timeout=keepalive)
                if not done:
                    yield KEEPALIVE
                    continue
                item, getter = getter.result(), None
                if item is None:
                    break
                yield item
        finally:
            if getter is not None:
                getter.cancel()
            # A client that leaves does not cancel the turn: it finishes and is stored.
            await asyncio.shield(task)

    return EventStreamResponse(
        events(), headers={"Cache-Control": "no-cache, no-store", "X-Accel-Buffering": "no"}
    )
