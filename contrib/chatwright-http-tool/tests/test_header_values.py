"""Header values the HTTP client would refuse are caught before any call.

A configured value that begins or ends with a space or a tab is refused by
the row check, at its path; a ``${VAR}`` whose value does is a tool error
naming the variable and the header, never showing the value.
"""

from __future__ import annotations

import pytest
from local_server import LocalServer
from test_http_tool import ALLOW_TOKEN, build, call, error, load, ok

from chatwright.registry import Plugins


def echo(server: LocalServer, value: str) -> dict[str, object]:
    return {
        "url": f"{server.base}/echo",
        "allowed_hosts": ["127.0.0.1"],
        "headers": {"X-Client": value},
    }


@pytest.mark.parametrize("value", ["chatwright ", " chatwright", "\tchatwright", "chatwright\t"])
async def test_surrounding_whitespace_is_refused_by_the_check(
    plugins: Plugins, server: LocalServer, value: str
) -> None:
    report = await load(plugins, echo(server, value))
    assert not report.ok
    assert [p.brief() for p in report.problems] == [
        "config.headers.X-Client: must not begin or end with a space or a tab"
    ]


async def test_inner_whitespace_is_allowed(plugins: Plugins, server: LocalServer) -> None:
    tool = await build(plugins, echo(server, "chatwright \t 1.0"))
    assert ok(await call(tool))["body"]["headers"]["X-Client"] == "chatwright \t 1.0"


@pytest.mark.parametrize("secret", ["tok-secret-1 ", "\ttok-secret-1"])
async def test_a_variable_with_surrounding_whitespace_is_a_clear_error(
    plugins: Plugins, server: LocalServer, monkeypatch: pytest.MonkeyPatch, secret: str
) -> None:
    monkeypatch.setenv("HTTP_TOOL_TEST_TOKEN", secret)
    tool = await build(plugins, echo(server, "${HTTP_TOOL_TEST_TOKEN}"), settings=ALLOW_TOKEN)
    message = error(await call(tool))
    assert message == (
        "the environment variable HTTP_TOOL_TEST_TOKEN (header 'X-Client') begins or ends "
        "with a space or a tab"
    )
    assert "tok-secret-1" not in message
    assert server.seen == []
