"""The history a turn sends to its model: the stored window, made to fit.

The window read at the start of a turn is the chat's last ``history_window``
messages (:attr:`chatwright.turns.TurnStart.history`); :func:`fit` turns it
into model input that begins at a human message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from chatwright.history import to_model_input

if TYPE_CHECKING:
    from langchain_core.messages import BaseMessage

    from chatwright.settings import Settings
    from chatwright.stores import NewSummary, Storage
    from chatwright.turns import TurnStart
    from chatwright.usage import TurnUsage


@dataclass
class Fitted:
    """The history to send, and what fitting it produced."""

    history: list[BaseMessage]
    summary: str | None = None
    """The chat's summary of earlier messages, for the system prompt."""
    new_summary: NewSummary | None = None
    """A summary made or extended by this turn, to store with it."""
    usage: list[TurnUsage] = field(default_factory=list)
    """Model calls made to summarise."""


async def fit(start: TurnStart, model: Any, settings: Settings, storage: Storage) -> Fitted:
    """The turn's history as model input (see the module docstring)."""
    return Fitted(to_model_input(start.history))
