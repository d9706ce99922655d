"""An ``http`` row in a real chatwright runtime on SQLite.

The agent's model is chatwright's ``scripted`` model: its tool call goes
through the agent loop to the tool, the tool reaches the local server, and the
result is in the turn. ``chatwright.tools.check_tools`` reports bad rows the
way ``chatwright tools check`` prints them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from local_server import LocalServer

from chatwright.registry import Plugins
from chatwright.runtime import Runtime
from chatwright.settings import Settings
from chatwright.tools import check_tools

AGENT = "fetcher"
USER = "alice"


@pytest.fixture
async def runtime(tmp_path: Path, plugins: Plugins) -> AsyncIterator[Runtime]:
    settings = Settings(storage={"url": f"sqlite+aiosqlite:///{tmp_path}/h.db"})  # type: ignore[arg-type, call-arg]
    rt = Runtime(settings, plugins)
    await rt.start(upgrade=True)
    try:
        yield rt
    finally:
        await rt.close()


def item_tool(server: LocalServer) -> dict[str, Any]:
    return {
        "method": "GET",
        "url": f"{server.base}/items/{{item_id}}",
        "allowed_hosts": ["127.0.0.1"],
        "args": {"item_id": {"type": "string", "required": True, "description": "The id"}},
    }


async def agent_with_script(runtime: Runtime, *calls: dict[str, Any]) -> None:
    responses = [{"tool_calls": [call]} for call in calls]
    await runtime.storage.agents.create(
        AGENT,
        system_prompt="You fetch items.",
        model="scripted:x",
        model_settings={"responses": [*responses, {"content": "done"}]},
    )


async def test_a_scripted_call_reaches_the_server(runtime: Runtime, server: LocalServer) -> None:
    await agent_with_script(
        runtime,
        {"name": "get_item", "args": {"item_id": "42"}},
        {"name": "get_item", "args": {"item_id": "404", "colour": "red"}},
    )
    await runtime.storage.tools.add(
        AGENT, "get_item", type="http", config=item_tool(server), description="Fetch an item."
    )
    session = await runtime.storage.sessions.open(USER, AGENT)
    turn = await runtime.chat(USER, AGENT, session.chat_id, "get item 42")

    assert turn.response == "done"
    first, second = turn.tool_calls
    assert (first.name, first.args, first.error) == ("get_item", {"item_id": "42"}, False)
    assert first.result == {
        "status": 200,
        "body": {"id": "42", "path": "/items/42", "query": {}},
    }
    # A bad call is an error the model reads; the turn went on to its reply.
    assert second.error is True
    assert second.result == "Invalid arguments: colour: unknown argument, not allowed"
    assert server.paths() == ["/items/42"]

    stored = await runtime.storage.messages.window(USER, session.chat_id, 20)
    assert [m.role for m in stored] == ["human", "ai", "tool", "ai", "tool", "ai"]


async def test_an_endpoint_error_does_not_end_the_turn(
    runtime: Runtime, server: LocalServer
) -> None:
    await agent_with_script(runtime, {"name": "get_thing", "args": {}})
    config = {"url": f"{server.base}/status/503", "allowed_hosts": ["127.0.0.1"]}
    await runtime.storage.tools.add(AGENT, "get_thing", type="http", config=config)
    session = await runtime.storage.sessions.open(USER, AGENT)
    turn = await runtime.chat(USER, AGENT, session.chat_id, "get the thing")
    assert turn.response == "done"
    [record] = turn.tool_calls
    assert record.error is True
    assert record.result == (
        f"GET {server.base}/status/503 answered 503 Service Unavailable: "
        '{"error": "the server says 503"}'
    )


async def test_check_tools_reports_a_bad_row_with_its_path(
    runtime: Runtime, server: LocalServer, plugins: Plugins
) -> None:
    await agent_with_script(runtime)
    await runtime.storage.tools.add(AGENT, "get_item", type="http", config=item_tool(server))
    bad = {**item_tool(server), "allowed_hosts": ["api.example.com"], "body": {"x": "item_id"}}
    bad_row = await runtime.storage.tools.add(AGENT, "leak", type="http", config=bad)

    reports = await check_tools(runtime.storage, runtime.settings, plugins, AGENT)
    assert [r.as_dict() for r in reports] == [
        {
            "agent": AGENT,
            "id": reports[0].row.id,
            "name": "get_item",
            "type": "http",
            "ok": True,
            "problems": [],
        },
        {
            "agent": AGENT,
            "id": bad_row.id,
            "name": "leak",
            "type": "http",
            "ok": False,
            "problems": [
                f"config.url: host '127.0.0.1:{server.port}' is not in allowed_hosts "
                "(api.example.com)",
                "config.body: a GET request takes no body; use query",
            ],
        },
    ]
    # Checking sends nothing anywhere.
    assert server.seen == []

    # The bad row is left out of a chat; the good one loads.
    built = await runtime.agent_for(USER, AGENT)
    assert [t.name for t in built.tools] == ["get_item"]
    assert [p.brief() for p in built.problems] == reports[1].as_dict()["problems"]
