"""All three contrib plugins installed together, used the way a deployment would.

Run by scripts/test-contrib in a fresh virtual environment where chatwright and
the plugins were installed from their directories (so their entry points are
real): the server runs with sessions in Redis and the S3-FIFO cache policy, and
an `http` tool row added with `chatwright tools add` is called on the next turn.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

BIN = Path(sys.executable).parent
CHATWRIGHT = str(BIN / "chatwright")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_or_skip() -> None:
    try:
        socket.create_connection(("127.0.0.1", 6379), 2).close()
    except OSError:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI=true requires Redis on 127.0.0.1:6379")
        pytest.skip("no Redis on 127.0.0.1:6379")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    redis_or_skip()
    base = {k: v for k, v in os.environ.items() if not k.startswith("CHATWRIGHT_")}
    return {
        **base,
        "CHATWRIGHT_STORAGE__URL": f"sqlite+aiosqlite:///{tmp_path / 'together.db'}",
        "CHATWRIGHT_SESSIONS__STORE": "redis",
        "CHATWRIGHT_CACHE__POLICY": "s3fifo",
        "CHATWRIGHT_REDIS_PREFIX": f"cwtest-{uuid.uuid4().hex[:8]}:",
    }


def cli(env: dict[str, str], *args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        [CHATWRIGHT, *args], env=env, input=stdin, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def catalogue() -> Iterator[tuple[int, list[str]]]:
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            body = json.dumps({"id": self.path.rsplit("/", 1)[-1], "name": "teapot"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1], seen
    finally:
        server.shutdown()


@pytest.fixture
def served(env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    cli(env, "init", "--example")
    port = free_port()
    process = subprocess.Popen(
        [CHATWRIGHT, "serve", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_plugins_are_all_listed_with_versions(env: dict[str, str]) -> None:
    listed = {p["name"]: p for p in json.loads(cli(env, "plugins", "--json"))}
    for name, hook in (
        ("redis", "register_session_stores"),
        ("s3fifo", "register_eviction_policies"),
        ("http_tool", "register_tool_types"),
    ):
        assert listed[name]["version"] == "0.1.0"
        assert listed[name]["bundled"] is False
        assert listed[name]["error"] is None
        assert hook in listed[name]["hooks"]


def test_chat_with_redis_sessions_s3fifo_and_an_http_tool_row(
    env: dict[str, str], served: str, catalogue: tuple[int, list[str]]
) -> None:
    import redis

    client = httpx.Client(base_url=served, timeout=30)
    session = client.post("/api/sessions", json={"agent_name": "assistant"}).json()
    reply = client.post(
        "/api/chat",
        json={
            "agent_name": "assistant",
            "session_id": session["chat_id"],
            "message": "add a task to buy milk",
        },
    ).json()
    assert reply["error"] is None
    assert reply["tool_calls"][0]["name"] == "add_task"

    # The session lives in Redis, not in SQL.
    r = redis.Redis(host="127.0.0.1", port=6379, decode_responses=True)
    prefix = env["CHATWRIGHT_REDIS_PREFIX"]
    keys = list(r.scan_iter(f"{prefix}*"))
    try:
        assert any(session["id"] in key for key in keys), keys
        listed = json.loads(cli(env, "sessions", "list", "--json"))
        assert [s["id"] for s in listed] == [session["id"]]

        # An http tool row, added with the CLI, is called by a scripted model next turn.
        port, seen = catalogue
        row = {
            "name": "get_item",
            "type": "http",
            "description": "Look up an item by its id.",
            "config": {
                "method": "GET",
                "url": f"http://127.0.0.1:{port}/items/{{item_id}}",
                "allowed_hosts": [f"127.0.0.1:{port}"],
                "args": {"item_id": {"type": "string", "required": True}},
            },
        }
        cli(env, "tools", "add", "--agent", "assistant", stdin=json.dumps(row))
        script = [
            {"tool_calls": [{"name": "get_item", "args": {"item_id": "42"}}]},
            {"content": "It is a teapot."},
        ]
        cli(
            env,
            "agents",
            "set",
            "assistant",
            "--model",
            "scripted:x",
            "--setting",
            f"responses={json.dumps(script)}",
        )
        turn = client.post(
            "/api/chat",
            json={
                "agent_name": "assistant",
                "session_id": session["chat_id"],
                "message": "what is item 42?",
            },
        ).json()
        assert turn["error"] is None, turn
        assert turn["response"] == "It is a teapot."
        (call,) = turn["tool_calls"]
        assert call["name"] == "get_item"
        assert call["error"] is False
        assert call["result"]["body"] == {"id": "42", "name": "teapot"}
        assert seen == ["/items/42"]

        metrics = client.get("/metrics").text
        assert "chatwright_cache_builds_total 2" in metrics  # rebuilt once, on the config change
    finally:
        for key in r.scan_iter(f"{prefix}*"):
            r.delete(key)
