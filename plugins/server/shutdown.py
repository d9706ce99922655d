"""Stopping ``chatwright serve``: a deadline for the turns in flight, and a second signal.

On SIGTERM or SIGINT uvicorn stops accepting connections and waits for the open
ones to end. The turns in flight get ``server.shutdown_timeout`` seconds; then
each one is stopped as if its time limit had passed
(:meth:`~chatwright.runtime.Runtime.stop_turns`): its human message and complete
tool exchanges are kept, its chat is given back, and its caller gets a 504 (a
stream an ``error`` event with status 504). To know when the signal came, the
lifespan chains :func:`watch_signals` onto uvicorn's own signal handlers.
uvicorn's ``timeout_graceful_shutdown`` is set later, as a backstop: it cancels
request tasks, not the tasks that run streamed turns, which the runtime stops
when the lifespan closes it.

A second signal exits at once; a turn still in flight then frees its chat only
when its lease expires. With several workers, uvicorn's supervisor waits for
them without reading signals, so a second one went unheard: :class:`Supervisor`
keeps reading them while it waits, and kills the workers on the next. (A worker
leaves that to it: it gets the signal twice, from the terminal or process
group and from the supervisor.)
"""

from __future__ import annotations

import asyncio
import logging
import math
import signal
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Any

import uvicorn
from uvicorn.supervisors.multiprocess import Multiprocess

if TYPE_CHECKING:
    from chatwright.runtime import Runtime

log = logging.getLogger(__name__)

# Seconds uvicorn's backstop waits beyond the deadline, for stopped turns to answer.
BACKSTOP = 10.0
SIGNALS = (signal.SIGTERM, signal.SIGINT)


def watch_signals(runtime: Runtime, deadline: float, *, force: bool) -> Callable[[], None]:
    """Chain onto uvicorn's handlers of SIGTERM and SIGINT: the first signal stops the
    runtime's turns ``deadline`` seconds later; with ``force``, a second one makes
    uvicorn exit at once. Does nothing where uvicorn did not install its handlers (a
    server run in a thread, or from a test). Returns what undoes it."""
    loop = asyncio.get_running_loop()
    installed: dict[int, Any] = {}
    seen = 0

    def stop() -> None:
        stopped = runtime.stop_turns()
        if stopped:
            log.warning("shutdown deadline passed: %d turn(s) in flight stopped", stopped)

    for sig in SIGNALS:
        previous = signal.getsignal(sig)
        server = getattr(previous, "__self__", None)
        if not isinstance(server, uvicorn.Server):
            continue

        def handler(
            number: int, frame: FrameType | None, previous: Any = previous, server: Any = server
        ) -> None:
            nonlocal seen
            seen += 1
            previous(number, frame)
            if seen == 1:
                loop.call_soon_threadsafe(loop.call_later, deadline, stop)
            elif force:
                server.force_exit = True

        installed[sig] = previous
        signal.signal(sig, handler)

    def undo() -> None:
        for sig, previous in installed.items():
            signal.signal(sig, previous)

    return undo


class Supervisor(Multiprocess):
    """uvicorn's worker supervisor, which also hears a signal while its workers stop."""

    def join_all(self) -> None:
        for process in self.processes:
            while process.process.is_alive():
                if self.signal_queue:
                    self.signal_queue.clear()
                    log.warning("second signal: stopping the workers now")
                    for other in self.processes:
                        if other.process.is_alive():
                            other.kill()
                process.process.join(0.1)


def run(config: uvicorn.Config, shutdown_timeout: float) -> None:
    """Serve ``config`` as ``uvicorn.run`` would, with the shutdown described above."""
    config.timeout_graceful_shutdown = math.ceil(shutdown_timeout + BACKSTOP)
    if config.workers > 1:
        sock = config.bind_socket()
        Supervisor(config, sockets=[sock]).run()
        return
    uvicorn.Server(config).run()
