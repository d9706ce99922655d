"""Tool rows that name chatwright's own tables, planted with plain SQL and called by a model.

``tools add`` refuses a crud tool on a framework table; a row inserted into
``agent_tools`` by hand never met that check, so the tool loader and the record
store must refuse it too, whatever the spelling: the plain name, upper or mixed
case (SQLite matches table names case-insensitively), quoted, or schema
qualified. The server allows every one of these names as an unscoped table, so
that only the framework-table check stands between bob and other users' chats,
the agents' settings and the tool rows. Nothing may be read, changed or deleted.
"""

from __future__ import annotations

from typing import Any

from chatwright.plugins.example import assistant as example
from chatwright.runtime import Runtime
from tests.hostile.conftest import (
    MakeServer,
    Server,
    any_text,
    plant_tool,
    say,
    script,
    sql,
)

ALICE_SAYS = "the vault code is 0451-tangerine"
API_KEY = "sk-hostile-never-leak-0123456789"
UNSCOPED = {"user_column": None}

EXACT = [
    "agents",
    "agent_tools",
    "chat_messages",
    "chat_sessions",
    "active_sessions",
    "chatwright_schema_version",
]
SPELLED = ['"agents"', '"Agents"', "public.agents", "main.agents", "public.chat_messages", ""]
CASED = ["CHAT_MESSAGES", "Chat_Messages", "AGENTS", "Agents", "Agent_Tools", "CHAT_SESSIONS"]


def tools_on(table: str, prefix: str) -> dict[str, dict[str, Any]]:
    """Every operation on ``table``, unscoped (so only the framework check can refuse)."""
    return {
        f"{prefix}_read": {"table": table, "operation": "read", "scope": UNSCOPED},
        f"{prefix}_update": {
            "table": table,
            "operation": "update",
            "args": {"model": {}, "content": {"type": "json"}, "is_active": {"type": "boolean"}},
            "filters": {"id": {"type": "integer", "required": True}},
            "scope": UNSCOPED,
        },
        f"{prefix}_delete": {
            "table": table,
            "operation": "delete",
            "filters": {"id": {"type": "integer", "required": True}},
            "scope": UNSCOPED,
        },
        f"{prefix}_create": {
            "table": table,
            "operation": "create",
            "args": {"name": {}, "user_id": {}, "content": {"type": "json"}},
            "scope": UNSCOPED,
        },
        f"{prefix}_scoped_read": {"table": table, "operation": "read"},
    }


async def snapshot(runtime: Runtime) -> dict[str, Any]:
    """The framework's rows an attack could touch: the agents' and tools', and alice's."""
    return {
        # The attacked agent's model_settings hold each turn's script: not compared.
        "agents": await sql(
            runtime,
            "SELECT id, name, system_prompt, model, history_window, CASE WHEN name = :agent "
            "THEN NULL ELSE model_settings END AS settings FROM agents ORDER BY id",
            agent=example.AGENT,
        ),
        "agent_tools": await sql(runtime, "SELECT * FROM agent_tools ORDER BY id"),
        "schema": await sql(runtime, "SELECT * FROM chatwright_schema_version"),
        **{
            table: await sql(runtime, f"SELECT * FROM {table} WHERE user_id = 'alice' ORDER BY 1")
            for table in ("chat_sessions", "chat_messages")
        },
    }


async def setup(server: Server, tables: list[str]) -> list[str]:
    """Alice's chat holds a secret, an agent holds a key; tools on ``tables`` are planted."""
    runtime = server.runtime
    await example.seed(runtime.storage, "scripted:x")
    await runtime.storage.agents.create(
        "paid", system_prompt="p", model="openai:gpt-4o-mini", model_settings={"api_key": API_KEY}
    )
    await runtime.storage.agents.update(example.AGENT, model_settings=script())
    await say(server, "alice", [], message=ALICE_SAYS)
    names = []
    for i, table in enumerate(tables):
        for name, config in tools_on(table, f"t{i}").items():
            await plant_tool(runtime, name, config)
            names.append(name)
    return names


async def attack(server: Server, names: list[str]) -> None:
    runtime = server.runtime
    before = await snapshot(runtime)
    calls = [
        (name, {"id": 1, "model": "offline:pwned", "name": "x", "user_id": "bob"}) for name in names
    ]
    calls += [(name, {"id": 1}) for name in names]
    calls += [(name, {}) for name in names]
    answer = await say(server, "bob", calls)
    results = answer["tool_calls"]
    assert len(results) == len(calls)
    for (name, args), result in zip(calls, results, strict=True):
        assert result["error"], (name, args, result)
    text = any_text(answer)
    assert ALICE_SAYS not in text
    assert API_KEY not in text
    assert await snapshot(runtime) == before
    assert len(before["chat_messages"]) >= 2  # alice's secret is there to be taken


async def test_exact_quoted_and_qualified_framework_table_names_are_refused(
    make_server: MakeServer,
) -> None:
    tables = EXACT + SPELLED
    server = await make_server(tools={"unscoped_tables": tables})
    await attack(server, await setup(server, tables))


async def test_case_variants_of_framework_table_names_are_refused(make_server: MakeServer) -> None:
    server = await make_server(tools={"unscoped_tables": CASED})
    await attack(server, await setup(server, CASED))
