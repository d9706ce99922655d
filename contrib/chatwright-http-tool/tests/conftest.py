"""Fixtures: the local HTTP server, the plugin registered with chatwright, a runtime."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import chatwright_http_tool
import pytest
from local_server import LocalServer, serving

from chatwright.registry import LoadPolicy, Plugins
from chatwright.runtime import Runtime
from chatwright.settings import Settings


@pytest.fixture(scope="session")
def server() -> Iterator[LocalServer]:
    with serving() as local:
        yield local


@pytest.fixture(autouse=True)
def _fresh_log(server: LocalServer) -> None:
    server.seen.clear()


@pytest.fixture(scope="session")
def plugins() -> Plugins:
    """The installed plugins; this one registered inline when it is not installed."""
    found = Plugins.load(LoadPolicy())
    if not any(info.name == "http_tool" for info in found.infos()):
        found.register(chatwright_http_tool, "http_tool")
    return found


@pytest.fixture
async def runtime(tmp_path: Path, plugins: Plugins) -> AsyncIterator[Runtime]:
    settings = Settings(storage={"url": f"sqlite+aiosqlite:///{tmp_path}/h.db"})  # type: ignore[arg-type, call-arg]
    rt = Runtime(settings, plugins)
    await rt.start(upgrade=True)
    try:
        yield rt
    finally:
        await rt.close()
