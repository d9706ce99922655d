"""Error answers that must say what HTTP and docs/http.md promise.

- A 405 had no ``Allow`` header and its body named no method the path takes.
  It must list every method of the path (a path may be served by several
  routes), in the header and in the message.
- A request body that is not UTF-8 got 400 ``There was an error parsing the
  body``, where invalid input is 422 naming what is wrong; JSON nested too
  deeply to read got the same 400. Both must be 422 with the error body.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from chatwright.plugins.example import assistant as example
from tests.hostile.conftest import assert_error_body
from tests.hostile.serving import Served, serving, settings_for

AGENT = example.AGENT
JSON = {"Content-Type": "application/json"}


async def documented_methods(client: httpx.AsyncClient, path: str) -> set[str]:
    """The methods OpenAPI gives the path template ``path``."""
    spec = (await client.get("/openapi.json")).json()
    return {method.upper() for method in spec["paths"][path]}


@pytest.mark.parametrize(
    ("method", "path", "template"),
    [
        ("PUT", "/api/chat", "/api/chat"),
        ("DELETE", "/api/sessions", "/api/sessions"),
        ("PUT", f"/api/agents/{AGENT}", "/api/agents/{name}"),
        ("POST", "/api/tools/1", "/api/tools/{tool_id}"),
    ],
)
async def test_a_405_lists_every_method_of_the_path(
    tmp_path: Path, method: str, path: str, template: str
) -> None:
    async with (
        serving(settings_for(tmp_path)) as served,
        httpx.AsyncClient(base_url=served.url, timeout=30) as client,
    ):
        response = await client.request(method, path)
        expected = await documented_methods(client, template)

    message = assert_error_body(response, 405)
    allow = {m.strip() for m in response.headers.get("Allow", "").split(",") if m.strip()}
    assert allow, response.headers
    assert expected <= allow <= expected | {"HEAD"}, (allow, expected)
    assert method not in allow
    assert method in message and path in message, message
    for name in expected:
        assert name in message, message


async def post_raw(served: Served, path: str, content: bytes) -> httpx.Response:
    async with httpx.AsyncClient(base_url=served.url, timeout=30) as client:
        return await client.post(path, content=content, headers=JSON)


@pytest.mark.parametrize(
    "path", ["/api/chat", "/api/chat/stream", "/api/sessions", "/api/agents/import"]
)
async def test_a_body_that_is_not_utf8_is_a_422_saying_so(tmp_path: Path, path: str) -> None:
    async with serving(settings_for(tmp_path)) as served:
        body = {"agent_name": AGENT, "chat_id": "00000000-0000-0000-0000-000000000000"}
        text = json.dumps({**body, "message": "caf\u00e9"}, ensure_ascii=False)
        response = await post_raw(served, path, text.encode("latin-1"))

    message = assert_error_body(response, 422)
    assert "not UTF-8" in message and "request body" in message, message


async def test_json_too_deep_to_read_is_a_422_saying_so(tmp_path: Path) -> None:
    async with serving(settings_for(tmp_path)) as served:
        depth = 10_000
        response = await post_raw(served, "/api/sessions", b"[" * depth + b"]" * depth)

    message = assert_error_body(response, 422)
    assert "nested too deeply" in message, message


async def test_a_path_no_route_has_is_named_with_where_the_paths_are(tmp_path: Path) -> None:
    async with (
        serving(settings_for(tmp_path)) as served,
        httpx.AsyncClient(base_url=served.url, timeout=30) as client,
    ):
        missing = await client.get("/api/nope")
        long = await client.get("/api/" + "x" * 5000)
    assert assert_error_body(missing, 404) == (
        "no such path: /api/nope; GET /docs lists the API's paths"
    )
    message = assert_error_body(long, 404)
    assert len(message) < 300 and message.startswith("no such path: /api/xxx")
