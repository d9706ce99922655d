"""Attacks on the admin routes and on agent bundles.

Over HTTP, on every backend: tokens that are not an admin's (unsigned, signed
with another key, expired, the role put where a user can write it), tool ids
that are no row, bodies that are not objects, deeply nested or too big,
bundles with unknown fields, too many tools or secret markers pointing
elsewhere, and crud tool rows naming the framework's own tables. Through the
CLI: YAML bundles with alias bombs, Python tags, deep nesting and oversized
files. Each gets a 4xx (or a one-line CLI error) naming what is wrong, and
nothing stored changes.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest

from chatwright.plugins.example import assistant as example
from tests.harness import assert_error, ok, run
from tests.hostile.conftest import AGENT, MakeServer, Server, assert_error_body, bearer

ADMIN = bearer("root", app_metadata={"role": "chatwright_admin"})


async def setup(make_server: MakeServer) -> Server:
    server = await make_server()
    await example.seed(server.runtime.storage, "offline:assistant")
    return server


async def snapshot(server: Server) -> str:
    response = await server.client.get(f"/api/agents/{AGENT}/export", headers=ADMIN)
    assert response.status_code == 200, response.text
    agents = [a.name for a in await server.runtime.storage.agents.list()]
    return response.text + json.dumps(agents)


def forged(claims: dict[str, Any], key: str = "another-secret-of-at-least-32-bytes!") -> str:
    return jwt.encode(claims, key, algorithm="HS256")


async def test_tokens_that_are_not_an_admin_s_change_nothing(make_server: MakeServer) -> None:
    server = await setup(make_server)
    before = await snapshot(server)
    now = int(time.time())
    claims = {"sub": "mallory", "aud": "authenticated", "exp": now + 600}
    role = {"app_metadata": {"role": "chatwright_admin"}}
    unsigned = jwt.encode({**claims, **role}, None, algorithm="none")
    cases = {
        "other key": ({"Authorization": f"Bearer {forged({**claims, **role})}"}, 401),
        "unsigned": ({"Authorization": f"Bearer {unsigned}"}, 401),
        "expired": (bearer("root", exp=now - 10, **role), 401),
        "no token": ({}, 401),
        "user_metadata": (bearer("mallory", user_metadata={"role": "chatwright_admin"}), 403),
        "role list elsewhere": (bearer("mallory", roles=["chatwright_admin"]), 403),
        "app_metadata not an object": (bearer("mallory", app_metadata="chatwright_admin"), 403),
        "service role": (bearer("svc", role="service_role", **role), 403),
    }
    for name, (headers, status) in cases.items():
        for method, path, body in [
            ("POST", "/api/agents", {"name": "evil", "model": "offline:x"}),
            ("PATCH", f"/api/agents/{AGENT}", {"system_prompt": "pwned"}),
            ("DELETE", f"/api/agents/{AGENT}", None),
            ("POST", "/api/agents/import", {"bundle": {}}),
        ]:
            response = await server.client.request(method, path, json=body, headers=headers)
            assert_error_body(response, status)
            assert response.status_code == status, (name, method, path)
    assert await snapshot(server) == before


@pytest.mark.parametrize("tool_id", ["0", "-1", "2147483648", "9223372036854775808", "abc", "1e3"])
async def test_tool_ids_that_are_no_row(make_server: MakeServer, tool_id: str) -> None:
    server = await setup(make_server)
    before = await snapshot(server)
    for method, path, body in [
        ("PATCH", f"/api/tools/{tool_id}", {"description": "x"}),
        ("DELETE", f"/api/tools/{tool_id}", None),
        ("POST", f"/api/tools/{tool_id}/copy", {"to": AGENT, "name": "x"}),
    ]:
        response = await server.client.request(method, path, json=body, headers=ADMIN)
        assert_error_body(response, 404, 422)
    assert await snapshot(server) == before


async def test_bodies_that_are_not_a_row(make_server: MakeServer) -> None:
    server = await setup(make_server)
    before = await snapshot(server)
    tool_id = (await server.runtime.storage.tools.list(AGENT))[0].id
    # Written out by hand: json.dumps itself would give up on this depth.
    deep = '{"name": "x", "model": "offline:x", "model_settings": ' + '{"a": ' * 5000 + "1"
    deep += "}" * 5001
    bodies = [
        json.dumps(body)
        for body in (
            [],
            "agent",
            None,
            42,
            {"name": "x" * 100_000, "model": "offline:x"},
            {"name": "x", "model": "offline:x", "id": 5, "created_at": "now"},
        )
    ]
    bodies += [deep, "{not json", '{"name": "\\ud800", "model": "offline:x"}']
    for body in bodies:
        for method, path in [
            ("POST", "/api/agents"),
            ("PATCH", f"/api/agents/{AGENT}"),
            ("POST", f"/api/agents/{AGENT}/tools"),
            ("PATCH", f"/api/tools/{tool_id}"),
            ("POST", "/api/agents/import"),
        ]:
            headers = {**ADMIN, "Content-Type": "application/json"}
            response = await server.client.request(method, path, content=body, headers=headers)
            assert_error_body(response, 400, 413, 422)
    huge = {"name": "x", "model": "offline:x", "system_prompt": "y" * 300_000}
    assert_error_body(await server.client.post("/api/agents", json=huge, headers=ADMIN), 413)
    assert await snapshot(server) == before


@pytest.mark.parametrize("table", ["agents", "agent_tools", "chat_messages", "pending_actions"])
async def test_a_crud_row_on_a_framework_table_is_refused(
    make_server: MakeServer, table: str
) -> None:
    server = await setup(make_server)
    before = await snapshot(server)
    row = {"name": "steal", "type": "crud", "config": {"table": table, "operation": "read"}}
    added = await server.client.post(f"/api/agents/{AGENT}/tools", json=row, headers=ADMIN)
    assert table in assert_error_body(added, 422)
    tool_id = (await server.runtime.storage.tools.list(AGENT))[0].id
    patched = await server.client.patch(
        f"/api/tools/{tool_id}", json={"config": row["config"]}, headers=ADMIN
    )
    assert table in assert_error_body(patched, 422)
    bundle = json.loads(before[: before.rindex("}") + 1])
    bundle["agent"]["system_prompt"] = "changed"
    bundle["tools"].append(row)
    imported = await server.client.post(
        "/api/agents/import", json={"bundle": bundle}, headers=ADMIN
    )
    assert "bundle not imported" in assert_error_body(imported, 422)
    assert await snapshot(server) == before


async def test_hostile_bundles_over_http(make_server: MakeServer) -> None:
    server = await setup(make_server)
    before = await snapshot(server)
    good = json.loads(before[: before.rindex("}") + 1])
    await server.runtime.storage.agents.update(AGENT, model_settings={"api_key": "sk-real"})
    good["agent"]["model_settings"] = {"api_key": {"$secret": "model_settings.api_key"}}
    before = await snapshot(server)
    deep: Any = 1
    for _ in range(40):
        deep = [deep]
    many = [{"name": f"t{i}"} for i in range(1001)]

    def changed(**parts: Any) -> dict[str, Any]:
        return {**good, **parts}

    cases: list[tuple[Any, str]] = [
        ({"bundle": changed(version=99)}, "version 99"),
        ({"bundle": changed(agent={**good["agent"], "id": 1})}, "unknown field 'id'"),
        ({"bundle": changed(tools=[{**good["tools"][0], "agent_id": 7}])}, "agent_id"),
        ({"bundle": changed(tools=many)}, "at most 1000"),
        ({"bundle": changed(agent={**good["agent"], "model_settings": {"x": deep}})}, "deeper"),
        ({"bundle": good, "secrets": {"model_settings.api_key": 5}}, "secrets"),
        ({"bundle": good, "prune": "yes"}, "prune"),
        ({"bundle": good, "as": "root"}, "unknown field 'as'"),
        (
            {
                "bundle": changed(
                    agent={
                        **good["agent"],
                        "model_settings": {"other": {"$secret": "model_settings.api_key"}},
                    }
                )
            },
            "names its own place",
        ),
        (
            {"bundle": changed(agent={**good["agent"], "name": "newcomer"})},
            "model_settings.api_key is a secret",
        ),
    ]
    for body, needle in cases:
        response = await server.client.post("/api/agents/import", json=body, headers=ADMIN)
        assert needle in assert_error_body(response, 413, 422), needle
    assert await snapshot(server) == before
    stored = await server.runtime.storage.agents.get(AGENT)
    assert stored is not None and stored.model_settings == {"api_key": "sk-real"}


# -- YAML and files through the CLI -------------------------------------------------------


@pytest.fixture
def exported(workdir: Path) -> str:
    ok("init", "--example")
    return ok("agents", "export", AGENT).stdout


BOMB = """\
format: chatwright-agent
version: 1
a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
agent: {name: assistant, model: "offline:x", model_settings: {x: *g}}
"""


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (BOMB, "more than 200000 values"),
        ("!!python/object/apply:os.system ['touch pwned']\n", "not valid JSON or YAML"),
        ("agent: !!python/name:os.system\n", "not valid JSON or YAML"),
        ("[" * 20_000 + "]" * 20_000, "nested deeper"),
        ("{" + '"a": {' * 20_000 + "}" * 20_001, "nested deeper"),
        ("format: chatwright-agent\nversion: 1\nagent: {name: x, model: 2020-01-01}\n", "date"),
        ("- just\n- a list\n", "must hold one object"),
        ("\x00\x01binary", "not valid"),
        ("", "must hold one object"),
    ],
    ids=[
        "alias-bomb",
        "python-tag",
        "python-name",
        "deep-yaml",
        "deep-json",
        "date",
        "list",
        "binary",
        "empty",
    ],
)
def test_hostile_bundle_files(exported: str, workdir: Path, text: str, needle: str) -> None:
    path = workdir / "hostile.yaml"
    path.write_text(text, encoding="utf-8")
    assert_error(run("agents", "import", str(path)), needle)
    assert not (workdir / "pwned").exists()
    assert ok("agents", "export", AGENT).stdout == exported


def test_an_oversized_bundle_file_is_refused_unread(exported: str, workdir: Path) -> None:
    path = workdir / "big.json"
    bundle = json.loads(exported)
    bundle["agent"]["system_prompt"] = "x" * (5 * 1024 * 1024)
    path.write_text(json.dumps(bundle), encoding="utf-8")
    assert_error(run("agents", "import", str(path)), "a bundle is at most")
    assert ok("agents", "export", AGENT).stdout == exported


def test_cli_tool_commands_on_rows_of_nowhere(exported: str) -> None:
    assert_error(run("tools", "remove", "424242"), "no tool row with id 424242")
    assert run("tools", "remove", "0").exit_code == 2
    assert_error(run("tools", "copy", "1", "--to", "nobody"), "no agent named 'nobody'")
    assert_error(run("tools", "copy", "1", "--to", AGENT, "--name", "bad name"), "name")
    # A copy whose name the agent has: the way out that needs no other row changed.
    line = assert_error(
        run("tools", "copy", "1", "--to", AGENT),
        "already has a tool named",
        "; give the copy a name of its own (--name NEW",
        "rename that row with `chatwright tools set",
    )
    assert "pick another name" not in line
    assert_error(run("agents", "export", "nobody"), "no agent named 'nobody'")
    # No answer to the question (a script without --yes), or no: nothing is deleted,
    # and the error says how to delete without asking, as `users erase` does.
    for answer in (None, "n\n"):
        refused = run("agents", "delete", AGENT, input=answer)
        assert refused.exit_code == 1
        assert "Error: nothing deleted (pass --yes to delete without asking)" in refused.stderr
        assert "Traceback" not in refused.output and "Aborted" not in refused.output
    assert_error(
        run("agents", "delete", "../" * 100, "--yes"),
        "300 characters long; an agent name has at most 200",
    )
    assert ok("agents", "export", AGENT).stdout == exported


def test_cli_import_options_that_are_not_secrets(exported: str, workdir: Path) -> None:
    path = workdir / "same.json"
    path.write_text(exported, encoding="utf-8")
    assert_error(run("agents", "import", str(path), "--secret", "nothing"), "not WHERE=VALUE")
    assert_error(
        run("agents", "import", str(path), "--secret", "agent.name=root"),
        "no secret marker at agent.name",
    )
    missing = run("agents", "import", str(workdir / "missing.json"))
    assert missing.exit_code == 2 and "No such file" in missing.output
    assert ok("agents", "export", AGENT).stdout == exported
