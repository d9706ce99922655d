"""Responses and arguments that cannot be used are tool errors, never a failed turn.

An odd charset, JSON nested thousands of levels deep, a redirect to a port
that cannot exist, or a number argument that is not finite: each comes back
to the model as a readable error, the turn goes on, and a request that was
sent (anything but a GET) is in the audit log.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from local_server import LocalServer
from test_http_tool import Storage, build, call, error, ok

from chatwright.registry import Plugins
from chatwright.runtime import Runtime
from chatwright.settings import Settings

AGENT = "fetcher"
USER = "alice"


def endpoint(server: LocalServer, path: str, **extra: Any) -> dict[str, Any]:
    return {"url": f"{server.base}/{path}", "allowed_hosts": ["127.0.0.1"], **extra}


@pytest.mark.parametrize("charset", ["hex", "base64", "zlib_codec", "rot13"])
async def test_a_charset_that_is_no_text_encoding_is_an_error(
    plugins: Plugins, server: LocalServer, charset: str
) -> None:
    tool = await build(plugins, endpoint(server, f"charset?cs={charset}"))
    assert error(await call(tool)) == (
        f"GET {server.base}/charset answered with charset '{charset}', which is not a text encoding"
    )


@pytest.mark.parametrize(
    "charset",
    [
        *("utf-16", "utf-16-le", "utf-16-be", "utf-32", "cp037", "cp500", "utf-7", "undefined"),
        # A shift state, or second bytes that may be ASCII: the next bytes join the escape.
        *("iso-2022-jp", "iso-2022-kr", "hz", "shift_jis", "cp932", "big5", "gbk", "gb18030"),
    ],
)
async def test_a_charset_that_can_read_ascii_as_other_text_is_an_error(
    plugins: Plugins, server: LocalServer, charset: str
) -> None:
    tool = await build(plugins, endpoint(server, f"charset?cs={charset}"))
    assert error(await call(tool)) == (
        f"GET {server.base}/charset answered with charset '{charset}', which can read ASCII "
        "as other text; this tool reads UTF-8, EUC-JP, EUC-KR and single-byte charsets that "
        "keep ASCII as it is (ISO-8859-*, windows-125*, …)"
    )


@pytest.mark.parametrize(
    "charset", ["cp037", "cp500", "utf-16-le", "utf-16-be", "utf-32-le", "iso-2022-jp"]
)
async def test_an_echoed_secret_does_not_pass_scrambled_by_a_charset(
    plugins: Plugins, server: LocalServer, charset: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = "tok-3f9a7c21e5b8d4"
    monkeypatch.setenv("HTTP_TOOL_TEST_TOKEN", token)
    settings = Settings(plugins={"http": {"secrets": {"HTTP_TOOL_TEST_TOKEN": ["127.0.0.1"]}}})
    config = endpoint(
        server, f"charset-echo?cs={charset}", headers={"X-Key": "${HTTP_TOOL_TEST_TOKEN}"}
    )
    message = await call(await build(plugins, config, settings=settings))
    assert server.seen[-1].headers["X-Key"] == token  # sent, and echoed
    assert "can read ASCII as other text" in error(message)
    for codec in (charset, "utf-16-le", "utf-16-be", "cp037"):
        assert token.encode() not in message.text.encode(codec, errors="replace")


async def test_bytes_after_the_end_of_a_gzip_body_are_not_read(
    plugins: Plugins, server: LocalServer
) -> None:
    tool = await build(plugins, endpoint(server, "gzip-trailer?mb=64", timeout=20))
    start = time.monotonic()
    assert ok(await call(tool)) == {"status": 200, "body": "hello"}
    # Not a timing goal: reading the 64 MiB after the body takes about a minute.
    assert time.monotonic() - start < 15


@pytest.mark.parametrize(
    "charset", ["latin-1", "ascii", "utf-8", "windows-1252", "iso-8859-15", "koi8-r", "euc-jp"]
)
async def test_a_usual_charset_still_reads(
    plugins: Plugins, server: LocalServer, charset: str
) -> None:
    tool = await build(plugins, endpoint(server, f"charset?cs={charset}"))
    assert ok(await call(tool)) == {"status": 200, "body": "hello world"}


async def test_json_nested_too_deeply_is_an_error(plugins: Plugins, server: LocalServer) -> None:
    tool = await build(plugins, endpoint(server, "deep?n=5000"))
    assert error(await call(tool)) == (
        f"GET {server.base}/deep answered 200 with JSON nested more than 200 levels deep, "
        "which this tool does not read"
    )
    tool = await build(plugins, endpoint(server, "deep?n=201"))
    assert "nested more than 200 levels deep" in error(await call(tool))
    tool = await build(plugins, endpoint(server, "deep?n=200"))
    assert ok(await call(tool))["status"] == 200


async def test_a_redirect_to_a_port_out_of_range_is_refused(
    plugins: Plugins, server: LocalServer
) -> None:
    tool = await build(plugins, endpoint(server, "redirect?to=http://127.0.0.1:99999/"))
    assert error(await call(tool)) == "redirect to port 99999 refused: not a valid port"


def weighed(server: LocalServer) -> dict[str, Any]:
    """A POST of a number argument ``weight`` in the body."""
    return endpoint(
        server,
        "echo",
        method="POST",
        args={"weight": {"type": "number"}},
        body={"weight": "weight"},
    )


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", float("nan"), float("inf")])
async def test_a_number_argument_must_be_finite(
    plugins: Plugins, server: LocalServer, value: Any
) -> None:
    config = weighed(server)
    tool = await build(plugins, config)
    message = error(await call(tool, weight=value))
    assert message.startswith("Invalid arguments: weight: ")
    assert "a finite number is wanted" in message
    assert server.seen == []
    assert ok(await call(tool, weight=2.5))["body"]["body"] == {"weight": 2.5}


async def test_a_post_whose_response_cannot_be_read_is_in_the_audit_log(
    plugins: Plugins, server: LocalServer
) -> None:
    storage = Storage()
    tool = await build(
        plugins, endpoint(server, "charset?cs=utf-16", method="POST"), storage=storage
    )
    reason = error(await call(tool))
    assert [s.method for s in server.seen] == ["POST"]
    [entry] = storage.audit.entries
    assert (entry.outcome, entry.error) == ("error", reason)


async def test_an_unforeseen_failure_is_an_error_and_is_in_the_audit_log(
    plugins: Plugins, server: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chatwright_http_tool import tool as tool_module

    def broken(self: Any) -> Any:
        raise RuntimeError("something nobody foresaw")

    monkeypatch.setattr(tool_module.Reply, "body", broken)
    storage = Storage()
    tool = await build(plugins, endpoint(server, "echo", method="POST"), storage=storage)
    reason = error(await call(tool))
    assert reason == f"POST {server.base}/echo failed: RuntimeError: something nobody foresaw"
    [entry] = storage.audit.entries
    assert (entry.outcome, entry.error) == ("error", reason)


# -- in a chat -----------------------------------------------------------------


async def chat_once(runtime: Runtime, config: dict[str, Any], args: dict[str, Any]) -> Any:
    await runtime.storage.agents.create(
        AGENT,
        system_prompt="You fetch things.",
        model="scripted:x",
        model_settings={
            "responses": [{"tool_calls": [{"name": "fetch", "args": args}]}, {"content": "done"}]
        },
    )
    await runtime.storage.tools.add(AGENT, "fetch", type="http", config=config)
    session = await runtime.storage.sessions.open(USER, AGENT)
    return await runtime.chat(USER, AGENT, session.chat_id, "fetch")


@pytest.mark.parametrize(
    "path",
    [
        "charset?cs=utf-16",
        "charset?cs=hex",
        "charset?cs=rot13",
        "deep?n=5000",
        "redirect?to=http%3A%2F%2F127.0.0.1%3A99999%2F",
    ],
)
async def test_in_a_chat_a_hostile_response_is_a_tool_error_and_the_turn_goes_on(
    runtime: Runtime, server: LocalServer, path: str
) -> None:
    turn = await chat_once(runtime, endpoint(server, path), {})
    assert turn.response == "done"
    [record] = turn.tool_calls
    assert record.error is True


async def test_in_a_chat_a_sent_post_with_an_unreadable_response_is_audited(
    runtime: Runtime, server: LocalServer
) -> None:
    turn = await chat_once(runtime, endpoint(server, "charset?cs=utf-16", method="POST"), {})
    assert turn.response == "done"
    assert [s.method for s in server.seen] == ["POST"]
    [entry] = await runtime.storage.audit.list(USER)
    assert entry.outcome == "error"
    assert entry.error == turn.tool_calls[0].result


async def test_in_a_chat_a_nan_argument_is_a_tool_error(
    runtime: Runtime, server: LocalServer
) -> None:
    config = weighed(server)
    turn = await chat_once(runtime, config, {"weight": "NaN"})
    assert turn.response == "done"
    [record] = turn.tool_calls
    assert record.error is True
    assert str(record.result).startswith("Invalid arguments: weight: ")
    assert server.seen == []
