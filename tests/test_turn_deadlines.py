"""Turns that run past their time limit, and servers stopped with turns in flight.

Everything runs for real: ``chatwright serve`` subprocesses on SQLite and
PostgreSQL (one or two of them, or ``--workers 2``), the real ``langchain-openai``
client, and the local OpenAI-compatible stub (:mod:`tests.openai_stub`) whose
``hang`` model never answers. What is checked:

- a hung turn answers 504 with the error body within its limit (plus a margin
  for a shared machine), the human message is kept, and the chat is free at once:
  the next turn, on the same process or on another one, answers at once (a
  leaked lease would hold it for ``storage.turn_lease``, set long here); the
  stream answers an ``error`` event with status 504 the same way;
- SIGTERM with a hung turn in flight: the server exits within
  ``server.shutdown_timeout`` plus a margin, the human message is stored, and a
  new process runs a turn on that chat at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import ServerProcess, clean_env, pg_env, storage_for
from tests.openai_stub import OpenAIStub

TURN_TIMEOUT = 1.5
LEASE = 120  # far longer than any wait below: a leaked lease shows as a stuck chat
MARGIN = 15.0  # a shared machine with two cores


@pytest.fixture
def stub() -> Iterator[OpenAIStub]:
    with OpenAIStub() as running:
        yield running


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=60) as http:
        yield http


async def add_agent(url: str, name: str, model: str, settings: dict[str, Any]) -> None:
    storage = storage_for(url)
    try:
        await storage.upgrade()
        await storage.agents.create(
            name, system_prompt="A test agent.", model=model, model_settings=settings
        )
    finally:
        await storage.close()


async def set_model(url: str, name: str, model: str) -> None:
    storage = storage_for(url)
    try:
        await storage.agents.update(name, model=model)
    finally:
        await storage.close()


async def stored_roles(url: str, chat_id: str) -> list[tuple[str, Any]]:
    storage = storage_for(url)
    try:
        from chatwright.history import to_model_input

        page = await storage.messages.page("local", uuid.UUID(chat_id), limit=1000)
        return [
            (m.role, message.text) for m, message in zip(page, to_model_input(page), strict=True)
        ]
    finally:
        await storage.close()


def server(url: str, cwd: Path, *args: str, label: str = "server", **env: str) -> ServerProcess:
    defaults = {
        "CHATWRIGHT_TURNS__TIMEOUT": str(TURN_TIMEOUT),
        "CHATWRIGHT_STORAGE__TURN_LEASE": str(LEASE),
        "CHATWRIGHT_SESSIONS__SWEEP_INTERVAL": "3600",
    }
    variables = clean_env(**pg_env(url), **{**defaults, **env})
    process = ServerProcess(*args, cwd=cwd, env=variables, label=label)
    process.wait_ready(timeout=60)
    return process


async def open_chat(client: httpx.AsyncClient, base: str, agent: str) -> str:
    response = await client.post(base + "/api/sessions", json={"agent_name": agent, "new": True})
    assert response.status_code == 200, response.text
    return str(response.json()["chat_id"])


async def post_turn(
    client: httpx.AsyncClient, base: str, agent: str, chat_id: str, message: str
) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = await client.post(
        base + "/api/chat",
        json={"agent_name": agent, "session_id": chat_id, "message": message},
    )
    return response, time.monotonic() - started


def parse_sse(text: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in lines:
            events.append((lines["event"], json.loads(lines["data"])))
    return events


async def assert_times_out_then_works(
    client: httpx.AsyncClient,
    url: str,
    agent: str,
    first: ServerProcess,
    second: ServerProcess,
) -> None:
    chat_id = await open_chat(client, first.url, agent)
    response, took = await post_turn(client, first.url, agent, chat_id, "hello")
    assert response.status_code == 504, f"{response.text}\n{first.log()}"
    error = response.json()["error"]
    assert "time limit" in error and f"{TURN_TIMEOUT:g} s" in error
    assert took < TURN_TIMEOUT + MARGIN
    assert await stored_roles(url, chat_id) == [("human", "hello")]

    # The stream: an error event with 504, the human message kept.
    started = time.monotonic()
    streamed = await client.post(
        second.url + "/api/chat/stream",
        json={"agent_name": agent, "session_id": chat_id, "message": "streamed"},
    )
    assert streamed.status_code == 200
    assert time.monotonic() - started < TURN_TIMEOUT + MARGIN
    events = parse_sse(streamed.text)
    assert events[-1][0] == "error", events
    assert events[-1][1]["status"] == 504
    assert [r for r, _ in await stored_roles(url, chat_id)] == ["human", "human"]

    # A working model: the next turn, on the other process, answers at once.
    await set_model(url, agent, "openai:echo")
    response, took = await post_turn(client, second.url, agent, chat_id, "again")
    assert response.status_code == 200, f"{response.text}\n{second.log()}"
    assert response.json()["response"] == "echo: again"
    assert response.json()["stopped"] is None
    assert took < MARGIN
    roles = [r for r, _ in await stored_roles(url, chat_id)]
    assert roles == ["human", "human", "human", "ai"]


@pytest.mark.parametrize("sql_url", ["sqlite", "postgresql"], indirect=True)
async def test_hung_turn_answers_504_and_frees_the_chat(
    sql_url: str, tmp_path: Path, stub: OpenAIStub, client: httpx.AsyncClient
) -> None:
    agent = f"hung-{uuid.uuid4().hex[:8]}"
    await add_agent(sql_url, agent, "openai:hang", stub.model_settings())
    one = server(sql_url, tmp_path)
    try:
        await assert_times_out_then_works(client, sql_url, agent, one, one)
    finally:
        one.stop()


@pytest.mark.parametrize("sql_url", ["postgresql"], indirect=True)
async def test_hung_turn_on_one_process_frees_the_chat_for_another(
    sql_url: str, tmp_path: Path, stub: OpenAIStub, client: httpx.AsyncClient
) -> None:
    agent = f"hung2-{uuid.uuid4().hex[:8]}"
    await add_agent(sql_url, agent, "openai:hang", stub.model_settings())
    one = server(sql_url, tmp_path / "a", label="one")
    two = server(sql_url, tmp_path / "b", label="two")
    try:
        await assert_times_out_then_works(client, sql_url, agent, one, two)
    finally:
        one.stop()
        two.stop()


# --------------------------------------------------------------------------- shutdown


async def wait_for_request(stub: OpenAIStub, count: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while len(stub.requests) < count:
        assert time.monotonic() < deadline, "the model was never called"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize(
    ("sql_url", "workers"),
    [("sqlite", 1), ("postgresql", 1), ("postgresql", 2)],
    indirect=["sql_url"],
)
async def test_sigterm_with_a_hung_turn_exits_within_the_deadline(
    sql_url: str, workers: int, tmp_path: Path, stub: OpenAIStub, client: httpx.AsyncClient
) -> None:
    agent = f"stop-{uuid.uuid4().hex[:8]}"
    await add_agent(sql_url, agent, "openai:hang", stub.model_settings())
    shutdown = 2.0
    one = server(
        sql_url,
        tmp_path / "a",
        "--workers",
        str(workers),
        label="one",
        CHATWRIGHT_TURNS__TIMEOUT="600",
        CHATWRIGHT_SERVER__SHUTDOWN_TIMEOUT=str(shutdown),
    )
    try:
        chat_id = await open_chat(client, one.url, agent)
        turn = asyncio.create_task(post_turn(client, one.url, agent, chat_id, "in flight"))
        await wait_for_request(stub, 1)
        started = time.monotonic()
        os.killpg(one.proc.pid, signal.SIGTERM)
        await asyncio.to_thread(one.proc.wait, shutdown + MARGIN)
        took = time.monotonic() - started
        assert took < shutdown + MARGIN, one.log()
        # The turn in flight is stopped as at its time limit: 504, saying why.
        response, _ = await turn
        assert response.status_code == 504, f"{response.text}\n{one.log()}"
        assert "server stopped" in response.json()["error"]
    finally:
        one.stop()
    assert await stored_roles(sql_url, chat_id) == [("human", "in flight")]
    await set_model(sql_url, agent, "openai:echo")
    two = server(sql_url, tmp_path / "b", label="two")
    try:
        response, took = await post_turn(client, two.url, agent, chat_id, "again")
        assert response.status_code == 200, f"{response.text}\n{two.log()}"
        assert response.json()["response"] == "echo: again"
        assert took < MARGIN
    finally:
        two.stop()


@pytest.mark.parametrize(
    ("sql_url", "workers"), [("sqlite", 1), ("postgresql", 2)], indirect=["sql_url"]
)
async def test_a_second_signal_exits_at_once(
    sql_url: str, workers: int, tmp_path: Path, stub: OpenAIStub, client: httpx.AsyncClient
) -> None:
    agent = f"force-{uuid.uuid4().hex[:8]}"
    await add_agent(sql_url, agent, "openai:hang", stub.model_settings())
    one = server(
        sql_url,
        tmp_path,
        "--workers",
        str(workers),
        CHATWRIGHT_TURNS__TIMEOUT="600",
        CHATWRIGHT_SERVER__SHUTDOWN_TIMEOUT="600",
    )
    try:
        chat_id = await open_chat(client, one.url, agent)
        turn = asyncio.create_task(post_turn(client, one.url, agent, chat_id, "in flight"))
        await wait_for_request(stub, 1)
        os.killpg(one.proc.pid, signal.SIGTERM)
        await asyncio.sleep(1.0)
        assert one.proc.poll() is None, "the first signal waits for the turn in flight"
        started = time.monotonic()
        os.killpg(one.proc.pid, signal.SIGTERM)
        await asyncio.to_thread(one.proc.wait, MARGIN)
        assert time.monotonic() - started < MARGIN, one.log()
        with contextlib.suppress(httpx.HTTPError):
            await turn
    finally:
        one.stop()
