"""A turn resumed after a decision, when the turn made more messages than the window.

The window was the chat's last ``history_window`` messages, cut inside the turn:
the model got the decided call's result without the AI message that made the
call (a request providers refuse), and the turn's call limits, counted from its
human message, started again at each decision. The resumed turn now reads back
to its own human message.
"""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage

from chatwright.plugins.example import assistant as example
from chatwright.runtime import Runtime
from tests.test_bounded_turns import Make, new_chat, seed
from tests.test_bounded_turns import make as make

AGENT = example.AGENT
USER = "resumer"
LIST = {"tool_calls": [{"name": "list_tasks", "args": {}}]}
ADD = {"tool_calls": [{"name": "add_task", "args": {"title": "milk"}}]}


@pytest.fixture
def inputs(model_inputs: list[list[BaseMessage]]) -> list[list[BaseMessage]]:
    """What each call of the scripted model was sent."""
    return model_inputs


def unanswerable(messages: list[BaseMessage]) -> list[str]:
    """Ids of tool results that no call of the AI message before them made."""
    open_ids: set[str] = set()
    orphans = []
    for message in messages:
        if isinstance(message, AIMessage):
            open_ids = {str(c["id"]) for c in message.tool_calls}
        elif isinstance(message, ToolMessage):
            if message.tool_call_id not in open_ids:
                orphans.append(message.tool_call_id)
        else:
            open_ids = set()
    return orphans


async def waiting_turn(runtime: Runtime, script: list[dict[str, Any]], **fields: Any) -> Any:
    """A turn of the example agent on ``script`` that stops at add_task (approval required)."""
    await seed(runtime, "scripted:x", {"responses": script})
    for row in await runtime.storage.tools.list(AGENT):
        if row.name == "add_task":
            await runtime.storage.tools.update(row.id, approval="required")
    if fields:
        await runtime.storage.agents.update(AGENT, **fields)
    chat = await new_chat(runtime, USER)
    turn = await runtime.chat(USER, AGENT, chat, "look, then add milk")
    assert turn.status == "approval_required", turn.response
    (action,) = turn.pending
    return action


@pytest.mark.parametrize("fields", [{}, {"summarize": True}])
@pytest.mark.parametrize("approve", [True, False])
async def test_the_resumed_turn_sends_the_call_its_result_answers(
    make: Make, sql_url: str, inputs: list[list[BaseMessage]], fields: Any, approve: bool
) -> None:
    runtime = await make(sql_url)
    script = [LIST, LIST, ADD, {"content": "SUMMARY"}, {"content": "done"}]
    action = await waiting_turn(runtime, script, history_window=3, **fields)

    resumed = await runtime.decide(USER, action.id, approve)

    assert resumed.status == "done", resumed.response
    sent = inputs[-1]
    assert unanswerable(sent) == [], [type(m).__name__ for m in sent]
    # The whole turn, from its human message: the call the decided result answers too.
    assert any(isinstance(m, HumanMessage) and "add milk" in m.text for m in sent)
    assert any(
        isinstance(m, AIMessage) and any(c["id"] == action.tool_call_id for c in m.tool_calls)
        for m in sent
    )


async def test_a_long_turn_under_the_default_window_resumes_whole(
    make: Make, sql_url: str, inputs: list[list[BaseMessage]]
) -> None:
    # 13 rounds of 3 parallel reads (52 messages) before the call that waits: more than
    # the default window of 50.
    three = {"tool_calls": [{"name": "list_tasks", "args": {}}] * 3}
    runtime = await make(sql_url, turns={"max_tool_calls": 100, "max_model_calls": 30})
    action = await waiting_turn(runtime, [three] * 13 + [ADD, {"content": "ok"}])

    resumed = await runtime.decide(USER, action.id, True)

    assert resumed.status == "done" and resumed.response == "ok"
    assert unanswerable(inputs[-1]) == []
    assert isinstance(inputs[-1][1], HumanMessage)


async def test_a_decision_does_not_give_the_turn_its_call_limits_again(
    make: Make, sql_url: str, inputs: list[list[BaseMessage]]
) -> None:
    runtime = await make(sql_url, turns={"max_model_calls": 3, "max_tool_calls": 100})
    action = await waiting_turn(runtime, [LIST, LIST, ADD, *[LIST] * 10], history_window=4)
    before = len(inputs)

    resumed = await runtime.decide(USER, action.id, True)

    # The turn made its 3 model calls before the decision: none more after it.
    assert len(inputs) == before, f"{len(inputs) - before} model calls after the decision"
    assert resumed.stopped is not None
