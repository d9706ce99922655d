"""The history a turn sends to its model: the stored window, made to fit, and its summary.

The window read at the start of a turn is the chat's last ``history_window``
messages (:attr:`chatwright.turns.TurnStart.history`). :func:`fit` makes it
model input in three steps:

1. **Whole exchanges.** It begins at a human message (a window cut in the
   middle of a turn loses that turn's start), and a tool result that answers
   no call of the AI message before it (a hand-edited or damaged chat) is
   left out, so no tool result reaches the model without its call. A call
   left without a result is answered later by :func:`chatwright.history.answered`.
   A turn resumed after an approval decision reads back to its own human
   message, however many messages the turn made (:func:`reach_ongoing_turn`):
   a window cut inside it would lose the call the decided results answer.
2. **The token bound.** With the agent's ``history_tokens``, whole turns (a
   human message and everything up to the next one) are dropped, oldest
   first, until the rest counts at most that many tokens; tool calls (their
   arguments) and tool results count. A turn is kept or dropped whole, so a
   call is never separated from its result. When even the newest turn alone
   is over the bound it is dropped too and the model sees only the new
   message (and the summary): the bound is the operator's promise about cost
   and context size, and it holds. One exception: a turn resumed after an
   approval decision continues the newest stored turn, whose open calls the
   decided results answer; that turn is always kept, like the new human
   message, which is never dropped.
3. **The summary** (agents with ``summarize``). Messages that fell out of the
   window, older than it or dropped by the two steps above, are summarised by
   the agent's own model and the summary is shown in the system prompt. It is
   stored with the turn (:class:`~chatwright.stores.NewSummary`: its text, the
   id of the last message it covers, how many it covers) and later turns
   reuse it as it is; when more messages have fallen out since, it is
   extended with those alone (the old summary and the new messages make the
   new summary), never recomputed from the start. An extension also takes in
   the older half of the window's turns, which then leave the history the
   model sees (the summary stands for them): so a chat past its window makes
   a summary call about every half window, not on every turn. One turn reads at most
   ``turns.summary_batch`` newly fallen messages (and a bounded transcript of
   them, see :data:`TRANSCRIPT_CHARS`); a chat with more catches up over the
   next turns. A failing summary call does not fail the turn: the old summary
   is kept and the turn goes on. Nor does a slow one: it may take half of the
   turn's time left, then it is given up the same way (counted all the same).

Counting tokens (``models.tokenizer``): ``estimate`` is LangChain's
``count_tokens_approximately``, per message: its characters (text, the
``repr`` of its tool calls, a tool result's call id, the role and name) over
four, rounded up, plus three. It needs nothing and is the same for every
model. ``model`` asks the model's own ``get_num_tokens_from_messages`` where
the model's class has one (LangChain's base version would fetch a GPT-2
tokenizer, so it is never used), in a worker thread; a tokenizer that fails or
takes longer than :data:`TOKENIZER_WAIT` (OpenAI's downloads its encoding on
first use) gives the estimate instead, and is not asked again until the slow
call has finished, or for :data:`TOKENIZER_RETRY` seconds after an error.

Step 1 is read on from the chat's last window where the two share their rows
(:func:`read_window`): a turn reads only the messages its window gained.

Longer than 450 lines because the three steps and the reading they start from
are one mechanism, each step's input the one before's output.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from langchain_core.language_models import BaseLanguageModel
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.messages.utils import count_tokens_approximately

from chatwright.history import parsed, storable_value
from chatwright.stores import KEPT_CHARS, Message, NewSummary, message_weight

if TYPE_CHECKING:
    from chatwright.settings import Settings
    from chatwright.stores import ChatSummary, Storage
    from chatwright.turns import TurnStart
    from chatwright.usage import TurnUsage

log = logging.getLogger(__name__)

TOKENIZER_WAIT = 3.0
"""Seconds a turn waits for a model's tokenizer before it uses the estimate."""
TOKENIZER_RETRY = 600.0
"""Seconds a model's tokenizer that failed is not asked again (the estimate is used)."""
MESSAGE_CHARS = 2_000
"""Longest text of one message in a summary's transcript (a huge tool result is cut)."""
TRANSCRIPT_CHARS = 24_000
"""Longest transcript one summary call reads; the messages past it wait for the next turn."""
SUMMARY_CHARS = 8_000
"""Longest summary kept (it goes into every system prompt of the chat)."""

SUMMARY_INSTRUCTIONS = (
    "You keep the summary of a conversation whose earlier messages no longer fit in the "
    "context of the assistant that takes part in it. Write a concise summary in plain text "
    "of what the later conversation may need: facts, the user's requests and preferences, "
    "decisions, results of tool calls, open questions. Answer with the summary only."
)


@dataclass
class Fitted:
    """The history to send, and what fitting it produced."""

    history: list[BaseMessage]
    summary: str | None = None
    """The chat's summary of earlier messages, for the system prompt."""
    new_summary: NewSummary | None = None
    """A summary made or extended by this turn, to store with it."""
    usage: list[TurnUsage] = field(default_factory=list)
    """Model calls made to summarise."""


Turn = list[tuple[Message, BaseMessage]]
"""One turn of the window: its stored messages, each with its model message."""


async def fit(
    start: TurnStart,
    model: Any,
    settings: Settings,
    storage: Storage,
    *,
    into: Fitted | None = None,
    until: float | None = None,
) -> Fitted:
    """The turn's history as model input, and its summary (see the module docstring).

    :param into: filled in and returned, so that the caller holds what a summary call
        cost even when the turn is cut off during it.
    :param until: when the turn runs out of time (the event loop's clock): a summary
        call may take half of what is left, then the turn goes on without it.
    """
    agent = start.agent
    if start.pending:
        await reach_ongoing_turn(start, storage)
    turns = split_turns(read_window(start))
    if agent.history_tokens is not None:
        counts = await count_turns(turns, model, settings.models.tokenizer)
        ongoing = bool(turns) and resumes(turns[-1], start)
        turns = newest_that_fit(turns, counts, agent.history_tokens, keep_last=ongoing)
    fitted = into if into is not None else Fitted([])
    fitted.history = messages_of(turns)
    if not agent.summarize:
        return fitted
    await summarise(fitted, start, turns, model, settings, storage, until=until)
    return fitted


def messages_of(turns: Sequence[Turn]) -> list[BaseMessage]:
    """The model messages of ``turns``, in order."""
    return [message for turn in turns for _, message in turn]


def after_summary(turns: Sequence[Turn], through_id: int) -> list[Turn]:
    """``turns`` without the leading ones a summary covers whole (through ``through_id``)."""
    return [turn for turn in turns if turn[-1][0].id > through_id]


# -- step 1: whole exchanges ---------------------------------------------------


def readable(stored: Sequence[Message]) -> Turn:
    """The window from its first human message, without tool results that answer no call."""
    return _read(stored, 0, [], [], set())[0]


def _read(
    stored: Sequence[Message], first: int, out: Turn, at: list[int], open_calls: set[str]
) -> tuple[Turn, list[int], set[str]]:
    """:func:`readable` of ``stored[first:]`` continued from ``out`` (each pair's index in
    ``stored`` in ``at``) with the calls left open by its last AI message."""
    for index in range(first, len(stored)):
        row = stored[index]
        message = parsed(row)
        if not isinstance(message, HumanMessage | AIMessage | ToolMessage):
            # Unreadable, or a system (or other) message stored in the chat (imported
            # history): providers take system messages only first, before the history.
            continue
        if not out and not isinstance(message, HumanMessage):
            continue
        if isinstance(message, ToolMessage):
            if message.tool_call_id not in open_calls:
                continue
            open_calls = open_calls - {message.tool_call_id}
        elif isinstance(message, AIMessage):
            open_calls = {str(c.get("id")) for c in message.tool_calls if c.get("id")}
        else:
            open_calls = set()
        out.append((row, message))
        at.append(index)
    return out, at, open_calls


READ_KEPT = 2048
"""Most stored messages of the windows :func:`read_window` keeps read, all chats together
(as many as :data:`chatwright.history.PARSED_KEPT`, so that they are mostly the same
messages); each chat's kept read counts as one more. Their texts also hold at most
:data:`chatwright.stores.KEPT_CHARS` characters together."""


@dataclass
class _Read:
    rows: Sequence[Message]
    pairs: Turn
    at: list[int]
    open_calls: set[str]
    weight: int = 0
    """What its rows weigh together (:func:`chatwright.stores.message_weight`)."""

    @property
    def size(self) -> int:
        """What it counts against :data:`READ_KEPT`: its rows and itself."""
        return len(self.rows) + 1


_reads: OrderedDict[tuple[Any, str], _Read] = OrderedDict()
_read_rows = 0
_read_chars = 0


def read_window(start: TurnStart) -> Turn:
    """:func:`readable` of the turn's window, continued from the chat's last one.

    A turn's window is mostly its chat's previous window (the same stored rows, the
    same objects: see :mod:`chatwright.plugins.sql.windows`) less a few of its oldest
    messages, plus the messages since. When it is, the pairs of the old window from its
    first human message on are the new one's (reading starts afresh at each human
    message), and only the messages since are read; otherwise the window is read whole.
    """
    global _read_rows, _read_chars
    rows = start.history
    key = (start.chat_id, start.user_id)
    last = _reads.pop(key, None)
    if last is not None:
        _read_rows -= last.size
        _read_chars -= last.weight
    if not rows:
        return []  # nothing to go on from (a chat's first turn): nothing kept
    made = _continued(last, rows) if last is not None else None
    if made is None:
        made = _Read(rows, *_read(rows, 0, [], [], set()), weight=_weight(rows))
    if made.size > READ_KEPT or made.weight > KEPT_CHARS:
        return list(made.pairs)  # more than is kept of all chats together
    _reads[key] = made
    _read_rows += made.size
    _read_chars += made.weight
    while _read_rows > READ_KEPT or _read_chars > KEPT_CHARS:
        try:
            _, oldest = _reads.popitem(last=False)
        except KeyError:  # emptied meanwhile (event loops in other threads): count again
            values = list(_reads.values())
            _read_rows = sum(read.size for read in values)
            _read_chars = sum(read.weight for read in values)
            break
        _read_rows -= oldest.size
        _read_chars -= oldest.weight
    return list(made.pairs)


def _weight(rows: Sequence[Message]) -> int:
    return sum(message_weight(row.content) for row in rows)


def _continued(last: _Read, rows: Sequence[Message]) -> _Read | None:
    """The read of ``rows`` made from ``last`` (see :func:`read_window`); None when
    ``rows`` does not go on from it."""
    if not last.rows:
        return None
    head = rows[0]
    dropped = next((i for i, row in enumerate(last.rows) if row is head), None)
    if dropped is None:
        return None
    kept = len(last.rows) - dropped
    if len(rows) < kept or any(rows[i] is not last.rows[dropped + i] for i in range(kept)):
        return None
    # The first of the old pairs left that is a human message starts the new read.
    first = next(
        (
            j
            for j, (position, (_, message)) in enumerate(zip(last.at, last.pairs, strict=True))
            if position >= dropped and isinstance(message, HumanMessage)
        ),
        None,
    )
    if first is None:
        return None
    pairs = last.pairs[first:]
    at = [position - dropped for position in last.at[first:]]
    # Weighed as it changed: the rows that came, less those that left.
    weight = last.weight - _weight(last.rows[:dropped]) + _weight(rows[kept:])
    return _Read(rows, *_read(rows, kept, pairs, at, last.open_calls), weight=weight)


def split_turns(pairs: Turn) -> list[Turn]:
    """``pairs`` (beginning at a human message) cut before every human message."""
    turns: list[Turn] = []
    for pair in pairs:
        if isinstance(pair[1], HumanMessage) or not turns:
            turns.append([])
        turns[-1].append(pair)
    return turns


ONGOING_PAGE = 200
"""Messages read at a time when a resumed turn's window is read back to its start."""
ONGOING_MOST = 5000
"""Most messages read back so: a turn's limits keep it far shorter, and a damaged chat
with no human message is not read whole."""


async def reach_ongoing_turn(start: TurnStart, storage: Storage) -> None:
    """Extend a resumed turn's window back to the turn's human message.

    A turn is resumed (``start.pending``: begun with no new message) while its chat
    holds no message after it, so the window's last human message is the turn's own.
    When the window has none, the turn made more messages than ``history_window``
    (many tool calls before the one that waited), and the messages from its human
    message on are read: the model must see the calls the decided results answer, and
    the turn's limits count its calls from that message.
    """
    rows = list(start.history)
    if any(row.role == "human" for row in rows):
        return
    before = rows[0].id if rows else None
    older: list[Message] = []
    while True:
        page = await storage.messages.page(
            start.user_id, start.chat_id, limit=ONGOING_PAGE, before=before
        )
        older = [*page, *older]
        humans = [i for i, row in enumerate(page) if row.role == "human"]
        if humans:
            start.history = [*older[humans[-1] :], *rows]
            return
        if len(page) < ONGOING_PAGE or len(older) >= ONGOING_MOST:
            return  # no human message in reach: nothing of it would be read anyway
        before = page[0].id


def resumes(turn: Turn, start: TurnStart) -> bool:
    """Whether ``turn`` is the one this turn continues: it holds a call waiting for a decision."""
    waiting = {action.tool_call_id for action in start.pending}
    return any(
        isinstance(message, AIMessage) and any(c.get("id") in waiting for c in message.tool_calls)
        for _, message in turn
    )


# -- step 2: the token bound ---------------------------------------------------


def newest_that_fit(
    turns: list[Turn], counts: Sequence[int], bound: int, *, keep_last: bool = False
) -> list[Turn]:
    """The newest turns whose counts add up to at most ``bound`` (a suffix of ``turns``).

    With ``keep_last``, the newest turn is kept whatever its count (it still
    counts against the bound for the older ones).
    """
    total = 0
    first = len(turns)
    for index in range(len(turns) - 1, -1, -1):
        total += counts[index]
        if total > bound and not (keep_last and index == len(turns) - 1):
            break
        first = index
    return turns[first:]


def estimate(messages: Sequence[BaseMessage]) -> int:
    """The estimated token count of ``messages`` (see the module docstring)."""
    return sum(_estimate_one(message) for message in messages)


def _estimate_one(message: BaseMessage) -> int:
    count = count_tokens_approximately([message])
    invalid = getattr(message, "invalid_tool_calls", None)
    if invalid:
        # Calls whose arguments are not JSON are sent back to the provider as calls too
        # (LangChain's count leaves them out): counted as the valid ones are.
        count += -(-len(repr(invalid)) // 4)
    return count


_tokenizers: ThreadPoolExecutor | None = None
_busy: dict[type, Future[list[int]]] = {}
"""Model classes whose tokenizer is still busy with a call the turn stopped waiting for."""
_failed: dict[type, float] = {}
"""Model classes whose tokenizer failed, with when it may be asked again (monotonic)."""


def own_counter(model: Any) -> Callable[[list[BaseMessage]], int] | None:
    """The model's own token counter, when its class has one."""
    method = getattr(type(model), "get_num_tokens_from_messages", None)
    if method is None or method is BaseLanguageModel.get_num_tokens_from_messages:
        return None
    counter: Callable[[list[BaseMessage]], int] = model.get_num_tokens_from_messages
    return counter


async def count_turns(turns: Sequence[Turn], model: Any, tokenizer: str) -> list[int]:
    """Each turn's token count, by the tokenizer the settings name."""
    global _tokenizers
    messages = [[message for _, message in turn] for turn in turns]
    counter = own_counter(model) if tokenizer == "model" else None
    kind = type(model)
    if counter is None or not messages or not _tokenizer_ready(kind):
        return [estimate(turn) for turn in messages]
    if _tokenizers is None:
        _tokenizers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="chatwright-tokens")
    work = _tokenizers.submit(lambda: [int(counter(turn)) for turn in messages])
    waiting = asyncio.wrap_future(work)
    # Read even when nobody waits any more, so that a late failure is not reported as lost.
    waiting.add_done_callback(lambda f: f.cancelled() or f.exception())
    done, _ = await asyncio.wait({waiting}, timeout=TOKENIZER_WAIT)
    if not done:
        _busy[kind] = work
        log.warning(
            "the tokenizer of %s took over %g s; history is counted by the estimate",
            kind.__name__,
            TOKENIZER_WAIT,
        )
        return [estimate(turn) for turn in messages]
    try:
        return waiting.result()
    except Exception as exc:
        _failed[kind] = time.monotonic() + TOKENIZER_RETRY
        log.warning(
            "the tokenizer of %s failed (%s); history is counted by the estimate",
            kind.__name__,
            " ".join(str(exc).split()) or type(exc).__name__,
        )
        return [estimate(turn) for turn in messages]


def _tokenizer_ready(kind: type) -> bool:
    busy = _busy.get(kind)
    if busy is not None:
        if not busy.done():
            return False
        del _busy[kind]
    until = _failed.get(kind)
    if until is not None:
        if time.monotonic() < until:
            return False
        del _failed[kind]
    return True


# -- step 3: the summary -------------------------------------------------------


async def summarise(
    fitted: Fitted,
    start: TurnStart,
    turns: Sequence[Turn],
    model: Any,
    settings: Settings,
    storage: Storage,
    *,
    until: float | None = None,
) -> None:
    """Fill in ``fitted``'s summary: the stored one, or one extended by the messages that fell.

    A summary call cut off (by half the turn's remaining time, ``until``, or by the
    turn's end) still counts, with its prompt's approximate tokens, in
    ``fitted.usage``: its provider charges for it though it never answered.

    Turns of the window that the summary already covers are left out of
    ``fitted``'s history (the summary stands for them). When messages have
    fallen out that it does not cover, it is extended with them and with the
    older half of the window's turns, so that the next summary call comes only
    once about half a window more has fallen out, not on every turn.
    """
    old = start.summary
    fitted.summary = old.text if old is not None else None
    after = old.through_id if old is not None else 0
    turns = after_summary(turns, after)
    fitted.history = messages_of(turns)
    cut = fallen_before(start, [pair for turn in turns for pair in turn])
    if cut is None or cut <= after + 1 or _resting(start):
        return
    # Message ids are shared by all chats: a gap between the summary's last message and
    # the first one kept may hold none of this chat's. When the window reaches back to
    # the summary and holds nothing between the two, nothing fell out.
    rows = start.history
    if rows and rows[0].id <= after and not any(after < row.id < cut for row in rows):
        return
    ahead = turns[len(turns) // 2][0][0].id if len(turns) > 1 else cut
    from chatwright.usage import TurnUsage, priced, usage_of

    request: list[BaseMessage] = []
    limit: asyncio.Timeout | None = None
    try:
        fallen = await storage.messages.page(
            start.user_id,
            start.chat_id,
            limit=settings.turns.summary_batch,
            after=after,
            before=ahead,
        )
        if not fallen:
            return
        covered, transcript = transcript_of(fallen)
        loop = asyncio.get_running_loop()
        # Half of the turn's time left at most: a summary call that cannot answer in
        # time (a slow provider, a long transcript) must not take every turn down.
        share = None if until is None else max(until - loop.time(), 0) / 2
        if share is not None and share < LEAST_SUMMARY_SHARE:
            log.warning(
                "chat %s: its summary was not extended (no time left for the call; %s)",
                start.chat_id,
                SUMMARY_SHARE_HINT,
            )
            return
        limit = asyncio.timeout(share)
        request = prompt(old, transcript)
        async with limit:
            reply = await _call(model, start, request)
    except BaseException as exc:
        if request and isinstance(exc, TimeoutError | asyncio.CancelledError):
            # Sent, never answered, yet charged: its prompt counts.
            asked = count_tokens_approximately(request)
            unanswered = TurnUsage(start.agent.model, 1, asked, 0)
            fitted.usage.append(priced(unanswered, settings.usage.prices))
        if not isinstance(exc, Exception):
            raise
        slow = limit is not None and limit.expired()
        if slow:
            _rest(start)
        why = (
            f"it did not answer within half the turn's time left, and the chat's next "
            f"{SUMMARY_REST:g} s make none ({SUMMARY_SHARE_HINT})"
            if slow
            else f"the summary call failed: {' '.join(str(exc).split()) or type(exc).__name__}"
        )
        log.warning(
            "chat %s: its summary was not extended (%s); the turn goes on with the summary it had",
            start.chat_id,
            why,
        )
        return

    fitted.usage.append(usage_of(start.agent.model, [reply], settings.usage.prices))
    text = str(storable_value(reply.text.strip()))[:SUMMARY_CHARS]
    if not text:
        log.warning(
            "chat %s: the summary call answered nothing; the old summary is kept", start.chat_id
        )
        return
    fitted.summary = text
    fitted.new_summary = NewSummary(
        text=text,
        through_id=covered[-1].id,
        messages=(old.messages if old is not None else 0) + len(covered),
    )
    fitted.history = messages_of(after_summary(turns, covered[-1].id))


SUMMARY_SHARE_HINT = "raise turns.timeout or the agent's turn_timeout, or lower turns.summary_batch"
LEAST_SUMMARY_SHARE = 0.05
"""Seconds: a summary call that would have less than this is not made."""
SUMMARY_REST = 300.0
"""Seconds after a chat's summary call ran out of its time during which that chat's
turns make none (in this process): a provider too slow for it would otherwise cost
every turn half its time and the call's prompt. The summary catches up afterwards."""
_RESTING_MOST = 10_000
_resting_until: OrderedDict[tuple[Any, str], float] = OrderedDict()


def _rest(start: TurnStart) -> None:
    key = (start.chat_id, start.user_id)
    _resting_until.pop(key, None)
    _resting_until[key] = time.monotonic() + SUMMARY_REST
    while len(_resting_until) > _RESTING_MOST:
        _resting_until.popitem(last=False)


def _resting(start: TurnStart) -> bool:
    """Whether the chat's summary calls rest after one that ran out of time."""
    until = _resting_until.get((start.chat_id, start.user_id))
    if until is None:
        return False
    if until <= time.monotonic():
        _resting_until.pop((start.chat_id, start.user_id), None)
        return False
    return True


def fallen_before(start: TurnStart, kept: Turn) -> int | None:
    """The id before which every message has fallen out; None when none can have.

    When nothing of the window was dropped and the window is not full, it
    holds the whole chat and nothing fell out (no query needed).
    """
    if kept:
        first = kept[0][0].id
        whole = len(start.history) < start.agent.history_window
        if whole and start.history and start.history[0].id == first:
            return None
        return first
    if not start.history:
        return None
    return start.history[-1].id + 1


def transcript_of(fallen: Sequence[Message]) -> tuple[list[Message], str]:
    """The messages one summary call covers, and their transcript (see the limits above)."""
    covered: list[Message] = []
    lines: list[str] = []
    size = 0
    for row in fallen:
        message = parsed(row)
        line = line_of(message) if message is not None else ""
        if covered and size + len(line) > TRANSCRIPT_CHARS:
            break
        covered.append(row)
        if line:
            lines.append(line)
            size += len(line) + 1
    return covered, "\n".join(lines)


def line_of(message: BaseMessage) -> str:
    """One message of a transcript: who said it, and what (cut at :data:`MESSAGE_CHARS`)."""
    text = message.text
    if isinstance(message, HumanMessage):
        line = f"User: {text}"
    elif isinstance(message, AIMessage):
        calls = "; ".join(f"{c['name']}({_json(c.get('args'))})" for c in message.tool_calls)
        line = "Assistant: " + text + (f" [called {calls}]" if calls else "")
    elif isinstance(message, ToolMessage):
        line = f"Tool result ({message.name or 'tool'}): {text}"
    else:
        line = f"{message.type}: {text}"
    if len(line) > MESSAGE_CHARS:
        line = line[:MESSAGE_CHARS] + f" […{len(line) - MESSAGE_CHARS} more characters]"
    return line


def _json(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError, RecursionError):
        return repr(value)


def prompt(old: ChatSummary | None, transcript: str) -> list[BaseMessage]:
    """The summary call's input: the old summary (when there is one) and the new messages."""
    if old is None:
        body = f"Summarise this conversation:\n\n{transcript}"
    else:
        body = (
            f"The summary so far:\n\n{old.text}\n\n"
            f"Extend it with these later messages of the conversation:\n\n{transcript}"
        )
    return [SystemMessage(content=SUMMARY_INSTRUCTIONS), HumanMessage(content=body)]


async def _call(model: Any, start: TurnStart, messages: list[BaseMessage]) -> AIMessage:
    """One plain call of the agent's model (no tools), on behalf of the turn's user."""
    from chatwright.tools import TurnContext, calling_as

    turn = TurnContext(
        user_id=start.user_id,
        agent_name=start.agent_name,
        chat_id=start.chat_id,
        turn_id=start.turn_id,
    )
    with calling_as(turn):
        reply = await model.ainvoke(messages)
    if not isinstance(reply, AIMessage):
        raise TypeError(f"the model answered a {type(reply).__name__}, not an AI message")
    return reply
