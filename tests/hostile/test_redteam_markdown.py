"""Hostile Markdown against the web page's renderer, in headless Chromium.

A reply is written by a model, which a user's documents or a tool's output can
steer, so the renderer gets what an attacker would write: links to
``javascript:``, ``data:`` and ``vbscript:`` hidden behind case, entities,
control characters and nested brackets, and long lines made to make its regular
expressions backtrack (a line of ``[`` or a heading padded with spaces took
seconds per 40,000 characters and grew with the square of the length). The
renderer's own code is loaded into a blank page, so no server is needed.
"""

from __future__ import annotations

import time
from importlib.resources import files
from typing import Any

import pytest

from tests.test_browser import launch, require_chromium


def renderer() -> str:
    source = (files("chatwright.plugins.server") / "static" / "index.html").read_text()
    start = source.index("// -- Markdown, rendered safely")
    end = source.index("function copyText")
    helper = source[source.index("function el(tag, text, className)") :]
    helper = helper[: helper.index("\n}\n") + 3]
    return source[start:end] + helper


RENDER = """(text) => {
  const box = document.createElement("div");
  box.appendChild(renderMarkdown(text));
  document.body.replaceChildren(box);
  return {
    links: [...box.querySelectorAll("a")].map((a) => a.getAttribute("href")),
    tags: [...box.querySelectorAll("*")].map((n) => n.tagName.toLowerCase()),
    text: box.textContent,
  };
}"""

HOSTILE_LINKS = [
    "[x](javascript:alert(1))",
    "[x](JaVaScRiPt:alert(1))",
    "[x](javascript&#58;alert(1))",
    "[x](java\tscript:alert(1))",
    "[x](\x01javascript:alert(1))",
    "[x](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    "[x](vbscript:msgbox(1))",
    "[x](file:///etc/passwd)",
    "[x](//evil.example/path)",
    "[a [b](javascript:alert(1)) c](https://ok.example/)",
    "[[x](javascript:alert(1))](https://ok.example/)",
    '[x](https://ok.example/"onmouseover="alert(1))',
    "&lt;script&gt;alert(1)&lt;/script&gt; <img src=x onerror=alert(1)>",
    "**[x](javascript:alert(1))** _[y](data:text/html,x)_",
]


@pytest.fixture
async def page() -> Any:
    executable = require_chromium()
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await launch(pw, executable)
        try:
            page = await browser.new_page()
            dialogs: list[str] = []

            async def dismiss(dialog: Any) -> None:
                dialogs.append(dialog.message)
                await dialog.dismiss()

            page.on("dialog", dismiss)
            await page.set_content("<!doctype html><body></body>")
            await page.add_script_tag(content=renderer())
            yield page
            assert dialogs == []
        finally:
            await browser.close()


async def test_links_to_anything_but_http_stay_text(page: Any) -> None:
    for markdown in HOSTILE_LINKS:
        out = await page.evaluate(RENDER, markdown)
        for href in out["links"]:
            assert href.startswith(("http://", "https://")), (markdown, href)
            assert '"' not in href, (markdown, href)
        assert not {"script", "img", "iframe", "object", "embed"} & set(out["tags"]), markdown
    out = await page.evaluate(RENDER, "see [the docs](https://ok.example/a?b=1) now")
    assert out["links"] == ["https://ok.example/a?b=1"]


@pytest.mark.parametrize(
    "line",
    [
        "[" * 200_000,
        "# a" + " " * 200_000 + "b",
        "[a" * 100_000,
        "[a](" * 50_000,
        "**a " * 50_000,
        "*a " * 60_000,
        "`a " * 60_000,
        " _a" * 60_000,
        "- " + " " * 200_000 + "x",
        "```" + " " * 200_000 + "x",
        # Not a fence (no word after the spaces): the fence's pattern must fail fast too.
        "```" + " " * 200_000 + "!",
        "~~~" + " " * 200_000 + "!",
        "  ```" + " " * 200_000 + "x y",
    ],
    ids=[
        "brackets",
        "padded heading",
        "unclosed links",
        "unclosed targets",
        "unclosed strong",
        "unclosed emphasis",
        "unclosed code",
        "underscores",
        "padded item",
        "padded fence",
        "padded fence ending otherwise",
        "padded tilde fence ending otherwise",
        "padded fence of two words",
    ],
)
async def test_long_lines_render_in_linear_time(page: Any, line: str) -> None:
    started = time.monotonic()
    out = await page.evaluate(RENDER, line)
    assert time.monotonic() - started < 5
    assert out["tags"] or out["text"]


async def test_headings_keep_their_text_and_drop_closing_hashes(page: Any) -> None:
    cases = {
        "## Plan ##": "Plan",
        "### Learn C#": "Learn C#",
        "# a   #  ": "a",
        "# ##": "",
        "#   spaced out   ": "spaced out",
    }
    for markdown, heading in cases.items():
        out = await page.evaluate(RENDER, markdown)
        assert out["tags"][0].startswith("h"), markdown
        assert out["text"] == heading, markdown


async def test_fences_keep_their_language_and_a_line_that_is_not_one_stays_text(
    page: Any,
) -> None:
    found = await page.evaluate(
        """(text) => {
          const box = document.createElement("div");
          box.appendChild(renderMarkdown(text));
          const code = box.querySelector("pre > code");
          return code ? [code.dataset.language ?? null, code.textContent] : null;
        }""",
        "say\n  ```python  \nprint(1)\n```\nafter",
    )
    assert found == ["python", "print(1)"]
    for text in ["``` two words", "```!", "~~~ a b"]:
        out = await page.evaluate(RENDER, text)
        assert "pre" not in out["tags"], text
        assert out["text"] == text, text
