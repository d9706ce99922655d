"""A chat's summary on the web page, in headless Chromium against a real server.

A chat of the local user is stored with six messages and a summary covering
the first two (as a summarising agent would have left it); the page must show
the summary as a labelled block between the messages it covers and the rest,
as text: the summary was written by a model, and one holding markup must not
run or render.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage, HumanMessage

from chatwright.history import to_store
from chatwright.plugins.example import assistant as example
from chatwright.plugins.server.app import create_app
from chatwright.registry import LoadPolicy, Plugins
from chatwright.runtime import Runtime
from chatwright.settings import Settings
from chatwright.stores import NewSummary
from tests.harness import uvicorn_serving
from tests.test_browser import launch, require_chromium

USER = "local"
HOSTILE = (
    "They asked about <script>window.pwned=1</script> and <img src=x onerror=window.pwned=2>\nmilk"
)


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[str, Runtime]]:
    settings = Settings(
        storage={"url": f"sqlite+aiosqlite:///{tmp_path / 'summary.db'}"},  # type: ignore[arg-type]
        sessions={"sweep_interval": 3600},  # type: ignore[arg-type]
    )
    app = create_app(settings, Plugins.load(LoadPolicy()))
    async with uvicorn_serving(app) as port:
        runtime: Runtime = app.state.runtime
        await example.seed(runtime.storage, "offline:assistant")
        yield f"http://127.0.0.1:{port}/", runtime


async def test_the_summary_shows_as_text_where_the_messages_it_covers_end(
    served: tuple[str, Runtime],
) -> None:
    executable = require_chromium()
    from playwright.async_api import async_playwright

    page_url, runtime = served
    storage = runtime.storage
    session = await storage.sessions.open(USER, example.AGENT, chat_id=uuid.uuid4())
    await storage.sessions.deactivate(USER, session.id)
    said = [m for n in (1, 2, 3) for m in (HumanMessage(f"h{n}"), AIMessage(f"a{n}"))]
    stored = await storage.messages.append(USER, session.chat_id, to_store(said))
    await storage.summaries.put(
        USER, session.chat_id, NewSummary(text=HOSTILE, through_id=stored[1].id, messages=2)
    )

    async with async_playwright() as pw:
        browser = await launch(pw, executable)
        try:
            page = await browser.new_page()
            await page.goto(page_url)
            block = page.locator("section.summary")
            await block.wait_for()
            assert await block.locator("h2").text_content() == "Summary of earlier messages"
            assert await block.locator(".summary-text").text_content() == HOSTILE
            assert "2 messages summarised" in await block.inner_text()
            assert await block.locator("img, script").count() == 0
            assert await page.evaluate("window.pwned === undefined")
            order = await page.evaluate(
                "[...document.querySelectorAll('#log > *')].map((e) =>"
                " e.classList.contains('summary') ? 'SUMMARY' : e.textContent)"
            )
            assert order == ["h1", "a1", "SUMMARY", "h2", "a2", "h3", "a3"]
        finally:
            await browser.close()
