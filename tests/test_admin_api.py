"""The admin routes: agents and tool rows over HTTP, for admins only, with the CLI's errors.

The app runs in process (httpx's ASGI transport, its lifespan running) on the
SQLite file that ``chatwright init --example`` made in the test's working
directory, so that the CLI and the API see the same rows: a bad row must get
the same error text from both. The CLI runs its own event loop, so the tests
are plain functions that run each API exchange with :func:`asyncio.run`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from chatwright import testing
from chatwright.plugins.server.app import create_app
from chatwright.runtime import Runtime
from tests.harness import DB_FILE, assert_error, ok, run

pytestmark = pytest.mark.usefixtures("example")

SECRET = "an-admin-test-secret-of-32-bytes"
AGENT = "assistant"
BAD_ROW = {
    "name": "list_ghosts",
    "type": "crud",
    "description": "List rows of a table that is not there.",
    "config": {"table": "ghosts", "operation": "read"},
}


def token(user: str = "root", **claims: Any) -> dict[str, str]:
    payload = {"sub": user, "aud": "authenticated", "exp": int(time.time()) + 86400, **claims}
    return {"Authorization": f"Bearer {jwt.encode(payload, SECRET, algorithm='HS256')}"}


ADMIN = token(app_metadata={"role": "chatwright_admin"})
PLAIN = token("bob")

Exchange = Callable[[httpx.AsyncClient, Runtime], Awaitable[Any]]


def api(workdir: Path, exchange: Exchange, **server: Any) -> Any:
    """Run ``exchange(client, runtime)`` against an app on the working directory's database."""

    async def serve() -> Any:
        settings = testing.settings(
            storage={"url": f"sqlite+aiosqlite:///{workdir / DB_FILE}"},
            server={"auth": "jwt", "jwt_secret": SECRET, **server},
        )
        app = create_app(settings)
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(app.router.lifespan_context(app))
            client = await stack.enter_async_context(
                httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=app), base_url="http://localhost"
                )
            )
            return await exchange(client, app.state.runtime)

    return asyncio.run(serve())


def call(workdir: Path, method: str, path: str, body: Any = None, **kw: Any) -> httpx.Response:
    headers = kw.pop("headers", ADMIN)

    async def exchange(client: httpx.AsyncClient, runtime: Runtime) -> httpx.Response:
        return await client.request(method, path, json=body, headers=headers)

    response: httpx.Response = api(workdir, exchange, **kw)
    return response


def error_of(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    return str(body["error"])


def cli_error(*args: str, input: str | None = None) -> str:
    return assert_error(run(*args, input=input)).removeprefix("Error: ")


def test_an_admin_manages_agents_and_tools(workdir: Path) -> None:
    created = call(
        workdir,
        "POST",
        "/api/agents",
        {"name": "concierge", "model": "offline:concierge", "model_settings": {"api_key": "sk-1"}},
    )
    assert created.status_code == 201, created.text
    assert created.json()["model_settings"] == {"api_key": "**********"}
    changed = call(
        workdir,
        "PATCH",
        "/api/agents/concierge",
        {"system_prompt": "Hi {memory}", "summarize": True},
    )
    assert changed.status_code == 200 and changed.json()["summarize"] is True
    shown = json.loads(ok("agents", "show", "concierge", "--json").stdout)
    assert shown["system_prompt"] == "Hi {memory}"

    first = json.loads(ok("tools", "list", "--agent", AGENT, "--json").stdout)[0]
    copied = call(workdir, "POST", f"/api/tools/{first['id']}/copy", {"to": "concierge"})
    assert copied.status_code == 201, copied.text
    row = copied.json()
    assert (row["agent"], row["name"], row["config"]) == (
        "concierge",
        first["name"],
        first["config"],
    )
    patched = call(workdir, "PATCH", f"/api/tools/{row['id']}", {"approval": "required"})
    assert patched.status_code == 200 and patched.json()["approval"] == "required"
    row_two = {"name": "two", **{k: first[k] for k in ("type", "description", "config")}}
    added = call(workdir, "POST", "/api/agents/concierge/tools", row_two)
    assert added.status_code == 201, added.text

    exported = call(workdir, "GET", "/api/agents/concierge/export")
    assert exported.status_code == 200
    assert exported.text == ok("agents", "export", "concierge").stdout
    as_yaml = call(workdir, "GET", "/api/agents/concierge/export?format=yaml")
    assert as_yaml.headers["content-type"].startswith("application/yaml")
    assert as_yaml.text == ok("agents", "export", "concierge", "--format", "yaml").stdout
    bundle = exported.json()
    assert bundle["agent"]["model_settings"]["api_key"] == {"$secret": "model_settings.api_key"}
    bundle["agent"]["name"] = "concierge2"
    refused = call(workdir, "POST", "/api/agents/import", {"bundle": bundle})
    said = error_of(refused, 422)
    # Over HTTP it is given in the request's "secrets", not with the CLI's --secret.
    assert 'in the request\'s "secrets": {"model_settings.api_key": "VALUE"}' in said
    assert "--secret" not in said and "CHATWRIGHT_SECRET" not in said
    imported = call(
        workdir,
        "POST",
        "/api/agents/import",
        {"bundle": bundle, "secrets": {"model_settings.api_key": "sk-2"}},
    )
    assert imported.status_code == 200, imported.text
    assert imported.json()["action"] == "created"
    assert sorted(imported.json()["tools"]["added"]) == sorted([first["name"], "two"])

    removed = call(workdir, "DELETE", f"/api/tools/{added.json()['id']}")
    assert removed.json() == {"id": added.json()["id"], "name": "two", "agent": "concierge"}
    assert error_of(call(workdir, "DELETE", f"/api/tools/{added.json()['id']}"), 404)
    deleted = call(workdir, "DELETE", "/api/agents/concierge")
    assert deleted.json() == {"name": "concierge", "tools": 1}
    assert_error(run("agents", "show", "concierge"), "no agent named 'concierge'")


def test_a_change_reaches_the_agent_s_config_version(workdir: Path) -> None:
    async def exchange(client: httpx.AsyncClient, runtime: Runtime) -> tuple[Any, ...]:
        before = await runtime.storage.agents.config_version(AGENT)
        await client.patch(f"/api/agents/{AGENT}", json={"history_window": 7}, headers=ADMIN)
        middle = await runtime.storage.agents.config_version(AGENT)
        tool = (await runtime.storage.tools.list(AGENT))[0]
        await client.patch(f"/api/tools/{tool.id}", json={"is_active": False}, headers=ADMIN)
        return before, middle, await runtime.storage.agents.config_version(AGENT)

    before, middle, after = api(workdir, exchange)
    assert len({before, middle, after}) == 3


@pytest.mark.parametrize(
    "headers",
    [
        PLAIN,
        token("eve", user_metadata={"role": "chatwright_admin"}),
        token("eve", app_metadata={"role": "admin"}),
        token("eve", chatwright_admin="true"),
        token("eve", role="chatwright_admin"),
    ],
    ids=["plain", "user_metadata", "other-role", "string-flag", "top-level-role"],
)
def test_others_get_403_and_nothing_changes(workdir: Path, headers: dict[str, str]) -> None:
    before = ok("agents", "export", AGENT).stdout
    tool_id = json.loads(ok("tools", "list", "--agent", AGENT, "--json").stdout)[0]["id"]
    requests = [
        ("POST", "/api/agents", {"name": "x", "model": "offline:x"}),
        ("PATCH", f"/api/agents/{AGENT}", {"system_prompt": "pwned"}),
        ("DELETE", f"/api/agents/{AGENT}", None),
        ("POST", f"/api/agents/{AGENT}/tools", BAD_ROW),
        ("PATCH", f"/api/tools/{tool_id}", {"description": "pwned"}),
        ("DELETE", f"/api/tools/{tool_id}", None),
        ("POST", f"/api/tools/{tool_id}/copy", {"to": AGENT, "name": "x"}),
        ("GET", f"/api/agents/{AGENT}/export", None),
        ("POST", "/api/agents/import", {"bundle": json.loads(before)}),
    ]

    async def exchange(client: httpx.AsyncClient, runtime: Runtime) -> list[httpx.Response]:
        return [await client.request(m, p, json=b, headers=headers) for m, p, b in requests]

    for response in api(workdir, exchange):
        assert "admin only" in error_of(response, 403)
    assert ok("agents", "export", AGENT).stdout == before


def test_the_admin_claim_is_a_setting(workdir: Path) -> None:
    body = {"name": "ops_agent", "model": "offline:x"}
    ops = token("olga", groups={"names": ["staff", "ops"]})
    settings = {"admin_claim": "groups.names", "admin_value": "ops"}
    assert call(workdir, "POST", "/api/agents", body, headers=ops, **settings).status_code == 201
    # The default claim no longer counts once another is chosen.
    again = call(workdir, "POST", "/api/agents", {**body, "name": "b"}, headers=ADMIN, **settings)
    assert again.status_code == 403
    off = {"admin_claim": ""}
    assert call(workdir, "POST", "/api/agents", body, headers=ADMIN, **off).status_code == 403
    legacy = token("root", chatwright_admin=True)
    assert (
        call(workdir, "DELETE", "/api/agents/ops_agent", headers=legacy, **off).status_code == 200
    )


def test_the_local_user_is_an_admin(workdir: Path) -> None:
    body = {"name": "local_agent", "model": "offline:x"}
    response = call(workdir, "POST", "/api/agents", body, headers={}, auth="local")
    assert response.status_code == 201, response.text
    assert ok("agents", "show", "local_agent")


def test_the_api_gives_the_cli_s_error_for_the_same_bad_input(workdir: Path) -> None:
    tool_id = json.loads(ok("tools", "list", "--agent", AGENT, "--json").stdout)[0]["id"]
    cases = [
        (
            cli_error("tools", "add", "--agent", AGENT, input=json.dumps(BAD_ROW)),
            ("POST", f"/api/agents/{AGENT}/tools", BAD_ROW, 422),
        ),
        (
            cli_error("tools", "add", "--agent", "nobody", input=json.dumps(BAD_ROW)),
            ("POST", "/api/agents/nobody/tools", BAD_ROW, 404),
        ),
        (
            cli_error("tools", "set", str(tool_id), "--config", '{"table": "ghosts"}'),
            ("PATCH", f"/api/tools/{tool_id}", {"config": {"table": "ghosts"}}, 422),
        ),
        (
            cli_error("tools", "set", "999999", "--description", "x"),
            ("PATCH", "/api/tools/999999", {"description": "x"}, 404),
        ),
        (
            cli_error("tools", "set", "999999", "--name", ""),
            ("PATCH", "/api/tools/999999", {"name": ""}, 404),
        ),
        (
            cli_error("agents", "add", "bad name!", "--model", "offline:x"),
            ("POST", "/api/agents", {"name": "bad name!", "model": "offline:x"}, 422),
        ),
        (
            cli_error("agents", "add", "a2", "--model", "nope:x", "--prompt", "{who}"),
            (
                "POST",
                "/api/agents",
                {"name": "a2", "model": "nope:x", "system_prompt": "{who}"},
                422,
            ),
        ),
        (
            cli_error("agents", "add", "a3", "--model", "nope:x"),
            ("POST", "/api/agents", {"name": "a3", "model": "nope:x"}, 422),
        ),
        (
            cli_error("agents", "add", AGENT, "--model", "offline:x"),
            ("POST", "/api/agents", {"name": AGENT, "model": "offline:x"}, 409),
        ),
        (
            cli_error("agents", "set", AGENT, "--history-window", "0"),
            ("PATCH", f"/api/agents/{AGENT}", {"history_window": 0}, 422),
        ),
        # An agent that is not there is the answer, before the faults of the changes.
        (
            cli_error("agents", "set", "nobody", "--history-window", "0"),
            ("PATCH", "/api/agents/nobody", {"history_window": 0}, 404),
        ),
        (
            cli_error("tools", "copy", str(tool_id), "--to", AGENT),
            ("POST", f"/api/tools/{tool_id}/copy", {"to": AGENT}, 409),
        ),
        (
            cli_error("tools", "remove", "999999"),
            ("DELETE", "/api/tools/999999", None, 404),
        ),
        (
            cli_error("agents", "delete", "nobody", "--yes"),
            ("DELETE", "/api/agents/nobody", None, 404),
        ),
    ]

    async def exchange(client: httpx.AsyncClient, runtime: Runtime) -> list[httpx.Response]:
        return [await client.request(m, p, json=b, headers=ADMIN) for _, (m, p, b, _) in cases]

    for (expected, (method, path, _, status)), response in zip(
        cases, api(workdir, exchange), strict=True
    ):
        assert error_of(response, status) == expected, (method, path)
    assert cli_error("agents", "set", "nobody", "--turn-timeout", "inf") == (
        "no agent named 'nobody'; see `chatwright agents list`"
    )


def test_a_changed_agent_is_rebuilt_for_its_next_turn(workdir: Path) -> None:
    def script(reply: str) -> dict[str, Any]:
        return {"responses": [{"content": reply}]}

    async def exchange(client: httpx.AsyncClient, runtime: Runtime) -> list[str]:
        body = {"name": "echo", "model": "scripted:x", "model_settings": script("one")}
        assert (await client.post("/api/agents", json=body, headers=ADMIN)).status_code == 201
        opened = await client.post(
            "/api/sessions", json={"agent_name": "echo", "new": True}, headers=PLAIN
        )
        turn = {"agent_name": "echo", "chat_id": opened.json()["chat_id"], "message": "hi"}
        replies = []
        for change in ({"model_settings": script("two")}, {"system_prompt": "Be brief."}):
            answer = await client.post("/api/chat", json=turn, headers=PLAIN)
            assert answer.status_code == 200, answer.text
            replies.append(answer.json()["response"])
            changed = await client.patch("/api/agents/echo", json=change, headers=ADMIN)
            assert changed.status_code == 200, changed.text
        # The script has one reply: a build kept from before the change would have none left.
        answer = await client.post("/api/chat", json=turn, headers=PLAIN)
        assert answer.status_code == 200, answer.text
        return [*replies, answer.json()["response"]]

    assert api(workdir, exchange) == ["one", "two", "two"]


def test_a_row_as_listed_is_added_as_a_new_row(workdir: Path) -> None:
    """A row from ``tools list --json`` (its id, agent, timestamps) is taken as a new row;
    one marked deleted where it came from is refused like the CLI refuses it."""
    listed = json.loads(ok("tools", "list", "--agent", AGENT, "--json").stdout)[0]
    added = call(workdir, "POST", f"/api/agents/{AGENT}/tools", {**listed, "name": "again"})
    assert added.status_code == 201, added.text
    assert added.json()["id"] != listed["id"] and added.json()["config"] == listed["config"]
    gone = call(
        workdir, "POST", f"/api/agents/{AGENT}/tools", {**listed, "name": "x", "is_deleted": True}
    )
    assert "the row is marked is_deleted" in error_of(gone, 422)


def test_a_bundle_exported_over_http_imports_back_however_long_its_tools(workdir: Path) -> None:
    """Before: an export of 300 KB was refused on import with 413 "send a shorter
    message", the bound of every body being a message's (server.max_message_chars)."""

    async def add(client: httpx.AsyncClient, runtime: Runtime) -> None:
        for i in range(300):
            config = {"table": "tasks", "operation": "read"}
            await runtime.storage.tools.add(
                AGENT, f"list_{i}", type="crud", config=config, description="x" * 1000
            )

    api(workdir, add)
    exported = call(workdir, "GET", f"/api/agents/{AGENT}/export")
    assert exported.status_code == 200, exported.text
    assert len(exported.content) > 300_000
    bundle = exported.json()
    answer = call(workdir, "POST", "/api/agents/import", {"bundle": bundle, "dry_run": True})
    assert answer.status_code == 200, answer.text
    assert answer.json()["dry_run"] is True and answer.json()["changed"] == []
    # The larger bound is for admins' imports only in effect: anyone else is refused.
    plain = call(workdir, "POST", "/api/agents/import", {"bundle": bundle}, headers=PLAIN)
    assert plain.status_code == 403, plain.text
    # Past what a bundle file may hold: 413, saying so.
    huge = {"bundle": {**bundle, "padding": "y" * (4 * 1024 * 1024 + 20_000)}}
    refused = call(workdir, "POST", "/api/agents/import", huge)
    assert refused.status_code == 413, refused.text
    assert "a bundle is read up to 4 MiB" in refused.text
    # Every other body keeps a message's bound.
    other = call(workdir, "POST", "/api/tools", {"padding": "z" * 400_000})
    assert other.status_code == 413 and "send a shorter message" in other.text
