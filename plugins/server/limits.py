"""Size limits of request bodies: 413 before a body is read (messages: message_limits)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from chatwright.plugins.server.errors import error_response
from chatwright.plugins.server.settings import ServerSettings

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from fastapi import FastAPI, Request, Response

    from chatwright.settings import Settings


def install(app: FastAPI, settings: Settings) -> None:
    """Refuse bodies far beyond any message before reading them."""

    @app.middleware("http")
    async def limit_body(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        # Refuse oversized bodies before reading them (a message is capped anyway).
        limit = settings.section(ServerSettings).max_message_chars * 4 + 16_384
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > limit:
            return error_response(f"request body too large ({length} bytes; at most {limit})", 413)
        return await call_next(request)
