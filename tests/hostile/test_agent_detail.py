"""Review finding "GET /api/agents/{name} costs twenty calls", replayed on a real server.

The route built every tool of the agent on every call, for anyone. Now the
check is kept while the tool rows are unchanged (only admins see its
findings; everyone sees a refused row as not active): the
test counts the tools built per call, and changes a row behind the server's
back (plain SQL, as another process would) to see that the next answer is
right again.
"""

from __future__ import annotations

import json
import time
from typing import Any

import jwt
import pytest
import sqlalchemy as sa

import chatwright.tools
from chatwright.plugins.example import assistant as example
from tests.hostile.conftest import SECRET, MakeServer, bearer

AGENT = example.AGENT


def admin() -> dict[str, str]:
    claims = {"sub": "root", "aud": "authenticated", "exp": int(time.time()) + 86400}
    token = jwt.encode({**claims, "chatwright_admin": True}, SECRET, algorithm="HS256")
    return {"Authorization": f"Bearer {token}"}


async def test_the_tool_check_is_cheap_and_still_right_after_a_row_changes(
    make_server: MakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = await make_server()
    await example.seed(server.runtime.storage, "offline:assistant")
    built: list[str] = []
    build_row = chatwright.tools.build_row

    async def counted(row: Any, *args: Any, **kwargs: Any) -> Any:
        built.append(row.name)
        return await build_row(row, *args, **kwargs)

    monkeypatch.setattr(chatwright.tools, "build_row", counted)
    client = server.client

    # Anyone's first call checks every tool once (so that a row refused at load is
    # listed as not active); admins see the check's findings too.
    plain = await client.get(f"/api/agents/{AGENT}", headers=bearer("alice"))
    assert plain.status_code == 200
    tools = len(plain.json()["tools"])
    assert tools > 0 and len(built) == tools
    assert all("ok" not in t and "problems" not in t for t in plain.json()["tools"])

    first = (await client.get(f"/api/agents/{AGENT}", headers=admin())).json()
    assert len(first["tools"]) == tools and all(t["ok"] for t in first["tools"])
    assert len(built) == tools  # the check was kept
    for _ in range(5):
        again = (await client.get(f"/api/agents/{AGENT}", headers=admin())).json()
        assert again == first
    assert len(built) == tools

    broken = first["tools"][0]
    async with server.runtime.storage.write() as conn:  # type: ignore[attr-defined]
        await conn.execute(
            sa.text("UPDATE agent_tools SET config = :config WHERE id = :id"),
            {"config": json.dumps({"table": "no_such_table"}), "id": broken["id"]},
        )
    after = (await client.get(f"/api/agents/{AGENT}", headers=admin())).json()
    (changed,) = [t for t in after["tools"] if t["id"] == broken["id"]]
    assert changed["ok"] is False and changed["problems"]
    assert [t for t in after["tools"] if t["id"] != broken["id"]] == first["tools"][1:]
    assert len(built) == 2 * tools
