"""The ``http`` tool type, built and called the way chatwright does it.

Rows go through ``chatwright.tools.build_row`` (the loader's own path: type
lookup, config validation, build) and tools are called with the exact payload
the agent loop sends (``{"name", "args", "id", "type": "tool_call"}``): the
result is a ``ToolMessage``, and a failed call is a ``ToolMessage`` with
``status == "error"`` and a readable ``content``, never an exception.
Every request goes to the local server of ``local_server.py``.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import subprocess
import sys
from dataclasses import fields
from typing import Any

import pytest
from langchain_core.messages import ToolMessage
from langchain_core.tools import BaseTool
from local_server import LocalServer

from chatwright.approvals import AuditEntry, NewAuditEntry
from chatwright.registry import Plugins
from chatwright.settings import Settings
from chatwright.stores import ToolRow
from chatwright.tools import RowReport, ToolContext, build_row

SETTINGS = Settings()
# The variable the tests' headers use, allowed to go to the local server.
ALLOW_TOKEN = Settings(
    plugins={"http": {"secrets": {"HTTP_TOOL_TEST_TOKEN": ["127.0.0.1", "api.example.com"]}}}
)
NOW = dt.datetime.now(dt.UTC)


def row(config: Any, name: str = "call_api", description: str = "") -> ToolRow:
    return ToolRow(
        id=7,
        agent_id=1,
        name=name,
        type="http",
        description=description,
        config=config,
        is_active=True,
        position=0,
        created_at=NOW,
        updated_at=NOW,
    )


class AuditLog:
    """The one store the http tool type uses: the audit log, kept in a list."""

    def __init__(self) -> None:
        self.entries: list[NewAuditEntry] = []

    async def record(self, entry: NewAuditEntry) -> AuditEntry:
        self.entries.append(entry)
        return AuditEntry(**{f.name: getattr(entry, f.name) for f in fields(entry)})


class Storage:
    def __init__(self) -> None:
        self.audit = AuditLog()


async def load(
    plugins: Plugins,
    config: Any,
    *,
    user_id: str | None = "alice",
    settings: Settings = SETTINGS,
    description: str = "",
    storage: Storage | None = None,
) -> RowReport:
    # The http tool type uses the storage only to record its writes.
    store: Any = storage or Storage()
    context = ToolContext("helper", storage=store, settings=settings, user_id=user_id)
    return await build_row(row(config, description=description), "helper", plugins, context)


async def build(plugins: Plugins, config: Any, **kwargs: Any) -> BaseTool:
    report = await load(plugins, config, **kwargs)
    assert report.ok, [p.brief() for p in report.problems]
    assert report.tool is not None
    return report.tool


async def call(tool: BaseTool, **args: Any) -> ToolMessage:
    message = await tool.ainvoke({"name": tool.name, "args": args, "id": "c1", "type": "tool_call"})
    assert isinstance(message, ToolMessage)
    assert message.tool_call_id == "c1"
    return message


def ok(message: ToolMessage) -> Any:
    assert message.status == "success", message.content
    return json.loads(message.text)


def error(message: ToolMessage) -> str:
    assert message.status == "error", message.content
    return message.text


def get_item(server: LocalServer, **extra: Any) -> dict[str, Any]:
    return {
        "method": "GET",
        "url": f"{server.base}/items/{{item_id}}?lang=en",
        "allowed_hosts": ["127.0.0.1"],
        "args": {
            "item_id": {"type": "string", "required": True, "description": "The item's id"},
            "verbose": {"type": "boolean"},
            "page": {"type": "integer"},
        },
        "query": {"verbose": "verbose", "page": "page"},
        **extra,
    }


# -- calls --------------------------------------------------------------------


async def test_get_fills_the_path_and_the_query(plugins: Plugins, server: LocalServer) -> None:
    tool = await build(plugins, get_item(server))
    result = ok(await call(tool, item_id="42", verbose=True, page=2))
    assert result == {
        "status": 200,
        "body": {
            "id": "42",
            "path": "/items/42?lang=en&verbose=true&page=2",
            "query": {"lang": ["en"], "verbose": ["true"], "page": ["2"]},
        },
    }
    # Omitted optional arguments are not sent.
    result = ok(await call(tool, item_id="43"))
    assert result["body"]["path"] == "/items/43?lang=en"


async def test_a_path_argument_is_one_quoted_segment(plugins: Plugins, server: LocalServer) -> None:
    tool = await build(plugins, get_item(server))
    result = ok(await call(tool, item_id="a/../b?c=1#d"))
    assert result["body"]["path"] == "/items/a%2F..%2Fb%3Fc%3D1%23d?lang=en"
    assert result["body"]["query"] == {"lang": ["en"]}
    for bad in ("..", "."):
        assert error(await call(tool, item_id=bad)) == (
            f"Invalid arguments: item_id: {bad!r} is not a path segment"
        )
    assert "item_id: String should have at least 1 character" in error(await call(tool, item_id=""))
    assert server.paths() == ["/items/a%2F..%2Fb%3Fc%3D1%23d?lang=en"]


async def test_post_sends_the_body_as_json(plugins: Plugins, server: LocalServer) -> None:
    config = {
        "method": "post",
        "url": f"{server.base}/echo",
        "allowed_hosts": ["127.0.0.1"],
        "args": {
            "title": {"required": True},
            "priority": {"type": "integer", "enum": [1, 2, 3]},
            "weight": {"type": "number"},
            "urgent": {"type": "boolean"},
        },
        "body": {"title": "title", "prio": "priority", "weight": "weight", "urgent": "urgent"},
    }
    tool = await build(plugins, config)
    result = ok(await call(tool, title="buy milk", priority=2, urgent=False))
    assert result["status"] == 200
    assert result["body"]["method"] == "POST"
    assert result["body"]["body"] == {"title": "buy milk", "prio": 2, "urgent": False}
    assert result["body"]["headers"]["Content-Type"] == "application/json"
    assert "priority: Value error, a number is wanted, not true" in error(
        await call(tool, title="x", priority=True)
    )
    assert "Invalid arguments: priority: Input should be 1, 2 or 3" in error(
        await call(tool, title="x", priority=9)
    )


async def test_requests_other_than_get_are_writes_in_the_audit_log(
    plugins: Plugins, server: LocalServer
) -> None:
    storage = Storage()
    config = {
        "method": "PUT",
        "url": f"{server.base}/items/{{item_id}}",
        "allowed_hosts": ["127.0.0.1"],
        "args": {"item_id": {"required": True}, "name": {}},
        "body": {"name": "name"},
    }
    tool = await build(plugins, config, storage=storage)
    assert tool.metadata is not None and tool.metadata["chatwright_writes"] is True
    ok(await call(tool, item_id="42", name="milk"))
    failing = {
        "method": "DELETE",
        "url": f"{server.base}/status/{{code}}",
        "allowed_hosts": ["127.0.0.1"],
        "args": {"code": {"required": True}},
    }
    error(await call(await build(plugins, failing, storage=storage), code="500"))
    first, second = storage.audit.entries
    assert (first.operation, first.outcome, dict(first.args)) == (
        "put",
        "ok",
        {"item_id": "42", "name": "milk"},
    )
    assert (first.user_id, first.tool_name, first.tool_id) == ("alice", "call_api", 7)
    assert second.outcome == "error" and second.error and "500" in second.error
    reads = Storage()
    getter = await build(plugins, get_item(server), storage=reads)
    assert getter.metadata is not None and getter.metadata["chatwright_writes"] is False
    ok(await call(getter, item_id="1"))
    assert reads.audit.entries == []


async def test_headers_take_environment_variables_at_call_time(
    plugins: Plugins, server: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HTTP_TOOL_TEST_TOKEN", raising=False)
    config = {
        "url": f"{server.base}/echo",
        "allowed_hosts": ["127.0.0.1"],
        "headers": {"Authorization": "Bearer ${HTTP_TOOL_TEST_TOKEN}", "X-Client": "chatwright"},
    }
    # Built while the variable is unset: it is read when the tool runs, not before.
    tool = await build(plugins, config, settings=ALLOW_TOKEN)
    message = error(await call(tool))
    assert message == (
        "header 'Authorization' needs the environment variable HTTP_TOOL_TEST_TOKEN, which is "
        "not set where chatwright runs"
    )
    assert server.seen == []

    monkeypatch.setenv("HTTP_TOOL_TEST_TOKEN", "s3cret-value")
    result = ok(await call(tool))
    assert server.seen[-1].headers["Authorization"] == "Bearer s3cret-value"
    # The endpoint echoed the header: the model reads it without the secret.
    assert result["body"]["headers"]["Authorization"] == "Bearer [redacted]"
    assert result["body"]["headers"]["X-Client"] == "chatwright"
    # What the model is shown of the tool holds no secret.
    shown = json.dumps(tool.tool_call_schema.model_json_schema()) + tool.description
    assert "s3cret" not in shown

    monkeypatch.setenv("HTTP_TOOL_TEST_TOKEN", "two\nlines")
    assert error(await call(tool)) == (
        "the environment variable HTTP_TOOL_TEST_TOKEN (header 'Authorization') is not one line "
        "of ASCII text"
    )


@pytest.mark.parametrize(("code", "reason"), [(404, "Not Found"), (500, "Internal Server Error")])
async def test_http_errors_are_tool_errors(
    plugins: Plugins, server: LocalServer, code: int, reason: str
) -> None:
    config = {
        "url": f"{server.base}/status/{{code}}?key=constant-secret",
        "allowed_hosts": ["127.0.0.1"],
        "args": {"code": {"type": "integer", "required": True}},
    }
    tool = await build(plugins, config)
    assert error(await call(tool, code=code)) == (
        f"GET {server.base}/status/{code} answered {code} {reason}: "
        f'{{"error": "the server says {code}"}}'
    )


async def test_a_slow_server_is_a_timeout(plugins: Plugins, server: LocalServer) -> None:
    config = {"url": f"{server.base}/slow", "allowed_hosts": ["127.0.0.1"], "timeout": 0.3}
    tool = await build(plugins, config)
    assert error(await call(tool)) == f"GET {server.base}/slow timed out after 0.3 s"


async def test_the_timeout_covers_the_whole_exchange(plugins: Plugins, server: LocalServer) -> None:
    # Each byte comes well within the read timeout; the whole body does not.
    config = {"url": f"{server.base}/drip", "allowed_hosts": ["127.0.0.1"], "timeout": 0.5}
    tool = await build(plugins, config)
    assert error(await call(tool)) == f"GET {server.base}/drip timed out after 0.5 s"


async def test_nothing_listening_is_a_tool_error(plugins: Plugins) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = {"url": f"http://127.0.0.1:{port}/x", "allowed_hosts": ["127.0.0.1"]}
    tool = await build(plugins, config)
    assert error(await call(tool)).startswith(f"GET http://127.0.0.1:{port}/x: could not connect")


async def test_a_long_response_is_cut_at_max_response_bytes(
    plugins: Plugins, server: LocalServer
) -> None:
    config = {
        "url": f"{server.base}/big",
        "allowed_hosts": ["127.0.0.1"],
        "max_response_bytes": 300,
    }
    tool = await build(plugins, config)
    result = ok(await call(tool))
    assert result == {
        "status": 200,
        "body": "x" * 300,
        "truncated": "the response is longer than 300 bytes (max_response_bytes); only the start "
        "was read",
    }


async def test_a_long_result_is_cut_to_max_result_chars(
    plugins: Plugins, server: LocalServer
) -> None:
    settings = Settings(tools={"max_result_chars": 500})  # type: ignore[call-arg]
    config = {"url": f"{server.base}/bigjson", "allowed_hosts": ["127.0.0.1"]}
    tool = await build(plugins, config, settings=settings)
    message = await call(tool)
    assert len(message.text) <= 500
    result = ok(message)
    assert result["status"] == 200
    assert result["body"].startswith('[{"n":0,"name":"item 0"},{"n":1')
    assert result["truncated"].startswith("the body was cut to ")
    assert result["truncated"].endswith(" characters; narrow the request")


async def test_redirects_are_followed_only_to_allowed_hosts(
    plugins: Plugins, server: LocalServer
) -> None:
    config = {
        "url": f"{server.base}/redirect",
        "allowed_hosts": ["127.0.0.1"],
        "args": {"to": {"required": True}},
        "query": {"to": "to"},
    }
    tool = await build(plugins, config)
    result = ok(await call(tool, to="/items/9"))
    assert result["body"]["id"] == "9"

    # localhost is this very server, but it is not an allowed host: never asked.
    message = error(await call(tool, to=f"http://localhost:{server.port}/items/secret"))
    assert message == "redirect to host 'localhost' refused: it is not in allowed_hosts"
    assert error(await call(tool, to="https://example.com/")) == (
        "redirect to host 'example.com' refused: it is not in allowed_hosts"
    )
    assert "/items/secret" not in server.paths()


async def test_a_host_entry_with_a_port_allows_that_port_only(
    plugins: Plugins, server: LocalServer
) -> None:
    config = {"url": f"{server.base}/items/{{id}}", "args": {"id": {"required": True}}}
    tool = await build(plugins, {**config, "allowed_hosts": [f"127.0.0.1:{server.port}"]})
    assert ok(await call(tool, id="1"))["status"] == 200
    report = await load(plugins, {**config, "allowed_hosts": ["127.0.0.1:1"]})
    assert [p.brief() for p in report.problems] == [
        f"config.url: host '127.0.0.1:{server.port}' is not in allowed_hosts (127.0.0.1:1)"
    ]


# -- what the model may pass --------------------------------------------------


async def test_the_schema_holds_only_the_args(plugins: Plugins, server: LocalServer) -> None:
    tool = await build(
        plugins,
        get_item(server, headers={"X-Key": "${HTTP_TOOL_TEST_TOKEN}"}),
        settings=ALLOW_TOKEN,
    )
    schema = tool.tool_call_schema.model_json_schema()
    assert set(schema["properties"]) == {"item_id", "verbose", "page"}
    assert schema["required"] == ["item_id"]
    assert schema["properties"]["item_id"]["description"] == "The item's id"
    # The default description leaves out the query, as error messages do.
    assert tool.description == f"Call GET {server.base}/items/{{item_id}}."


async def test_any_identifier_is_an_argument_name(plugins: Plugins, server: LocalServer) -> None:
    """Names pydantic refuses for fields (a leading underscore, its own attributes) are
    arguments like any other: shown to the model, taken from it, sent, and named in
    errors; the fields' own names are not arguments."""
    from langchain_core.utils.function_calling import convert_to_openai_tool

    config = {
        "method": "GET",
        "url": f"{server.base}/items/{{_id}}",
        "allowed_hosts": ["127.0.0.1"],
        "args": {
            "_id": {"type": "string", "required": True},
            "model_config": {"type": "integer"},
            "arg_0": {"type": "string"},
        },
        "query": {"model_config": "model_config", "x": "arg_0"},
    }
    tool = await build(plugins, config)
    shown = convert_to_openai_tool(tool)["function"]
    assert set(shown["parameters"]["properties"]) == {"_id", "model_config", "arg_0"}
    assert shown["parameters"]["required"] == ["_id"]
    result = ok(await call(tool, _id="7", model_config=3, arg_0="z"))
    assert result["body"]["path"] == "/items/7?model_config=3&x=z"
    assert error(await call(tool, model_config=3)) == "Invalid arguments: _id: required"
    assert error(await call(tool, _id="7", arg_1=3)) == (
        "Invalid arguments: arg_1: unknown argument, not allowed"
    )
    assert server.paths() == ["/items/7?model_config=3&x=z"]


async def test_unknown_arguments_are_refused(plugins: Plugins, server: LocalServer) -> None:
    tool = await build(plugins, get_item(server))
    assert error(await call(tool, item_id="1", host="evil.example")) == (
        "Invalid arguments: host: unknown argument, not allowed"
    )
    assert server.seen == []


async def test_a_tool_without_args_refuses_any(plugins: Plugins, server: LocalServer) -> None:
    tool = await build(plugins, {"url": f"{server.base}/echo", "allowed_hosts": ["127.0.0.1"]})
    assert error(await call(tool, url="http://evil.example/")) == (
        "Invalid arguments: url: unknown argument, not allowed"
    )
    assert ok(await call(tool))["status"] == 200


async def test_missing_and_mistyped_arguments_are_refused(
    plugins: Plugins, server: LocalServer
) -> None:
    tool = await build(plugins, get_item(server))
    assert error(await call(tool, page=1)) == "Invalid arguments: item_id: required"
    assert error(await call(tool, item_id="1", page="two")) == (
        "Invalid arguments: page: Input should be a valid integer, unable to parse string as an "
        "integer"
    )
    assert error(await call(tool, item_id="1", page=True)) == (
        "Invalid arguments: page: Value error, a number is wanted, not true"
    )
    assert server.seen == []


async def test_a_tool_built_for_checking_does_not_run(
    plugins: Plugins, server: LocalServer
) -> None:
    tool = await build(plugins, get_item(server), user_id=None)
    assert error(await call(tool, item_id="1")) == (
        "this tool was built for checking only and cannot run"
    )
    assert server.seen == []


# -- configs that do not load -------------------------------------------------

BASE = {"url": "https://api.example.com/items/{item_id}", "allowed_hosts": ["api.example.com"]}
ITEM = {"item_id": {"required": True}}


@pytest.mark.parametrize(
    ("config", "problems"),
    [
        (
            {**BASE, "allowed_hosts": ["example.com"], "args": ITEM},
            ["config.url: host 'api.example.com' is not in allowed_hosts (example.com)"],
        ),
        (
            {**BASE, "url": "ftp://api.example.com/items/{item_id}", "args": ITEM},
            ["config.url: scheme 'ftp' is not allowed; use http or https"],
        ),
        (
            {**BASE, "args": {}},
            ["config.url: placeholder {item_id} is not in args"],
        ),
        (
            {**BASE, "args": {**ITEM, "colour": {}}},
            ["config.args.colour: is not used by the url, query or body"],
        ),
        (
            {**BASE, "args": {**ITEM, "note": {}}, "body": {"note": "note"}},
            ["config.body: a GET request takes no body; use query"],
        ),
        (
            {**BASE, "method": "DELETE", "args": {**ITEM, "note": {}}, "body": {"note": "note"}},
            ["config.body: a DELETE request takes no body; use query"],
        ),
        (
            {**BASE, "args": {"item_id": {}}},
            [
                "config.args.item_id.required: the argument fills a path placeholder, so it "
                "must be required (true)"
            ],
        ),
        (
            {**BASE, "args": ITEM, "query": {"q": "search"}},
            ["config.query.q: 'search' is not in args"],
        ),
        (
            {**BASE, "url": "https://{sub}.example.com/items", "args": {"sub": {"required": True}}},
            ["config.url: placeholders are allowed in the path only; the host is fixed"],
        ),
        (
            {**BASE, "url": "https://api.example.com/items?id={item_id}", "args": ITEM},
            ["config.url: placeholders are allowed in the path only; use query for parameters"],
        ),
        (
            {**BASE, "url": "https://bob:pw@api.example.com/", "args": {}},
            ["config.url: must not hold a user name or password; put credentials in headers"],
        ),
        (
            {**BASE, "url": "https://[::1/items", "args": {}},
            ["config.url: not a valid URL (Invalid IPv6 URL)"],
        ),
        (
            {**BASE, "url": "/items", "args": {}},
            [
                "config.url: must be an absolute http or https URL, like "
                "https://api.example.com/items"
            ],
        ),
        (
            {**BASE, "args": ITEM, "headers": {"Host": "internal", "X-Key": "${not a name}"}},
            [
                "config.headers.Host: is set by the HTTP client and cannot be configured",
                "config.headers.X-Key: ${not a name} is not an environment variable reference; "
                "write ${NAME} with letters, digits and _",
            ],
        ),
        # Shape errors, from the config model.
        (
            {**BASE, "args": ITEM, "timeout": 61},
            ["config.timeout: Input should be less than or equal to 60"],
        ),
        (
            {**BASE, "args": ITEM, "method": "TRACE"},
            ["config.method: Input should be 'GET', 'POST', 'PUT', 'PATCH' or 'DELETE'"],
        ),
        ({**BASE, "args": ITEM, "retries": 3}, ["config.retries: Extra inputs are not permitted"]),
        (
            {**BASE, "allowed_hosts": [], "args": ITEM},
            ["config.allowed_hosts: List should have at least 1 item after validation, not 0"],
        ),
        (
            {**BASE, "allowed_hosts": ["https://api.example.com"], "args": ITEM},
            [
                "config.allowed_hosts[0]: 'https://api.example.com' is not a host; write a host "
                "name or IP address, optionally with a port: api.example.com, 127.0.0.1:8080, "
                "[::1]"
            ],
        ),
        (
            {**BASE, "args": ITEM, "headers": {"X Key": "1"}},
            ["config.headers.X Key.[key]: 'X Key' is not a header name (letters, digits and -)"],
        ),
        (
            {**BASE, "args": {"item_id": {"required": True, "type": "integer", "enum": ["a"]}}},
            ["config.args.item_id: enum values ['a'] are not of type 'integer'"],
        ),
    ],
)
async def test_configs_that_do_not_fit_are_reported_at_their_path(
    plugins: Plugins, config: dict[str, Any], problems: list[str]
) -> None:
    report = await load(plugins, config)
    assert report.tool is None
    assert [p.brief() for p in report.problems] == problems
    assert all(p.row_id == 7 and p.tool == "call_api" for p in report.problems)


def test_registering_imports_neither_httpx_nor_the_tool() -> None:
    code = (
        "import sys, chatwright_http_tool\n"
        "from chatwright.registry import LoadPolicy, Plugins\n"
        "p = Plugins(LoadPolicy())\n"
        "p.register(chatwright_http_tool, 'http_tool_probe')\n"
        "assert 'http' in p.collect('register_tool_types')\n"
        "print(sorted(m for m in ('httpx', 'chatwright_http_tool.tool') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
