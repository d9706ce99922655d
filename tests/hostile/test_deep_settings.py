"""Agent settings and tool configs nested deeper than anything real.

The admin API stored ``model_settings`` nested 400 levels deep and then could
not answer (a 500 after the change was kept, so a retry got 409); 900 levels
failed on the way out too, and ``agents show`` then printed an unexpected
RecursionError. Every way in (``--setting``, ``tools set``, the admin API)
refuses what nests deeper than 24 levels (so that it always fits in a bundle),
naming the field, and stores nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from chatwright.agents import MAX_JSON_DEPTH
from tests.harness import assert_error, ok, run
from tests.test_admin_api import ADMIN, api, error_of
from tests.test_cli_tools import sql

pytestmark = pytest.mark.usefixtures("example")

SAID = f"is nested deeper than {MAX_JSON_DEPTH} levels of objects and lists"


def nested(depth: int) -> str:
    return '{"a": ' * depth + "1" + "}" * depth


def unchanged() -> tuple[object, ...]:
    return (
        sql("SELECT name, model_settings FROM agents ORDER BY name"),
        sql("SELECT name, config FROM agent_tools ORDER BY id"),
    )


def test_from_the_cli() -> None:
    before = unchanged()
    for command in (
        ["agents", "add", "n1", "--model", "scripted:x"],
        ["agents", "set", "assistant"],
    ):
        assert_error(run(*command, "--setting", f"a={nested(40)}"), f"model_settings {SAID}")
    tool_id = sql("SELECT min(id) FROM agent_tools")[0][0]
    config = '{"table": "tasks", "operation": "create", "defaults": ' + nested(40) + "}"
    assert_error(run("tools", "set", str(tool_id), "--config", config), f"config {SAID}")
    assert unchanged() == before
    # As deep as allowed is kept, and shown.
    ok("agents", "set", "assistant", "--setting", f"a={nested(MAX_JSON_DEPTH - 1)}")
    assert '"a"' in ok("agents", "show", "assistant").stdout


def test_the_admin_api(workdir: Path) -> None:
    before = unchanged()
    bodies = [
        (
            "POST",
            "/api/agents",
            '{"name": "n2", "model": "scripted:x", "model_settings": ' + nested(400) + "}",
        ),
        ("PATCH", "/api/agents/assistant", '{"model_settings": ' + nested(900) + "}"),
        (
            "POST",
            "/api/agents/assistant/tools",
            '{"name": "t", "config": {"defaults": ' + nested(200) + "}}",
        ),
    ]

    async def exchange(client: httpx.AsyncClient, runtime: object) -> list[httpx.Response]:
        headers = {**ADMIN, "content-type": "application/json"}
        return [await client.request(m, p, content=b, headers=headers) for m, p, b in bodies]

    for (method, path, _), response in zip(bodies, api(workdir, exchange), strict=True):
        assert SAID in error_of(response, 422), (method, path, response.text[:300])
    assert unchanged() == before
    json.loads(ok("agents", "export", "assistant").stdout)


def test_the_deepest_settings_allowed_survive_export_and_import(workdir: Path) -> None:
    """What may be set may be moved: a bundle allows 32 levels from its top, where an
    agent's settings are 2 down (and a tool's config 3)."""
    deepest = nested(MAX_JSON_DEPTH - 1)
    ok("agents", "set", "assistant", "--setting", f"a={deepest}")
    exported = ok("agents", "export", "assistant").stdout
    (workdir / "bundle.json").write_text(exported.replace('"assistant"', '"copy"', 1))
    ok("agents", "import", "bundle.json")
    assert (
        json.loads(ok("agents", "export", "copy").stdout)["agent"]["model_settings"]
        == (json.loads(exported)["agent"]["model_settings"])
    )
