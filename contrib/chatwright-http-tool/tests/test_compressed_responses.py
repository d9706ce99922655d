"""Compressed responses: ``max_response_bytes`` bounds the decompressed bytes.

The tool asks for uncompressed bodies (``Accept-Encoding: identity``). A body
compressed all the same with one layer of gzip or deflate is decompressed a
bounded step at a time and cut at ``max_response_bytes`` like any long body;
stacked or other codings are refused with a tool error. A small compressed
body that expands to many megabytes never expands in memory.
"""

from __future__ import annotations

import tracemalloc

import pytest
from local_server import LocalServer
from test_http_tool import build, call, error, ok

from chatwright.registry import Plugins

MIB = 1 << 20


def encoded(server: LocalServer, coding: str, size: int, cap: int = 20_000) -> dict[str, object]:
    return {
        "url": f"{server.base}/encoded?coding={coding}&size={size}",
        "allowed_hosts": ["127.0.0.1"],
        "max_response_bytes": cap,
    }


async def test_the_tool_asks_for_uncompressed_responses(
    plugins: Plugins, server: LocalServer
) -> None:
    tool = await build(plugins, {"url": f"{server.base}/echo", "allowed_hosts": ["127.0.0.1"]})
    ok(await call(tool))
    assert server.seen[-1].headers["Accept-Encoding"] == "identity"


@pytest.mark.parametrize("coding", ["gzip", "deflate", "raw-deflate"])
async def test_a_body_compressed_all_the_same_is_read(
    plugins: Plugins, server: LocalServer, coding: str
) -> None:
    tool = await build(plugins, encoded(server, coding, 1000))
    assert ok(await call(tool)) == {"status": 200, "body": "x" * 1000}


async def test_a_compressed_body_is_cut_at_max_response_bytes_once_decompressed(
    plugins: Plugins, server: LocalServer
) -> None:
    tool = await build(plugins, encoded(server, "gzip", 5000, cap=100))
    assert ok(await call(tool)) == {
        "status": 200,
        "body": "x" * 100,
        "truncated": "the response is longer than 100 bytes (max_response_bytes); "
        "only the start was read",
    }


async def test_a_small_body_expanding_to_megabytes_is_never_expanded_in_memory(
    plugins: Plugins, server: LocalServer
) -> None:
    # About 32 KB on the wire, 32 MiB once decompressed.
    tool = await build(plugins, encoded(server, "gzip", 32 * MIB, cap=100))
    tracemalloc.start()
    try:
        message = await call(tool)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert ok(message)["body"] == "x" * 100
    assert peak < 4 * MIB, f"{peak / MIB:.0f} MiB allocated for 100 bytes read"


@pytest.mark.parametrize(
    ("coding", "label"), [("gzip,gzip", "gzip, gzip"), ("deflate,gzip", "deflate, gzip")]
)
async def test_stacked_compression_is_refused(
    plugins: Plugins, server: LocalServer, coding: str, label: str
) -> None:
    tool = await build(plugins, encoded(server, coding, 32 * MIB, cap=100))
    assert error(await call(tool)) == (
        f"GET {server.base}/encoded answered with a body compressed as '{label}', which this "
        "tool does not read; it asks for uncompressed responses (Accept-Encoding: identity)"
    )


async def test_an_unknown_coding_is_refused(plugins: Plugins, server: LocalServer) -> None:
    tool = await build(plugins, encoded(server, "compress", 1000))
    assert error(await call(tool)).startswith(
        f"GET {server.base}/encoded answered with a body compressed as 'compress', "
    )


async def test_a_damaged_compressed_body_is_an_error(plugins: Plugins, server: LocalServer) -> None:
    # The label says x-gzip, the bytes are plain text.
    tool = await build(plugins, encoded(server, "x-gzip", 1000))
    assert error(await call(tool)).startswith(
        f"GET {server.base}/encoded answered with a body that is not valid x-gzip data ("
    )
