"""What the write-safety tests of the server share: a real server with a ``writer`` agent.

The ``writer`` agent runs the ``scripted`` model (a list of replies and tool
calls) with ``crud`` tool rows copied from the example (``add_task``,
``update_task``, ``delete_task``, ``list_tasks``, ``save_memory``) in the
approval mode a test asks for. The example's tables (``tasks``, ``notes``) are
created by seeding the example. Rows are planted and read with plain SQL on
the server's own storage, past every tool.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import jwt
import sqlalchemy as sa
from fastapi import FastAPI

from chatwright import testing
from chatwright.plugins.example import assistant as example
from chatwright.plugins.server.app import create_app
from chatwright.plugins.sql import schema
from chatwright.registry import LoadPolicy, Plugins
from chatwright.runtime import Runtime
from tests.harness import DATA_TABLES, pg_storage_settings, uvicorn_serving

SECRET = "chatwright-write-safety-secret-of-32-bytes"
AGENT = "writer"
WRITE_TOOLS = ("add_task", "update_task", "delete_task", "save_memory")


def bearer(user: str) -> dict[str, str]:
    """The Authorization header of a signed-in user (HS256 JWT, as Supabase issues)."""
    payload = {"sub": user, "aud": "authenticated", "exp": int(time.time()) + 86400}
    return {"Authorization": f"Bearer {jwt.encode(payload, SECRET, algorithm='HS256')}"}


@dataclass
class Api:
    app: FastAPI
    client: httpx.AsyncClient
    port: int

    @property
    def runtime(self) -> Runtime:
        runtime: Runtime = self.app.state.runtime
        return runtime

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def sql(self, statement: str, **params: Any) -> list[dict[str, Any]]:
        """A statement past every tool (it sees every user's rows)."""
        async with self.runtime.storage.write() as conn:  # type: ignore[attr-defined]
            result = await conn.execute(sa.text(statement), params)
            return [dict(r._mapping) for r in result] if result.returns_rows else []

    async def expire(self, action_id: str, when: datetime) -> None:
        """Move a pending action's expiry (through the schema, so each database gets its type)."""
        t = schema.pending_actions
        async with self.runtime.storage.write() as conn:  # type: ignore[attr-defined]
            await conn.execute(
                t.update().where(t.c.id == uuid.UUID(action_id)).values(expires_at=when)
            )

    async def task(self, user: str, title: str, status: str = "pending") -> int:
        """Plant one of ``user``'s tasks; its id."""
        rows = await self.sql(
            "INSERT INTO tasks (user_id, title, status, created_at, updated_at) "
            "VALUES (:user, :title, :status, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP) RETURNING id",
            user=user,
            title=title,
            status=status,
        )
        return int(rows[0]["id"])

    async def tasks(self, user: str) -> dict[int, tuple[str, str]]:
        """``user``'s tasks as {id: (title, status)}."""
        rows = await self.sql(
            "SELECT id, title, status FROM tasks WHERE user_id = :user ORDER BY id", user=user
        )
        return {int(r["id"]): (str(r["title"]), str(r["status"])) for r in rows}

    async def open_chat(self, user: str | None = None) -> str:
        """A new chat of ``user`` (the local user when None) with the writer; its id."""
        response = await self.client.post(
            "/api/sessions", json={"agent_name": AGENT, "new": True}, headers=headers(user)
        )
        assert response.status_code == 200, response.text
        return str(response.json()["chat_id"])

    async def say(self, user: str | None, chat_id: str, message: str = "go") -> httpx.Response:
        return await self.client.post(
            "/api/chat",
            json={"agent_name": AGENT, "chat_id": chat_id, "message": message},
            headers=headers(user),
        )

    async def say_ok(self, user: str | None, chat_id: str, message: str = "go") -> dict[str, Any]:
        response = await self.say(user, chat_id, message)
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()
        return data


def headers(user: str | None) -> dict[str, str]:
    return bearer(user) if user is not None else {}


async def seed_writer(
    runtime: Runtime,
    responses: Sequence[dict[str, Any]],
    *,
    approval: str = "required",
    approval_default: str = "required",
    tools: Sequence[str] = WRITE_TOOLS,
) -> None:
    """The example's tables, and the ``writer`` agent replaying ``responses``."""
    storage = runtime.storage
    await example.seed(storage, "offline:assistant")
    if await storage.agents.get(AGENT) is not None:
        await storage.agents.update(AGENT, model_settings={"responses": list(responses)})
        return
    await storage.agents.create(
        AGENT,
        system_prompt="You keep the user's tasks.",
        model="scripted:writer",
        model_settings={"responses": list(responses)},
    )
    for tool in example.TOOLS:
        if tool["name"] in tools:
            await storage.tools.add(
                AGENT,
                tool["name"],
                type="crud",
                config=tool["config"],
                description=tool["description"],
                approval=approval,
                approval_default=approval_default,
            )


def calls(*made: tuple[str, dict[str, Any]], reply: str = "Done.") -> list[dict[str, Any]]:
    """A script: one reply making ``made`` calls, then ``reply``."""
    return [{"tool_calls": [{"name": n, "args": a} for n, a in made]}, {"content": reply}]


@contextlib.asynccontextmanager
async def serving(
    url: str, *, jwt_auth: bool = True, fresh: bool = True, **sections: Any
) -> AsyncIterator[Api]:
    """The real app under uvicorn on a free loopback port, and a client for it.

    ``fresh`` empties a PostgreSQL database first (its framework tables, and the
    example's tables, which outlive a test there).
    """
    values: dict[str, Any] = {
        "storage": pg_storage_settings(url),
        "sessions": {"sweep_interval": 3600},
    }
    if jwt_auth:
        values["server"] = {"auth": "jwt", "jwt_secret": SECRET}
    for key, section in sections.items():
        values[key] = {**values.get(key, {}), **section}
    plugins = Plugins.load(LoadPolicy())
    app = create_app(testing.settings(plugins, **values), plugins)
    async with uvicorn_serving(app) as port:
        runtime: Runtime = app.state.runtime
        if fresh and not url.startswith("sqlite"):
            async with runtime.storage.write() as conn:  # type: ignore[attr-defined]
                await conn.execute(sa.text("DROP TABLE IF EXISTS tasks, notes"))
                await conn.execute(
                    sa.text(f"TRUNCATE {', '.join(DATA_TABLES)} RESTART IDENTITY CASCADE")
                )
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            yield Api(app, client, port)


async def add_schedule_all(runtime: Runtime) -> None:
    """A ``required`` crud update whose filter can match many rows of the ``writer``:
    ``schedule_all(status, due_date)`` sets the due date of every task in a status."""
    await runtime.storage.tools.add(
        AGENT,
        "schedule_all",
        type="crud",
        config={
            "table": "tasks",
            "operation": "update",
            "args": {"due_date": {"type": "date"}},
            "filters": {"status": {"type": "string", "required": True}},
        },
        approval="required",
    )
