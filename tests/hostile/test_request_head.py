"""Oversized request heads against the real ``chatwright serve``.

uvicorn takes its HTTP parser from what is installed: with httptools it reads a
head of any size (one header of megabytes, or tens of thousands of headers)
into memory before the application sees it. The server keeps h11, which refuses
a head still incomplete past 16 KB (uvicorn's ``h11_max_incomplete_event_size``),
whatever else is installed; the test extra installs httptools
so that this is checked where uvicorn would otherwise pick it.

h11's bound holds only for a head that arrives in pieces: one that comes in one
read of the connection (up to some 128 KB here) was served whole. The
application refuses any head over 16 KiB itself, 431 with the usual error body.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import socket
from pathlib import Path

import pytest

from tests.harness import ServerProcess, clean_env


def _answer(port: int, raw: bytes) -> bytes:
    """The first bytes the server answers to ``raw`` (what it sent before closing)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        # Closed on us mid-send: what it answered is still there to read.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            conn.sendall(raw)
        chunks = []
        while True:
            try:
                data = conn.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            chunks.append(data)
        return b"".join(chunks)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> ServerProcess:
    tmp: Path = tmp_path_factory.mktemp("head")
    env = clean_env(CHATWRIGHT_STORAGE__URL=f"sqlite+aiosqlite:///{tmp / 'head.db'}")
    served = ServerProcess(cwd=tmp, env=env)
    try:
        served.wait_ready()
        yield served  # type: ignore[misc]
    finally:
        served.stop()


def test_httptools_is_installed_so_the_choice_is_tested() -> None:
    assert importlib.util.find_spec("httptools") is not None


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param(b"X-Big: " + b"a" * (2 * 1024 * 1024) + b"\r\n", id="one header of 2 MB"),
        pytest.param(b"".join(b"X-%d: a\r\n" % i for i in range(20_000)), id="20,000 headers"),
    ],
)
def test_an_oversized_head_is_refused_and_the_server_serves_on(
    server: ServerProcess, extra: bytes
) -> None:
    host = f"Host: 127.0.0.1:{server.port}\r\n".encode()
    answer = _answer(server.port, b"GET /healthz HTTP/1.1\r\n" + host + extra + b"\r\n")
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    after = _answer(server.port, b"GET /healthz HTTP/1.1\r\n" + host + b"Connection: close\r\n\r\n")
    assert after.startswith(b"HTTP/1.1 200 "), after[:200]
    assert "Traceback" not in server.log()


def test_a_head_of_ordinary_size_is_served(server: ServerProcess) -> None:
    host = f"Host: 127.0.0.1:{server.port}\r\n".encode()
    extra = b"X-Fine: " + b"a" * 8000 + b"\r\nConnection: close\r\n"
    answer = _answer(server.port, b"GET /healthz HTTP/1.1\r\n" + host + extra + b"\r\n")
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param(b"X-Big: " + b"a" * 20_000 + b"\r\n", id="one header of 20 KB"),
        pytest.param(b"X-Big: " + b"a" * 100_000 + b"\r\n", id="one header of 100 KB"),
        pytest.param(b"".join(b"X-%d: a\r\n" % i for i in range(3_000)), id="3,000 headers"),
    ],
)
def test_a_head_over_the_bound_in_one_read_is_refused_431(
    server: ServerProcess, extra: bytes
) -> None:
    host = f"Host: 127.0.0.1:{server.port}\r\n".encode()
    raw = b"GET /healthz HTTP/1.1\r\n" + host + extra + b"Connection: close\r\n\r\n"
    answer = _answer(server.port, raw)
    status = answer.split(b"\r\n", 1)[0]
    # Past what one read holds, h11 may still refuse it first (400, plain text).
    assert status.startswith((b"HTTP/1.1 431 ", b"HTTP/1.1 400 ")), answer[:200]
    if len(extra) < 64_000:
        assert status.startswith(b"HTTP/1.1 431 "), answer[:200]
        body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
        assert "at most 16,384 are served" in body["error"], body
    assert "Traceback" not in server.log()


def test_a_long_query_string_counts_in_the_head(server: ServerProcess) -> None:
    host = f"Host: 127.0.0.1:{server.port}\r\n".encode()
    target = b"/healthz?x=" + b"a" * 17_000
    raw = b"GET " + target + b" HTTP/1.1\r\n" + host + b"Connection: close\r\n\r\n"
    assert _answer(server.port, raw).startswith(b"HTTP/1.1 431 ")
