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

A call sends the model's arguments, checked against the tool's schema (within
bounds of time, off the event loop: :mod:`.schemas`) and capped in size;
nothing of chatwright's user is added to them, so a model cannot choose whose
data a server sees (a remote server gets no user identity at all). Whatever
goes wrong with the server is a :class:`ToolException` naming it: the model
reads it and the turn goes on, and a connection that failed or stopped
answering is closed, so the next call opens a new one. Secrets the settings
expanded are redacted from everything the model reads and the audit log
records.

Longer than 450 lines because choosing a row's tools (its filters, the cap,
names the model accepts, schemas a model can be given) and calling them are
one tool type, read together.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import json
import logging
import re
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import urlsplit

from langchain_core.tools import BaseTool, StructuredTool, ToolException
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import BaseModel, ConfigDict, Field, model_validator

from chatwright.approvals import record_cancelled_write, record_write
from chatwright.errors import one_line
from chatwright.stores import ToolRow
from chatwright.tools import ConfigProblem, ToolConfigError, ToolContext
from chatwright_mcp.connections import (
    CLOSED_BY_SDK,
    Endpoint,
    Link,
    describe_failure,
    list_tools,
)
from chatwright_mcp.schemas import UncheckedArguments, check_arguments
from chatwright_mcp.settings import SECTION, McpSettings, ServerSpec

if TYPE_CHECKING:
    import mcp_types

log = logging.getLogger(__name__)

MAX_ARGUMENT_CHARS = 100_000
MAX_TOOLS = 128
"""The most tools a row takes from a server without naming them (with ``tools``): the
most a model API (OpenAI's) takes in one request. Above it, the first in the server's
order are used."""
MAX_PROBLEMS = 10
"""The most tools a row's problem report names, when none of its tools could be built."""
MAX_NAME = 64
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
        host = host_key(parts.hostname)
        shown = f"{host}:{port}" if port is not None else host
        keys = {entry_key(entry) for entry in settings.allowed_hosts}
        if host not in keys and shown not in keys:
            allowed = ", ".join(settings.allowed_hosts) or "none"
            problem = (
                f"host {shown!r} is not in {SECTION}.allowed_hosts ({allowed}); add it there "
                "to let rows use public MCP servers on it"
            )
    if problem is not None:
        raise ToolConfigError([ConfigProblem("config.url", problem)])
    return Endpoint(f"MCP server at {config.url}", ServerSpec.model_validate({"url": config.url}))


def host_key(host: str) -> str:
    """A host as ``allowed_hosts`` writes it, to compare: an IPv6 address in brackets and
    in its shortest form (a URL's host name has no brackets), a name in lower case."""
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        address = ipaddress.ip_address(bare)
    except ValueError:
        return host.lower()
    return f"[{address.compressed}]" if address.version == 6 else address.compressed


def entry_key(entry: str) -> str:
    """An ``allowed_hosts`` entry (``host``, ``host:port``, ``[v6]``, ``[v6]:port``), to
    compare."""
    host, colon, port = entry.rpartition(":")
    if not colon or (entry.startswith("[") and not host.endswith("]")):
        host, port = entry, ""  # no port: a name, or an IPv6 address in brackets
    return host_key(host) + (f":{port}" if port else "")


def model_name(prefix: str, remote: str) -> str:
    """The tool's name for the model: the prefix and the server's name, made safe."""
    return (prefix + UNSAFE_NAME.sub("_", remote))[:MAX_NAME] or "tool"


def model_names(
    prefix: str, remotes: Sequence[str], redact: Callable[[str], str] | None = None
) -> dict[str, str]:
    """Each of a row's tools' names for the model, by its name on the server.

    A name that had to change for the model (characters replaced by ``_``, cut
    at 64) can meet another tool's (``a.b`` and ``a_b`` are both ``a_b``). Then
    each tool of those whose name changed ends in ``_`` and 8 hex digits of a
    hash of its name on the server instead, cut to fit: the same at every build
    whatever order the server lists its tools in, while a name the server gave
    as it is stays that name. ``redact`` takes the secrets out of a server's
    name first (they are neither in the name nor in its hash).
    """
    shown = {remote: redact(remote) if redact is not None else remote for remote in remotes}
    made = {remote: model_name(prefix, shown[remote]) for remote in remotes}
    counts = Counter(made.values())
    names: dict[str, str] = {}
    for remote, name in made.items():
        if counts[name] > 1 and name != prefix + remote:
            digest = hashlib.sha256(shown[remote].encode("utf-8", "surrogatepass")).hexdigest()
            digest = digest[:8]
            name = f"{name[: MAX_NAME - len(digest) - 1]}_{digest}"
        names[remote] = name
    return names


# The parts of a JSON schema that are text for people (and values shown as examples):
# the secrets are redacted there. The rest (property names, types, required, enum,
# const, patterns) is what the arguments are checked against and built from, and is
# left as the server gave it: a secret as short as "in" would otherwise turn "string"
# into another type and a property into another name.
_TEXT_KEYWORDS = frozenset({"description", "title", "$comment"})
_VALUE_KEYWORDS = frozenset({"default", "examples", "example"})
# Keywords whose value maps names (of properties, of definitions) to schemas.
_NAMED_SCHEMAS = frozenset(
    {"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"}
)


def shown_schema(endpoint: Endpoint, remote: mcp_types.Tool) -> dict[str, Any] | None:
    """The tool's input schema for the model and the checks, with the secrets redacted from
    its text and example values (a server may show the key it was given: a default, an
    example); None when it nests too deeply to redact."""

    def clean(node: Any) -> Any:
        if isinstance(node, dict):
            out: dict[str, Any] = {}
            for key, value in node.items():
                if key in _NAMED_SCHEMAS and isinstance(value, dict):
                    out[key] = {name: clean(sub) for name, sub in value.items()}
                elif key in _TEXT_KEYWORDS and isinstance(value, str):
                    out[key] = endpoint.redact(value)
                elif key in _VALUE_KEYWORDS:
                    out[key] = endpoint.redact_value(value)
                else:
                    out[key] = clean(value)
            return out
        if isinstance(node, list):
            return [clean(item) for item in node]
        return node

    try:
        schema: dict[str, Any] = clean(dict(remote.input_schema or {}))
    except RecursionError:
        return None
    schema.setdefault("type", "object")
    schema.setdefault("properties", {})
    return schema


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
            listing = await list_tools(endpoint)
        except Exception as exc:
            reason = endpoint.redact(describe_failure(exc))
            raise ToolConfigError(
                [ConfigProblem(path, f"{endpoint.label} could not be started or reached: {reason}")]
            ) from None
        offered = {t.name: t for t in listing.tools}
        # The tools whose entries were not valid MCP: why, by their names on the server.
        refused = {
            name: f"its entry in the server's tool list is not valid MCP ({reason})"
            for name, reason in listing.left_out
        }
        if endpoint.spec.tools is not None:
            offered = {n: t for n, t in offered.items() if n in endpoint.spec.tools}
            refused = {n: why for n, why in refused.items() if n in endpoint.spec.tools}
        chosen, unusable = self._choose(config, endpoint, offered, refused)
        chosen = self._capped(config, endpoint, row, chosen)
        link = Link(endpoint, context.agent_name, context.storage)
        names = model_names(config.name_prefix, [t.name for t in chosen], endpoint.redact)
        built: dict[str, BaseTool] = {}
        for remote in chosen:
            name = names[remote.name]
            if name in built:
                # Only a server's tool named like another's changed name can meet it here.
                log.warning(
                    "chatwright: %s, tool %r of row %r left out: its name for the model, %r, "
                    "is another of its tools'; expose one of them with the row's tools",
                    endpoint.label,
                    endpoint.redact(remote.name),
                    row.name,
                    name,
                )
                continue
            tool, why = self._tool(row, context, link, remote, name)
            if tool is None:
                unusable[remote.name] = why
                continue
            built[name] = tool
        if not built and unusable:
            raise ToolConfigError(self._unusable_problems(config, endpoint, unusable))
        for remote_name, why in unusable.items():
            log.warning(
                "chatwright: %s, tool %r of row %r left out: %s; the row's other tools are "
                "used. The server's schema for it needs fixing",
                endpoint.label,
                endpoint.redact(remote_name),
                row.name,
                endpoint.redact(why),
            )
        return list(built.values())

    def _tool(
        self, row: ToolRow, context: ToolContext, link: Link, remote: mcp_types.Tool, name: str
    ) -> tuple[BaseTool | None, str]:
        """The server's tool for the model, or None and why it cannot be one."""
        schema = shown_schema(link.endpoint, remote)
        if schema is None:
            return None, "its input schema nests too deeply to be shown to a model"
        tool = McpTool(row, context, link, remote, name, schema).as_tool()
        # A model is given each tool as a function: what LangChain's chat models send
        # (their references filled in) must be made of the schema at build, not at every
        # turn, where one tool that cannot be sent would fail the whole agent.
        try:
            convert_to_openai_tool(tool)
        except RecursionError:
            return (
                None,
                "its input schema nests, or refers to itself, too deeply to be given to a model",
            )
        except Exception as exc:
            reason = one_line(exc)[:200]
            return None, f"its input schema cannot be given to a model ({reason})"
        return tool, ""

    def _unusable_problems(
        self, config: McpConfig, endpoint: Endpoint, unusable: dict[str, str]
    ) -> list[ConfigProblem]:
        """Why a row whose every chosen tool was left out gives no tool."""
        problems = []
        for remote_name, why in unusable.items():
            if config.tools is not None:
                where = f"config.tools[{config.tools.index(remote_name)}]"
            else:
                where = "config.tool_prefix" if config.tool_prefix else "config"
            problems.append(
                ConfigProblem(
                    where,
                    endpoint.redact(
                        f"{endpoint.label}, tool {remote_name!r} cannot be exposed: {why}; the "
                        "server's schema for it needs fixing, or the row should expose other "
                        "tools"
                    ),
                )
            )
        return problems[:MAX_PROBLEMS]

    def _choose(
        self,
        config: McpConfig,
        endpoint: Endpoint,
        offered: dict[str, mcp_types.Tool],
        refused: dict[str, str],
    ) -> tuple[list[mcp_types.Tool], dict[str, str]]:
        """The tools the row exposes, in order, and those of them left out already: why."""
        # A server's tool names are its own text: the secrets are kept out of them too.
        names = endpoint.redact(", ".join(sorted(offered)) or "none")
        if config.tools is not None:
            named = list(dict.fromkeys(config.tools))
            missing = [n for n in named if n not in offered and n not in refused]
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
            return [offered[n] for n in named if n in offered], {
                n: refused[n] for n in named if n in refused
            }
        prefix = config.tool_prefix or ""
        chosen = [t for n, t in offered.items() if n.startswith(prefix)]
        unusable = {n: why for n, why in refused.items() if n.startswith(prefix)}
        if not chosen and not unusable:
            where = "config.tool_prefix" if config.tool_prefix else "config"
            raise ToolConfigError(
                [
                    ConfigProblem(
                        where, f"{endpoint.label} offers no tool to expose; its tools: {names}"
                    )
                ]
            )
        return chosen, unusable

    def _capped(
        self, config: McpConfig, endpoint: Endpoint, row: ToolRow, chosen: list[mcp_types.Tool]
    ) -> list[mcp_types.Tool]:
        """The first :data:`MAX_TOOLS` of the chosen tools, unless the row names them."""
        if config.tools is not None or len(chosen) <= MAX_TOOLS:
            return chosen
        log.warning(
            "chatwright: %s lists %d tools that row %r may expose, more than the %d a row "
            "takes without naming them; the first %d in the server's order are used. Choose "
            "them with the row's tools (their names) or tool_prefix",
            endpoint.label,
            len(chosen),
            row.name,
            MAX_TOOLS,
            MAX_TOOLS,
        )
        return chosen[:MAX_TOOLS]


class ServerTool(StructuredTool):
    """A server's tool for the model: its function gets the model's arguments as one mapping.

    StructuredTool passes a call's arguments to its function as keywords, next
    to its own (``self``, ``config``, ``run_manager``, ``callbacks``): a server's
    tool with an argument of one of those names would fail every call, or lose
    that argument. Given as one mapping, every name reaches the server.
    """

    def _to_args_and_kwargs(
        self, tool_input: str | dict[str, Any], tool_call_id: str | None
    ) -> tuple[tuple[str, ...], dict[str, Any]]:
        _, arguments = super()._to_args_and_kwargs(tool_input, tool_call_id)
        return (), {"arguments": arguments}


class McpTool:
    """One tool of a server, as one built tool of a row."""

    def __init__(
        self,
        row: ToolRow,
        context: ToolContext,
        link: Link,
        remote: mcp_types.Tool,
        name: str,
        schema: dict[str, Any],
    ) -> None:
        self.row = row
        self.context = context
        self.link = link
        self.remote = remote
        self.name = name
        self.schema = schema
        self.shown_name = link.endpoint.redact(remote.name)
        """The server's name for the tool, as errors show it."""
        hints = remote.annotations
        self.writes = not (hints is not None and hints.read_only_hint is True)

    def as_tool(self) -> BaseTool:
        description = self.remote.description or self.row.description or self.remote.name
        return ServerTool.from_function(
            coroutine=self.run,
            name=self.name,
            description=self.link.endpoint.redact(description)[:4000],
            args_schema=self.schema,
            handle_tool_error=True,
            # A tool the server does not mark read-only may change something:
            # approval modes and the audit log treat it as one that writes.
            # What core records of a call it did not run (a veto, a denial, an
            # expiry) hides the server's secrets as this tool's own entries do.
            metadata={
                "chatwright_writes": self.writes,
                "chatwright_mcp": self.remote.name,
                "chatwright_redact": self.link.endpoint.redact_value,
            },
        )

    async def _check(self, arguments: dict[str, Any]) -> None:
        try:
            text = json.dumps(arguments, ensure_ascii=False, default=str)
        except (ValueError, RecursionError):
            raise ToolException(
                "Invalid arguments: they cannot be written as JSON (nested too deeply, or "
                "holding a value JSON has no form for)"
            ) from None
        size = len(text)
        if size > MAX_ARGUMENT_CHARS:
            raise ToolException(
                f"Invalid arguments: {size} characters of arguments, more than the "
                f"{MAX_ARGUMENT_CHARS} an MCP tool call may send"
            )
        try:
            # The connection sends UTF-8: text it cannot encode would fail the connection
            # (every call on it, other users' too), not only this call.
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise ToolException(
                "Invalid arguments: they hold a lone surrogate (half of a UTF-16 pair, not a "
                "character), which cannot be sent as UTF-8"
            ) from None
        try:
            problems = await check_arguments(self.schema, arguments)
        except UncheckedArguments as exc:
            raise ToolException(
                f"{self.link.endpoint.label}, tool {self.shown_name!r}: the arguments could "
                f"not be checked against its input schema ({exc}); the call was not sent. "
                "The server's schema needs fixing, or the row should leave this tool out"
            ) from None
        if problems:
            raise ToolException("Invalid arguments: " + "; ".join(problems))

    async def run(self, arguments: dict[str, Any]) -> str:
        if self.context.user_id is None:
            raise ToolException("this tool was built for checking only and cannot run")
        await self._check(arguments)
        endpoint = self.link.endpoint
        label = endpoint.label
        from mcp import MCPError
        from mcp_types import CONNECTION_CLOSED

        try:
            result = await self.link.call_tool(self.remote.name, arguments)
        except asyncio.CancelledError:
            # The turn was stopped (its time limit) with the call under way: the server may
            # have acted, so a call that may write is recorded all the same.
            await self._record_cancelled(arguments)
            raise
        except TimeoutError:
            # A server that leaves one request unanswered may answer none again on this
            # connection: a new one (a new process, for stdio) is the way out.
            self.link.close()
            await self._fail(
                arguments,
                f"{label} failed: no answer within {endpoint.spec.timeout:g} s (its timeout "
                "setting); the next call reconnects",
            )
        except MCPError as exc:
            if exc.error.code == CONNECTION_CLOSED and exc.error.message == CLOSED_BY_SDK:
                self.link.close()
                await self._fail(
                    arguments, f"{label} closed the connection; the next call reconnects"
                )
            await self._fail(arguments, f"{label} refused the call: {describe_failure(exc)}")
        except Exception as exc:
            self.link.close()
            await self._fail(
                arguments, f"{label} failed: {describe_failure(exc)}; the next call reconnects"
            )
        text = endpoint.redact(result_text(result))
        limit = self.context.settings.tools.max_result_chars
        if len(text) > limit:
            text = text[:limit] + f"… [cut to {limit} characters]"
        if getattr(result, "is_error", False):
            await self._record(arguments, "error", text[:500])
            raise ToolException(f"{label}, tool {self.shown_name!r}: {text}")
        await self._record(arguments, "ok", None)
        return text

    async def _fail(self, arguments: dict[str, Any], reason: str) -> NoReturn:
        """Record the failed call and raise it for the model, the secrets redacted from both."""
        reason = self.link.endpoint.redact(reason)
        await self._record(arguments, "error", reason)
        raise ToolException(reason) from None

    async def _record_cancelled(self, arguments: dict[str, Any]) -> None:
        """Record a call cancelled while under way, whatever cancels the recording itself."""
        if not self.writes:
            return
        endpoint = self.link.endpoint
        await record_cancelled_write(
            self.context,
            self.row,
            operation="call",
            args=endpoint.redact_value(arguments),
            error=endpoint.redact(
                f"{endpoint.label}: cancelled on its way or after it was sent (the turn was "
                "stopped); the server may have acted"
            ),
        )

    async def _record(self, args: dict[str, Any], outcome: str, error: str | None) -> None:
        """A call of a tool that may write goes into the audit log, secrets redacted."""
        if self.writes:
            await record_write(
                self.context,
                self.row,
                operation="call",
                args=self.link.endpoint.redact_value(args),
                outcome=outcome,
                error=error,
            )
