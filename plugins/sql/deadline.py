"""A time bound that a database driver cannot stretch.

:func:`asyncio.timeout` cancels the task once. A driver may catch that
cancellation to clean up over the same connection: psycopg then asks the
server to cancel the query and waits up to ten seconds for it, so behind a
silent server a one-second bound becomes eleven. :class:`Deadline` keeps
cancelling, every :data:`REPEAT` seconds, until its block is left, and then
raises :class:`TimeoutError` like :func:`asyncio.timeout` does (whatever the
driver turned the cancellation into).
"""

from __future__ import annotations

import asyncio
from types import TracebackType

REPEAT = 0.05


class Deadline:
    """``async with Deadline(seconds):`` — None or 0 for no bound."""

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self._task: asyncio.Task[object] | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._fired = 0

    async def __aenter__(self) -> Deadline:
        if self.seconds:
            self._task = asyncio.current_task()
            self._handle = asyncio.get_running_loop().call_later(self.seconds, self._fire)
        return self

    def _fire(self) -> None:
        assert self._task is not None
        self._fired += 1
        self._task.cancel()
        self._handle = asyncio.get_running_loop().call_later(REPEAT, self._fire)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._handle is not None:
            self._handle.cancel()
        if not self._fired or self._task is None:
            return
        remaining = 0
        for _ in range(self._fired):
            remaining = self._task.uncancel()
        # Whatever the driver made of our cancellations, the block ran out of time;
        # but a cancellation from anyone else must go on as it is.
        if remaining == 0 and exc is not None:
            raise TimeoutError(f"no answer within {self.seconds:g} s") from exc
