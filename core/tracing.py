"""LangSmith's bookkeeping around middleware hooks, kept in the event loop's thread
while nothing is traced.

LangChain wraps each middleware's ``wrap_model_call`` and ``wrap_tool_call`` in
LangSmith's ``traceable``, which sets up and closes its run in a worker thread:
two trips to a thread and back per model call, traced or not. A chatwright turn
has a wrapped model call per round of tools (the turn's limits, see
:mod:`chatwright.limits`), and the trips cost more than the bookkeeping.

:func:`inline_when_untraced` installs LangSmith's documented runtime override
for that hop (``langsmith.set_runtime_overrides``): while tracing is off (no
``LANGSMITH_TRACING``, no ``tracing_context(enabled=True)``, no run in
progress) the bookkeeping runs where it is called; while it is on, LangSmith
does exactly what it does without the override. An override the application
installed itself is left as it is.
"""

from __future__ import annotations

from typing import Any

_installed = False


async def _aio_to_thread(default: Any, ctx: Any, func: Any, /, *args: Any, **kwargs: Any) -> Any:
    from langsmith.utils import tracing_is_enabled

    if ctx.run(tracing_is_enabled):
        return await default(ctx, func, *args, **kwargs)
    return ctx.run(func, *args, **kwargs)


def inline_when_untraced() -> None:
    """Install the override once per process (see the module docstring)."""
    global _installed
    if _installed:
        return
    _installed = True
    try:
        from langsmith import set_runtime_overrides
        from langsmith._runtime_overrides import get_runtime_overrides
    except ImportError:  # a LangSmith without runtime overrides: its default stays
        return
    if get_runtime_overrides().aio_to_thread is not None:
        return  # the application's own
    set_runtime_overrides(aio_to_thread=_aio_to_thread)
