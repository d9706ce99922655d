"""The OpenAI-compatible stub answers the real ``langchain-openai`` client as documented."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest
from langchain.chat_models import init_chat_model
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage
from langchain_core.tools import tool

from tests.openai_stub import OpenAIStub


@tool
def lookup(query: str) -> str:
    """Look something up."""
    return query


def model(stub: OpenAIStub, name: str, **extra: object):  # type: ignore[no-untyped-def]
    return init_chat_model(f"openai:{name}", **stub.model_settings(**extra))


async def test_echo_answers_with_usage(openai_stub: OpenAIStub) -> None:
    reply = await model(openai_stub, "echo").ainvoke([HumanMessage("hello there")])
    assert reply.text == "echo: hello there"
    assert reply.usage_metadata is not None
    assert reply.usage_metadata["input_tokens"] == len("hello there")
    assert reply.usage_metadata["output_tokens"] == 3
    assert reply.usage_metadata.get("input_token_details", {}).get("cache_read") == 5
    (request,) = openai_stub.requests
    assert request.model == "echo" and not request.stream
    assert request.usage is not None and request.usage["prompt_tokens"] == 11


async def test_streamed_echo_reports_usage_when_asked(openai_stub: OpenAIStub) -> None:
    chat = model(openai_stub, "echo", stream_usage=True)
    chunks = [c async for c in chat.astream([HumanMessage("one two")])]
    merged = chunks[0]
    for c in chunks[1:]:
        merged = merged + c
    assert isinstance(merged, AIMessageChunk)
    assert merged.text == "echo: one two"
    assert merged.usage_metadata is not None and merged.usage_metadata["input_tokens"] == 7
    (request,) = openai_stub.requests
    assert request.stream and request.body["stream_options"] == {"include_usage": True}


async def test_streamed_without_usage_reports_none(openai_stub: OpenAIStub) -> None:
    chat = model(openai_stub, "echo", stream_usage=False)
    chunks = [c async for c in chat.astream([HumanMessage("hi")])]
    assert "".join(c.text for c in chunks) == "echo: hi"
    assert openai_stub.requests[0].usage is None
    assert "stream_options" not in openai_stub.requests[0].body


@pytest.mark.parametrize("stream", [False, True])
async def test_loop_always_calls_the_first_tool(openai_stub: OpenAIStub, stream: bool) -> None:
    chat = model(openai_stub, "loop").bind_tools([lookup])
    for _ in range(3):
        if stream:
            chunks = [c async for c in chat.astream([HumanMessage("go")])]
            reply: AIMessage = chunks[0]
            for c in chunks[1:]:
                reply = reply + c  # type: ignore[assignment]
        else:
            reply = await chat.ainvoke([HumanMessage("go")])
        assert [(c["name"], c["args"]) for c in reply.tool_calls] == [("lookup", {"query": "x"})]
    assert len(openai_stub.requests) == 3


@pytest.mark.parametrize("stream", [False, True])
async def test_bad_args_gives_invalid_tool_calls(openai_stub: OpenAIStub, stream: bool) -> None:
    chat = model(openai_stub, "bad-args").bind_tools([lookup])
    if stream:
        chunks = [c async for c in chat.astream([HumanMessage("go")])]
        reply: AIMessage = chunks[0]
        for c in chunks[1:]:
            reply = reply + c  # type: ignore[assignment]
        # A merged chunk parses its arguments when it is turned into a message.
        reply = AIMessage(
            content=reply.content,
            tool_calls=reply.tool_calls,
            invalid_tool_calls=reply.invalid_tool_calls,
        )
    else:
        reply = await chat.ainvoke([HumanMessage("go")])
    assert reply.tool_calls == []
    assert [c["name"] for c in reply.invalid_tool_calls] == ["lookup"]


async def test_fail_is_http_500(openai_stub: OpenAIStub) -> None:
    import openai

    with pytest.raises(openai.InternalServerError):
        await model(openai_stub, "fail", max_retries=0).ainvoke([HumanMessage("x")])
    assert len(openai_stub.requests) == 1


async def test_hang_records_when_the_client_gives_up(openai_stub: OpenAIStub) -> None:
    import openai

    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        await model(openai_stub, "hang", timeout=0.5, max_retries=1).ainvoke([HumanMessage("x")])
    assert time.monotonic() - started < 20
    assert len(openai_stub.requests) == 2  # the first try and one retry
    for request in openai_stub.requests:
        deadline = time.monotonic() + 5
        while request.closed is None and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert request.closed is not None
        # The client gave up after its timeout (0.5 s from its send; the stub notes the
        # request a little later under load), not at once.
        assert 0.2 < request.closed - request.received < 10


def test_hang_does_not_hold_up_stopping() -> None:
    import threading

    import httpx

    stub = OpenAIStub().start()

    def call() -> None:
        with contextlib.suppress(httpx.HTTPError):
            httpx.post(
                stub.url + "/chat/completions", json={"model": "hang", "messages": []}, timeout=30
            )

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not stub.requests and time.monotonic() < deadline:
        time.sleep(0.02)
    assert stub.requests
    started = time.monotonic()
    stub.stop()
    assert time.monotonic() - started < 5
