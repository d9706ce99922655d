"""The history window made to fit a token bound (:mod:`chatwright.window`), without storage.

Windows are built from LangChain messages stored as the runtime stores them
(one :class:`~chatwright.stores.Message` each, ids ascending) and given to
:func:`~chatwright.window.fit` as a turn would. What is checked: the output
always starts at a human message and never holds a tool result without its
call (nor a call whose results were dropped); it is the longest suffix of
whole turns within the bound, exactly at the bound included; a newest turn
alone over the bound is dropped, unless the turn resumes it after a decision;
tool call arguments and tool results count; the ``model`` tokenizer is used
where a model has one and the estimate replaces it when it fails or hangs.
"""

from __future__ import annotations

import functools
import threading
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    ToolMessage,
    message_to_dict,
)

from chatwright import history, testing, window
from chatwright.approvals import PendingAction
from chatwright.settings import Settings
from chatwright.stores import Agent, Message
from chatwright.turns import TurnStart
from chatwright.window import estimate, fit

CHAT = uuid.UUID(int=7)
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def rows(messages: Sequence[BaseMessage], first_id: int = 1) -> list[Message]:
    return [
        Message(first_id + n, CHAT, "u", m.type, message_to_dict(m), NOW)
        for n, m in enumerate(messages)
    ]


def agent(**fields: Any) -> Agent:
    values: dict[str, Any] = {
        "id": 1,
        "name": "a",
        "system_prompt": "p",
        "model": "scripted:x",
        "model_settings": {},
        "history_window": 1000,
        "created_at": NOW,
        "updated_at": NOW,
    }
    return Agent(**{**values, **fields})


def start_of(
    messages: Sequence[BaseMessage], pending: Sequence[str] = (), **fields: Any
) -> TurnStart:
    waiting = [
        PendingAction(
            uuid.uuid4(),
            "u",
            "a",
            CHAT,
            uuid.uuid4(),
            1,
            "t",
            call_id,
            {},
            None,
            "pending",
            NOW,
            NOW + timedelta(days=1),
        )
        for call_id in pending
    ]
    return TurnStart("u", "a", CHAT, agent(**fields), rows(messages), "", [], pending=waiting)


@functools.cache
def conf(tokenizer: str = "estimate") -> Settings:
    return testing.settings(models={"tokenizer": tokenizer})


async def fitted(
    messages: Sequence[BaseMessage], bound: int | None, model: Any = None, **kw: Any
) -> list[BaseMessage]:
    tokenizer = kw.pop("tokenizer", "estimate")
    start = start_of(messages, history_tokens=bound, **kw)
    result = await fit(start, model, conf(tokenizer), None)  # type: ignore[arg-type]
    return result.history


def exchange(n: int, calls: int = 1, result: str = "ok", arg: str = "x") -> list[BaseMessage]:
    """One turn: a human message, an AI message calling ``calls`` tools, their results, a reply."""
    ids = [f"c{n}_{i}" for i in range(calls)]
    out: list[BaseMessage] = [HumanMessage(f"question {n}")]
    if calls:
        out.append(
            AIMessage("", tool_calls=[{"name": "t", "args": {"a": arg}, "id": i} for i in ids])
        )
        out += [ToolMessage(result, tool_call_id=i, name="t") for i in ids]
    out.append(AIMessage(f"answer {n}"))
    return out


def assert_valid(messages: Sequence[BaseMessage]) -> None:
    """Starts at a human message; every result follows its call, every call has its result."""
    if not messages:
        return
    assert isinstance(messages[0], HumanMessage), messages[0]
    pending: set[str] = set()
    for message in messages:
        if isinstance(message, ToolMessage):
            assert message.tool_call_id in pending, "a tool result without its call"
            pending.discard(message.tool_call_id)
            continue
        assert not pending, f"calls {pending} without their results"
        if isinstance(message, AIMessage):
            pending = {str(c["id"]) for c in message.tool_calls}
    assert not pending, f"calls {pending} without their results"


def texts(messages: Sequence[BaseMessage]) -> list[str]:
    return [m.text for m in messages if isinstance(m, HumanMessage)]


# --------------------------------------------------------------------------- the bound


async def test_no_bound_keeps_the_whole_window_from_its_first_human_message() -> None:
    history = exchange(0)[2:] + exchange(1) + exchange(2)
    out = await fitted(history, None)
    assert texts(out) == ["question 1", "question 2"]
    assert_valid(out)


async def test_exactly_at_the_bound_a_turn_is_kept_and_one_token_less_drops_it() -> None:
    turns = [exchange(n) for n in range(3)]
    last_two = estimate(turns[1]) + estimate(turns[2])
    history = [m for t in turns for m in t]
    assert texts(await fitted(history, last_two)) == ["question 1", "question 2"]
    assert texts(await fitted(history, last_two - 1)) == ["question 2"]
    assert texts(await fitted(history, estimate(turns[2]))) == ["question 2"]
    everything = sum(estimate(t) for t in turns)
    assert texts(await fitted(history, everything)) == ["question 0", "question 1", "question 2"]


async def test_a_newest_turn_over_the_bound_alone_is_dropped() -> None:
    history = exchange(0) + exchange(1, result="r" * 4000)
    assert await fitted(history, estimate(exchange(1, result="r" * 4000)) - 1) == []
    assert await fitted(history, 0) == []


async def test_a_turn_resumed_after_a_decision_keeps_its_open_exchange_whatever_the_bound() -> None:
    # The newest stored turn stopped at a call that waits for approval: the
    # decided result comes with the resumed turn, so the call must stay.
    held = [
        HumanMessage("delete it"),
        AIMessage("", tool_calls=[{"name": "t", "args": {"a": "x" * 2000}, "id": "held"}]),
    ]
    out = await fitted(exchange(0) + held, 1, pending=["held"])
    assert [m.type for m in out] == ["human", "ai"]
    assert out[1].tool_calls[0]["id"] == "held"  # type: ignore[attr-defined]
    # Another chat's pending call id does not make a turn resumed.
    assert await fitted(exchange(0) + held, 1, pending=["elsewhere"]) == []


async def test_tool_arguments_and_results_count() -> None:
    small, big_result, big_args = (
        exchange(1),
        exchange(1, result="r" * 800),
        exchange(1, arg="a" * 800),
    )
    assert estimate(big_result) >= estimate(small) + 200
    assert estimate(big_args) >= estimate(small) + 200
    bound = estimate(exchange(0)) + estimate(small)
    assert texts(await fitted(exchange(0) + small, bound)) == ["question 0", "question 1"]
    assert texts(await fitted(exchange(0) + big_result, bound)) == []
    assert texts(await fitted(exchange(0) + big_args, bound)) == []


async def test_an_orphan_tool_result_is_left_out_and_the_rest_is_valid() -> None:
    orphan = ToolMessage("stray", tool_call_id="nobody", name="t")
    duplicate = ToolMessage("again", tool_call_id="c1_0", name="t")
    turn = exchange(1)
    history = [*exchange(0), orphan, *turn[:3], duplicate, *turn[3:]]
    for bound in (None, 10_000):
        out = await fitted(history, bound)
        assert_valid(out)
        assert "stray" not in [m.text for m in out] and "again" not in [m.text for m in out]
        assert texts(out) == ["question 0", "question 1"]


async def test_unreadable_stored_messages_are_skipped() -> None:
    start = start_of(exchange(0), history_tokens=None)
    broken = [
        Message(100, CHAT, "u", "ai", {"type": "nonsense", "data": {"content": "?"}}, NOW),
        Message(101, CHAT, "u", "ai", {"no": "data"}, NOW),
    ]
    start.history = [*start.history, *broken, *rows(exchange(1), 102)]
    out = (await fit(start, None, conf(), None)).history  # type: ignore[arg-type]
    assert texts(out) == ["question 0", "question 1"]
    assert_valid(out)


# --------------------------------------------------------------------------- properties


@st.composite
def windows(draw: st.DrawFn) -> list[BaseMessage]:
    """Valid chats of random turns (tool calls, big results), cut at a random point."""
    turns = draw(
        st.lists(
            st.tuples(st.integers(0, 3), st.integers(0, 600), st.integers(0, 300)),
            min_size=0,
            max_size=8,
        )
    )
    messages: list[BaseMessage] = []
    for n, (calls, result, arg) in enumerate(turns):
        messages += exchange(n, calls, "r" * result, "a" * arg)
    cut = draw(st.integers(0, len(messages)))
    return messages[cut:]


@given(windows(), st.integers(0, 3000))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
async def test_any_window_fits_as_valid_model_input_within_the_bound(
    history: list[BaseMessage], bound: int
) -> None:
    out = await fitted(history, bound)
    assert_valid(out)
    assert estimate(out) <= bound
    # A suffix of the window, of whole turns: and the longest one that fits.
    full = await fitted(history, None)
    assert out == full[len(full) - len(out) :]
    if len(out) < len(full):
        starts = [i for i, m in enumerate(full) if isinstance(m, HumanMessage)]
        previous = max(i for i in starts if i < len(full) - len(out))
        assert estimate(full[previous:]) > bound


# --------------------------------------------------------------------------- tokenizers


class Counting(FakeListChatModel):
    """A model whose own tokenizer says 1,000 tokens a message."""

    def get_num_tokens_from_messages(self, messages: list[BaseMessage], tools: Any = None) -> int:
        return 1000 * len(messages)


class Failing(FakeListChatModel):
    def get_num_tokens_from_messages(self, messages: list[BaseMessage], tools: Any = None) -> int:
        raise RuntimeError("no encoding")


RELEASE = threading.Event()


class Hanging(FakeListChatModel):
    """A tokenizer stuck on a download."""

    def get_num_tokens_from_messages(self, messages: list[BaseMessage], tools: Any = None) -> int:
        RELEASE.wait(60)
        return 1


async def test_the_model_tokenizer_is_used_where_the_model_has_one() -> None:
    history = exchange(0, calls=0) + exchange(1, calls=0)  # 3 messages a turn
    model = Counting(responses=[])
    assert texts(await fitted(history, 3000, model, tokenizer="model")) == ["question 1"]
    assert texts(await fitted(history, 6000, model, tokenizer="model")) == texts(history)
    # The estimate (the setting's default) ignores the model's tokenizer.
    assert texts(await fitted(history, 3000, model)) == texts(history)


async def test_a_failing_tokenizer_gives_the_estimate() -> None:
    history = exchange(0) + exchange(1)
    bound = estimate(exchange(1))
    out = await fitted(history, bound, Failing(responses=[]), tokenizer="model")
    assert texts(out) == ["question 1"]
    assert Failing in window._failed


async def test_a_hanging_tokenizer_does_not_hold_the_turn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(window, "TOKENIZER_WAIT", 0.2)
    history = exchange(0) + exchange(1)
    bound = estimate(exchange(1))
    RELEASE.clear()
    try:
        began = time.monotonic()
        out = await fitted(history, bound, Hanging(responses=[]), tokenizer="model")
        assert texts(out) == ["question 1"]
        # While the stuck call runs, later turns do not wait for it again.
        again = await fitted(history, bound, Hanging(responses=[]), tokenizer="model")
        assert texts(again) == ["question 1"]
        assert time.monotonic() - began < 30  # far below the 60 s the tokenizer would take
    finally:
        RELEASE.set()


async def test_a_model_without_a_tokenizer_of_its_own_gets_the_estimate() -> None:
    # LangChain's base class would fetch a GPT-2 tokenizer: it is never asked.
    history = exchange(0) + exchange(1)
    bound = estimate(exchange(1))
    out = await fitted(history, bound, FakeListChatModel(responses=[]), tokenizer="model")
    assert texts(out) == ["question 1"]


def test_a_parsed_message_is_reused_only_for_the_same_content() -> None:
    from langchain_core.messages import message_to_dict

    chat = uuid.uuid4()
    at = datetime.now(UTC)

    def stored(text: str, **fields: Any) -> Message:
        data = message_to_dict(HumanMessage(text, **fields))
        return Message(10**9 + 7, chat, "u", "human", data, at)

    first = history.parsed(stored("hello"))
    assert isinstance(first, HumanMessage) and first.text == "hello"
    # Stored without an id, it gets one once (LangGraph would give it one in every run).
    assert first.id
    again = history.parsed(stored("hello"))
    assert again is first and again.id == first.id
    # The same id with other content (another database, a row rewritten): parsed anew.
    other = history.parsed(stored("another text", id="kept-id"))
    assert isinstance(other, HumanMessage) and other.text == "another text"
    assert other is not first and other.id == "kept-id"  # a stored id is kept
    # Bounded: the oldest are dropped.
    for n in range(history.PARSED_KEPT + 5):
        history.parsed(Message(n, chat, "u", "human", message_to_dict(HumanMessage("x")), at))
    assert len(history._parsed) == history.PARSED_KEPT


def _chat_rows(kinds: Sequence[tuple[str, int]], first_id: int) -> list[Message]:
    """Stored rows of a chat made of ``kinds``: (kind, n) with kind human, ai (calling n
    tools), tool (answering call n of the last AI message, or, past its calls, a call of
    an older one or of none) or unreadable."""
    from langchain_core.messages import AIMessage, ToolMessage, message_to_dict

    made: list[Message] = []
    calls: list[str] = []
    older: list[str] = []
    for index, (kind, n) in enumerate(kinds):
        message_id = first_id + index
        if kind == "unreadable":
            made.append(Message(message_id, CHAT, "u", "ai", {"type": "ai"}, NOW))
            continue
        if kind == "human":
            message: BaseMessage = HumanMessage(f"h{index}")
        elif kind == "ai":
            ids = [f"call{index}_{i}" for i in range(n)]
            older += calls
            calls = ids
            message = AIMessage(
                f"a{index}",
                tool_calls=[{"name": "t", "args": {}, "id": i, "type": "tool_call"} for i in ids],
            )
        else:
            call = calls[n] if n < len(calls) else (older[-1] if older else "nobody")
            message = ToolMessage(f"t{index}", tool_call_id=call)
        made.append(Message(message_id, CHAT, "u", message.type, message_to_dict(message), NOW))
    return made


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kinds=st.lists(
        st.tuples(st.sampled_from(["human", "ai", "tool", "unreadable"]), st.integers(0, 3)),
        min_size=1,
        max_size=40,
    ),
    size=st.integers(1, 12),
    windows=st.lists(
        st.tuples(st.integers(0, 4), st.sampled_from([0, 0, 0, 0, 1, -1]), st.booleans()),
        min_size=1,
        max_size=12,
    ),
)
@example(
    kinds=[("human", 0), ("ai", 1), ("tool", 0), ("ai", 0)],
    size=4,
    windows=[(2, 0, False), (2, 0, False)],
)
@example(  # the window slides past the start of a turn: the read starts at the next one
    kinds=[("human", 0), ("ai", 0), ("human", 0), ("ai", 0)],
    size=3,
    windows=[(2, 0, False), (1, 0, False), (1, 0, False)],
)
def test_a_window_read_on_from_the_last_is_the_window_read_whole(
    kinds: list[tuple[str, int]], size: int, windows: list[tuple[int, int, bool]]
) -> None:
    """Each turn's window read on from the chat's previous one (the rows it shares are the
    same objects) is what reading it whole gives, whatever slid out, came in or was
    stored anew (an edited row is a new object)."""
    chat_rows = _chat_rows(kinds, first_id=7 * 10**8)
    user = f"reader-{uuid.uuid4().hex}"
    end = 0
    for grown, resized, edit in windows:
        # Mostly the agent's window; now and then another history_window.
        size = max(1, size + resized)
        end = min(len(chat_rows), end + grown)
        shown = chat_rows[max(0, end - size) : end]
        if edit and shown:
            old = shown[len(shown) // 2]
            chat_rows[chat_rows.index(old)] = Message(
                old.id, old.chat_id, old.user_id, old.role, dict(old.content), old.created_at
            )
            shown = chat_rows[max(0, end - size) : end]
        start = TurnStart(user, "a", CHAT, agent(), shown, "", [])
        read = window.read_window(start)
        whole = window.readable(shown)
        assert [(r, m) for r, m in read] == whole
        assert all(a is b for (a, _), (b, _) in zip(read, whole, strict=True))
        assert all(a is b for (_, a), (_, b) in zip(read, whole, strict=True))


def test_the_kept_reads_are_bounded_whatever_the_windows() -> None:
    """Chats whose windows are empty (first turns) keep nothing, and the reads kept count
    their rows and themselves against ``READ_KEPT``: many chats with small windows
    cannot grow the memory without bound."""
    one = _chat_rows([("human", 0)], first_id=9 * 10**8)
    for n in range(window.READ_KEPT * 2):
        empty = TurnStart(f"first-{n}", "a", uuid.uuid4(), agent(), [], "", [])
        assert window.read_window(empty) == []
        small = TurnStart(f"small-{n}", "a", uuid.uuid4(), agent(), one, "", [])
        assert [row for row, _ in window.read_window(small)] == one
    kept = sum(len(read.rows) + 1 for read in window._reads.values())
    assert kept == window._read_rows <= window.READ_KEPT
    assert len(window._reads) <= window.READ_KEPT // 2


def test_the_caches_of_stored_messages_are_bounded_by_their_text_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A few chats of very long messages (a model's long replies) cannot make the parsed
    messages and the kept reads hold more than ``KEPT_CHARS`` characters: the least
    recently used go, and the weights kept add up to what is held."""
    from langchain_core.messages import message_to_dict

    from chatwright.stores import message_weight

    bound = 50_000
    monkeypatch.setattr(history, "KEPT_CHARS", bound)
    monkeypatch.setattr(window, "KEPT_CHARS", bound)
    at = datetime.now(UTC)

    def long_rows(first: int, chat_id: uuid.UUID, user: str) -> list[Message]:
        texts = [HumanMessage("q" * 4000), AIMessage("a" * 6000)]
        return [
            Message(first + i, chat_id, user, m.type, message_to_dict(m), at)
            for i, m in enumerate(texts)
        ]

    for n in range(40):
        chat_id = uuid.uuid4()
        rows_of_chat = long_rows(8 * 10**8 + 10 * n, chat_id, f"long-{n}")
        for row in rows_of_chat:
            assert history.parsed(row) is not None
        start = TurnStart(f"long-{n}", "a", chat_id, agent(), rows_of_chat, "", [])
        assert [row for row, _ in window.read_window(start)] == rows_of_chat
        parsed_weight = sum(entry[2] for entry in history._parsed.values())
        assert parsed_weight == history._parsed_chars <= bound
        read_weight = sum(read.weight for read in window._reads.values())
        assert read_weight == window._read_chars <= bound
        assert read_weight == sum(
            message_weight(row.content) for read in window._reads.values() for row in read.rows
        )
    # Forty chats of 10,000 characters each: only the last few are kept.
    assert len([k for k in history._parsed if k >= 8 * 10**8]) <= 2 * (bound // 10_000)
    assert sum(1 for _, user in window._reads if user.startswith("long-")) <= 5
    # A message heavier than the bound is not kept, and lets nothing else go.
    held = (len(history._parsed), history._parsed_chars)
    flood = message_to_dict(AIMessage("h" * bound))
    huge = Message(9 * 10**8 + 500, uuid.uuid4(), "huge", "ai", flood, at)
    assert history.parsed(huge) is not None
    assert (len(history._parsed), history._parsed_chars) == held
    # A read heavier than the bound is not kept, and lets nothing else go.
    before = dict(window._reads)
    heavy = TurnStart(
        "heavy", "a", uuid.uuid4(), agent(), long_rows(9 * 10**8, CHAT, "h") * 6, "", []
    )
    window.read_window(heavy)
    assert window._reads == before
