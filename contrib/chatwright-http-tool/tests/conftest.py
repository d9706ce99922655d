"""Fixtures: the local HTTP server, and the plugin registered with chatwright."""

from __future__ import annotations

from collections.abc import Iterator

import chatwright_http_tool
import pytest
from local_server import LocalServer, serving

from chatwright.registry import LoadPolicy, Plugins


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
