"""Tool ids past what ``agent_tools.id`` holds (a 32-bit integer on PostgreSQL).

A user's approval choice and an admin's change of a tool row with such an id
find no row, as on SQLite: 404 naming the id, never PostgreSQL's "the database
refused a value (out of range …)", and nothing changes.
"""

from __future__ import annotations

import pytest

from chatwright.plugins.example import assistant as example
from tests.hostile.conftest import AGENT, MakeServer, assert_error_body, bearer

ADMIN = bearer("root", app_metadata={"role": "chatwright_admin"})
USER = bearer("alice")
PAST = ["2147483648", "9223372036854775807"]


@pytest.mark.parametrize("tool_id", PAST)
async def test_ids_past_the_column_find_no_row(make_server: MakeServer, tool_id: str) -> None:
    server = await make_server()
    await example.seed(server.runtime.storage, "offline:assistant")
    before = [(t.id, t.name, t.approval) for t in await server.runtime.storage.tools.list(AGENT)]
    choice = await server.client.put(
        f"/api/tools/{tool_id}/approval", json={"choice": "required"}, headers=USER
    )
    said = assert_error_body(choice, 404)
    # A user over HTTP is pointed at what lists rows over HTTP.
    assert f"no tool row {tool_id}" in said and "GET /api/agents/NAME" in said
    for method, path, body in [
        ("PATCH", f"/api/tools/{tool_id}", {"description": "x"}),
        ("DELETE", f"/api/tools/{tool_id}", None),
        ("POST", f"/api/tools/{tool_id}/copy", {"to": AGENT, "name": "x"}),
    ]:
        response = await server.client.request(method, path, json=body, headers=ADMIN)
        assert tool_id in assert_error_body(response, 404), (method, path)
    after = [(t.id, t.name, t.approval) for t in await server.runtime.storage.tools.list(AGENT)]
    assert after == before
    storage = server.runtime.storage
    assert await storage.tools.get(int(tool_id)) is None
    assert await storage.tools.delete(int(tool_id)) is False
