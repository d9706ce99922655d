"""What the routes depend on: the app's runtime, settings and metrics, and who is calling.

:func:`create_app <chatwright.plugins.server.app.create_app>` keeps the one
runtime of the process in ``app.state``; the routes reach it through these
dependencies. The bearer scheme is declared with ``auto_error=False`` so that
``/docs`` offers to authorize while local mode needs no token at all.

The dependencies are coroutines: FastAPI runs a plain function dependency in
its thread pool, a round trip through a worker thread for each one on every
request. Only verifying a token against a JWKS, which may fetch it over the
network or read it from a file, still goes to the thread pool.

Every router's routes are :class:`JSONRoute`: FastAPI reads their JSON bodies
through :class:`JSONBodyRequest`, which refuses an object giving a key twice
(:func:`chatwright.bundles.loads`), anywhere in the body, before the body is
validated or any dependency runs: 422 naming the key and its JSON path. A route
that takes no body refuses one that is not empty, ``{}`` or ``null`` (422), read
as strictly, instead of acting as if nothing had been sent.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, Request, Response, Security
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from chatwright.bundles import loads
from chatwright.errors import InvalidInputError, UnknownAgentError
from chatwright.plugins.server.auth import (
    Principal,
    bearer,
    principal_from_token,
    verification_may_block,
)
from chatwright.plugins.server.metrics import ServerMetrics
from chatwright.plugins.server.settings import ServerSettings
from chatwright.runtime import Runtime
from chatwright.settings import Settings

BODY = "request body"
"""How an error about the request body names it."""
_UNREAD = object()


def read_body(body: bytes) -> Any:
    """A JSON request body as :func:`json.loads` reads it, an object giving a key twice
    refused (:class:`~chatwright.errors.InvalidInputError` naming the key and its place)."""
    return loads(body, BODY, verb="send")


class JSONBodyRequest(Request):
    """A request whose :meth:`json` is :func:`read_body`: FastAPI reads a JSON body so."""

    _read: Any = _UNREAD

    async def json(self) -> Any:
        if self._read is _UNREAD:
            self._read = read_body(await self.body())
        return self._read


class JSONRoute(APIRoute):
    """A route whose handler gets a :class:`JSONBodyRequest` (every router's ``route_class``).

    FastAPI answers what its reading raises with 400 "There was an error parsing the
    body"; :func:`chatwright.plugins.server.errors.unparsed_body` makes that the 422 it is.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        # A route that reads its body itself documents it (openapi_extra's requestBody).
        reads_its_own = "requestBody" in (self.openapi_extra or {})
        if self.body_field is None and not reads_its_own:
            # A route that takes no body (approve, deny, delete…) would act on any body
            # sent, garbled or meaning otherwise ({"approve": false} to /approve): what
            # is sent must be nothing, {} or null.
            unwanted = f"{', '.join(sorted(self.methods or ()))} {self.path} takes no {BODY}"

            async def read_none(request: Request) -> Response:
                strict = JSONBodyRequest(request.scope, request.receive)
                if (await strict.body()).strip():
                    try:
                        sent = await strict.json()
                    # Not JSON, not UTF-8, too deep, a key twice: no body is wanted anyway.
                    except (ValueError, RecursionError, InvalidInputError):
                        sent = unwanted
                    if sent not in ({}, None):
                        raise InvalidInputError(f"{unwanted}; send none (or {{}})")
                return await handler(strict)

            return read_none

        async def read_strictly(request: Request) -> Response:
            return await handler(JSONBodyRequest(request.scope, request.receive))

        return read_strictly


bearer_scheme = HTTPBearer(
    auto_error=False,
    description="A JWT (server.auth = 'jwt'); not needed with server.auth = 'local'.",
)


async def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def settings_of(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def metrics_of(request: Request) -> ServerMetrics:
    metrics: ServerMetrics = request.app.state.metrics
    return metrics


async def principal(
    request: Request,
    # Declares the scheme in OpenAPI; the header itself is read as it always was, below.
    _: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)],
) -> Principal:
    settings: Settings = request.app.state.settings
    return await verified(settings, bearer(request.headers.get("authorization")))


async def verified(settings: Settings, token: str | None) -> Principal:
    """Who ``token`` proves the caller is (see :func:`principal_from_token`)."""
    if verification_may_block(settings.section(ServerSettings)):
        # A JWKS may be fetched or read now: off the event loop.
        return await run_in_threadpool(principal_from_token, settings, token)
    return principal_from_token(settings, token)


async def agent_exists(runtime: Runtime, name: str) -> None:
    if await runtime.storage.agents.get(name) is None:
        raise UnknownAgentError(name)


RuntimeDep = Annotated[Runtime, Depends(runtime_of)]
SettingsDep = Annotated[Settings, Depends(settings_of)]
MetricsDep = Annotated[ServerMetrics, Depends(metrics_of)]
User = Annotated[Principal, Depends(principal)]
