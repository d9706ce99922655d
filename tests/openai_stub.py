"""A local OpenAI-compatible chat-completions server, for tests of real model clients.

The real ``langchain-openai`` client talks to it over loopback, streaming or not,
so tests cover what a scripted model cannot: client timeouts and retries, usage
reports, streamed chunks, tool-call arguments that are not JSON, HTTP errors.

Use the ``openai_stub`` fixture (it starts one server per test and stops it)::

    def test_x(openai_stub: OpenAIStub) -> None:
        spec, settings = "openai:echo", openai_stub.model_settings()
        ...  # an agent with that model and model_settings
        assert openai_stub.requests[0].body["stream"] is True

or ``with OpenAIStub() as stub:`` outside pytest. Its API:

- ``url``: the base URL, ``http://127.0.0.1:<port>/v1``;
- ``model_settings(**extra)``: an agent's ``model_settings`` reaching it
  (``base_url`` and a dummy ``api_key``), plus ``extra``;
- ``requests``: a :class:`Recorded` per ``POST /v1/chat/completions``, in
  arrival order: the JSON body, the headers (lower-cased names), when it came,
  when the client hung up on a ``hang`` request, and the usage it reported.

The model name of a request picks the behaviour (a name that starts with one
counts too, so ``echo-2`` echoes):

``echo``
    answers ``echo: <the last user message>``; reports usage with
    ``prompt_tokens`` = the characters of every message, ``completion_tokens`` =
    the words of the reply, ``prompt_tokens_details.cached_tokens`` = half the
    prompt tokens (rounded down).
``hang``
    never answers; the handler returns when the client hangs up or the server
    stops, so it never holds up the test process.
``slow``
    as ``echo``, streamed a word every 0.2 s (or answered after as long).
``loop``
    always calls the request's first tool (``tools[0]``) with arguments made
    from its JSON schema's required properties; forever.
``slow-args``
    as ``loop``, with the call's arguments streamed a character every 0.2 s (or
    answered after as long).
``bad-args``
    calls the first tool (``lookup`` when the request has none) with arguments
    that are not valid JSON.
``fail``
    answers HTTP 500 with an OpenAI error body.
``same-ids``
    calls the first tool twice in one reply, both calls with the id
    ``call_same`` (``same-ids-empty``: both with an empty id), and answers
    ``done`` once the last message is a tool result. It refuses (400) a request
    whose assistant messages repeat a tool call id or have an empty one, as
    providers that hold ids unique do.

``cut-args``
    calls the first tool with arguments cut off in the middle of a string (the
    provider stopped at its output limit): ``finish_reason: length``.
``ends-early``
    streamed, as ``cut-args`` but the body simply ends after the cut arguments:
    no finish reason, no usage, no ``[DONE]`` (answered whole: as ``cut-args``).
``breaks``
    streamed, 2,000 chunks of ``word `` and then the connection breaks (the
    body is shorter than its declared length); answered whole, the same break
    before any of it.
``refuses``
    refuses: no content, the refusal in its own field (streamed: in the chunks'
    ``refusal``), ``finish_reason: stop``.
``filtered``
    no content, ``finish_reason: content_filter``.
``huge-error``
    answers HTTP 500 with an OpenAI error body whose message is 2,000,000
    characters.

A streamed answer (``"stream": true``) is SSE chunks ``data: {...}``, then, when
the request asks ``stream_options.include_usage``, a chunk with no choices and
the usage, then ``data: [DONE]``. Non-streamed answers carry usage always.
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

BEHAVIOURS = (
    "bad-args",
    "breaks",
    "cut-args",
    "echo",
    "ends-early",
    "fail",
    "filtered",
    "hang",
    "huge-error",
    "loop",
    "refuses",
    "same-ids",
    "slow-args",
    "slow",
)
BROKEN_WORDS = 2000
"""How many ``word `` chunks ``breaks`` streams before the connection breaks."""
SLOW_DELAY = 0.2
# Not JSON even to the lenient parser streamed replies go through.
BAD_ARGUMENTS = "{query: 'x'}"
# Arguments the provider stopped writing in the middle of a string: not JSON, but the
# lenient parser streamed replies go through makes {"title": "transfer 100 EUR to acc"}.
REFUSAL = "I can't help with that."
CUT_ARGUMENTS = '{"title": "transfer 100 EUR to acc'


@dataclass
class Recorded:
    """One chat-completions request the stub received."""

    body: dict[str, Any]
    headers: dict[str, str]
    received: float
    """``time.monotonic()`` when the request was read."""
    closed: float | None = None
    """For ``hang``: ``time.monotonic()`` when the client hung up (None if it did not)."""
    usage: dict[str, Any] | None = None
    """The usage the stub reported in its answer (None when it reported none)."""

    @property
    def model(self) -> str:
        return str(self.body.get("model", ""))

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream"))


def finish_of(behaviour: str, calls: list[dict[str, Any]]) -> str:
    """The finish reason of an answer: ``cut-args`` was stopped at the output limit."""
    if behaviour in {"cut-args", "ends-early"}:
        return "length"
    if behaviour == "filtered":
        return "content_filter"
    return "tool_calls" if calls else "stop"


def behaviour_of(model: str) -> str:
    for name in sorted(BEHAVIOURS, key=len, reverse=True):
        if model.startswith(name):
            return name
    return "echo"


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _example(schema: dict[str, Any]) -> Any:
    kind = schema.get("type")
    if schema.get("enum"):
        return schema["enum"][0]
    if kind == "string":
        return "x"
    if kind in {"integer", "number"}:
        return 1
    if kind == "boolean":
        return True
    if kind == "array":
        return []
    if kind == "object":
        return {}
    return None


def _loop_args(tool: dict[str, Any]) -> dict[str, Any]:
    params = tool.get("function", {}).get("parameters", {}) or {}
    props = params.get("properties", {}) or {}
    return {name: _example(props.get(name, {})) for name in params.get("required", [])}


class OpenAIStub:
    """The server; see the module docstring."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                stub._handle(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._thread: threading.Thread | None = None

    def model_settings(self, **extra: Any) -> dict[str, Any]:
        return {"base_url": self.url, "api_key": "stub-key", **extra}

    def start(self) -> OpenAIStub:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> OpenAIStub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- requests --------------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("content-length") or 0)
        raw = handler.rfile.read(length)
        if handler.path.rstrip("/") != "/v1/chat/completions":
            self._send_json(handler, 404, {"error": {"message": f"no route {handler.path}"}})
            return
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            self._send_json(handler, 400, {"error": {"message": "body is not JSON"}})
            return
        record = Recorded(
            body=body,
            headers={k.lower(): v for k, v in handler.headers.items()},
            received=time.monotonic(),
        )
        with self._lock:
            self.requests.append(record)
        behaviour = behaviour_of(record.model)
        if behaviour == "hang":
            self._hang(handler, record)
            return
        if behaviour in {"fail", "huge-error"}:
            said = "the stub fails as asked" if behaviour == "fail" else "y" * 2_000_000
            self._send_json(handler, 500, {"error": {"message": said, "type": "server_error"}})
            return
        if behaviour == "breaks":
            self._break(handler, record)
            return
        messages = body.get("messages", [])
        tools = body.get("tools") or []
        text = ""
        calls: list[dict[str, Any]] = []
        if behaviour == "same-ids":
            ids = [
                c.get("id")
                for m in messages
                if m.get("role") == "assistant"
                for c in m.get("tool_calls") or []
            ]
            if not all(ids) or len(set(ids)) != len(ids):
                self._send_json(
                    handler,
                    400,
                    {"error": {"message": f"tool call ids must be unique and set: {ids}"}},
                )
                return
        if behaviour == "same-ids" and messages and messages[-1].get("role") == "tool":
            text = "done"
        elif behaviour == "same-ids" and tools:
            tool = tools[0]
            same = "" if record.model.startswith("same-ids-empty") else "call_same"
            args = json.dumps(_loop_args(tool))
            calls = [{**self._call(tool["function"]["name"], args), "id": same} for _ in "ab"]
        elif behaviour in {"echo", "slow"}:
            last = next((m for m in reversed(messages) if m.get("role") == "user"), {})
            text = f"echo: {_text(last.get('content'))}"
        elif behaviour in {"loop", "slow-args"} and tools:
            tool = tools[0]
            calls = [self._call(tool["function"]["name"], json.dumps(_loop_args(tool)))]
        elif behaviour in {"loop", "slow-args"}:
            text = f"{behaviour}: the request has no tools"
        elif behaviour in {"cut-args", "ends-early"}:
            name = tools[0]["function"]["name"] if tools else "lookup"
            calls = [self._call(name, CUT_ARGUMENTS)]
        elif behaviour == "bad-args":
            name = tools[0]["function"]["name"] if tools else "lookup"
            calls = [self._call(name, BAD_ARGUMENTS)]
        prompt = sum(len(_text(m.get("content"))) for m in messages)
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": len(text.split()) + len(calls),
            "total_tokens": prompt + len(text.split()) + len(calls),
            "prompt_tokens_details": {"cached_tokens": prompt // 2},
        }
        if record.stream:
            include = bool((body.get("stream_options") or {}).get("include_usage"))
            record.usage = usage if include else None
            self._stream(handler, record, text, calls, usage if include else None, behaviour)
        else:
            if behaviour == "slow":
                time.sleep(SLOW_DELAY * max(1, len(text.split())))
            if behaviour == "slow-args":
                time.sleep(SLOW_DELAY * sum(len(c["function"]["arguments"]) for c in calls))
            record.usage = usage
            message: dict[str, Any] = {"role": "assistant", "content": text or None}
            if behaviour == "refuses":
                message["refusal"] = REFUSAL
            if calls:
                message["tool_calls"] = calls
            self._send_json(
                handler,
                200,
                {
                    "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": record.model,
                    "choices": [
                        {
                            "index": 0,
                            "message": message,
                            "finish_reason": finish_of(behaviour, calls),
                        }
                    ],
                    "usage": usage,
                },
            )

    @staticmethod
    def _call(name: str, arguments: str) -> dict[str, Any]:
        return {
            "id": f"call_{uuid.uuid4().hex[:12]}",
            "type": "function",
            "function": {"name": name, "arguments": arguments},
        }

    def _hang(self, handler: BaseHTTPRequestHandler, record: Recorded) -> None:
        conn: socket.socket = handler.connection
        while not self._stopping.is_set():
            readable, _, _ = select.select([conn], [], [], 0.05)
            if readable:
                try:
                    data = conn.recv(1, socket.MSG_PEEK)
                except OSError:
                    data = b""
                if not data:
                    record.closed = time.monotonic()
                    break
                time.sleep(0.05)
        handler.close_connection = True

    def _break(self, handler: BaseHTTPRequestHandler, record: Recorded) -> None:
        """Declare a long body, send some of it (streamed: text chunks), then close."""
        handler.send_response(200)
        streamed = record.stream
        handler.send_header("content-type", "text/event-stream" if streamed else "application/json")
        handler.send_header("content-length", str(10**9))
        handler.close_connection = True
        handler.end_headers()
        if not streamed:
            handler.wfile.write(b'{"id": "chatcmpl-broken", ')
            handler.wfile.flush()
            return
        base = {"id": "chatcmpl-broken", "object": "chat.completion.chunk", "model": record.model}
        try:
            for delta in [{"role": "assistant", "content": ""}] + [
                {"content": "word "}
            ] * BROKEN_WORDS:
                choice = {"index": 0, "delta": delta, "finish_reason": None}
                payload = {**base, "created": int(time.time()), "choices": [choice]}
                handler.wfile.write(f"data: {json.dumps(payload)}\n\n".encode())
            handler.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass

    @staticmethod
    def _send_json(handler: BaseHTTPRequestHandler, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("content-type", "application/json")
        handler.send_header("content-length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def _stream(
        self,
        handler: BaseHTTPRequestHandler,
        record: Recorded,
        text: str,
        calls: list[dict[str, Any]],
        usage: dict[str, Any] | None,
        behaviour: str,
    ) -> None:
        handler.send_response(200)
        handler.send_header("content-type", "text/event-stream")
        handler.send_header("cache-control", "no-cache")
        handler.close_connection = True
        handler.end_headers()
        ident = f"chatcmpl-{uuid.uuid4().hex[:12]}"
        created = int(time.time())

        def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
            payload = {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": created,
                "model": record.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                **extra,
            }
            return f"data: {json.dumps(payload)}\n\n".encode()

        try:
            handler.wfile.write(chunk({"role": "assistant", "content": ""}))
            if behaviour == "refuses":
                handler.wfile.write(chunk({"refusal": REFUSAL}))
            words = text.split(" ") if text else []
            for i, word in enumerate(words):
                if behaviour == "slow":
                    time.sleep(SLOW_DELAY)
                handler.wfile.write(chunk({"content": word if i == 0 else " " + word}))
                handler.wfile.flush()
            for i, call in enumerate(calls):
                start = {
                    "index": i,
                    "id": call["id"],
                    "type": "function",
                    "function": {"name": call["function"]["name"], "arguments": ""},
                }
                handler.wfile.write(chunk({"tool_calls": [start]}))
                given = call["function"]["arguments"]
                pieces = list(given) if behaviour == "slow-args" else [given]
                for piece in pieces:
                    if behaviour == "slow-args":
                        time.sleep(SLOW_DELAY)
                    arguments = {"index": i, "function": {"arguments": piece}}
                    handler.wfile.write(chunk({"tool_calls": [arguments]}))
                    handler.wfile.flush()
            if behaviour == "ends-early":
                handler.wfile.flush()
                return  # the body ends here: the connection closes
            handler.wfile.write(chunk({}, finish_of(behaviour, calls)))
            if usage is not None:
                final = {
                    "id": ident,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": record.model,
                    "choices": [],
                    "usage": usage,
                }
                handler.wfile.write(f"data: {json.dumps(final)}\n\n".encode())
            handler.wfile.write(b"data: [DONE]\n\n")
            handler.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass


@pytest.fixture
def openai_stub() -> Iterator[OpenAIStub]:
    """A started :class:`OpenAIStub`, stopped after the test."""
    with OpenAIStub() as stub:
        yield stub


__all__ = ["BEHAVIOURS", "OpenAIStub", "Recorded", "behaviour_of", "openai_stub"]
