"""The ``scripted`` model: replays given replies, tool calls included, for tests.

``model_settings`` of an agent with model ``scripted:anything``::

    {"responses": [
        {"tool_calls": [{"name": "add_task", "args": {"title": "milk"}}]},
        {"content": "Added."}
    ]}

Each model call returns the next reply; when they run out, the model fails
with a clear error. ``{"fail": "reason"}`` makes every call fail, to test how
turns survive a broken model. A reply with ``"sleep": seconds`` is returned
after that long, to hold a turn in flight. The position is kept per user of a model
object, i.e. of a cached agent (one build serves every user): each user's turns
replay the script from its start, and a rebuilt agent starts it again. A reply
with ``"usage": {"input_tokens": n, "output_tokens": m, "cached": c}`` reports that
usage (as a provider's ``usage_metadata``), for tests of usage and budgets.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from pydantic import PrivateAttr

from chatwright.errors import ModelConfigError, ModelError


class ScriptedChatModel(BaseChatModel):
    responses: list[dict[str, Any]] = []
    fail: str | None = None
    _positions: dict[str | None, int] = PrivateAttr(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> ScriptedChatModel:
        unknown = set(settings) - {"responses", "fail"}
        if unknown:
            raise ModelConfigError(
                f"scripted model: unknown model_settings {', '.join(sorted(unknown))}; "
                "use responses (a list of replies) and fail"
            )
        responses = settings.get("responses", [])
        if not isinstance(responses, list) or not all(isinstance(r, dict) for r in responses):
            raise ModelConfigError("scripted model: responses must be a list of objects")
        return cls(responses=responses, fail=settings.get("fail"))

    @property
    def _llm_type(self) -> str:
        return "chatwright-scripted"

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        # The script decides which tools are called.
        return cast("Runnable[LanguageModelInput, AIMessage]", self)

    @staticmethod
    def _user() -> str | None:
        """The user of the turn the model is called in (None outside a turn)."""
        from chatwright.tools import current_turn

        turn = current_turn()
        return turn.user_id if turn is not None else None

    def _next(self) -> AIMessage:
        if self.fail is not None:
            raise ModelError(f"scripted model failure: {self.fail}")
        user = self._user()
        position = self._positions.get(user, 0)
        if position >= len(self.responses):
            raise ModelError(f"scripted model has no reply left ({len(self.responses)} were given)")
        reply = self.responses[position]
        self._positions[user] = position = position + 1
        calls = [
            {
                "name": call["name"],
                "args": call.get("args", {}),
                "id": call.get("id") or f"call_{position}_{i}",
                "type": "tool_call",
            }
            for i, call in enumerate(reply.get("tool_calls", []))
        ]
        usage = reply.get("usage")
        if not usage:
            return AIMessage(content=reply.get("content", ""), tool_calls=calls)
        i, o = int(usage.get("input_tokens", 0)), int(usage.get("output_tokens", 0))
        c = int(usage.get("cached", 0))
        return AIMessage(
            content=reply.get("content", ""),
            tool_calls=calls,
            usage_metadata={
                "input_tokens": i,
                "output_tokens": o,
                "total_tokens": i + o,
                **({"input_token_details": {"cache_read": c}} if c else {}),
            },
        )

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        time.sleep(self._delay())
        return ChatResult(generations=[ChatGeneration(message=self._next())])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        delay = self._delay()
        if delay:
            await asyncio.sleep(delay)
        return ChatResult(generations=[ChatGeneration(message=self._next())])

    def _delay(self) -> float:
        position = self._positions.get(self._user(), 0)
        if self.fail is not None or position >= len(self.responses):
            return 0.0
        return float(self.responses[position].get("sleep", 0))
