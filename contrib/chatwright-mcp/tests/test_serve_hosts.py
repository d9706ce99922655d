"""``chatwright mcp serve --http --host``: IPv6, hosts that are none, addresses it cannot bind,
and local mode on every loopback address."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from conftest import free_port, ipv6_loopback, stop

# The fixtures of test_serve: a served database, and the CLI run against it.
from test_serve import (  # noqa: F401
    AGENT,
    CHATWRIGHT,
    Served,
    cli,
    client,
    initialize_body,
    served,
    token,
)

ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def wait_for(host: str, port: int, process: subprocess.Popen[Any], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}")
        try:
            socket.create_connection((host, port), 0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {host} port {port}")


@contextmanager
def serving(database: Served, host: str) -> Iterator[str]:
    """``mcp serve --http --host HOST`` running; its URL."""
    port = free_port()
    options = ["--agent", AGENT, "--http", "--host", host, "--port", str(port)]
    process = subprocess.Popen(
        [*CHATWRIGHT, "mcp", "serve", *options],
        env=database.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(host, port, process)
        shown = f"[{host}]" if ":" in host else host
        yield f"http://{shown}:{port}/mcp"
    except RuntimeError:
        stop(process)
        assert process.stderr is not None
        raise AssertionError(process.stderr.read().decode()) from None
    finally:
        stop(process)


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback here")
async def test_jwt_users_are_served_on_the_ipv6_loopback(served: Served) -> None:  # noqa: F811
    with serving(served, "::1") as url:
        async with client(url, token("alice")) as alice:
            listed = await alice.list_tools()
        assert "add_note" in {t.name for t in listed.tools}
        async with httpx.AsyncClient(timeout=30) as anonymous:
            refused = await anonymous.post(url, json=initialize_body(), headers=ACCEPT)
        assert refused.status_code == 401


NO_HOST = "is not an IP address or a host name; give one like 127.0.0.1, ::1, 0.0.0.0 or localhost"


@pytest.mark.parametrize(
    ("host", "message"),
    [
        ("bad host", NO_HOST),
        ("999.1.1.1", NO_HOST),
        ("http://127.0.0.1", NO_HOST),
        ("-x", NO_HOST),
        ("a..b", NO_HOST),
        (
            "fe80::1%eth0",
            "has a zone (%eth0), which the server's URL cannot hold; give an address without "
            "one, or a host name",
        ),
    ],
)
def test_a_host_that_cannot_be_served_is_refused_in_one_line(
    served: Served,  # noqa: F811
    host: str,
    message: str,
) -> None:
    done = cli(served, "mcp", "serve", "--agent", AGENT, "--http", "--host", host)
    assert done.returncode == 1
    assert done.stderr.strip() == f"Error: --host {host!r} {message}"


def test_an_address_that_cannot_be_bound_is_one_line(served: Served) -> None:  # noqa: F811
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = cli(served, "mcp", "serve", "--agent", AGENT, "--http", "--port", str(port))
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"Error: cannot serve on 127.0.0.1:{port}: Address already in use; give another "
        "--host or --port"
    )


def test_local_mode_refuses_a_foreign_host_on_any_loopback_address(
    served: Served,  # noqa: F811
) -> None:
    served.env["CHATWRIGHT_SERVER__AUTH"] = "local"
    # All of 127.0.0.0/8 is loopback (Linux answers on every address of it).
    with serving(served, "127.0.0.2") as url:
        port = url.split(":")[2].split("/")[0]
        own = httpx.post(url, json=initialize_body(), headers=ACCEPT, timeout=30)
        assert own.status_code == 200, own.text
        for headers in [
            {"Host": f"attacker.example:{port}"},
            {"Origin": "http://attacker.example"},
        ]:
            response = httpx.post(
                url, json=initialize_body(), headers={**ACCEPT, **headers}, timeout=30
            )
            assert response.status_code in {400, 403, 421}, (headers, response.status_code)
