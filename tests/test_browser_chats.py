"""The page's list of past chats and its Markdown replies, in headless Chromium.

The local user has two past chats: an older one, and a newer one whose reply is
Markdown with hostile markup mixed in. The page opens the newest, lists both,
renders the Markdown (a heading, a list, inline and fenced code, an https link)
while every piece of markup stays inert text: no element made from it, no
script run, no dialog. The copy button puts the reply's raw Markdown on the
clipboard. Clicking the older chat shows its history, and the next message goes
on with that chat.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

from chatwright.history import to_store
from chatwright.plugins.example import assistant as example
from chatwright.plugins.server.app import create_app
from chatwright.registry import LoadPolicy, Plugins
from chatwright.runtime import Runtime
from chatwright.settings import Settings
from chatwright.stores import Storage
from tests.harness import uvicorn_serving
from tests.test_browser import launch, require_chromium

USER = "local"
MARKDOWN = """## Plan for the week ##

### Learn C#

Buy **milk** and *bread*, then run `make test`:

- Monday: shop
- Tuesday: cook

```python
print("<b>not bold</b>")
```

See [the docs](https://example.com/docs?a=1) or [this](javascript:alert(1))
or [that](javascript:void0).
<img src=x onerror="alert('img')"> and <script>alert('script')</script>
and <a href="javascript:alert(2)">x</a>
"""


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[str, Runtime]]:
    settings = Settings(
        storage={"url": f"sqlite+aiosqlite:///{tmp_path / 'chats.db'}"},  # type: ignore[arg-type]
        sessions={"sweep_interval": 3600},  # type: ignore[arg-type]
    )
    app = create_app(settings, Plugins.load(LoadPolicy()))
    async with uvicorn_serving(app) as port:
        runtime: Runtime = app.state.runtime
        await example.seed(runtime.storage, "offline:assistant")
        yield f"http://127.0.0.1:{port}/", runtime


async def past_chat(storage: Storage, *said: BaseMessage) -> uuid.UUID:
    session = await storage.sessions.open(USER, example.AGENT, chat_id=uuid.uuid4())
    await storage.sessions.deactivate(USER, session.id)
    await storage.messages.append(USER, session.chat_id, to_store(list(said)))
    return session.chat_id


async def test_past_chats_resume_and_replies_render_as_safe_markdown(
    served: tuple[str, Runtime],
) -> None:
    executable = require_chromium()
    from playwright.async_api import async_playwright

    page_url, runtime = served
    storage = runtime.storage
    older = await past_chat(storage, HumanMessage("remember the milk"), AIMessage("Noted: milk."))
    newer = await past_chat(storage, HumanMessage("plan my week"), AIMessage(MARKDOWN))

    async with async_playwright() as pw:
        browser = await launch(pw, executable)
        try:
            context = await browser.new_context()
            origin = page_url.rstrip("/")
            await context.grant_permissions(["clipboard-read", "clipboard-write"], origin=origin)
            page = await context.new_page()
            dialogs: list[str] = []
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            await page.goto(page_url)

            # The list: newest first, the open chat marked.
            items = page.locator("#chat-list button.chat-item")
            await items.nth(1).wait_for()
            assert await items.locator(".chat-title").all_text_contents() == [
                "plan my week",
                "remember the milk",
            ]
            assert [await items.nth(i).get_attribute("data-chat-id") for i in (0, 1)] == [
                str(newer),
                str(older),
            ]
            await page.locator(".msg.human", has_text="plan my week").wait_for()
            current = page.locator('#chat-list button[aria-current="true"]')
            assert await current.get_attribute("data-chat-id") == str(newer)

            # The reply's Markdown, rendered.
            reply = page.locator(".msg.ai").first
            md = reply.locator(".md")
            assert await md.locator("h2").text_content() == "Plan for the week"
            assert await md.locator("h3").text_content() == "Learn C#"
            assert await md.locator("strong").text_content() == "milk"
            assert await md.locator("em").text_content() == "bread"
            assert await md.locator("p code").text_content() == "make test"
            assert await md.locator("ul > li").all_text_contents() == [
                "Monday: shop",
                "Tuesday: cook",
            ]
            assert await md.locator("pre code").text_content() == 'print("<b>not bold</b>")'
            assert await md.locator("pre b").count() == 0
            links = md.locator("a")
            assert await links.count() == 1
            assert await links.get_attribute("href") == "https://example.com/docs?a=1"
            assert await links.get_attribute("rel") == "noopener noreferrer"
            assert await links.text_content() == "the docs"

            # The markup stays text: no element made from it, nothing run.
            assert await md.locator("img, script, b, iframe").count() == 0
            assert await page.locator("[onerror], a[href^='javascript']").count() == 0
            text = await md.text_content()
            assert text is not None
            assert "<img src=x onerror=\"alert('img')\">" in text
            assert "<script>alert('script')</script>" in text
            assert "[this](javascript:alert(1))" in text and "[that](javascript:void0)" in text
            await page.wait_for_timeout(300)
            assert dialogs == []

            # Copy puts the raw Markdown on the clipboard.
            await reply.locator("button.copy").click()
            await page.wait_for_function(
                "document.querySelector('.msg.ai button.copy').classList.contains('copied')"
            )
            assert await page.evaluate("navigator.clipboard.readText()") == MARKDOWN

            # Resume the older chat: its history shows, and the next turn goes on with it.
            await items.nth(1).click()
            await page.locator(".msg.human", has_text="remember the milk").wait_for()
            await page.locator(".msg.ai", has_text="Noted: milk.").wait_for()
            assert await page.locator(".msg.human", has_text="plan my week").count() == 0
            await page.fill("#input", "list my tasks")
            await page.keyboard.press("Enter")
            await page.locator(".msg.ai").nth(1).wait_for()
            await page.wait_for_function(
                "document.querySelector('#chat-list button.chat-item')?.dataset.chatId === "
                f"'{older}'"
            )
            stored = await storage.messages.page(USER, older, limit=50)
            assert [m.role for m in stored][:3] == ["human", "ai", "human"]
            assert stored[2].content["data"]["content"] == "list my tasks"
            assert len(await storage.messages.page(USER, newer, limit=50)) == 2
            current = page.locator('#chat-list button[aria-current="true"]')
            assert await current.get_attribute("data-chat-id") == str(older)

            # New chat: an empty log, and its first message starts a third chat on top.
            await page.click("#new-chat")
            await page.locator(".msg.note", has_text="New chat with").wait_for()
            await page.fill("#input", "a fresh start")
            await page.keyboard.press("Enter")
            await page.locator(".msg.ai").first.wait_for()
            await items.nth(2).wait_for()
            assert await items.first.locator(".chat-title").text_content() == "a fresh start"
            assert dialogs == []
        finally:
            await browser.close()


def test_the_page_never_parses_text_as_html() -> None:
    """Every node of the page is built with createElement/textContent; no HTML sink is used."""
    from importlib.resources import files

    source = (files("chatwright.plugins.server") / "static" / "index.html").read_text()
    script = source[source.index("<script>") :]
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script, sink


async def test_older_chats_load_on_demand(served: tuple[str, Runtime]) -> None:
    """The list shows 30 chats; **Older chats** adds the rest and then goes away."""
    executable = require_chromium()
    from playwright.async_api import async_playwright

    page_url, runtime = served
    for n in range(32):
        await past_chat(runtime.storage, HumanMessage(f"question {n}"), AIMessage(f"answer {n}"))

    async with async_playwright() as pw:
        browser = await launch(pw, executable)
        try:
            page = await browser.new_page()
            await page.goto(page_url)
            items = page.locator("#chat-list button.chat-item .chat-title")
            await items.nth(29).wait_for()
            more = page.locator("#more-chats")
            await more.wait_for()
            assert await items.count() == 30
            await more.click()
            await items.nth(31).wait_for()
            titles = await items.all_text_contents()
            assert titles == [f"question {n}" for n in range(31, -1, -1)]
            await page.wait_for_selector("#more-chats", state="hidden")
        finally:
            await browser.close()
