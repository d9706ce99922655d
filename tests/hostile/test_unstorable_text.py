"""Text no database stores as given (a NUL, a lone surrogate) in agents and tool rows.

PostgreSQL refuses a NUL in text and in jsonb, and UTF-8 has no surrogates: such
text reached the database through the admin API and the CLI, which answered
"the database refused a value", naming nothing (and SQLite kept it, so an
export could not be imported elsewhere). Every way in now refuses it where it
is set, naming the field, and stores nothing.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.harness import assert_error, run
from tests.test_admin_api import ADMIN, api, error_of
from tests.test_cli_tools import sql

pytestmark = pytest.mark.usefixtures("example")


def unchanged() -> tuple[object, ...]:
    return (
        sql("SELECT name, system_prompt, model_settings FROM agents ORDER BY name"),
        sql("SELECT name, description, config FROM agent_tools ORDER BY id"),
    )


def test_the_admin_api(workdir: Path) -> None:
    before = unchanged()
    bodies = [
        (
            "POST",
            "/api/agents",
            '{"name": "n2", "model": "scripted:x", "system_prompt": "a\\u0000b"}',
            "system_prompt",
        ),
        (
            "PATCH",
            "/api/agents/assistant",
            '{"model_settings": {"stop": ["x\\ud800"]}}',
            "model_settings.stop",
        ),
        ("PATCH", "/api/agents/assistant", '{"model_settings": {"k\\u0000": 1}}', "key"),
        (
            "POST",
            "/api/agents/assistant/tools",
            '{"name": "t", "description": "d\\u0000", "config": {}}',
            "description",
        ),
        (
            "POST",
            "/api/agents/assistant/tools",
            '{"name": "t", "config": {"table": "tasks\\u0000"}}',
            "config.table",
        ),
    ]

    async def exchange(client: httpx.AsyncClient, runtime: object) -> list[httpx.Response]:
        headers = {**ADMIN, "content-type": "application/json"}
        return [await client.request(m, p, content=b, headers=headers) for m, p, b, _ in bodies]

    for (method, path, _, where), response in zip(bodies, api(workdir, exchange), strict=True):
        error = error_of(response, 422)
        assert where in error and ("NUL" in error or "surrogate" in error), (method, path, error)
    assert unchanged() == before


def test_a_tool_row_file(workdir: Path) -> None:
    before = unchanged()
    row = '{"name": "t", "type": "crud", "description": "bad\\u0000", "config": {}}'
    (workdir / "tool.json").write_text(row)
    assert_error(
        run("tools", "add", "--agent", "assistant", "--file", "tool.json"),
        "tool.json: description holds a NUL character",
    )
    assert unchanged() == before


def test_a_prompt_file(workdir: Path) -> None:
    before = unchanged()
    (workdir / "prompt.txt").write_text("You help.\x00 Always.", encoding="utf-8")
    for command in (
        ["agents", "add", "n1", "--model", "offline:x"],
        ["agents", "set", "assistant"],
    ):
        assert_error(
            run(*command, "--prompt-file", "prompt.txt"), "system_prompt", "holds a NUL character"
        )
    assert unchanged() == before
