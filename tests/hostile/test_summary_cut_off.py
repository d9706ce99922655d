"""A summary call that does not answer in time (a slow provider, a long transcript).

It was made outside the limits' accounting, so one cut off by the time limit, or
by a cancelled turn, was charged nothing; and since the summary is stored only
with a turn that ends, every next turn made the same call and ran out of time
again. It now gets half the turn's time left: past that the turn goes on with
the summary it had, the call counts with its prompt's approximate tokens, and
the chat's turns make no summary call for a while.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

from chatwright.plugins.example import assistant as example
from chatwright.runtime import Runtime
from tests.hostile.test_budget_bypass import usage_rows
from tests.openai_stub import OpenAIStub
from tests.test_bounded_turns import Make, new_chat, seed
from tests.test_bounded_turns import make as make

AGENT = example.AGENT
# The first turn's message: what the summary call's transcript holds, echoed by the
# slow model a word every 0.2 s (far longer than the turn may take).
LONG = "remember " + "these words " * 40


async def past_the_window(runtime: Runtime, stub: OpenAIStub, user: str) -> uuid.UUID:
    """A chat of two turns on the fast echo model, then the agent on the slow one, with a
    window of two messages and summaries: its next turn summarises the first exchange."""
    await seed(runtime, "openai:echo", stub.model_settings())
    chat = await new_chat(runtime, user)
    await runtime.chat(user, AGENT, chat, LONG)
    await runtime.chat(user, AGENT, chat, "second")
    await runtime.storage.agents.update(
        AGENT, model="openai:slow", history_window=2, summarize=True, turn_timeout=4
    )
    return chat


async def test_a_summary_call_out_of_time_leaves_the_turn_going_and_counts(
    make: Make, sql_url: str, openai_stub: OpenAIStub, caplog: pytest.LogCaptureFixture
) -> None:
    user = f"summed-{uuid.uuid4().hex[:8]}"
    price = {"input": 1000.0, "output": 1000.0}  # per million: a thousandth a token
    runtime = await make(sql_url, usage={"prices": {"openai:slow": price}})
    chat = await past_the_window(runtime, openai_stub, user)
    before = await usage_rows(runtime, user)

    turn = await runtime.chat(user, AGENT, chat, "hi")

    assert turn.response == "echo: hi"  # the turn went on without a new summary
    assert "within half the turn's time left" in caplog.text
    assert await runtime.storage.summaries.get(user, chat) is None
    (row,) = [r for r in await usage_rows(runtime, user) if r not in before]
    # The reply's call, and the summary call cut off: counted with its prompt's tokens.
    assert row["model_calls"] == 2, row
    assert row["input_tokens"] >= len(LONG) // 4, row
    # Priced as the answered call is: every token counted is in the cost.
    assert turn.usage is not None
    tokens = turn.usage.input_tokens + turn.usage.output_tokens
    assert turn.usage.cost == pytest.approx(tokens / 1000), turn.usage

    # The chat's next turns make no summary call for a while: it would run out again.
    asked = len(openai_stub.requests)
    again = await runtime.chat(user, AGENT, chat, "hi again")
    assert again.response == "echo: hi again"
    assert len(openai_stub.requests) == asked + 1


async def test_a_turn_cancelled_during_its_summary_call_counts_it(
    make: Make, sql_url: str, openai_stub: OpenAIStub
) -> None:
    user = f"cancelled-{uuid.uuid4().hex[:8]}"
    runtime = await make(sql_url)
    chat = await past_the_window(runtime, openai_stub, user)
    before = await usage_rows(runtime, user)
    asked = len(openai_stub.requests)

    turn = asyncio.ensure_future(runtime.chat(user, AGENT, chat, "hi"))
    for _ in range(100):  # until the summary call has reached the provider
        if len(openai_stub.requests) > asked:
            break
        await asyncio.sleep(0.05)
    assert len(openai_stub.requests) == asked + 1
    turn.cancel()
    with pytest.raises(asyncio.CancelledError):
        await turn

    (row,) = [r for r in await usage_rows(runtime, user) if r not in before]
    assert row["model_calls"] == 1, row
    assert row["input_tokens"] >= len(LONG) // 4, row
