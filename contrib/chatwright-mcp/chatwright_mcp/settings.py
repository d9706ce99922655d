"""The ``[mcp]`` settings: which MCP servers ``mcp`` tool rows may use, and how to reach them.

A tool row is data: whoever can write ``agent_tools`` would otherwise choose
a program for the server to run, or where to send credentials. So the
settings, not the rows, hold every command, URL and credential::

    [mcp.servers.files]
    command = "npx"
    args = ["-y", "@modelcontextprotocol/server-filesystem", "/srv/shared"]

    [mcp.servers.tickets]
    url = "https://mcp.tickets.example.com/mcp"
    headers = { Authorization = "Bearer ${TICKETS_TOKEN}" }
    tools = ["search_tickets", "get_ticket"]

    [mcp]
    allowed_hosts = ["mcp.public.example.org"]

A row names a configured server (``{"server": "files"}``), or gives the URL
of a public server on one of ``allowed_hosts`` (``{"url": "https://…"}``),
which is reached without credentials. Values of ``env`` and ``headers`` may
reference environment variables as ``${NAME}``; they are expanded when the
connection opens, so a secret is in no row, no schema, no problem report, and
never in what the model reads. chatwright's own variables (``CHATWRIGHT_*``:
the JWT secret, database URLs) are never expanded.

The values of ``env`` and ``headers`` are secrets all the same (a token
written out, not referenced): ``chatwright config show`` prints them as
``**********``, and a settings error about one names it without its value.
``args`` are shown: a secret belongs in ``env``.

From the environment, a table is one JSON value:
``CHATWRIGHT_MCP__SERVERS='{"files": {"command": "npx", "args": [...]}}'``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, model_validator

from chatwright.errors import SettingsError

SECTION = "mcp"
OWN_PREFIX = "CHATWRIGHT_"
ENV_REFERENCE = re.compile(r"\$\{([^}]*)\}")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
HOST_ENTRY = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)(:[0-9]{1,5})?$")
SERVER_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


def reference_problem(value: str) -> str | None:
    """What is wrong with the ``${NAME}`` references of ``value``, if anything."""
    for name in ENV_REFERENCE.findall(value):
        if not ENV_NAME.match(name):
            return f"${{{name}}} is not a variable reference; write ${{NAME}}"
        if name.upper().startswith(OWN_PREFIX):
            return (
                f"${{{name}}} is one of chatwright's own variables; MCP servers never get "
                f"{OWN_PREFIX}* variables"
            )
    return None


def _references(value: str) -> str:
    problem = reference_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


def _secret_references(value: SecretStr) -> SecretStr:
    _references(value.get_secret_value())
    return value


def _host_entry(value: str) -> str:
    if not HOST_ENTRY.match(value):
        raise ValueError(
            f"{value!r} is not a host; write a host name or address, optionally with a port: "
            "mcp.example.com, 127.0.0.1:8080"
        )
    return value.lower()


Expandable = Annotated[str, AfterValidator(_references)]
SecretExpandable = Annotated[SecretStr, AfterValidator(_secret_references)]
HostEntry = Annotated[str, AfterValidator(_host_entry)]


class ServerSpec(BaseModel):
    """One allowed MCP server: a command to run (stdio) or a URL (streamable HTTP)."""

    model_config = ConfigDict(extra="forbid")

    command: str | None = Field(None, min_length=1)
    """The program to start; it speaks MCP on its standard input and output."""
    args: list[Expandable] = Field(default_factory=list)
    env: dict[str, SecretExpandable] = Field(default_factory=dict)
    """Variables for the program (with chatwright's own ``CHATWRIGHT_*`` left out)."""
    cwd: str | None = None
    url: str | None = Field(None, pattern=r"^https?://")
    headers: dict[str, SecretExpandable] = Field(default_factory=dict)
    tools: list[str] | None = None
    """The only tools rows may expose from this server; all when not set."""
    timeout: float = Field(30, gt=0, le=600)
    """Seconds to start or reach the server, and for each tool call."""

    @model_validator(mode="after")
    def _one_transport(self) -> ServerSpec:
        if (self.command is None) == (self.url is None):
            raise ValueError("give either command (a stdio server) or url (streamable HTTP)")
        if self.command is None and (self.args or self.env or self.cwd):
            raise ValueError("args, env and cwd are for a command; this server has a url")
        if self.url is None and self.headers:
            raise ValueError("headers are for a url; this server has a command")
        return self


class McpSettings(BaseModel):
    """The ``[mcp]`` section."""

    model_config = ConfigDict(extra="forbid")

    servers: dict[Annotated[str, Field(pattern=SERVER_NAME)], ServerSpec] = Field(
        default_factory=dict,
        description="MCP servers that mcp tool rows may name, by name: a command or a URL.",
    )
    allowed_hosts: list[HostEntry] = Field(
        default_factory=list,
        description="Hosts of public MCP servers that mcp tool rows may give by URL.",
    )

    @model_validator(mode="before")
    @classmethod
    def _values_not_shown(cls, data: Any) -> Any:
        """Check the servers' ``env``, ``headers`` and ``args`` before pydantic does.

        pydantic's errors carry the value they are about, and chatwright's settings
        errors print it: a header written out with its token would be shown. A
        problem here names the setting and not its value.
        """
        servers = data.get("servers") if isinstance(data, Mapping) else None
        if not isinstance(servers, Mapping):
            return data
        for server, spec in servers.items():
            if not isinstance(spec, Mapping):
                # A server written as one string may be a command line holding a token.
                raise SettingsError(
                    f"setting '{SECTION}.servers.{server}' is invalid: it must be a table "
                    f"with command or url, not {type(spec).__name__} (its value is not "
                    "shown: it may hold a secret)"
                )
            found: list[tuple[str, Any]] = []
            for key in ("env", "headers"):
                values = spec.get(key)
                if values is not None and not isinstance(values, Mapping):
                    raise SettingsError(
                        f"setting '{SECTION}.servers.{server}.{key}' is invalid: it must be a "
                        f"table of names and values, not {type(values).__name__} (its value "
                        "is not shown: it may hold a secret)"
                    )
                if isinstance(values, Mapping):
                    found.extend((f"{key}.{name}", value) for name, value in values.items())
            args = spec.get("args")
            if isinstance(args, list):
                found.extend((f"args.{i}", value) for i, value in enumerate(args))
            for where, value in found:
                problem = (
                    reference_problem(value)
                    if isinstance(value, str)
                    else f"must be a string, not {type(value).__name__}"
                )
                if problem is not None:
                    raise SettingsError(
                        f"setting '{SECTION}.servers.{server}.{where}' is invalid: {problem} "
                        "(its value is not shown: it may hold a secret)"
                    )
        return data


class MissingVariable(Exception):
    """A ``${NAME}`` whose variable is not set where chatwright runs."""


def expand(value: str) -> tuple[str, list[str]]:
    """``value`` with its ``${NAME}`` references filled in, and the values filled in."""
    expanded: list[str] = []

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name.upper().startswith(OWN_PREFIX):  # refused by the settings; checked again
            raise MissingVariable(f"{name} is one of chatwright's own variables")
        found = os.environ.get(name)
        if found is None:
            raise MissingVariable(f"the environment variable {name} is not set")
        expanded.append(found)
        return found

    return ENV_REFERENCE.sub(fill, value), expanded
