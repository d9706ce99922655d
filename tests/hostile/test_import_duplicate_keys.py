"""``POST /api/agents/import`` with a body that gives a key twice.

``chatwright agents import`` refuses a bundle file giving a key twice (a reader
may take either value), but the route took the last value silently: a tool
row saying ``"approval": "required", "approval": "auto"`` was imported with
``auto``, and ``"dry_run": true, "dry_run": false`` really imported. Each must
be 422 naming the key and its place, with nothing changed; the same body
without the repeated key still imports.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from chatwright.plugins.example import assistant as example
from tests.hostile.conftest import AGENT, MakeServer, Server, assert_error_body, bearer

ADMIN = bearer("root", app_metadata={"role": "chatwright_admin"})
NEWCOMER = "dupkeys"


async def setup(make_server: MakeServer) -> tuple[Server, dict[str, Any]]:
    """A server with the example seeded, and the example agent's bundle renamed NEWCOMER."""
    server = await make_server()
    await example.seed(server.runtime.storage, "offline:assistant")
    exported = await server.client.get(f"/api/agents/{AGENT}/export", headers=ADMIN)
    assert exported.status_code == 200, exported.text
    bundle: dict[str, Any] = exported.json()
    bundle["agent"]["name"] = NEWCOMER
    return server, bundle


async def snapshot(server: Server) -> str:
    agents = {}
    for agent in await server.runtime.storage.agents.list():
        response = await server.client.get(f"/api/agents/{agent.name}/export", headers=ADMIN)
        assert response.status_code == 200, response.text
        agents[agent.name] = response.json()
    return json.dumps(agents, sort_keys=True)


def once(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


async def post(server: Server, body: str) -> Any:
    headers = {**ADMIN, "Content-Type": "application/json"}
    return await server.client.post("/api/agents/import", content=body, headers=headers)


@pytest.mark.parametrize(
    ("where", "key"),
    [
        ("top", "dry_run"),
        ("tool", "approval"),
        ("agent", "model"),
        ("secrets", "model_settings.api_key"),
    ],
)
async def test_a_key_given_twice_is_refused_naming_it(
    make_server: MakeServer, where: str, key: str
) -> None:
    server, bundle = await setup(make_server)
    before = await snapshot(server)
    tool = bundle["tools"][0]
    tool["approval"] = "required"
    text = json.dumps({"bundle": bundle, "secrets": {}, "dry_run": True})
    if where == "top":
        text = once(text, '"dry_run": true}', '"dry_run": true, "dry_run": false}')
        place = "the top level"
    elif where == "tool":
        text = once(text, '"approval": "required"', '"approval": "required", "approval": "auto"')
        text = once(text, '"dry_run": true', '"dry_run": false')
        place = "bundle.tools[0]"
    elif where == "agent":
        text = once(text, '"model": "offline:assistant"', '"model": "a:b", "model": "c:d"')
        text = once(text, '"dry_run": true', '"dry_run": false')
        place = "bundle.agent"
    else:
        text = once(text, '"secrets": {}', f'"secrets": {{"{key}": "a", "{key}": "b"}}')
        text = once(text, '"dry_run": true', '"dry_run": false')
        place = "secrets"

    message = assert_error_body(await post(server, text), 422)
    assert repr(key) in message and place in message and "twice" in message, message
    assert await snapshot(server) == before
    assert await server.runtime.storage.agents.get(NEWCOMER) is None


async def test_the_same_bodies_without_the_repeat_import(make_server: MakeServer) -> None:
    server, bundle = await setup(make_server)
    before = await snapshot(server)
    # A DEL character is JSON but not YAML: the body is read as JSON, byte order mark or not.
    bundle["agent"]["system_prompt"] += "\x7f"
    body = {"bundle": bundle, "secrets": {}, "prune": False, "dry_run": True}
    tried = await post(server, "\ufeff \n" + json.dumps(body, indent=2, ensure_ascii=False))
    assert tried.status_code == 200, tried.text
    assert tried.json()["dry_run"] is True
    assert await snapshot(server) == before

    imported = await post(server, json.dumps({**body, "dry_run": False}))
    assert imported.status_code == 200, imported.text
    assert imported.json()["dry_run"] is False
    assert await server.runtime.storage.agents.get(NEWCOMER) is not None
