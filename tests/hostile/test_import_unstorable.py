"""``chatwright import llm-agent`` and values no database stores, in any field it imports.

The original kept some values as JSON in ``json`` or text columns, which hold what
``jsonb`` refuses: a NUL (``\\u0000``) and a lone surrogate (``\\ud800``), neither of
which chatwright's database (SQLite or PostgreSQL) stores. The dry run passed such a
customization as ``import``; the import then stopped part way with ``Error:
unexpected UnicodeEncodeError``, the agent written and the rest not, at the same row
on every run. A chat whose metadata held a NUL failed on PostgreSQL while its
messages were imported without it. Each such row is now skipped at planning, naming
the row and the field (a chat's metadata is dropped, with a note); the rest goes in.
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
from tests.test_import_llm_agent import original_database

CHAT = "11111111-2222-4333-8444-555555555555"
NUL = "a NUL character (\\u0000), which the database cannot store; remove it in the original"
SURROGATE = (
    "a lone surrogate (\\ud800), which is not a character (nor UTF-8 text) and cannot be "
    "stored; remove it in the original"
)

TABLES = """
CREATE TABLE agent_configurations (id int, agent_name text, llm_config text, system_prompt json);
CREATE TABLE agent_tools (id int, agent_id int, name text, type text, description json,
                          config json, "order" int);
CREATE TABLE user_agent_prompt_customizations (id int, user_id text, agent_name text,
                                               customization_type json, content json);
CREATE TABLE agent_long_term_memory (id int, user_id text, agent_id text, notes json);
CREATE TABLE chat_sessions (id int, user_id text, agent_name text, chat_id text, metadata json);
CREATE TABLE chat_message_history (id int, session_id text, message json);
"""


def build(conn: Any) -> None:
    """JSON kept as ``json`` (its text as written): escapes no stored text may hold."""
    conn.execute(TABLES)
    model = '{"model": "offline:assistant"}'
    conn.execute(
        "INSERT INTO agent_configurations VALUES "
        "(1, 'hostile', %s, '\"Hi {{ltm_notes}}\"'), "
        "(2, 'badprompt', %s, '\"hi\\u0000there\"'), "
        "(3, 'badmodel', '{\"model\": \"offline:a\\ud800\"}', '\"x\"')",
        (model, model),
    )
    # A name that only a regular expression's $ (before a final newline) lets through.
    conn.execute(
        "INSERT INTO agent_configurations VALUES (4, %s, %s, '\"x\"')", ("trailing\n", model)
    )
    listing = json.dumps({"table_name": "tasks", "method": "fetch"})
    conn.execute(
        "INSERT INTO agent_tools VALUES "
        "(1, 1, 'odd_tasks', 'CRUDTool', '\"d\\ud800\"', %s, 0), "
        "(2, 1, 'list_tasks', 'CRUDTool', '\"List tasks.\"', %s, 1), "
        "(3, 2, 'orphan_tasks', 'CRUDTool', '\"x\"', %s, 2)",
        (listing, listing, listing),
    )
    conn.execute(
        "INSERT INTO user_agent_prompt_customizations VALUES "
        "(1, 'u1', 'hostile', '\"sur\"', '{\"instructions\": \"x\\ud800y\"}'), "
        "(2, 'u1', 'hostile', '\"k\\u0000\"', '\"text\"'), "
        "(3, 'u1', 'hostile', '\"tone\"', '\"Be brief.\"')"
    )
    conn.execute(
        "INSERT INTO agent_long_term_memory VALUES "
        "(1, 'u1', 'hostile', '\"n\\ud800\"'), (2, 'u2', 'hostile', '\"likes teal\"')"
    )
    conn.execute(
        "INSERT INTO chat_sessions VALUES (1, 'u1', 'hostile', %s, "
        '\'{"client": "web", "k": "v\\u0000"}\')',
        (CHAT,),
    )
    conn.execute(
        "INSERT INTO chat_message_history VALUES "
        '(1, %s, \'{"type": "human", "data": {"content": "hello"}}\'), '
        '(2, %s, \'{"type": "human", "data": {"content": "x\\ud800"}}\'), '
        '(3, %s, \'{"type": "ai", "data": {"content": "bye"}}\')',
        (CHAT, CHAT, CHAT),
    )


@pytest.fixture(scope="module")
def original() -> Iterator[str]:
    with original_database("unstorable", build) as url:
        yield url


def by_source(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {i["source"]: i for i in report["items"]}


def imported(original: str) -> dict[str, Any]:
    out = ok("import", "llm-agent", "--from", original, "--yes", "--json").stdout
    report: dict[str, Any] = json.loads(out)
    return report


EXPECTED = {
    "agent_configurations 1": ("import", []),
    "agent_configurations 2": ("skip", [f"system_prompt holds {NUL}"]),
    "agent_configurations 3": (
        "skip",
        [
            "model 'offline:a\\ud800': it holds a lone surrogate (\\ud800), which is not a "
            "character (nor UTF-8 text) and cannot be stored; give --model SPEC for such agents"
        ],
    ),
    "agent_configurations 4": (
        "skip",
        [
            "agent name 'trailing\\n' is not one chatwright takes (letters, digits, '_', '.' "
            "and '-', starting with a letter or digit); rename the agent in the original "
            "(and the rows naming it) and run the import again"
        ],
    ),
    "agent_tools 1": ("skip", [f"description holds {SURROGATE}"]),
    "agent_tools 3": ("skip", ["its agent is not imported (agent_configurations 2 is skipped)"]),
    "user_agent_prompt_customizations 1": ("skip", [f"content.instructions holds {SURROGATE}"]),
    "user_agent_prompt_customizations 2": ("skip", [f"customization_type holds {NUL}"]),
    "user_agent_prompt_customizations 3": ("import", []),
    "agent_long_term_memory 1": ("skip", [f"notes holds {SURROGATE}"]),
    "agent_long_term_memory 2": ("import", []),
    "chat_sessions 1": (
        "import",
        [f"metadata.k holds {NUL}; the chat is imported without its metadata"],
    ),
    f"chat_message_history 1..3 (session_id {CHAT})": (
        "import",
        [f"row 2: message.data.content holds {SURROGATE}; left out"],
    ),
}


def test_a_value_no_database_stores_skips_its_row_naming_the_field(db: str, original: str) -> None:
    dry = ok("import", "llm-agent", "--from", original, "--dry-run")
    # The report prints whatever the rows hold: what cannot be printed is escaped.
    assert "customization u1/hostile/k\\u0000" in dry.stdout
    assert f"problem: content.instructions holds {SURROGATE}" in dry.stdout

    report = imported(original)
    assert report["failed"] == []
    items = by_source(report)
    got = {s: (items[s]["action"], items[s]["problems"]) for s in EXPECTED}
    assert got == EXPECTED
    assert items["agent_tools 2"]["action"] in ("import", "import disabled")
    assert report["imported"] == 6  # hostile, list_tasks, tone, u2's memory, the chat, messages

    def stored(storage: Any) -> Any:
        async def read() -> dict[str, Any]:
            return {
                "agents": sorted(a.name for a in await storage.agents.list()),
                "tools": sorted(t.name for t in await storage.tools.list("hostile")),
                "customizations": [
                    (c.kind, c.content) for c in await storage.customizations.list("u1", "hostile")
                ],
                "memories": [
                    (u, m.notes if m else None)
                    for u in ("u1", "u2")
                    for m in [await storage.memories.get(u, "hostile")]
                ],
                "sessions": [dict(s.metadata) for s in await storage.sessions.list("u1")],
                "messages": [
                    m.content["data"]["content"]
                    for m in await storage.messages.window("u1", uuid.UUID(CHAT), 9)
                ],
            }

        return read()

    assert on_storage(db, stored) == {
        "agents": ["assistant", "hostile"],
        "tools": ["list_tasks"],
        "customizations": [("tone", "Be brief.")],
        "memories": [("u1", None), ("u2", "likes teal")],
        "sessions": [{"imported": True}],
        "messages": ["hello", "bye"],
    }

    # Run again: nothing twice, no failure, the same rows skipped for the same reasons.
    again = imported(original)
    assert again["imported"] == 0 and again["failed"] == []
    items = by_source(again)
    for source, (action, problems) in EXPECTED.items():
        if action == "skip":
            assert (items[source]["action"], items[source]["problems"]) == (action, problems)
        else:
            assert items[source]["action"] == "exists", items[source]
