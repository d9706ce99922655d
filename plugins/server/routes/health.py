"""Health check and Prometheus metrics, for load balancers and monitoring."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse

from chatwright.errors import ChatwrightError
from chatwright.plugins.server.dependencies import MetricsDep, RuntimeDep
from chatwright.plugins.server.errors import WHY
from chatwright.plugins.server.schemas import ErrorBody, Health

router = APIRouter(tags=["health"])


class PrometheusResponse(PlainTextResponse):
    media_type = "text/plain; version=0.0.4"


@router.get(
    "/healthz",
    response_model=Health,
    responses={
        503: {
            "model": ErrorBody,
            "description": WHY[503] + ' The body also has "status": "unavailable".',
        }
    },
)
async def healthz(runtime: RuntimeDep) -> Health | JSONResponse:
    """Whether the database answers."""
    try:
        await runtime.storage.ping()
    except ChatwrightError as exc:
        return JSONResponse({"status": "unavailable", "error": str(exc)}, status_code=503)
    return Health(status="ok", database=runtime.storage.description)


@router.get(
    "/metrics",
    response_class=PrometheusResponse,
    responses={200: {"description": "Prometheus text exposition format."}},
)
async def prometheus(runtime: RuntimeDep, metrics: MetricsDep) -> PrometheusResponse:
    """Cache counters, active sessions, turn outcomes and latency."""
    stats = runtime.cache.stats
    text = metrics.render(
        hits=stats.hits,
        misses=stats.misses,
        builds=stats.builds,
        evictions=dict(stats.evictions),
        cached=len(runtime.cache),
        active_sessions=await runtime.storage.sessions.count_active(),
    )
    return PrometheusResponse(text)
