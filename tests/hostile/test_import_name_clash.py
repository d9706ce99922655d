"""``chatwright import llm-agent`` and an agent of chatwright's with the original's name.

The original's ``assistant`` (a billing assistant with a ``delete_all_tasks``
tool) is not chatwright's example ``assistant``; the import took it for one it
had made before, reported it ``exists`` and added the tool and the memory to
chatwright's agent. The import knows an agent it made by its system prompt
(the one it makes of the original's row): another agent of the same name is
reported, left as it is, and nothing of the original's agent is imported,
until chatwright's agent is renamed or deleted.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.harness import ok
from tests.test_bundles import db as db
from tests.test_bundles import on_storage
from tests.test_import_llm_agent import bare_tables, original_database

CHAT = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"
CLASH = (
    "chatwright already has an agent 'assistant' that this import did not create (its system "
    "prompt is not the one this row makes, by which the import knows its own): it is left as "
    "it is, and nothing of this agent (tools, customizations, memory, chats) is imported; "
    "rename or delete chatwright's agent, or rename the agent in the original (and the rows "
    "naming it), and run the import again"
)
GONE = "agent 'assistant' is not imported (agent_configurations 1 is skipped)"

TABLES = bare_tables()


def build(conn: Any) -> None:
    conn.execute(TABLES)
    conn.execute(
        "INSERT INTO agent_configurations VALUES "
        "(1, 'assistant', '{\"model\": \"offline:assistant\"}', 'Original billing assistant'), "
        "(2, 'support', '{\"model\": \"offline:assistant\"}', 'Hi {{ltm_notes}}')"
    )
    conn.execute(
        "INSERT INTO agent_tools VALUES "
        "(1, 1, 'delete_all_tasks', 'CRUDTool', 'd', %s, 0), "
        "(2, 1, 'list_tasks', 'CRUDTool', 'd', %s, 1), "
        "(3, 2, 'list_tasks', 'CRUDTool', 'd', %s, 0)",
        tuple(
            json.dumps({"table_name": "tasks", "method": m}) for m in ("delete", "fetch", "fetch")
        ),
    )
    conn.execute(
        "INSERT INTO user_agent_prompt_customizations VALUES "
        "(1, 'u1', 'assistant', 'tone', '\"Bill them.\"')"
    )
    conn.execute(
        "INSERT INTO agent_long_term_memory VALUES "
        "(1, 'u1', 'assistant', 'billing notes'), (2, 'u1', 'support', 'likes teal')"
    )
    conn.execute("INSERT INTO chat_sessions VALUES (1, 'u1', 'assistant', %s)", (CHAT,))
    conn.execute(
        "INSERT INTO chat_message_history VALUES (1, %s, %s)",
        (CHAT, json.dumps({"type": "human", "data": {"content": "pay"}})),
    )


@pytest.fixture(scope="module")
def original() -> Iterator[str]:
    with original_database("name_clash", build) as url:
        yield url


def imported(original: str) -> dict[str, tuple[str, list[str]]]:
    out = ok("import", "llm-agent", "--from", original, "--yes", "--json").stdout
    report = json.loads(out)
    assert report["failed"] == []
    return {i["source"]: (i["action"], i["problems"]) for i in report["items"]}


def state(url: str) -> dict[str, Any]:
    async def read(storage: Any) -> dict[str, Any]:
        agent = await storage.agents.get("assistant")
        return {
            "prompt": agent.system_prompt if agent else None,
            "tools": sorted(
                (t.id, t.name, t.config.get("operation"))
                for t in await storage.tools.list("assistant")
            ),
            "memory": [
                (a, m.notes)
                for a in ("assistant", "support")
                if (m := await storage.memories.get("u1", a)) is not None
            ],
            "customizations": len(await storage.customizations.list("u1", "assistant")),
            "chat": await storage.sessions.chat_owner(uuid.UUID(CHAT)),
        }

    result: dict[str, Any] = on_storage(url, read)
    return result


def test_an_agent_this_import_did_not_create_is_left_and_nothing_joins_it(
    db: str, original: str
) -> None:
    before = state(db)
    assert before["prompt"] != "Original billing assistant" and before["tools"]

    for run in (1, 2):
        items = imported(original)
        assert items["agent_configurations 1"] == ("skip", [CLASH])
        skipped_agent = "its agent is not imported (agent_configurations 1 is skipped)"
        assert items["agent_tools 1"] == ("skip", [skipped_agent])
        assert items["agent_tools 2"] == ("skip", [skipped_agent])
        assert items["user_agent_prompt_customizations 1"] == ("skip", [GONE])
        assert items["agent_long_term_memory 1"] == (
            "skip",
            [GONE.replace("'assistant'", "'assistant' (agent_id)")],
        )
        assert items["chat_sessions 1"] == ("skip", [GONE])
        assert items[f"chat_message_history 1..1 (session_id {CHAT})"] == (
            "skip",
            ["its chat is not imported (chat_sessions 1 is skipped)"],
        )
        # The agent this import made is known again as its own.
        assert items["agent_configurations 2"][0] == ("import" if run == 1 else "exists")
        assert items["agent_long_term_memory 2"][0] == ("import" if run == 1 else "exists")
        # chatwright's assistant is as it was: no tool, memory, customization or chat joined it.
        assert state(db) == {**before, "memory": [("support", "likes teal")]}

    # Once chatwright's agent is deleted, the original's comes in whole.
    ok("agents", "delete", "assistant", "--yes")
    items = imported(original)
    assert items["agent_configurations 1"] == ("import", [])
    after = state(db)
    assert after["prompt"] == "Original billing assistant"
    assert [(name, op) for _, name, op in after["tools"]] == [
        ("delete_all_tasks", "delete"),
        ("list_tasks", "read"),
    ]
    assert after["memory"] == [("assistant", "billing notes"), ("support", "likes teal")]
    assert (after["customizations"], after["chat"]) == (1, ("u1", "assistant"))
