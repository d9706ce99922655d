"""``chatwright chat`` marks a chat's summary in the history it shows when resuming.

After ``init --example`` and two turns on the ``offline`` model, the chat gets
a summary covering its first turn (as a summarising agent would have stored
it); resuming the chat interactively shows the recent messages with the
summary, labelled, where the first turn ends.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from chatwright.stores import NewSummary
from tests.harness import ok, storage_for
from tests.harness import sqlite_rows as query

pytestmark = pytest.mark.usefixtures("workdir")


async def put_summary(db: Path, chat_id: uuid.UUID, through_id: int) -> None:
    storage = storage_for(f"sqlite+aiosqlite:///{db}")
    await storage.upgrade()
    try:
        text = "The user wants milk."
        await storage.summaries.put("local", chat_id, NewSummary(text, through_id, 4))
    finally:
        await storage.close()


def test_resuming_shows_the_summary_where_the_messages_it_covers_end(example: Path) -> None:
    ok("chat", "-m", "add a task to buy milk")
    ok("chat", "-m", "list my tasks")
    rows = query(example, "SELECT id, chat_id, role FROM chat_messages ORDER BY id")
    human_ids = [row[0] for row in rows if row[2] == "human"]
    chat_id = uuid.UUID(str(rows[0][1]))
    first_turn_ends = max(row[0] for row in rows if row[0] < human_ids[1])
    asyncio.run(put_summary(example, chat_id, first_turn_ends))

    shown = ok("chat", input="").stdout
    start = shown.index("[Summary of earlier messages (4 messages)]")
    assert shown.index("Added task #1: buy milk") < start < shown.index("you> list my tasks")
    assert "The user wants milk.\n[End of summary]" in shown[start:]
