"""Review findings "errors show the database and other users' values", replayed.

A statement that failed (a column renamed under a loaded tool) used to reach
the user as the database's address and the driver's text, and a unique
constraint's refusal quoted the row that held the value ("Key (email)=(alice@…)
already exists"). What reaches the model, the API or the terminal names the
column at fault; the address, the file, the SQL and other rows stay in the log.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy.engine import make_url

from chatwright.plugins.example import assistant as example
from chatwright.runtime import Runtime
from tests.hostile.conftest import MakeRuntime, any_text
from tests.hostile.test_cross_user_upsert import script, sql

AGENT = example.AGENT
ALICES_EMAIL = "alice.secret@example.com"
SQL_WORDS = ("SELECT", "INSERT", "UPDATE", "DELETE", "RETURNING", "VALUES")


def leaks(runtime: Runtime, text: str) -> list[str]:
    """What of the database's address or of SQL text ``text`` gives away."""
    url = make_url(runtime.settings.storage.url)
    found = [w for w in SQL_WORDS if w in text]
    for part in (url.host, url.database, url.username, str(url.port or "")):
        if part and part not in {"postgres", "5432"} and part in text:
            found.append(part)
    if url.database and url.database.rsplit("/", 1)[-1] in text:
        found.append(url.database)
    return found


async def test_a_failed_statement_does_not_show_the_database_or_the_sql(
    make_runtime: MakeRuntime,
) -> None:
    runtime = await make_runtime()
    storage = runtime.storage
    await example.seed(storage, "scripted:x")
    one = script(("add_task", {"title": "one"}))
    # Two turns of the same call: the scripted model answers from one list.
    await storage.agents.update(AGENT, model_settings={"responses": one["responses"] * 2})
    chat = (await storage.sessions.open("bob", AGENT)).chat_id
    first = await runtime.chat("bob", AGENT, chat, "add one")
    assert [c.error for c in first.tool_calls] == [False]

    # The tool was built for the old schema; its next statement fails in the database.
    # A database error inside a tool is a tool error: the model reads it, so it
    # must name neither the database nor the SQL.
    await sql(runtime, "ALTER TABLE tasks RENAME COLUMN title TO heading")
    second = await runtime.chat("bob", AGENT, chat, "add one more")
    assert [c.error for c in second.tool_calls] == [True]
    message = str(second.tool_calls[0].result)
    # The table is read again and the call checked against it: the column is named.
    assert "table 'tasks' has no column 'title'" in message
    assert leaks(runtime, message) == [], message


PEOPLE_TOOL: dict[str, Any] = {
    "table": "people",
    "operation": "create",
    "args": {"email": {"required": True}},
}


async def test_a_unique_conflict_names_the_column_not_the_other_users_value(
    make_runtime: MakeRuntime,
) -> None:
    runtime = await make_runtime()
    storage = runtime.storage
    await example.seed(storage, "scripted:x")
    await sql(runtime, "DROP TABLE IF EXISTS people")
    key = "SERIAL" if storage.dialect == "postgresql" else "INTEGER"  # type: ignore[attr-defined]
    await sql(
        runtime,
        f"CREATE TABLE people (id {key} PRIMARY KEY, user_id TEXT NOT NULL, "
        "email TEXT NOT NULL UNIQUE)",
    )
    await sql(
        runtime,
        "INSERT INTO agent_tools (agent_id, name, type, config) "
        "SELECT id, 'add_person', 'crud', :config FROM agents WHERE name = :agent",
        config=json.dumps(PEOPLE_TOOL),
        agent=AGENT,
    )
    await storage.agents.update(
        AGENT, model_settings=script(("add_person", {"email": ALICES_EMAIL}))
    )
    alice = (await storage.sessions.open("alice", AGENT)).chat_id
    assert [c.error for c in (await runtime.chat("alice", AGENT, alice, "me")).tool_calls] == [
        False
    ]

    bob = (await storage.sessions.open("bob", AGENT)).chat_id
    turn = await runtime.chat("bob", AGENT, bob, "add her")
    (call,) = turn.tool_calls
    assert call.error
    assert "'email'" in str(call.result)
    # Bob typed the address himself; what must not come back is the stored row.
    seen = any_text([call.result, turn.response])
    assert "alice" not in seen.replace(ALICES_EMAIL, "")
    assert "Key (" not in seen and "DETAIL" not in seen
    await sql(runtime, "DROP TABLE people")
