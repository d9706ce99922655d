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
import json
import os
import reprlib
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from chatwright_mcp.tool import MAX_TOOLS, McpConfig, McpToolType
from conftest import alive, pids
from langchain_core.utils.function_calling import convert_to_openai_tool
from test_tool_type import AGENT, USER, agent_with_script, chat, until

from chatwright.errors import TurnTimeoutError
from chatwright.tools import ToolContext, check_tools

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
    # The timeout also bounds each start of the server (a Python process importing the
    # SDK: some 3 s on a busy machine), so it is not shorter than that.
    runtime = await runtime_for({"servers": {"odd": odd_spec(pidfile, timeout=8)}})
    await agent_with_script(
        runtime, {"name": "stall", "args": {}}, {"name": "a_b", "args": {"text": "after"}}
    )
    config = {"server": "odd", "tools": ["stall", "a_b"]}
    await runtime.storage.tools.add(AGENT, "odd", type="mcp", config=config)
    turn = await chat(runtime)
    stall, after = turn.tool_calls
    assert stall.error is True
    assert stall.result == (
        "MCP server 'odd' failed: no answer within 8 s (its timeout setting); the next call "
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

    default = schemas.CHECK_SECONDS
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
    # uniqueItems takes linear time: thousands of objects are compared at once (within
    # the usual limit: on a busy machine they may take longer than half a second).
    monkeypatch.setattr(schemas, "CHECK_SECONDS", default)
    unique = {"type": "object", "properties": {"v": {"type": "array", "uniqueItems": True}}}
    many: list[Any] = [{"n": n} for n in range(12_000)]
    assert await schemas.check_arguments(unique, {"v": many}) == []
    many.append({"n": 7.0})  # equal to {"n": 7}
    assert await schemas.check_arguments(unique, {"v": many}) == [
        f"v: {reprlib.repr(many)} has non-unique elements"
    ]


async def test_a_secret_in_a_tools_description_schema_or_name_is_not_shown(
    runtime_for: Any, pidfile: Path, monkeypatch: pytest.MonkeyPatch, plugins: Any
) -> None:
    secret = "sk-odd-5d1c7a90e2"
    monkeypatch.setenv("ODD_SECRET_SOURCE", secret)
    spec = odd_spec(pidfile, env={"ODD_SECRET": "${ODD_SECRET_SOURCE}"})
    runtime = await runtime_for({"servers": {"odd": spec}})
    await agent_with_script(runtime)
    add = runtime.storage.tools.add
    await add(AGENT, "odd", type="mcp", config={"server": "odd", "tools": ["described"]})
    await add(AGENT, "named", type="mcp", config={"server": "odd", "tool_prefix": "for-"})
    await add(AGENT, "missing", type="mcp", config={"server": "odd", "tools": ["nope"]})
    reports = await check_tools(runtime.storage, runtime.settings, plugins, AGENT)
    described, named, missing = reports
    [tool] = described.tools
    assert tool.description == "Calls the upstream service with the key [redacted]."
    key = {"type": "string", "default": "[redacted]", "examples": ["[redacted]-2"]}
    assert tool.args == {"key": key}
    [tool] = named.tools
    assert tool.name == "for-_redacted_"
    [problem] = missing.problems
    assert problem.brief().startswith(
        "config.tools[0]: MCP server 'odd' has no tool 'nope' that rows may use; its tools: "
    )
    assert "for-[redacted]" in problem.brief()
    shown = [t.name for r in reports for t in r.tools]
    shown += [t.description for r in reports for t in r.tools]
    shown += [json.dumps(t.args) for r in reports for t in r.tools]
    shown += [p.brief() for r in reports for p in r.problems]
    assert secret not in repr(shown)


@pytest.mark.parametrize("value", ["in", "ext"])
async def test_a_short_secret_leaves_the_schemas_words_and_names_alone(
    runtime_for: Any, pidfile: Path, monkeypatch: pytest.MonkeyPatch, plugins: Any, value: str
) -> None:
    """A value filled in from the environment that happens to be part of a schema's words
    ("in" of "string") or of a property's name ("ext" of "text") is hidden in the
    schema's text only: the types and names the arguments are built from stay as the
    server gave them, and the tool works."""
    monkeypatch.setenv("ODD_SECRET_SOURCE", value)
    spec = odd_spec(pidfile, env={"ODD_SECRET": "${ODD_SECRET_SOURCE}"})
    runtime = await runtime_for({"servers": {"odd": spec}})
    await agent_with_script(runtime, {"name": "a_b", "args": {"text": "hi"}})
    await runtime.storage.tools.add(
        AGENT, "odd", type="mcp", config={"server": "odd", "tools": ["a_b"]}
    )
    [report] = await check_tools(runtime.storage, runtime.settings, plugins, AGENT)
    [tool] = report.tools
    assert tool.args == {"text": {"type": "string"}}
    turn = await chat(runtime)
    [record] = turn.tool_calls
    assert record.error is False, record.result


async def test_a_denied_call_holding_a_secret_is_audited_redacted(
    runtime_for: Any, pidfile: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The entry chatwright records of a call it did not run (denied here) hides the
    server's secrets, as the entries of the calls the tool runs do."""
    secret = "sk-odd-a04e61b7c3"
    monkeypatch.setenv("ODD_SECRET_SOURCE", secret)
    spec = odd_spec(pidfile, env={"ODD_SECRET": "${ODD_SECRET_SOURCE}"})
    runtime = await runtime_for({"servers": {"odd": spec}})
    await agent_with_script(runtime, {"name": "a_b", "args": {"text": f"use {secret}"}})
    await runtime.storage.tools.add(
        AGENT, "odd", type="mcp", config={"server": "odd", "tools": ["a_b"]}, approval="required"
    )
    turn = await chat(runtime)
    [action] = turn.pending
    assert dict(action.args) == {"text": f"use {secret}"}  # approving would send it
    await runtime.decide(USER, action.id, False)
    [entry] = await runtime.storage.audit.list(USER)
    assert (entry.outcome, dict(entry.args)) == ("denied", {"text": "use [redacted]"})


async def test_a_write_the_turns_time_limit_cancels_under_way_is_in_the_audit_log(
    runtime_for: Any, pidfile: Path
) -> None:
    runtime = await runtime_for({"servers": {"odd": odd_spec(pidfile)}})
    # slow answers after 3 s; the turn may last 1 s.
    await agent_with_script(runtime, {"name": "slow", "args": {"text": "pay"}}, turn_timeout=1)
    await runtime.storage.tools.add(
        AGENT, "odd", type="mcp", config={"server": "odd", "tools": ["slow"]}
    )
    await runtime.agent_for(USER, AGENT)  # built (the server listed) before the clock starts
    with pytest.raises(TurnTimeoutError):
        await chat(runtime)
    [entry] = await runtime.storage.audit.list(USER)
    assert (entry.tool_name, entry.operation, entry.outcome) == ("odd", "call", "error")
    assert dict(entry.args) == {"text": "pay"}
    assert entry.error == (
        "MCP server 'odd': cancelled on its way or after it was sent (the turn was stopped); "
        "the server may have acted"
    )


async def test_a_lone_surrogate_in_arguments_is_refused_and_the_connection_serves_on(
    runtime_for: Any, pidfile: Path
) -> None:
    runtime = await runtime_for({"servers": {"odd": odd_spec(pidfile)}})
    await agent_with_script(runtime)
    config = {"server": "odd", "tools": ["a_b", "slow"]}
    row = await runtime.storage.tools.add(AGENT, "odd", type="mcp", config=config)
    context = ToolContext(AGENT, runtime.storage, runtime.settings, user_id=USER)
    built = await McpToolType().build(row, McpConfig.model_validate(config), context)
    tools = {t.name: t for t in built}

    async def call(name: str, args: dict[str, Any]) -> Any:
        call = {"name": name, "args": args, "id": "1", "type": "tool_call"}
        return (await tools[name].ainvoke(call)).content

    assert await call("a_b", {"text": "first"}) == 'a_b {"text": "first"}'
    # Another user's call is under way on the shared connection when one model's
    # arguments hold half of a UTF-16 pair (in a value, or in a name).
    other = asyncio.create_task(call("slow", {"text": "other"}))
    await asyncio.sleep(1)
    refused = (
        "Invalid arguments: they hold a lone surrogate (half of a UTF-16 pair, not a "
        "character), which cannot be sent as UTF-8"
    )
    assert await call("a_b", {"text": "x\ud800y"}) == refused
    assert await call("a_b", {"text\udfff": "x"}) == refused
    assert await other == 'slow {"text": "other"}'
    assert await call("a_b", {"text": "after"}) == 'a_b {"text": "after"}'
    # One server process served every call: the connection was never dropped.
    _listing, serving = pids(pidfile)
    assert alive(serving)


async def test_a_servers_tools_listed_in_pages_are_all_found(
    runtime_for: Any, pidfile: Path, plugins: Any
) -> None:
    spec = odd_spec(pidfile, env={"ODD_PAGES": "3"})
    runtime = await runtime_for({"servers": {"odd": spec}})
    await agent_with_script(runtime, {"name": "described", "args": {}})
    await runtime.storage.tools.add(
        AGENT, "odd", type="mcp", config={"server": "odd", "tools": ["a.b", "described"]}
    )
    [report] = await check_tools(runtime.storage, runtime.settings, plugins, AGENT)
    assert report.problems == []
    assert [t.metadata["chatwright_mcp"] for t in report.tools] == ["a.b", "described"]
    # The tool on the last of the 5 pages is called like any.
    turn = await chat(runtime)
    assert [(c.error, c.result) for c in turn.tool_calls] == [(False, "described {}")]


async def test_a_server_whose_pages_never_end_gives_the_tools_of_the_first_hundred(
    runtime_for: Any, pidfile: Path, plugins: Any, caplog: pytest.LogCaptureFixture
) -> None:
    spec = odd_spec(pidfile, env={"ODD_PAGES": "endless"})
    runtime = await runtime_for({"servers": {"odd": spec}})
    await agent_with_script(runtime)
    await runtime.storage.tools.add(AGENT, "odd", type="mcp", config={"server": "odd"})
    [report] = await check_tools(runtime.storage, runtime.settings, plugins, AGENT)
    assert report.problems == []
    assert [t.name for t in report.tools] == [f"page{n}" for n in range(100)]
    assert (
        "chatwright: MCP server 'odd' lists its tools in more than 100 pages; the tools of "
        "the first 100 are used"
    ) in caplog.messages


BROKEN = {
    # Refused by the MCP SDK's check of the listing (it would refuse the whole listing).
    "properties_list": (
        "its entry in the server's tool list is not valid MCP (inputSchema.properties: Input "
        "should be a valid dictionary)"
    ),
    "property_number": (
        "its entry in the server's tool list is not valid MCP (inputSchema.properties.text: "
        "Input should be a valid dictionary)"
    ),
    "property_list": (
        "its entry in the server's tool list is not valid MCP (inputSchema.properties.text: "
        "Input should be a valid dictionary)"
    ),
    "required_odd": (
        "its entry in the server's tool list is not valid MCP (inputSchema.required.0: Input "
        "should be a valid string)"
    ),
    # Listed, but a model cannot be given them (a model's tools are sent with their
    # references filled in: it would fail every turn of the agent).
    "ref_nowhere": (
        'its input schema cannot be given to a model (KeyError: "Reference '
        "'#/$defs/nowhere' not found.\")"
    ),
    "ref_elsewhere": (
        "its input schema cannot be given to a model (ValueError: ref paths are expected to "
        "be URI fragments, meaning they should start with #.)"
    ),
    "ref_not_text": (
        "its input schema cannot be given to a model (AttributeError: 'int' object has no "
        "attribute 'split')"
    ),
    "not_an_object": (
        "its entry in the server's tool list is not valid MCP (inputSchema.type: Input "
        "should be 'object')"
    ),
    "too_deep": "its input schema nests, or refers to itself, too deeply to be given to a model",
}


async def test_tools_whose_schemas_cannot_be_given_to_a_model_are_left_out_alone(
    runtime_for: Any,
    pidfile: Path,
    plugins: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = "sk-odd-77e0c4a1d9"
    monkeypatch.setenv("ODD_SECRET_SOURCE", secret)
    env = {"ODD_LIST": "broken", "ODD_SECRET": "${ODD_SECRET_SOURCE}"}
    runtime = await runtime_for({"servers": {"odd": odd_spec(pidfile, env=env)}})
    await agent_with_script(
        runtime,
        {"name": "good_first", "args": {"text": "a"}},
        {"name": "good_last", "args": {"text": "b"}},
    )
    await runtime.storage.tools.add(AGENT, "odd", type="mcp", config={"server": "odd"})
    [report] = await check_tools(runtime.storage, runtime.settings, plugins, AGENT)
    assert report.problems == []
    good = ["good_first", "good_middle", "good_last"]
    assert [t.name for t in report.tools] == good
    # Each tool left out is named, with its server, its row and why, in the log.
    for name, why in [*BROKEN.items(), ("bad-[redacted]", BROKEN["properties_list"])]:
        assert (
            f"chatwright: MCP server 'odd', tool {name!r} of row 'odd' left out: {why}; the "
            "row's other tools are used. The server's schema for it needs fixing"
        ) in caplog.messages, name
    assert secret not in caplog.text

    built = await runtime.agent_for(USER, AGENT)
    assert [t.name for t in built.tools] == good
    assert built.problems == []
    # What a chat model's bind_tools makes of each tool it is given.
    for tool in built.tools:
        convert_to_openai_tool(tool)
    turn = await chat(runtime)
    assert [(c.error, c.result) for c in turn.tool_calls] == [
        (False, 'good_first {"text": "a"}'),
        (False, 'good_last {"text": "b"}'),
    ]


@pytest.mark.parametrize("name", ["properties_list", "ref_nowhere", "too_deep"])
async def test_a_row_that_names_only_a_tool_that_cannot_be_given_to_a_model_says_why(
    runtime_for: Any, pidfile: Path, plugins: Any, name: str
) -> None:
    spec = odd_spec(pidfile, env={"ODD_LIST": "broken"})
    runtime = await runtime_for({"servers": {"odd": spec}})
    await agent_with_script(runtime)
    add = runtime.storage.tools.add
    await add(AGENT, "alone", type="mcp", config={"server": "odd", "tools": [name]})
    await add(AGENT, "with", type="mcp", config={"server": "odd", "tools": [name, "good_last"]})
    alone, with_good = await check_tools(runtime.storage, runtime.settings, plugins, AGENT)
    assert alone.tools == []
    assert [p.brief() for p in alone.problems] == [
        f"config.tools[0]: MCP server 'odd', tool {name!r} cannot be exposed: {BROKEN[name]}; "
        "the server's schema for it needs fixing, or the row should expose other tools"
    ]
    # Named next to a good tool, it is left out and the good one is exposed.
    assert with_good.problems == []
    assert [t.name for t in with_good.tools] == ["good_last"]


async def test_a_row_whose_prefix_picks_only_tools_that_cannot_be_given_to_a_model_says_why(
    runtime_for: Any, pidfile: Path, plugins: Any
) -> None:
    spec = odd_spec(pidfile, env={"ODD_LIST": "broken"})
    runtime = await runtime_for({"servers": {"odd": spec}})
    await agent_with_script(runtime)
    config = {"server": "odd", "tool_prefix": "ref_"}
    await runtime.storage.tools.add(AGENT, "refs", type="mcp", config=config)
    [report] = await check_tools(runtime.storage, runtime.settings, plugins, AGENT)
    assert report.tools == []
    assert [p.brief() for p in report.problems] == [
        f"config.tool_prefix: MCP server 'odd', tool {name!r} cannot be exposed: {BROKEN[name]}; "
        "the server's schema for it needs fixing, or the row should expose other tools"
        for name in ("ref_nowhere", "ref_elsewhere", "ref_not_text")
    ]


async def test_a_server_that_lists_thousands_of_tools_gives_a_row_the_first_of_them(
    runtime_for: Any, pidfile: Path, plugins: Any, caplog: pytest.LogCaptureFixture
) -> None:
    spec = odd_spec(pidfile, env={"ODD_LIST": "many", "ODD_PAGES": "500"})
    runtime = await runtime_for({"servers": {"odd": spec}})
    await agent_with_script(runtime, {"name": "many4999", "args": {"text": "last"}})
    add = runtime.storage.tools.add
    await add(AGENT, "all", type="mcp", config={"server": "odd"}, is_active=False)
    await add(AGENT, "ones", type="mcp", config={"server": "odd", "tool_prefix": "many1"})
    config = {"server": "odd", "tool_prefix": "many49", "name_prefix": "p_"}
    await add(AGENT, "last", type="mcp", config=config)
    named = [f"many{n}" for n in range(4999, 4999 - MAX_TOOLS - 10, -1)]
    await add(AGENT, "named", type="mcp", config={"server": "odd", "tools": named})
    every, ones, last, by_name = await check_tools(
        runtime.storage, runtime.settings, plugins, AGENT
    )
    assert [r.problems for r in (every, ones, last, by_name)] == [[], [], [], []]
    # Above the cap, the first in the server's order, after the row's choice.
    assert [t.name for t in every.tools] == [f"many{n}" for n in range(MAX_TOOLS)]
    ones_listed = [f"many{n}" for n in range(5000) if str(n).startswith("1")]
    assert [t.name for t in ones.tools] == ones_listed[:MAX_TOOLS]
    for row, listed in (("all", 5000), ("ones", len(ones_listed))):
        assert (
            f"chatwright: MCP server 'odd' lists {listed} tools that row {row!r} may expose, "
            f"more than the {MAX_TOOLS} a row takes without naming them; the first "
            f"{MAX_TOOLS} in the server's order are used. Choose them with the row's tools "
            "(their names) or tool_prefix"
        ) in caplog.messages
    # A prefix that picks fewer, and tools named, reach the last of the 5,000.
    picked = [f"many{n}" for n in range(5000) if str(n).startswith("49")]
    assert [t.name for t in last.tools] == [f"p_{n}" for n in picked]
    assert [t.name for t in by_name.tools] == named  # named: never cut
    assert sum("a row takes without naming them" in m for m in caplog.messages) == 2

    turn = await chat(runtime)
    assert [(c.error, c.result) for c in turn.tool_calls] == [(False, 'many4999 {"text": "last"}')]
