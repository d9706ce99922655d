"""The comparison server: FastAPI around LangChain's ``create_agent``, nothing else.

The same turn as chatwright's benchmark agent: chatwright's scripted model
(the same class) calls ``insert_item``, which inserts one row into a SQLite
table, then replies. Two variants:

- the floor: no persistence at all; each turn sends only the new message;
- with ``AsyncSqliteSaver``: LangGraph keeps each chat (a thread) in a SQLite
  file, so each turn sends only the new message and the graph restores the rest.

Each chat gets its own compiled graph (the scripted model's position in its
script is per model object), built at its first turn, as chatwright builds an
agent once per (user, agent). The API mimics chatwright's two routes the
benchmark uses: ``POST /api/sessions`` and ``POST /api/chat``.

Run: ``uvicorn --factory bench.apps.langchain_app:app_from_environment`` with
``BENCH_ITEMS_DB``, ``BENCH_TURNS`` and, for the checkpointer, ``BENCH_CHECKPOINT_DB``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import aiosqlite
from fastapi import FastAPI, HTTPException
from langchain.agents import create_agent
from langchain_core.messages import HumanMessage
from langchain_core.tools import BaseTool, StructuredTool
from pydantic import BaseModel

from bench.common import PROMPT, TABLE, TOOL, script
from chatwright.plugins.models.scripted import ScriptedChatModel

USER = "local"


class OpenChat(BaseModel):
    agent_name: str = ""
    new: bool = True


class ChatRequest(BaseModel):
    agent_name: str = ""
    chat_id: uuid.UUID
    message: str


async def open_items(path: str) -> aiosqlite.Connection:
    """The items table in a SQLite file, with chatwright's pragmas (WAL, synchronous=NORMAL)."""
    conn = await aiosqlite.connect(path)
    await conn.execute("PRAGMA journal_mode=WAL")
    await conn.execute("PRAGMA synchronous=NORMAL")
    await conn.execute("PRAGMA busy_timeout=30000")
    await conn.execute(
        f"CREATE TABLE IF NOT EXISTS {TABLE} (id INTEGER PRIMARY KEY, user_id TEXT NOT NULL, "
        "title TEXT NOT NULL, created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP)"
    )
    await conn.execute(f"CREATE INDEX IF NOT EXISTS ix_{TABLE}_user ON {TABLE} (user_id)")
    await conn.commit()
    return conn


def insert_tool(conn: aiosqlite.Connection) -> BaseTool:
    async def insert_item(title: str) -> dict[str, Any]:
        cursor = await conn.execute(
            f"INSERT INTO {TABLE} (user_id, title) VALUES (?, ?)", (USER, title)
        )
        await conn.commit()
        return {"id": cursor.lastrowid, "title": title}

    return StructuredTool.from_function(
        coroutine=insert_item, name=TOOL, description="Insert one item."
    )


class Agents:
    """One compiled graph per chat, sharing the items connection and the checkpointer."""

    def __init__(self, items: aiosqlite.Connection, turns: int, checkpointer: Any = None) -> None:
        self.tool = insert_tool(items)
        self.turns = turns
        self.checkpointer = checkpointer
        self.graphs: dict[uuid.UUID, Any] = {}

    def graph(self, chat_id: uuid.UUID) -> Any:
        graph = self.graphs.get(chat_id)
        if graph is None:
            model = ScriptedChatModel(responses=script(self.turns))
            graph = create_agent(
                model, [self.tool], system_prompt=PROMPT, checkpointer=self.checkpointer
            )
            self.graphs[chat_id] = graph
        return graph

    async def turn(self, chat_id: uuid.UUID, message: str) -> dict[str, Any]:
        config = {"configurable": {"thread_id": str(chat_id)}} if self.checkpointer else None
        state = await self.graph(chat_id).ainvoke(
            {"messages": [HumanMessage(content=message)]}, config=config
        )
        messages = state["messages"]
        start = max(i for i, m in enumerate(messages) if m.type == "human")
        produced = messages[start + 1 :]
        calls = [
            {"name": call["name"], "args": call["args"]}
            for m in produced
            if m.type == "ai"
            for call in m.tool_calls
        ]
        return {"session_id": str(chat_id), "response": produced[-1].text, "tool_calls": calls}


@asynccontextmanager
async def agents(items_db: str, turns: int, checkpoint_db: str | None) -> AsyncIterator[Agents]:
    """The agents of one process: the items connection, and the checkpointer if asked for."""
    async with AsyncExitStack() as stack:
        items = await open_items(items_db)
        stack.push_async_callback(items.close)
        checkpointer = None
        if checkpoint_db is not None:
            from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

            checkpointer = await stack.enter_async_context(
                AsyncSqliteSaver.from_conn_string(checkpoint_db)
            )
            await checkpointer.setup()
        yield Agents(items, turns, checkpointer)


def create_app(items_db: str, turns: int, checkpoint_db: str | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with agents(items_db, turns, checkpoint_db) as made:
            app.state.agents = made
            yield

    app = FastAPI(lifespan=lifespan)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/api/sessions")
    async def open_chat(body: OpenChat) -> dict[str, str]:
        return {"chat_id": str(uuid.uuid4())}

    @app.post("/api/chat")
    async def chat(body: ChatRequest) -> dict[str, Any]:
        made: Agents = app.state.agents
        try:
            return await made.turn(body.chat_id, body.message)
        except Exception as exc:
            raise HTTPException(502, f"the turn failed: {exc}") from exc

    return app


def app_from_environment() -> FastAPI:
    """The application for ``uvicorn --factory``, configured by ``BENCH_*`` variables."""
    try:
        items_db = os.environ["BENCH_ITEMS_DB"]
        turns = int(os.environ["BENCH_TURNS"])
    except (KeyError, ValueError) as exc:
        raise SystemExit(
            f"set BENCH_ITEMS_DB (a file) and BENCH_TURNS (an integer): {exc}"
        ) from None
    return create_app(items_db, turns, os.environ.get("BENCH_CHECKPOINT_DB") or None)
