"""Chat history: LangChain messages to stored dicts and back, always valid as model input.

Messages are stored as LangChain message dicts (``message_to_dict``), tool
calls and tool results included, one row each. A window read back from the
store may begin in the middle of a turn; :func:`to_model_input` trims it to
begin at a human message, so that no tool result appears without the call
that asked for it. :func:`complete_prefix` keeps a failed turn's messages only
up to the last point where every tool call has its result.

:func:`storable` is the one place where what a model or a tool produced is
made fit to keep: a NUL character (which PostgreSQL text cannot hold) or a lone
surrogate (which no UTF-8 database can) becomes U+FFFD, a float that JSON
cannot spell (NaN, infinity) becomes its name, and a value nested deeper than
:data:`MAX_DEPTH` is kept as its JSON text, so that every stored message reads
back and serialises again. The runtime applies it to every message of a turn
before storing it *and* before answering, so that the answer is what was
stored, whatever the storage backend.
"""

from __future__ import annotations

import json
import logging
import math
import re
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    ToolMessage,
    message_to_dict,
    messages_from_dict,
)

from chatwright.stores import KEPT_CHARS, Message, NewMessage, message_weight

log = logging.getLogger(__name__)

# Deep enough for any real tool argument, shallow enough that a stored message
# stays far below the recursion limits of JSON encoders and serialisers.
MAX_DEPTH = 48
# NUL, and UTF-16 surrogates, which only ever appear in a Python string alone.
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
REPLACEMENT = "\ufffd"


def _text(value: str) -> str:
    return UNSTORABLE.sub(REPLACEMENT, value)


def _deep(value: Any) -> str:
    """A value nested too deeply, as JSON text (itself made storable)."""
    try:
        text = json.dumps(value, ensure_ascii=False, default=str)
    except (RecursionError, ValueError, TypeError):
        return f"<a value nested more than {MAX_DEPTH} levels deep, not kept>"
    return _text(text)


def storable_value(value: Any, depth: int = 0) -> Any:
    """``value`` (JSON-like) with the changes described in the module docstring.

    An unchanged value is returned as the same object, which tells callers that
    nothing needed changing without comparing (possibly deep) structures.
    """
    if isinstance(value, str):
        clean = _text(value)
        return value if clean == value else clean
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict | list | tuple) and depth >= MAX_DEPTH:
        return _deep(value)
    if isinstance(value, dict):
        items = [(storable_value(k, depth), storable_value(v, depth + 1)) for k, v in value.items()]
        pairs = zip(items, value.items(), strict=True)
        same = all(k is k0 and v is v0 for (k, v), (k0, v0) in pairs)
        return value if same else dict(items)
    if isinstance(value, list | tuple):
        values = [storable_value(v, depth + 1) for v in value]
        return value if all(v is v0 for v, v0 in zip(values, value, strict=True)) else values
    return value


def _unchanged(value: Any, depth: int = 0) -> bool:
    """Whether :func:`storable_value` would return ``value`` itself, found without building
    anything: a produced message almost always needs no change, and walking it with
    :func:`storable_value` costs more than dumping it."""
    kind = type(value)
    if kind is str:
        return UNSTORABLE.search(value) is None
    if value is None or kind is int or kind is bool:
        return True
    if kind is float:
        return math.isfinite(value)
    if kind is dict:
        if depth >= MAX_DEPTH:
            return False
        for key, item in value.items():
            if not (_unchanged(key, depth) and _unchanged(item, depth + 1)):
                return False
        return True
    if kind is list or kind is tuple:
        if depth >= MAX_DEPTH:
            return False
        return all(_unchanged(item, depth + 1) for item in value)
    # Anything else (a subclass, an object): as storable_value decides.
    return storable_value(value, depth) is value


def storable(message: BaseMessage) -> BaseMessage:
    """The message as it will be stored (see the module docstring); itself if unchanged."""
    return storable_with_data(message)[0]


def storable_with_data(message: BaseMessage) -> tuple[BaseMessage, dict[str, Any]]:
    """:func:`storable`, with what :func:`to_store` would store of it (computed once)."""
    data = message_to_dict(message)
    if _unchanged(data):
        return message, data
    clean = storable_value(data)
    if clean is data:
        return message, data
    changed = messages_from_dict([clean])[0]
    return changed, message_to_dict(changed)


Dumped = dict[int, tuple[BaseMessage, dict[str, Any]]]
"""Messages with their data from :func:`storable_with_data`, by ``id()`` of the message
(kept with it, so that the id is not another message's meanwhile)."""


def to_store(messages: Iterable[BaseMessage], dumped: Dumped | None = None) -> list[NewMessage]:
    """``messages`` as new rows, with the data in ``dumped`` where it holds a message."""
    out = []
    for m in messages:
        entry = dumped.get(id(m)) if dumped else None
        data = entry[1] if entry is not None and entry[0] is m else message_to_dict(m)
        out.append(NewMessage(role=m.type, content=data))
    return out


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


NOT_RUN = "Not run: this call got no result (its turn stopped before the tool ran)."


def answered(messages: Sequence[BaseMessage]) -> list[BaseMessage]:
    """``messages`` with a result for every AI tool call, as model APIs require.

    A call can be left without one: a turn that stopped for approval and was
    never decided, a process that died while an approved call ran. Such a call
    gets a result saying it was not run, right after the results its message
    did get; the messages are otherwise unchanged (the same list when complete).
    """
    out: list[BaseMessage] = []
    open_calls: dict[str, str] = {}  # id -> tool name, of the latest AI message's calls

    def close() -> None:
        for call_id, name in open_calls.items():
            out.append(
                ToolMessage(content=NOT_RUN, tool_call_id=call_id, name=name, status="error")
            )
        open_calls.clear()

    changed = False
    seen: set[str] = set()  # call ids of the AI messages so far
    renamed: dict[str, str] = {}  # of the latest AI message's calls: stored id -> id sent
    for message in messages:
        if isinstance(message, ToolMessage):
            if message.tool_call_id in renamed:
                message = message.model_copy(update={"tool_call_id": renamed[message.tool_call_id]})
                changed = True
            open_calls.pop(message.tool_call_id, None)
        elif open_calls:
            changed = True
            close()
        if isinstance(message, AIMessage):
            renamed = {}
            if message.tool_calls:
                fixed, renamed = _unique_ids(message, seen)
                changed = changed or fixed is not message
                message = fixed
        out.append(message)
        if isinstance(message, AIMessage) and message.tool_calls:
            open_calls = {str(c.get("id")): c["name"] for c in message.tool_calls if c.get("id")}
    if open_calls:
        changed = True
        close()
    return out if changed else list(messages)


def _unique_ids(message: AIMessage, seen: set[str]) -> tuple[AIMessage, dict[str, str]]:
    """``message`` with a call id that an earlier AI message's call had (history stored
    before ids were made unique, or imported) replaced by one of its own, and the ids
    replaced (stored -> sent); ``seen`` gets its ids. A copy: the message is shared."""
    renamed: dict[str, str] = {}
    calls = []
    earlier = set(seen)
    unset = False
    for position, call in enumerate(message.tool_calls):
        given = call.get("id")
        new = None
        if not given:
            # A call without an id (imported): no provider takes it, nor can a result
            # answer it; it gets one, and then a "not run" result.
            new = f"call_unset_{len(seen)}_{position}"
            unset = True
            if given == "" and "" not in renamed:
                renamed[""] = new
        elif given in earlier:
            if given not in renamed:
                n = 2
                while f"{given}_{n}" in seen:
                    n += 1
                renamed[given] = f"{given}_{n}"
            new = renamed[given]
        calls.append({**call, "id": new} if new else call)
        seen.add(new or str(given))
    if not renamed and not unset:
        return message, renamed
    extra = {k: v for k, v in message.additional_kwargs.items() if k != "tool_calls"}
    return message.model_copy(update={"tool_calls": calls, "additional_kwargs": extra}), renamed


RECOVERED_ROW_IDS = 10
"""Most row ids a recovered write's result names (:func:`recovered_writes`)."""


def recovered_writes(entries: Sequence[Any]) -> list[BaseMessage]:
    """The calls and results of writes whose turn stopped before storing them, from
    their audit entries (``chatwright.approvals.AuditEntry``, oldest first): one AI
    message calling each entry's tool with its arguments as the audit log keeps them
    (secrets redacted), and a result per call saying that the write was made, so that
    the model does not make it again. Empty for no entries."""
    if not entries:
        return []
    calls = []
    results: list[BaseMessage] = []
    for entry in entries:
        call_id = f"audit-{entry.id}"
        calls.append(
            {"name": entry.tool_name, "args": dict(entry.args), "id": call_id, "type": "tool_call"}
        )
        ids = [str(i) for i in entry.row_ids]
        what = entry.operation + (f" on {entry.table}" if entry.table else "")
        if ids:
            shown = ", ".join(ids[:RECOVERED_ROW_IDS])
            more = len(ids) - RECOVERED_ROW_IDS
            what += f", row{'s' if len(ids) > 1 else ''} {shown}" + (
                f" and {more} more" if more > 0 else ""
            )
        text = (
            f"{entry.tool_name} ran and its write was made ({what}; audit entry {entry.id}), "
            "but its turn stopped before this answer was kept; do not run it again"
        )
        results.append(
            ToolMessage(content=text, tool_call_id=call_id, name=entry.tool_name, status="success")
        )
    return [AIMessage(content="", tool_calls=calls), *results]


PARSED_KEPT = 2048
"""Most stored messages whose parsed form is kept for the next turns (see :func:`parsed`)."""

_parsed: OrderedDict[int, tuple[Any, BaseMessage, int]] = OrderedDict()
_parsed_chars = 0
"""What the messages in ``_parsed`` weigh together (:func:`chatwright.stores.message_weight`)."""


def parsed(stored: Message) -> BaseMessage | None:
    """A stored message as a LangChain message; None when it cannot be read as one.

    A chat's window is read again every turn, and parsing (validating) each of its
    messages costs more than the turn's statements, so the last ``PARSED_KEPT``
    parsed are kept by id, each with the content it came from, and one is reused only
    for a message of the same id and equal content. Their texts hold at most
    :data:`~chatwright.stores.KEPT_CHARS` characters together.

    The message is shared: every turn that reads the stored message gets the same
    object, as an application that keeps its chat in a list passes the same messages to
    each run. Nothing of chatwright's or LangChain's changes a message it is given;
    LangGraph gives a message without an id one as it enters a run's state, so a
    message stored without one gets one here, once, and no run writes to it.
    A message is a value: code that must change one (a plugin's tool reading the
    run's state) makes a changed copy (``model_copy(update=...)``), as LangChain's
    own middleware does.
    """
    global _parsed_chars
    content = stored.content
    if "data" not in content:
        return None
    kept = _parsed.get(stored.id)
    # The same content object most turns (the storage keeps what it read before).
    if kept is not None and (kept[0] is content or kept[0] == content):
        _parsed.move_to_end(stored.id)
        return kept[1]
    try:
        message = messages_from_dict([dict(content)])[0]
    except (KeyError, TypeError, ValueError) as exc:
        log.warning("message %s of chat %s is not readable: %s", stored.id, stored.chat_id, exc)
        return None
    if message.id is None:
        message.id = str(uuid.uuid4())
    try:
        if kept is not None:
            _parsed_chars -= _parsed.pop(stored.id)[2]
        weight = message_weight(content)
        if weight > KEPT_CHARS:
            return message  # heavier than all that is kept: kept not, nor lets others go
        _parsed[stored.id] = (content, message, weight)
        _parsed_chars += weight
        while _parsed and (len(_parsed) > PARSED_KEPT or _parsed_chars > KEPT_CHARS):
            _parsed_chars -= _parsed.popitem(last=False)[1][2]
    except KeyError:  # changed meanwhile (event loops in other threads): weigh again
        _parsed_chars = sum(entry[2] for entry in list(_parsed.values()))
    return message
