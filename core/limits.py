"""The bounds of a turn: its time limit and its most model and tool calls.

Each comes from the agent row when it sets one (``turn_timeout``,
``max_model_calls``, ``max_tool_calls``), else from the ``turns`` settings.
The runtime enforces the time limit; the call limits are a middleware of the
built agent (:func:`turn_limits`), which also ends a turn at a reply whose
tool calls are not valid JSON, and gives a reply's calls ids of their own when
the provider repeated one or gave none (:func:`unique_call_ids`). Both end the
turn with a message to the user, stored with the chat and marked
(:func:`stopped_by`), never with an error: the chat goes on from there.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from langchain_core.messages import AIMessage, BaseMessage, ToolMessage

    from chatwright.settings import Settings
    from chatwright.stores import Agent


@dataclass(frozen=True)
class Limits:
    timeout: float
    """Seconds the turn may run (model calls, tools, a summary), waiting for the chat excluded."""
    max_model_calls: int
    max_tool_calls: int


def limits_of(agent: Agent, settings: Settings) -> Limits:
    turns = settings.turns
    return Limits(
        timeout=agent.turn_timeout if agent.turn_timeout is not None else turns.timeout,
        max_model_calls=(
            agent.max_model_calls if agent.max_model_calls is not None else turns.max_model_calls
        ),
        max_tool_calls=(
            agent.max_tool_calls if agent.max_tool_calls is not None else turns.max_tool_calls
        ),
    )


# The key, in a stop message's response_metadata, naming why the turn stopped.
model_calls_started: ContextVar[list[Any] | None] = ContextVar(
    "chatwright_model_calls_started", default=None
)
"""Where :func:`turn_limits` adds the request of each model call it lets through, while
a turn's runtime sets a list there (a call cut off before it answers is counted from
its prompt: :func:`chatwright.usage.cut_off_call`)."""

STOPPED = "chatwright_stopped"


def stopped_by(message: BaseMessage) -> str | None:
    """Why the turn stopped, when ``message`` is a stop message of :func:`turn_limits`."""
    reason = message.response_metadata.get(STOPPED) if message.type == "ai" else None
    return reason if isinstance(reason, str) else None


def stop_message(reason: str, text: str) -> AIMessage:
    from langchain_core.messages import AIMessage

    return AIMessage(content=text, response_metadata={STOPPED: reason})


def _this_turn(messages: Sequence[BaseMessage]) -> Sequence[BaseMessage]:
    """The messages after the turn's human message (a resumed turn's earlier calls too)."""
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].type == "human":
            return messages[i + 1 :]
    return messages


def not_run(call_id: str | None, name: str, reason: str) -> ToolMessage:
    from langchain_core.messages import ToolMessage

    return ToolMessage(
        content=f"Not run: {reason}", tool_call_id=call_id or "", name=name, status="error"
    )


def unique_call_ids(reply: AIMessage, before: Sequence[BaseMessage] = ()) -> AIMessage | None:
    """``reply`` with an id of its own for each of its tool calls, or None when every call
    has one already.

    A provider may give two calls of one reply the same id, or none, or reuse an id
    of an earlier reply (one that numbers its calls from 0 in every reply): the calls
    would be run, and the stored history then refused by any API that holds ids to
    be unique (the chat could not go on). An id that is empty, repeated, or taken by
    a call among ``before`` (the messages the model was given) is replaced by a new
    one, in the calls and in the calls with invalid arguments; the provider's raw
    copy of the calls (``additional_kwargs["tool_calls"]``) is then left out, as the
    clients send the parsed calls.
    """
    if not reply.tool_calls and not reply.invalid_tool_calls:
        return None
    import uuid

    from langchain_core.messages import AIMessage

    taken = {
        c.get("id")
        for m in before
        if isinstance(m, AIMessage)
        for c in [*m.tool_calls, *m.invalid_tool_calls]
    }
    ids = [c.get("id") for c in [*reply.tool_calls, *reply.invalid_tool_calls]]
    if all(ids) and len(set(ids)) == len(ids) and taken.isdisjoint(ids):
        return None
    seen: set[str | None] = set(taken)

    def fresh(given: str | None) -> str:
        made = given if given and given not in seen else f"call_{uuid.uuid4().hex[:24]}"
        seen.add(made)
        return made

    calls = [{**c, "id": fresh(c.get("id"))} for c in reply.tool_calls]
    invalid = [{**c, "id": fresh(c.get("id"))} for c in reply.invalid_tool_calls]
    extra = {k: v for k, v in reply.additional_kwargs.items() if k != "tool_calls"}
    return reply.model_copy(
        update={"tool_calls": calls, "invalid_tool_calls": invalid, "additional_kwargs": extra}
    )


CUT_SHORT = frozenset(
    {
        "length",
        "max_tokens",
        "max_output_tokens",
        "content_filter",
        "incomplete",
        "model_context_window_exceeded",  # Anthropic
        "model_length",  # Mistral
    }
)
"""Finish reasons (lower-cased) of a reply the provider stopped before it was complete."""


def cut_short(reply: AIMessage) -> str | None:
    """Why ``reply`` is incomplete, when its provider says so, else None.

    A reply stopped at the provider's output limit (``finish_reason: length``,
    ``stop_reason: max_tokens``...) or by its content filter may end in the middle of
    a tool call's arguments. Answered whole, such arguments are not JSON (an invalid
    call); streamed, LangChain parses the chunks leniently and makes a complete-looking
    call of what arrived (``{"title": "transfer 100 EUR to acc``), which must not run.
    An OpenAI-compatible stream that ended with no finish reason at all (the body
    ended early) is incomplete too.
    """
    meta = reply.response_metadata or {}
    for key in ("finish_reason", "stop_reason", "done_reason", "stopReason", "status"):
        value = meta.get(key)
        if isinstance(value, str) and value.lower() in CUT_SHORT:
            return f"{key} {value!r}"
    if meta.get("model_provider") == "openai" and not any(
        k in meta for k in ("finish_reason", "status")
    ):
        return "the stream ended with no finish_reason"
    return None


def explained(reply: AIMessage) -> AIMessage | None:
    """``reply`` with words when it has none and its provider says why: its refusal (a
    model's refusal comes in a field of its own) or the reason it stopped the reply (its
    content filter, its output limit). None when there is nothing to say: an empty
    answer reached the user, and the chat, as an empty reply with no reason."""
    if reply.text or reply.tool_calls or reply.invalid_tool_calls:
        return None
    refusal = reply.additional_kwargs.get("refusal")
    if isinstance(refusal, str) and refusal.strip():
        text = refusal.strip()
    else:
        short = cut_short(reply)
        if short is None:
            return None
        text = f"(No answer: the provider stopped the reply, {short}.)"
    return reply.model_copy(update={"content": text})


def recursion_limit(limits: Limits, middlewares: int) -> int:
    """A LangGraph step limit the model and tool limits always reach first.

    One model call is a before-model step, the model, an after-model step per
    middleware and the tools: well under ``middlewares + 4`` steps.
    """
    return (limits.max_model_calls + 2) * (middlewares + 5) + 25


def turn_limits(agent_name: str, limits: Limits) -> Any:
    """The middleware that ends a turn at its model or tool call limit, or at a reply
    whose tool calls have arguments that are not valid JSON.

    It counts the turn's messages (those after its human message), so a turn
    resumed after a decision counts the calls made before it. A reply whose tool
    calls would pass ``max_tool_calls`` has none of them run: each gets a "not
    run" result, so the stored history stays one a model API accepts. The turn
    then ends with a message to the user saying why (see :func:`stopped_by`).

    It wraps the model call rather than adding steps before and after it: a
    graph step costs as much as a cheap model call, and a turn has one model
    call per round of tools. A reply it ends is returned with its "not run"
    results and the stop message, which calls no tool, so the run ends there;
    the other middlewares' after-model steps see the stop message last.
    """
    from langchain.agents.middleware import AgentMiddleware, ModelResponse
    from langchain_core.messages import AIMessage

    def model_calls(turn: Sequence[BaseMessage]) -> int:
        return sum(1 for m in turn if isinstance(m, AIMessage) and stopped_by(m) is None)

    def tool_calls(turn: Sequence[BaseMessage]) -> int:
        return sum(len(m.tool_calls) for m in turn if isinstance(m, AIMessage))

    def before(messages: Sequence[BaseMessage]) -> list[BaseMessage] | None:
        """The turn's end before a model call past its limit, or None."""
        if model_calls(_this_turn(messages)) < limits.max_model_calls:
            return None
        text = (
            f"I stopped here: this turn reached its limit of {limits.max_model_calls} "
            f"model calls (max_model_calls of agent {agent_name!r}). Ask me to go on, "
            "or raise the limit."
        )
        return [stop_message("max_model_calls", text)]

    def after(messages: Sequence[BaseMessage], last: AIMessage) -> list[BaseMessage] | None:
        """What follows ``last`` when it ends the turn (``messages`` end with it), or None."""
        short = cut_short(last) if (last.tool_calls or last.invalid_tool_calls) else None
        if short is not None:
            calls = [*last.invalid_tool_calls, *last.tool_calls]
            names = ", ".join(sorted({c.get("name") or "(unnamed)" for c in calls}))
            reason = f"the reply was cut off before its tool calls were complete ({short})"
            unrun = [not_run(c.get("id"), c.get("name") or "", reason) for c in calls]
            text = (
                f"The model's reply was cut off ({short}) while it was calling {names}, so "
                "nothing was run. Please try again, perhaps asking for less at once."
            )
            return [*unrun, stop_message("invalid_tool_call", text)]
        if last.invalid_tool_calls:
            names = ", ".join(
                sorted({c.get("name") or "(unnamed)" for c in last.invalid_tool_calls})
            )
            reason = "the reply had tool calls whose arguments are not valid JSON"
            results: list[BaseMessage] = [
                not_run(c.get("id"), c.get("name") or "", reason)
                for c in [*last.invalid_tool_calls, *last.tool_calls]
            ]
            text = (
                f"The model called {names} with arguments that are not valid JSON, so "
                "nothing was run. Please try again, perhaps in other words."
            )
            return [*results, stop_message("invalid_tool_call", text)]
        if not last.tool_calls or tool_calls(_this_turn(messages)) <= limits.max_tool_calls:
            return None
        reason = f"the turn reached its limit of {limits.max_tool_calls} tool calls"
        text = (
            f"I stopped here: this turn reached its limit of {limits.max_tool_calls} "
            f"tool calls (max_tool_calls of agent {agent_name!r}), so my last "
            f"{'call was' if len(last.tool_calls) == 1 else 'calls were'} not run. "
            "Ask me to go on, or raise the limit."
        )
        return [
            *[not_run(c.get("id"), c["name"], reason) for c in last.tool_calls],
            stop_message("max_tool_calls", text),
        ]

    class TurnLimits(AgentMiddleware):
        async def awrap_model_call(self, request: Any, handler: Any) -> Any:
            messages = request.state["messages"]
            stop = before(messages)
            if stop is not None:
                return ModelResponse(result=stop)
            started = model_calls_started.get()
            if started is not None:
                # Should the call be cut off before it answers, its prompt is counted.
                started.append(request)
            response = await handler(request)
            result = getattr(response, "model_response", response)
            replies = [m for m in result.result if isinstance(m, AIMessage)]
            if not replies:
                return response
            fixed = unique_call_ids(replies[-1], messages) or explained(replies[-1])
            if fixed is not None:
                result.result = [fixed if m is replies[-1] else m for m in result.result]
                replies[-1] = fixed
            ending = after([*messages, *result.result], replies[-1])
            if ending is None:
                return response
            result.result = [*result.result, *ending]
            return response

    return TurnLimits()
