"""The web chat page and what it needs to know before it signs in."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from chatwright import __version__
from chatwright.plugins.server.dependencies import JSONRoute, SettingsDep
from chatwright.plugins.server.schemas import ClientConfig
from chatwright.plugins.server.settings import ServerSettings

router = APIRouter(tags=["page"], route_class=JSONRoute)


@router.get(
    "/",
    response_class=HTMLResponse,
    responses={200: {"description": "The web chat page (HTML, CSS and JavaScript)."}},
)
async def page() -> HTMLResponse:
    """The web chat page."""
    html = resources.files("chatwright.plugins.server").joinpath("static/index.html")
    return HTMLResponse(html.read_text(encoding="utf-8"))


@router.get("/api/config")
async def client_config(settings: SettingsDep) -> ClientConfig:
    """What the web page needs to know before it signs in."""
    return ClientConfig(
        auth=settings.section(ServerSettings).auth,
        heartbeat_interval=settings.sessions.heartbeat_interval,
        max_message_chars=settings.section(ServerSettings).max_message_chars,
        version=__version__,
    )
