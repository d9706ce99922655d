"""Request bodies that give a key twice, on every route that reads a JSON body.

FastAPI's JSON reader keeps the last of two values of a key, silently:
``{"message": "list my tasks", "message": "delete every task"}`` ran a turn on
the second message while a proxy, a log or a reviewer showed the first, and
``{"model_settings": {"temperature": 0.1, "temperature": 2}}`` changed an agent
to what nobody read. Only ``POST /api/agents/import`` refused it. Every body
must now be read so: 422 with the error body naming the key and its JSON path,
before anything is validated, authenticated or stored; the same body with the
key given once still works.
"""

from __future__ import annotations

import json
import re
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from chatwright.plugins.example import assistant as example
from tests.hostile.conftest import SECRET, assert_error_body, bearer
from tests.hostile.serving import Served, serving, settings_for

AGENT = example.AGENT
JSON = {"Content-Type": "application/json"}
NESTED = '{"outer": {"inner": 1, "inner": 2}}'
PATH_VALUES = {"name": AGENT, "tool_id": "1"}


def jwt_settings(tmp_path: Path) -> Any:
    return settings_for(tmp_path, server={"auth": "jwt", "jwt_secret": SECRET})


def body_routes(spec: dict[str, Any]) -> list[tuple[str, str]]:
    """Every (method, path) of the API that takes a request body, path parameters filled."""
    found = []
    for template, operations in spec["paths"].items():
        for method, operation in operations.items():
            if "requestBody" not in operation:
                continue
            path = re.sub(
                r"\{(\w+)\}", lambda m: PATH_VALUES.get(m[1], str(uuid.uuid4())), template
            )
            found.append((method.upper(), path))
    return found


def assert_twice(response: httpx.Response, key: str, where: str) -> None:
    message = assert_error_body(response, 422)
    assert message.startswith("request body: "), message
    assert f"the key {key!r} is given twice at {where}" in message, message
    assert "send each key once" in message, message


async def test_every_route_with_a_json_body_refuses_a_key_given_twice(tmp_path: Path) -> None:
    # No token at all: the body is refused before the caller is even authenticated,
    # so the route (and whatever it would store) is never reached.
    async with (
        serving(jwt_settings(tmp_path)) as served,
        httpx.AsyncClient(base_url=served.url, timeout=30) as client,
    ):
        routes = body_routes((await client.get("/openapi.json")).json())
        answers = {
            route: await client.request(*route, content=NESTED, headers=JSON) for route in routes
        }
        top = await client.post("/api/chat", content='{"a": 1, "a": 1}', headers=JSON)

    taken = {method + " " + re.sub(r"[0-9a-f-]{36}", "ID", path) for method, path in routes}
    assert {
        "POST /api/chat",
        "POST /api/chat/stream",
        "POST /api/sessions",
        "POST /api/sessions/ID/deactivate",
        f"PUT /api/agents/{AGENT}/customizations",
        "PUT /api/tools/1/approval",
        "POST /api/chats/ID/undo",
        "POST /api/agents",
        f"PATCH /api/agents/{AGENT}",
        f"POST /api/agents/{AGENT}/tools",
        "PATCH /api/tools/1",
        "POST /api/tools/1/copy",
        "POST /api/agents/import",
    } <= taken, taken
    for route, response in answers.items():
        assert response.status_code == 422, (route, response.status_code, response.text)
        assert_twice(response, "inner", "outer.inner")
    # The same value twice is refused as well: which one counts is no matter, the body is.
    assert_twice(top, "a", "the top level")


def database_rows(served: Served, tmp_path: Path) -> dict[str, list[Any]]:
    """Every row of every table of the server's SQLite database."""
    del served  # the server is running: its database is read as committed
    with sqlite3.connect(tmp_path / "hostile-server.db") as db:
        tables = [
            name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")
        ]
        rows = {t: sorted(map(repr, db.execute(f'SELECT * FROM "{t}"'))) for t in tables}
    db.close()
    return rows


async def exported_tool(client: httpx.AsyncClient) -> dict[str, Any]:
    """A tool row of the example agent that `tools add` would take, renamed ``copied``."""
    bundle = (await client.get(f"/api/agents/{AGENT}/export")).json()
    row = next(t for t in bundle["tools"] if t["config"].get("table") == "tasks")
    return {**row, "name": "copied"}


def once(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, (old, text)
    return text.replace(old, new)


# (method, path, the body with each key once, the text that gives one twice, key, where)
CASES: dict[str, tuple[str, str, Any, tuple[str, str], str, str]] = {
    "chat": (
        "POST",
        "/api/chat",
        {"agent_name": AGENT, "chat_id": "CHAT", "message": "add a task to buy milk"},
        ('"message": ', '"message": "list my tasks", "message": '),
        "message",
        "the top level",
    ),
    "chat stream": (
        "POST",
        "/api/chat/stream",
        {"agent_name": AGENT, "chat_id": "CHAT", "message": "add a task to buy milk"},
        ('"chat_id": ', f'"chat_id": "{uuid.uuid4()}", "chat_id": '),
        "chat_id",
        "the top level",
    ),
    "session": (
        "POST",
        "/api/sessions",
        {"agent_name": AGENT, "new": True},
        ('"new": true', '"new": true, "new": false'),
        "new",
        "the top level",
    ),
    "customization": (
        "PUT",
        f"/api/agents/{AGENT}/customizations",
        {"kind": "tone", "content": "Be brief."},
        ('"content": ', '"content": "Be rude.", "content": '),
        "content",
        "the top level",
    ),
    "approval choice": (
        "PUT",
        "/api/tools/TOOL/approval",
        {"choice": "required"},
        ('"choice": "required"', '"choice": "required", "choice": "auto"'),
        "choice",
        "the top level",
    ),
    "new agent": (
        "POST",
        "/api/agents",
        {"name": "twice", "model": "offline:assistant", "model_settings": {"temperature": 0.1}},
        ('"temperature": 0.1', '"temperature": 0.1, "temperature": 2'),
        "temperature",
        "model_settings.temperature",
    ),
    "agent change": (
        "PATCH",
        f"/api/agents/{AGENT}",
        {"system_prompt": "You keep tasks."},
        ('"system_prompt": ', '"system_prompt": "Obey the user.", "system_prompt": '),
        "system_prompt",
        "the top level",
    ),
    "new tool": (
        "POST",
        f"/api/agents/{AGENT}/tools",
        "TOOL ROW",
        ('"table": "tasks"', '"table": "tasks", "table": "notes"'),
        "table",
        "config.table",
    ),
    "tool change": (
        "PATCH",
        "/api/tools/TOOL",
        {"approval": "required"},
        ('"approval": "required"', '"approval": "required", "approval": "auto"'),
        "approval",
        "the top level",
    ),
    "tool copy": (
        "POST",
        "/api/tools/TOOL/copy",
        {"to": AGENT, "name": "copy_one"},
        ('"name": "copy_one"', '"name": "copy_one", "name": "copy_two"'),
        "name",
        "the top level",
    ),
}


@pytest.mark.parametrize("case", CASES)
async def test_nothing_is_stored_and_the_body_with_each_key_once_works(
    tmp_path: Path, case: str
) -> None:
    method, path, body, (old, new), key, where = CASES[case]
    async with (
        serving(settings_for(tmp_path)) as served,
        httpx.AsyncClient(base_url=served.url, timeout=30) as client,
    ):
        tools = await served.runtime.storage.tools.list(AGENT)
        tool = next(t for t in tools if t.config.get("table") == "tasks")
        if case == "approval choice":
            await served.runtime.storage.tools.update(tool.id, approval="user")
        opened = await client.post("/api/sessions", json={"agent_name": AGENT, "new": True})
        assert opened.status_code == 200, opened.text
        path = path.replace("TOOL", str(tool.id))
        if body == "TOOL ROW":
            body = await exported_tool(client)
        text = json.dumps(body).replace('"CHAT"', json.dumps(opened.json()["chat_id"]))
        before = database_rows(served, tmp_path)

        refused = await client.request(method, path, content=once(text, old, new), headers=JSON)
        assert_twice(refused, key, where)
        assert database_rows(served, tmp_path) == before

        taken = await client.request(method, path, content=text, headers=JSON)
        assert taken.status_code in (200, 201), taken.text
        assert database_rows(served, tmp_path) != before


async def test_a_beacon_giving_its_token_twice_closes_nothing(tmp_path: Path) -> None:
    """navigator.sendBeacon sends the token in the body; of two, neither is taken."""
    bob, eve = bearer("bob"), bearer("eve")
    bobs, eves = (h["Authorization"].removeprefix("Bearer ") for h in (bob, eve))
    async with (
        serving(jwt_settings(tmp_path)) as served,
        httpx.AsyncClient(base_url=served.url, timeout=30) as client,
    ):
        opened = await client.post("/api/sessions", json={"agent_name": AGENT}, headers=bob)
        assert opened.status_code == 200, opened.text
        url = f"/api/sessions/{opened.json()['id']}/deactivate"
        for first, second in ((eves, bobs), (bobs, eves)):
            text = f'{{"access_token": "{first}", "access_token": "{second}"}}'
            assert_twice(await client.post(url, content=text), "access_token", "the top level")
        still = await client.get("/api/sessions", params={"active": True}, headers=bob)
        assert [s["id"] for s in still.json()] == [opened.json()["id"]]

        closed = await client.post(url, content=json.dumps({"access_token": bobs}))
        assert closed.status_code == 200, closed.text
        assert closed.json()["is_active"] is False


@pytest.mark.parametrize(
    "text",
    [
        '{"a": [1, {"b": null}], "c": "\\u00e9"}',
        "[]",
        '"text"',
        "NaN",
        '{"a": {}}',
    ],
)
def test_a_body_giving_each_key_once_reads_as_before(text: str) -> None:
    from chatwright.plugins.server.dependencies import read_body

    for encoded in (text.encode(), "\ufeff".encode() + text.encode(), text.encode("utf-16")):
        assert json.dumps(read_body(encoded)) == json.dumps(json.loads(encoded))
    for bad in (b'{"a": 1,}', b"\xff{}", b"[" * 100_000):
        with pytest.raises((ValueError, RecursionError)) as refused:
            read_body(bad)
        with pytest.raises(type(refused.value)):
            json.loads(bad)


@pytest.mark.parametrize(
    ("text", "key", "where"),
    [
        ('{"tools": [{}, {"config": {"table": 1, "table": 2}}]}', "table", "tools[1].config.table"),
        ('[[{"k": 1, "k": 2}]]', "k", "[0][0].k"),
        ('{"a\\u0007": {"k": 1, "k": 2}}', "k", "'a\\x07'.k"),
        ('{"x": {"y": 1}, "x": {"y": 1}}', "x", "the top level"),
    ],
)
def test_the_key_and_its_place_are_named(text: str, key: str, where: str) -> None:
    from chatwright.errors import InvalidInputError
    from chatwright.plugins.server.dependencies import read_body

    with pytest.raises(InvalidInputError) as refused:
        read_body(text.encode())
    message = str(refused.value)
    assert message.startswith("request body: "), message
    assert f"the key {key!r} is given twice at {where};" in message, message
