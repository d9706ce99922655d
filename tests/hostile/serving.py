"""A real uvicorn server for the hostile tests that need their own app, bind or settings.

``conftest.make_server`` serves the JWT app on 127.0.0.1;
:func:`tests.harness.uvicorn_serving` serves any ASGI app (or an app factory's
import string) on any address; :func:`serving` serves the real app with the
example seeded. Servers are stopped when their block ends.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chatwright import testing
from chatwright.plugins.example import assistant as example
from chatwright.plugins.server.app import create_app
from chatwright.registry import Plugins
from chatwright.runtime import Runtime
from chatwright.settings import Settings
from tests.harness import uvicorn_serving


def settings_for(tmp_path: Path, plugins: Plugins | None = None, **values: Any) -> Settings:
    """Settings on a fresh SQLite file, the sweeper idle; ``values`` are merged per section."""
    base: dict[str, Any] = {
        "storage": {"url": f"sqlite+aiosqlite:///{tmp_path}/hostile-server.db"},
        "sessions": {"sweep_interval": 3600},
    }
    for section, keys in values.items():
        base[section] = {**base.get(section, {}), **keys}
    return testing.settings(plugins or Plugins.load(), **base)


@dataclass
class Served:
    port: int
    runtime: Runtime

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextlib.asynccontextmanager
async def serving(
    settings: Settings, plugins: Plugins | None = None, host: str = "127.0.0.1"
) -> AsyncIterator[Served]:
    """The real app for ``settings`` with the example seeded (model ``offline``)."""
    app = create_app(settings, plugins)
    async with uvicorn_serving(app, host) as port:
        runtime: Runtime = app.state.runtime
        await example.seed(runtime.storage, "offline:assistant")
        yield Served(port, runtime)
