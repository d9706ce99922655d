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
answer already has is left as it is. The one answer it cannot see is a 500
for an unexpected error, which Starlette sends from outside every middleware:
that handler adds them itself (:func:`error_headers`).
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


def is_private(scope: Scope) -> bool:
    """Whether the request is for the API (``/api/``), under any root path the server is
    mounted at (``uvicorn --root-path``, whose prefix the path holds)."""
    path = str(scope.get("path", ""))
    root = str(scope.get("root_path", "")).rstrip("/")
    if root and path.startswith(root + "/"):
        path = path[len(root) :]
    return path.startswith("/api/")


def error_headers(scope: Scope) -> dict[str, str]:
    """The headers of :class:`SecurityHeaders`, for an answer it does not see: the one
    Starlette's outermost error handler sends for an unexpected error."""
    pairs = [*EVERY_ANSWER, PRIVATE] if is_private(scope) else list(EVERY_ANSWER)
    return {name.decode(): value.decode() for name, value in pairs}


class SecurityHeaders:
    """Adds :data:`EVERY_ANSWER` to each answer, and :data:`PRIVATE` to those of ``/api/``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        private = is_private(scope)

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
