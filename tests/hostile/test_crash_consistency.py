"""Review finding "crash consistency", replayed on a real ``chatwright serve``.

The server was killed (SIGKILL) with turns in flight; the rows their tools had
created stayed, but nothing of those turns was stored: the user's message, the
tool call and its result all vanished. Now the human message is stored before
the model runs and each complete tool exchange as soon as it completes. Here a
scripted model calls ``add_task`` and then sleeps before its reply, so that
several turns are surely between the two when the server is killed; after a
restart, every task row must have its tool exchange in its chat.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx

from chatwright.plugins.example import assistant as example
from chatwright.runtime import Runtime
from tests.hostile.conftest import SECRET, Backend, MakeRuntime, bearer

AGENT = example.AGENT
USERS = [f"user{i}" for i in range(6)]
SCRIPT = {
    "responses": [
        {"tool_calls": [{"name": "add_task", "args": {"title": "written before the crash"}}]},
        {"sleep": 120, "content": "Added."},
    ]
}


Process = subprocess.Popen[bytes]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serve(database: Mapping[str, str], workdir: Path, label: str) -> Iterator[tuple[str, Process]]:
    """A ``chatwright serve`` subprocess with JWT auth on ``database`` (its
    ``CHATWRIGHT_STORAGE__*`` variables), ready; killed at the end if alive."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATWRIGHT_")}
    env.update(
        database,
        CHATWRIGHT_SERVER__AUTH="jwt",
        CHATWRIGHT_SERVER__JWT_SECRET=SECRET,
        CHATWRIGHT_SESSIONS__SWEEP_INTERVAL="3600",
    )
    command = [sys.executable, "-m", "chatwright", "serve", "--host", "127.0.0.1"]
    log_path = workdir / f"{label}.log"
    with log_path.open("w", encoding="utf-8") as log:
        proc = subprocess.Popen(
            [*command, "--port", str(port)],
            cwd=workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"server not ready:\n{log_path.read_text()}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                        break
                time.sleep(0.1)
            yield url, proc
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)


async def task_rows(runtime: Runtime) -> list[dict[str, Any]]:
    import sqlalchemy as sa

    async with runtime.storage.read() as conn:  # type: ignore[attr-defined]
        result = await conn.execute(sa.text("SELECT id, user_id FROM tasks ORDER BY id"))
        return [dict(r._mapping) for r in result]


async def test_killed_server_leaves_every_tool_write_with_its_exchange_stored(
    make_runtime: MakeRuntime, backend: Backend, tmp_path: Path
) -> None:
    runtime = await make_runtime()
    await example.seed(runtime.storage, "scripted:x")
    await runtime.storage.agents.update(AGENT, model_settings=SCRIPT)

    chats: dict[str, str] = {}
    with serve(backend.env, tmp_path, "first") as (url, proc):
        async with httpx.AsyncClient(base_url=url, timeout=300) as client:
            for user in USERS:
                opened = await client.post(
                    "/api/sessions", json={"agent_name": AGENT}, headers=bearer(user)
                )
                assert opened.status_code == 200, opened.text
                chats[user] = opened.json()["chat_id"]
            in_flight = [
                asyncio.create_task(
                    client.post(
                        "/api/chat",
                        json={"agent_name": AGENT, "chat_id": chats[user], "message": "add it"},
                        headers=bearer(user),
                    )
                )
                for user in USERS
            ]
            deadline = time.monotonic() + 60
            while len(await task_rows(runtime)) < len(USERS):
                assert time.monotonic() < deadline, "the tools did not all run"
                await asyncio.sleep(0.05)
            # Every turn has written its row and now waits on the model's reply.
            await asyncio.sleep(1.0)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            for request in in_flight:
                with contextlib.suppress(httpx.HTTPError):
                    await request
            assert not any(r.done() and not r.exception() for r in in_flight)

    rows = await task_rows(runtime)
    assert sorted(r["user_id"] for r in rows) == sorted(USERS)
    with serve(backend.env, tmp_path, "second") as (url, _):
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            for row in rows:
                user = row["user_id"]
                page = await client.get(f"/api/chats/{chats[user]}/messages", headers=bearer(user))
                assert page.status_code == 200, page.text
                messages = page.json()["messages"]
                assert [m["role"] for m in messages] == ["human", "ai", "tool"]
                assert messages[0]["text"] == "add it"
                [call] = messages[1]["tool_calls"]
                assert call["name"] == "add_task"
                assert messages[2]["tool_call_id"] == call["id"]
                assert f'"id":{row["id"]}' in messages[2]["text"]
