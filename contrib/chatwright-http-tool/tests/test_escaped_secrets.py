"""An echoed secret is redacted however the server escapes it.

Servers escape JSON differently from Python: PHP writes ``/`` as ``\\/``, Go
writes ``&``, ``<`` and ``>`` as ``\\u0026``, ``\\u003c`` and ``\\u003e``, and
percent-encoding may use lowercase hex. The secret is redacted in each of
these spellings, in error messages, text bodies, and the audit log.
"""

from __future__ import annotations

import json
import re

import pytest
from chatwright_http_tool.redaction import MARK, Redactor
from local_server import LocalServer
from test_http_tool import ALLOW_TOKEN, Storage, build, call, error, ok

from chatwright.registry import Plugins

TOKEN = "eyJhbGciOi/JIUzI1NiJ9+abc/def=="  # base64: holds / and +
PHP_ESCAPED = TOKEN.replace("/", "\\/")


def php_echo(server: LocalServer, query: str = "", method: str = "GET") -> dict[str, object]:
    return {
        "method": method,
        "url": f"{server.base}/php-echo{query}",
        "allowed_hosts": ["127.0.0.1"],
        "headers": {"Authorization": "Bearer ${HTTP_TOOL_TEST_TOKEN}"},
    }


@pytest.fixture(autouse=True)
def token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_TOOL_TEST_TOKEN", TOKEN)


async def test_a_slash_escaped_echo_in_an_error_is_redacted(
    plugins: Plugins, server: LocalServer
) -> None:
    storage = Storage()
    tool = await build(
        plugins, php_echo(server, method="POST"), settings=ALLOW_TOKEN, storage=storage
    )
    message = error(await call(tool))
    assert server.seen[-1].headers["Authorization"] == f"Bearer {TOKEN}"
    assert message == (
        f"POST {server.base}/php-echo answered 401 Unauthorized: "
        '{"error":"unauthorized","got":"Bearer [redacted]"}'
    )
    [entry] = storage.audit.entries
    assert entry.error == message


async def test_a_slash_escaped_echo_in_a_text_body_is_redacted(
    plugins: Plugins, server: LocalServer
) -> None:
    tool = await build(plugins, php_echo(server, "?status=200&ct=text/plain"), settings=ALLOW_TOKEN)
    body = ok(await call(tool))["body"]
    assert body == '{"error":"unauthorized","got":"Bearer [redacted]"}'


async def test_a_go_escaped_echo_is_redacted(
    plugins: Plugins, server: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_TOOL_TEST_TOKEN", "k3y&s3cr3t<x>")
    config = {
        "url": f"{server.base}/go-echo",
        "allowed_hosts": ["127.0.0.1"],
        "headers": {"X-Key": "${HTTP_TOOL_TEST_TOKEN}"},
    }
    tool = await build(plugins, config, settings=ALLOW_TOKEN)
    message = error(await call(tool))
    assert message.endswith('{"error":"bad key","got":"[redacted]"}'), message
    assert "s3cr3t" not in message


@pytest.mark.parametrize(
    "spelling",
    [
        TOKEN,
        PHP_ESCAPED,
        json.dumps(TOKEN)[1:-1],
        "".join(f"\\u{ord(c):04x}" for c in TOKEN),
        "".join(f"\\u{ord(c):04X}" for c in TOKEN),
        TOKEN.replace("/", "%2f").replace("+", "%2b").replace("=", "%3d"),
        TOKEN.replace("/", "%2F").replace("+", "%2B").replace("=", "%3D"),
        TOKEN.replace("/", "\\u002F", 1),
    ],
)
def test_every_spelling_is_redacted(spelling: str) -> None:
    redactor = Redactor([TOKEN])
    assert redactor.text(f"a {spelling} b") == f"a {MARK} b"


def test_json_escapes_of_other_characters_are_redacted() -> None:
    secret = 'q"u\\o\tt😀e é'
    redactor = Redactor([secret])
    for spelling in (
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        "".join(f"\\u{ord(c):04x}" if ord(c) < 0x10000 else "\\ud83d\\ude00" for c in secret),
        "q%22u%5Co%09t%F0%9F%98%80e+%c3%a9",
    ):
        assert redactor.text(f"<{spelling}>") == f"<{MARK}>", spelling


def test_other_text_is_left_alone() -> None:
    redactor = Redactor([TOKEN])
    text = "eyJhbGciOi JIUzI1NiJ9 abc def== \\/ \\u002f"
    assert redactor.text(text) == text


def test_a_body_cut_in_the_middle_of_a_secret_spelled_any_way_shows_none_of_it() -> None:
    """The cut end was matched against Python's own spellings only: a secret echoed as Go
    escapes it (``\\u0026``), or percent-encoded in lower case, and cut by
    ``max_response_bytes`` in its middle, showed its first part to the model."""
    from chatwright_http_tool.redaction import MARK, Redactor

    secret = "k3y&s3cr3t<x>/ABCDEFGH é\U0001f600z"
    go = secret.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
    lower = "".join(
        c if c.isalnum() and c.isascii() else f"%{b:02x}" for c in secret for b in c.encode()
    )
    upper = re.sub("%[0-9a-f]{2}", lambda m: m[0].upper(), lower)
    spellings = [secret, go, lower, upper, json.dumps(secret)[1:-1]]
    redactor = Redactor([secret])
    for spelled in spellings:
        for cut in range(1, len(spelled)):
            shown = redactor.cut_text("got=" + spelled[:cut])
            assert shown == "got=" + MARK, (spelled, cut, shown)
    # Text that does not end with a secret's start is left as it is (an escape cut short
    # at the very end may start any character: it is taken as a secret's start).
    for text in ("got=nothing", "a\\u0041b", "100% sure", "k3y&s3cr3X"):
        assert redactor.cut_text(text) == text, text
    assert redactor.cut_text("cut at 100%") == "cut at 100" + MARK
