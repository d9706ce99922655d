"""Attacks on the history window and its summaries, through the real server on every backend.

A chat's stored history is not always what the runtime wrote: messages put
there by hand or by an older version can hold a tool result that answers no
call, a call with no result, a result answered twice, at any place the window
edge may fall. With a token bound down to one token and summaries on, every
turn must still answer 200 and give the model valid input: starting at a human
message, every tool result right after its call, every call answered. A huge
tool result must not reach the model past the bound nor the summary call
whole; a model that answers the summary call with a flood is cut; a summary
is never shown to another user.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatResult

from chatwright.history import to_store
from chatwright.plugins.example import assistant as example
from chatwright.plugins.models.scripted import ScriptedChatModel
from chatwright.window import SUMMARY_CHARS, SUMMARY_INSTRUCTIONS, TRANSCRIPT_CHARS
from tests.hostile.conftest import AGENT, MakeServer, Server, bearer, open_chat, script

USER, OTHER = "eve", "mallory"


def call(call_id: str, **args: Any) -> dict[str, Any]:
    return {"name": "list_tasks", "args": args, "id": call_id, "type": "tool_call"}


BROKEN: list[BaseMessage] = [
    ToolMessage("before anything", tool_call_id="nowhere", name="list_tasks"),
    HumanMessage("h0"),
    AIMessage("", tool_calls=[call("a"), call("b")]),
    ToolMessage("result a", tool_call_id="a", name="list_tasks"),  # b never answered
    HumanMessage("h1"),
    ToolMessage("orphan z", tool_call_id="z", name="list_tasks"),
    AIMessage("reply 1"),
    AIMessage("", tool_calls=[call("c")]),  # never answered, then a human message
    HumanMessage("h2"),
    AIMessage("", tool_calls=[call("d")]),
    ToolMessage("result d", tool_call_id="d", name="list_tasks"),
    ToolMessage("result d again", tool_call_id="d", name="list_tasks"),
    AIMessage("reply 2"),
    ToolMessage("orphan y", tool_call_id="y", name="list_tasks"),
]


def assert_valid_input(messages: list[BaseMessage]) -> None:
    """What a provider accepts: system, then a human message first, every call answered."""
    assert messages[0].type == "system"
    rest = messages[1:]
    assert rest and isinstance(rest[0], HumanMessage), [m.type for m in rest]
    pending: set[str] = set()
    for message in rest:
        if isinstance(message, ToolMessage):
            assert message.tool_call_id in pending, f"result without its call: {message}"
            pending.discard(message.tool_call_id)
            continue
        assert not pending, f"calls {pending} without results before {message.type}"
        if isinstance(message, AIMessage):
            pending = {str(c["id"]) for c in message.tool_calls}
    assert not pending, f"calls {pending} without results"


@pytest.fixture
def inputs(monkeypatch: pytest.MonkeyPatch) -> list[list[BaseMessage]]:
    seen: list[list[BaseMessage]] = []
    original = ScriptedChatModel._agenerate

    async def recording(
        self: ScriptedChatModel, messages: list[BaseMessage], *a: Any, **k: Any
    ) -> ChatResult:
        seen.append(list(messages))
        return await original(self, messages, *a, **k)

    monkeypatch.setattr(ScriptedChatModel, "_agenerate", recording)
    return seen


def is_summary(messages: list[BaseMessage]) -> bool:
    return bool(messages) and messages[0].content == SUMMARY_INSTRUCTIONS


async def planted(server: Server, messages: list[BaseMessage], user: str = USER) -> str:
    """A new chat of ``user`` holding ``messages``, stored by hand."""
    chat_id: str = (await open_chat(server.client, user))["chat_id"]
    await server.runtime.storage.messages.append(user, uuid.UUID(chat_id), to_store(messages))
    return chat_id


async def turn(server: Server, chat_id: str, user: str = USER) -> dict[str, Any]:
    body = {"agent_name": AGENT, "chat_id": chat_id, "message": "next"}
    answer = await server.client.post("/api/chat", json=body, headers=bearer(user))
    assert answer.status_code == 200, answer.text
    data: dict[str, Any] = answer.json()
    return data


async def test_broken_exchanges_at_every_window_edge_give_valid_model_input(
    make_server: MakeServer, inputs: list[list[BaseMessage]]
) -> None:
    server = await make_server()
    await example.seed(server.runtime.storage, "scripted:x")
    replies = {"responses": [{"content": "summary"}, {"content": "fine"}] * 3}
    bounds = [1, 30, 120, None]
    for window in range(1, len(BROKEN) + 2):
        bound = bounds[window % len(bounds)]
        await server.runtime.storage.agents.update(
            AGENT,
            model_settings=replies,
            history_window=window,
            history_tokens=bound,
            summarize=True,
        )
        chat_id = await planted(server, BROKEN)
        inputs.clear()
        answer = await turn(server, chat_id)
        assert answer["response"] in {"fine", "summary"}, (window, bound, answer)
        turns = [i for i in inputs if not is_summary(i)]
        assert turns, (window, bound)
        for given in turns:
            assert_valid_input(given)
        history = await server.client.get(f"/api/chats/{chat_id}/messages", headers=bearer(USER))
        assert history.status_code == 200, history.text


async def test_a_huge_tool_result_stays_out_of_the_bound_and_the_summary_call(
    make_server: MakeServer, inputs: list[list[BaseMessage]]
) -> None:
    server = await make_server()
    await example.seed(server.runtime.storage, "scripted:x")
    flood = "x" * 2_000_000
    chat = [
        HumanMessage("list them"),
        AIMessage("", tool_calls=[call("big")]),
        ToolMessage(flood, tool_call_id="big", name="list_tasks"),
        AIMessage("Here they are."),
    ]
    await server.runtime.storage.agents.update(
        AGENT,
        model_settings={"responses": [{"content": "S"}, {"content": "ok"}]},
        history_tokens=1000,
        summarize=True,
    )
    chat_id = await planted(server, chat)
    answer = await turn(server, chat_id)
    assert answer["response"] == "ok"
    summary_call, turn_call = inputs
    assert is_summary(summary_call)
    assert len(str(summary_call[-1].content)) < TRANSCRIPT_CHARS + 2_000
    assert [m.type for m in turn_call] == ["system", "human"]
    assert sum(len(str(m.content)) for m in turn_call) < 10_000
    page = await server.client.get(f"/api/chats/{chat_id}/messages", headers=bearer(USER))
    assert page.json()["summary"]["text"] == "S"
    assert page.json()["summary"]["messages"] == 4


async def test_a_flood_answering_the_summary_call_is_cut_and_never_shown_to_another_user(
    make_server: MakeServer, inputs: list[list[BaseMessage]]
) -> None:
    server = await make_server()
    await example.seed(server.runtime.storage, "scripted:x")
    flood = "<script>alert(1)</script>" * 20_000
    await server.runtime.storage.agents.update(
        AGENT,
        model_settings={"responses": [{"content": flood}, {"content": "ok"}]},
        history_window=2,
        summarize=True,
    )
    chat_id = await planted(server, [HumanMessage("old"), AIMessage("older reply")] * 2)
    assert (await turn(server, chat_id))["response"] == "ok"
    page = await server.client.get(f"/api/chats/{chat_id}/messages", headers=bearer(USER))
    assert page.status_code == 200
    summary = page.json()["summary"]
    assert summary["text"] == flood[:SUMMARY_CHARS]
    assert summary["messages"] == 2
    assert str(inputs[-1][0].content).endswith(flood[:SUMMARY_CHARS])

    # Another user: the chat is not found, and nothing of the summary comes back.
    for path in (f"/api/chats/{chat_id}/messages", f"/api/chats/{chat_id}/messages?limit=1"):
        stolen = await server.client.get(path, headers=bearer(OTHER))
        assert stolen.status_code == 404, stolen.text
        assert "script" not in stolen.text
    # The other user's own chat has no summary (none of eve's shows up there).
    own = await planted(server, [HumanMessage("mine")], user=OTHER)
    mine = await server.client.get(f"/api/chats/{own}/messages", headers=bearer(OTHER))
    assert mine.status_code == 200 and mine.json()["summary"] is None


async def test_floods_from_the_model_keep_the_caches_of_messages_within_their_bound(
    make_server: MakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model that answers every turn with huge tool arguments and a huge reply, over
    many chats: what the turn path keeps of stored messages (parsed messages, kept
    reads, the turn store's messages and windows) stays within its bound of text, and
    every chat still answers and keeps all it was told."""
    from chatwright import history, window
    from chatwright.plugins.sql import turns as sql_turns

    bound = 1_000_000
    for module in (history, window, sql_turns):
        monkeypatch.setattr(module, "KEPT_CHARS", bound)
    server = await make_server()
    await example.seed(server.runtime.storage, "scripted:x")
    store = server.runtime.turns
    if isinstance(store, sql_turns.SQLTurnStore):
        store._windows.chars = bound
    flood = "f" * 300_000
    chats = []
    for n in range(6):
        flooding = script(("list_tasks", {"title": flood + str(n)}), reply=flood)
        # Then the chat's next turn reads its window (the flood) back.
        flooding["responses"].append({"content": "short"})
        await server.runtime.storage.agents.update(AGENT, model_settings=flooding)
        chat_id = (await open_chat(server.client, USER))["chat_id"]
        chats.append(chat_id)
        for said in ("go", "again"):
            answer = await server.client.post(
                "/api/chat",
                json={"agent_name": AGENT, "chat_id": chat_id, "message": said},
                headers=bearer(USER),
            )
            assert answer.status_code == 200, answer.text[:300]
        assert history._parsed_chars <= bound
        assert window._read_chars <= bound
        if isinstance(store, sql_turns.SQLTurnStore):
            assert store._message_chars <= bound
            assert store._windows._weight <= bound
    for chat_id in chats:
        got = await server.client.get(f"/api/chats/{chat_id}/messages", headers=bearer(USER))
        assert got.status_code == 200, got.text[:300]
        assert flood in got.text
