"""Numbers JSON cannot hold (NaN, Infinity, 1e400) in agent settings and tool configs.

Python's JSON parser reads them, SQLite stored them as non-standard JSON that
the API then showed as null and exports emitted as ``NaN``, and PostgreSQL
refused them with an error naming no field. Every way in (``--setting``,
``tools add``, ``agents import``, the admin API) now refuses them with one
error naming where the number is, and nothing is stored.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.harness import assert_error, ok, run
from tests.test_admin_api import ADMIN, api, error_of
from tests.test_cli_tools import sql

pytestmark = pytest.mark.usefixtures("example")

SAID = "is NaN or infinite (or too large to be a number), which JSON cannot hold"


def unchanged() -> tuple[object, ...]:
    return (
        sql("SELECT name, model_settings FROM agents ORDER BY name"),
        sql("SELECT name, config FROM agent_tools ORDER BY id"),
    )


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e400", '[1, {"c": NaN}]'])
def test_model_settings_from_the_cli(value: str) -> None:
    before = unchanged()
    where = "model_settings.a.1.c" if value.startswith("[") else "model_settings.a"
    for command in (
        ["agents", "add", "n1", "--model", "scripted:x"],
        ["agents", "set", "assistant"],
    ):
        assert_error(run(*command, "--setting", f"a={value}"), f"{where} {SAID}")
    assert unchanged() == before


def test_a_tool_config_from_a_file_and_a_bundle(workdir: Path) -> None:
    before = unchanged()
    config = '{"table": "tasks", "operation": "create", "args": {"title": {"type": "string"}}, '
    config += '"defaults": {"done": NaN}}'
    (workdir / "tool.json").write_text(f'{{"name": "t", "type": "crud", "config": {config}}}')
    assert_error(
        run("tools", "add", "--agent", "assistant", "--file", "tool.json"),
        f"tool.json: config.defaults.done {SAID}",
    )
    tool_id = sql("SELECT min(id) FROM agent_tools")[0][0]
    assert_error(
        run("tools", "set", str(tool_id), "--config", config.replace("NaN", "Infinity")),
        f"config.defaults.done {SAID}",
    )
    bundle = '{"format": "chatwright-agent", "version": 1, "agent": {"name": "bn", '
    bundle += (
        f'"model": "scripted:x"}}, "tools": [{{"name": "t", "type": "crud", "config": {config}}}]}}'
    )
    (workdir / "bundle.json").write_text(bundle)
    assert_error(run("agents", "import", "bundle.json"), f"config.defaults.done {SAID}")
    assert unchanged() == before


def test_the_admin_api(workdir: Path) -> None:
    before = unchanged()
    bodies = [
        (
            "POST",
            "/api/agents",
            '{"name": "n2", "model": "scripted:x", "model_settings": {"a": NaN}}',
        ),
        ("PATCH", "/api/agents/assistant", '{"model_settings": {"b": 1e400}}'),
        (
            "POST",
            "/api/agents/assistant/tools",
            '{"name": "t", "config": {"defaults": {"x": -Infinity}}}',
        ),
    ]

    async def exchange(client: httpx.AsyncClient, runtime: object) -> list[httpx.Response]:
        headers = {**ADMIN, "content-type": "application/json"}
        return [await client.request(m, p, content=b, headers=headers) for m, p, b in bodies]

    for (method, path, _), response in zip(bodies, api(workdir, exchange), strict=True):
        assert SAID in error_of(response, 422), (method, path)
    assert unchanged() == before
    exported = ok("agents", "export", "assistant").stdout
    json.loads(exported, parse_constant=lambda name: pytest.fail(f"export holds {name}"))
