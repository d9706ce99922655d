"""The server's lifespan: start the runtime, run the background tasks, close on shutdown.

The background tasks are the session sweeper (deactivates idle sessions and
evicts their agents every ``sessions.sweep_interval`` seconds, in batches of
``sessions.sweep_batch`` with the event loop free between them, so requests
are not held up by a large pass) and the watch for configuration changed by
another process (PostgreSQL NOTIFY). Every worker sweeps; the store hands each
idle session to one of them. While the server runs, what start-up made is
frozen out of the collector's passes and its young threshold is
``server.gc_threshold``. A signal to stop starts the shutdown deadline
(:mod:`chatwright.plugins.server.shutdown`), after which the runtime's turns
in flight are stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
from typing import TYPE_CHECKING

from prometheus_client.multiprocess import mark_process_dead

from chatwright.plugins.server.metrics import multiprocess

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from contextlib import AbstractAsyncContextManager

    from fastapi import FastAPI

    from chatwright.plugins.server.metrics import ServerMetrics
    from chatwright.runtime import Runtime

log = logging.getLogger(__name__)


async def sweeper(runtime: Runtime, metrics: ServerMetrics) -> None:
    """Sweep idle sessions forever; a failed pass is logged and retried."""
    from chatwright.sessions import sweep

    while True:
        await asyncio.sleep(runtime.settings.sessions.sweep_interval)
        try:
            report = await sweep(runtime)
            # The evictions reach the metrics now, whichever worker is scraped.
            metrics.sync(runtime.cache.stats, len(runtime.cache))
            metrics.swept(report.deactivated, report.seconds)
            if report.deactivated or report.evicted:
                log.info(
                    "sweeper: %d idle session(s) deactivated in %d batch(es), %.2f s; "
                    "%d agent(s) evicted",
                    report.deactivated,
                    report.batches,
                    report.seconds,
                    len(report.evicted),
                )
        except Exception:
            log.exception("sweeper pass failed; retrying at the next interval")


def import_turn_modules() -> None:
    """Import what a turn uses that the process has not imported yet (LangChain's agents,
    LangGraph, chatwright's turn modules), as its first turn would: at start-up, so that
    gc.freeze() keeps them out of the collector's passes and the first turn is not
    slower than the rest."""
    import langchain.agents  # noqa: F401
    import langgraph.errors  # noqa: F401

    import chatwright.limits
    import chatwright.models
    import chatwright.prompts
    import chatwright.tools
    import chatwright.tracing
    import chatwright.window
    import chatwright.writes  # noqa: F401


def lifespan(runtime: Runtime) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """The lifespan of an app serving ``runtime``."""

    @contextlib.asynccontextmanager
    async def serve(app: FastAPI) -> AsyncIterator[None]:
        from chatwright.plugins.server.settings import ServerSettings
        from chatwright.plugins.server.shutdown import watch_signals

        import_turn_modules()
        await runtime.start(upgrade=True)
        deadline = runtime.settings.section(ServerSettings).shutdown_timeout
        unwatch = watch_signals(runtime, deadline, force=not multiprocess())
        # What start-up made (modules, settings, plugins), and the modules the first turn
        # would import, live as long as the process: kept out of the collector's full
        # passes, which would otherwise walk all of it and hold the event loop ~0.1 s
        # whenever a request or a sweep allocates.
        gc.freeze()
        before = gc.get_threshold()
        young = runtime.settings.section(ServerSettings).gc_threshold
        if young:
            gc.set_threshold(young, *before[1:])
        try:
            runtime.cache  # noqa: B018  (an unknown cache.policy fails now, not at the first turn)
            tasks = [
                asyncio.create_task(sweeper(runtime, app.state.metrics)),
                # Config changed by another process (PostgreSQL NOTIFY): rebuild at once.
                asyncio.create_task(runtime.storage.watch_config(runtime.config_changed)),
            ]
            try:
                yield
            finally:
                for task in tasks:
                    task.cancel()
                for task in tasks:
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
        finally:
            gc.set_threshold(*before)
            unwatch()
            # Turns still running (a stream's, which uvicorn does not cancel) are stopped
            # as at a timeout: their messages stored, their chats freed.
            await runtime.close()
            if multiprocess():
                # This worker's live gauges (the cache size) leave the sums.
                mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]

    return serve
