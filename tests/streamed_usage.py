"""A scripted chat model that streams, reporting its usage the way providers do.

LangChain chat models report a streamed call's tokens as ``usage_metadata`` on
the ``AIMessageChunk`` s they yield, and LangChain adds the chunks' reports up
(``add_ai_message_chunks`` sums them with ``add_usage``). Providers spread the
report over the chunks in different shapes; the model here replays the
``scripted`` model's replies, cut in pieces, with its usage in one of them:

``first-last``
    input tokens (and cache reads) on the first chunk, output tokens on a last
    chunk with no text, as Anthropic's ``message_start`` and ``message_delta``;
``final``
    all of it on a last chunk with no text, as OpenAI with ``include_usage``;
``deltas``
    input tokens on the first chunk, output tokens spread over the pieces;

The shape is the model's name: ``streamed:first-last``. ``pause`` (model
settings) holds each piece back that many seconds, so that a client can leave
in the middle of a reply.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun
from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.messages.ai import InputTokenDetails, UsageMetadata
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.outputs import ChatGenerationChunk

from chatwright import hookimpl
from chatwright.plugins.models.scripted import ScriptedChatModel

SHAPES = ("first-last", "final", "deltas")
PROVIDER = "streamed"


def _usage(inputs: int, outputs: int, cached: int = 0) -> UsageMetadata:
    meta = UsageMetadata(input_tokens=inputs, output_tokens=outputs, total_tokens=inputs + outputs)
    if cached:
        meta["input_token_details"] = InputTokenDetails(cache_read=cached)
    return meta


def spread(shape: str, pieces: int, usage: UsageMetadata | None) -> list[UsageMetadata | None]:
    """The usage each of ``pieces`` chunks carries (the last of them has no text)."""
    if usage is None:
        return [None] * pieces
    inputs, outputs = usage["input_tokens"], usage["output_tokens"]
    cached = int(usage.get("input_token_details", {}).get("cache_read", 0) or 0)
    reports: list[UsageMetadata | None] = [None] * pieces
    if shape == "first-last":
        reports[0] = _usage(inputs, 0, cached)
        reports[-1] = _usage(0, outputs)
    elif shape == "final":
        reports[-1] = _usage(inputs, outputs, cached)
    elif shape == "deltas":
        share, rest = divmod(outputs, pieces)
        reports = [_usage(0, share) for _ in range(pieces)]
        reports[0] = _usage(inputs, share + rest, cached)
    else:
        raise ValueError(f"no usage shape {shape!r}; use one of {', '.join(SHAPES)}")
    return reports


class StreamedChatModel(ScriptedChatModel):
    """The ``scripted`` model's replies, streamed in pieces of ``piece`` characters."""

    shape: str = "first-last"
    piece: int = 3
    pause: float = 0.0

    @property
    def _llm_type(self) -> str:
        return "chatwright-streamed"

    def _chunks(self) -> Iterator[tuple[AIMessageChunk, float]]:
        reply = self._next()
        text = str(reply.content)
        # A first chunk (a reply with no text has one too), then the pieces of the text,
        # then a last chunk with no text, the end of the reply.
        pieces = [text[i : i + self.piece] for i in range(0, len(text), self.piece)] or [""]
        pieces.append("")
        reports = spread(self.shape, len(pieces), reply.usage_metadata)
        for n, (piece, report) in enumerate(zip(pieces, reports, strict=True)):
            last = n == len(pieces) - 1
            calls = (
                [
                    tool_call_chunk(
                        name=call["name"], args=json.dumps(call["args"]), id=call["id"], index=i
                    )
                    for i, call in enumerate(reply.tool_calls)
                ]
                if last
                else []
            )
            chunk = AIMessageChunk(
                content=piece,
                tool_call_chunks=calls,
                usage_metadata=report,
                chunk_position="last" if last else None,
            )
            yield chunk, 0.0 if last else self.pause

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        delay = self._delay()
        if delay:
            await asyncio.sleep(delay)
        for message, pause in self._chunks():
            chunk = ChatGenerationChunk(message=message)
            if run_manager is not None:
                await run_manager.on_llm_new_token(str(message.content), chunk=chunk)
            yield chunk
            if pause:
                await asyncio.sleep(pause)


def build(name: str, settings: Mapping[str, Any]) -> StreamedChatModel:
    if name not in SHAPES:
        raise ValueError(f"no usage shape {name!r}; use one of {', '.join(SHAPES)}")
    return StreamedChatModel(
        responses=list(settings.get("responses", [])),
        shape=name,
        pause=float(settings.get("pause", 0.0)),
    )


class StreamedModels:
    """Registers the ``streamed`` provider: ``streamed:<shape>``."""

    @hookimpl
    def register_models(self, register: Callable[[str, Any], None]) -> None:
        register(PROVIDER, build)
