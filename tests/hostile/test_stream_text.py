"""A model reply with characters no database stores, streamed.

``POST /api/chat`` stores such a reply with each NUL and lone surrogate
replaced by U+FFFD. The streamed turn failed on a lone surrogate instead
(``error`` 502, the reply lost: its ``token`` event could not be built), and
sent a NUL raw in its ``token`` event while ``done`` had U+FFFD. The stream
must end with ``done``, its tokens must spell the stored reply, and the reply
must be stored, on every backend.

The model streams its reply in the pieces given (a provider's stream may hold
a lone surrogate, e.g. a JSON ``"\\ud83d"`` escape cut from its pair); no
database would keep such a reply in ``model_settings`` for the scripted model.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

import httpx
import pytest
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult

from chatwright import hookimpl
from chatwright.registry import Plugins
from tests.hostile.conftest import AGENT, Backend, bearer, hostile_settings
from tests.hostile.serving import serving

# Per case: the pieces the model streams, and the reply as stored.
REPLIES = {
    "lone surrogate": (["Here you go ", "\ud83d"], "Here you go \ufffd"),
    "NUL": (["Here", "\x00you go"], "Here\ufffdyou go"),
    "both": (["\udc00 and \x00", " and \ud83d", "\ude00"], "\ufffd and \ufffd and \ufffd\ufffd"),
}


class PiecesChatModel(BaseChatModel):
    """Streams ``pieces`` as its reply (and gives them whole when not streamed)."""

    pieces: list[str]

    @property
    def _llm_type(self) -> str:
        return "test-pieces"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Any:
        return self

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=AIMessage("".join(self.pieces)))])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        for piece in self.pieces:
            yield ChatGenerationChunk(message=AIMessageChunk(content=piece))

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        for piece in self.pieces:
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=piece))
            if run_manager is not None:
                await run_manager.on_llm_new_token(piece, chunk=chunk)
            yield chunk


class PiecesModels:
    @hookimpl
    def register_models(self, register: Callable[[str, Any], None]) -> None:
        register("pieces", lambda name, settings: PiecesChatModel(pieces=REPLIES[name][0]))


def events(raw: str) -> list[tuple[str, Any]]:
    """The stream's events as (name, data), comments left out."""
    out = []
    for block in raw.split("\n\n"):
        lines = block.split("\n")
        name = next((line[7:] for line in lines if line.startswith("event: ")), None)
        data = next((line[6:] for line in lines if line.startswith("data: ")), None)
        if name is not None and data is not None:
            out.append((name, json.loads(data)))
    return out


@pytest.mark.parametrize("case", sorted(REPLIES))
async def test_a_reply_with_unstorable_characters_streams_clean_and_is_stored(
    backend: Backend, case: str
) -> None:
    plugins = Plugins.load()
    plugins.register(PiecesModels(), "test-pieces")
    clean = REPLIES[case][1]
    async with serving(hostile_settings(backend, plugins), plugins) as served:
        await served.runtime.storage.agents.update(AGENT, model=f"pieces:{case}")
        async with httpx.AsyncClient(base_url=served.url, timeout=30) as client:
            opened = await client.post(
                "/api/sessions", json={"agent_name": AGENT, "new": True}, headers=bearer("bob")
            )
            assert opened.status_code == 200, opened.text
            chat = opened.json()["chat_id"]
            body = {"agent_name": AGENT, "chat_id": chat, "message": "hello"}
            async with client.stream(
                "POST", "/api/chat/stream", json=body, headers=bearer("bob")
            ) as response:
                assert response.status_code == 200
                raw = (await response.aread()).decode()
            history = await client.get(f"/api/chats/{chat}/messages", headers=bearer("bob"))

    # No raw NUL in the stream, nor an escaped one.
    assert "\x00" not in raw and "\\u0000" not in raw
    got = events(raw)
    assert got, "no event"
    last, data = got[-1]
    assert last == "done", data
    assert data["response"] == clean
    tokens = [d["text"] for name, d in got if name == "token"]
    assert len(tokens) == len(REPLIES[case][0]), tokens
    assert "".join(tokens) == clean

    assert history.status_code == 200, history.text
    stored = [(m["role"], m["text"]) for m in history.json()["messages"]]
    assert stored == [("human", "hello"), ("ai", clean)], stored
