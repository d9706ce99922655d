"""What the routes depend on: the app's runtime, settings and metrics, and who is calling.

:func:`create_app <chatwright.plugins.server.app.create_app>` keeps the one
runtime of the process in ``app.state``; the routes reach it through these
dependencies. The bearer scheme is declared with ``auto_error=False`` so that
``/docs`` offers to authorize while local mode needs no token at all.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from chatwright.errors import UnknownAgentError
from chatwright.plugins.server.auth import Principal, bearer, principal_from_token
from chatwright.plugins.server.metrics import ServerMetrics
from chatwright.runtime import Runtime
from chatwright.settings import Settings

bearer_scheme = HTTPBearer(
    auto_error=False,
    description="A JWT (server.auth = 'jwt'); not needed with server.auth = 'local'.",
)


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def settings_of(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def metrics_of(request: Request) -> ServerMetrics:
    metrics: ServerMetrics = request.app.state.metrics
    return metrics


def principal(
    request: Request,
    # Declares the scheme in OpenAPI; the header itself is read as it always was, below.
    _: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)],
) -> Principal:
    return principal_from_token(settings_of(request), bearer(request.headers.get("authorization")))


async def agent_exists(runtime: Runtime, name: str) -> None:
    if await runtime.storage.agents.get(name) is None:
        raise UnknownAgentError(name)


RuntimeDep = Annotated[Runtime, Depends(runtime_of)]
SettingsDep = Annotated[Settings, Depends(settings_of)]
MetricsDep = Annotated[ServerMetrics, Depends(metrics_of)]
User = Annotated[Principal, Depends(principal)]
