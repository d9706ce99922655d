"""The ``http`` tool's config: the pydantic model, and the rules checked at build.

A config names one endpoint: a method, a URL template whose ``{placeholders}``
fill path segments from model arguments, the hosts the tool may talk to, the
model-facing ``args``, and where each argument goes (path, ``query``,
``body``). Constant ``headers`` may reference environment variables as
``${NAME}``; those are resolved when the tool runs, never at load time, so a
secret is never part of the row, the schema or a problem report. Which
variables a row may reference, and for which hosts, is up to the plugin's
settings (:mod:`.settings`), not the row.

The shape of each key is checked by :class:`HttpConfig`. The rules that tie
keys together (every placeholder and every query or body entry names an
argument, every argument is used, the URL's host is allowed, a GET has no body)
are checked by :func:`problems`, which reports each one at its JSON path, the
way ``chatwright tools check`` shows it.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal
from urllib.parse import SplitResult, urlsplit

import httpx
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from chatwright.tools import ConfigProblem

IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_]{0,62}$"
Identifier = Annotated[str, StringConstraints(pattern=IDENTIFIER)]
HOST_ENTRY = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)(:[0-9]{1,5})?$")
HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,100}$")  # an RFC 9110 token


def ascii_host(host: str) -> str:
    """``host`` in lowercase ASCII: an internationalised name in its IDNA (``xn--``) form.

    That is the form the HTTP client sends and connects to; a name that has no such
    form is returned lowercased, and matches no entry of ``allowed_hosts``.
    """
    host = host.lower()
    if host.isascii():
        return host
    try:
        return httpx.URL(scheme="https", host=host).raw_host.decode("ascii").lower()
    except (httpx.InvalidURL, UnicodeError, ValueError):
        return host


def _host_entry(value: str) -> str:
    if not value.isascii():
        # An internationalised name is kept in the form the HTTP client uses.
        name, colon, port = value.rpartition(":") if ":" in value else (value, "", "")
        value = ascii_host(name) + colon + port
    if not HOST_ENTRY.match(value):
        raise ValueError(
            f"{value!r} is not a host; write a host name or IP address, optionally with a "
            "port: api.example.com, 127.0.0.1:8080, [::1]"
        )
    return value


def _header_name(value: str) -> str:
    if not HEADER_NAME.match(value):
        raise ValueError(f"{value!r} is not a header name (letters, digits and -)")
    return value


HostEntry = Annotated[str, AfterValidator(_host_entry)]
HeaderName = Annotated[str, AfterValidator(_header_name)]
QueryName = Annotated[str, StringConstraints(min_length=1, max_length=200)]

ArgType = Literal["string", "integer", "number", "boolean"]
Method = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]

SCHEMES = ("http", "https")
DEFAULT_PORTS = {"http": 80, "https": 443}
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
# Headers the HTTP client owns: a configured Host would defeat allowed_hosts on a
# shared address, and the framing headers would corrupt the request.
RESERVED_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})
ENV_REFERENCE = re.compile(r"\$\{([^}]*)\}")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
NOT_ONE_LINE = "must be one line of ASCII text"
SURROUNDING_SPACE = "must not begin or end with a space or a tab"
# Stands in for a placeholder while the template is split into URL parts.
_MARK = "\ue000"


class ArgSpec(BaseModel):
    """One model-facing argument."""

    model_config = ConfigDict(extra="forbid")

    type: ArgType = "string"
    required: bool = False
    description: str = ""
    enum: list[str | int | float] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _enum_fits_type(self) -> ArgSpec:
        if self.enum is None:
            return self
        if self.type == "boolean":
            raise ValueError("a boolean argument takes no enum")
        kinds: dict[str, type | tuple[type, ...]] = {
            "string": str,
            "integer": int,
            "number": (int, float),
        }
        wrong = [v for v in self.enum if isinstance(v, bool) or not isinstance(v, kinds[self.type])]
        if wrong:
            raise ValueError(f"enum values {wrong!r} are not of type {self.type!r}")
        return self


class HttpConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: Method = "GET"
    url: str = Field(min_length=1, max_length=2048)
    """A template: ``{name}`` placeholders in the path are filled from ``args``."""
    allowed_hosts: list[HostEntry] = Field(min_length=1)
    args: dict[Identifier, ArgSpec] = Field(default_factory=dict)
    query: dict[QueryName, Identifier] = Field(default_factory=dict)
    """Query parameter -> the argument that gives its value."""
    body: dict[QueryName, Identifier] = Field(default_factory=dict)
    """JSON body field -> the argument that gives its value (POST, PUT, PATCH)."""
    headers: dict[HeaderName, str] = Field(default_factory=dict)
    timeout: float = Field(10, gt=0, le=60)
    """Seconds for the whole exchange, redirects and reading included."""
    max_response_bytes: int = Field(20_000, ge=1, le=10_000_000)

    @field_validator("method", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    def allows(self, host: str, port: int | None, scheme: str) -> bool:
        """Whether ``allowed_hosts`` has ``host`` (any port) or ``host:port``.

        Internationalised names are compared in their IDNA (``xn--``) form.
        """
        host = ascii_host(host.strip("[]"))
        port = port if port is not None else DEFAULT_PORTS.get(scheme)
        for entry in self.allowed_hosts:
            entry_host, entry_port = split_host_entry(entry)
            if entry_host == host and entry_port in (None, port):
                return True
        return False


def split_host_entry(entry: str) -> tuple[str, int | None]:
    """``"api.example.com:8443"`` -> ``("api.example.com", 8443)``; IPv6 in brackets."""
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        port = rest.removeprefix(":")
    elif ":" in entry:
        host, _, port = entry.rpartition(":")
    else:
        host, port = entry, ""
    return host.lower(), int(port) if port else None


@dataclass(frozen=True)
class UrlTemplate:
    """A parsed ``url``: its placeholders, and its parts with placeholders marked."""

    placeholders: list[str]
    parts: SplitResult


def parse_template(url: str) -> UrlTemplate:
    """The template's placeholders and URL parts; ValueError with the reason if malformed."""
    names: list[str] = []
    sample: list[str] = []
    try:
        fields = list(string.Formatter().parse(url))
    except ValueError as exc:
        raise ValueError(
            f"not a valid template ({exc}); write placeholders as {{name}} and literal "
            "braces as {{ and }}"
        ) from None
    for literal, name, spec, conversion in fields:
        sample.append(literal)
        if name is None:
            continue
        if not re.match(IDENTIFIER, name):
            raise ValueError(f"placeholder {{{name}}} is not an argument name; write {{name}}")
        if spec or conversion:
            raise ValueError(f"placeholder {{{name}}} has a format; write plain {{{name}}}")
        names.append(name)
        sample.append(f"{_MARK}{len(names)}{_MARK}")
    try:
        parts = urlsplit("".join(sample))
    except ValueError as exc:
        raise ValueError(f"not a valid URL ({exc})") from None
    return UrlTemplate(names, parts)


def problems(config: HttpConfig) -> list[ConfigProblem]:
    """Every rule the config breaks, each at its JSON path; empty when it can be built."""
    found: list[ConfigProblem] = []
    try:
        template: UrlTemplate | None = parse_template(config.url)
    except ValueError as exc:
        found.append(ConfigProblem("config.url", str(exc)))
        template = None
    if template is not None:
        found.extend(_url_problems(config, template.parts))
    found.extend(_argument_problems(config, template.placeholders if template else []))
    if config.body and config.method not in BODY_METHODS:
        found.append(
            ConfigProblem("config.body", f"a {config.method} request takes no body; use query")
        )
    for name, value in config.headers.items():
        path = f"config.headers.{name}"
        if name.lower() in RESERVED_HEADERS:
            found.append(ConfigProblem(path, "is set by the HTTP client and cannot be configured"))
        reason = header_value_problem(value)
        if reason:
            found.append(ConfigProblem(path, reason))
        for var in ENV_REFERENCE.findall(value):
            if not ENV_NAME.match(var):
                found.append(
                    ConfigProblem(
                        path,
                        f"${{{var}}} is not an environment variable reference; "
                        "write ${NAME} with letters, digits and _",
                    )
                )
    return found


def header_value_problem(value: str) -> str | None:
    """Why ``value`` cannot be an HTTP/1.1 header value, or None when it can.

    It must be one line of printable ASCII (tabs allowed inside), and must not begin
    or end with a space or a tab: the HTTP client refuses such a value at every call.
    """
    if not (value.isascii() and all(c == "\t" or " " <= c < "\x7f" for c in value)):
        return NOT_ONE_LINE
    if value != value.strip(" \t"):
        return SURROUNDING_SPACE
    return None


def _url_problems(config: HttpConfig, parts: SplitResult) -> list[ConfigProblem]:
    found: list[ConfigProblem] = []

    def problem(reason: str) -> list[ConfigProblem]:
        found.append(ConfigProblem("config.url", reason))
        return found

    if not parts.scheme or not parts.netloc:
        return problem("must be an absolute http or https URL, like https://api.example.com/items")
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        problem(f"scheme {scheme!r} is not allowed; use http or https")
    if _MARK in parts.query or _MARK in parts.fragment:
        problem("placeholders are allowed in the path only; use query for parameters")
    if _MARK in parts.netloc:
        return problem("placeholders are allowed in the path only; the host is fixed")
    if parts.username is not None or parts.password is not None:
        problem("must not hold a user name or password; put credentials in headers")
    try:
        port = parts.port
    except ValueError as exc:
        return problem(f"has an invalid port ({exc})")
    host = parts.hostname
    if not host:
        return problem("has no host")
    if not config.allows(host, port, scheme):
        hosts = ", ".join(config.allowed_hosts)
        shown = f"{host}:{port}" if port is not None else host
        problem(f"host {shown!r} is not in allowed_hosts ({hosts})")
    return found


def _argument_problems(config: HttpConfig, in_path: Sequence[str]) -> list[ConfigProblem]:
    found: list[ConfigProblem] = []
    for name in dict.fromkeys(in_path):
        if name not in config.args:
            found.append(ConfigProblem("config.url", f"placeholder {{{name}}} is not in args"))
        elif not config.args[name].required:
            found.append(
                ConfigProblem(
                    f"config.args.{name}.required",
                    "the argument fills a path placeholder, so it must be required (true)",
                )
            )
    for group, mapping in (("query", config.query), ("body", config.body)):
        for key, arg in mapping.items():
            if arg not in config.args:
                found.append(ConfigProblem(f"config.{group}.{key}", f"{arg!r} is not in args"))
    used = set(in_path) | set(config.query.values()) | set(config.body.values())
    for name in config.args:
        if name not in used:
            found.append(
                ConfigProblem(f"config.args.{name}", "is not used by the url, query or body")
            )
    return found
