"""Stored summaries of what fell out of the window, through real turns on SQLite and PostgreSQL.

The agent runs on the ``scripted`` model, whose replies are consumed in order:
a summary call takes one reply, the turn's answer the next. Every model call's
input is recorded, so a test sees the summary prompt (the old summary and only
the newly fallen messages) and the system prompt the summary is shown in.

What is checked: a summary is made when messages fall out of the message
window, and stored with the turn (through the last message it covers, with
how many it covers); the next turn extends it with the newly fallen messages
alone (and the older half of the window, so that a long chat makes a summary
call about every half window); a turn where nothing new fell reuses it
without a model call; messages
dropped by the token bound are summarised too; one turn reads at most
``turns.summary_batch`` fallen messages and later turns catch up in order; a
failing summary call leaves the turn and the old summary alone, while a
summary call that runs past the turn's time limit ends the turn with the
timeout; agents without ``summarize`` never call the model for it.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import pytest
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
    message_to_dict,
)
from langchain_core.outputs import ChatResult

from chatwright.errors import TurnTimeoutError
from chatwright.history import to_store
from chatwright.plugins.models.scripted import ScriptedChatModel
from chatwright.runtime import SUMMARY_HEADING, Runtime
from chatwright.stores import message_weight
from chatwright.window import SUMMARY_INSTRUCTIONS
from tests.conftest import MakeRuntime

AGENT = "keeper"


class Calls:
    """Every scripted model call's input, in order; summary calls told apart."""

    def __init__(self) -> None:
        self.inputs: list[list[BaseMessage]] = []
        self.fail_summaries = False

    def summaries(self) -> list[str]:
        """The prompts of the summary calls (their human message)."""
        return [str(i[-1].content) for i in self.inputs if is_summary(i)]

    def systems(self) -> list[str]:
        """The system prompts of the turns' own model calls."""
        return [str(i[0].content) for i in self.inputs if not is_summary(i)]


def is_summary(messages: list[BaseMessage]) -> bool:
    first = messages[0] if messages else None
    return isinstance(first, SystemMessage) and first.content == SUMMARY_INSTRUCTIONS


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Calls:
    seen = Calls()
    original = ScriptedChatModel._agenerate

    async def recording(
        self: ScriptedChatModel, messages: list[BaseMessage], *a: Any, **k: Any
    ) -> ChatResult:
        seen.inputs.append(list(messages))
        if seen.fail_summaries and is_summary(messages):
            raise ConnectionError("the provider hung up")
        return await original(self, messages, *a, **k)

    monkeypatch.setattr(ScriptedChatModel, "_agenerate", recording)
    return seen


async def keeper(runtime: Runtime, replies: list[dict[str, Any]], **fields: Any) -> uuid.UUID:
    """The agent on the scripted model with ``replies``; a new chat of a new user with it."""
    fields = {"history_window": 4, "summarize": True, **fields}
    if await runtime.storage.agents.get(AGENT) is None:
        await runtime.storage.agents.create(
            AGENT, system_prompt="You keep notes.", model="scripted:x"
        )
    await runtime.storage.agents.update(AGENT, model_settings={"responses": replies}, **fields)
    user = f"user-{uuid.uuid4().hex[:8]}"
    session = await runtime.storage.sessions.open(user, AGENT, chat_id=uuid.uuid4())
    return session.chat_id


async def user_of(runtime: Runtime, chat_id: uuid.UUID) -> str:
    owner = await runtime.storage.sessions.chat_owner(chat_id)
    assert owner is not None
    return owner[0]


def answer(text: str) -> dict[str, Any]:
    return {"content": text}


async def test_a_summary_is_made_extended_reused_and_shown(
    runtimes: MakeRuntime, calls: Calls
) -> None:
    runtime = await runtimes()
    script = [answer("a1"), answer("a2"), answer("a3"), answer("S1"), answer("a4")]
    script += [answer("a5"), answer("S2"), answer("a6")]
    chat_id = await keeper(runtime, script)
    user = await user_of(runtime, chat_id)
    for n in (1, 2, 3):
        turn = await runtime.chat(user, AGENT, chat_id, f"h{n}")
        assert turn.response == f"a{n}"
    # Until the window (4 messages) is full, nothing fell out: no summary call.
    assert calls.summaries() == []
    assert await runtime.storage.summaries.get(user, chat_id) is None

    # Turn 4: h1 and a1 fell out of the window. The summary takes them and the older
    # half of the window (h2, a2), which leaves the history the model is sent.
    turn = await runtime.chat(user, AGENT, chat_id, "h4")
    assert turn.response == "a4"
    assert turn.usage is not None and turn.usage.model_calls == 2
    [first] = calls.summaries()
    assert "User: h1" in first and "Assistant: a1" in first
    assert "User: h2" in first and "Assistant: a2" in first
    assert "h3" not in first and "summary so far" not in first
    assert calls.systems()[-1].endswith(SUMMARY_HEADING + "S1")
    assert texts(calls.inputs[-1]) == ["h3", "a3", "h4"]
    stored = await runtime.storage.messages.page(user, chat_id, limit=100)
    summary = await runtime.storage.summaries.get(user, chat_id)
    assert summary is not None
    assert (summary.text, summary.through_id, summary.messages) == ("S1", stored[3].id, 4)

    # Turn 5: only h2 and a2 slid out of the window, and the summary has them: no call.
    turn = await runtime.chat(user, AGENT, chat_id, "h5")
    assert turn.response == "a5"
    assert turn.usage is not None and turn.usage.model_calls == 1
    assert len(calls.summaries()) == 1
    assert texts(calls.inputs[-1]) == ["h3", "a3", "h4", "a4", "h5"]
    assert calls.systems()[-1].endswith(SUMMARY_HEADING + "S1")

    # Turn 6: h3 and a3 fell out: the summary is extended with them alone, and h4, a4.
    turn = await runtime.chat(user, AGENT, chat_id, "h6")
    assert turn.response == "a6"
    second = calls.summaries()[1]
    assert "The summary so far:\n\nS1" in second
    assert "User: h3" in second and "Assistant: a3" in second and "User: h4" in second
    assert "h1" not in second and "a2" not in second and "h5" not in second
    assert texts(calls.inputs[-1]) == ["h5", "a5", "h6"]
    stored = await runtime.storage.messages.page(user, chat_id, limit=100)
    summary = await runtime.storage.summaries.get(user, chat_id)
    assert summary is not None
    assert (summary.text, summary.through_id, summary.messages) == ("S2", stored[7].id, 8)

    # A wider window: nothing new fell out, the summary is shown again without a model call,
    # and the turns it covers (back in the window) are not sent twice
    # (the changed agent is rebuilt, its script starts again: one reply, for the turn).
    await runtime.storage.agents.update(
        AGENT, history_window=8, model_settings={"responses": [answer("a7")]}
    )
    before = len(calls.inputs)
    turn = await runtime.chat(user, AGENT, chat_id, "h7")
    assert turn.response == "a7"
    assert len(calls.inputs) == before + 1 and len(calls.summaries()) == 2
    assert calls.systems()[-1].endswith(SUMMARY_HEADING + "S2")
    assert texts(calls.inputs[-1]) == ["h5", "a5", "h6", "a6", "h7"]
    assert turn.usage is not None and turn.usage.model_calls == 1
    again = await runtime.storage.summaries.get(user, chat_id)
    assert again == summary


def texts(model_input: list[BaseMessage]) -> list[str]:
    """The texts of a model call's messages after its system prompt."""
    return [m.text for m in model_input if not isinstance(m, SystemMessage)]


async def test_a_long_chat_makes_a_summary_call_about_every_half_window(
    runtimes: MakeRuntime, calls: Calls
) -> None:
    runtime = await runtimes()
    turns = 40
    script = [answer(f"a{n}") for n in range(turns)]
    # Room for the summary calls: each takes the next reply, so give plenty.
    chat_id = await keeper(runtime, script * 2, history_window=20)
    user = await user_of(runtime, chat_id)
    for n in range(turns):
        await runtime.chat(user, AGENT, chat_id, f"h{n}")
    # 80 messages, a window of 20 (10 turns): the first call when the window is full,
    # then one about every 5 turns (half a window) — never one per turn.
    made = len(calls.summaries())
    assert 5 <= made <= 8, made
    summary = await runtime.storage.summaries.get(user, chat_id)
    assert summary is not None and 40 <= summary.messages <= 70


async def test_messages_dropped_by_the_token_bound_are_summarised(
    runtimes: MakeRuntime, calls: Calls
) -> None:
    runtime = await runtimes()
    long = "x" * 400  # about 100 tokens a message: one turn of two is ~210
    script = [answer(long), answer(long), answer("S"), answer("done")]
    chat_id = await keeper(runtime, script, history_window=50, history_tokens=300)
    user = await user_of(runtime, chat_id)
    await runtime.chat(user, AGENT, chat_id, "first " + long)
    assert calls.summaries() == []  # one turn fits: nothing dropped
    await runtime.chat(user, AGENT, chat_id, "second " + long)
    assert calls.summaries() == []
    turn = await runtime.chat(user, AGENT, chat_id, "third")
    assert turn.response == "done"
    # The first turn no longer fits beside the second: it is summarised, the second is sent.
    [prompt] = calls.summaries()
    assert "User: first" in prompt and "second" not in prompt
    model_input = calls.inputs[-1]
    humans = [m.text for m in model_input if isinstance(m, HumanMessage)]
    assert humans == ["second " + long, "third"]
    stored = await runtime.storage.messages.page(user, chat_id, limit=100)
    summary = await runtime.storage.summaries.get(user, chat_id)
    assert summary is not None and (summary.through_id, summary.messages) == (stored[1].id, 2)


async def test_one_turn_reads_one_batch_and_later_turns_catch_up_in_order(
    runtimes: MakeRuntime, calls: Calls
) -> None:
    runtime = await runtimes()
    script = [answer("S1"), answer("b1"), answer("S2"), answer("b2")]
    chat_id = await keeper(runtime, script)
    user = await user_of(runtime, chat_id)
    # A long chat from before summaries were turned on: 30 turns of 2 messages.
    old = [m for n in range(30) for m in (HumanMessage(f"h{n}"), AIMessage(f"a{n}"))]
    await runtime.storage.messages.append(user, chat_id, to_store(old))
    runtime.settings.turns.summary_batch = 10
    await runtime.chat(user, AGENT, chat_id, "go on")
    [first] = calls.summaries()
    assert "User: h0" in first and "Assistant: a4" in first and "h5" not in first
    await runtime.chat(user, AGENT, chat_id, "and on")
    second = calls.summaries()[1]
    assert "S1" in second and "User: h5" in second and "Assistant: a9" in second
    assert "a4" not in second and "h10" not in second
    summary = await runtime.storage.summaries.get(user, chat_id)
    assert summary is not None and summary.messages == 20


async def test_a_failing_summary_call_keeps_the_old_summary_and_the_turn(
    runtimes: MakeRuntime, calls: Calls, caplog: pytest.LogCaptureFixture
) -> None:
    runtime = await runtimes()
    script = [answer("a1"), answer("a2"), answer("S1"), answer("a3"), answer("a4")]
    chat_id = await keeper(runtime, script, history_window=2)
    user = await user_of(runtime, chat_id)
    await runtime.chat(user, AGENT, chat_id, "h1")
    await runtime.chat(user, AGENT, chat_id, "h2")
    await runtime.chat(user, AGENT, chat_id, "h3")
    kept = await runtime.storage.summaries.get(user, chat_id)
    assert kept is not None and kept.text == "S1"
    calls.fail_summaries = True
    with caplog.at_level(logging.WARNING, logger="chatwright.window"):
        turn = await runtime.chat(user, AGENT, chat_id, "h4")
    assert turn.response == "a4"
    assert "the provider hung up" in caplog.text
    assert calls.systems()[-1].endswith(SUMMARY_HEADING + "S1")
    assert await runtime.storage.summaries.get(user, chat_id) == kept


async def test_a_summary_call_past_the_time_limit_ends_the_turn_with_the_timeout(
    runtimes: MakeRuntime, calls: Calls
) -> None:
    runtime = await runtimes()
    script = [answer("a1"), answer("a2"), {"content": "S", "sleep": 30}, answer("a3")]
    chat_id = await keeper(runtime, script, history_window=2, turn_timeout=1)
    user = await user_of(runtime, chat_id)
    await runtime.chat(user, AGENT, chat_id, "h1")
    await runtime.chat(user, AGENT, chat_id, "h2")
    with pytest.raises(TurnTimeoutError):
        await runtime.chat(user, AGENT, chat_id, "h3")
    assert await runtime.storage.summaries.get(user, chat_id) is None
    stored = await runtime.storage.messages.page(user, chat_id, limit=100)
    assert [m.content["data"]["content"] for m in stored][-1] == "h3"  # the message was kept


async def test_an_agent_without_summarize_makes_no_summary_call(
    runtimes: MakeRuntime, calls: Calls
) -> None:
    runtime = await runtimes()
    script = [answer(f"a{n}") for n in range(4)]
    chat_id = await keeper(runtime, script, history_window=2, summarize=False)
    user = await user_of(runtime, chat_id)
    for n in range(4):
        turn = await runtime.chat(user, AGENT, chat_id, f"h{n}")
        assert turn.response == f"a{n}"
    assert calls.summaries() == []
    assert SUMMARY_HEADING not in calls.systems()[-1]
    assert await runtime.storage.summaries.get(user, chat_id) is None


# -- attacks: chats side by side, imported history -------------------------------


async def test_other_chats_messages_between_turns_do_not_make_a_summary_call_every_turn(
    runtimes: MakeRuntime, calls: Calls
) -> None:
    """Attack: message ids are shared by every chat, and a busy server stores other chats'
    messages between a chat's turns. The summary took the gap for messages that fell out:
    29 summary calls in 40 turns (each one charged), and the history shrank to a few
    messages; alone, the same chat makes one about every half window."""
    runtime = await runtimes()
    turns = 40
    chat_id = await keeper(runtime, [answer(f"a{n}") for n in range(turns * 4)], history_window=20)
    user = await user_of(runtime, chat_id)
    other = (await runtime.storage.sessions.open("other-user", AGENT)).chat_id
    for n in range(turns):
        await runtime.chat(user, AGENT, chat_id, f"h{n}")
        await runtime.storage.messages.append("other-user", other, to_store([HumanMessage("x")]))
    assert len(calls.summaries()) <= 8
    sent = [i for i in calls.inputs if not is_summary(i)][-1]
    history = [m for m in sent if not isinstance(m, SystemMessage)]
    assert len(history) >= 9, [m.text for m in history]  # the newer half of 20, and the new one


async def test_a_stored_system_message_is_not_sent_after_the_system_prompt(
    runtimes: MakeRuntime, calls: Calls
) -> None:
    """Attack: history imported from another system holds system messages; sent in the
    middle of the model's input, which some providers refuse (Anthropic's client: "multiple
    non-consecutive system messages"), every turn of the chat failed."""
    runtime = await runtimes()
    chat_id = await keeper(runtime, [answer("fine")], history_window=50, summarize=False)
    user = await user_of(runtime, chat_id)
    imported = [
        SystemMessage("You are the old assistant."),
        HumanMessage("h0"),
        AIMessage("a0"),
        SystemMessage("Note from the old system"),
        HumanMessage("h1"),
        AIMessage("a1"),
    ]
    await runtime.storage.messages.append(user, chat_id, to_store(imported))
    turn = await runtime.chat(user, AGENT, chat_id, "next")
    assert turn.response == "fine"
    sent = calls.inputs[-1]
    assert isinstance(sent[0], SystemMessage)
    assert [m.text for m in sent[1:]] == ["h0", "a0", "h1", "a1", "next"]


HUGE_ARGUMENTS = '{"text": "' + "x" * 200_000  # cut off: not JSON


def cut_off_reply() -> AIMessage:
    call = {"type": "invalid_tool_call", "id": "call_cut", "name": "add_note"}
    return AIMessage(
        "", invalid_tool_calls=[{**call, "args": HUGE_ARGUMENTS, "error": "not valid JSON"}]
    )


async def test_the_token_bound_counts_call_arguments_that_are_not_json(
    runtimes: MakeRuntime, calls: Calls
) -> None:
    """Attack: a reply cut off in a long argument keeps it as an invalid call, which
    clients send back to the provider; the token bound counted it as a few tokens and sent
    200,000 characters under history_tokens = 1000."""
    runtime = await runtimes()
    chat_id = await keeper(
        runtime, [answer("fine")], history_window=50, history_tokens=1000, summarize=False
    )
    user = await user_of(runtime, chat_id)
    stored = [
        HumanMessage("write a long note"),
        cut_off_reply(),
        ToolMessage("Not run", tool_call_id="call_cut", name="add_note", status="error"),
        AIMessage("The model called add_note with arguments that are not valid JSON"),
    ]
    await runtime.storage.messages.append(user, chat_id, to_store(stored))
    await runtime.chat(user, AGENT, chat_id, "next")
    history = [m for m in calls.inputs[-1] if not isinstance(m, SystemMessage)]
    assert [m.text for m in history] == ["next"]
    # The caches of stored messages weigh such arguments too (their bound in characters).
    assert message_weight(message_to_dict(cut_off_reply())) >= len(HUGE_ARGUMENTS)
