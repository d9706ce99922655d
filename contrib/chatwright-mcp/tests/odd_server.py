"""An MCP server for the tests with odd tools, and which misbehaves: the SDK's low-level Server.

Run as ``python odd_server.py PIDFILE`` (stdio; each start appends its process
id to PIDFILE). It lists its tools in one page, or, with the environment
variable ODD_PAGES, in pages of that many tools; ODD_PAGES=endless gives a
next page for ever, each with one tool ``pageN``. Every tool that answers says
back its name and the arguments it got, as ``NAME {json}``. Its tools:

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
- ``described``: its description, and its schema's default and an example,
  show the value of ODD_SECRET (a server telling which key it was given);
  with ODD_SECRET set, ``for-`` and its value names one more tool.
- ``slow``: answers after 3 seconds, serving other calls meanwhile.
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
    "slow": TEXT,
}
BLOCK_SECONDS = 600
SLOW_SECONDS = 3


def tool(name: str) -> types.Tool:
    if name == "described":
        secret = os.environ.get("ODD_SECRET", "")
        key = {"type": "string", "default": secret, "examples": [f"{secret}-2"]}
        return types.Tool(
            name=name,
            description=f"Calls the upstream service with the key {secret}.",
            input_schema={"type": "object", "properties": {"key": key}},
        )
    schema = SCHEMAS.get(name, TEXT)
    return types.Tool(name=name, description=f"The tool {name}.", input_schema=schema)


async def list_tools(
    ctx: Any, params: types.PaginatedRequestParams | None
) -> types.ListToolsResult:
    secret = os.environ.get("ODD_SECRET")
    names = [*SCHEMAS, "described", *([f"for-{secret}"] if secret else [])]
    pages = os.environ.get("ODD_PAGES")
    start = int(params.cursor) if params is not None and params.cursor is not None else 0
    if pages == "endless":
        page = [types.Tool(name=f"page{start}", input_schema=TEXT)]
        return types.ListToolsResult(tools=page, next_cursor=str(start + 1))
    size = int(pages) if pages else len(names)
    more = str(start + size) if start + size < len(names) else None
    return types.ListToolsResult(
        tools=[tool(name) for name in names[start : start + size]], next_cursor=more
    )


async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
    name = params.name
    if name == "leak":
        raise MCPError(-32000, f"the upstream service refused the key {os.environ['ODD_SECRET']}")
    if name == "stall":
        time.sleep(BLOCK_SECONDS)  # noqa: ASYNC251 (blocking the loop is the point)
    if name == "freeze":
        asyncio.get_running_loop().call_later(0.2, time.sleep, BLOCK_SECONDS)
    if name == "slow":
        await asyncio.sleep(SLOW_SECONDS)
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
