"""Review finding "turns that are not stored", replayed through the real server.

A model or a tool could produce what the database cannot hold: a NUL character
(PostgreSQL), a lone surrogate (any UTF-8 database), an argument nested
hundreds of levels deep, an integer beyond 64 bits (SQLite). Such a turn used to
vanish whole, the user's message with it, while its tool writes stayed; a deep
argument made the chat's history answer 500 from then on. Now every turn is
stored, the unstorable characters replaced by U+FFFD and deep values kept as
their JSON text, the database's refusals are tool errors the model sees, and
the history reads back. A JWT whose ``sub`` is a lone surrogate is a 401.

The scripted model's replies live in ``agents.model_settings``, which cannot
hold a NUL or a lone surrogate either, nor on SQLite a value nested ~1000 deep;
the script spells them as the markers below and the fixture puts the real
values in when the model is built.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import jwt
import pytest

from chatwright.plugins.example import assistant as example
from chatwright.plugins.models.scripted import ScriptedChatModel
from tests.hostile.conftest import SECRET, MakeServer, Server, bearer

AGENT = example.AGENT
NUL, SURROGATE, NESTED = "<NUL>", "<SURROGATE>", "<NESTED>"


def _hostile(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(NESTED):
        return nested(int(value.removeprefix(NESTED)))
    if isinstance(value, str):
        return value.replace(NUL, "\x00").replace(SURROGATE, "\ud800")
    if isinstance(value, dict):
        return {k: _hostile(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_hostile(v) for v in value]
    return value


@pytest.fixture(autouse=True)
def hostile_script(monkeypatch: pytest.MonkeyPatch) -> None:
    original = ScriptedChatModel.from_settings.__func__  # type: ignore[attr-defined]

    def from_settings(cls: type[ScriptedChatModel], settings: Any) -> ScriptedChatModel:
        model: ScriptedChatModel = original(cls, _hostile(settings))
        return model

    monkeypatch.setattr(ScriptedChatModel, "from_settings", classmethod(from_settings))


def nested(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = {"a": value}
    return value


async def turn(
    server: Server, script: list[dict[str, Any]], message: str, *, status: int = 200
) -> dict[str, Any]:
    """One turn of a new chat under ``script``; the turn's answer and the chat's history."""
    client = server.client
    await server.runtime.storage.agents.update(AGENT, model_settings={"responses": script})
    opened = await client.post("/api/sessions", json={"agent_name": AGENT}, headers=bearer("eve"))
    assert opened.status_code == 200, opened.text
    chat_id = opened.json()["chat_id"]
    body = {"agent_name": AGENT, "chat_id": chat_id, "message": message}
    answer = await client.post("/api/chat", json=body, headers=bearer("eve"))
    assert answer.status_code == status, answer.text
    history = await client.get(f"/api/chats/{chat_id}/messages", headers=bearer("eve"))
    assert history.status_code == 200, history.text
    return {"answer": answer.json(), "messages": history.json()["messages"], "chat_id": chat_id}


def no_unstorable(value: Any) -> None:
    text = json.dumps(value, ensure_ascii=False)
    assert "\x00" not in text
    assert not any("\ud800" <= c <= "\udfff" for c in text)


async def test_nul_and_lone_surrogates_from_model_and_tool_are_stored_replaced(
    make_server: MakeServer,
) -> None:
    server = await make_server()
    await example.seed(server.runtime.storage, "scripted:x")
    script = [
        {
            "tool_calls": [
                {"name": "add_task", "args": {"title": f"milk{NUL}{SURROGATE}"}},
                {"name": "list_tasks", "args": {}},
            ]
        },
        {"content": f"Done{NUL} {SURROGATE}"},
    ]
    result = await turn(server, script, "hi there")

    no_unstorable(result)
    answer, messages = result["answer"], result["messages"]
    assert answer["response"] == "Done\ufffd \ufffd"
    # The database refused the title: a tool error, and the turn went on.
    assert [(c["name"], c["error"]) for c in answer["tool_calls"]] == [
        ("add_task", True),
        ("list_tasks", False),
    ]
    assert [m["role"] for m in messages] == ["human", "ai", "tool", "tool", "ai"]
    assert messages[0]["text"] == "hi there"
    assert messages[1]["tool_calls"][0]["args"] == {"title": "milk\ufffd\ufffd"}
    assert messages[-1]["text"] == answer["response"]


async def test_deeply_nested_tool_argument_keeps_the_history_readable(
    make_server: MakeServer,
) -> None:
    server = await make_server()
    await example.seed(server.runtime.storage, "scripted:x")
    script = [
        {"tool_calls": [{"name": "add_task", "args": {"title": "deep", "extra": f"{NESTED}300"}}]},
        {"content": "Tried."},
    ]
    result = await turn(server, script, "nest it")

    messages = result["messages"]
    assert [m["role"] for m in messages] == ["human", "ai", "tool", "ai"]
    args = messages[1]["tool_calls"][0]["args"]
    assert args["title"] == "deep"
    # Kept down to a bound, then as JSON text: the whole value is still there.
    level, walked = args["extra"], 0
    while isinstance(level, dict):
        level, walked = level["a"], walked + 1
    assert isinstance(level, str)
    assert 0 < walked < 300
    assert json.loads(level) == nested(300 - walked)
    assert result["answer"]["tool_calls"][0]["args"] == args


async def test_argument_too_deep_for_the_agent_is_a_tool_error_and_the_turn_goes_on(
    make_server: MakeServer,
) -> None:
    # Nested ~950 deep, the agent's own machinery runs out of recursion before the tool
    # runs. It used to end the turn (502); the call now fails as its tool's failure would,
    # and the chat keeps the call, its result and the reply, readable.
    server = await make_server()
    await example.seed(server.runtime.storage, "scripted:x")
    script = [
        {"tool_calls": [{"name": "add_task", "args": {"extra": f"{NESTED}950"}}]},
        {"content": "Could not."},
    ]
    result = await turn(server, script, "nest it deeper")

    answer, messages = result["answer"], result["messages"]
    assert answer["response"] == "Could not."
    assert [m["role"] for m in messages] == ["human", "ai", "tool", "ai"]
    assert messages[2]["status"] == "error"
    assert "failed (RecursionError)" in messages[2]["text"]
    # The chat goes on: its next turn reads the deep call back with its window.
    client = server.client
    await server.runtime.storage.agents.update(
        AGENT, model_settings={"responses": [{"content": "Still here."}]}
    )
    body = {"agent_name": AGENT, "chat_id": result["chat_id"], "message": "and now?"}
    again = await client.post("/api/chat", json=body, headers=bearer("eve"))
    assert again.status_code == 200, again.text
    assert again.json()["response"] == "Still here."


async def test_integer_beyond_64_bits_is_a_tool_error_and_the_turn_goes_on(
    make_server: MakeServer,
) -> None:
    server = await make_server()
    await example.seed(server.runtime.storage, "scripted:x")
    script = [
        {"tool_calls": [{"name": "delete_task", "args": {"id": 2**70}}]},
        {"content": "Could not."},
    ]
    result = await turn(server, script, "delete task 2**70")

    answer, messages = result["answer"], result["messages"]
    assert answer["response"] == "Could not."
    [call] = answer["tool_calls"]
    assert call["error"]
    assert [m["role"] for m in messages] == ["human", "ai", "tool", "ai"]
    assert messages[1]["tool_calls"][0]["args"] == {"id": 2**70}
    assert messages[2]["status"] == "error"


@pytest.mark.parametrize("subject", ["\ud800", "alice\udfff"])
async def test_lone_surrogate_in_jwt_subject_is_401(make_server: MakeServer, subject: str) -> None:
    server = await make_server()
    claims = {"sub": subject, "aud": "authenticated", "exp": int(time.time()) + 86400}
    token = jwt.encode(claims, SECRET, algorithm="HS256")
    answer: httpx.Response = await server.client.get(
        "/api/sessions", headers={"Authorization": f"Bearer {token}"}
    )
    assert answer.status_code == 401, answer.text
    assert "subject" in answer.json()["error"]
