"""Model specs, providers, the ``offline`` and ``scripted`` models (DESIGN §6).

The LangChain provider path is exercised for real: ``langchain-openai`` talks
HTTP to a small OpenAI-compatible server written here (``http.server`` on
127.0.0.1, port 0) that answers the first request of a turn with a tool call
and the second with text, both as plain JSON and as a server-sent-event
stream. Everything else runs with no network at all.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage

from chatwright.errors import ModelConfigError, ModelError, NotFoundError
from chatwright.models import build_model, split_spec
from chatwright.plugins.example import assistant as example
from chatwright.plugins.example.offline import HELP, Intent, OfflineChatModel, parse
from chatwright.plugins.models import PROVIDERS
from chatwright.plugins.models.scripted import ScriptedChatModel
from chatwright.registry import LoadPolicy, Plugins
from chatwright.runtime import Runtime, Turn
from chatwright.settings import Settings
from tests.harness import free_port
from tests.harness import sqlite_rows as rows

AGENT = "assistant"
USER = "local"


def _missing(package: str) -> bool:
    try:
        metadata.distribution(package)
    except metadata.PackageNotFoundError:
        return True
    return False


# Providers whose LangChain package is not installed in this environment.
MISSING_PROVIDERS = sorted(
    (prefix, package) for prefix, (package, _) in PROVIDERS.items() if _missing(package)
)


@pytest.fixture(scope="module")
def plugins() -> Plugins:
    return Plugins.load(LoadPolicy())


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "m.db"


@pytest.fixture
async def runtime(db_path: Path) -> AsyncIterator[Runtime]:
    """A started runtime on a fresh SQLite file with the example seeded (offline model)."""
    url = f"sqlite+aiosqlite:///{db_path}"
    settings = Settings(storage={"url": url})  # type: ignore[arg-type, call-arg]
    rt = Runtime(settings, Plugins.load(LoadPolicy()))
    await rt.start(upgrade=True)
    await example.seed(rt.storage, "offline:x")
    try:
        yield rt
    finally:
        await rt.close()


async def open_chat(runtime: Runtime, user: str = USER) -> uuid.UUID:
    session = await runtime.storage.sessions.open(user, AGENT)
    return session.chat_id


def calls(turn: Turn) -> list[tuple[str, dict[str, Any]]]:
    return [(c.name, c.args) for c in turn.tool_calls]


async def tool_id(runtime: Runtime, name: str) -> int:
    return next(t.id for t in await runtime.storage.tools.list(AGENT) if t.name == name)


# -- specs ------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["gpt4", ":x", "openai:", "", ":"])
def test_split_spec_refuses_what_is_not_provider_colon_name(spec: str) -> None:
    with pytest.raises(ModelConfigError) as info:
        split_spec(spec)
    message = str(info.value)
    assert repr(spec) in message
    assert "provider:name" in message
    assert "openai:gpt-4o-mini" in message  # an example of the right form


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("openai:gpt-4o-mini", ("openai", "gpt-4o-mini")),
        ("offline:x", ("offline", "x")),
        # Only the first colon separates: model names may contain colons (ollama tags).
        ("ollama:llama3.1:8b", ("ollama", "llama3.1:8b")),
    ],
)
def test_split_spec_splits_at_the_first_colon(spec: str, expected: tuple[str, str]) -> None:
    assert split_spec(spec) == expected


@pytest.mark.parametrize("spec", ["gpt4", ":x", "openai:"])
def test_build_model_refuses_bad_specs(plugins: Plugins, spec: str) -> None:
    with pytest.raises(ModelConfigError, match="is not provider:name"):
        build_model(plugins, spec, {})


def test_unknown_provider_lists_the_known_ones(plugins: Plugins) -> None:
    with pytest.raises(ModelConfigError) as info:
        build_model(plugins, "nosuchprovider:model-1", {})
    message = str(info.value)
    assert "'nosuchprovider:model-1'" in message
    assert "nosuchprovider" in message
    for known in ("openai", "anthropic", "ollama", "offline", "scripted"):
        assert repr(known) in message, message


def test_offline_and_scripted_build_without_network(
    plugins: Plugins, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    def no_network(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("building a model must not touch the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    offline = build_model(plugins, "offline:x", {})
    scripted = build_model(plugins, "scripted:x", {"responses": [{"content": "hi"}]})
    assert isinstance(offline, OfflineChatModel)
    assert isinstance(scripted, ScriptedChatModel)
    assert offline.invoke([HumanMessage("tell me a joke")]).content == HELP
    assert scripted.invoke([HumanMessage("hello")]).content == "hi"


def test_every_langchain_provider_is_registered(plugins: Plugins) -> None:
    for prefix in PROVIDERS:
        assert plugins.get("register_models", prefix).value is not None


# -- provider errors at first use ------------------------------------------


@pytest.mark.parametrize(
    ("prefix", "package"),
    MISSING_PROVIDERS or [pytest.param("-", "-", marks=pytest.mark.skip("all installed"))],
)
def test_missing_provider_package_names_it(plugins: Plugins, prefix: str, package: str) -> None:
    with pytest.raises(ModelConfigError) as info:
        build_model(plugins, f"{prefix}:some-model", {})
    message = str(info.value)
    assert f"'{prefix}:some-model'" in message
    assert package in message
    assert f"pip install {package}" in message


def test_anthropic_is_among_the_missing_packages() -> None:
    # The tests above must really test something in this environment.
    assert ("anthropic", "langchain-anthropic") in MISSING_PROVIDERS


async def test_missing_package_is_reported_at_first_use_not_at_start(
    runtime: Runtime, db_path: Path
) -> None:
    await runtime.storage.agents.update(AGENT, model="anthropic:claude-3-5-haiku-latest")
    chat_id = await open_chat(runtime)
    with pytest.raises(ModelConfigError, match=r"pip install langchain-anthropic"):
        await runtime.chat(USER, AGENT, chat_id, "add a task to buy milk")
    assert rows(db_path, "SELECT count(*) FROM tasks") == [(0,)]


def test_openai_without_key_says_to_set_it(
    plugins: Plugins, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_ADMIN_KEY"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ModelConfigError) as info:
        build_model(plugins, "openai:gpt-4o-mini", {})
    message = str(info.value)
    assert "'openai:gpt-4o-mini'" in message
    assert "OPENAI_API_KEY" in message
    assert "model_settings.api_key" in message


def test_openai_with_base_url_builds_without_key(
    plugins: Plugins, monkeypatch: pytest.MonkeyPatch
) -> None:
    from langchain_openai import ChatOpenAI

    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_ADMIN_KEY"):
        monkeypatch.delenv(name, raising=False)
    model = build_model(plugins, "openai:llama3.1", {"base_url": "http://127.0.0.1:9/v1"})
    assert isinstance(model, ChatOpenAI)
    assert model.model_name == "llama3.1"
    assert model.openai_api_base == "http://127.0.0.1:9/v1"


def test_openai_model_settings_are_passed_through(plugins: Plugins) -> None:
    model = build_model(
        plugins,
        "openai:gpt-4o-mini",
        {"api_key": "sk-test", "temperature": 0.25, "base_url": "http://127.0.0.1:9/v1"},
    )
    assert model.temperature == 0.25  # type: ignore[attr-defined]
    assert model.openai_api_key.get_secret_value() == "sk-test"  # type: ignore[attr-defined]


# -- the real langchain-openai client against a local stub server ----------


def _chunk(model: str, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-stub",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


@dataclass
class StubOpenAI:
    """An OpenAI-compatible /v1/chat/completions: a tool call first, then text."""

    bodies: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    port: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def reply(self, body: dict[str, Any]) -> tuple[str, list[dict[str, Any]], str]:
        """(text, tool calls, finish reason) for a request."""
        if any(m.get("role") == "tool" for m in body.get("messages", [])):
            return "Added it.", [], "stop"
        call = {
            "id": "call_stub_1",
            "type": "function",
            "function": {"name": "add_task", "arguments": json.dumps({"title": "buy milk"})},
        }
        return "", [call], "tool_calls"

    def handler(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def send(self, status: int, content_type: str, data: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                size = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(size))
                stub.paths.append(self.path)
                stub.bodies.append(body)
                stub.headers.append({k.lower(): v for k, v in self.headers.items()})
                if self.path != "/v1/chat/completions":
                    self.send(404, "application/json", b'{"error": {"message": "no"}}')
                    return
                text, tool_calls, finish = stub.reply(body)
                model = body["model"]
                if body.get("stream"):
                    self.send(
                        200, "text/event-stream", stub.stream(model, text, tool_calls, finish)
                    )
                    return
                message: dict[str, Any] = {"role": "assistant", "content": text or None}
                if tool_calls:
                    message["tool_calls"] = tool_calls
                data = {
                    "id": "chatcmpl-stub",
                    "object": "chat.completion",
                    "created": 0,
                    "model": model,
                    "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
                }
                self.send(200, "application/json", json.dumps(data).encode())

        return Handler

    @staticmethod
    def stream(model: str, text: str, tool_calls: list[dict[str, Any]], finish: str) -> bytes:
        chunks = [_chunk(model, {"role": "assistant", "content": ""})]
        for index, call in enumerate(tool_calls):
            arguments = call["function"]["arguments"]
            head = {
                "index": index,
                "id": call["id"],
                "type": "function",
                "function": {"name": call["function"]["name"], "arguments": ""},
            }
            chunks.append(_chunk(model, {"tool_calls": [head]}))
            # The arguments arrive in pieces, as real servers send them.
            middle = len(arguments) // 2
            for piece in (arguments[:middle], arguments[middle:]):
                chunks.append(
                    _chunk(
                        model, {"tool_calls": [{"index": index, "function": {"arguments": piece}}]}
                    )
                )
        if text:
            middle = len(text) // 2
            chunks.append(_chunk(model, {"content": text[:middle]}))
            chunks.append(_chunk(model, {"content": text[middle:]}))
        chunks.append(_chunk(model, {}, finish))
        lines = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks)
        return (lines + "data: [DONE]\n\n").encode()


@pytest.fixture
def stub() -> Iterator[StubOpenAI]:
    server_stub = StubOpenAI()
    server = ThreadingHTTPServer(("127.0.0.1", 0), server_stub.handler())
    server.daemon_threads = True
    server_stub.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server_stub
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.mark.parametrize("streaming", [False, True], ids=["json", "stream"])
async def test_openai_client_runs_a_tool_turn_against_a_local_server(
    runtime: Runtime, stub: StubOpenAI, db_path: Path, streaming: bool
) -> None:
    model_settings: dict[str, Any] = {"base_url": stub.base_url, "api_key": "test"}
    if streaming:
        model_settings["streaming"] = True
    await runtime.storage.agents.update(
        AGENT, model="openai:stub-model", model_settings=model_settings
    )
    chat_id = await open_chat(runtime)

    turn = await runtime.chat(USER, AGENT, chat_id, "add a task to buy milk")

    # The reply and the tool call record.
    assert turn.response == "Added it."
    assert len(turn.tool_calls) == 1
    record = turn.tool_calls[0]
    assert record.name == "add_task"
    assert record.args == {"title": "buy milk"}
    assert record.error is False
    assert record.result["created"]["title"] == "buy milk"
    task_id = record.result["created"]["id"]

    # The row, owned by the user whose turn it was.
    assert rows(db_path, "SELECT id, user_id, title, status FROM tasks") == [
        (task_id, USER, "buy milk", "pending")
    ]

    # Two requests, both to the chat completions endpoint, both with the key and the mode.
    assert stub.paths == ["/v1/chat/completions"] * 2
    assert all(h.get("authorization") == "Bearer test" for h in stub.headers)
    assert [bool(b.get("stream")) for b in stub.bodies] == [streaming, streaming]
    assert all(b["model"] == "stub-model" for b in stub.bodies)
    first, second = stub.bodies

    # The tool schemas: add_task and its parameters, with the scoping column hidden.
    tools = {t["function"]["name"]: t["function"] for t in first["tools"]}
    assert set(tools) == {t["name"] for t in example.TOOLS}
    add_task = tools["add_task"]
    assert add_task["description"] == "Add a task to the user's list."
    assert set(add_task["parameters"]["properties"]) == {"title", "due_date"}
    assert add_task["parameters"]["required"] == ["title"]
    for tool in tools.values():
        properties = tool["parameters"].get("properties", {})
        assert "user_id" not in properties, tool["name"]
        assert "agent_name" not in properties, tool["name"]
    assert "user_id" not in json.dumps(first["tools"])

    # The system prompt first, then the human message.
    system, human = first["messages"]
    assert system["role"] == "system"
    assert system["content"].startswith(
        "You are a helpful assistant that keeps the user's tasks and notes."
    )
    assert "What you remember about this user:" in system["content"]
    assert "{memory}" not in system["content"]
    assert human == {"role": "user", "content": "add a task to buy milk"}
    assert not any(m.get("role") == "tool" for m in first["messages"])

    # The second request carries the call and its result.
    roles = [m["role"] for m in second["messages"]]
    assert roles == ["system", "user", "assistant", "tool"]
    assistant, tool_result = second["messages"][2:]
    assert assistant["tool_calls"][0]["id"] == "call_stub_1"
    assert assistant["tool_calls"][0]["function"]["name"] == "add_task"
    assert json.loads(assistant["tool_calls"][0]["function"]["arguments"]) == {"title": "buy milk"}
    assert tool_result["tool_call_id"] == "call_stub_1"
    assert json.loads(tool_result["content"]) == {"created": record.result["created"]}

    # The whole exchange is kept in the chat's history.
    stored = await runtime.storage.messages.window(USER, chat_id, 50)
    assert [m.role for m in stored] == ["human", "ai", "tool", "ai"]


async def test_openai_with_base_url_and_no_key_talks_to_the_local_server(
    runtime: Runtime, stub: StubOpenAI, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_ADMIN_KEY"):
        monkeypatch.delenv(name, raising=False)
    await runtime.storage.agents.update(
        AGENT, model="openai:stub-model", model_settings={"base_url": stub.base_url}
    )
    chat_id = await open_chat(runtime)
    turn = await runtime.chat(USER, AGENT, chat_id, "add a task to buy milk")
    assert turn.response == "Added it."
    assert len(stub.bodies) == 2
    assert rows(db_path, "SELECT user_id, title FROM tasks") == [(USER, "buy milk")]


async def test_openai_server_error_is_a_model_error_and_keeps_the_message(
    runtime: Runtime, db_path: Path
) -> None:
    # Nothing listens on this port: the client fails, the turn reports it, the message stays.
    port = free_port()
    await runtime.storage.agents.update(
        AGENT,
        model="openai:stub-model",
        model_settings={
            "base_url": f"http://127.0.0.1:{port}/v1",
            "api_key": "t",
            "max_retries": 0,
        },
    )
    chat_id = await open_chat(runtime)
    with pytest.raises(ModelError, match=r"openai:stub-model"):
        await runtime.chat(USER, AGENT, chat_id, "add a task to buy milk")
    stored = await runtime.storage.messages.window(USER, chat_id, 10)
    assert [m.role for m in stored] == ["human"]


# -- the offline model: parsing ---------------------------------------------


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        ("add a task to buy milk", Intent("create", "tasks", text="buy milk")),
        ("Add a task to Buy Milk.", Intent("create", "tasks", text="Buy Milk")),
        ("please add new task: water the plants", Intent("create", "tasks", "water the plants")),
        ("add task call mum", Intent("create", "tasks", text="call mum")),
        ("remind me to call Sam", Intent("create", "tasks", text="call Sam")),
        ("Remind me to call Sam!", Intent("create", "tasks", text="call Sam")),
        (
            "add a note: the door code is 4711",
            Intent("create", "notes", text="the door code is 4711"),
        ),
        ("list my tasks", Intent("read", "tasks")),
        ("List my tasks.", Intent("read", "tasks")),
        ("list my todos", Intent("read", "tasks")),
        ("list my notes", Intent("read", "notes")),
        ("show my done tasks", Intent("read", "tasks", status="done")),
        ("show me my completed tasks", Intent("read", "tasks", status="done")),
        ("list my open tasks", Intent("read", "tasks", status="pending")),
        ("list my pending tasks", Intent("read", "tasks", status="pending")),
        ("complete task 3", Intent("update", "tasks", row_id=3, status="done")),
        ("mark task 3 as done", Intent("update", "tasks", row_id=3, status="done")),
        ("Mark task #12 as completed.", Intent("update", "tasks", row_id=12, status="done")),
        ("delete task 3", Intent("delete", "tasks", row_id=3)),
        ("remove task #7", Intent("delete", "tasks", row_id=7)),
        ("delete note 2", Intent("delete", "notes", row_id=2)),
        (
            "remember that I like tea",
            Intent("remember", "agent_memories", text="I like tea"),
        ),
        (
            "Please remember that my dog is called Rex.",
            Intent("remember", "agent_memories", text="my dog is called Rex"),
        ),
        ("what do you remember", Intent("recall", "agent_memories")),
        ("What do you remember about me?", Intent("recall", "agent_memories")),
    ],
)
def test_offline_parse(text: str, intent: Intent) -> None:
    assert parse(text) == intent


@pytest.mark.parametrize(
    "text",
    [
        "tell me a joke",
        "what's the weather like in Paris?",
        "",
        "   ",
        "delete task three",
        "complete task",
        "list tasks of bob",
        "I want to add a task to buy milk",
    ],
)
def test_offline_parse_returns_none_for_anything_else(text: str) -> None:
    assert parse(text) is None


# -- the offline model through a runtime ------------------------------------


async def test_offline_task_requests_call_the_right_tools(runtime: Runtime, db_path: Path) -> None:
    chat_id = await open_chat(runtime)

    async def say(text: str) -> Turn:
        return await runtime.chat(USER, AGENT, chat_id, text)

    turn = await say("add a task to buy milk")
    assert calls(turn) == [("add_task", {"title": "buy milk"})]
    assert turn.response == "Added task #1: buy milk (pending)."

    turn = await say("remind me to call Sam")
    assert calls(turn) == [("add_task", {"title": "call Sam"})]
    assert "call Sam" in turn.response
    assert "#2" in turn.response

    turn = await say("list my tasks")
    assert calls(turn) == [("list_tasks", {})]
    assert turn.response.startswith("Your tasks:")
    assert "- #1: buy milk (pending)" in turn.response
    assert "- #2: call Sam (pending)" in turn.response

    turn = await say("complete task 1")
    assert calls(turn) == [("update_task", {"id": 1, "status": "done"})]
    assert turn.response == "Done: task #1: buy milk (done)."

    turn = await say("mark task 2 as done")
    assert calls(turn) == [("update_task", {"id": 2, "status": "done"})]
    assert "#2: call Sam (done)" in turn.response

    turn = await say("show my done tasks")
    assert calls(turn) == [("list_tasks", {"status": "done"})]
    assert "buy milk (done)" in turn.response
    assert "call Sam (done)" in turn.response

    turn = await say("delete task 1")
    assert calls(turn) == [("delete_task", {"id": 1})]
    assert turn.response == "Deleted task #1."

    assert rows(db_path, "SELECT id, user_id, title, status FROM tasks") == [
        (2, USER, "call Sam", "done")
    ]

    # A tool error (the task is gone) is answered, not raised.
    turn = await say("delete task 1")
    assert calls(turn) == [("delete_task", {"id": 1})]
    assert turn.tool_calls[0].error is True
    assert turn.response.startswith("That did not work:")
    assert "not found" in turn.response


async def test_offline_note_requests(runtime: Runtime, db_path: Path) -> None:
    chat_id = await open_chat(runtime)
    turn = await runtime.chat(USER, AGENT, chat_id, "add a note: the door code is 4711")
    assert calls(turn) == [("add_note", {"body": "the door code is 4711"})]
    assert turn.response == "Added note #1: the door code is 4711."

    turn = await runtime.chat(USER, AGENT, chat_id, "list my notes")
    assert calls(turn) == [("list_notes", {})]
    assert turn.response == "Your notes:\n- #1: the door code is 4711"

    # The example has no tool that deletes notes: the model says so, nothing fails.
    turn = await runtime.chat(USER, AGENT, chat_id, "delete note 1")
    assert turn.tool_calls == []
    assert turn.response.startswith("I have no tool to delete notes.")
    assert rows(db_path, "SELECT user_id, body FROM notes") == [(USER, "the door code is 4711")]


async def test_offline_empty_lists_say_so(runtime: Runtime) -> None:
    chat_id = await open_chat(runtime)
    turn = await runtime.chat(USER, AGENT, chat_id, "list my tasks")
    assert calls(turn) == [("list_tasks", {})]
    assert turn.response == "You have no tasks yet."


async def test_offline_empty_filtered_list_names_the_status(runtime: Runtime) -> None:
    chat_id = await open_chat(runtime)
    await runtime.chat(USER, AGENT, chat_id, "add a task to buy milk")
    turn = await runtime.chat(USER, AGENT, chat_id, "show my done tasks")
    assert calls(turn) == [("list_tasks", {"status": "done"})]
    assert turn.response != "You have no tasks yet."
    assert "done" in turn.response


async def test_offline_remembers_facts_by_appending_them(runtime: Runtime, db_path: Path) -> None:
    chat_id = await open_chat(runtime)
    turn = await runtime.chat(USER, AGENT, chat_id, "remember that I like tea")
    assert calls(turn) == [("save_memory", {"fact": "I like tea"})]
    assert "I like tea" in turn.response

    turn = await runtime.chat(USER, AGENT, chat_id, "remember that my dog is called Rex")
    assert calls(turn) == [("save_memory", {"fact": "my dog is called Rex"})]
    assert turn.tool_calls[0].result == {"saved": {"notes": "I like tea\nmy dog is called Rex"}}

    assert rows(db_path, "SELECT user_id, agent_name, notes FROM agent_memories") == [
        (USER, AGENT, "I like tea\nmy dog is called Rex")
    ]

    turn = await runtime.chat(USER, AGENT, chat_id, "what do you remember")
    assert calls(turn) == [("read_memory", {})]
    assert "I like tea" in turn.response
    assert "my dog is called Rex" in turn.response

    # Another user's memory is their own.
    bob_chat = await open_chat(runtime, "bob")
    turn = await runtime.chat("bob", AGENT, bob_chat, "what do you remember")
    assert turn.response == "I don't remember anything about you yet."


async def test_offline_remember_without_read_tool_keeps_old_facts(
    runtime: Runtime, db_path: Path
) -> None:
    chat_id = await open_chat(runtime)
    await runtime.chat(USER, AGENT, chat_id, "remember that I like tea")
    await runtime.storage.tools.set_active(await tool_id(runtime, "read_memory"), False)
    await runtime.chat(USER, AGENT, chat_id, "remember that my dog is called Rex")
    notes = rows(db_path, "SELECT notes FROM agent_memories")
    assert "I like tea" in notes[0][0]


async def test_offline_unknown_request_gets_help(runtime: Runtime) -> None:
    chat_id = await open_chat(runtime)
    turn = await runtime.chat(USER, AGENT, chat_id, "tell me a joke")
    assert turn.tool_calls == []
    assert turn.response == HELP
    assert "offline model" in turn.response
    assert "chatwright agents set assistant --model" in turn.response
    assert "OPENAI_API_KEY" in turn.response
    stored = await runtime.storage.messages.window(USER, chat_id, 10)
    assert [m.role for m in stored] == ["human", "ai"]


async def test_offline_says_when_the_agent_lacks_the_tool(runtime: Runtime, db_path: Path) -> None:
    await runtime.storage.tools.set_active(await tool_id(runtime, "add_note"), False)
    chat_id = await open_chat(runtime)
    turn = await runtime.chat(USER, AGENT, chat_id, "add a note: the door code is 4711")
    assert turn.tool_calls == []
    assert turn.response.startswith("I have no tool to create notes.")
    assert rows(db_path, "SELECT count(*) FROM notes") == [(0,)]
    # The other tools still work in the same chat.
    turn = await runtime.chat(USER, AGENT, chat_id, "add a task to buy milk")
    assert calls(turn) == [("add_task", {"title": "buy milk"})]


async def test_offline_picks_tools_by_what_they_do_not_by_name(runtime: Runtime) -> None:
    # A second "create tasks" tool under another name, the original one disabled.
    await runtime.storage.tools.set_active(await tool_id(runtime, "add_task"), False)
    config = dict(next(t for t in example.TOOLS if t["name"] == "add_task")["config"])
    await runtime.storage.tools.add(AGENT, "new_todo", type="crud", config=config)
    chat_id = await open_chat(runtime)
    turn = await runtime.chat(USER, AGENT, chat_id, "add a task to buy milk")
    assert calls(turn) == [("new_todo", {"title": "buy milk"})]


# -- the scripted model -----------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "needle"),
    [
        ({"bogus": 1}, "bogus"),
        ({"responses": [], "temperature": 0}, "temperature"),
        ({"responses": {"content": "x"}}, "responses must be a list"),
        ({"responses": "hi"}, "responses must be a list"),
        ({"responses": ["hi"]}, "responses must be a list"),
    ],
)
def test_scripted_settings_are_validated(settings: dict[str, Any], needle: str) -> None:
    with pytest.raises(ModelConfigError, match=needle):
        ScriptedChatModel.from_settings(settings)


def test_scripted_settings_errors_surface_through_build_model(plugins: Plugins) -> None:
    with pytest.raises(ModelConfigError, match="unknown model_settings bogus"):
        build_model(plugins, "scripted:x", {"bogus": True})


def test_scripted_replies_in_order_with_generated_ids() -> None:
    model = ScriptedChatModel.from_settings(
        {
            "responses": [
                {"tool_calls": [{"name": "add_task", "args": {"title": "milk"}}, {"name": "x"}]},
                {"tool_calls": [{"name": "list_tasks", "id": "mine"}]},
                {"content": "Added."},
            ]
        }
    )
    first = model.invoke([HumanMessage("hi")])
    second = model.invoke([HumanMessage("hi")])
    third = model.invoke([HumanMessage("hi")])
    assert isinstance(first, AIMessage)
    assert [(c["name"], c["args"]) for c in first.tool_calls] == [
        ("add_task", {"title": "milk"}),
        ("x", {}),
    ]
    generated = [c["id"] for c in first.tool_calls]
    assert all(isinstance(i, str) and i for i in generated)
    assert len(set(generated)) == 2
    assert [c["id"] for c in second.tool_calls] == ["mine"]
    assert generated[0] != "mine"
    assert third.content == "Added."
    assert third.tool_calls == []

    with pytest.raises(ModelError, match=r"no reply left \(3 were given\)"):
        model.invoke([HumanMessage("hi")])


async def test_scripted_async_and_empty_script() -> None:
    model = ScriptedChatModel.from_settings({"responses": [{"content": "one"}]})
    assert (await model.ainvoke([HumanMessage("hi")])).content == "one"
    with pytest.raises(ModelError, match="no reply left"):
        await model.ainvoke([HumanMessage("hi")])
    with pytest.raises(ModelError, match="no reply left"):
        ScriptedChatModel.from_settings({}).invoke([HumanMessage("hi")])


async def test_scripted_fail_raises_model_error() -> None:
    model = ScriptedChatModel.from_settings({"fail": "boom", "responses": [{"content": "x"}]})
    with pytest.raises(ModelError, match="boom"):
        model.invoke([HumanMessage("hi")])
    with pytest.raises(ModelError, match="boom"):
        await model.ainvoke([HumanMessage("hi")])


async def test_scripted_turn_through_the_runtime(runtime: Runtime, db_path: Path) -> None:
    await runtime.storage.agents.update(
        AGENT,
        model="scripted:x",
        model_settings={
            "responses": [
                {"tool_calls": [{"name": "add_task", "args": {"title": "milk"}}]},
                {"content": "Added."},
            ]
        },
    )
    chat_id = await open_chat(runtime)
    turn = await runtime.chat(USER, AGENT, chat_id, "whatever")
    assert turn.response == "Added."
    assert calls(turn) == [("add_task", {"title": "milk"})]
    assert rows(db_path, "SELECT user_id, title FROM tasks") == [(USER, "milk")]
    # The script is used up: the next turn fails with a model error, keeping the message.
    with pytest.raises(ModelError, match="no reply left"):
        await runtime.chat(USER, AGENT, chat_id, "again")
    stored = await runtime.storage.messages.window(USER, chat_id, 10)
    assert [m.role for m in stored] == ["human", "ai", "tool", "ai", "human"]


async def test_scripted_failure_through_the_runtime_keeps_the_message(runtime: Runtime) -> None:
    await runtime.storage.agents.update(AGENT, model="scripted:x", model_settings={"fail": "boom"})
    chat_id = await open_chat(runtime)
    with pytest.raises(ModelError) as info:
        await runtime.chat(USER, AGENT, chat_id, "hello")
    assert "boom" in str(info.value)
    assert "'assistant'" in str(info.value)
    stored = await runtime.storage.messages.window(USER, chat_id, 10)
    assert [(m.role, m.content["data"]["content"]) for m in stored] == [("human", "hello")]


async def test_chat_refuses_another_users_chat(runtime: Runtime) -> None:
    chat_id = await open_chat(runtime, "bob")
    with pytest.raises(NotFoundError):
        await runtime.chat(USER, AGENT, chat_id, "list my tasks")


@pytest.mark.parametrize("streaming", [False, True], ids=["json", "stream"])
async def test_openai_reply_text_reaches_on_token(
    runtime: Runtime, stub: StubOpenAI, streaming: bool
) -> None:
    model_settings: dict[str, Any] = {"base_url": stub.base_url, "api_key": "test"}
    if streaming:
        model_settings["streaming"] = True
    await runtime.storage.agents.update(
        AGENT, model="openai:stub-model", model_settings=model_settings
    )
    chat_id = await open_chat(runtime)
    tokens: list[str] = []
    seen: list[str] = []

    async def on_token(text: str) -> None:
        tokens.append(text)

    async def on_message(message: Any) -> None:
        seen.append(message.type)

    turn = await runtime.chat(
        USER, AGENT, chat_id, "add a task to buy milk", on_token=on_token, on_message=on_message
    )
    assert turn.response == "Added it."
    assert "".join(tokens) == "Added it."
    if streaming:
        assert len(tokens) > 1  # the stub sends the text in two pieces
    assert seen == ["ai", "tool", "ai"]
