"""Review finding "a tool row refused at load is still listed as active", replayed.

A row that never loads (its table does not exist) was reported to API clients
with ``is_active: true``, so a client believed the agent had a tool it did
not. The API reports it as not active (an admin also sees why).
"""

from __future__ import annotations

import json

from chatwright.plugins.example import assistant as example
from tests.hostile.conftest import MakeServer, bearer
from tests.hostile.test_cross_user_upsert import sql

AGENT = example.AGENT


async def test_a_refused_row_is_not_listed_as_active(make_server: MakeServer) -> None:
    server = await make_server()
    runtime, client = server.runtime, server.client
    await example.seed(runtime.storage, "scripted:x")
    await sql(
        runtime,
        "INSERT INTO agent_tools (agent_id, name, type, config) "
        "SELECT id, 'ghost', 'crud', :config FROM agents WHERE name = :agent",
        config=json.dumps({"table": "no_such_table", "operation": "read"}),
        agent=AGENT,
    )
    response = await client.get(f"/api/agents/{AGENT}", headers=bearer("bob"))
    assert response.status_code == 200, response.text
    tools = {t["name"]: t for t in response.json()["tools"]}
    assert tools["ghost"]["is_active"] is False
    assert tools["add_task"]["is_active"] is True
