"""An MCP server for the tests with odd tools, and which misbehaves: the SDK's low-level Server.

Run as ``python odd_server.py PIDFILE`` (stdio; each start appends its process
id to PIDFILE). Every tool that answers says back its name and the arguments
it got, as ``NAME {json}``. Its tools:

- ``a.b``, ``a_b``, ``a b`` and two names of 70 characters alike in their
  first 64: names that are one name once made safe for a model.
- ``leak``: refuses every call with an error (code -32000, a server error of
  JSON-RPC's) that holds the value of the environment variable ODD_SECRET
  (given by the settings).
- ``backtrack``: its schema's pattern backtracks catastrophically on
  ``aaa…a!``.
- ``itself``: a schema that refers to itself (``{"$ref": "#"}``).
- ``named``: arguments named ``self``, ``config``, ``run_manager`` and
  ``callbacks``.
- ``stall``: never answers; it blocks the server's event loop for 10 minutes.
- ``freeze``: answers, then blocks the server's event loop for 10 minutes:
  the server reads nothing more, and does not notice its input closing.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
from mcp import MCPError
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server

TEXT = {"type": "object", "properties": {"text": {"type": "string"}}}
LONG = "x" * 64
SCHEMAS: dict[str, dict[str, Any]] = {
    "a.b": TEXT,
    "a_b": TEXT,
    "a b": TEXT,
    LONG + "-first": TEXT,
    LONG + "-other": TEXT,
    "leak": TEXT,
    "backtrack": {
        "type": "object",
        "properties": {"text": {"type": "string", "pattern": "^(a+)+$"}},
    },
    "itself": {"$ref": "#", "type": "object"},
    "named": {
        "type": "object",
        "properties": {
            name: {"type": "string"} for name in ("self", "config", "run_manager", "callbacks")
        },
    },
    "stall": TEXT,
    "freeze": TEXT,
}
BLOCK_SECONDS = 600


async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
    return types.ListToolsResult(
        tools=[
            types.Tool(name=name, description=f"The tool {name}.", input_schema=schema)
            for name, schema in SCHEMAS.items()
        ]
    )


async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
    name = params.name
    if name == "leak":
        raise MCPError(-32000, f"the upstream service refused the key {os.environ['ODD_SECRET']}")
    if name == "stall":
        time.sleep(BLOCK_SECONDS)  # noqa: ASYNC251 (blocking the loop is the point)
    if name == "freeze":
        asyncio.get_running_loop().call_later(0.2, time.sleep, BLOCK_SECONDS)
    text = f"{name} {json.dumps(params.arguments or {}, sort_keys=True)}"
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)])


server = Server("odd-server", on_list_tools=list_tools, on_call_tool=call_tool)


async def main() -> None:
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


if __name__ == "__main__":
    with Path(sys.argv[1]).open("a") as pids:
        pids.write(f"{os.getpid()}\n")
    anyio.run(main)
