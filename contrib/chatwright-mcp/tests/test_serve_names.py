"""``mcp serve`` serves one tool per name: the first the agent's rows give.

A client calls a tool by its name; were two tools of one name served, the
later one would take the calls meant for the first. The tool type here,
``twins``, gives tools of one name from one row (the tool loader leaves out a
later row's tool named like an earlier row's; two of one row reach ``mcp serve``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import chatwright_mcp
import pytest
from chatwright_mcp.serve import ServedTools
from conftest import make_runtime
from langchain_core.tools import BaseTool, StructuredTool
from pydantic import BaseModel

from chatwright import hookimpl
from chatwright.registry import LoadPolicy, Plugins

AGENT = "twins"
USER = "alice"


class TwinsConfig(BaseModel):
    answers: list[str]


class TwinsType:
    """Tools named ``ping``, one per answer, each saying its answer."""

    config_model = TwinsConfig

    async def build(self, row: Any, config: Any, context: Any) -> list[BaseTool]:
        def ping(answer: str) -> BaseTool:
            async def say() -> str:
                return answer

            return StructuredTool.from_function(coroutine=say, name="ping", description="Ping.")

        return [ping(answer) for answer in config.answers]


class Twins:
    @hookimpl
    def register_tool_types(self, register: Any) -> None:
        register("twins", TwinsType())


async def test_serve_keeps_the_first_of_two_tools_of_one_name(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    plugins = Plugins.load(LoadPolicy())
    if not any(info.name == "mcp" for info in plugins.infos()):
        plugins.register(chatwright_mcp, "mcp")
    plugins.register(Twins(), "twins")
    runtime = await make_runtime(tmp_path, plugins, {})
    try:
        await runtime.storage.agents.create(AGENT, system_prompt="", model="scripted:x")
        config = {"answers": ["first", "second"]}
        await runtime.storage.tools.add(AGENT, "pair", type="twins", config=config)
        served = ServedTools(runtime, AGENT)
        with caplog.at_level(logging.WARNING):
            tools = await served.current()
        assert list(tools) == ["ping"]
        listed = await served.list_tools()
        assert [t.name for t in listed] == ["ping"]
        result = await served.call(USER, "ping", {})
        assert (result.is_error, [block.text for block in result.content]) == (False, ["first"])
        assert (
            "agent 'twins': a tool named 'ping' of row 'pair' is not served: row 'pair' gives "
            "a tool of that name already; rename one of them"
        ) in caplog.text
    finally:
        await runtime.close()
