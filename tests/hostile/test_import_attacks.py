"""Hostile input to ``chatwright import llm-agent``.

Malformed ``llm_config``, tool configs and history rows, tool rows aimed at
chatwright's own tables, huge rows, and a database that does not answer: each
is reported per row (or as one clear error), never a traceback, and nothing
already in chatwright is lost.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from chatwright.plugins.sql.storage import SQLStorage
from chatwright.stores import NewMessage
from tests.harness import assert_error, ok, run
from tests.test_import_llm_agent import ORIGINAL_SCHEMA, original_database

USER = "6f1c3c2e-58a4-4a1e-9d4f-0d1b2c3d4e5f"
CHAT = "2b3c4d5e-6f70-4a1b-8c2d-3e4f5a6b7c8d"
TAKEN = "7d6c5b4a-3f2e-4d1c-9b0a-8f7e6d5c4b3a"
"""A chat id chatwright already has, for another user: the import must not join it."""
HUGE = "x" * 1_200_000


def build_hostile(conn: Any) -> None:
    conn.execute(ORIGINAL_SCHEMA)
    agent = conn.execute(
        "INSERT INTO agent_configurations (agent_name, llm_config, system_prompt) "
        "VALUES ('evil', %s::jsonb, 'hi {{ltm_notes}} {0} {__class__}') RETURNING id",
        (json.dumps({"model": "gpt-4o", "temperature": "hot", "api_key": "sk-secret"}),),
    ).fetchone()[0]
    conn.execute(
        "INSERT INTO agent_configurations (agent_name, llm_config, system_prompt) "
        "VALUES ('huge', '{\"model\": \"gpt-4o\"}', %s)",
        (HUGE,),
    )
    conn.execute(
        "INSERT INTO agent_configurations (agent_name, llm_config) VALUES ('listy', '[1, 2]')"
    )
    rows = [
        ("steal", "CRUDTool", {"table_name": "chat_messages", "method": "fetch"}),
        ("steal_tools", "CRUDTool", {"table_name": "agent_tools", "method": "update"}),
        ("inject", "CRUDTool", {"table_name": 'tasks"; DROP TABLE agents; --', "method": "fetch"}),
        ("not_an_object", "CRUDTool", [1, 2, 3]),
        ("bad name!", "CRUDTool", {"table_name": "tasks", "method": "fetch"}),
        ("x" * 300, "CRUDTool", {"table_name": "tasks", "method": "fetch"}),
        (
            "schema_junk",
            "CRUDTool",
            {"table_name": "tasks", "method": "fetch", "runtime_args_schema": "{not json"},
        ),
    ]
    for i, (name, kind, config) in enumerate(rows):
        conn.execute(
            'INSERT INTO agent_tools (agent_id, name, type, config, "order") '
            "VALUES (%s, %s, %s, %s::jsonb, %s)",
            (agent, name, kind, json.dumps(config), i),
        )
    # JSON kept as text (as the original kept some configs), with numbers JSON has not.
    conn.execute(
        "INSERT INTO agent_configurations (agent_name, llm_config) "
        "VALUES ('nanny', to_jsonb(%s::text))",
        ('{"model": "gpt-4o-mini", "max_tokens": NaN, "temperature": 1e400}',),
    )
    conn.execute(
        'INSERT INTO agent_tools (agent_id, name, type, config, "order") '
        "VALUES (%s, 'nan_default', 'CRUDTool', to_jsonb(%s::text), 99)",
        (agent, '{"table_name": "tasks", "method": "fetch", "defaults": {"x": NaN}}'),
    )
    # A config nested deeper than any chatwright keeps (nor could export again).
    deep: object = "x"
    for _ in range(60):
        deep = {"k": deep}
    conn.execute(
        'INSERT INTO agent_tools (agent_id, name, type, config, "order") '
        "VALUES (%s, 'deep_config', 'CRUDTool', %s::jsonb, 98)",
        (agent, json.dumps({"table_name": "tasks", "method": "fetch", "extra": deep})),
    )
    conn.execute(
        "INSERT INTO chat_sessions (user_id, agent_name, chat_id) VALUES (%s, 'evil', %s)",
        (USER, CHAT),
    )
    history = [
        {"type": "human", "data": {"content": "hello"}},
        {"type": "tool", "data": {"content": "no call id"}},
        {"type": "ai", "data": {"content": "x", "tool_calls": "not a list"}},
        {"type": "human"},
        "just a string",
        {"type": "human", "data": {"content": HUGE}},
        {"type": "human", "data": {"content": "nul \u0000 inside"}},
        {"type": "ai", "data": {"content": "bye"}},
    ]
    for message in history:
        conn.execute(
            "INSERT INTO chat_message_history (session_id, message) VALUES (%s, %s::jsonb)",
            (CHAT, json.dumps(message).replace("\\u0000", "\\\\u0000")),
        )
    conn.execute(
        "INSERT INTO chat_sessions (user_id, agent_name, chat_id) VALUES (%s, 'evil', %s)",
        (USER, TAKEN),
    )
    conn.execute(
        "INSERT INTO chat_message_history (session_id, message) VALUES (%s, %s::jsonb)",
        (TAKEN, json.dumps({"type": "human", "data": {"content": "into mallory's chat"}})),
    )
    conn.execute(
        "INSERT INTO user_agent_prompt_customizations (user_id, agent_name, content) "
        "VALUES (%s, 'evil', %s::jsonb)",
        (USER, json.dumps({"weird": [1, {"deep": True}]})),
    )
    conn.execute(
        "INSERT INTO agent_long_term_memory (user_id, agent_id, notes) VALUES (%s, 'evil', %s)",
        (USER, HUGE),
    )


@pytest.fixture(scope="module")
def hostile_url() -> Iterator[str]:
    with original_database("llm_agent_hostile", build_hostile) as url:
        yield url


@pytest.fixture
async def uuid_tasks(pg_storage: SQLStorage) -> AsyncIterator[None]:
    """A uuid-keyed tasks table, dropped afterwards (later tests make the example's own)."""
    yield
    async with pg_storage.write() as conn:
        await conn.execute(sa.text("DROP TABLE IF EXISTS tasks"))


@pytest.mark.usefixtures("uuid_tasks")
async def test_hostile_rows_are_reported_and_framework_tables_refused(
    pg_storage: SQLStorage, pg_url: str, hostile_url: str
) -> None:
    async with pg_storage.write() as conn:
        await conn.execute(sa.text("DROP TABLE IF EXISTS tasks"))
        await conn.execute(
            sa.text(
                "CREATE TABLE tasks (id uuid PRIMARY KEY, user_id uuid NOT NULL, title text, "
                "updated_at timestamptz)"
            )
        )
    await pg_storage.agents.create("keep", system_prompt="mine", model="offline:x")
    await pg_storage.sessions.open("mallory", "evil", chat_id=uuid.UUID(TAKEN))
    mine = {"type": "human", "data": {"content": "mallory's own", "type": "human"}}
    await pg_storage.messages.append("mallory", uuid.UUID(TAKEN), [NewMessage("human", mine)])
    args = ("--database", pg_url, "import", "llm-agent", "--from", hostile_url, "--json", "--yes")
    result = await asyncio.to_thread(ok, *args)
    assert "Traceback" not in result.output and "sk-secret" not in result.output
    report = json.loads(result.stdout)
    items = {i["target"]: i for i in report["items"]}
    evil = items["agent 'evil'"]
    assert evil["action"] == "import"
    assert any("temperature" in p for p in evil["problems"])
    assert any("api_key" in p for p in evil["problems"])
    assert items["agent 'huge'"]["action"] == "skip"
    assert "1,000,000" in items["agent 'huge'"]["problems"][0]
    assert items["agent 'listy'"]["action"] == "skip"
    for name in ("steal", "steal_tools"):
        assert items[f"tool evil/{name}"]["action"] == "skip", items[f"tool evil/{name}"]
        assert "chatwright table" in " ".join(items[f"tool evil/{name}"]["problems"])
    # A table name that is no identifier does not validate: kept disabled, never loaded.
    assert items["tool evil/inject"]["action"] == "import disabled"
    assert "config.table" in " ".join(items["tool evil/inject"]["problems"])
    assert items["tool evil/not_an_object"]["action"] == "skip"
    assert items["tool evil/schema_junk"]["action"] == "import"
    bad_names = [i for i in report["items"] if "tool name" in " ".join(i["problems"])]
    assert len(bad_names) == 2
    # NaN and Infinity are no number JSON holds: not mapped, or the tool is not imported.
    nanny = items["agent 'nanny'"]
    assert nanny["action"] == "import"
    for key in ("max_tokens", "temperature"):
        assert any(p.startswith(f"llm_config.{key} not mapped: ") for p in nanny["problems"])
    nan_tool = items["tool evil/nan_default"]
    assert nan_tool["action"] == "skip"
    assert "config.defaults.x is NaN or infinite" in " ".join(nan_tool["problems"])
    deep_tool = items["tool evil/deep_config"]
    assert deep_tool["action"] == "skip"
    assert "config is nested deeper than" in " ".join(deep_tool["problems"])
    messages = items[f"messages of chat {CHAT}"]
    assert messages["action"] == "import"
    assert len(messages["problems"]) == 5
    assert messages["count"] == 3
    assert items[f"memory {USER}/evil"]["action"] == "skip"

    # Nothing of chatwright's was lost, no tool reaches its tables, and the prompt is safe.
    assert (await pg_storage.agents.get("keep")) is not None
    names = {t.name for t in await pg_storage.tools.list("evil", active_only=True)}
    assert names == {"schema_junk"}
    nanny_row = await pg_storage.agents.get("nanny")
    assert nanny_row is not None and nanny_row.model_settings == {"temperature": 0.7}
    agent = await pg_storage.agents.get("evil")
    assert agent is not None
    assert agent.system_prompt == "hi {memory} {{0}} {{__class__}}"
    stored = await pg_storage.messages.window(USER, uuid.UUID(CHAT), 10)
    assert [m.content["data"]["content"] for m in stored] == [
        "hello",
        "nul \\u0000 inside",  # jsonb holds no NUL: the original kept its escape as text
        "bye",
    ]
    # Another user's chat with the same id is neither joined nor written to.
    assert items[f"chat {TAKEN}"]["action"] == "skip"
    assert items[f"messages of chat {TAKEN}"]["action"] == "skip"
    assert await pg_storage.sessions.chat_owner(uuid.UUID(TAKEN)) == ("mallory", "evil")
    theirs = await pg_storage.messages.window("mallory", uuid.UUID(TAKEN), 10)
    assert [m.content["data"]["content"] for m in theirs] == ["mallory's own"]
    assert await pg_storage.messages.window(USER, uuid.UUID(TAKEN), 10) == []
    customizations = await pg_storage.customizations.list(USER, "evil")
    assert json.loads(customizations[0].content) == {"weird": [1, {"deep": True}]}


def test_a_database_that_does_not_answer_is_one_clear_error(workdir: Any) -> None:
    result = run(
        "import", "llm-agent", "--from", "postgresql://nobody:pw@127.0.0.1:1/none", "--dry-run"
    )
    text = assert_error(result, "cannot read the original database")
    assert "pw" not in text


@pytest.mark.parametrize(
    ("url", "needle"),
    [("not a url", "not a database URL"), ("sqlite:///x.db", "not a PostgreSQL URL")],
)
def test_urls_that_are_not_postgresql_are_refused(workdir: Any, url: str, needle: str) -> None:
    assert_error(run("import", "llm-agent", "--from", url, "--dry-run"), needle)


def test_a_hostile_schema_name_is_refused(workdir: Any) -> None:
    result = run(
        "import", "llm-agent", "--from", "postgresql://x@127.0.0.1:1/y", "--schema", 'a"; --'
    )
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "--schema" in result.output
