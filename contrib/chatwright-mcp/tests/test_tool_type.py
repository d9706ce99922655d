"""The ``mcp`` tool type in a real chatwright runtime, with the real MCP client.

The agent's model is chatwright's ``scripted`` model: its tool calls go
through the agent loop to the built tools, which reach the test MCP server
(tests/mcp_server.py) over stdio or streamable HTTP.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from conftest import alive, ipv6_loopback, pids, stdio_spec

from chatwright.errors import SettingsError
from chatwright.runtime import Runtime
from chatwright.tools import check_tools

AGENT = "helper"
USER = "alice"


async def agent_with_script(
    runtime: Runtime,
    *calls: dict[str, Any],
    then: list[dict[str, Any]] | None = None,
    **limits: Any,
) -> None:
    """An agent whose first turn makes ``calls`` one by one; ``then``: later replies;
    ``limits``: the agent's (``turn_timeout``, …)."""
    responses = [{"tool_calls": [call]} for call in calls]
    await runtime.storage.agents.create(
        AGENT,
        system_prompt="You help.",
        model="scripted:x",
        model_settings={"responses": [*responses, {"content": "done"}, *(then or [])]},
        **limits,
    )


async def chat(runtime: Runtime, text: str = "go") -> Any:
    session = await runtime.storage.sessions.open(USER, AGENT)
    return await runtime.chat(USER, AGENT, session.chat_id, text)


async def until(condition: Any) -> None:
    """Wait (polling: a process ending signals nothing here) until ``condition()``."""
    async with asyncio.timeout(10):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def test_a_stdio_servers_tools_serve_a_turn_over_one_connection(
    runtime_for: Any, pidfile: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MCP_TEST_NAME_SOURCE", "name-from-the-environment")
    env = {"MCP_TEST_NAME": "${MCP_TEST_NAME_SOURCE}"}
    runtime = await runtime_for({"servers": {"local": stdio_spec(pidfile, env=env)}})
    await agent_with_script(
        runtime,
        {"name": "t_echo", "args": {"text": "hello"}},
        {"name": "t_add", "args": {"a": 2, "b": 40}},
        {"name": "t_add", "args": {"a": "two", "b": 1}},
        {"name": "t_whoami", "args": {}},
        then=[{"tool_calls": [{"name": "t_echo", "args": {"text": "again"}}]}, {"content": "ok"}],
    )
    config = {"server": "local", "tools": ["echo", "add", "whoami"], "name_prefix": "t_"}
    await runtime.storage.tools.add(AGENT, "local", type="mcp", config=config)

    built = await runtime.agent_for(USER, AGENT)
    assert sorted(t.name for t in built.tools) == ["t_add", "t_echo", "t_whoami"]
    assert built.tools[0].args == {"text": {"title": "Text", "type": "string"}}
    [listed] = pids(pidfile)  # building listed the tools and closed that connection
    await until(lambda: not alive(listed))

    turn = await chat(runtime)
    assert turn.response == "done"
    echo, add, bad, whoami = turn.tool_calls
    assert (echo.result, echo.error) == ("echo: hello", False)
    assert (add.result, add.error) == (42, False)
    assert bad.error is True
    assert bad.result == "Invalid arguments: a: 'two' is not of type 'integer'"
    # The variable the settings named reached the server (it answered with its value),
    # and an expanded value is never shown to the model.
    assert whoami.result == "[redacted]"

    # One connection for the build: every call of the turn went through one server process.
    started = pids(pidfile)
    assert len(started) == 2 and started[0] == listed
    assert alive(started[1])

    # A second turn reuses the connection.
    turn = await chat(runtime)
    assert [c.result for c in turn.tool_calls] == ["echo: again"]
    assert pids(pidfile) == started

    # The runtime stopping closes it: the server process ends.
    await runtime.close()
    await until(lambda: not alive(started[1]))


async def test_a_streamable_http_server_gets_the_settings_credentials_never_shown(
    runtime_for: Any, http_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = "tok-7c1d0e-never-shown"
    monkeypatch.setenv("MCP_TEST_TOKEN", token)
    spec = {"url": http_server, "headers": {"Authorization": "Bearer ${MCP_TEST_TOKEN}"}}
    runtime = await runtime_for({"servers": {"remote": spec}})
    await agent_with_script(
        runtime,
        {"name": "headers_seen", "args": {}},
        {"name": "echo", "args": {"text": "over http"}},
        {"name": "echo", "args": {"text": "x" * 200_000}},
    )
    config = {"server": "remote", "tools": ["headers_seen", "echo"]}
    await runtime.storage.tools.add(AGENT, "remote", type="mcp", config=config)
    turn = await chat(runtime)
    seen, echo, huge = turn.tool_calls
    # The header arrived with the token; the model reads it redacted.
    assert seen.result == "Bearer [redacted]"
    assert echo.result == "echo: over http"
    assert huge.error is True
    assert huge.result.startswith("Invalid arguments: 200012 characters of arguments, more than")
    session = await runtime.storage.sessions.open(USER, AGENT)
    stored = await runtime.storage.messages.window(USER, session.chat_id, 50)
    assert token not in str([m.content for m in stored])


async def test_rows_the_settings_do_not_allow_are_refused_with_their_reason(
    runtime_for: Any, http_server: str, pidfile: Path, plugins: Any
) -> None:
    port = http_server.split(":")[2].split("/")[0]
    runtime = await runtime_for(
        {
            "servers": {
                "local": stdio_spec(pidfile, tools=["echo", "add"]),
                "broken": {"command": "/nonexistent/mcp-server"},
            },
            "allowed_hosts": [f"127.0.0.1:{port}"],
        }
    )
    await agent_with_script(runtime)
    add = runtime.storage.tools.add
    await add(AGENT, "unlisted", type="mcp", config={"server": "rm-rf"})
    await add(AGENT, "far", type="mcp", config={"url": "https://mcp.elsewhere.example/mcp"})
    await add(AGENT, "names", type="mcp", config={"server": "local", "tools": ["echo", "crash"]})
    await add(AGENT, "broken", type="mcp", config={"server": "broken"})
    await add(AGENT, "public", type="mcp", config={"url": http_server, "tool_prefix": "ec"})
    await add(AGENT, "both", type="mcp", config={"server": "local", "url": http_server})
    await add(AGENT, "cmd", type="mcp", config={"command": "sh", "args": ["-c", "id"]})

    reports = await check_tools(runtime.storage, runtime.settings, plugins, AGENT)
    problems = {r.row.name: [p.brief() for p in r.problems] for r in reports}
    assert problems["unlisted"] == [
        "config.server: MCP server 'rm-rf' is not in [mcp.servers] (servers there: broken, "
        "local); a row can only name a server the settings allow"
    ]
    assert problems["far"] == [
        "config.url: host 'mcp.elsewhere.example' is not in mcp.allowed_hosts "
        f"(127.0.0.1:{port}); add it there to let rows use public MCP servers on it"
    ]
    # crash exists on the server, but the settings let rows use echo and add only.
    assert problems["names"] == [
        "config.tools[1]: MCP server 'local' has no tool 'crash' that rows may use; its tools: "
        "add, echo"
    ]
    [broken] = problems["broken"]
    assert broken.startswith("config.server: MCP server 'broken' could not be started or reached")
    assert problems["public"] == []
    assert problems["both"] == ["config: give either server (a name in [mcp.servers]) or url"]
    assert problems["cmd"] == [
        "config.command: Extra inputs are not permitted",
        "config.args: Extra inputs are not permitted",
    ]
    assert [t.name for t in reports[4].tools] == ["echo"]


def test_settings_refuse_chatwrights_own_variables(plugins: Any) -> None:
    from chatwright.settings import load_settings

    leak = {"command": "x", "env": {"T": "${CHATWRIGHT_SERVER__JWT_SECRET}"}}
    with pytest.raises(SettingsError, match=r"CHATWRIGHT_SERVER__JWT_SECRET\} is one of"):
        load_settings(None, {"mcp": {"servers": {"x": leak}}}, plugins)
    with pytest.raises(SettingsError, match="give either command"):
        load_settings(None, {"mcp": {"servers": {"x": {}}}}, plugins)


async def test_a_server_that_crashes_mid_session_is_a_tool_error_then_recovers(
    runtime_for: Any, pidfile: Path
) -> None:
    runtime = await runtime_for({"servers": {"local": stdio_spec(pidfile)}})
    await agent_with_script(
        runtime,
        {"name": "echo", "args": {"text": "before"}},
        {"name": "crash", "args": {}},
        {"name": "echo", "args": {"text": "after"}},
    )
    await runtime.storage.tools.add(AGENT, "local", type="mcp", config={"server": "local"})
    turn = await chat(runtime)
    before, crash, after = turn.tool_calls
    assert before.result == "echo: before"
    assert crash.error is True
    assert crash.result.startswith("MCP server 'local'")
    assert "the next call reconnects" in crash.result
    assert after.result == "echo: after"
    assert turn.response == "done"
    _listing, first, second = pids(pidfile)
    assert not alive(first) and alive(second)


async def test_eviction_closes_the_connection(runtime_for: Any, pidfile: Path) -> None:
    runtime = await runtime_for({"servers": {"local": stdio_spec(pidfile)}})
    await agent_with_script(runtime, {"name": "echo", "args": {"text": "hi"}})
    await runtime.storage.tools.add(
        AGENT, "local", type="mcp", config={"server": "local", "tools": ["echo"]}
    )
    turn = await chat(runtime)
    assert turn.tool_calls[0].result == "echo: hi"
    serving = pids(pidfile)[-1]
    assert alive(serving)
    assert runtime.cache.evict(AGENT, "ttl")
    await until(lambda: not alive(serving))


async def test_a_required_approval_holds_the_servers_tools_like_any(
    runtime_for: Any, pidfile: Path
) -> None:
    runtime = await runtime_for({"servers": {"local": stdio_spec(pidfile)}})
    await agent_with_script(runtime, {"name": "add", "args": {"a": 1, "b": 2}})
    config = {"server": "local", "tools": ["add"]}
    await runtime.storage.tools.add(AGENT, "local", type="mcp", config=config, approval="required")
    turn = await chat(runtime)
    assert turn.status == "approval_required"
    [pending] = turn.pending
    assert (pending.tool_name, pending.args) == ("add", {"a": 1, "b": 2})
    # Only the build's listing reached the server: the call waits for the user.
    assert len(pids(pidfile)) == 1


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback here")
@pytest.mark.parametrize("entry", ["[::1]", "[::1]:{port}", "[0:0:0:0:0:0:0:1]:{port}"])
async def test_a_public_server_on_an_ipv6_address_the_settings_allow_serves_a_turn(
    runtime_for: Any, http_server_ipv6: str, plugins: Any, entry: str
) -> None:
    port = http_server_ipv6.rsplit(":", 1)[1].split("/")[0]
    runtime = await runtime_for({"allowed_hosts": [entry.format(port=port)]})
    await agent_with_script(runtime, {"name": "echo", "args": {"text": "over ipv6"}})
    config = {"url": http_server_ipv6, "tools": ["echo"]}
    await runtime.storage.tools.add(AGENT, "public", type="mcp", config=config)
    [report] = await check_tools(runtime.storage, runtime.settings, plugins, AGENT)
    assert report.problems == []
    turn = await chat(runtime)
    assert [(c.error, c.result) for c in turn.tool_calls] == [(False, "echo: over ipv6")]


async def test_an_ipv6_address_the_settings_do_not_allow_is_refused_as_written_there(
    runtime_for: Any, plugins: Any
) -> None:
    runtime = await runtime_for({"allowed_hosts": ["[::1]:8080"]})
    await agent_with_script(runtime)
    url = "http://[::1]:9090/mcp"
    await runtime.storage.tools.add(AGENT, "public", type="mcp", config={"url": url})
    [report] = await check_tools(runtime.storage, runtime.settings, plugins, AGENT)
    assert [p.brief() for p in report.problems] == [
        "config.url: host '[::1]:9090' is not in mcp.allowed_hosts ([::1]:8080); add it there "
        "to let rows use public MCP servers on it"
    ]
