"""Limits of a request, checked before any work is done (messages: message_limits).

:class:`BodyLimit` is a pure ASGI middleware that counts the bytes the
application actually receives, so a chunked body (no ``Content-Length``) is
bounded as well as a declared one: once the bound is passed it answers 413 with
the error body and the application sees a disconnect instead of more bytes. It
sits outside the routes, so the bound holds before authentication or JSON
parsing start.

:class:`OneValueEach` refuses a request that gives a query parameter or its
``Authorization`` header more than once, as a JSON body giving a key twice is
refused: a reader may take either value (FastAPI takes the last parameter, the
authentication the first header; a proxy in front may take the other), and on
``DELETE /api/me?confirm=…`` the value is the safety check itself.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

from chatwright.plugins.server.errors import error_response
from chatwright.plugins.server.settings import ServerSettings

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from chatwright.settings import Settings

# Room for the JSON around a message of max_message_chars characters.
ENVELOPE_BYTES = 16_384
BYTES_PER_CHAR = 12
"""The most a message's character may take in a JSON body: a character outside the Basic
Multilingual Plane sent escaped, as JSON encoders do by default (``\\ud83d\\ude00``)."""


def body_limit(settings: Settings) -> int:
    """The most bytes a request body may have: room for any message the message limit
    accepts, however its JSON is escaped."""
    return settings.section(ServerSettings).max_message_chars * BYTES_PER_CHAR + ENVELOPE_BYTES


BUNDLE_PATH = "/api/agents/import"
"""The one route whose body is not a message: an agent bundle, read up to what a bundle
file may hold (:data:`chatwright.bundles.MAX_BYTES`), as ``agents export`` writes it."""


def bundle_limit() -> int:
    from chatwright.bundles import MAX_BYTES

    return MAX_BYTES + ENVELOPE_BYTES


def app_path(scope: Scope) -> str:
    """The request's path within the app: without the root path it is served under
    (``uvicorn --root-path /chat`` puts the prefix into the scope's path)."""
    path = str(scope.get("path", ""))
    root = str(scope.get("root_path", "")).rstrip("/")
    if root and path.startswith(root + "/"):
        path = path[len(root) :]
    return path


class BodyLimit:
    """Answer 413 as soon as a request body passes ``limit`` bytes, declared or not
    (:func:`bundle_limit` for a bundle's import, when that is more)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit
        self.bundles = max(limit, bundle_limit())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        bundle = app_path(scope) == BUNDLE_PATH
        limit = self.bundles if bundle else self.limit
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                await self._refuse(scope, receive, send, f"{int(value)} bytes", limit, bundle)
                return
        received = 0
        refused = False
        started = False

        async def counted_receive() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    refused = True
                    if not started:
                        size = f"more than {limit} bytes"
                        await self._refuse(scope, receive, send, size, limit, bundle)
                    # The application stops reading as if the client had left.
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:
                # The 413 is the answer; whatever the application says after it is dropped.
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, counted_receive, guarded_send)

    @staticmethod
    async def _refuse(
        scope: Scope, receive: Receive, send: Send, size: str, limit: int, bundle: bool
    ) -> None:
        fix = "a bundle is read up to 4 MiB" if bundle else "send a shorter message"
        response = error_response(f"request body too large ({size}; at most {limit}): {fix}", 413)
        # The rest of the body is not read: the connection is closed after the answer.
        response.headers["Connection"] = "close"
        await response(scope, receive, send)


HEAD_BYTES = 16_384
"""The most bytes of a request's head (its target and headers) the application serves."""


class OneValueEach:
    """Answer 431 to a request head over :data:`HEAD_BYTES`, 422 to a query parameter given
    more than once, 400 to two ``Authorization`` headers, naming it, before the
    application sees the request.

    The server's parser (h11) refuses a head still incomplete past 16 KB, but one that
    arrives in one read of the connection, up to a few hundred KB, reaches the
    application whole: the bound is kept here, whatever the parser and the read.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            problem = _oversized(scope) or _repeated(scope)
            if problem is not None:
                text, status = problem
                await error_response(text, status)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _oversized(scope: Scope) -> tuple[str, int] | None:
    size = len(scope.get("raw_path") or b"") + len(scope.get("query_string", b""))
    size += sum(len(name) + len(value) + 4 for name, value in scope["headers"])
    if size <= HEAD_BYTES:
        return None
    return (
        f"the request's head (its target and headers) is {size:,} bytes; at most "
        f"{HEAD_BYTES:,} are served: send fewer or shorter headers",
        431,
    )


def _repeated(scope: Scope) -> tuple[str, int] | None:
    query = scope.get("query_string", b"")
    if query:
        pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
        counted = Counter(name for name, _ in pairs)
        twice = sorted(name for name, n in counted.items() if n > 1)
        if twice:
            shown = ", ".join(repr(name[:80]) for name in twice[:5])
            return (
                f"query parameter {shown} is given more than once; give each once "
                "(a reader could take either value)",
                422,
            )
    authorizations = sum(1 for name, _ in scope["headers"] if name == b"authorization")
    if authorizations > 1:
        return (
            f"the Authorization header is given {authorizations} times; send one "
            "(a reader could take either token)",
            400,
        )
    return None
