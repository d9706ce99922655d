"""Review findings on the streamed turn, replayed against a real uvicorn server.

- A reply with U+2028 broke the web page's stream parser: JavaScript counts it
  as a line end, so the page's ``^data: (.*)$`` cut the JSON in two. Every
  data line must come out with U+2028 and U+2029 escaped, and the page itself
  (headless Chromium, when installed) must show the whole reply.
- The stream sent a tool's result as a JSON string where ``POST /api/chat``
  sends the object: both must send the same object.
- A turn that takes long sent nothing, and proxies dropped the idle stream:
  ``: keep-alive`` comments must go out every ``server.stream_keepalive``
  seconds while it runs, and the turn must still end with ``done``.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from chatwright import hookimpl
from chatwright.plugins.example import assistant as example
from chatwright.registry import Plugins
from tests.hostile.serving import Served, serving, settings_for
from tests.test_browser import require_chromium

AGENT = example.AGENT
TRICKY = "first\u2028second\u2029third \u00e9 done"
# The line ends of JavaScript's regular expressions (the page splits data lines with them).
JS_LINE_ENDS = re.compile("\r\n|[\n\r\u2028\u2029]")


class SlowChatModel(BaseChatModel):
    """Thinks for ``SLOW_SECONDS`` before a short reply, streaming nothing meanwhile."""

    @property
    def _llm_type(self) -> str:
        return "test-slow"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Any:
        return self

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        time.sleep(SLOW_SECONDS)
        return ChatResult(generations=[ChatGeneration(message=AIMessage("slow but sure"))])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        await asyncio.sleep(SLOW_SECONDS)
        return ChatResult(generations=[ChatGeneration(message=AIMessage("slow but sure"))])


SLOW_SECONDS = 1.5


class SlowModels:
    @hookimpl
    def register_models(self, register: Callable[[str, Any], None]) -> None:
        register("slow", lambda name, settings: SlowChatModel())


def js_events(raw: str) -> list[tuple[str | None, Any]]:
    """The events as the web page's parser reads them: blocks, then JavaScript lines."""
    events = []
    for block in raw.split("\n\n"):
        if not block:
            continue
        lines = JS_LINE_ENDS.split(block)
        name = next((line[7:] for line in lines if line.startswith("event: ")), None)
        data = next((line[6:] for line in lines if line.startswith("data: ")), "{}")
        events.append((name, json.loads(data)))
    return events


async def stream(served: Served, message: str, agent: str = AGENT) -> str:
    """Open a session on ``agent`` and stream one turn; the raw stream."""
    async with httpx.AsyncClient(base_url=served.url, timeout=30) as client:
        opened = (await client.post("/api/sessions", json={"agent_name": agent})).json()
        body = {"agent_name": agent, "chat_id": opened["chat_id"], "message": message}
        async with client.stream("POST", "/api/chat/stream", json=body) as response:
            assert response.status_code == 200
            raw = (await response.aread()).decode()
    return raw


async def scripted(served: Served, responses: list[dict[str, Any]]) -> None:
    """The example agent on a scripted model replaying ``responses``."""
    await served.runtime.storage.agents.update(
        AGENT, model="scripted:x", model_settings={"responses": responses}
    )


async def test_u2028_in_a_reply_stays_inside_its_data_line(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    async with serving(settings) as served:
        await scripted(served, [{"content": TRICKY}])
        raw = await stream(served, "say it")

    assert "\u2028" not in raw and "\u2029" not in raw
    events = js_events(raw)
    assert events[-1][0] == "done"
    assert events[-1][1]["response"] == TRICKY
    assert "".join(d["text"] for name, d in events if name == "token") == TRICKY


async def test_the_page_shows_a_reply_with_u2028_whole(tmp_path: Path) -> None:
    executable = require_chromium()
    from playwright.async_api import async_playwright

    async with serving(settings_for(tmp_path)) as served:
        await scripted(served, [{"content": TRICKY}])
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(
                executable_path=executable,
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
            )
            try:
                page = await browser.new_page()
                await page.goto(served.url + "/")
                await page.wait_for_function(
                    "document.querySelector('#status').textContent.startsWith('chat')"
                )
                await page.fill("#input", "say it")
                await page.keyboard.press("Enter")
                await page.locator(".msg.ai").first.wait_for()
                await page.wait_for_function("!document.querySelector('#send').disabled")
                shown = await page.locator(".msg.ai").all_text_contents()
                notes = await page.locator(".msg.note").all_text_contents()
            finally:
                await browser.close()
    assert shown == [TRICKY]
    assert not [n for n in notes if n.startswith("Error")]


async def test_a_tool_result_is_the_same_object_streamed_or_not(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    call = [{"tool_calls": [{"name": "add_task", "args": {"title": "milk"}}]}, {"content": "ok"}]
    async with serving(settings) as served:
        await scripted(served, call + call)
        raw = await stream(served, "add milk")
        async with httpx.AsyncClient(base_url=served.url, timeout=30) as client:
            opened = (await client.post("/api/sessions", json={"agent_name": AGENT})).json()
            body = {"agent_name": AGENT, "chat_id": opened["chat_id"], "message": "add milk"}
            answered = (await client.post("/api/chat", json=body)).json()

    events = js_events(raw)
    (streamed,) = [data for name, data in events if name == "tool_result"]
    (done,) = [data for name, data in events if name == "done"]
    (plain,) = answered["tool_calls"]
    assert isinstance(streamed["result"], dict)
    assert isinstance(plain["result"], dict)
    assert streamed["result"] == done["tool_calls"][0]["result"]
    assert streamed["result"].keys() == plain["result"].keys()
    assert "milk" in json.dumps(streamed["result"]) and "milk" in json.dumps(plain["result"])


async def test_a_slow_turn_sends_keep_alive_comments_until_done(tmp_path: Path) -> None:
    plugins = Plugins.load()
    plugins.register(SlowModels(), "test-slow")
    settings = settings_for(tmp_path, plugins, server={"stream_keepalive": 0.25})
    async with serving(settings, plugins) as served:
        await served.runtime.storage.agents.update(AGENT, model="slow:model")
        raw = await stream(served, "take your time")

    blocks = raw.split("\n\n")
    first_event = next(i for i, b in enumerate(blocks) if b.startswith("event: "))
    assert blocks[:first_event].count(": keep-alive") >= 3
    name, done = js_events(raw)[-1]
    assert (name, done["response"]) == ("done", "slow but sure")
