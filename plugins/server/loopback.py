"""What ``server.auth = "local"`` serves: the local machine's own browser and programs only.

Local mode has no authentication, so two things keep it local, wherever the
app was created (``chatwright serve``, or ``uvicorn --factory`` with any
``--host``):

- the bind: a request is refused (403) when the server listens on an address
  that is not loopback (``0.0.0.0`` included), or when the connection itself
  arrived on one;
- the ``Host`` header: only ``localhost``, ``127.0.0.1`` and ``[::1]`` (any
  port) and the names of ``server.allowed_hosts`` are served, so that a web
  page on a DNS-rebound name (``attacker.example`` resolving to 127.0.0.1)
  cannot read the local user's chats from the browser;
- the ``Origin`` header, which browsers send with every request that may change
  something: when there is one, it must name one of those hosts too (any port),
  so that a page on another site the local user visits cannot make the server
  act for them (a form or a ``fetch`` that needs no preflight still reaches a
  server, though its answer cannot be read). ``Origin: null`` (a sandboxed
  frame, a local file) is refused. Programs send no ``Origin``, and are served.

:class:`LocalOnly` is a pure ASGI middleware that applies both before any
route runs; it is installed in local mode only.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import TYPE_CHECKING

from chatwright.plugins.server.auth import is_loopback
from chatwright.plugins.server.errors import error_response

if TYPE_CHECKING:
    from collections.abc import Iterable

    from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger(__name__)

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "[::1]"})


def host_name(header: str) -> str:
    """The name in a ``Host`` header, without its port: ``[::1]:8000`` -> ``[::1]``."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[: header.find("]") + 1] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def origin_name(origin: str) -> str:
    """The host name in an ``Origin`` header, as :func:`host_name` gives it, or "" for
    one with none (``null``): ``http://[::1]:8000`` -> ``[::1]``."""
    from urllib.parse import urlsplit

    try:
        return host_name(urlsplit(origin.strip()).netloc)
    except ValueError:
        return ""


def listening_addresses() -> list[str]:
    """The addresses of this process's listening TCP sockets (empty where it cannot tell).

    uvicorn binds after the lifespan has started, so the bind is read from the
    process's open sockets, not from any setting.
    """
    accept_conn = getattr(socket, "SO_ACCEPTCONN", None)
    try:
        descriptors = [int(name) for name in os.listdir("/dev/fd")]
    except (OSError, ValueError):
        return []
    if accept_conn is None:
        return []
    found = []
    for fd in descriptors:
        try:
            sock = socket.socket(fileno=fd)
        except OSError:
            continue  # not a socket, or closed since listed
        try:
            if (
                sock.family in (socket.AF_INET, socket.AF_INET6)
                and sock.type == socket.SOCK_STREAM
                and sock.getsockopt(socket.SOL_SOCKET, accept_conn)
            ):
                found.append(str(sock.getsockname()[0]))
        except OSError:
            continue
        finally:
            # The descriptor belongs to its owner: never close it from here.
            sock.detach()
    return found


class LocalOnly:
    """Refuse (403) requests that local mode must not serve: a public bind, a foreign Host
    or a foreign Origin."""

    def __init__(self, app: ASGIApp, allowed_hosts: Iterable[str] = ()) -> None:
        self.app = app
        self.allowed = LOOPBACK_NAMES | {host_name(h) for h in allowed_hosts}
        self._public_bind: list[str] | None = None

    def public_bind(self) -> list[str]:
        """The non-loopback addresses the process listens on, read at the first request."""
        if self._public_bind is None:
            self._public_bind = [a for a in listening_addresses() if not is_loopback(a)]
            if self._public_bind:
                log.error(
                    "server.auth = 'local' on %s: every request is refused; bind to 127.0.0.1 "
                    "or set server.auth = 'jwt'",
                    ", ".join(self._public_bind),
                )
        return self._public_bind

    def refusal(self, scope: Scope) -> str | None:
        public = self.public_bind()
        server = scope.get("server")
        # A unix socket (no port) is local by nature.
        if server and server[1] is not None and not is_loopback(str(server[0])):
            public = [*public, str(server[0])]
        if public:
            return (
                f"refusing to serve: server.auth = 'local' (no authentication) is served on "
                f"loopback addresses only, and this server listens on {', '.join(public)}; "
                "bind it to 127.0.0.1, or set server.auth = 'jwt'"
            )
        headers = dict(scope["headers"])
        host = headers.get(b"host", b"").decode("latin-1")
        if host_name(host) not in self.allowed:
            return (
                f"refusing Host {host!r}: with server.auth = 'local' only localhost, 127.0.0.1 "
                "and [::1] are served; add the name to server.allowed_hosts if it is yours"
            )
        origin = headers.get(b"origin")
        if origin is not None and origin_name(origin.decode("latin-1")) not in self.allowed:
            return (
                f"refusing a request from the web page at {origin.decode('latin-1')!r}: with "
                "server.auth = 'local' only pages of localhost, 127.0.0.1 and [::1] may call "
                "this server; add the name to server.allowed_hosts if the page is yours"
            )
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refusal = self.refusal(scope)
            if refusal is not None:
                await error_response(refusal, 403)(scope, receive, send)
                return
        await self.app(scope, receive, send)
