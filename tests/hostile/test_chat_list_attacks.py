"""The list of past chats and ``chats show`` against other users' ids and hostile input.

On every backend (SQLite, PostgreSQL, Supabase under row-level security) a user
lists only their own chats, and another user's chat id is not found wherever it
is given: its transcript, its message pages, a session that would resume it, a
turn on it. Malformed and out-of-range page sizes and cursors get a 422 naming
the parameter; a huge or strange first message makes a short one-line title,
never a 500. Through the CLI, the same values get one ``Error:`` line (or click's
usage error for a value of the wrong type) and a title's control characters
cannot reach the terminal.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from langchain_core.messages import AIMessage, HumanMessage

from chatwright.conversations import TITLE_LENGTH, transcript
from chatwright.errors import NotFoundError
from chatwright.history import to_store
from chatwright.plugins.example import assistant as example
from chatwright.stores import NewMessage
from tests.harness import assert_error, ok, ok_json, run, storage_for
from tests.hostile.conftest import MakeServer, Server, assert_error_body, bearer, open_chat

AGENT = example.AGENT


async def chat_of(server: Server, user: str, message: str) -> str:
    """A new chat of ``user``, with one turn of the offline model."""
    session = await open_chat(server.client, user)
    body = {"agent_name": AGENT, "chat_id": session["chat_id"], "message": message}
    said = await server.client.post("/api/chat", json=body, headers=bearer(user))
    assert said.status_code == 200, said.text
    return str(session["chat_id"])


async def listed(server: Server, user: str, query: str = "") -> dict[str, Any]:
    response = await server.client.get(f"/api/chats{query}", headers=bearer(user))
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


async def test_another_users_chat_is_never_listed_shown_or_resumed(
    make_server: MakeServer,
) -> None:
    server = await make_server()
    storage = server.runtime.storage
    await example.seed(storage, "offline:assistant")
    alices = await chat_of(server, "alice", "alice's private plan")
    bobs = await chat_of(server, "bob", "bob's question")

    assert [c["chat_id"] for c in (await listed(server, "alice"))["chats"]] == [alices]
    mine = await listed(server, "bob")
    assert [c["chat_id"] for c in mine["chats"]] == [bobs]
    assert "alice" not in str(mine)
    # Every page, cursor and agent filter bob can ask for holds his chat or nothing.
    for query in ("?before=9223372036854775807", f"?agent_name={AGENT}", "?limit=100"):
        assert [c["chat_id"] for c in (await listed(server, "bob", query))["chats"]] == [bobs]
    assert (await listed(server, "carol"))["chats"] == []

    client = server.client
    turn = {"agent_name": AGENT, "chat_id": alices, "message": "hi"}
    probes = [
        await client.get(f"/api/chats/{alices}/messages", headers=bearer("bob")),
        await client.post(
            "/api/sessions", json={"agent_name": AGENT, "chat_id": alices}, headers=bearer("bob")
        ),
        await client.post("/api/chat", json=turn, headers=bearer("bob")),
    ]
    for response in probes:
        assert_error_body(response, 404)
        assert "private plan" not in response.text
    with pytest.raises(NotFoundError):
        await transcript(storage, uuid.UUID(alices), "bob")

    # Alice's chat is as it was, and still hers to resume.
    whole = await transcript(storage, uuid.UUID(alices), "alice")
    assert [m.role for m in whole.messages] == ["human", "ai"]
    resumed = await client.post(
        "/api/sessions", json={"agent_name": AGENT, "chat_id": alices}, headers=bearer("alice")
    )
    assert resumed.status_code == 200 and resumed.json()["chat_id"] == alices


BAD_QUERIES = [
    ("limit=0", "limit"),
    ("limit=-1", "limit"),
    ("limit=101", "limit"),
    ("limit=abc", "limit"),
    ("limit=1e3", "limit"),
    ("limit=99999999999999999999999999", "limit"),
    ("before=0", "before"),
    ("before=-5", "before"),
    ("before=abc", "before"),
    ("before=1.5", "before"),
    ("before=", "before"),
    (f"before={2**63}", "before"),
    ("before=' OR 1=1 --", "before"),
    ("agent_name=", "agent_name"),
    ("agent_name=" + "a" * 201, "agent_name"),
]


async def test_malformed_page_sizes_and_cursors_are_refused_by_name(
    make_server: MakeServer,
) -> None:
    server = await make_server()
    await example.seed(server.runtime.storage, "offline:assistant")
    chat = await chat_of(server, "alice", "keep me")
    for query, name in BAD_QUERIES:
        response = await server.client.get(f"/api/chats?{query}", headers=bearer("alice"))
        message = assert_error_body(response, 422)
        assert name in message, (query, message)
    assert [c["chat_id"] for c in (await listed(server, "alice"))["chats"]] == [chat]
    unsigned = await server.client.get("/api/chats")
    assert_error_body(unsigned, 401)


async def test_huge_and_strange_first_messages_make_short_titles(make_server: MakeServer) -> None:
    server = await make_server()
    storage = server.runtime.storage
    await example.seed(storage, "offline:assistant")
    huge = "<script>alert(1)</script>\n\t\x1b[31m" + "\u202eevil " * 100_000
    contents: list[list[NewMessage]] = [
        to_store([HumanMessage(huge), AIMessage("ok")]),
        [
            NewMessage(
                "human",
                {
                    "type": "human",
                    "data": {"content": [{"type": "text", "text": "part one"}, {"type": "x"}]},
                },
            )
        ],
        [NewMessage("human", {"no": "data"})],
        [NewMessage("human", {"type": "human", "data": {"content": {"odd": True}}})],
        to_store([AIMessage("a reply with no question")]),
    ]
    chats = []
    for messages in contents:
        session = await storage.sessions.open("alice", AGENT, chat_id=uuid.uuid4())
        await storage.messages.append("alice", session.chat_id, messages)
        chats.append(str(session.chat_id))

    data = await listed(server, "alice")
    titles = {c["chat_id"]: c["title"] for c in data["chats"]}
    assert set(titles) == set(chats)
    big = titles[chats[0]]
    assert len(big) <= TITLE_LENGTH and big.endswith("…")
    assert big.startswith("<script>alert(1)</script> [31m\u202eevil")
    assert not any(ord(c) < 32 for c in big)
    assert titles[chats[1]] == "part one"
    assert titles[chats[2]] == titles[chats[3]] == titles[chats[4]] == ""
    assert len(data["chats"][0]["title"]) <= TITLE_LENGTH
    # The huge message itself is stored whole.
    page = await storage.messages.page("alice", uuid.UUID(chats[0]), limit=5)
    assert page[0].content["data"]["content"] == huge


# -- the command line --------------------------------------------------------------


def usage_error(result: Result, *needles: str) -> None:
    """Click's answer to a value of the wrong type: exit 2, the value named, no traceback."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in result.stderr, result.stderr


async def plant(db: Path, user: str, text: str) -> uuid.UUID:
    storage = storage_for(f"sqlite+aiosqlite:///{db}")
    try:
        session = await storage.sessions.open(user, AGENT, chat_id=uuid.uuid4())
        await storage.messages.append(user, session.chat_id, to_store([HumanMessage(text)]))
        return session.chat_id
    finally:
        await storage.close()


def test_the_cli_refuses_bad_values_and_keeps_titles_off_the_terminal(example: Path) -> None:
    ok("chat", "--user", "alice", "-m", "list my tasks")
    (alices,) = ok_json("chats", "list", "--user", "alice", "--json")["chats"]

    missing = str(uuid.uuid4())
    assert_error(run("chats", "show", missing), f"no chat {missing}", "chats list --user USER")
    usage_error(run("chats", "show", "not-a-uuid"), "not-a-uuid")
    usage_error(run("chats", "show", "' OR 1=1 --"), "OR 1=1")
    for value in ("0", "-1", "101", "100000000000000000000"):
        assert_error(run("chats", "list", "--limit", value), f"--limit {value}", "1 to 100")
    for value in ("0", "-3", str(2**63)):
        assert_error(run("chats", "list", "--before", value), f"--before {value}", "cursor")
    usage_error(run("chats", "list", "--limit", "ten"), "ten")
    usage_error(run("chats", "list", "--before", "abc"), "abc")
    assert_error(run("chats", "list", "--user", ""), "--user")
    assert_error(run("chats", "list", "--user", "u" * 300), "--user", "300")
    assert_error(run("chats", "list", "--user", "a\x1bb"), "--user", "control")
    assert_error(run("chats", "list", "--agent", ""), "--agent")

    # A title holding terminal escapes prints escaped, in the list and in show.
    chat = asyncio.run(plant(example, "mallory", "\x1b]0;owned\x07\x1b[2J hello\u2028there"))
    table = ok("chats", "list", "--user", "mallory").stdout
    assert "\x1b" not in table and "\x07" not in table and "\u2028" not in table
    assert "]0;owned [2J hello there" in table
    shown = ok("chats", "show", str(chat)).stdout
    assert "\x1b" not in shown and "\\u001b[2J hello\\u2028there" in shown
    # Nothing was changed by any of it.
    assert ok_json("chats", "list", "--user", "alice", "--json")["chats"] == [alices]
