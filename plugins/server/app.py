"""The HTTP server: a JSON API over the runtime, streaming turns, and the web chat page.

:func:`create_app` builds a FastAPI application around one :class:`Runtime`
and wires the parts together: the lifespan (:mod:`.lifespan`), the error
handlers (:mod:`.errors`), the body size limit (:mod:`.limits`), the guard of
local mode (:mod:`.loopback`) and one router per resource (:mod:`.routes`),
each reading JSON bodies with :class:`~.dependencies.JSONRoute` (a key given
twice is refused).
Every error a client can cause is answered as JSON ``{"error": "..."}`` with
a 4xx status; a failing model gives 502 (the human message is kept), a
database that cannot be reached gives 503. OpenAPI is served at ``/docs``
(:mod:`.docs_pages`).
"""

from __future__ import annotations

import json

from fastapi import FastAPI

from chatwright import __version__
from chatwright.plugins.server import docs_pages, errors
from chatwright.plugins.server.dependencies import JSONRoute
from chatwright.plugins.server.headers import SecurityHeaders
from chatwright.plugins.server.lifespan import lifespan
from chatwright.plugins.server.limits import BodyLimit, OneValueEach, body_limit
from chatwright.plugins.server.loopback import LocalOnly
from chatwright.plugins.server.metrics import ServerMetrics
from chatwright.plugins.server.routes import (
    admin,
    agents,
    audit,
    chats,
    health,
    me,
    pages,
    pending,
    sessions,
    usage,
)
from chatwright.plugins.server.settings import ServerSettings
from chatwright.plugins.server.tool_checks import ToolChecks
from chatwright.registry import Plugins
from chatwright.runtime import Runtime
from chatwright.settings import Settings


def create_app(settings: Settings, plugins: Plugins | None = None) -> FastAPI:
    runtime = Runtime(settings, plugins)
    app = FastAPI(
        title="chatwright",
        version=__version__,
        lifespan=lifespan(runtime),
        description="Chat with agents whose configuration lives in a database.",
        # Served by docs_pages, with their assets, instead of from a CDN.
        docs_url=None,
        redoc_url=None,
        # What every route may answer before it runs (limits.OneValueEach).
        responses=errors.responses(400, 422, 431),
    )
    app.state.runtime = runtime
    app.state.settings = settings
    app.state.metrics = ServerMetrics()
    app.state.tool_checks = ToolChecks()
    # Routes added to the app itself read JSON bodies as every router's do.
    app.router.route_class = JSONRoute
    errors.install(app)
    docs_pages.install(app)
    # Both run before routing, so neither a body nor a foreign Host reaches authentication.
    app.add_middleware(BodyLimit, limit=body_limit(settings))
    app.add_middleware(OneValueEach)
    server = settings.section(ServerSettings)
    if server.auth == "local":
        app.add_middleware(LocalOnly, allowed_hosts=server.allowed_hosts)
    routers = (pages, health, sessions, chats, pending, audit, agents, admin, usage, me)
    for module in routers:
        app.include_router(module.router)
    # Added last, so outermost: the other middlewares' answers carry the headers too.
    app.add_middleware(SecurityHeaders)
    return app


def app_from_environment() -> FastAPI:
    """The application for ``uvicorn --factory`` (and ``serve --workers N``)."""
    import os

    from chatwright.settings import load_settings

    overrides = json.loads(os.environ.get("CHATWRIGHT_SERVE_OVERRIDES", "{}"))
    return create_app(load_settings(overrides=overrides))
