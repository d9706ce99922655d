"""Admin bodies that reach for fields a change must not touch, on every backend.

A PATCH naming another ``name``, an ``id`` or timestamps; a tool row naming another
agent or id; model_settings that are not an object; NUL and lone surrogates in
text: each gets a 4xx naming the field, never a 500, and the agents stay as
they were (the other agent keeps its tools).
"""

from __future__ import annotations

import json
from typing import Any

from chatwright.plugins.example import assistant as example
from tests.hostile.conftest import AGENT, MakeServer, Server, assert_error_body, bearer

ADMIN = bearer("root", app_metadata={"role": "chatwright_admin"})


async def state(server: Server) -> str:
    storage = server.runtime.storage
    agents = sorted(a.name for a in await storage.agents.list())
    out: dict[str, Any] = {"agents": agents}
    for name in agents:
        agent = await storage.agents.get(name)
        assert agent is not None
        tools = await storage.tools.list(name)
        out[name] = {
            "prompt": agent.system_prompt,
            "settings": dict(agent.model_settings),
            "tools": sorted((t.id, t.name, json.dumps(t.config, sort_keys=True)) for t in tools),
        }
    return json.dumps(out, sort_keys=True, default=str)


async def test_hostile_admin_bodies_are_4xx_and_change_nothing(make_server: MakeServer) -> None:
    server = await make_server()
    await example.seed(server.runtime.storage, "offline:assistant")
    made = await server.client.post(
        "/api/agents", json={"name": "other", "model": "offline:x"}, headers=ADMIN
    )
    assert made.status_code == 201, made.text
    before = await state(server)
    tool_row = {"name": "t2", "type": "crud", "config": {"table": "notes", "operation": "read"}}
    cases: list[tuple[str, str, Any]] = [
        ("PATCH", f"/api/agents/{AGENT}", {"name": "other"}),
        ("PATCH", f"/api/agents/{AGENT}", {"id": 999}),
        ("PATCH", f"/api/agents/{AGENT}", {"created_at": "1970-01-01T00:00:00Z"}),
        ("PATCH", f"/api/agents/{AGENT}", {"model_settings": "api_key=x"}),
        ("PATCH", f"/api/agents/{AGENT}", {"model_settings": [1, 2]}),
        ("PATCH", f"/api/agents/{AGENT}", {"system_prompt": "a\x00b"}),
        ("PATCH", f"/api/agents/{AGENT}", {"system_prompt": "\ud800"}),
        ("PATCH", f"/api/agents/{AGENT}", {"history_window": -1}),
        ("PATCH", f"/api/agents/{AGENT}", {"history_window": 2**70}),
        ("PATCH", f"/api/agents/{AGENT}", {"max_tool_calls": "many"}),
        ("PATCH", "/api/agents/nobody", {"system_prompt": "x"}),
        ("POST", "/api/agents", {"name": "other", "model": "offline:x"}),
        ("POST", "/api/agents", {"name": "a\x00", "model": "offline:x"}),
        ("POST", "/api/agents", {"name": "x" * 10_000, "model": "offline:x"}),
        ("POST", "/api/agents", {"name": ["list"], "model": "offline:x"}),
        ("POST", "/api/agents/nobody/tools", tool_row),
        ("POST", "/api/agents/other/tools", {**tool_row, "config": {"table": "agents"}}),
        ("POST", "/api/agents/other/tools", {**tool_row, "type": "nonesuch"}),
        ("POST", "/api/agents/other/tools", {**tool_row, "name": "a b\x00"}),
        ("POST", "/api/agents/other/tools", {**tool_row, "config": "not json {"}),
        ("POST", "/api/tools/2147483647/copy", {"to": "other"}),
        ("POST", "/api/agents/other/tools", {**tool_row, "description": "\ud800"}),
        ("POST", "/api/agents/import", {"bundle": {"agent": {"name": "x\ud800"}}}),
        ("PATCH", f"/api/agents/{AGENT}", {"model_settings": {"k\x00": 1}}),
        ("PATCH", f"/api/agents/{AGENT}", {"model_settings": {"a": [[["\udfff"]]]}}),
        ("PATCH", "/api/tools/2147483647", {"name": "x"}),
    ]
    for method, path, body in cases:
        # json.dumps writes a lone surrogate as its \\u escape, as an attacker would send it.
        raw = json.dumps(body)
        headers = {**ADMIN, "Content-Type": "application/json"}
        response = await server.client.request(method, path, content=raw, headers=headers)
        message = assert_error_body(response, 404, 409, 413, 422)
        if "\\u0000" in raw or "\\ud800" in raw:
            assert "NUL character or a lone surrogate" in message, (raw, message)
    assert await state(server) == before
    # A copy of a row from another agent, ids and all, lands on the agent named in the path.
    copied = await server.client.post(
        "/api/agents/other/tools",
        json={**tool_row, "id": 1, "agent_id": 1, "agent": AGENT},
        headers=ADMIN,
    )
    assert copied.status_code == 201, copied.text
    assert copied.json()["agent"] == "other"
    assert copied.json()["id"] != 1
