"""The web chat page in headless Chromium, against a real server.

Chromium comes from the operating system (Debian's ``chromium`` package, which
``.ci/run`` installs); Playwright drives it through ``executable_path``, so no
browser is downloaded. Without Chromium the test skips, saying so, except
under ``CI=true`` where it fails.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from chatwright.plugins.example import assistant as example
from chatwright.plugins.server.app import create_app
from chatwright.registry import LoadPolicy, Plugins
from chatwright.settings import Settings
from tests.harness import ACTIVE, storage_for, uvicorn_serving

CHROMIUM = next(
    (
        p
        for p in (
            os.environ.get("CHATWRIGHT_CHROMIUM"),
            shutil.which("chromium"),
            shutil.which("chromium-browser"),
        )
        if p
    ),
    None,
)


def require_chromium() -> str:
    if CHROMIUM is None:
        reason = "no Chromium installed (apt-get install chromium, or set CHATWRIGHT_CHROMIUM)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true requires the browser test: {reason}")
        pytest.skip(reason)
    return CHROMIUM


async def launch(pw: Any, executable: str) -> Any:
    """The system's Chromium, headless, as every browser test starts it."""
    return await pw.chromium.launch(
        executable_path=executable,
        args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
    )


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[tuple[str, str]]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'browser.db'}"
    storage = storage_for(url)
    await storage.upgrade()
    await example.seed(storage, "offline:assistant")
    await storage.close()
    settings = Settings(
        storage={"url": url},  # type: ignore[arg-type]
        sessions={"heartbeat_interval": 0.3, "sweep_interval": 3600},  # type: ignore[arg-type]
    )
    app = create_app(settings, Plugins.load(LoadPolicy()))
    async with uvicorn_serving(app) as port:
        yield f"http://127.0.0.1:{port}/", url


async def sessions(url: str) -> list[sa.Row[tuple[str, bool, object, object]]]:
    storage = storage_for(url)
    try:
        async with storage.read() as conn:
            result = await conn.execute(
                sa.text(
                    f"SELECT chat_id, {ACTIVE}, created_at, updated_at FROM chat_sessions "
                    "ORDER BY created_at"
                )
            )
            return list(result.all())
    finally:
        await storage.close()


async def wait_for(check: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():  # type: ignore[operator]
            return
        await asyncio.sleep(0.1)
    raise AssertionError("condition not met in time")


async def test_web_page_chats_streams_reloads_heartbeats_and_beacons(
    server: tuple[str, str],
) -> None:
    executable = require_chromium()
    from playwright.async_api import async_playwright

    page_url, db_url = server
    async with async_playwright() as pw:
        browser = await launch(pw, executable)
        try:
            page = await browser.new_page()
            await page.goto(page_url)
            await page.wait_for_function("document.querySelector('#agent').options.length > 0")
            await page.wait_for_function(
                "document.querySelector('#status').textContent.startsWith('chat')"
            )

            await page.fill("#input", "add a task to buy milk")
            await page.keyboard.press("Enter")
            tool = page.locator(".msg.tool", has_text="add_task")
            await tool.first.wait_for()
            reply = page.locator(".msg.ai", has_text="Added task #1: buy milk")
            await reply.wait_for()

            # The heartbeat reaches the server: the session's updated_at moves on.
            async def beaten() -> bool:
                rows = await sessions(db_url)
                return (
                    bool(rows) and rows[-1].is_active and rows[-1].updated_at > rows[-1].created_at
                )

            await wait_for(beaten)

            # A reload shows the history again (the original lost it), in a new session.
            await page.reload()
            await page.locator(".msg.human", has_text="add a task to buy milk").wait_for()
            await page.locator(".msg.ai", has_text="Added task #1: buy milk").wait_for()
            await page.locator(".msg.tool", has_text="add_task").first.wait_for()

            # The first page's beacon closes its session, and the new page has its own.
            # The beacon may arrive after the new page opened its session (the same
            # client key finds the first one still active, and the beacon then closes
            # it): the new page's heartbeat sees that and opens another.
            async def reopened() -> bool:
                rows = await sessions(db_url)
                return len(rows) >= 2 and not rows[0].is_active and rows[-1].is_active

            await wait_for(reopened)
            rows = await sessions(db_url)
            assert len({r.chat_id for r in rows}) == 1

            # Leaving the page sends the deactivate beacon.
            await page.close(run_before_unload=True)

            async def all_closed() -> bool:
                return all(not r.is_active for r in await sessions(db_url))

            await wait_for(all_closed)
        finally:
            await browser.close()


async def test_a_long_streamed_reply_is_rendered_once_a_frame_not_once_a_token(
    server: tuple[str, str],
) -> None:
    """The page rendered the whole reply's Markdown again for every token: 4,000 tokens
    held the tab for 16 s. Here the stream is 3,000 tokens in one answer."""
    import json

    from playwright.async_api import async_playwright

    base, _ = server
    pieces = [("word " if i % 20 else "\n\n- item **bold** ") for i in range(3000)]
    text = "".join(pieces)
    events = [f"event: token\ndata: {json.dumps({'text': p})}\n\n" for p in pieces]
    done = {"response": text, "tool_calls": [], "turn_id": None, "status": "done"}
    events.append(f"event: done\ndata: {json.dumps(done)}\n\n")

    async def answer(route: Any) -> None:
        headers = {"content-type": "text/event-stream"}
        await route.fulfill(status=200, headers=headers, body="".join(events))

    async with async_playwright() as pw:
        browser = await launch(pw, require_chromium())
        try:
            page = await browser.new_page()
            await page.route("**/api/chat/stream", answer)
            await page.goto(base)
            await page.wait_for_function(
                "document.querySelector('#status').textContent.startsWith('chat')"
            )
            await page.evaluate(
                "() => { window.renders = 0; const render = window.renderMarkdown;"
                "window.renderMarkdown = (t) => { window.renders++; return render(t); }; }"
            )
            await page.fill("#input", "hi")
            await page.keyboard.press("Enter")
            await page.wait_for_function("!document.querySelector('#send').disabled")
            renders = await page.evaluate("window.renders")
            assert 1 <= renders <= 20, renders
            shown = await page.locator(".msg.ai .md").last.inner_text()
            assert shown.count("item") == 150 and shown.count("word") == 2850
        finally:
            await browser.close()


async def test_a_stream_refused_for_its_token_asks_for_one_and_sends_again(
    server: tuple[str, str],
) -> None:
    """Every other request asked for a new token on 401; the stream only showed the error."""
    import json

    from playwright.async_api import async_playwright

    base, _ = server
    sent: list[str | None] = []

    async def jwt_config(route: Any) -> None:
        answer = await route.fetch()
        await route.fulfill(response=answer, json={**await answer.json(), "auth": "jwt"})

    async def stream(route: Any) -> None:
        sent.append(route.request.headers.get("authorization"))
        if len(sent) == 1:
            await route.fulfill(status=401, json={"error": "the token has expired"})
            return
        done = {"response": "hello again", "tool_calls": [], "turn_id": None, "status": "done"}
        body = f"event: done\ndata: {json.dumps(done)}\n\n"
        await route.fulfill(status=200, headers={"content-type": "text/event-stream"}, body=body)

    async with async_playwright() as pw:
        browser = await launch(pw, require_chromium())
        try:
            page = await browser.new_page()
            await page.route("**/api/config", jwt_config)
            await page.route("**/api/chat/stream", stream)
            await page.goto(base)
            await page.fill("#token", "old-token")
            await page.click("#login button")
            await page.wait_for_function(
                "document.querySelector('#status').textContent.startsWith('chat')"
            )
            await page.fill("#input", "hi")
            await page.keyboard.press("Enter")
            await page.wait_for_selector("#login[open]")
            await page.fill("#token", "new-token")
            await page.click("#login button")
            await page.wait_for_function("!document.querySelector('#send').disabled")
            assert sent == ["Bearer old-token", "Bearer new-token"]
            assert await page.locator(".msg.ai .md").last.inner_text() == "hello again"
            assert await page.locator(".msg.human").count() == 1
        finally:
            await browser.close()
