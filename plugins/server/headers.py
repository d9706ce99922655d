"""The headers every answer of the server carries, against other web pages.

The chat page holds buttons that act (Send, Approve, Deny, Undo): a page of
another origin must not frame it and trick a click onto them
(``X-Frame-Options: DENY`` and ``Content-Security-Policy: frame-ancestors
'none'``). No answer is read as another type than the one it declares
(``X-Content-Type-Options: nosniff``), and no address of the server leaks
to the sites its pages link to (``Referrer-Policy: no-referrer``). What
``/api/`` answers is the caller's own data: no cache keeps it
(``Cache-Control: no-store``, unless the route chose its own, as the event
stream does).

:class:`SecurityHeaders` is a pure ASGI middleware around everything else,
so that error answers of the other middlewares carry them too. A header the
answer already has is left as it is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

EVERY_ANSWER = (
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
)
PRIVATE = (b"cache-control", b"no-store")


class SecurityHeaders:
    """Adds :data:`EVERY_ANSWER` to each answer, and :data:`PRIVATE` to those of ``/api/``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        private = str(scope.get("path", "")).startswith("/api/")

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers: list[Any] = list(message.get("headers", ()))
                present = {bytes(name).lower() for name, _ in headers}
                headers += [pair for pair in EVERY_ANSWER if pair[0] not in present]
                if private and PRIVATE[0] not in present:
                    headers.append(PRIVATE)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, sending)
