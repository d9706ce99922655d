"""Secrets in headers: only variables the settings list, only to their hosts, never echoed.

A hostile row tries to send chatwright's JWT secret, or any other variable of
the server's environment, to a host of its choosing (here the local server,
whose ``/echo`` answers with the headers it got). It must be refused when the
row is checked, before anything is sent; a secret that is allowed must not
come back to the model when the endpoint echoes it.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from local_server import LocalServer
from test_http_tool import build, call, error, load, ok

from chatwright.registry import Plugins
from chatwright.settings import Settings

JWT_SECRET = "the-server-jwt-secret-of-at-least-32-bytes"
TOKEN = "tok-3f9a7c21e5b8d4"


def allow(**secrets: list[str]) -> Settings:
    return Settings(plugins={"http": {"secrets": secrets}})


def echo(server: LocalServer, header: str, **extra: Any) -> dict[str, Any]:
    return {
        "url": f"{server.base}/echo",
        "allowed_hosts": ["127.0.0.1"],
        "headers": {"X-Leak": header},
        **extra,
    }


@pytest.fixture(autouse=True)
def _environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATWRIGHT_SERVER__JWT_SECRET", JWT_SECRET)
    monkeypatch.setenv("HTTP_TOOL_TEST_TOKEN", TOKEN)
    monkeypatch.setenv("HTTP_TOOL_UNLISTED", "unlisted-value")


@pytest.mark.parametrize(
    "reference", ["${CHATWRIGHT_SERVER__JWT_SECRET}", "${chatwright_server__jwt_secret}"]
)
async def test_a_row_cannot_send_chatwrights_own_secret(
    plugins: Plugins, server: LocalServer, reference: str
) -> None:
    report = await load(
        plugins, echo(server, reference), settings=allow(HTTP_TOOL_TEST_TOKEN=["127.0.0.1"])
    )
    assert report.tool is None
    [problem] = report.problems
    name = reference[2:-1]
    assert problem.brief() == (
        f"config.headers.X-Leak: ${{{name}}} is one of chatwright's own variables; http tools "
        "never send CHATWRIGHT_* variables"
    )
    assert "call_api" in str(problem) and "row 7" in str(problem)
    assert server.seen == []


async def test_listing_chatwrights_own_secret_in_the_settings_is_refused(
    plugins: Plugins, server: LocalServer
) -> None:
    listed = allow(CHATWRIGHT_SERVER__JWT_SECRET=["127.0.0.1"])
    report = await load(plugins, echo(server, "${CHATWRIGHT_SERVER__JWT_SECRET}"), settings=listed)
    assert report.tool is None
    assert [p.brief() for p in report.problems] == [
        "config: setting plugins.http.secrets.CHATWRIGHT_SERVER__JWT_SECRET is refused: http "
        "tools never send chatwright's own variables (CHATWRIGHT_*); remove it"
    ]
    assert server.seen == []


async def test_a_row_cannot_send_a_variable_the_settings_do_not_list(
    plugins: Plugins, server: LocalServer
) -> None:
    for settings in (Settings(), allow(HTTP_TOOL_TEST_TOKEN=["127.0.0.1"])):
        report = await load(plugins, echo(server, "${HTTP_TOOL_UNLISTED}"), settings=settings)
        assert report.tool is None
        assert [p.brief() for p in report.problems] == [
            "config.headers.X-Leak: ${HTTP_TOOL_UNLISTED} is not listed in "
            "[plugins.http.secrets]; list it there with the hosts it may be sent to: "
            'HTTP_TOOL_UNLISTED = ["<host>"]'
        ]
    assert server.seen == []


async def test_a_secret_goes_only_to_the_hosts_the_settings_bind_it_to(
    plugins: Plugins, server: LocalServer
) -> None:
    elsewhere = allow(HTTP_TOOL_TEST_TOKEN=["api.example.com"])
    report = await load(plugins, echo(server, "${HTTP_TOOL_TEST_TOKEN}"), settings=elsewhere)
    assert [p.brief() for p in report.problems] == [
        "config.headers.X-Leak: ${HTTP_TOOL_TEST_TOKEN} may be sent to api.example.com only "
        "([plugins.http.secrets]), but allowed_hosts has 127.0.0.1"
    ]
    # A row may not widen the binding with an extra allowed host, where a redirect could go.
    wider = echo(server, "${HTTP_TOOL_TEST_TOKEN}", allowed_hosts=["127.0.0.1", "evil.example"])
    report = await load(plugins, wider, settings=allow(HTTP_TOOL_TEST_TOKEN=["127.0.0.1"]))
    assert [p.brief() for p in report.problems] == [
        "config.headers.X-Leak: ${HTTP_TOOL_TEST_TOKEN} may be sent to 127.0.0.1 only "
        "([plugins.http.secrets]), but allowed_hosts has evil.example"
    ]
    # A binding to one port does not cover a row allowing every port of the host.
    one_port = allow(HTTP_TOOL_TEST_TOKEN=[f"127.0.0.1:{server.port}"])
    report = await load(plugins, echo(server, "${HTTP_TOOL_TEST_TOKEN}"), settings=one_port)
    assert "allowed_hosts has 127.0.0.1" in report.problems[0].reason
    pinned = echo(server, "${HTTP_TOOL_TEST_TOKEN}", allowed_hosts=[f"127.0.0.1:{server.port}"])
    await build(plugins, pinned, settings=one_port)
    assert server.seen == []


@pytest.mark.parametrize(
    "secrets",
    [
        {"HTTP_TOOL_TEST_TOKEN": ["127.0.0.1"]},
        # Read from CHATWRIGHT_PLUGINS__HTTP__SECRETS__HTTP_TOOL_TEST_TOKEN: lowercased.
        {"http_tool_test_token": ["127.0.0.1"]},
        # Read from CHATWRIGHT_PLUGINS__HTTP__SECRETS: the table's JSON text.
        '{"HTTP_TOOL_TEST_TOKEN": ["127.0.0.1"]}',
    ],
)
async def test_an_echoed_secret_is_redacted_from_the_result(
    plugins: Plugins, server: LocalServer, secrets: Any
) -> None:
    settings = Settings(plugins={"http": {"secrets": secrets}})
    tool = await build(plugins, echo(server, "Bearer ${HTTP_TOOL_TEST_TOKEN}"), settings=settings)
    message = await call(tool)
    assert server.seen[-1].headers["X-Leak"] == f"Bearer {TOKEN}"
    assert ok(message)["body"]["headers"]["X-Leak"] == "Bearer [redacted]"
    assert TOKEN not in message.text


async def test_an_echoed_secret_is_redacted_from_error_messages(
    plugins: Plugins, server: LocalServer
) -> None:
    settings = allow(HTTP_TOOL_TEST_TOKEN=["127.0.0.1"])
    config = echo(server, "${HTTP_TOOL_TEST_TOKEN}", url=f"{server.base}/echo?status=401")
    message = error(await call(await build(plugins, config, settings=settings)))
    assert message.startswith(f"GET {server.base}/echo answered 401 Unauthorized: ")
    assert '"X-Leak": "[redacted]"' in message
    assert TOKEN not in message


async def test_a_secret_cut_by_max_response_bytes_leaves_no_prefix(
    plugins: Plugins, server: LocalServer
) -> None:
    settings = allow(HTTP_TOOL_TEST_TOKEN=["127.0.0.1"])
    tool = await build(plugins, echo(server, "${HTTP_TOOL_TEST_TOKEN}"), settings=settings)
    full = ok(await call(tool))
    # Cut the echo in the middle of the secret: the part read must not show its start.
    head = json.dumps(full["body"]).split("[redacted]")[0]
    assert TOKEN not in head
    cut_at = len(head) + 8
    short = echo(server, "${HTTP_TOOL_TEST_TOKEN}", max_response_bytes=cut_at)
    message = await call(await build(plugins, short, settings=settings))
    assert TOKEN[:6] not in message.text
    assert "[redacted]" in message.text


async def test_json_escaped_secrets_are_redacted_too(
    plugins: Plugins, server: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    quoted = 'pa"ss\\word-1234'
    monkeypatch.setenv("HTTP_TOOL_TEST_TOKEN", quoted)
    settings = allow(HTTP_TOOL_TEST_TOKEN=["127.0.0.1"])
    tool = await build(plugins, echo(server, "${HTTP_TOOL_TEST_TOKEN}"), settings=settings)
    message = await call(tool)
    assert server.seen[-1].headers["X-Leak"] == quoted
    assert ok(message)["body"]["headers"]["X-Leak"] == "[redacted]"
    assert "word-1234" not in message.text


@pytest.mark.parametrize(
    ("table", "reason"),
    [
        (
            {"secret": {}},
            "unknown setting plugins.http.secret; the http plugin takes secrets, a table like "
            '[plugins.http.secrets] CATALOGUE_TOKEN = ["api.example.com"]',
        ),
        (
            {"secrets": {"HTTP_TOOL_TEST_TOKEN": "127.0.0.1"}},
            "setting plugins.http.secrets.HTTP_TOOL_TEST_TOKEN must be a non-empty list of the "
            'hosts the variable may be sent to, like ["api.example.com", "127.0.0.1:8080"] '
            "(got '127.0.0.1')",
        ),
        (
            {"secrets": "{not json"},
            "setting plugins.http.secrets is not a valid JSON object",
        ),
    ],
)
async def test_bad_plugin_settings_are_reported(
    plugins: Plugins, server: LocalServer, table: dict[str, Any], reason: str
) -> None:
    report = await load(plugins, echo(server, "x"), settings=Settings(plugins={"http": table}))
    assert report.tool is None
    assert report.problems[0].brief().startswith(f"config: {reason}")


@pytest.mark.parametrize(
    "secrets",
    [
        {"HTTP_TOOL_TEST_TOKEN": ["127.0.0.1"]},
        # Listed in the environment form: the name arrives lowercased.
        {"http_tool_test_token": ["127.0.0.1"]},
    ],
)
@pytest.mark.parametrize("spelt", ["${HTTP_TOOL_TEST_TOKEN}", "${http_tool_test_token}"])
async def test_a_row_cannot_send_another_variable_by_spelling_a_listed_one_in_another_case(
    plugins: Plugins,
    server: LocalServer,
    monkeypatch: pytest.MonkeyPatch,
    secrets: dict[str, list[str]],
    spelt: str,
) -> None:
    # The settings list HTTP_TOOL_TEST_TOKEN; the environment also has a lowercase twin.
    monkeypatch.setenv("http_tool_test_token", "unlisted-lowercase-variable")
    settings = Settings(plugins={"http": {"secrets": secrets}})
    tool = await build(plugins, echo(server, spelt), settings=settings)
    # Which one the settings mean cannot be told: nothing is sent.
    assert error(await call(tool)) == (
        f"header 'X-Leak' references {spelt[2:-1]}, and the environment has 2 variables "
        "of that name in different cases; leave one of them where chatwright runs"
    )
    assert server.seen == []
    # With one variable of the name, any spelling of it finds that one.
    monkeypatch.delenv("http_tool_test_token")
    tool = await build(plugins, echo(server, spelt), settings=settings)
    assert ok(await call(tool))["body"]["headers"]["X-Leak"] == "[redacted]"
    assert [s.headers["X-Leak"] for s in server.seen] == [TOKEN]
