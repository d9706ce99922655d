"""The ``chatwright mcp`` command group: ``mcp serve``.

Only click is imported here (``chatwright --help`` reads this module); the
MCP SDK and the server are imported when a command runs.
"""

from __future__ import annotations

import click

from chatwright.cli import AppContext, pass_app

DEFAULT_PORT = 8765


@click.group()
def mcp() -> None:
    """Serve an agent's tools to MCP clients."""


@mcp.command()
@click.option("--agent", "agent_name", required=True, help="The agent whose tools are served.")
@click.option("--user", "user_id", help="The user the tools act for (stdio; required there).")
@click.option("--http", "over_http", is_flag=True, help="Serve streamable HTTP, users from JWTs.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (--http).")
@click.option("--port", type=int, default=DEFAULT_PORT, show_default=True, help="Port (--http).")
@pass_app
def serve(
    app: AppContext,
    agent_name: str,
    user_id: str | None,
    over_http: bool,
    host: str,
    port: int,
) -> None:
    """Serve the agent's database-configured tools over MCP (stdio, or --http).

    Over stdio (what desktop clients start) the tools act for the one --user.
    Over HTTP each request's user is the subject of its JWT bearer token,
    verified like the HTTP API's (server.* settings); crud tools see that
    user's rows only. Tool rows added or changed are served without a restart.
    """
    from chatwright.commands import inputs
    from chatwright.errors import InvalidInputError

    # As every command checks an agent's name: UTF-8 text, 1-200 characters, no control.
    inputs.agent("--agent", agent_name)
    if over_http:
        if user_id is not None:
            raise InvalidInputError(
                "--user is for stdio; over --http each request's user is its token's subject"
            )
        if not 0 < port < 65536:
            raise InvalidInputError(f"--port {port} is not a port number (1-65535)")
        from chatwright.plugins.server.auth import check_bind
        from chatwright_mcp.serve import checked_host

        host = checked_host(host)
        check_bind(app.settings, host)
        from chatwright_mcp.serve import serve_http

        app.run(lambda runtime: serve_http(runtime, agent_name, host, port))
        return
    if user_id is None:
        raise InvalidInputError(
            "give --user USER: the user the tools act for over stdio (1-255 characters)"
        )
    # As every command checks a user id: text that is UTF-8, 1-255 characters, no control.
    inputs.name("--user", user_id)
    from chatwright_mcp.serve import serve_stdio

    app.run(lambda runtime: serve_stdio(runtime, agent_name, user_id))
