"""Connections to MCP servers: opened lazily, shared by a built row's tools, closed on eviction.

An :class:`Endpoint` is a server as the settings describe it (a command or a
URL, with credentials from the environment). :func:`list_tools` connects to
it once to list its tools (what checking a row uses). A :class:`Link` is the
long-lived connection of one built row: its first call opens it, later calls
(of any turn, any user) reuse it, and it is closed when the built agent leaves
the executor cache (the ``executor_evicted`` hook) or the runtime stops
(``shutdown``, which waits for it).

The MCP SDK's transports are anyio context managers that must be entered and
left by one task, so each link runs in a task of its own that holds the
session open until it is told to close. These tasks, and every request sent
through them, run on an event loop of their own, in a thread of its own
(:data:`LOOP`), not on the loop of the runtime:

- A runtime's loop ends by cancelling every task still on it (what
  ``asyncio.run`` does). Were a link's task among them, that cancellation
  could cut its orderly stop short (close the server's input, wait, then
  terminate it): the server would keep running, and the loop would wait for
  its output to end, for ever. On a loop of their own, nothing cancels a
  link's task but its own close, so the stop always runs to its end, and the
  synchronous ``shutdown`` hook can wait for it.
- A caller on the runtime's loop awaits the request's result; cancelling it
  (a turn's time limit) cancels the request on the connection loop.

When the server dies (a crashed process, a dropped HTTP session) the link's
task ends, and the next call opens a new one.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import logging
import os
import sys
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

from chatwright_mcp.screen import ScreenedReader, ScreenedWriter, ToolScreen
from chatwright_mcp.settings import OWN_PREFIX, MissingVariable, ServerSpec, expand

if TYPE_CHECKING:
    import mcp_types
    from mcp import ClientSession

CLIENT_NAME = "chatwright"
CLOSE_WAIT = 10.0
"""Seconds the runtime's shutdown waits for its connections to close. The SDK gives a
stdio server 2 s to exit once its input is closed, then terminates it, and kills it
2 s later."""

TIMEOUT_BACKUP = 5.0
"""Seconds after ``timeout`` the SDK's own request timeout comes, if ever."""
MAX_LIST_PAGES = 100
"""Pages of ``tools/list`` a listing asks for at most."""
CLOSED_BY_SDK = "Connection closed"
"""The message of the SDK's CONNECTION_CLOSED error: a server's error may have that code
(-32000, the first of JSON-RPC's server errors) too."""

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Endpoint:
    """One MCP server a row may use: the settings' spec, or a public URL."""

    label: str
    """How errors name it: ``MCP server 'files'`` or ``MCP server at https://…``."""
    spec: ServerSpec

    def secrets(self) -> list[str]:
        """The values ``${NAME}`` references expand to now (to keep out of messages)."""
        found: list[str] = []
        hidden = [*self.spec.env.values(), *self.spec.headers.values()]
        for value in [*self.spec.args, *(v.get_secret_value() for v in hidden)]:
            with contextlib.suppress(MissingVariable):
                found.extend(expand(value)[1])
        return [s for s in found if s]

    def redact(self, text: str) -> str:
        """``text`` with the secrets replaced by ``[redacted]``."""
        return _redact(text, sorted(self.secrets(), key=len, reverse=True))

    def redact_value(self, value: Any) -> Any:
        """``value`` (JSON-like: a tool call's arguments) with the secrets redacted from
        every string in it, its keys too."""
        secrets = sorted(self.secrets(), key=len, reverse=True)
        if not secrets:
            return value

        def clean(item: Any) -> Any:
            if isinstance(item, str):
                return _redact(item, secrets)
            if isinstance(item, dict):
                return {clean(k): clean(v) for k, v in item.items()}
            if isinstance(item, list | tuple):
                return [clean(v) for v in item]
            return item

        try:
            return clean(value)
        except RecursionError:
            return "[left out: nested too deeply to redact]"


def _redact(text: str, secrets: list[str]) -> str:
    for secret in secrets:
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
async def connect(
    endpoint: Endpoint, screen: ToolScreen | None = None
) -> AsyncIterator[ClientSession]:
    """An initialised session with the server, for the ``async with`` block.

    Its ``tools/list`` answers pass through ``screen`` (a screen of its own when
    not given): the session lists the tools itself before a call's result is
    checked, and one tool the SDK refuses must not fail every call.
    """
    screen = screen if screen is not None else ToolScreen()
    from mcp import ClientSession

    spec = endpoint.spec
    async with contextlib.AsyncExitStack() as stack:
        if spec.command is not None:
            from mcp import StdioServerParameters, stdio_client

            env = {k: v for k, v in os.environ.items() if not k.upper().startswith(OWN_PREFIX)}
            env.update({k: expand(v.get_secret_value())[0] for k, v in spec.env.items()})
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
            headers = {k: expand(v.get_secret_value())[0] for k, v in spec.headers.items()}
            client = await stack.enter_async_context(
                httpx2.AsyncClient(headers=headers, timeout=spec.timeout)
            )
            read, write = await stack.enter_async_context(
                streamable_http_client(spec.url, http_client=client)
            )
        read, write = ScreenedReader(read, screen), ScreenedWriter(write, screen)
        # Callers time their requests themselves (a TimeoutError); the SDK's own limit,
        # a little later, only backs them up. Its timeout is an MCPError with a code a
        # server may send too: it could not tell a server that stopped answering from
        # one that answered with an error.
        session = await stack.enter_async_context(
            ClientSession(read, write, read_timeout_seconds=spec.timeout + TIMEOUT_BACKUP)
        )
        await session.initialize()
        screen.version = session.protocol_version
        yield session


@dataclass
class Listing:
    """A server's tools, in its order, and those of its entries left out."""

    tools: list[mcp_types.Tool]
    left_out: list[tuple[str, str]]
    """The tools whose entries the SDK refuses: each one's name (or place) and why."""


async def list_tools(endpoint: Endpoint) -> Listing:
    """The server's tools, over a connection opened for this and closed again.

    A server may list its tools in pages: each page's cursor asks for the next,
    up to :data:`MAX_LIST_PAGES` pages (a server whose cursors never end gives
    the tools of those); the whole listing has the server's ``timeout``. A
    tool whose entry is not valid MCP is left out (see :class:`ToolScreen`),
    not the whole listing.
    """
    import mcp_types

    screen = ToolScreen(records=True)

    async def listing() -> Listing:
        tools: list[mcp_types.Tool] = []
        async with asyncio.timeout(endpoint.spec.timeout), connect(endpoint, screen) as session:
            cursor: str | None = None
            for _ in range(MAX_LIST_PAGES):
                params = None if cursor is None else mcp_types.PaginatedRequestParams(cursor=cursor)
                page = await session.list_tools(params=params)
                tools.extend(page.tools)
                cursor = page.next_cursor
                if cursor is None:
                    return Listing(tools, screen.left_out)
        log.warning(
            "chatwright: %s lists its tools in more than %d pages; the tools of the first %d "
            "are used",
            endpoint.label,
            MAX_LIST_PAGES,
            MAX_LIST_PAGES,
        )
        return Listing(tools, screen.left_out)

    return await LOOP.run(listing())


class _ConnectionLoop:
    """The event loop connections run on, in a daemon thread started by the first use."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._guard = threading.Lock()

    def get(self) -> asyncio.AbstractEventLoop:
        with self._guard:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(
                    target=loop.run_forever, name="chatwright-mcp connections", daemon=True
                ).start()
                self._loop = loop
                # A process that ends without stopping its runtime still stops its servers.
                atexit.register(OPEN.close_all, CLOSE_WAIT)
            return self._loop

    @property
    def started(self) -> bool:
        return self._loop is not None

    def submit(self, work: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Run ``work`` on the connection loop; its future, for any thread."""
        return asyncio.run_coroutine_threadsafe(work, self.get())

    async def run(self, work: Coroutine[Any, Any, T]) -> T:
        """Run ``work`` on the connection loop and await it; cancelling the caller cancels it."""
        return await asyncio.wrap_future(self.submit(work))

    def call_soon(self, callback: Callable[[], object]) -> None:
        """Call ``callback`` on the connection loop (from any thread)."""
        self.get().call_soon_threadsafe(callback)


class _Registry:
    """The links of this process that hold a connection or are stopping one, by agent name."""

    def __init__(self) -> None:
        self.by_agent: dict[str, set[Link]] = {}
        self._guard = threading.Lock()

    def add(self, link: Link) -> None:
        with self._guard:
            self.by_agent.setdefault(link.agent_name, set()).add(link)

    def discard(self, link: Link) -> None:
        with self._guard:
            links = self.by_agent.get(link.agent_name)
            if links is not None:
                links.discard(link)
                if not links:
                    del self.by_agent[link.agent_name]

    def _select(self, keep: Callable[[Link], bool]) -> list[Link]:
        with self._guard:
            return [link for group in self.by_agent.values() for link in group if keep(link)]

    def close_agent(self, agent_name: str) -> int:
        """Close the agent's links; their servers stop in the background."""
        links = self._select(lambda link: link.agent_name == agent_name)
        for link in links:
            link.close()
        return len(links)

    def close_owned_by(self, owner: object, wait: float) -> int:
        """Close the links of one runtime's builds, waiting up to ``wait`` seconds for them."""
        return self._close(self._select(lambda link: link.owner is owner), wait)

    def close_all(self, wait: float) -> int:
        """Close every link, waiting up to ``wait`` seconds for them (at the process's exit)."""
        return self._close(self._select(lambda link: True), wait)

    def _close(self, links: list[Link], wait: float) -> int:
        if not links or not LOOP.started:
            return len(links)

        async def close_and_wait() -> None:
            tasks: set[asyncio.Task[None]] = set()
            for link in links:
                link.close_now()
                tasks |= link.tasks
            if tasks:
                await asyncio.wait(tasks, timeout=wait)

        # Blocks the calling thread (the runtime's loop, when the shutdown hook calls):
        # the connection loop does the closing, whatever the runtime's loop does next.
        with contextlib.suppress(concurrent.futures.TimeoutError):
            LOOP.submit(close_and_wait()).result(timeout=wait + 1)
        return len(links)


OPEN = _Registry()
LOOP = _ConnectionLoop()


@dataclass(eq=False)
class Link:
    """The connection of one built row, opened by its first call.

    Everything but :meth:`call_tool` and :meth:`close` runs on the connection loop.
    """

    endpoint: Endpoint
    agent_name: str
    owner: object
    """The storage of the runtime that built the row: its shutdown closes the link."""
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    """The tasks holding a session open, or stopping one (a link that reconnected while
    its last connection was still stopping has two)."""
    _session: ClientSession | None = None
    _task: asyncio.Task[None] | None = None
    _stop: asyncio.Event | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> mcp_types.CallToolResult:
        """Call the server's tool over the link's session, opening it first when there is none."""
        return await LOOP.run(self._call_tool(name, arguments))

    def close(self) -> None:
        """Close the session, from any thread; the server stops in the background
        (a stdio server's input is closed, then it is terminated if it does not exit)."""
        if LOOP.started:
            LOOP.call_soon(self.close_now)

    async def _call_tool(self, name: str, arguments: dict[str, Any]) -> mcp_types.CallToolResult:
        session = await self._session_now()
        # TimeoutError: the server did not answer in time (see connect).
        async with asyncio.timeout(self.endpoint.spec.timeout):
            return await session.call_tool(name, arguments)

    @property
    def _is_open(self) -> bool:
        return self._session is not None and self._task is not None and not self._task.done()

    async def _session_now(self) -> ClientSession:
        async with self._lock:
            if not self._is_open:
                await self._open()
            assert self._session is not None
            return self._session

    async def _open(self) -> None:
        stop = asyncio.Event()
        ready: asyncio.Future[ClientSession] = asyncio.get_running_loop().create_future()
        # An opener that gave up leaves the failure unread; it is not an unhandled error.
        ready.add_done_callback(lambda f: None if f.cancelled() else f.exception())
        task = asyncio.create_task(self._hold(stop, ready), name=f"mcp {self.endpoint.label}")
        self._stop, self._task = stop, task
        self.tasks.add(task)
        OPEN.add(self)
        try:
            async with asyncio.timeout(self.endpoint.spec.timeout):
                self._session = await asyncio.shield(ready)
        except BaseException:
            self.close_now()
            raise

    async def _hold(self, stop: asyncio.Event, ready: asyncio.Future[ClientSession]) -> None:
        try:
            async with connect(self.endpoint) as session:
                if ready.done():  # the opener gave up meanwhile
                    return
                if stop.is_set():
                    ready.set_exception(ConnectionError("the connection was closed as it opened"))
                    return
                ready.set_result(session)
                await stop.wait()
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc if isinstance(exc, Exception) else ConnectionError(exc))
            if not isinstance(exc, Exception):
                raise
        finally:
            task = asyncio.current_task()
            if task is self._task:
                self._session = None
            if task is not None:
                self.tasks.discard(task)
            if not self.tasks:
                OPEN.discard(self)

    def close_now(self) -> None:
        """Tell the link's task to close the session (on the connection loop)."""
        self._session = None
        if self._stop is not None:
            self._stop.set()


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
