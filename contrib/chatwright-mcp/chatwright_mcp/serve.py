"""``chatwright mcp serve``: an agent's database-configured tools, served over MCP.

:class:`ServedTools` holds the agent's active tool rows built once per config
version: each ``tools/list`` and ``tools/call`` reads the agent's version (one
small query) and rebuilds when a row was added, changed or removed, so an
MCP client sees ``chatwright tools add`` without a restart. Tools are built
without a user, as for a turn; each call runs for the caller's user through
:func:`chatwright.writes.call_tool`, the path a turn's approved calls take:
the tool reads its user from the turn context set there (crud rows are scoped
to that user), ``before_write``/``after_write`` hooks apply, and writes are
audited under a turn id of their own (one per call) and the serving session's
chat id.

Who the user is: over stdio, the one ``--user`` given on the command line;
over streamable HTTP, the subject of the request's JWT bearer token,
verified by the HTTP API's own code (``server.*`` settings), or the user
``local`` when ``server.auth`` is ``local`` (loopback addresses only).
Arguments never name the user: a crud tool's schema has no such argument.

A row whose approval is ``required`` (or ``user`` and the user chose
``required``) is not run over MCP, where nobody is there to approve: the
call gets an error result saying to approve it in chatwright, and nothing is
stored.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import re
import socket
import uuid
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from chatwright.errors import ChatwrightError, InvalidInputError, UnknownAgentError

if TYPE_CHECKING:
    import mcp_types
    from langchain_core.tools import BaseTool
    from mcp.server.lowlevel import Server
    from starlette.applications import Starlette

    from chatwright.runtime import Runtime

log = logging.getLogger(__name__)

MAX_ARGUMENT_CHARS = 100_000
HOST_NAME = re.compile(
    r"^(?=.{1,253}\.?$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$"
)
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")


def checked_host(host: str) -> str:
    """``--host`` as an address or a name to bind; InvalidInputError when it is neither."""
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        address = ipaddress.ip_address(bare)
    except ValueError:
        pass
    else:
        if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
            raise InvalidInputError(
                f"--host {host!r} has a zone (%{address.scope_id}), which the server's URL "
                "cannot hold; give an address without one, or a host name"
            )
        return str(address)
    # A name of digits and dots only would be an IPv4 address, and is not one.
    if HOST_NAME.match(bare) and not re.fullmatch(r"[0-9.]+", bare):
        return bare.lower()
    raise InvalidInputError(
        f"--host {host!r} is not an IP address or a host name; give one like 127.0.0.1, "
        "::1, 0.0.0.0 or localhost"
    )


def url_host(host: str) -> str:
    """``host`` as a URL writes it: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host else host


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` for the server; ChatwrightError when it cannot be."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ChatwrightError(f"cannot serve on {host}: {exc.strerror or exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ChatwrightError(
            f"cannot serve on {url_host(host)}:{port}: {exc.strerror or exc}; give another "
            "--host or --port"
        ) from None
    return sock


def unique_tools(tools: Iterable[BaseTool], agent_name: str) -> dict[str, BaseTool]:
    """The tools by name, each name's first tool only.

    A client calls a tool by its name: were a second tool of one name served,
    it would take the calls meant for the first (a server's tool named like a
    crud row's). It is left out, with a warning naming both rows.
    """
    from chatwright.writes import row_of

    found: dict[str, BaseTool] = {}
    for tool in tools:
        first = found.setdefault(tool.name, tool)
        if first is not tool:
            this, other = row_of(tool), row_of(first)
            log.warning(
                "chatwright: agent %r: a tool named %r of row %r is not served: row %r gives "
                "a tool of that name already; rename one of them",
                agent_name,
                tool.name,
                this.name if this is not None else None,
                other.name if other is not None else None,
            )
    return found


def schema_of(tool: BaseTool) -> dict[str, Any]:
    """A built tool's input schema as JSON Schema (what MCP clients show their model)."""
    schema = tool.args_schema
    if isinstance(schema, dict):
        found: dict[str, Any] = dict(schema)
    elif isinstance(schema, type) and issubclass(schema, BaseModel):
        found = schema.model_json_schema()
    else:
        found = {}
    found.setdefault("type", "object")
    found.setdefault("properties", {})
    found.pop("title", None)
    return found


def error_result(text: str) -> mcp_types.CallToolResult:
    import mcp_types

    return mcp_types.CallToolResult(
        content=[mcp_types.TextContent(type="text", text=text)], is_error=True
    )


class ServedTools:
    """One agent's tools for MCP clients, rebuilt when the agent's config version changes."""

    def __init__(self, runtime: Runtime, agent_name: str) -> None:
        self.runtime = runtime
        self.agent_name = agent_name
        self.chat_id = uuid.uuid4()
        """What this serving process's audit entries name as their chat."""
        self._version: str | None = None
        self._tools: dict[str, BaseTool] = {}
        self._lock = asyncio.Lock()

    async def current(self) -> dict[str, BaseTool]:
        from chatwright.tools import load_tools

        version = await self.runtime.storage.agents.config_version(self.agent_name)
        if version is None:
            raise UnknownAgentError(self.agent_name)
        async with self._lock:
            if version != self._version:
                loaded = await load_tools(
                    self.runtime.storage,
                    self.runtime.settings,
                    self.runtime.plugins,
                    self.agent_name,
                )
                if self._version is not None:
                    # The old build's mcp rows close their connections, as an evicted one's do.
                    from chatwright_mcp.connections import OPEN

                    OPEN.close_agent(self.agent_name)
                self._tools = unique_tools(loaded.tools, self.agent_name)
                self._version = version
            return self._tools

    async def list_tools(self) -> list[mcp_types.Tool]:
        import mcp_types

        tools = await self.current()
        return [
            mcp_types.Tool(
                name=t.name,
                description=t.description or t.name,
                input_schema=schema_of(t),
            )
            for t in tools.values()
        ]

    async def call(
        self, user_id: str, name: str, arguments: dict[str, Any] | None
    ) -> mcp_types.CallToolResult:
        import mcp_types

        from chatwright.tools import TurnContext
        from chatwright.writes import call_tool, row_of, waits

        tools = await self.current()
        tool = tools.get(name)
        if tool is None:
            names = ", ".join(sorted(tools)) or "none"
            return error_result(f"{name!r} is not a tool of agent {self.agent_name!r}: {names}")
        args = dict(arguments or {})
        size = len(json.dumps(args, ensure_ascii=False, default=str))
        if size > MAX_ARGUMENT_CHARS:
            return error_result(
                f"Invalid arguments: {size} characters, more than the {MAX_ARGUMENT_CHARS} a "
                "call may send"
            )
        row = row_of(tool)
        if row is not None and row.approval != "auto":
            choices: dict[int, str] = {}
            if row.approval == "user":
                choices = await self.runtime.storage.pending.choices(user_id, self.agent_name)
            if waits(tool, choices):
                return error_result(
                    f"{name!r} needs approval in chatwright (its approval mode is "
                    f"{row.approval!r}); it does not run over MCP. Ask for it in a chat "
                    "with the agent, where it can be approved, or change the approval mode"
                )
        context = TurnContext(
            user_id=user_id,
            agent_name=self.agent_name,
            chat_id=self.chat_id,
            turn_id=uuid.uuid4(),
        )
        call = {"name": name, "args": args, "id": f"mcp-{uuid.uuid4().hex}", "type": "tool_call"}
        message = await call_tool(
            self.runtime.plugins,
            self.runtime.storage,
            tools,
            call,  # type: ignore[arg-type]
            context,
        )
        return mcp_types.CallToolResult(
            content=[mcp_types.TextContent(type="text", text=message.text)],
            is_error=message.status == "error",
        )


def build_server(served: ServedTools, user_of: Callable[[Any], str]) -> Server[Any]:
    """A low-level MCP server over ``served``; ``user_of(ctx)`` gives the request's user."""
    import mcp_types
    from mcp.server.lowlevel import Server

    async def list_tools(ctx: Any, params: Any) -> mcp_types.ListToolsResult:
        return mcp_types.ListToolsResult(tools=await served.list_tools())

    async def call_tool(
        ctx: Any, params: mcp_types.CallToolRequestParams
    ) -> mcp_types.CallToolResult:
        return await served.call(user_of(ctx), params.name, params.arguments)

    from chatwright_mcp import __version__

    return Server(
        f"chatwright-{served.agent_name}",
        version=__version__,
        instructions=f"The tools of the chatwright agent {served.agent_name!r}.",
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )


async def serve_stdio(runtime: Runtime, agent_name: str, user_id: str) -> None:
    """Serve over standard input and output for ``user_id`` until the client leaves."""
    from mcp.server.stdio import stdio_server

    served = ServedTools(runtime, agent_name)
    await served.current()  # an unknown agent is an error before the client starts talking
    server = build_server(served, lambda ctx: user_id)
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


class JwtVerifier:
    """The MCP SDK's token verifier hook, verifying as the HTTP API does."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def verify_token(self, token: str) -> Any:
        from mcp.server.auth.provider import AccessToken

        from chatwright.errors import ChatwrightError
        from chatwright.plugins.server.auth import principal_from_token

        try:
            # In a thread: a JWKS may be fetched, as the HTTP API's verification does.
            principal = await asyncio.to_thread(principal_from_token, self.runtime.settings, token)
        except ChatwrightError:
            return None
        return AccessToken(
            token=token, client_id=principal.user_id, scopes=[], subject=principal.user_id
        )


def user_from_request(ctx: Any) -> str:
    """The subject of the verified token the request came with."""
    request = getattr(ctx, "request", None)
    user = request.scope.get("user") if request is not None else None
    token = getattr(user, "access_token", None)
    subject = getattr(token, "subject", None)
    if not isinstance(subject, str) or not subject:
        # The bearer middleware lets no request through without one; refuse all the same.
        raise PermissionError("the request carries no verified user")
    return subject


def http_app(served: ServedTools, host: str, port: int) -> Starlette:
    """The streamable-HTTP app at ``/mcp``: JWT bearer tokens, or the local user."""
    from mcp.server.auth.settings import AuthSettings

    from chatwright.plugins.server.auth import LOCAL_USER
    from chatwright.plugins.server.settings import ServerSettings

    runtime = served.runtime
    if runtime.settings.section(ServerSettings).auth == "local":
        from mcp.server.transport_security import TransportSecuritySettings

        server = build_server(served, lambda ctx: LOCAL_USER)
        # Every request acts as the local user: only requests to a loopback name, from
        # no page of another site, are taken (a page that rebinds its name to this
        # address must not reach it). On every loopback address, not only 127.0.0.1.
        names = dict.fromkeys([*LOOPBACK_NAMES, url_host(host)])
        security = TransportSecuritySettings(
            enable_dns_rebinding_protection=True,
            allowed_hosts=[f"{name}:*" for name in names],
            allowed_origins=[f"http://{name}:*" for name in names],
        )
        return server.streamable_http_app(host=host, transport_security=security)
    server = build_server(served, user_from_request)
    base = f"http://{url_host(host)}:{port}"
    return server.streamable_http_app(
        host=host,
        auth=AuthSettings(
            issuer_url=base,  # type: ignore[arg-type]
            resource_server_url=None,
        ),
        token_verifier=JwtVerifier(runtime),
    )


async def serve_http(runtime: Runtime, agent_name: str, host: str, port: int) -> None:
    """Serve over streamable HTTP at ``http://host:port/mcp`` until stopped."""
    import uvicorn

    served = ServedTools(runtime, agent_name)
    await served.current()  # an unknown agent is an error before the server starts
    app = http_app(served, host, port)
    # Bound here, so that an address in use or not of this machine is one line of error.
    sock = bind(host, port)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
    try:
        await uvicorn.Server(config).serve(sockets=[sock])
    finally:
        sock.close()
