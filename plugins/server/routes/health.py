"""Health checks and Prometheus metrics, for load balancers and monitoring.

``/healthz`` is for anyone (load balancers) and says only ok or unavailable;
which database is used and why it fails is at ``/api/health``, for admins.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse

from chatwright.errors import ChatwrightError
from chatwright.plugins.server.auth import ForbiddenError
from chatwright.plugins.server.dependencies import JSONRoute, MetricsDep, RuntimeDep, User
from chatwright.plugins.server.errors import USER, responses
from chatwright.plugins.server.schemas import ErrorBody, Health, HealthDetail

router = APIRouter(tags=["health"], route_class=JSONRoute)


class PrometheusResponse(PlainTextResponse):
    media_type = "text/plain; version=0.0.4"


@router.get(
    "/healthz",
    response_model=Health,
    responses={
        503: {
            "model": ErrorBody,
            "description": "The database does not answer. The body also has "
            '"status": "unavailable"; GET /api/health tells admins why.',
        }
    },
)
async def healthz(runtime: RuntimeDep) -> Health | JSONResponse:
    """Whether the database answers; nothing else, since anyone may ask."""
    try:
        await runtime.storage.ping()
    except ChatwrightError:
        return JSONResponse(
            {"status": "unavailable", "error": "the database does not answer"}, status_code=503
        )
    return Health(status="ok")


@router.get(
    "/api/health",
    response_model=HealthDetail,
    # A 503 body is a HealthDetail: the error body with the status and the database.
    responses=responses(*USER),
)
async def health_detail(runtime: RuntimeDep, who: User) -> HealthDetail | JSONResponse:
    """Which database is used and why it does not answer (admins only)."""
    if not who.admin:
        raise ForbiddenError("the health details are for admins (a chatwright_admin token)")
    description = described(runtime.storage)
    try:
        await runtime.storage.ping()
    except ChatwrightError as exc:
        detail = HealthDetail(status="unavailable", database=description, error=str(exc))
        return JSONResponse(detail.model_dump(), status_code=503)
    return HealthDetail(status="ok", database=description, error=None)


def described(storage: Any) -> str:
    """The database, and the session store when sessions live apart (Redis): whichever
    does not answer, the health check's error is its own."""
    from chatwright.stores import WithSessionStore

    description = str(storage.description)
    if isinstance(storage, WithSessionStore):
        sessions = getattr(storage.sessions, "description", None)
        if sessions:
            description += f"; sessions: {sessions}"
    return description


@router.get(
    "/metrics",
    response_class=PrometheusResponse,
    responses={200: {"description": "Prometheus text exposition format."}},
)
async def prometheus(runtime: RuntimeDep, metrics: MetricsDep) -> PrometheusResponse:
    """Cache counters, active sessions, turn outcomes and latency.

    A database that does not answer leaves out only the active sessions (and sets
    ``chatwright_database_up`` to 0): an outage is when the other values matter most.
    """
    metrics.sync(runtime.cache.stats, len(runtime.cache))
    try:
        active: int | None = await runtime.storage.sessions.count_active()
    except ChatwrightError:
        active = None
    return PrometheusResponse(metrics.render(active_sessions=active))


# Load balancers and probes that ask HEAD: the GET's status and headers (uvicorn sends
# no body). Left out of the OpenAPI document, which would list each a second time.
for _path, _endpoint in (("/healthz", healthz), ("/metrics", prometheus)):
    router.add_api_route(
        _path, _endpoint, methods=["HEAD"], include_in_schema=False, response_model=None
    )
