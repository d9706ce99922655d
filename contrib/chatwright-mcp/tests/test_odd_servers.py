"""The ``mcp`` tool type against a server with odd tools, or one that misbehaves.

The server is tests/odd_server.py over stdio: tools whose names meet once made
safe for a model, schemas that are costly or impossible to check, arguments
named like LangChain's own, an error that echoes a secret, and a server that
stops answering or will not stop. Whatever it does, the turn goes on, the
runtime's event loop keeps serving, no secret reaches the audit log, and no
server outlives the process.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import reprlib
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import alive, pids
from test_tool_type import AGENT, USER, agent_with_script, chat, until

from chatwright.tools import check_tools

HERE = Path(__file__).parent
ODD_SERVER = str(HERE / "odd_server.py")
STOPPING = str(HERE / "stopping.py")
LONG = "x" * 64


def odd_spec(pidfile: Path, **more: Any) -> dict[str, Any]:
    return {"command": sys.executable, "args": [ODD_SERVER, str(pidfile)], **more}


def digest(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:8]


async def test_tools_whose_names_meet_for_the_model_get_names_of_their_own(
    runtime_for: Any, pidfile: Path, plugins: Any
) -> None:
    runtime = await runtime_for({"servers": {"odd": odd_spec(pidfile)}})
    # "a.b", "a_b" and "a b" are all "a_b" once made safe; the long two are one name cut
    # at 64. The name the server gave as it is stays; each changed one gets a hash's end.
    expected = {
        "a_b": "a_b",
        "a.b": f"a_b_{digest('a.b')}",
        "a b": f"a_b_{digest('a b')}",
        LONG + "-first": f"{LONG[:55]}_{digest(LONG + '-first')}",
        LONG + "-other": f"{LONG[:55]}_{digest(LONG + '-other')}",
    }
    await agent_with_script(
        runtime, *({"name": name, "args": {"text": "hi"}} for name in expected.values())
    )
    tools = list(expected)
    await runtime.storage.tools.add(
        AGENT, "odd", type="mcp", config={"server": "odd", "tools": tools}
    )
    # The same names whatever the order the row or the server gives the tools in.
    config = {"server": "odd", "tools": tools[::-1]}
    await runtime.storage.tools.add(AGENT, "odd_again", type="mcp", config=config, is_active=False)
    for report in await check_tools(runtime.storage, runtime.settings, plugins, AGENT):
        names = {t.metadata["chatwright_mcp"]: t.name for t in report.tools}
        assert names == expected, report.row.name

    turn = await chat(runtime)
    # Each name reaches its own tool.
    assert [(c.error, c.result) for c in turn.tool_calls] == [
        (False, f'{remote} {{"text": "hi"}}') for remote in expected
    ]


async def test_a_secret_in_a_servers_error_reaches_neither_the_model_nor_the_audit_log(
    runtime_for: Any, pidfile: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "sk-odd-5d1c7a90e2"
    monkeypatch.setenv("ODD_SECRET_SOURCE", secret)
    spec = odd_spec(pidfile, env={"ODD_SECRET": "${ODD_SECRET_SOURCE}"})
    runtime = await runtime_for({"servers": {"odd": spec}})
    # The model sends the secret too (one it read somewhere): the log keeps it out as well.
    call = {"name": "leak", "args": {"text": f"use {secret}"}}
    await agent_with_script(runtime, call, call)
    config = {"server": "odd", "tools": ["leak"]}
    await runtime.storage.tools.add(AGENT, "odd", type="mcp", config=config)
    turn = await chat(runtime)
    refused = "MCP server 'odd' refused the call: the upstream service refused the key [redacted]"
    assert [(c.error, c.result) for c in turn.tool_calls] == [(True, refused)] * 2
    entries = await runtime.storage.audit.list(USER)
    assert len(entries) == 2
    for entry in entries:
        assert (entry.tool_name, entry.operation, entry.outcome) == ("odd", "call", "error")
        assert entry.error == refused
        assert dict(entry.args) == {"text": "use [redacted]"}
        assert secret not in repr(entry)
    # An error the server sends (with the code the SDK uses for a closed connection too)
    # is its answer: the connection is kept for the next call.
    assert len(pids(pidfile)) == 2


async def test_a_backtracking_pattern_in_a_schema_does_not_stall_the_event_loop(
    runtime_for: Any, pidfile: Path
) -> None:
    runtime = await runtime_for({"servers": {"odd": odd_spec(pidfile)}})
    # ^(a+)+$ takes seconds on 27 a's and a "!", twice as long for each a more.
    text = "a" * 27 + "!"
    await agent_with_script(runtime, {"name": "backtrack", "args": {"text": text}})
    config = {"server": "odd", "tools": ["backtrack"]}
    await runtime.storage.tools.add(AGENT, "odd", type="mcp", config=config)
    await runtime.agent_for(USER, AGENT)  # built (the server listed) before the clock starts

    gaps: list[float] = []

    async def tick() -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.02)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    ticking = asyncio.create_task(tick())
    try:
        turn = await chat(runtime)
    finally:
        ticking.cancel()
    assert turn.response == "done"
    # The pattern is the server's to check: the call reached it.
    [call] = turn.tool_calls
    assert (call.error, call.result) == (False, f'backtrack {{"text": "{text}"}}')
    assert max(gaps) < 1.0, max(gaps)


async def test_a_schema_that_refers_to_itself_is_a_tool_error_and_the_turn_goes_on(
    runtime_for: Any, pidfile: Path
) -> None:
    runtime = await runtime_for({"servers": {"odd": odd_spec(pidfile)}})
    await agent_with_script(runtime, {"name": "itself", "args": {"text": "x"}})
    config = {"server": "odd", "tools": ["itself"]}
    await runtime.storage.tools.add(AGENT, "odd", type="mcp", config=config)
    turn = await chat(runtime)
    assert turn.response == "done"
    [call] = turn.tool_calls
    assert call.error is True
    assert call.result == (
        "MCP server 'odd', tool 'itself': the arguments could not be checked against its "
        "input schema (the schema refers to itself, or nests, too deeply); the call was not "
        "sent. The server's schema needs fixing, or the row should leave this tool out"
    )


async def test_arguments_named_like_langchains_own_reach_the_server(
    runtime_for: Any, pidfile: Path
) -> None:
    runtime = await runtime_for({"servers": {"odd": odd_spec(pidfile)}})
    args = {"self": "s", "config": "c", "run_manager": "r", "callbacks": "k"}
    await agent_with_script(
        runtime, {"name": "named", "args": args}, {"name": "named", "args": {"self": "alone"}}
    )
    config = {"server": "odd", "tools": ["named"]}
    await runtime.storage.tools.add(AGENT, "odd", type="mcp", config=config)
    turn = await chat(runtime)
    assert turn.response == "done"
    assert [(c.error, c.result) for c in turn.tool_calls] == [
        (False, 'named {"callbacks": "k", "config": "c", "run_manager": "r", "self": "s"}'),
        (False, 'named {"self": "alone"}'),
    ]


async def test_a_server_that_stops_answering_is_left_and_the_next_call_reconnects(
    runtime_for: Any, pidfile: Path
) -> None:
    runtime = await runtime_for({"servers": {"odd": odd_spec(pidfile, timeout=3)}})
    await agent_with_script(
        runtime, {"name": "stall", "args": {}}, {"name": "a_b", "args": {"text": "after"}}
    )
    config = {"server": "odd", "tools": ["stall", "a_b"]}
    await runtime.storage.tools.add(AGENT, "odd", type="mcp", config=config)
    turn = await chat(runtime)
    stall, after = turn.tool_calls
    assert stall.error is True
    assert stall.result == (
        "MCP server 'odd' failed: no answer within 3 s (its timeout setting); the next call "
        "reconnects"
    )
    assert (after.error, after.result) == (False, 'a_b {"text": "after"}')
    _listing, stalled, serving = pids(pidfile)
    # The stalled server is stopped (it never reads its input again: it is terminated).
    await until(lambda: not alive(stalled))
    assert alive(serving)


def test_a_server_that_will_not_stop_neither_keeps_the_process_nor_outlives_it(
    tmp_path: Path,
) -> None:
    with (tmp_path / "out").open("w") as out, (tmp_path / "err").open("w") as err:
        process = subprocess.Popen(
            [sys.executable, STOPPING, str(tmp_path)], stdout=out, stderr=err
        )
        try:
            process.wait(40)
            hung = False
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
            hung = True
        finally:
            started = pids(tmp_path / "pids")
            left = [pid for pid in started if alive(pid)]
            for pid in left:  # what a failing run leaves behind
                os.kill(pid, signal.SIGKILL)
    printed = (tmp_path / "out").read_text()
    assert not hung, printed + (tmp_path / "err").read_text()[-2000:]
    assert process.returncode == 0, (tmp_path / "err").read_text()[-2000:]
    assert printed.startswith('called: freeze {"text": "now"}\nclosed in ')
    assert printed.endswith("exited\n")
    assert len(started) == 2 and left == []


async def test_a_check_that_would_take_long_stops_at_its_time_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from chatwright_mcp import schemas

    monkeypatch.setattr(schemas, "CHECK_SECONDS", 0.5)
    # Each level of nesting doubles (and more) what anyOf tries: minutes at 16 levels.
    either = {"type": "array", "items": {"$ref": "#/$defs/nested"}}
    schema = {
        "$defs": {"nested": {"anyOf": [either, dict(either), {"type": "string"}]}},
        "type": "object",
        "properties": {"value": {"$ref": "#/$defs/nested"}},
    }
    value: Any = 1
    for _ in range(16):
        value = [value]
    started = time.monotonic()
    with pytest.raises(schemas.UncheckedArguments, match=r"^it took longer than 0\.5 s$"):
        await schemas.check_arguments(schema, {"value": value})
    assert time.monotonic() - started < 3
    # uniqueItems takes linear time: thousands of objects are compared at once.
    unique = {"type": "object", "properties": {"v": {"type": "array", "uniqueItems": True}}}
    many: list[Any] = [{"n": n} for n in range(12_000)]
    assert await schemas.check_arguments(unique, {"v": many}) == []
    many.append({"n": 7.0})  # equal to {"n": 7}
    assert await schemas.check_arguments(unique, {"v": many}) == [
        f"v: {reprlib.repr(many)} has non-unique elements"
    ]
