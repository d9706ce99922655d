"""Connections to MCP servers: opened lazily, shared by a built row's tools, closed on eviction.

An :class:`Endpoint` is a server as the settings describe it (a command or a
URL, with credentials from the environment). :func:`connect` opens a session
to it for the length of an ``async with`` (what checking a row uses: list the
tools and go). A :class:`Link` is the long-lived connection of one built row:
its first call opens it, later calls (of any turn, any user) reuse it, and it
is closed when the built agent leaves the executor cache (the
``executor_evicted`` hook) or the runtime stops (``shutdown``).

The MCP SDK's transports are anyio context managers that must be entered and
left by one task, so each link runs in a task of its own that holds the
session open until it is told to close; a tool call sends its request through
the session from the turn's task. When the server dies (a crashed process, a
dropped HTTP session) the link's task ends, and the next call opens a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

from chatwright_mcp.settings import OWN_PREFIX, MissingVariable, ServerSpec, expand

if TYPE_CHECKING:
    from mcp import ClientSession

CLIENT_NAME = "chatwright"


@dataclass(frozen=True)
class Endpoint:
    """One MCP server a row may use: the settings' spec, or a public URL."""

    label: str
    """How errors name it: ``MCP server 'files'`` or ``MCP server at https://…``."""
    spec: ServerSpec

    def secrets(self) -> list[str]:
        """The values ``${NAME}`` references expand to now (to keep out of messages)."""
        found: list[str] = []
        for value in [*self.spec.args, *self.spec.env.values(), *self.spec.headers.values()]:
            with contextlib.suppress(MissingVariable):
                found.extend(expand(value)[1])
        return [s for s in found if s]

    def redact(self, text: str) -> str:
        for secret in sorted(self.secrets(), key=len, reverse=True):
            text = text.replace(secret, "[redacted]")
        return text


def _errlog() -> TextIO:
    # The server's stderr goes where ours does; a stream without a descriptor (a
    # captured one in tests) cannot be handed to a child process.
    stream = sys.stderr
    try:
        stream.fileno()
    except (AttributeError, OSError, ValueError):
        # The devnull file (no real stderr at all) is kept open as long as the process.
        return sys.__stderr__ or open(os.devnull, "w")
    return stream


@contextlib.asynccontextmanager
async def connect(endpoint: Endpoint) -> AsyncIterator[ClientSession]:
    """An initialised session with the server, for the ``async with`` block."""
    from mcp import ClientSession

    spec = endpoint.spec
    async with contextlib.AsyncExitStack() as stack:
        if spec.command is not None:
            from mcp import StdioServerParameters, stdio_client

            env = {k: v for k, v in os.environ.items() if not k.upper().startswith(OWN_PREFIX)}
            env.update({k: expand(v)[0] for k, v in spec.env.items()})
            params = StdioServerParameters(
                command=spec.command,
                args=[expand(a)[0] for a in spec.args],
                env=env,
                cwd=spec.cwd,
            )
            read, write = await stack.enter_async_context(stdio_client(params, errlog=_errlog()))
        else:
            import httpx2
            from mcp.client.streamable_http import streamable_http_client

            assert spec.url is not None
            headers = {k: expand(v)[0] for k, v in spec.headers.items()}
            client = await stack.enter_async_context(
                httpx2.AsyncClient(headers=headers, timeout=spec.timeout)
            )
            read, write = await stack.enter_async_context(
                streamable_http_client(spec.url, http_client=client)
            )
        session = await stack.enter_async_context(
            ClientSession(read, write, read_timeout_seconds=spec.timeout)
        )
        await session.initialize()
        yield session


class _Registry:
    """The open links of this process, by agent name: what eviction and shutdown close."""

    def __init__(self) -> None:
        self.by_agent: dict[str, set[Link]] = {}

    def add(self, link: Link) -> None:
        self.by_agent.setdefault(link.agent_name, set()).add(link)

    def discard(self, link: Link) -> None:
        links = self.by_agent.get(link.agent_name)
        if links is not None:
            links.discard(link)
            if not links:
                del self.by_agent[link.agent_name]

    def close_agent(self, agent_name: str) -> int:
        links = list(self.by_agent.get(agent_name, ()))
        for link in links:
            link.close()
        return len(links)

    def close_owned_by(self, owner: object) -> int:
        links = [link for group in self.by_agent.values() for link in group if link.owner is owner]
        for link in links:
            link.close()
        return len(links)


OPEN = _Registry()


@dataclass(eq=False)
class Link:
    """The connection of one built row, opened by its first call."""

    endpoint: Endpoint
    agent_name: str
    owner: object
    """The storage of the runtime that built the row: its shutdown closes the link."""
    _session: ClientSession | None = None
    _task: asyncio.Task[None] | None = None
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def is_open(self) -> bool:
        return self._session is not None and self._task is not None and not self._task.done()

    async def session(self) -> ClientSession:
        """The open session, opening it first when there is none (or it died)."""
        async with self._lock:
            if not self.is_open:
                await self._open()
            assert self._session is not None
            return self._session

    async def _open(self) -> None:
        self._stop = asyncio.Event()
        ready: asyncio.Future[ClientSession] = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._hold(ready), name=f"mcp {self.endpoint.label}")
        try:
            async with asyncio.timeout(self.endpoint.spec.timeout):
                self._session = await asyncio.shield(ready)
        except BaseException:
            self.close()
            raise

    async def _hold(self, ready: asyncio.Future[ClientSession]) -> None:
        try:
            async with connect(self.endpoint) as session:
                if ready.done():  # the opener gave up meanwhile
                    return
                ready.set_result(session)
                OPEN.add(self)
                await self._stop.wait()
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc if isinstance(exc, Exception) else ConnectionError(exc))
            if not isinstance(exc, Exception):
                raise
        finally:
            self._session = None
            OPEN.discard(self)

    def close(self) -> None:
        """Tell the link's task to close the session (the stdio server is stopped)."""
        self._session = None
        self._stop.set()

    async def aclose(self) -> None:
        """Close and wait until the session is closed."""
        self.close()
        task = self._task
        if task is not None and not task.done():
            with contextlib.suppress(Exception):
                await task


def describe_failure(exc: BaseException) -> str:
    """An error from a transport or a session as one short sentence."""
    from mcp import MCPError

    if isinstance(exc, BaseExceptionGroup):
        leaves = list(_leaves(exc))
        if leaves:
            exc = leaves[0]
    if isinstance(exc, MCPError):
        return exc.error.message
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if isinstance(exc, FileNotFoundError):
        return f"the command was not found ({exc.filename or exc})"
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]


def _leaves(group: BaseExceptionGroup[Any]) -> list[BaseException]:
    found: list[BaseException] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            found.extend(_leaves(exc))
        else:
            found.append(exc)
    return found
