"""A user's past chats: the store's list, ``chatwright chats list|show`` and GET /api/chats.

Alice has two chats (one with each of two agents) and Bob one, on SQLite and on
PostgreSQL; each sees their own chats only, the most recently active first, each
titled by its first human message, counted and paged. ``chats show`` prints a
chat whole: its tool calls with their arguments and results, its summary and the
calls still waiting for a decision.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage

from chatwright.approvals import NewPending
from chatwright.conversations import TITLE_LENGTH, list_chats, transcript
from chatwright.errors import InvalidInputError, NotFoundError
from chatwright.history import to_store
from chatwright.plugins.example import assistant as example
from chatwright.stores import NewSummary, Storage
from tests.conftest import MakeRuntime
from tests.harness import DATA_TABLES, assert_error, ok, ok_json, pg_env, run, storage_for
from tests.test_server import JWT, bearer, serving

AGENT = example.AGENT
OTHER = "helper"
LONG = "word " * 200


async def make_chat(storage: Storage, user: str, agent: str, *said: BaseMessage) -> uuid.UUID:
    session = await storage.sessions.open(user, agent, chat_id=uuid.uuid4())
    await storage.messages.append(user, session.chat_id, to_store(list(said)))
    return session.chat_id


async def build(storage: Storage) -> dict[str, uuid.UUID]:
    """Alice's chat with the assistant, then her chat with the helper, then Bob's chat."""
    await example.seed(storage, "offline:assistant")
    await storage.agents.create(OTHER, system_prompt="Help.", model="offline:assistant")
    first = await make_chat(
        storage,
        "alice",
        AGENT,
        AIMessage("Hello, I am the assistant."),
        HumanMessage("  plan\n\nmy   week  "),
        AIMessage("Sure."),
    )
    second = await make_chat(storage, "alice", OTHER, HumanMessage(LONG), AIMessage("Long."))
    bobs = await make_chat(storage, "bob", AGENT, HumanMessage("bob's secret"), AIMessage("ok"))
    # Opened but never used: no messages, not listed.
    await storage.sessions.open("alice", AGENT, chat_id=uuid.uuid4())
    return {"first": first, "second": second, "bobs": bobs}


async def test_the_store_lists_each_users_own_chats_newest_first(runtimes: MakeRuntime) -> None:
    storage = (await runtimes()).storage
    chats = await build(storage)

    page = await list_chats(storage, "alice")
    assert [c.chat_id for c in page.chats] == [chats["second"], chats["first"]]
    assert page.next is None
    newest, older = page.chats
    assert (older.agent_name, older.title, older.messages) == (AGENT, "plan my week", 3)
    assert (newest.agent_name, newest.messages) == (OTHER, 2)
    assert len(newest.title) == TITLE_LENGTH and newest.title.endswith("…")
    assert newest.title.startswith("word word")
    for chat in page.chats:
        assert chat.created_at <= chat.last_activity <= datetime.now(UTC)
    assert newest.last_id > older.last_id

    mine = await list_chats(storage, "bob")
    assert [(c.chat_id, c.title) for c in mine.chats] == [(chats["bobs"], "bob's secret")]
    assert (await list_chats(storage, "nobody")).chats == []

    # Paged: one at a time, the cursor of a page leading to the next.
    one = await list_chats(storage, "alice", limit=1)
    assert [c.chat_id for c in one.chats] == [chats["second"]] and one.next is not None
    two = await list_chats(storage, "alice", limit=1, before=one.next)
    assert [c.chat_id for c in two.chats] == [chats["first"]] and two.next is None

    only = await list_chats(storage, "alice", agent_name=AGENT)
    assert [c.chat_id for c in only.chats] == [chats["first"]]
    assert (await list_chats(storage, "bob", agent_name=OTHER)).chats == []

    # A new message moves its chat to the top.
    await storage.messages.append("alice", chats["first"], to_store([HumanMessage("again")]))
    again = await list_chats(storage, "alice")
    assert [(c.chat_id, c.messages) for c in again.chats] == [
        (chats["first"], 4),
        (chats["second"], 2),
    ]

    for limit, before in ((0, None), (101, None), (5, 0), (5, -3), (5, 2**63)):
        with pytest.raises(InvalidInputError):
            await list_chats(storage, "alice", limit=limit, before=before)


async def test_a_transcript_holds_tool_calls_the_summary_and_what_waits(
    runtimes: MakeRuntime,
) -> None:
    storage = (await runtimes()).storage
    chats = await build(storage)
    chat = await make_chat(
        storage,
        "alice",
        AGENT,
        HumanMessage("list my tasks"),
        AIMessage("", tool_calls=[{"name": "list_tasks", "args": {"done": False}, "id": "c1"}]),
        ToolMessage('[{"id": 1, "title": "milk"}]', tool_call_id="c1", name="list_tasks"),
        AIMessage("You have one task: milk."),
    )
    stored = await storage.messages.page("alice", chat, limit=10)
    await storage.summaries.put("alice", chat, NewSummary("Tasks were asked.", stored[1].id, 2))
    await storage.pending.create(
        "alice",
        AGENT,
        chat,
        [
            NewPending(
                turn_id=uuid.uuid4(),
                tool_id=None,
                tool_name="delete_task",
                tool_call_id="c2",
                args={"id": 1},
                preview=None,
                expires_at=datetime.now(UTC) + timedelta(hours=1),
            )
        ],
    )

    whole = await transcript(storage, chat)
    assert (whole.user_id, whole.agent_name) == ("alice", AGENT)
    assert [m.role for m in whole.messages] == ["human", "ai", "tool", "ai"]
    assert whole.summary is not None and whole.summary.text == "Tasks were asked."
    assert [(a.tool_name, dict(a.args)) for a in whole.pending] == [("delete_task", {"id": 1})]
    assert (await transcript(storage, chat, "alice")).messages == whole.messages
    with pytest.raises(NotFoundError, match=str(chat)):
        await transcript(storage, chat, "bob")
    with pytest.raises(NotFoundError):
        await transcript(storage, uuid.uuid4())
    assert len((await transcript(storage, chats["bobs"], "bob")).messages) == 2


async def test_the_list_is_served_by_indexes_on_postgresql(pg_storage: Any) -> None:
    """With sequential scans forbidden the plan still reads both tables through indexes."""
    from sqlalchemy.dialects import postgresql

    from chatwright.plugins.sql.chat_list import statement

    await build(pg_storage)
    stmt = statement("alice", agent_name=AGENT, limit=5, before=10**6)
    text = str(stmt.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))
    async with pg_storage.read() as conn:
        await conn.execute(sa.text("SET LOCAL enable_seqscan = off"))
        plan = "\n".join(r[0] for r in await conn.execute(sa.text("EXPLAIN " + text)))
    assert "Seq Scan" not in plan, plan
    assert "ix_chat_messages_user_id" in plan, plan
    assert "ix_chat_messages_chat_id_id" in plan, plan
    assert "ix_chat_sessions_chat_id" in plan, plan


# -- the command line ------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def cli_chats(
    request: pytest.FixtureRequest, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, uuid.UUID]:
    """The chats of :func:`build` in the database the CLI runs on."""
    if request.param == "postgresql":
        url: str = request.getfixturevalue("pg_url")
    else:
        url = f"sqlite+aiosqlite:///{workdir / 'chats.db'}"
    for key, value in pg_env(url).items():
        monkeypatch.setenv(key, value)

    async def setup() -> dict[str, uuid.UUID]:
        storage = storage_for(url)
        try:
            await storage.upgrade()
            if request.param == "postgresql":
                async with storage.write() as conn:
                    tables = ", ".join(DATA_TABLES)
                    await conn.execute(sa.text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
                    await conn.execute(sa.text("DROP TABLE IF EXISTS tasks, notes"))
            return await build(storage)
        finally:
            await storage.close()

    return asyncio.run(setup())


def test_chats_list_and_show_through_the_cli(cli_chats: dict[str, uuid.UUID]) -> None:
    listed = ok_json("chats", "list", "--user", "alice", "--json")
    assert [c["chat_id"] for c in listed["chats"]] == [
        str(cli_chats["second"]),
        str(cli_chats["first"]),
    ]
    assert listed["next"] is None
    assert listed["chats"][1]["title"] == "plan my week"
    assert listed["chats"][1]["messages"] == 3
    bobs = ok_json("chats", "list", "--user", "bob", "--json")["chats"]
    assert [c["chat_id"] for c in bobs] == [str(cli_chats["bobs"])]
    helper = ok_json("chats", "list", "--user", "alice", "--agent", OTHER, "--json")["chats"]
    assert [c["chat_id"] for c in helper] == [str(cli_chats["second"])]

    paged = run("chats", "list", "--user", "alice", "--limit", "1")
    assert paged.exit_code == 0, paged.output
    lines = paged.stdout.splitlines()
    assert lines[0].split() == ["chat", "agent", "messages", "last", "activity", "title"]
    assert len(lines) == 2 and str(cli_chats["second"]) in lines[1]
    cursor = paged.stderr.strip().removeprefix("(older chats: --before ").removesuffix(")")
    older = ok_json(
        "chats", "list", "--user", "alice", "--limit", "1", "--before", cursor, "--json"
    )
    assert [c["chat_id"] for c in older["chats"]] == [str(cli_chats["first"])]
    assert ok("chats", "list").stdout.strip() == "No chats."  # the local user has none

    shown = ok("chats", "show", str(cli_chats["first"])).stdout
    assert f"Chat {cli_chats['first']} with agent '{AGENT}', user 'alice': 3 messages" in shown
    assert "human:   plan\n\nmy   week" in shown
    whole = ok_json("chats", "show", str(cli_chats["first"]), "--json")
    assert [m["role"] for m in whole["messages"]] == ["ai", "human", "ai"]
    assert (whole["user_id"], whole["summary"], whole["pending"]) == ("alice", None, [])

    missing = str(uuid.uuid4())
    assert_error(run("chats", "show", missing), f"no chat {missing}")


def test_chats_show_prints_tool_calls_results_summary_and_pending(
    workdir: Path, example: Path
) -> None:
    ok("tools", "set", "4", "--approval", "required")  # delete_task waits for a decision
    ok("chat", "-m", "add a task to buy milk")
    ok("chat", "-m", "delete task 1")
    (chat,) = ok_json("chats", "list", "--json")["chats"]
    shown = ok("chats", "show", chat["chat_id"]).stdout
    assert "human: add a task to buy milk" in shown
    assert '→ add_task {"title": "buy milk"}' in shown
    assert "← add_task (success):" in shown
    assert "Waiting for a decision" in shown and "delete_task" in shown
    whole = ok_json("chats", "show", chat["chat_id"], "--json")
    calls = [c for m in whole["messages"] for c in m["content"]["data"].get("tool_calls") or []]
    assert [c["name"] for c in calls][:1] == ["add_task"]
    assert [a["tool_name"] for a in whole["pending"]] == ["delete_task"]


# -- the HTTP API ----------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def api_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgresql":
        request.getfixturevalue("pg_storage")  # migrated and emptied
        url: str = request.getfixturevalue("pg_url")
        return url
    return f"sqlite+aiosqlite:///{tmp_path / 'api.db'}"


async def test_get_api_chats_lists_the_callers_own_chats(api_url: str) -> None:
    async with serving(api_url, fresh_postgres=api_url.startswith("postgresql"), **JWT) as srv:
        client = srv.client
        said: dict[str, list[str]] = {"alice": [], "bob": []}
        for user, message in (("alice", "list my tasks"), ("bob", "hi"), ("alice", "second")):
            opened = await client.post(
                "/api/sessions", json={"agent_name": AGENT, "new": True}, headers=bearer(user)
            )
            chat_id = opened.json()["chat_id"]
            body = {"agent_name": AGENT, "chat_id": chat_id, "message": message}
            turn = await client.post("/api/chat", json=body, headers=bearer(user))
            assert turn.status_code == 200, turn.text
            said[user].append(chat_id)

        alice = await client.get("/api/chats", headers=bearer("alice"))
        assert alice.status_code == 200, alice.text
        data = alice.json()
        assert [c["chat_id"] for c in data["chats"]] == said["alice"][::-1]
        assert data["next"] is None
        assert [c["title"] for c in data["chats"]] == ["second", "list my tasks"]
        assert all(c["agent_name"] == AGENT for c in data["chats"])
        assert set(data["chats"][0]) == {
            "chat_id",
            "agent_name",
            "title",
            "messages",
            "created_at",
            "last_activity",
        }
        bob = (await client.get("/api/chats", headers=bearer("bob"))).json()
        assert [c["chat_id"] for c in bob["chats"]] == said["bob"]
        assert bob["chats"][0]["messages"] >= 2

        first = (await client.get("/api/chats?limit=1", headers=bearer("alice"))).json()
        assert [c["chat_id"] for c in first["chats"]] == [said["alice"][1]]
        rest = await client.get(
            f"/api/chats?limit=1&before={first['next']}", headers=bearer("alice")
        )
        assert [c["chat_id"] for c in rest.json()["chats"]] == [said["alice"][0]]
        assert rest.json()["next"] is None
        none = await client.get(f"/api/chats?agent_name={OTHER}", headers=bearer("alice"))
        assert none.json() == {"chats": [], "next": None}

        # What the list names is what the messages page opens.
        listed = data["chats"][1]
        page = await client.get(f"/api/chats/{listed['chat_id']}/messages", headers=bearer("alice"))
        assert len(page.json()["messages"]) == listed["messages"]

        schema = (await client.get("/openapi.json")).json()
        assert "/api/chats" in schema["paths"]
        assert json.dumps(schema["paths"]["/api/chats"]["get"]).count("ChatList") >= 1
