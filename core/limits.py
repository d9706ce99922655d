"""The bounds of a turn: its time limit and its most model and tool calls.

Each comes from the agent row when it sets one (``turn_timeout``,
``max_model_calls``, ``max_tool_calls``), else from the ``turns`` settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from chatwright.settings import Settings
    from chatwright.stores import Agent


@dataclass(frozen=True)
class Limits:
    timeout: float
    """Seconds the turn may run (model calls, tools, a summary), waiting for the chat excluded."""
    max_model_calls: int
    max_tool_calls: int


def limits_of(agent: Agent, settings: Settings) -> Limits:
    turns = settings.turns
    return Limits(
        timeout=agent.turn_timeout if agent.turn_timeout is not None else turns.timeout,
        max_model_calls=(
            agent.max_model_calls if agent.max_model_calls is not None else turns.max_model_calls
        ),
        max_tool_calls=(
            agent.max_tool_calls if agent.max_tool_calls is not None else turns.max_tool_calls
        ),
    )
