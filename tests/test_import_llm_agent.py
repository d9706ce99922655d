"""``chatwright import llm-agent`` on PostgreSQL: the original system's database moved in.

The original's database is built per test run from its tables as an importer
meets them: agents, tool rows in both shapes of ``agent_tools`` (``tool_*``
columns, and ``name``/``type``/``config`` with the config as an object and as
JSON text), uuid keys and user ids, LangChain-format history, customizations,
long-term memory and sessions. chatwright's own database holds the uuid-keyed
``tasks`` table its tools act on. The import is reported, applied, run again
(nothing twice), and then chats through the runtime with the offline and the
scripted model use an imported tool and see the imported history and memory.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatResult
from sqlalchemy.engine import make_url

from chatwright import testing
from chatwright.plugins.models.scripted import ScriptedChatModel
from chatwright.plugins.sql.storage import SQLStorage
from chatwright.registry import LoadPolicy, Plugins
from chatwright.runtime import Runtime
from tests.harness import (
    ADMIN_URL,
    admin_connect,
    assert_error,
    libpq,
    ok,
    pg_storage_settings,
    run,
)

ALICE = "6f1c3c2e-58a4-4a1e-9d4f-0d1b2c3d4e5f"
BOB = "0b0b0b0b-1111-4222-8333-444455556666"
CHAT = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"
BOB_CHAT = "1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f"
TASK = "3e9d1a2b-7c4f-4d5e-9a8b-1c2d3e4f5a6b"

ORIGINAL_SCHEMA = """
CREATE EXTENSION IF NOT EXISTS pgcrypto;
CREATE TABLE agent_configurations (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    agent_name text UNIQUE NOT NULL,
    llm_config jsonb,
    system_prompt text,
    created_at timestamptz DEFAULT now(),
    updated_at timestamptz DEFAULT now()
);
CREATE TABLE agent_tools (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    agent_id uuid REFERENCES agent_configurations(id),
    name text, type text, description text, config jsonb,
    tool_name text, tool_type text, tool_config jsonb,
    is_active boolean DEFAULT true,
    "order" int DEFAULT 0,
    is_deleted boolean DEFAULT false,
    created_at timestamptz DEFAULT now(),
    updated_at timestamptz DEFAULT now()
);
CREATE TABLE chat_sessions (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid NOT NULL,
    agent_name text,
    is_active boolean DEFAULT true,
    updated_at timestamptz DEFAULT now(),
    created_at timestamptz DEFAULT now(),
    metadata jsonb DEFAULT '{}',
    chat_id uuid
);
CREATE TABLE chat_message_history (
    id serial PRIMARY KEY,
    session_id text NOT NULL,
    message jsonb NOT NULL,
    created_at timestamptz DEFAULT now()
);
CREATE TABLE user_agent_prompt_customizations (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid NOT NULL,
    agent_name text NOT NULL,
    customization_type text NOT NULL DEFAULT 'instruction_set',
    content jsonb NOT NULL DEFAULT '{}',
    is_active boolean DEFAULT true,
    priority int DEFAULT 0,
    created_at timestamptz DEFAULT now(),
    updated_at timestamptz DEFAULT now(),
    UNIQUE (user_id, agent_name, customization_type)
);
CREATE TABLE agent_long_term_memory (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid NOT NULL,
    agent_id text NOT NULL,
    notes text,
    created_at timestamptz DEFAULT now(),
    updated_at timestamptz DEFAULT now(),
    UNIQUE (user_id, agent_id)
);
"""

TASKS_TABLE = """
CREATE EXTENSION IF NOT EXISTS pgcrypto;
DROP TABLE IF EXISTS tasks;
CREATE TABLE tasks (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid NOT NULL,
    title text NOT NULL,
    status text NOT NULL DEFAULT 'open',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
)
"""

FETCH_TASK = {
    "table_name": "tasks",
    "method": "fetch",
    "runtime_args_schema": {
        "filters": {
            "type": "dict",
            "optional": False,
            "properties": {"id": {"type": "str", "optional": False}},
        }
    },
}
LIST_TASKS = {"table_name": "tasks", "method": "fetch"}
UPDATE_TASK = {
    "table_name": "tasks",
    "method": "update",
    "field_map": {"task_status": "status"},
    "runtime_args_schema": json.dumps(
        {
            "data": {"type": "dict", "properties": {"task_status": {"type": "str"}}},
            "filters": {"type": "dict", "properties": {"id": {"type": "str", "optional": False}}},
        }
    ),
}


def human(text: str) -> dict[str, Any]:
    return {"type": "human", "data": {"content": text, "additional_kwargs": {}, "type": "human"}}


def ai(text: str, tool_calls: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "type": "ai",
        "data": {"content": text, "type": "ai", "tool_calls": tool_calls or []},
    }


SAID = datetime(2025, 5, 20, 10, 0, tzinfo=UTC)
"""When the original's first history row was written (each later one a minute after)."""
HISTORY: list[tuple[str, dict[str, Any]]] = [
    (CHAT, human("My favourite colour is teal.")),
    (
        CHAT,
        ai("", [{"name": "list_tasks", "args": {}, "id": "call_1", "type": "tool_call"}]),
    ),
    (
        CHAT,
        {
            "type": "tool",
            "data": {
                "content": '{"rows": []}',
                "tool_call_id": "call_1",
                "name": "list_tasks",
                "type": "tool",
            },
        },
    ),
    (CHAT, ai("Noted: teal. You have no tasks.")),
    (CHAT, {"type": "robot", "data": {"content": "beep"}}),  # reported, left out
    (BOB_CHAT, human("bob's words")),
    ("not-a-uuid", human("orphan")),
]


def build_original(conn: Any) -> None:
    """The original's tables and rows (``conn``: a psycopg connection, autocommit)."""
    conn.execute(ORIGINAL_SCHEMA)
    agents = {
        "support": (
            {"model": "gpt-4o-mini", "temperature": 0.2, "streaming": True},
            "You help.\nNotes: {{ltm_notes}}\nRules: {{custom_instructions}}\nJSON: {a: 1}",
        ),
        "mystery": ({"model": "local-thing"}, "Hmm {{unknown_thing}}"),
        "broken": ("{not json", "x"),
    }
    ids = {}
    for name, (llm, prompt) in agents.items():
        value = llm if isinstance(llm, str) else json.dumps(llm)
        if isinstance(llm, str):
            # jsonb cannot hold malformed JSON: the original kept such configs as a JSON string.
            value = json.dumps(llm)
        row = conn.execute(
            "INSERT INTO agent_configurations (agent_name, llm_config, system_prompt) "
            "VALUES (%s, %s::jsonb, %s) RETURNING id",
            (name, value, prompt),
        ).fetchone()
        ids[name] = row[0]
    first_shape = (
        'INSERT INTO agent_tools (agent_id, tool_name, tool_type, tool_config, "order") '
        "VALUES (%s, %s, %s, %s::jsonb, %s)"
    )
    later_shape = (
        'INSERT INTO agent_tools (agent_id, name, type, description, config, "order", '
        "is_active, is_deleted) VALUES (%s, %s, %s, %s, %s::jsonb, %s, %s, %s)"
    )
    support = ids["support"]
    conn.execute(first_shape, (support, "list_tasks", "CRUDTool", json.dumps(LIST_TASKS), 1))
    conn.execute(
        later_shape,
        (
            support,
            "fetch_task",
            "CRUDTool",
            "Fetch one task by id.",
            json.dumps(FETCH_TASK),
            2,
            True,
            False,
        ),
    )
    # config as a JSON string inside jsonb
    conn.execute(
        later_shape,
        (
            support,
            "update_task",
            "CRUDTool",
            "Change a task.",
            json.dumps(json.dumps(UPDATE_TASK)),
            3,
            True,
            False,
        ),
    )
    missing_table = {"table_name": "invoices", "method": "fetch"}
    conn.execute(
        later_shape,
        (support, "list_invoices", "CRUDTool", "", json.dumps(missing_table), 4, True, False),
    )
    framework = {"table_name": "agent_tools", "method": "fetch"}
    conn.execute(
        later_shape, (support, "peek", "CRUDTool", "", json.dumps(framework), 5, True, False)
    )
    conn.execute(
        later_shape, (support, "gone", "CRUDTool", "", json.dumps(LIST_TASKS), 6, True, True)
    )
    conn.execute(later_shape, (support, "search", "WebSearchTool", "", "{}", 7, True, False))
    conn.execute(
        later_shape,
        (
            support,
            "bad_method",
            "CRUDTool",
            "",
            json.dumps({"table_name": "tasks", "method": "drop"}),
            8,
            True,
            False,
        ),
    )
    for user, chat in ((ALICE, CHAT), (BOB, BOB_CHAT)):
        conn.execute(
            "INSERT INTO chat_sessions (user_id, agent_name, chat_id, is_active, metadata) "
            "VALUES (%s, 'support', %s, true, '{\"client\": \"web\"}')",
            (user, chat),
        )
    # A second engagement of Alice's chat: one chat, one import.
    conn.execute(
        "INSERT INTO chat_sessions (user_id, agent_name, chat_id) VALUES (%s, 'support', %s)",
        (ALICE, CHAT),
    )
    for n, (session_id, message) in enumerate(HISTORY):
        conn.execute(
            "INSERT INTO chat_message_history (session_id, message, created_at) "
            "VALUES (%s, %s::jsonb, %s)",
            (session_id, json.dumps(message), SAID + timedelta(minutes=n)),
        )
    conn.execute(
        "INSERT INTO user_agent_prompt_customizations (user_id, agent_name, content, priority) "
        "VALUES (%s, 'support', %s::jsonb, 5)",
        (ALICE, json.dumps({"instructions": "Answer in French."})),
    )
    conn.execute(
        "INSERT INTO user_agent_prompt_customizations (user_id, agent_name, content) "
        "VALUES (%s, 'ghost', '\"x\"'::jsonb)",
        (ALICE,),
    )
    conn.execute(
        "INSERT INTO agent_long_term_memory (user_id, agent_id, notes) VALUES (%s, 'support', %s)",
        (ALICE, "Alice owns a cat named Miso."),
    )


def bare_tables(*, wide: bool = False) -> str:
    """The original's tables with only the columns the importer reads, for tests that
    fill them row by row; ``wide``: ``order`` and ``priority`` as ``bigint`` (values
    out of chatwright's range)."""
    big = "bigint" if wide else "int"
    priority = ", priority bigint" if wide else ""
    return f"""
CREATE TABLE agent_configurations (id int, agent_name text, llm_config jsonb, system_prompt text);
CREATE TABLE agent_tools (id int, agent_id int, name text, type text, description text,
                          config jsonb, "order" {big});
CREATE TABLE user_agent_prompt_customizations (id int, user_id text, agent_name text,
                                               customization_type text, content jsonb{priority});
CREATE TABLE agent_long_term_memory (id int, user_id text, agent_id text, notes text);
CREATE TABLE chat_sessions (id int, user_id text, agent_name text, chat_id uuid);
CREATE TABLE chat_message_history (id int, session_id text, message jsonb);
"""


@contextmanager
def original_database(prefix: str, build: Callable[[Any], None]) -> Iterator[str]:
    """A fresh database named ``prefix`` and a random part, filled by ``build`` (given an
    autocommit psycopg connection to it); its URL, and it is dropped afterwards."""
    import psycopg

    admin = admin_connect()
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    url = make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        with psycopg.connect(libpq(url), autocommit=True) as conn:
            build(conn)
        yield url
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture(scope="session")
def original_url() -> Iterator[str]:
    """A fresh database holding the original system's tables and rows, dropped after the run."""
    with original_database("llm_agent", build_original) as url:
        yield url


@pytest.fixture
async def target(pg_storage: SQLStorage, pg_url: str) -> AsyncIterator[str]:
    """chatwright's database, emptied, with the uuid-keyed tasks table holding Alice's task
    (dropped afterwards: later tests of this process make the example's own tasks table)."""
    async with pg_storage.write() as conn:
        for statement in TASKS_TABLE.split(";"):
            await conn.execute(sa.text(statement))
        await conn.execute(
            sa.text("INSERT INTO tasks (id, user_id, title) VALUES (:id, :user, 'water the fern')"),
            {"id": TASK, "user": ALICE},
        )
        await conn.execute(
            sa.text("INSERT INTO tasks (user_id, title) VALUES (:user, 'bob task')"), {"user": BOB}
        )
    yield pg_url
    async with pg_storage.write() as conn:
        await conn.execute(sa.text("DROP TABLE IF EXISTS tasks"))


async def cli(*args: str) -> Any:
    """The command run in a thread (it runs its own event loop)."""
    return await asyncio.to_thread(ok, *args)


async def run_import(url: str, original: str, *extra: str) -> dict[str, Any]:
    args = ("--database", url, "import", "llm-agent", "--from", original, "--json", *extra)
    data: dict[str, Any] = json.loads((await cli(*args)).stdout)
    return data


def by_target(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {i["target"]: i for i in report["items"]}


async def started(url: str) -> Runtime:
    plugins = Plugins.load(LoadPolicy())
    settings = testing.settings(plugins, storage=pg_storage_settings(url))
    runtime = Runtime(settings, plugins)
    await runtime.start()
    return runtime


async def counts(storage: SQLStorage) -> dict[str, int]:
    out = {}
    async with storage.read() as conn:
        for table in (
            "agents",
            "agent_tools",
            "chat_sessions",
            "chat_messages",
            "prompt_customizations",
            "agent_memories",
        ):
            out[table] = (await conn.execute(sa.text(f"SELECT count(*) FROM {table}"))).scalar_one()
    return out


async def test_dry_run_reports_every_row_and_imports_nothing(
    target: str, original_url: str, pg_storage: SQLStorage
) -> None:
    report = await run_import(target, original_url, "--dry-run")
    assert report["imported"] == 0
    assert (await counts(pg_storage))["agents"] == 0
    items = by_target(report)
    assert items["agent 'support'"]["action"] == "import"
    assert any("streaming" in p for p in items["agent 'support'"]["problems"])
    assert items["agent 'mystery'"]["action"] == "skip"
    assert "provider" in items["agent 'mystery'"]["problems"][0]
    assert items["agent 'broken'"]["action"] == "skip"
    assert items["tool support/list_invoices"]["action"] == "import disabled"
    assert any("invoices" in p for p in items["tool support/list_invoices"]["problems"])
    assert items["tool support/peek"]["action"] == "skip"
    assert items["tool support/search"]["action"] == "skip"
    assert "WebSearchTool" in items["tool support/search"]["problems"][0]
    assert "drop" in items["tool support/bad_method"]["problems"][0]
    deleted = [i for i in report["items"] if i["problems"] == ["deleted in the original"]]
    assert len(deleted) == 1
    for item in report["items"]:
        assert item["source"].split()[0] in {
            "agent_configurations",
            "agent_tools",
            "chat_sessions",
            "chat_message_history",
            "user_agent_prompt_customizations",
            "agent_long_term_memory",
        }
    # The plain-text report says the same, row by row.
    text = await cli(
        "--database", target, "import", "llm-agent", "--from", original_url, "--dry-run"
    )
    assert "Dry run: nothing imported." in text.stdout
    assert "list_invoices" in text.stdout and "problem:" in text.stdout
    # Without --yes it asks; "no" imports nothing.
    args = ("--database", target, "import", "llm-agent", "--from", original_url)
    declined = await asyncio.to_thread(ok, *args, input="n\n")
    assert "Import " in declined.output and "Nothing imported." in declined.stdout
    assert (await counts(pg_storage))["agents"] == 0


async def test_import_reimport_and_chats_see_it(
    target: str, original_url: str, pg_storage: SQLStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    report = await run_import(target, original_url, "--yes")
    assert report["failed"] == []
    assert report["counts"]["agent"] == {"import": 1, "skip": 2}
    # Alice's chat's second engagement has its own line: the chat is imported once.
    assert report["counts"]["chat"] == {"import": 2, "skip": 1}
    first, second = [i for i in report["items"] if i["target"] == f"chat {CHAT}"]
    assert (first["action"], second["action"]) == ("import", "skip")
    assert second["problems"] == [
        f"another session of the chat of {first['source']}, which is imported from that "
        "row: a chat is imported once, as one closed session"
    ]
    messages = by_target(report)[f"messages of chat {CHAT}"]
    assert messages["count"] == 4
    assert any("robot" in p for p in messages["problems"])
    assert by_target(report)["messages of chat None"]["action"] == "skip"
    before = await counts(pg_storage)
    assert before == {
        "agents": 1,
        "agent_tools": 4,  # list_tasks, fetch_task, update_task, list_invoices (disabled)
        "chat_sessions": 2,
        "chat_messages": 5,
        "prompt_customizations": 1,
        "agent_memories": 1,
    }

    again = await run_import(target, original_url, "--yes")
    assert again["imported"] == 0
    assert "import" not in json.dumps(again["counts"]).replace('"import disabled"', "")
    assert await counts(pg_storage) == before

    storage = pg_storage
    agent = await storage.agents.get("support")
    assert agent is not None
    assert agent.model == "openai:gpt-4o-mini"
    assert agent.model_settings == {"temperature": 0.2}
    assert "{memory}" in agent.system_prompt and "{{a: 1}}" in agent.system_prompt
    tools = {t.name: t for t in await storage.tools.list("support")}
    assert [t.name for t in sorted(tools.values(), key=lambda t: t.position)] == [
        "list_tasks",
        "fetch_task",
        "update_task",
        "list_invoices",
    ]
    assert tools["fetch_task"].type == "crud" and tools["fetch_task"].config["table"] == "tasks"
    assert not tools["list_invoices"].is_active
    assert await storage.sessions.chat_owner(uuid.UUID(CHAT)) == (ALICE, "support")
    # The session begins at the import; when the original's began is in its metadata.
    (session,) = [s for s in await storage.sessions.list(ALICE) if s.chat_id == uuid.UUID(CHAT)]
    assert session.metadata["imported"] is True and session.metadata["client"] == "web"
    began = datetime.fromisoformat(session.metadata["imported_created_at"])
    assert began.tzinfo is not None and began < session.created_at

    # The offline model lists Alice's tasks through the imported tool (uuid keys and user id).
    await storage.agents.update("support", model="offline:assistant", model_settings={})
    runtime = await started(target)
    try:
        turn = await runtime.chat(ALICE, "support", uuid.UUID(CHAT), "list my tasks")
        assert "water the fern" in turn.response and "bob task" not in turn.response
        window = await storage.messages.window(ALICE, uuid.UUID(CHAT), 50)
        assert window[0].content["data"]["content"] == "My favourite colour is teal."
        # The imported messages keep the times they were said at; the new turn's are now.
        assert window[0].created_at == SAID
        assert all(m.created_at < SAID + timedelta(days=1) for m in window[:4])
        assert all(m.created_at > SAID + timedelta(days=1) for m in window[4:])

        # The scripted model fetches the task by its uuid, updates it, and is given the
        # imported history, memory and customization.
        script = [
            {"tool_calls": [{"name": "fetch_task", "args": {"id": TASK}}]},
            {"tool_calls": [{"name": "update_task", "args": {"id": TASK, "task_status": "done"}}]},
            {"tool_calls": [{"name": "fetch_task", "args": {"id": "not-a-uuid"}}]},
            {"content": "All done."},
        ]
        await storage.agents.update(
            "support", model="scripted:x", model_settings={"responses": script}
        )
        given: list[list[BaseMessage]] = []
        original = ScriptedChatModel._agenerate

        async def recording(
            self: ScriptedChatModel, messages: list[BaseMessage], *a: Any, **k: Any
        ) -> ChatResult:
            given.append(list(messages))
            return await original(self, messages, *a, **k)

        monkeypatch.setattr(ScriptedChatModel, "_agenerate", recording)
        async with storage.read() as conn:
            stamp = (
                await conn.execute(
                    sa.text("SELECT updated_at FROM tasks WHERE id = :i"), {"i": TASK}
                )
            ).scalar_one()
        turn = await runtime.chat(ALICE, "support", uuid.UUID(CHAT), "finish my fern task")
        assert turn.response == "All done."
        results = [str(c) for c in turn.tool_calls]
        assert "water the fern" in results[0]
        assert "UUID" in results[2] and "error" in results[2].lower()
        first = given[0]
        system = first[0].content
        assert "Alice owns a cat named Miso." in system and "Answer in French." in system
        assert any(m.content == "My favourite colour is teal." for m in first)
        async with storage.read() as conn:
            row = (
                await conn.execute(
                    sa.text("SELECT status, updated_at FROM tasks WHERE id = :i"), {"i": TASK}
                )
            ).one()
        assert row.status == "done" and row.updated_at > stamp
    finally:
        await runtime.close()


def test_the_june_2025_shape_takes_definitions_from_the_tools_table() -> None:
    from chatwright.plugins.importing.plan import Plan, ToolDraft, _tool_drafts
    from chatwright.plugins.importing.source import Source

    definition = {
        "id": "t1",
        "name": "list_tasks",
        "type": "CRUDTool",
        "description": "List.",
        "config": {"table_name": "tasks", "method": "fetch"},
    }
    rows = [
        {
            "id": "a",
            "agent_id": "g",
            "tool_id": "t1",
            "config_override": {"method": "create"},
            "is_active": False,
        },
        {"id": "b", "agent_id": "g", "tool_id": "missing", "config_override": None},
    ]
    columns = ["id", "agent_id", "tool_id", "config_override", "is_active", "is_deleted"]
    with_tools = Source(
        "u", "public", {"agent_tools": columns}, {"agent_tools": rows, "tools": [definition]}
    )
    drafts = [d for _, d in _tool_drafts(Plan(with_tools))]
    assert drafts[0] == ToolDraft(
        "list_tasks", "CRUDTool", "List.", {"table_name": "tasks", "method": "create"}, False, 0
    )
    assert drafts[1] == "its tool_id names no row of the tools table"
    without = Source("u", "public", {"agent_tools": columns}, {"agent_tools": rows})
    assert [d for _, d in _tool_drafts(Plan(without))] == ["no tools table"] * 2


async def test_the_same_database_with_the_original_in_another_schema(
    pg_storage: SQLStorage, pg_url: str
) -> None:
    """chatwright's database itself as the source, the original's tables in schema legacy."""
    import psycopg

    direct = make_url(pg_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(libpq(direct), autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS legacy CASCADE")
        conn.execute("CREATE SCHEMA legacy")
        conn.execute("SET search_path TO legacy, public")
        conn.execute(ORIGINAL_SCHEMA)
        conn.execute(
            "INSERT INTO agent_configurations (agent_name, llm_config, system_prompt) "
            "VALUES ('helper', '{\"model\": \"claude-3-5-haiku\"}', 'Hi {{custom_instructions}}')"
        )
    try:
        report = await run_import(pg_url, pg_url, "--schema", "legacy", "--yes")
        assert report["schema"] == "legacy" and report["imported"] == 1
        agent = await pg_storage.agents.get("helper")
        assert agent is not None and agent.model == "anthropic:claude-3-5-haiku"
        assert agent.system_prompt == "Hi {custom_instructions}"
        # Without --schema, chatwright's own agent_tools and chat_sessions are not the original's.
        args = ("--database", pg_url, "import", "llm-agent", "--from", pg_url)
        own = await asyncio.to_thread(run, *args, "--dry-run")
        assert_error(own, "no table of the original system", "chatwright's own table")
        # A schema without the original's tables is one clear error.
        result = await asyncio.to_thread(run, *args, "--schema", "nothing_here", "--dry-run")
        assert_error(result, "no table of the original system", "nothing_here")
    finally:
        with psycopg.connect(libpq(direct), autocommit=True) as conn:
            conn.execute("DROP SCHEMA IF EXISTS legacy CASCADE")
