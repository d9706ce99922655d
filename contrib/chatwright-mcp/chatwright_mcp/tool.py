"""The ``mcp`` tool type: one row brings an MCP server's tools into an agent.

A row's config names the server and which of its tools to expose::

    {"server": "files", "tools": ["read_file", "list_directory"]}
    {"url": "https://mcp.public.example.org/mcp", "tool_prefix": "search_",
     "name_prefix": "web_"}

Building the row (a chat's first turn, ``tools check``, ``tools add``)
connects once to list the server's tools, checks the ones named exist, and
returns one LangChain tool per exposed tool, with the server's input schema.
The connection the calls use is the row's :class:`~.connections.Link`, opened
by the first call and kept for every later turn of every user, until the
built agent is evicted.

A call sends the model's arguments, checked against the tool's schema and
capped in size; nothing of chatwright's user is added to them, so a model
cannot choose whose data a server sees (a remote server gets no user
identity at all). Whatever goes wrong with the server is a
:class:`ToolException` naming it: the model reads it and the turn goes on,
and a connection that failed is closed, so the next call opens a new one.
"""

from __future__ import annotations

import importlib
import json
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from langchain_core.tools import BaseTool, StructuredTool, ToolException
from pydantic import BaseModel, ConfigDict, Field, model_validator

from chatwright.approvals import record_write
from chatwright.stores import ToolRow
from chatwright.tools import ConfigProblem, ToolConfigError, ToolContext
from chatwright_mcp.connections import Endpoint, Link, connect, describe_failure
from chatwright_mcp.settings import SECTION, McpSettings, ServerSpec

if TYPE_CHECKING:
    import mcp_types

MAX_ARGUMENT_CHARS = 100_000
NAME_PREFIX = r"^[A-Za-z0-9_-]{0,32}$"
UNSAFE_NAME = re.compile(r"[^A-Za-z0-9_-]")


class McpConfig(BaseModel):
    """A row's config: the server, and which of its tools to expose."""

    model_config = ConfigDict(extra="forbid")

    server: str | None = Field(None, min_length=1, max_length=64)
    """A server of ``[mcp.servers]``, by name."""
    url: str | None = Field(None, min_length=1, max_length=2048)
    """A public server's URL, on a host of ``mcp.allowed_hosts`` (no credentials)."""
    tools: list[str] | None = Field(None, min_length=1)
    """The tools to expose, by their names on the server; all when not set."""
    tool_prefix: str | None = Field(None, min_length=1, max_length=64)
    """Expose the tools whose names start with this."""
    name_prefix: str = Field("", pattern=NAME_PREFIX)
    """Put before each tool's name for the model (two servers' ``search`` tools)."""

    @model_validator(mode="after")
    def _one_server(self) -> McpConfig:
        if (self.server is None) == (self.url is None):
            raise ValueError("give either server (a name in [mcp.servers]) or url")
        if self.tools is not None and self.tool_prefix is not None:
            raise ValueError("give tools or tool_prefix, not both")
        return self


def endpoint_of(config: McpConfig, settings: McpSettings) -> Endpoint:
    """The server the row names; ToolConfigError when the settings do not allow it."""
    if config.server is not None:
        spec = settings.servers.get(config.server)
        if spec is None:
            known = ", ".join(sorted(settings.servers)) or "none"
            raise ToolConfigError(
                [
                    ConfigProblem(
                        "config.server",
                        f"MCP server {config.server!r} is not in [{SECTION}.servers] (servers "
                        f"there: {known}); a row can only name a server the settings allow",
                    )
                ]
            )
        return Endpoint(f"MCP server {config.server!r}", spec)
    assert config.url is not None
    parts = urlsplit(config.url)
    problem = None
    try:
        port = parts.port
    except ValueError:
        port, problem = None, "has an invalid port"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        problem = "must be an http or https URL, like https://mcp.example.com/mcp"
    elif parts.username is not None or parts.password is not None:
        problem = "must not hold a user name or password; servers with credentials go in settings"
    elif problem is None:
        host = parts.hostname.lower()
        shown = f"{host}:{port}" if port is not None else host
        if host not in settings.allowed_hosts and shown not in settings.allowed_hosts:
            allowed = ", ".join(settings.allowed_hosts) or "none"
            problem = (
                f"host {shown!r} is not in {SECTION}.allowed_hosts ({allowed}); add it there "
                "to let rows use public MCP servers on it"
            )
    if problem is not None:
        raise ToolConfigError([ConfigProblem("config.url", problem)])
    return Endpoint(f"MCP server at {config.url}", ServerSpec.model_validate({"url": config.url}))


def model_name(prefix: str, remote: str) -> str:
    """The tool's name for the model: the prefix and the server's name, made safe."""
    return (prefix + UNSAFE_NAME.sub("_", remote))[:64] or "tool"


def result_text(result: mcp_types.CallToolResult) -> str:
    """What the model reads of a tool's result: its text, structured content as JSON."""
    parts: list[str] = []
    for block in result.content:
        kind = getattr(block, "type", "")
        if kind == "text":
            parts.append(str(getattr(block, "text", "")))
        elif kind == "resource_link":
            parts.append(f"[resource {getattr(block, 'uri', '')}]")
        else:
            parts.append(f"[{kind} content left out]")
    if not parts and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content, ensure_ascii=False))
    return "\n".join(parts)


class McpToolType:
    """The ``mcp`` tool type."""

    @property
    def config_model(self) -> type[BaseModel]:
        return McpConfig

    async def build(self, row: ToolRow, config: Any, context: ToolContext) -> list[BaseTool]:
        assert isinstance(config, McpConfig)
        settings = context.settings.section(McpSettings)
        endpoint = endpoint_of(config, settings)
        path = "config.server" if config.server is not None else "config.url"
        try:
            async with connect(endpoint) as session:
                listed = await session.list_tools()
        except Exception as exc:
            reason = endpoint.redact(describe_failure(exc))
            raise ToolConfigError(
                [ConfigProblem(path, f"{endpoint.label} could not be started or reached: {reason}")]
            ) from None
        offered = {t.name: t for t in listed.tools}
        if endpoint.spec.tools is not None:
            offered = {n: t for n, t in offered.items() if n in endpoint.spec.tools}
        chosen = self._choose(config, endpoint, offered)
        link = Link(endpoint, context.agent_name, context.storage)
        return [McpTool(row, context, link, t, config.name_prefix).as_tool() for t in chosen]

    def _choose(
        self, config: McpConfig, endpoint: Endpoint, offered: dict[str, mcp_types.Tool]
    ) -> list[mcp_types.Tool]:
        names = ", ".join(sorted(offered)) or "none"
        if config.tools is not None:
            missing = [n for n in config.tools if n not in offered]
            if missing:
                raise ToolConfigError(
                    [
                        ConfigProblem(
                            f"config.tools[{config.tools.index(n)}]",
                            f"{endpoint.label} has no tool {n!r} that rows may use; its tools: "
                            f"{names}",
                        )
                        for n in missing
                    ]
                )
            return [offered[n] for n in dict.fromkeys(config.tools)]
        chosen = [t for n, t in offered.items() if n.startswith(config.tool_prefix or "")]
        if not chosen:
            where = "config.tool_prefix" if config.tool_prefix else "config"
            raise ToolConfigError(
                [
                    ConfigProblem(
                        where, f"{endpoint.label} offers no tool to expose; its tools: {names}"
                    )
                ]
            )
        return chosen


class McpTool:
    """One tool of a server, as one built tool of a row."""

    def __init__(
        self,
        row: ToolRow,
        context: ToolContext,
        link: Link,
        remote: mcp_types.Tool,
        prefix: str,
    ) -> None:
        self.row = row
        self.context = context
        self.link = link
        self.remote = remote
        self.name = model_name(prefix, remote.name)
        schema = dict(remote.input_schema or {})
        schema.setdefault("type", "object")
        schema.setdefault("properties", {})
        self.schema = schema
        hints = remote.annotations
        self.writes = not (hints is not None and hints.read_only_hint is True)

    def as_tool(self) -> BaseTool:
        description = self.remote.description or self.row.description or self.remote.name
        return StructuredTool.from_function(
            coroutine=self.run,
            name=self.name,
            description=description[:4000],
            args_schema=self.schema,
            handle_tool_error=True,
            # A tool the server does not mark read-only may change something:
            # approval modes and the audit log treat it as one that writes.
            metadata={"chatwright_writes": self.writes, "chatwright_mcp": self.remote.name},
        )

    def _check(self, args: dict[str, Any]) -> None:
        size = len(json.dumps(args, ensure_ascii=False, default=str))
        if size > MAX_ARGUMENT_CHARS:
            raise ToolException(
                f"Invalid arguments: {size} characters of arguments, more than the "
                f"{MAX_ARGUMENT_CHARS} an MCP tool call may send"
            )
        # jsonschema has no type information of its own (an MCP SDK dependency).
        jsonschema: Any = importlib.import_module("jsonschema")
        try:
            validator = jsonschema.Draft202012Validator(self.schema)
            errors = sorted(validator.iter_errors(args), key=lambda e: [str(p) for p in e.path])
        except jsonschema.exceptions.SchemaError:
            return  # the server's schema is its own affair; the server checks its input
        if errors:
            shown = "; ".join(
                f"{'.'.join(str(p) for p in e.path) or 'arguments'}: {e.message[:200]}"
                for e in errors[:5]
            )
            raise ToolException(f"Invalid arguments: {shown}")

    async def run(self, **kwargs: Any) -> str:
        if self.context.user_id is None:
            raise ToolException("this tool was built for checking only and cannot run")
        self._check(kwargs)
        label = self.link.endpoint.label
        from mcp import MCPError
        from mcp_types import CONNECTION_CLOSED

        try:
            session = await self.link.session()
            result = await session.call_tool(self.remote.name, kwargs)
        except MCPError as exc:
            if exc.error.code == CONNECTION_CLOSED:
                self.link.close()
                reason = f"{label} closed the connection; the next call reconnects"
            else:
                reason = f"{label} refused the call: {describe_failure(exc)}"
            await self._record(kwargs, "error", reason)
            raise ToolException(self.link.endpoint.redact(reason)) from None
        except Exception as exc:
            self.link.close()
            reason = self.link.endpoint.redact(
                f"{label} failed: {describe_failure(exc)}; the next call reconnects"
            )
            await self._record(kwargs, "error", reason)
            raise ToolException(reason) from None
        text = self.link.endpoint.redact(result_text(result))
        limit = self.context.settings.tools.max_result_chars
        if len(text) > limit:
            text = text[:limit] + f"… [cut to {limit} characters]"
        if getattr(result, "is_error", False):
            await self._record(kwargs, "error", text[:500])
            raise ToolException(f"{label}, tool {self.remote.name!r}: {text}")
        await self._record(kwargs, "ok", None)
        return text

    async def _record(self, args: dict[str, Any], outcome: str, error: str | None) -> None:
        """A call of a tool that may write goes into the audit log."""
        if self.writes:
            await record_write(
                self.context, self.row, operation="call", args=args, outcome=outcome, error=error
            )
