"""A chatwright process whose MCP server will not stop: one turn calls ``freeze`` on
tests/odd_server.py (the server answers, then reads nothing more), then the runtime
closes and ``asyncio.run`` returns, as ``chatwright serve`` and ``mcp serve`` end.

Run as ``python stopping.py DIRECTORY``: the database and the server's pidfile go
there. It prints each step; a process that cannot end never prints ``exited``.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import chatwright_mcp

from chatwright.registry import LoadPolicy, Plugins
from chatwright.runtime import Runtime
from chatwright.settings import load_settings

HERE = Path(__file__).parent
AGENT = "helper"
USER = "alice"


async def main(directory: Path) -> None:
    plugins = Plugins.load(LoadPolicy())
    if not any(info.name == "mcp" for info in plugins.infos()):
        plugins.register(chatwright_mcp, "mcp")
    server = {
        "command": sys.executable,
        "args": [str(HERE / "odd_server.py"), str(directory / "pids")],
        "timeout": 10,
    }
    settings = load_settings(
        None,
        {
            "storage": {"url": f"sqlite+aiosqlite:///{directory}/stopping.db"},
            "mcp": {"servers": {"odd": server}},
        },
        plugins,
    )
    runtime = Runtime(settings, plugins)
    await runtime.start(upgrade=True)
    try:
        await runtime.storage.agents.create(
            AGENT,
            system_prompt="You help.",
            model="scripted:x",
            model_settings={
                "responses": [
                    {"tool_calls": [{"name": "freeze", "args": {"text": "now"}}]},
                    {"content": "done"},
                ]
            },
        )
        config = {"server": "odd", "tools": ["freeze"]}
        await runtime.storage.tools.add(AGENT, "odd", type="mcp", config=config)
        session = await runtime.storage.sessions.open(USER, AGENT)
        turn = await runtime.chat(USER, AGENT, session.chat_id, "go")
        print("called:", turn.tool_calls[0].result, flush=True)
        await asyncio.sleep(0.5)  # the server is frozen now
    finally:
        started = time.monotonic()
        await runtime.close()
        print(f"closed in {time.monotonic() - started:.1f} s", flush=True)


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
    print("exited", flush=True)
