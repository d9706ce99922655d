"""chatwright-mcp: MCP both ways.

- The ``mcp`` tool type: an ``agent_tools`` row names an MCP server that the
  ``[mcp]`` settings allow (a command run over stdio, or a streamable-HTTP
  URL) and which of its tools to expose; they become the agent's tools, with
  their schemas (:mod:`.tool`). Connections are opened by the first call,
  shared across turns and users, and closed when the built agent is evicted
  or the runtime stops, which waits until they are (:mod:`.connections`).
- ``chatwright mcp serve --agent NAME``: the agent's database-configured
  tools, any type, served to MCP clients over stdio for one local user or
  over streamable HTTP for the users of JWT bearer tokens (:mod:`.serve`).

Registration is free: the mcp SDK is imported when a row is built or a
server starts, not when chatwright starts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chatwright import hookimpl

if TYPE_CHECKING:
    import click
    from langchain_core.tools import BaseTool
    from pydantic import BaseModel

    from chatwright import SettingsRegister, ToolTypeRegister
    from chatwright.runtime import Runtime
    from chatwright.stores import ToolRow
    from chatwright.tools import ToolContext

__version__ = "0.1.0"


class LazyMcpType:
    """Stands in for :class:`.tool.McpToolType` until a row needs it."""

    @property
    def config_model(self) -> type[BaseModel]:
        from chatwright_mcp.tool import McpConfig

        return McpConfig

    async def build(self, row: ToolRow, config: Any, context: ToolContext) -> list[BaseTool]:
        from chatwright_mcp.tool import McpToolType

        return await McpToolType().build(row, config, context)


@hookimpl
def register_tool_types(register: ToolTypeRegister) -> None:
    register("mcp", LazyMcpType())


@hookimpl
def register_settings(register: SettingsRegister) -> None:
    from chatwright_mcp.settings import SECTION, McpSettings

    register(SECTION, McpSettings)


@hookimpl
def executor_evicted(key: str, reason: str) -> None:
    from chatwright_mcp.connections import OPEN

    # The servers stop in the background, on the connections' own loop.
    OPEN.close_agent(key)


@hookimpl
def shutdown(runtime: Runtime) -> None:
    from chatwright_mcp.connections import CLOSE_WAIT, OPEN

    # Waits (a few seconds at most) until the servers have stopped: what runs after
    # the runtime closes (the end of asyncio.run, the process's exit) cannot cut
    # their stop short and leave a server running.
    OPEN.close_owned_by(runtime.storage, CLOSE_WAIT)


@hookimpl
def register_commands(cli: click.Group) -> None:
    from chatwright_mcp.command import mcp

    cli.add_command(mcp)
