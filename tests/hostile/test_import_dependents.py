"""``chatwright import llm-agent`` when one write fails: the rest goes on, its rows do not.

A write that failed with anything but chatwright's own errors (a
``UnicodeEncodeError`` of the driver) stopped the whole import with ``Error:
unexpected …``; and a chat that failed had its messages imported anyway,
unreachable (no session), counted ``exists`` on every later run. Now a failed item
is reported ``failed`` with why, whatever the error, and the rows belonging to it
(an agent's tools, customizations, memory and chats; a chat's messages) are
``skip``: its agent or chat was not imported. Run again, they all go in.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from chatwright.errors import InvalidInputError
from chatwright.plugins.sql.sessions import SQLSessionStore
from chatwright.plugins.sql.stores import SQLAgentStore
from tests.harness import ok
from tests.test_bundles import on_storage
from tests.test_import_llm_agent import bare_tables, original_database

REFUSED = "11111111-2222-4333-8444-555555555555"
"""A chat of the agent that is imported, whose session the database refuses."""
CRASHY_CHAT = "22222222-2222-4333-8444-555555555555"
FINE = "33333333-2222-4333-8444-555555555555"

TABLES = bare_tables()


def build(conn: Any) -> None:
    conn.execute(TABLES)
    conn.execute(
        "INSERT INTO agent_configurations VALUES "
        "(1, 'steady', '{\"model\": \"offline:assistant\"}', 'Hi'), "
        "(2, 'crashy', '{\"model\": \"offline:assistant\"}', 'Hi')"
    )
    listing = json.dumps({"table_name": "tasks", "method": "fetch"})
    conn.execute(
        "INSERT INTO agent_tools VALUES (1, 1, 'list_tasks', 'CRUDTool', 'l', %s, 0), "
        "(2, 2, 'list_tasks', 'CRUDTool', 'l', %s, 0)",
        (listing, listing),
    )
    conn.execute(
        "INSERT INTO user_agent_prompt_customizations VALUES "
        "(1, 'u1', 'steady', 'tone', '\"Be brief.\"'), (2, 'u1', 'crashy', 'tone', '\"Hm.\"')"
    )
    conn.execute(
        "INSERT INTO agent_long_term_memory VALUES "
        "(1, 'u1', 'steady', 'likes teal'), (2, 'u1', 'crashy', 'likes red')"
    )
    conn.execute(
        "INSERT INTO chat_sessions VALUES (1, 'u1', 'steady', %s), (2, 'u1', 'crashy', %s), "
        "(3, 'u1', 'steady', %s)",
        (REFUSED, CRASHY_CHAT, FINE),
    )
    for n, chat in enumerate((REFUSED, CRASHY_CHAT, FINE), start=1):
        message = {"type": "human", "data": {"content": f"hello {n}"}}
        conn.execute(
            "INSERT INTO chat_message_history VALUES (%s, %s, %s)",
            (n, chat, json.dumps(message)),
        )


@pytest.fixture(scope="module")
def original() -> Iterator[str]:
    with original_database("dependents", build) as url:
        yield url


def stored(url: str) -> dict[str, Any]:
    async def read(storage: Any) -> dict[str, Any]:
        return {
            "agents": sorted(a.name for a in await storage.agents.list()),
            "tools": [
                a
                for a in ("steady", "crashy")
                if any(t.name == "list_tasks" for t in await storage.tools.list(a))
            ],
            "memories": [
                a for a in ("steady", "crashy") if await storage.memories.get("u1", a) is not None
            ],
            "customizations": [
                a for a in ("steady", "crashy") if await storage.customizations.list("u1", a)
            ],
            "chats": {
                chat: (
                    await storage.sessions.chat_owner(uuid.UUID(chat)),
                    len(await storage.messages.window("u1", uuid.UUID(chat), 9)),
                )
                for chat in (REFUSED, CRASHY_CHAT, FINE)
            },
        }

    result: dict[str, Any] = on_storage(url, read)
    return result


def test_a_failed_write_is_reported_and_what_belongs_to_it_is_not_imported(
    example: Any, original: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite+aiosqlite:///{example}"
    create, open_session = SQLAgentStore.create, SQLSessionStore.open

    async def failing_create(self: Any, name: str, **fields: Any) -> Any:
        if name == "crashy":
            raise UnicodeEncodeError("utf-8", "x\ud800", 1, 2, "surrogates not allowed")
        return await create(self, name, **fields)

    async def refusing_open(self: Any, user: str, agent: str, **options: Any) -> Any:
        if options.get("chat_id") == uuid.UUID(REFUSED):
            raise InvalidInputError("the database refused a value")
        return await open_session(self, user, agent, **options)

    with monkeypatch.context() as patch:
        patch.setattr(SQLAgentStore, "create", failing_create)
        patch.setattr(SQLSessionStore, "open", refusing_open)
        result = ok("import", "llm-agent", "--from", original, "--yes")
    assert result.stderr == "" and "Traceback" not in result.output
    lines = result.stdout.splitlines()
    done = lines.index("Imported 6 item(s).")
    crashed = (
        "not imported: the write failed unexpectedly: UnicodeEncodeError: 'utf-8' codec "
        "can't encode character '\\ud800' in position 1: surrogates not allowed"
    )
    agent_gone = "its agent (agent_configurations 2) was not imported"
    assert lines[done + 1 :] == [
        f"failed: agent 'crashy' <- agent_configurations 2: {crashed}",
        f"skipped: tool crashy/list_tasks <- agent_tools 2: {agent_gone}",
        f"skipped: customization u1/crashy/tone <- user_agent_prompt_customizations 2: "
        f"{agent_gone}",
        f"skipped: memory u1/crashy <- agent_long_term_memory 2: {agent_gone}",
        f"failed: chat {REFUSED} <- chat_sessions 1: not imported: the database refused a value",
        f"skipped: chat {CRASHY_CHAT} <- chat_sessions 2: {agent_gone}",
        f"skipped: messages of chat {REFUSED} <- chat_message_history 1..1 "
        f"(session_id {REFUSED}): its chat (chat_sessions 1) was not imported",
        f"skipped: messages of chat {CRASHY_CHAT} <- chat_message_history 2..2 "
        f"(session_id {CRASHY_CHAT}): its chat (chat_sessions 2) was not imported",
    ]
    assert stored(url) == {
        "agents": ["assistant", "steady"],
        "tools": ["steady"],
        "memories": ["steady"],
        "customizations": ["steady"],
        "chats": {REFUSED: (None, 0), CRASHY_CHAT: (None, 0), FINE: (("u1", "steady"), 1)},
    }

    # The JSON report says the same; run again, everything left out goes in, nothing twice.
    report = json.loads(ok("import", "llm-agent", "--from", original, "--yes", "--json").stdout)
    assert report["failed"] == []
    actions = {i["source"]: i["action"] for i in report["items"]}
    assert actions == {
        "agent_configurations 1": "exists",
        "agent_configurations 2": "import",
        "agent_tools 1": "exists",
        "agent_tools 2": actions["agent_tools 2"],
        "user_agent_prompt_customizations 1": "exists",
        "user_agent_prompt_customizations 2": "import",
        "agent_long_term_memory 1": "exists",
        "agent_long_term_memory 2": "import",
        "chat_sessions 1": "import",
        "chat_sessions 2": "import",
        "chat_sessions 3": "exists",
        f"chat_message_history 1..1 (session_id {REFUSED})": "import",
        f"chat_message_history 2..2 (session_id {CRASHY_CHAT})": "import",
        f"chat_message_history 3..3 (session_id {FINE})": "exists",
    }
    assert actions["agent_tools 2"] in ("import", "import disabled")
    assert stored(url) == {
        "agents": ["assistant", "crashy", "steady"],
        "tools": ["steady", "crashy"],
        "memories": ["steady", "crashy"],
        "customizations": ["steady", "crashy"],
        "chats": {
            REFUSED: (("u1", "steady"), 1),
            CRASHY_CHAT: (("u1", "crashy"), 1),
            FINE: (("u1", "steady"), 1),
        },
    }
