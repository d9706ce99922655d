"""A small MCP server for the tests, on the MCP SDK's MCPServer.

Run as ``python mcp_server.py stdio PIDFILE`` (each start appends its process id to
PIDFILE, so a test can count starts and see one end) or ``python mcp_server.py http PORT
[HOST]`` (HOST: 127.0.0.1 unless given).
Its tools: ``echo`` (read-only), ``add``, ``whoami`` (the environment
variable MCP_TEST_NAME, given by the settings), ``crash`` (the process exits
at once, mid-session) and ``headers_seen`` (over HTTP: the Authorization
header it got, to show settings' credentials arrive).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from mcp.server.mcpserver import Context, MCPServer
from mcp.types import ToolAnnotations

server = MCPServer("test-server")


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def echo(text: str) -> str:
    """Say the text back."""
    return f"echo: {text}"


@server.tool()
def add(a: int, b: int) -> str:
    """Add two numbers."""
    return str(a + b)


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def whoami() -> str:
    """The name the server was started with."""
    return os.environ.get("MCP_TEST_NAME", "nobody")


@server.tool()
def crash() -> str:
    """End the server's process at once."""
    os._exit(3)


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def headers_seen(ctx: Context) -> str:
    """The Authorization header of the request (over HTTP)."""
    request = ctx.request_context.request
    headers = getattr(request, "headers", {})
    return str(headers.get("authorization", "none"))


if __name__ == "__main__":
    if sys.argv[1] == "stdio":
        with Path(sys.argv[2]).open("a") as pids:
            pids.write(f"{os.getpid()}\n")
        server.run("stdio")
    else:
        host = sys.argv[3] if len(sys.argv) > 3 else "127.0.0.1"
        server.run("streamable-http", host=host, port=int(sys.argv[2]))
