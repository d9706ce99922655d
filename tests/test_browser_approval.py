"""Write safety on the web page, in headless Chromium against a real server.

The ``writer`` agent (see :mod:`tests.write_safety`) replays a script for the
local user: a delete that waits for approval (approved on the page), an update
of several rows (previewed with "N more", denied on the page), then the Undo
button of the approved turn (which restores the row) and of the denied one
(refused: it wrote nothing). Every step is checked in the database too. A task
title holding markup must show as text, never as markup.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.test_browser import launch, require_chromium
from tests.write_safety import AGENT, Api, add_schedule_all, calls, seed_writer, serving

MILK = "buy milk <img src=x onerror=window.pwned=1>"
USER = "local"


async def seed(api: Api) -> dict[str, int]:
    await seed_writer(api.runtime, [])
    ids = {title: await api.task(USER, title) for title in (MILK, "buy bread", "buy eggs")}
    await add_schedule_all(api.runtime)
    script = [
        *calls(("delete_task", {"id": ids[MILK]}), reply="Deleted the milk task."),
        *calls(("schedule_all", {"status": "pending", "due_date": "2027-01-04"}), reply="Left."),
    ]
    await seed_writer(api.runtime, script)
    return ids


async def open_writer(page: Any) -> None:
    """Switch the page to a new chat with the writer, once its first session is open."""
    # The page opens a session with the first agent on load; switching before that ends
    # would race it, and a message sent before the writer's chat is shown would be cleared.
    await page.wait_for_function("document.querySelector('#status').textContent.startsWith('chat')")
    await page.select_option("#agent", AGENT)
    await page.locator(".msg.note", has_text=f"New chat with {AGENT}").wait_for()


async def test_approve_deny_and_undo_on_the_page(tmp_path: Path) -> None:
    executable = require_chromium()
    from playwright.async_api import async_playwright

    url = f"sqlite+aiosqlite:///{tmp_path / 'approval.db'}"
    async with serving(url, jwt_auth=False, tools={"preview_rows": 1}) as api:
        ids = await seed(api)
        async with async_playwright() as pw:
            browser = await launch(pw, executable)
            try:
                page = await browser.new_page()
                await page.goto(api.url + "/")
                await open_writer(page)

                # 1. A delete waits, shown with the row it would delete; approved.
                await page.fill("#input", "delete the milk task")
                await page.keyboard.press("Enter")
                card = page.locator(".approval", has_text="Approve delete_task?")
                await card.wait_for()
                assert "This would delete 1 row of tasks" in await card.inner_text()
                assert await card.locator("td.gone", has_text=MILK).count() == 1
                assert await card.locator("img").count() == 0
                assert await page.evaluate("window.pwned === undefined")
                assert set(await api.tasks(USER)) == set(ids.values())
                await card.locator("button.approve").click()
                await page.locator(".msg.ai", has_text="Deleted the milk task.").wait_for()
                assert set(await api.tasks(USER)) == {ids["buy bread"], ids["buy eggs"]}
                assert await card.locator("button.approve").is_disabled()

                # 2. An update of two rows: one shown, "1 more"; denied.
                await page.fill("#input", "schedule everything")
                await page.keyboard.press("Enter")
                card = page.locator(".approval", has_text="Approve schedule_all?")
                await card.wait_for()
                assert "This would change 2 rows of tasks" in await card.inner_text()
                await card.locator(".more", has_text="1 more row not shown").wait_for()
                assert await card.locator("td.changed", has_text="→ 2027-01-04").count() == 1
                await card.locator("button.deny").click()
                await page.locator(".msg.ai", has_text="Left.").wait_for()
                dates = await api.sql("SELECT due_date FROM tasks WHERE user_id = :u", u=USER)
                assert [r["due_date"] for r in dates] == [None, None]

                # 3. Undo of the approved turn brings the row back; of the denied one, refused.
                undo = page.locator("button.undo")
                assert await undo.count() == 2
                await undo.nth(0).click()
                await page.locator(".msg.note", has_text="reverted").wait_for()
                rows = await api.tasks(USER)
                assert rows[ids[MILK]] == (MILK, "pending")
                await undo.nth(1).click()
                refused = page.locator(".msg.note", has_text="Undo refused")
                await refused.wait_for()
                assert "no rows" in await refused.inner_text()
                assert len(await api.tasks(USER)) == 3

                # 4. A reload shows nothing waiting, and the undo noted in the chat.
                await page.reload()
                await page.locator(".msg.ai", has_text="Undone").wait_for()
                assert await page.locator(".approval").count() == 0
            finally:
                await browser.close()


async def test_a_waiting_action_is_shown_again_after_a_reload(tmp_path: Path) -> None:
    executable = require_chromium()
    from playwright.async_api import async_playwright

    url = f"sqlite+aiosqlite:///{tmp_path / 'reload.db'}"
    async with serving(url, jwt_auth=False) as api:
        ids = await seed(api)
        async with async_playwright() as pw:
            browser = await launch(pw, executable)
            try:
                page = await browser.new_page()
                await page.goto(api.url + "/")
                await open_writer(page)
                await page.fill("#input", "delete the milk task")
                await page.keyboard.press("Enter")
                await page.locator(".approval", has_text="Approve delete_task?").wait_for()

                await page.reload()
                card = page.locator(".approval", has_text="Approve delete_task?")
                await card.wait_for()
                # A message meanwhile is refused, saying why, and shows what waits.
                await page.fill("#input", "hello?")
                await page.keyboard.press("Enter")
                await page.locator(".msg.note", has_text="Error:").wait_for()
                await card.locator("button.approve").click()
                await page.locator(".msg.ai", has_text="Deleted the milk task.").wait_for()
                assert ids[MILK] not in await api.tasks(USER)
            finally:
                await browser.close()
