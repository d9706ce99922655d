"""An MCP server for the tests with odd tools, and which misbehaves: the SDK's low-level Server.

Run as ``python odd_server.py PIDFILE`` (stdio; each start appends its process
id to PIDFILE). It lists its tools in one page, or, with the environment
variable ODD_PAGES, in pages of that many tools; ODD_PAGES=endless gives a
next page for ever, each with one tool ``pageN``.
With ODD_LIST=broken it lists good tools among tools whose input schemas no
model can be given (:data:`BROKEN`; with ODD_SECRET set, ``bad-`` and its value
names one more), as they are, past the SDK's own check of its answers. With
ODD_LIST=many it lists ODD_MANY tools (5,000 unless given), ``many0``,
``many1``, …, instead of its own. Every tool that answers says back its
name and the arguments it got, as ``NAME {json}``. Its tools:

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


def chained(length: int) -> dict[str, Any]:
    """An object schema whose property refers to a definition that refers to the next, and
    so on ``length`` times: flat as JSON, deep once its references are filled in."""
    defs: dict[str, Any] = {
        f"d{n}": {"type": "object", "properties": {"next": {"$ref": f"#/$defs/d{n + 1}"}}}
        for n in range(length)
    }
    defs[f"d{length}"] = {"type": "string"}
    return {"type": "object", "$defs": defs, "properties": {"text": {"$ref": "#/$defs/d0"}}}


# Listed with ODD_LIST=broken, in this order: good tools, and tools whose input schemas
# cannot be given to a model.
BROKEN: dict[str, Any] = {
    "good_first": TEXT,
    "properties_list": {"type": "object", "properties": ["text"]},
    "property_number": {"type": "object", "properties": {"text": 5}},
    "property_list": {"type": "object", "properties": {"text": [{"type": "string"}]}},
    "required_odd": {
        "type": "object",
        "properties": {"text": {"type": "string"}},
        "required": [{"name": "text"}],
    },
    "good_middle": TEXT,
    "ref_nowhere": {"type": "object", "properties": {"text": {"$ref": "#/$defs/nowhere"}}},
    "ref_elsewhere": {
        "type": "object",
        "properties": {"text": {"$ref": "https://schemas.example.com/text.json"}},
    },
    "ref_not_text": {"type": "object", "properties": {"text": {"$ref": 7}}},
    "not_an_object": {"type": "array", "items": {"type": "string"}},
    "too_deep": chained(2000),
    "good_last": TEXT,
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
    schema = BROKEN.get(name) or SCHEMAS.get(name, TEXT)
    return types.Tool(name=name, description=f"The tool {name}.", input_schema=schema)


async def list_tools(
    ctx: Any, params: types.PaginatedRequestParams | None
) -> types.ListToolsResult:
    secret = os.environ.get("ODD_SECRET")
    names = [*SCHEMAS, "described", *([f"for-{secret}"] if secret else [])]
    listing = os.environ.get("ODD_LIST")
    if listing == "broken":
        names = list(BROKEN)
    elif listing == "many":
        names = [f"many{n}" for n in range(int(os.environ.get("ODD_MANY", "5000")))]
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


async def unchecked(ctx: Any, call_next: Any) -> Any:
    """With ODD_LIST=broken, the tool list as it is: the SDK's server checks its answers
    and would refuse to send it (a server on another SDK, or none, sends what it has)."""
    if ctx.method == "tools/list" and os.environ.get("ODD_LIST") == "broken":
        secret = os.environ.get("ODD_SECRET")
        # A broken tool whose name shows the value of ODD_SECRET, when given.
        more = {f"bad-{secret}": BROKEN["properties_list"]} if secret else {}
        return {
            "tools": [
                {"name": name, "description": f"The tool {name}.", "inputSchema": schema}
                for name, schema in {**BROKEN, **more}.items()
            ]
        }
    return await call_next(ctx)


server = Server("odd-server", on_list_tools=list_tools, on_call_tool=call_tool)
server.middleware.append(unchecked)


async def main() -> None:
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


if __name__ == "__main__":
    with Path(sys.argv[1]).open("a") as pids:
        pids.write(f"{os.getpid()}\n")
    anyio.run(main)
