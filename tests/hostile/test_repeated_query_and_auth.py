"""A query parameter or the Authorization header given twice is refused, naming it.

FastAPI takes a repeated query parameter's last value and the authentication
took the first Authorization header, where a proxy in front may take the
other: ``DELETE /api/me?confirm=someone-else&confirm=alice`` erased alice's
data, though the confirmation exists to make an erasure say whose it is. A
JSON body giving a key twice was already refused; now the query and the token
are too: 422 for a query parameter, 400 for the header, before any route runs.
"""

from __future__ import annotations

import httpx
import pytest

from chatwright.plugins.example import assistant as example
from tests.hostile.conftest import AGENT, MakeServer, assert_error_body, bearer

ALICE = bearer("alice")
BOB = bearer("bob")


async def test_an_erasure_confirmed_twice_is_refused_and_erases_nothing(
    make_server: MakeServer,
) -> None:
    server = await make_server()
    await example.seed(server.runtime.storage, "offline:assistant")
    opened = await server.client.post("/api/sessions", json={"agent_name": AGENT}, headers=ALICE)
    assert opened.status_code == 200, opened.text
    url = "/api/me?confirm=someone-else&confirm=alice"
    refused = await server.client.delete(url, headers=ALICE)
    text = assert_error_body(refused, 422)
    assert "'confirm'" in text and "more than once" in text
    listed = await server.client.get("/api/sessions", headers=ALICE)
    assert [s["chat_id"] for s in listed.json()] == [opened.json()["chat_id"]]
    # Given once, it erases.
    erased = await server.client.delete("/api/me", params={"confirm": "alice"}, headers=ALICE)
    assert erased.status_code == 200, erased.text


@pytest.mark.parametrize(
    "query",
    ["limit=1&limit=2", "since=2020-01-01&since=2030-01-01", "limit=1&x=1&x=", "a=1&a=1"],
)
async def test_any_repeated_query_parameter_is_refused(make_server: MakeServer, query: str) -> None:
    server = await make_server()
    refused = await server.client.get(f"/api/audit?{query}", headers=ALICE)
    assert_error_body(refused, 422)
    single = await server.client.get("/api/audit?limit=1", headers=ALICE)
    assert single.status_code == 200, single.text


async def test_two_authorization_headers_are_refused(make_server: MakeServer) -> None:
    server = await make_server()
    headers = httpx.Headers(
        [("Authorization", ALICE["Authorization"]), ("Authorization", BOB["Authorization"])]
    )
    refused = await server.client.get("/api/sessions", headers=headers)
    text = assert_error_body(refused, 400)
    assert "Authorization" in text
    assert "Bearer" not in text  # no token is echoed
    one = await server.client.get("/api/sessions", headers=ALICE)
    assert one.status_code == 200, one.text


async def test_every_route_declares_both_refusals(make_server: MakeServer) -> None:
    server = await make_server()
    paths = (await server.client.get("/openapi.json")).json()["paths"]
    undeclared = [
        f"{method.upper()} {path}"
        for path, methods in paths.items()
        for method, operation in methods.items()
        if not {"400", "422", "431"} <= set(operation["responses"])
    ]
    assert paths and undeclared == []
