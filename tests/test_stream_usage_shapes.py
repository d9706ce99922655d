"""A streamed turn counts the tokens the same turn counts when it is not streamed.

A provider reports a streamed call's usage on its chunks, spread in its own
shape (see :mod:`tests.streamed_usage`): input on the first chunk and output on
the last, all of it on the last, output spread over the pieces, or running
totals repeated on every chunk. Each turn below runs twice, for two users (the
script replays from its start for each): once answered whole, once streamed
with ``on_token``; the turn's usage, the stored usage and the spending the
budgets count must be the same, and the exact counts the script reports.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from chatwright import testing
from chatwright.plugins.example import assistant as example
from chatwright.registry import LoadPolicy, Plugins
from chatwright.runtime import Runtime, Turn
from chatwright.usage import TurnUsage
from tests.streamed_usage import StreamedModels

AGENT = example.AGENT
MODEL_CALLS = 2
INPUT = 100 + 150
OUTPUT = 20 + 12
CACHED = 60
SCRIPT: list[dict[str, Any]] = [
    {
        "tool_calls": [{"name": "list_tasks", "args": {}}],
        "usage": {"input_tokens": 100, "output_tokens": 20, "cached": CACHED},
    },
    {
        "content": "There are no tasks yet, it seems.",
        "usage": {"input_tokens": 150, "output_tokens": 12},
    },
]

Make = Callable[[str], Awaitable[Runtime]]


@pytest.fixture
async def make(tmp_path: Path) -> AsyncIterator[Make]:
    """A started runtime whose example agent runs ``streamed:<shape>`` on :data:`SCRIPT`."""
    made: list[Runtime] = []

    async def start(shape: str) -> Runtime:
        plugins = Plugins.load(LoadPolicy())
        plugins.register(StreamedModels(), "streamed-models")
        url = f"sqlite+aiosqlite:///{tmp_path}/{shape}.db"
        runtime = Runtime(testing.settings(plugins, storage={"url": url}), plugins)
        await runtime.start(upgrade=True)
        made.append(runtime)
        model = f"streamed:{shape}"
        await example.seed(runtime.storage, model)
        await runtime.storage.agents.update(
            AGENT, model=model, model_settings={"responses": SCRIPT}
        )
        return runtime

    yield start
    for runtime in made:
        await runtime.close()


async def one_turn(runtime: Runtime, *, streamed: bool) -> tuple[str, Turn, list[str]]:
    """A turn of a new user on a new chat; the user, the turn and the tokens it streamed."""
    user = f"{'streamed' if streamed else 'whole'}-{uuid.uuid4().hex[:8]}"
    session = await runtime.storage.sessions.open(user, AGENT, chat_id=uuid.uuid4())
    tokens: list[str] = []

    async def on_token(text: str) -> None:
        tokens.append(text)

    turn = await runtime.chat(
        user, AGENT, session.chat_id, "what is on my list?", on_token=on_token if streamed else None
    )
    return user, turn, tokens


async def counted(runtime: Runtime, user: str) -> dict[str, Any]:
    """What the storage holds of the user's usage, and what the budgets count."""
    (line,) = await runtime.storage.usage.lines(user)
    spent = await runtime.storage.usage.spent(user, datetime.now(UTC))
    return {
        "model_calls": line.model_calls,
        "input_tokens": line.input_tokens,
        "output_tokens": line.output_tokens,
        "cached_tokens": line.cached_tokens,
        "day": spent.day,
        "month": spent.month,
    }


EXPECTED = {
    "model_calls": MODEL_CALLS,
    "input_tokens": INPUT,
    "output_tokens": OUTPUT,
    "cached_tokens": CACHED,
    "day": INPUT + OUTPUT,
    "month": INPUT + OUTPUT,
}


async def check_same_usage(runtime: Runtime, shape: str) -> None:
    whole_user, whole, no_tokens = await one_turn(runtime, streamed=False)
    streamed_user, streamed, tokens = await one_turn(runtime, streamed=True)
    reply = str(SCRIPT[-1]["content"])
    assert whole.response == streamed.response == reply
    assert not no_tokens
    # Really streamed: the reply came in pieces, which spell it.
    assert len(tokens) > 2 and "".join(tokens) == reply
    expected_usage = TurnUsage(f"streamed:{shape}", MODEL_CALLS, INPUT, OUTPUT, CACHED)
    assert whole.usage == expected_usage
    assert streamed.usage == expected_usage
    assert await counted(runtime, whole_user) == EXPECTED
    assert await counted(runtime, streamed_user) == EXPECTED


@pytest.mark.parametrize("shape", ["first-last", "final", "deltas"])
async def test_a_streamed_turn_counts_the_usage_of_the_same_turn_answered_whole(
    make: Make, shape: str
) -> None:
    await check_same_usage(await make(shape), shape)
