"""Chat history: LangChain messages to stored dicts and back, always valid as model input.

Messages are stored as LangChain message dicts (``message_to_dict``), tool
calls and tool results included, one row each. A window read back from the
store may begin in the middle of a turn; :func:`to_model_input` trims it to
begin at a human message, so that no tool result appears without the call
that asked for it. :func:`complete_prefix` keeps a failed turn's messages only
up to the last point where every tool call has its result.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    ToolMessage,
    message_to_dict,
    messages_from_dict,
)

from chatwright.stores import Message, NewMessage


def to_store(messages: Iterable[BaseMessage]) -> list[NewMessage]:
    return [NewMessage(role=m.type, content=message_to_dict(m)) for m in messages]


def to_model_input(stored: Sequence[Message]) -> list[BaseMessage]:
    messages = messages_from_dict([dict(m.content) for m in stored if "data" in m.content])
    first_human = next((i for i, m in enumerate(messages) if isinstance(m, HumanMessage)), None)
    return [] if first_human is None else messages[first_human:]


def complete_prefix(messages: Sequence[BaseMessage]) -> list[BaseMessage]:
    """The longest prefix in which every AI tool call is followed by its result."""
    kept: list[BaseMessage] = []
    pending: set[str] = set()
    safe = 0
    for message in messages:
        kept.append(message)
        if isinstance(message, AIMessage):
            pending |= {str(c["id"]) for c in message.tool_calls if c.get("id")}
        elif isinstance(message, ToolMessage):
            pending.discard(message.tool_call_id)
        if not pending:
            safe = len(kept)
    return kept[:safe]
