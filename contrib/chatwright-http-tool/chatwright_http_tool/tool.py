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
as a stream and cut at ``max_response_bytes``, and the result sent back to the
model is compact JSON cut to ``tools.max_result_chars``. Every failure the
endpoint or the network can cause is a :class:`ToolException`: the model reads
it, and the turn goes on.

Header ``${NAME}`` references are checked against the plugin's settings
(:class:`~.settings.HttpSettings`) when the row is built, expanded at each
call, and every value expanded is redacted (:class:`~.redaction.Redactor`)
from the result and the error messages of that call.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import os
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal
from urllib.parse import quote

import httpx
from langchain_core.tools import BaseTool, ToolException
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model

from chatwright.approvals import record_write
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
    SCHEMES,
    HttpConfig,
    header_value_ok,
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


PYTHON_TYPES: dict[str, Any] = {
    "string": str,
    "integer": Annotated[int, BeforeValidator(_no_boolean)],
    "number": Annotated[float, BeforeValidator(_no_boolean)],
    "boolean": bool,
}
MAX_STRING = 10_000
MAX_REDIRECTS = 5
# How much of an error response's body the model is shown.
ERROR_EXCERPT = 300


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


@dataclass
class Reply:
    """A response whose body was read, at most ``max_response_bytes`` of it."""

    status: int
    reason: str
    content_type: str
    text: str
    truncated: bool

    def body(self) -> Any:
        if not self.text:
            return None
        if "json" in self.content_type.lower():
            # Not JSON after all (or cut short): the model gets the text.
            with contextlib.suppress(ValueError):
                return json.loads(self.text)
        return self.text

    def excerpt(self) -> str:
        text = " ".join(self.text.split())
        return text if len(text) <= ERROR_EXCERPT else text[:ERROR_EXCERPT] + "…"


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
                if not config.allows(url.host, url.port, url.scheme):
                    found.append(
                        ConfigProblem(
                            "config.url",
                            f"the HTTP client reads the host as {url.host!r}, which is not in "
                            "allowed_hosts",
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

    def args_model(self) -> type[BaseModel]:
        fields: dict[str, Any] = {}
        for name, spec in self.config.args.items():
            annotation: Any = PYTHON_TYPES[spec.type]
            if spec.enum:
                annotation = Literal[tuple(spec.enum)]
                if spec.type in {"integer", "number"}:
                    # true would be read as the choice 1.
                    annotation = Annotated[annotation, BeforeValidator(_no_boolean)]
            constraints: dict[str, Any] = {"description": spec.description or None}
            if spec.type == "string" and not spec.enum:
                constraints["max_length"] = MAX_STRING
                if name in self.in_path:
                    constraints["min_length"] = 1
            if spec.required:
                fields[name] = (annotation, Field(..., **constraints))
            else:
                fields[name] = (annotation | None, Field(None, **constraints))
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
        if url.scheme not in SCHEMES or not self.config.allows(url.host, url.port, url.scheme):
            raise ToolException(f"the URL's host {url.host!r} is not in allowed_hosts")
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
                found = os.environ.get(name)
                if found is None:
                    raise ToolException(
                        f"header {header!r} needs the environment variable {name}, which is "
                        "not set where chatwright runs"
                    )
                if not header_value_ok(found):
                    raise ToolException(
                        f"the environment variable {name} (header {header!r}) is not one line "
                        "of ASCII text"
                    )
                expanded.append(found)
                return found

            resolved[header] = ENV_REFERENCE.sub(environment, value)
        return resolved, expanded

    def _check_redirect(self, source: httpx.URL, target: httpx.URL) -> None:
        if target.scheme not in SCHEMES:
            raise ToolException(f"redirect to a {target.scheme!r} URL refused: http or https only")
        if source.scheme == "https" and target.scheme == "http":
            raise ToolException("redirect from https to http refused")
        if not self.config.allows(target.host, target.port, target.scheme):
            raise ToolException(
                f"redirect to host {target.host!r} refused: it is not in allowed_hosts"
            )

    async def _read(self, response: httpx.Response, redactor: Redactor) -> Reply:
        cap = self.config.max_response_bytes
        chunks: list[bytes] = []
        size = 0
        truncated = False
        async for chunk in response.aiter_bytes():
            if size + len(chunk) > cap:
                chunks.append(chunk[: cap - size])
                truncated = True
                break
            chunks.append(chunk)
            size += len(chunk)
        decoder = codecs.getincrementaldecoder(response.encoding or "utf-8")(errors="replace")
        # final=False on a cut body drops a character split by the cut instead of mangling it.
        text = decoder.decode(b"".join(chunks), final=not truncated)
        # A cut body may end inside an echoed secret: its start goes too.
        text = redactor.cut_text(text) if truncated else redactor.text(text)
        content_type = response.headers.get("content-type", "")
        reason = redactor.text(response.reason_phrase)
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
            timeout=httpx.Timeout(self.config.timeout), follow_redirects=False
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
        given = {k: v for k, v in kwargs.items() if v is not None}
        url = self._url(given)
        headers, expanded = self._headers()
        redactor = Redactor(expanded)
        try:
            result = redactor.text(await self._call(given, url, headers, redactor))
        except ToolException as exc:
            reason = redactor.text(str(exc))
            await self._record(given, "error", reason)
            raise ToolException(reason) from None
        await self._record(given, "ok", None)
        return result

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
            excerpt = reply.excerpt()
            raise ToolException(f"{answer}: {excerpt}" if excerpt else answer)
        # Parsed JSON may spell a secret with \u escapes that the text did not show.
        result: dict[str, Any] = {"status": reply.status, "body": redactor.value(reply.body())}
        if reply.truncated:
            result["truncated"] = (
                f"the response is longer than {config.max_response_bytes} bytes "
                "(max_response_bytes); only the start was read"
            )
        return capped(result, self.context.settings.tools.max_result_chars)
