"""Fixtures: the plugin registered with chatwright, the test MCP server, runtimes."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import chatwright_mcp
import pytest

from chatwright.registry import LoadPolicy, Plugins
from chatwright.runtime import Runtime
from chatwright.settings import load_settings

HERE = Path(__file__).parent
SERVER_SCRIPT = str(HERE / "mcp_server.py")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def ipv6_loopback() -> bool:
    """Whether ::1 can be bound here."""
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


def wait_for_port(
    port: int, process: subprocess.Popen[Any], timeout: float = 30, host: str = "127.0.0.1"
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}")
        try:
            socket.create_connection((host, port), 0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port}")


def stop(process: subprocess.Popen[Any]) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


@pytest.fixture(scope="session")
def plugins() -> Plugins:
    """The installed plugins; this one registered inline when it is not installed."""
    found = Plugins.load(LoadPolicy())
    if not any(info.name == "mcp" for info in found.infos()):
        found.register(chatwright_mcp, "mcp")
    return found


@pytest.fixture(scope="session")
def http_server() -> Iterator[str]:
    """The test MCP server over streamable HTTP; its URL."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, SERVER_SCRIPT, "http", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, process)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        stop(process)


@pytest.fixture(scope="session")
def http_server_ipv6() -> Iterator[str]:
    """The test MCP server over streamable HTTP on ::1 only; its URL."""
    port = free_port("::1")
    process = subprocess.Popen(
        [sys.executable, SERVER_SCRIPT, "http", str(port), "::1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, process, host="::1")
        yield f"http://[::1]:{port}/mcp"
    finally:
        stop(process)


@pytest.fixture
def pidfile(tmp_path: Path) -> Path:
    """Where each start of the stdio test server appends its process id."""
    return tmp_path / "pids"


def stdio_spec(pidfile: Path, **more: Any) -> dict[str, Any]:
    return {"command": sys.executable, "args": [SERVER_SCRIPT, "stdio", str(pidfile)], **more}


def pids(pidfile: Path) -> list[int]:
    if not pidfile.exists():
        return []
    return [int(line) for line in pidfile.read_text().split()]


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as status:
            return "\nState:\tZ" not in status.read()
    except (FileNotFoundError, ProcessLookupError):
        # Gone before it was opened, or between opening and reading.
        return False


async def make_runtime(tmp_path: Path, plugins: Plugins, mcp: dict[str, Any]) -> Runtime:
    settings = load_settings(
        None,
        {"storage": {"url": f"sqlite+aiosqlite:///{tmp_path}/m.db"}, "mcp": mcp},
        plugins,
    )
    runtime = Runtime(settings, plugins)
    await runtime.start(upgrade=True)
    return runtime


@pytest.fixture
async def runtime_for(tmp_path: Path, plugins: Plugins) -> AsyncIterator[Any]:
    """Make a runtime with the given ``[mcp]`` settings; closed after the test."""
    made: list[Runtime] = []

    async def make(mcp: dict[str, Any]) -> Runtime:
        runtime = await make_runtime(tmp_path, plugins, mcp)
        made.append(runtime)
        return runtime

    yield make
    for runtime in made:
        await runtime.close()
