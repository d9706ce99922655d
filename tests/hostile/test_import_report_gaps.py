"""``chatwright import llm-agent``: every row of the original has its line in the report.

Rows the original's tables allowed (they had no unique keys, and wider columns)
were dropped or changed without a word: a second ``chat_sessions`` row of a chat
had no line; a second tool row of the same name for an agent was ``exists``, its
config dropped; a customization kind over 100 characters was cut to 100 (and a
second one with the same first 100 then ``exists``, lost); a priority of
5,000,000,000 became 0, and so did a tool's ``"order"``. Now a second row with
the same key is ``skip`` naming the first, a kind too long is ``skip``, a
priority out of range is clamped and an order out of range is position 0, each
with a note.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from tests.harness import ok
from tests.test_bundles import db as db
from tests.test_bundles import on_storage
from tests.test_import_llm_agent import bare_tables, original_database

CHAT = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"
LONG = "k" * 100 + "-one"
EXACT = "k" * 100
LOW, HIGH = -(2**31), 2**31 - 1

TABLES = bare_tables(wide=True)


def build(conn: Any) -> None:
    conn.execute(TABLES)
    conn.execute(
        "INSERT INTO agent_configurations VALUES "
        "(1, 'support', '{\"model\": \"offline:assistant\"}', 'Hi'), "
        "(2, 'support', '{\"model\": \"offline:assistant\"}', 'Other')"
    )
    tasks, notes = (json.dumps({"table_name": t, "method": "fetch"}) for t in ("tasks", "notes"))
    conn.execute(
        "INSERT INTO agent_tools VALUES (1, 1, 'list_tasks', 'CRUDTool', 'tasks', %s, 0), "
        "(2, 1, 'list_tasks', 'CRUDTool', 'notes!', %s, 1), "
        "(3, 2, 'list_notes', 'CRUDTool', 'notes', %s, 2), "
        "(4, 1, 'all_tasks', 'CRUDTool', 'tasks', %s, 5000000000)",
        (tasks, notes, notes, tasks),
    )
    conn.execute(
        "INSERT INTO chat_sessions VALUES (1, 'alice', 'support', %s), "
        "(2, 'bob', 'support', %s), (3, 'alice', 'support', %s)",
        (CHAT, CHAT, CHAT),
    )
    conn.execute(
        "INSERT INTO chat_message_history VALUES (1, %s, %s)",
        (CHAT, json.dumps({"type": "human", "data": {"content": "hi"}})),
    )
    conn.execute(
        "INSERT INTO user_agent_prompt_customizations VALUES "
        "(1, 'alice', 'support', %s, '\"first\"', 5000000000), "
        "(2, 'alice', 'support', 'tone', '\"a\"', 5000000000), "
        "(3, 'alice', 'support', 'tone', '\"b\"', 1), "
        "(4, 'alice', 'support', %s, '\"exact\"', -5000000000)",
        (LONG, EXACT),
    )
    conn.execute(
        "INSERT INTO agent_long_term_memory VALUES "
        "(1, 'alice', 'support', 'a'), (2, 'alice', 'support', 'b')"
    )


@pytest.fixture(scope="module")
def original() -> Iterator[str]:
    with original_database("report_gaps", build) as url:
        yield url


ROWS = {
    "agent_configurations": 2,
    "agent_tools": 4,
    "chat_sessions": 3,
    "user_agent_prompt_customizations": 4,
    "agent_long_term_memory": 2,
}
SKIPPED = {
    "agent_configurations 2": (
        "agent_configurations 1 has the same agent_name; only the first row is imported"
    ),
    "agent_tools 2": (
        "agent_tools 1 has the same name for this agent; only the first row is imported"
    ),
    "agent_tools 3": "its agent is not imported (agent_configurations 2 is skipped)",
    "chat_sessions 2": (
        "chat_sessions 1 has the same chat_id, for another user or agent: a chat has one user "
        "and agent, so this row is not imported"
    ),
    "chat_sessions 3": (
        "another session of the chat of chat_sessions 1, which is imported from that row: a "
        "chat is imported once, as one closed session"
    ),
    "user_agent_prompt_customizations 1": (
        "customization_type is 104 characters long; a kind is at most 100 (shorten it in the "
        "original)"
    ),
    "user_agent_prompt_customizations 3": (
        "user_agent_prompt_customizations 2 has the same user_id, agent_name and "
        "customization_type; only the first row is imported"
    ),
    "agent_long_term_memory 2": (
        "agent_long_term_memory 1 has the same user_id and agent_id; only the first row is imported"
    ),
}


def test_every_row_has_a_line_and_nothing_is_changed_silently(db: str, original: str) -> None:
    out = ok("import", "llm-agent", "--from", original, "--yes", "--json").stdout
    report = json.loads(out)
    assert report["failed"] == []
    lines = Counter(i["source"].split()[0] for i in report["items"])
    assert {t: lines[t] for t in ROWS} == ROWS
    items = {i["source"]: i for i in report["items"]}
    assert {s: (i["action"], i["problems"]) for s, i in items.items() if i["action"] == "skip"} == {
        s: ("skip", [why]) for s, why in SKIPPED.items()
    }
    assert items["agent_tools 4"]["problems"] == [
        f'"order" 5000000000 does not fit a position ({LOW} to {HIGH}); imported at position 0'
    ]
    assert items["user_agent_prompt_customizations 2"]["problems"] == [
        f"priority 5000000000 is out of chatwright's range ({LOW} to {HIGH}); imported as {HIGH}"
    ]
    assert items["user_agent_prompt_customizations 4"]["problems"] == [
        f"priority -5000000000 is out of chatwright's range ({LOW} to {HIGH}); imported as {LOW}"
    ]

    async def read(storage: Any) -> dict[str, Any]:
        return {
            "prompt": (await storage.agents.get("support")).system_prompt,
            "tools": sorted(
                (t.name, t.description, t.config["table"])
                for t in await storage.tools.list("support")
            ),
            "customizations": sorted(
                (c.kind, c.content, c.priority)
                for c in await storage.customizations.list("alice", "support")
            ),
            "memory": (await storage.memories.get("alice", "support")).notes,
            "chats": [
                await storage.sessions.chat_owner(uuid.UUID(CHAT)),
                len(await storage.messages.window("alice", uuid.UUID(CHAT), 9)),
                len(await storage.messages.window("bob", uuid.UUID(CHAT), 9)),
            ],
        }

    assert on_storage(db, read) == {
        "prompt": "Hi",
        "tools": [("all_tasks", "tasks", "tasks"), ("list_tasks", "tasks", "tasks")],
        "customizations": [(EXACT, "exact", LOW), ("tone", "a", HIGH)],
        "memory": "a",
        "chats": [("alice", "support"), 1, 0],
    }
