"""Review finding "read-only tools take SQLite's write lock".

Every ``crud`` statement ran in a ``BEGIN IMMEDIATE`` transaction, reads too,
so under load the server alone produced "database is locked". A read tool now
runs in a deferred transaction: it reads while another connection holds the
write lock.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from chatwright import testing
from chatwright.plugins.example import assistant as example
from chatwright.registry import Plugins
from chatwright.runtime import Runtime
from chatwright.tools import load_tools


async def test_read_tool_runs_while_another_connection_holds_the_write_lock(
    tmp_path: Path,
) -> None:
    path = tmp_path / "locked.db"
    plugins = Plugins.load()
    settings = testing.settings(
        plugins, storage={"url": f"sqlite+aiosqlite:///{path}", "busy_timeout": 0.2}
    )
    async with await Runtime(settings, plugins).start(upgrade=True) as runtime:
        await example.seed(runtime.storage, "scripted:x")
        # The tools of the shared build, called for one user outside a turn.
        loaded = await load_tools(
            runtime.storage, runtime.settings, runtime.plugins, example.AGENT, user_id="alice"
        )
        tools = {t.name: t for t in loaded.tools}

        holder = sqlite3.connect(path, isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")
            listed = await tools["list_tasks"].ainvoke({})
            written = await tools["add_task"].ainvoke({"title": "blocked"})
        finally:
            holder.execute("ROLLBACK")
            holder.close()

    assert json.loads(listed) == {"rows": [], "count": 0}
    # The write waits for the lock and, past busy_timeout, is a tool error, not a crash.
    assert "locked" in written
