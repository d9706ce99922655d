"""Building and running ``http`` tools.

:meth:`HttpToolType.build` checks a validated :class:`~.config.HttpConfig`
(:func:`~.config.problems`) and returns a LangChain ``StructuredTool`` whose
argument schema holds only the config's ``args`` (``extra="forbid"``: an
unknown or missing argument comes back to the model as a readable error and
the turn goes on).

A call fills the URL's path placeholders with the arguments, each quoted as
one path segment (``/`` and ``?`` included), so an argument can never change
the host, the query or another segment; the formatted URL's host is checked
against ``allowed_hosts`` again all the same. Redirects are followed by hand,
at most :data:`MAX_REDIRECTS` hops, and only to allowed hosts without leaving
https. The whole exchange has one deadline (``timeout``), the response is read
as a stream and cut at ``max_response_bytes`` (counted after decompression,
one bounded step at a time: uncompressed bodies are asked for, and only one
layer of gzip or deflate is read), and the result sent back to the model is
compact JSON cut to ``tools.max_result_chars``. Every failure the endpoint or
the network can cause is a :class:`ToolException`, cut to the same length: the
model reads it, the turn goes on, and a request that writes is in the audit
log whatever its outcome.

Header ``${NAME}`` references are checked against the plugin's settings
(:class:`~.settings.HttpSettings`) when the row is built, expanded at each
call, and every value expanded is redacted (:class:`~.redaction.Redactor`)
from the result and the error messages of that call.
"""

from __future__ import annotations

import asyncio
import codecs
import functools
import importlib
import json
import math
import os
import re
import zlib
from dataclasses import dataclass
from typing import Annotated, Any, Literal
from urllib.parse import quote

import httpx
from langchain_core.tools import BaseTool, ToolException
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    create_model,
)

from chatwright.approvals import record_cancelled_write, record_write
from chatwright.errors import one_line
from chatwright.stores import ToolRow
from chatwright.tools import (
    ConfigProblem,
    StrictTool,
    ToolConfigError,
    ToolContext,
    invalid_arguments,
)
from chatwright_http_tool.config import (
    BODY_METHODS,
    ENV_REFERENCE,
    NOT_ONE_LINE,
    SCHEMES,
    HttpConfig,
    header_value_problem,
    parse_template,
    problems,
)
from chatwright_http_tool.redaction import Redactor
from chatwright_http_tool.settings import HttpSettings


def _no_boolean(value: Any) -> Any:
    # bool is an int to pydantic: {"page": true} would be sent as page=1.
    if isinstance(value, bool):
        raise ValueError(f"a number is wanted, not {'true' if value else 'false'}")
    return value


def _finite(value: float) -> float:
    # NaN and infinity have no JSON spelling, and no endpoint means them.
    if not math.isfinite(value):
        raise ValueError(f"a finite number is wanted, not {value}")
    return value


PYTHON_TYPES: dict[str, Any] = {
    "string": str,
    "integer": Annotated[int, BeforeValidator(_no_boolean)],
    "number": Annotated[float, BeforeValidator(_no_boolean), AfterValidator(_finite)],
    "boolean": bool,
}
MAX_STRING = 10_000
MAX_REDIRECTS = 5
# How much of an error response's body (and of its reason phrase) the model is shown.
ERROR_EXCERPT = 300
# Deeper JSON is refused: parsing and redacting it would exhaust the stack.
MAX_JSON_DEPTH = 200
# Compressed bodies are not asked for: a few kilobytes can expand to gigabytes.
ACCEPT_ENCODING = "identity"
# An endpoint that compresses all the same may use one layer of these: it is
# decompressed step by step, each step bounded, and max_response_bytes counts
# the decompressed bytes.
ZLIB_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


def dumps(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def capped(result: dict[str, Any], limit: int) -> str:
    """``result`` as compact JSON of at most ``limit`` characters.

    When it is too long, ``body`` becomes the start of its text (a JSON body:
    of its JSON text) and ``truncated`` says how much was kept.
    """
    text = dumps(result)
    if len(text) <= limit:
        return text
    body = result.get("body")
    body_text = body if isinstance(body, str) else dumps(body)
    total = len(body_text)
    notes = [n for n in (result.get("truncated"),) if n]
    keep = total
    while True:
        # Escaping only lengthens text, so cutting by the excess converges.
        keep = max(0, keep - (len(text) - limit))
        note = f"the body was cut to {keep} of {total} characters; narrow the request"
        text = dumps({**result, "body": body_text[:keep], "truncated": "; ".join([*notes, note])})
        if len(text) <= limit or keep == 0:
            return text


def as_text(value: Any) -> str:
    """An argument as it is written in a URL: booleans as JSON writes them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _shown(url: httpx.URL) -> str:
    # Without the query: a constant in the template may be something to keep quiet.
    return str(url.copy_with(query=None, fragment=None))


def raw_host(url: httpx.URL) -> str:
    """The host the HTTP client connects to: an internationalised name in IDNA form."""
    return url.raw_host.decode("ascii", errors="replace")


def excerpt(text: str) -> str:
    """``text`` on one line, cut to :data:`ERROR_EXCERPT` characters."""
    text = " ".join(text.split())
    return text if len(text) <= ERROR_EXCERPT else text[:ERROR_EXCERPT] + "…"


def json_depth(data: Any) -> int:
    """How deeply lists and objects nest in parsed JSON (0 for a scalar), without recursion."""
    deepest = 0
    stack = [(data, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in item)
    return deepest


class Inflater:
    """One layer of gzip or deflate, decompressed with a bound on each step's output."""

    def __init__(self, coding: str) -> None:
        self.coding = coding
        self._zlib = zlib.decompressobj(ZLIB_WBITS[coding])
        self._started = False

    def inflate(self, data: bytes, limit: int) -> tuple[bytes, bytes]:
        """At most ``limit`` bytes decompressed from ``data``, and the input not used yet."""
        try:
            out = self._zlib.decompress(data, limit)
        except zlib.error:
            if self.coding != "deflate" or self._started:
                raise
            # "deflate" is meant to be zlib-wrapped, but some servers send it raw.
            self._zlib = zlib.decompressobj(-zlib.MAX_WBITS)
            out = self._zlib.decompress(data, limit)
        self._started = True
        return out, self._zlib.unconsumed_tail

    @property
    def ended(self) -> bool:
        """Whether the compressed stream has ended (what comes after it is not read)."""
        return self._zlib.eof


def _inflater(response: httpx.Response, where: str) -> Inflater | None:
    """How to decode the body's Content-Encoding: not at all, one bounded layer, or refused."""
    value = response.headers.get("content-encoding", "")
    codings = [c.strip().lower() for c in value.split(",") if c.strip()]
    codings = [c for c in codings if c != "identity"]
    if not codings:
        return None
    if len(codings) == 1 and codings[0] in ZLIB_WBITS:
        return Inflater(codings[0])
    raise ToolException(
        f"{where} answered with a body compressed as {excerpt(value)!r}, which this tool does "
        "not read; it asks for uncompressed responses (Accept-Encoding: identity)"
    )


def _text_decoder(response: httpx.Response, where: str) -> codecs.IncrementalDecoder:
    name = response.encoding or "utf-8"
    try:
        info = codecs.lookup(name)
    except LookupError:
        info = codecs.lookup("utf-8")
    # Codecs such as hex, base64 or rot13 are in the registry but decode no text.
    if not getattr(info, "_is_text_encoding", True) or info.incrementaldecoder is None:
        raise ToolException(
            f"{where} answered with charset {excerpt(name)!r}, which is not a text encoding"
        )
    # Nor one that can read ASCII as other text (EBCDIC, UTF-16 or -32, UTF-7, a shift
    # state of ISO-2022, a double-byte charset whose second bytes may be ASCII): an echoed
    # secret would reach the model scrambled, past the redaction, and easily unscrambled.
    if not keeps_ascii(info):
        raise ToolException(
            f"{where} answered with charset {excerpt(name)!r}, which can read ASCII as other "
            "text; this tool reads UTF-8, EUC-JP, EUC-KR and single-byte charsets that keep "
            "ASCII as it is (ISO-8859-*, windows-125*, …)"
        )
    return info.incrementaldecoder(errors="replace")


@functools.cache
def _keeps_ascii(name: str) -> bool:
    info = codecs.lookup(name)
    if info.name not in MULTI_BYTE_KEEPING_ASCII:
        # A single-byte charset maps each byte alone: no state, no byte joined to another.
        module = importlib.import_module(f"encodings.{info.name.replace('-', '_')}")
        if not isinstance(getattr(module, "decoding_table", None), str):
            return False
    try:
        return info.decode(ASCII_PROBE, "strict")[0] == ASCII_TEXT
    except (UnicodeError, ValueError, TypeError, LookupError):
        return False


def keeps_ascii(info: codecs.CodecInfo) -> bool:
    """Whether every ASCII byte of a body reads as itself in this charset, whatever comes
    before it."""
    try:
        return _keeps_ascii(info.name)
    except (ImportError, LookupError):
        return False


ASCII_TEXT = "".join(map(chr, range(0x20, 0x7F))) + "\t\r\n"
"""Every printable ASCII character, and the usual white space."""
ASCII_PROBE = ASCII_TEXT.encode("ascii")
MULTI_BYTE_KEEPING_ASCII = frozenset(
    {"utf-8", "utf-8-sig", "ascii", "euc_jp", "euc_jis_2004", "euc_jisx0213", "euc_kr"}
)
"""Charsets of several bytes a character whose bytes past the first are never ASCII."""


class TooDeep(Exception):
    """A JSON body nested more than :data:`MAX_JSON_DEPTH` levels deep."""


@dataclass
class Reply:
    """A response whose body was read, at most ``max_response_bytes`` of it."""

    status: int
    reason: str
    content_type: str
    text: str
    truncated: bool

    def body(self) -> Any:
        """The parsed JSON, or the text; :class:`TooDeep` for JSON nested too deeply."""
        if not self.text:
            return None
        if "json" in self.content_type.lower():
            try:
                data = json.loads(self.text)
            except RecursionError:
                raise TooDeep from None
            except ValueError:
                # Not JSON after all (or cut short): the model gets the text.
                return self.text
            if json_depth(data) > MAX_JSON_DEPTH:
                raise TooDeep
            return data
        return self.text

    def excerpt(self) -> str:
        return excerpt(self.text)


class HttpToolType:
    """The ``http`` tool type."""

    @property
    def config_model(self) -> type[BaseModel]:
        return HttpConfig

    async def build(self, row: ToolRow, config: Any, context: ToolContext) -> BaseTool:
        assert isinstance(config, HttpConfig)
        allowed = HttpSettings.from_settings(context.settings.plugins)
        found = problems(config) + allowed.problems(config)
        if not found:
            # The rules were checked on urllib's reading of the url; what counts is the
            # HTTP client's, so read it that way too, with sample values.
            sample = dict.fromkeys(parse_template(config.url).placeholders, "x")
            try:
                url = httpx.URL(config.url.format_map(sample))
            except httpx.InvalidURL as exc:
                found.append(ConfigProblem("config.url", f"not a valid URL ({exc})"))
            else:
                if not config.allows(raw_host(url), url.port, url.scheme):
                    found.append(
                        ConfigProblem(
                            "config.url",
                            f"the HTTP client reads the host as {raw_host(url)!r}, which is not "
                            "in allowed_hosts",
                        )
                    )
        if found:
            raise ToolConfigError(found)
        return HttpTool(row, config, context, allowed).as_tool()


class HttpTool:
    """One built tool: a checked config, for one agent and user."""

    def __init__(
        self, row: ToolRow, config: HttpConfig, context: ToolContext, allowed: HttpSettings
    ) -> None:
        self.row = row
        self.config = config
        self.context = context
        self.allowed = allowed
        self.in_path = set(parse_template(config.url).placeholders)
        # The args model's field of each argument (see args_model), and back.
        self.fields = [f"arg_{i}" for i in range(len(config.args))]
        self.names = dict(zip(self.fields, config.args, strict=True))

    def args_model(self) -> type[BaseModel]:
        """The arguments' model. Its fields are named ``arg_0``, ``arg_1``, … with each
        argument's own name as the alias (what the model sees and sends, and what errors
        name), so that any identifier is an argument's name, ``_id`` and
        ``model_config`` too, which pydantic refuses as field names."""
        fields: dict[str, Any] = {}
        for field, (name, spec) in zip(self.fields, self.config.args.items(), strict=True):
            annotation: Any = PYTHON_TYPES[spec.type]
            if spec.enum:
                annotation = Literal[tuple(spec.enum)]
                if spec.type in {"integer", "number"}:
                    # true would be read as the choice 1.
                    annotation = Annotated[annotation, BeforeValidator(_no_boolean)]
            constraints: dict[str, Any] = {"description": spec.description or None, "alias": name}
            if spec.type == "string" and not spec.enum:
                constraints["max_length"] = MAX_STRING
                if name in self.in_path:
                    constraints["min_length"] = 1
            if spec.required:
                fields[field] = (annotation, Field(..., **constraints))
            else:
                fields[field] = (annotation | None, Field(None, **constraints))
        return create_model(
            f"{self.row.name}_args",
            __config__=ConfigDict(extra="forbid"),
            **fields,
        )

    def description(self) -> str:
        if self.row.description:
            return self.row.description
        endpoint = re.split(r"[?#]", self.config.url, maxsplit=1)[0]
        return f"Call {self.config.method} {endpoint}."

    def as_tool(self) -> BaseTool:
        return StrictTool.from_function(
            coroutine=self.run,
            name=self.row.name,
            description=self.description(),
            args_schema=self.args_model(),
            handle_tool_error=True,
            handle_validation_error=invalid_arguments,
            # Anything but a GET changes something somewhere: approval modes, the
            # write hooks and the audit log treat the tool as one that writes.
            metadata={"chatwright_writes": self.writes},
        )

    @property
    def writes(self) -> bool:
        return self.config.method != "GET"

    # -- a call -----------------------------------------------------------

    def _url(self, given: dict[str, Any]) -> httpx.URL:
        segments = {}
        for name in self.in_path:
            text = as_text(given[name])
            if text in {"", ".", ".."}:
                raise ToolException(f"Invalid arguments: {name}: {text!r} is not a path segment")
            segments[name] = quote(text, safe="")
        try:
            url = httpx.URL(self.config.url.format_map(segments))
        except httpx.InvalidURL as exc:
            raise ToolException(f"the arguments do not make a valid URL ({exc})") from None
        # Placeholders are path segments, so this holds; checked anyway, it is cheap.
        host = raw_host(url)
        if url.scheme not in SCHEMES or not self.config.allows(host, url.port, url.scheme):
            raise ToolException(f"the URL's host {host!r} is not in allowed_hosts")
        return url

    def _headers(self) -> tuple[dict[str, str], list[str]]:
        """The headers to send, and the secret values expanded into them."""
        resolved: dict[str, str] = {}
        expanded: list[str] = []
        for header, value in self.config.headers.items():

            def environment(match: re.Match[str], header: str = header) -> str:
                name = match.group(1)
                # Checked when the tool was built; checked again, as it costs nothing.
                if self.allowed.rule(name) is None:
                    raise ToolException(
                        f"header {header!r} references {name}, which [plugins.http.secrets] "
                        "does not list"
                    )
                found = self._variable(name, header)
                if found is None:
                    raise ToolException(
                        f"header {header!r} needs the environment variable {name}, which is "
                        "not set where chatwright runs"
                    )
                # The value itself is never part of the message.
                reason = header_value_problem(found)
                if reason is not None:
                    what = (
                        "is not one line of ASCII text"
                        if reason == NOT_ONE_LINE
                        else "begins or ends with a space or a tab"
                    )
                    raise ToolException(
                        f"the environment variable {name} (header {header!r}) {what}"
                    )
                expanded.append(found)
                return found

            resolved[header] = ENV_REFERENCE.sub(environment, value)
        return resolved, expanded

    def _variable(self, name: str, header: str) -> str | None:
        """The value of the listed variable ``name`` (names are compared without regard
        to case): None when the environment has none of that name. Two of the name in
        different cases are refused: which one the settings mean cannot be told (a name
        listed in the environment form arrives lowercased), and the row's own spelling
        must never pick one the settings did not list."""
        found = [key for key in os.environ if key.upper() == name.upper()]
        if len(found) > 1:
            raise ToolException(
                f"header {header!r} references {name}, and the environment has "
                f"{len(found)} variables of that name in different cases; leave one of "
                "them where chatwright runs"
            )
        return os.environ[found[0]] if found else None

    def _check_redirect(self, source: httpx.URL, target: httpx.URL) -> None:
        if target.scheme not in SCHEMES:
            raise ToolException(f"redirect to a {target.scheme!r} URL refused: http or https only")
        if source.scheme == "https" and target.scheme == "http":
            raise ToolException("redirect from https to http refused")
        if target.port is not None and not 0 < target.port < 65536:
            raise ToolException(f"redirect to port {target.port} refused: not a valid port")
        host = raw_host(target)
        if not self.config.allows(host, target.port, target.scheme):
            raise ToolException(f"redirect to host {host!r} refused: it is not in allowed_hosts")

    async def _read(self, response: httpx.Response, redactor: Redactor) -> Reply:
        where = f"{response.request.method} {_shown(response.request.url)}"
        inflater = _inflater(response, where)
        decoder = _text_decoder(response, where)
        cap = self.config.max_response_bytes
        chunks: list[bytes] = []
        size = 0
        truncated = False
        async for raw in response.aiter_raw():
            pending = raw
            while pending and not truncated:
                if inflater is None:
                    chunk, pending = pending, b""
                else:
                    # One byte more than fits is enough to know the body is longer.
                    try:
                        chunk, pending = inflater.inflate(pending, cap - size + 1)
                    except zlib.error as exc:
                        raise ToolException(
                            f"{where} answered with a body that is not valid "
                            f"{inflater.coding} data ({exc})"
                        ) from None
                if size + len(chunk) > cap:
                    chunk = chunk[: cap - size]
                    truncated = True
                chunks.append(chunk)
                size += len(chunk)
            if truncated or (inflater is not None and inflater.ended):
                # Bytes after the end of the compressed body are not read: zlib would keep
                # each of them, copied again with every chunk, until the time limit.
                break
        try:
            # final=False on a cut body drops a character split by the cut instead of
            # mangling it.
            text = decoder.decode(b"".join(chunks), final=not truncated)
        except (UnicodeError, ValueError, TypeError, LookupError) as exc:
            raise ToolException(
                f"{where} answered with a body that cannot be read as "
                f"{excerpt(response.encoding or 'utf-8')!r} text ({one_line(exc)})"
            ) from None
        # A cut body may end inside an echoed secret: its start goes too.
        text = redactor.cut_text(text) if truncated else redactor.text(text)
        content_type = response.headers.get("content-type", "")
        # Redacted whole first, so that the cut cannot leave part of a secret.
        reason = excerpt(redactor.text(response.reason_phrase))
        return Reply(response.status_code, reason, content_type, text, truncated)

    async def _exchange(
        self,
        url: httpx.URL,
        headers: dict[str, str],
        params: dict[str, str],
        body: Any,
        redactor: Redactor,
    ) -> tuple[httpx.URL, Reply]:
        async with httpx.AsyncClient(
            timeout=httpx.Timeout(self.config.timeout),
            follow_redirects=False,
            # A configured Accept-Encoding replaces this one; a coding the tool cannot
            # decompress within bounds is refused when the response comes.
            headers={"Accept-Encoding": ACCEPT_ENCODING},
        ) as client:
            # httpx's params= replaces the template's own query; merge them instead.
            url = url.copy_merge_params(params) if params else url
            request = client.build_request(self.config.method, url, json=body, headers=headers)
            for _ in range(MAX_REDIRECTS + 1):
                response = await client.send(request, stream=True)
                try:
                    target = response.next_request
                    if target is None:
                        return request.url, await self._read(response, redactor)
                finally:
                    await response.aclose()
                self._check_redirect(request.url, target.url)
                request = target
        raise ToolException(f"more than {MAX_REDIRECTS} redirects; the endpoint is misconfigured")

    async def run(self, **kwargs: Any) -> str:
        if self.context.user_id is None:
            raise ToolException("this tool was built for checking only and cannot run")
        # LangChain may pass omitted optional arguments as None: they are not sent.
        given = {self.names[k]: v for k, v in kwargs.items() if v is not None}
        url = self._url(given)
        headers, expanded = self._headers()
        redactor = Redactor(expanded)
        try:
            result = redactor.text(await self._call(given, url, headers, redactor))
        except asyncio.CancelledError:
            # The turn was stopped (its time limit) with the request under way: it may
            # have been sent and acted on, so a request that writes is recorded all the same.
            if self.writes:
                await record_cancelled_write(
                    self.context,
                    self.row,
                    operation=self.config.method.lower(),
                    args=given,
                    error=f"{self.config.method} {_shown(url)}: cancelled on its way or "
                    "after it was sent (the turn was stopped); the endpoint may have acted",
                )
            raise
        except Exception as exc:
            # Anything a response could cause and nothing above foresaw is still an
            # error the model reads, and a request that was sent is still recorded.
            if isinstance(exc, ToolException):
                reason = str(exc)
            else:
                reason = f"{self.config.method} {_shown(url)} failed: {one_line(exc)}"
            reason = self._capped_error(redactor.text(reason))
            await self._record(given, "error", reason)
            raise ToolException(reason) from None
        await self._record(given, "ok", None)
        return result

    def _capped_error(self, reason: str) -> str:
        limit = self.context.settings.tools.max_result_chars
        return reason if len(reason) <= limit else reason[: limit - 1] + "…"

    async def _record(self, given: dict[str, Any], outcome: str, error: str | None) -> None:
        """A request that may have changed something goes into the audit log."""
        if not self.writes:
            return
        await record_write(
            self.context,
            self.row,
            operation=self.config.method.lower(),
            args=given,
            outcome=outcome,
            error=error,
        )

    async def _call(
        self, given: dict[str, Any], url: httpx.URL, headers: dict[str, str], redactor: Redactor
    ) -> str:
        config = self.config
        params = {key: as_text(given[arg]) for key, arg in config.query.items() if arg in given}
        body = None
        if config.method in BODY_METHODS and config.body:
            body = {key: given[arg] for key, arg in config.body.items() if arg in given}
        where = f"{config.method} {_shown(url)}"
        try:
            async with asyncio.timeout(config.timeout):
                final_url, reply = await self._exchange(url, headers, params, body, redactor)
        except (TimeoutError, httpx.TimeoutException):
            raise ToolException(f"{where} timed out after {config.timeout:g} s") from None
        except httpx.ConnectError as exc:
            raise ToolException(f"{where}: could not connect ({one_line(exc)})") from None
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise ToolException(f"{where} failed: {one_line(exc)}") from None
        if reply.status >= 400:
            answer = f"{config.method} {_shown(final_url)} answered {reply.status} {reply.reason}"
            start = reply.excerpt()
            raise ToolException(f"{answer}: {start}" if start else answer)
        try:
            body = reply.body()
        except TooDeep:
            raise ToolException(
                f"{config.method} {_shown(final_url)} answered {reply.status} with JSON nested "
                f"more than {MAX_JSON_DEPTH} levels deep, which this tool does not read"
            ) from None
        # Parsed JSON may spell a secret with \u escapes that the text did not show.
        result: dict[str, Any] = {"status": reply.status, "body": redactor.value(body)}
        if reply.truncated:
            result["truncated"] = (
                f"the response is longer than {config.max_response_bytes} bytes "
                "(max_response_bytes); only the start was read"
            )
        return capped(result, self.context.settings.tools.max_result_chars)
