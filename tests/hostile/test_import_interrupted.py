"""An import stopped by Ctrl-C, twice, changes nothing.

A first Ctrl-C cancels the import, which undoes the writes it made; a second,
while it undid them, stopped the undo part way: the bundle's tool rows stayed
half added, and the agent's own row (undone last) kept the bundle's settings,
the stored API key gone. The CLI in a subprocess on SQLite, interrupted while
it adds hundreds of tool rows.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

from tests.harness import CONSOLE_SCRIPT, clean_env, script_ok


def tool_rows(db: Path) -> int:
    with sqlite3.connect(db, timeout=0.01) as conn:
        return int(conn.execute("SELECT count(*) FROM agent_tools").fetchone()[0])


def tool_rows_now(db: Path) -> int | None:
    """:func:`tool_rows`, or None while the import holds the write lock."""
    try:
        return tool_rows(db)
    except sqlite3.OperationalError:
        return None


def test_a_second_ctrl_c_waits_for_the_undo(tmp_path: Path) -> None:
    script_ok("init", "--example", cwd=tmp_path)
    script_ok(
        "agents", "set", "assistant", "--setting", "api_key=sk-kept", "--setting",
        "temperature=0.2", cwd=tmp_path,
    )  # fmt: skip
    script_ok("agents", "export", "assistant", "-o", "a.json", cwd=tmp_path)
    bundle = json.loads((tmp_path / "a.json").read_text())
    bundle["agent"]["model_settings"] = {}
    listing = next(t for t in bundle["tools"] if t["name"] == "list_tasks")
    for i in range(400):
        extra = {k: v for k, v in listing.items() if k != "position"}
        bundle["tools"].append({**extra, "name": f"list_tasks_{i}"})
    (tmp_path / "big.json").write_text(json.dumps(bundle))
    db = tmp_path / "chatwright.db"
    before = tool_rows(db)

    proc = subprocess.Popen(
        [str(CONSOLE_SCRIPT), "agents", "import", "big.json"],
        cwd=tmp_path,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        if (tool_rows_now(db) or 0) > before + 100:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the import ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    time.sleep(0.02)
    proc.send_signal(signal.SIGINT)  # while the first one's undo runs
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert "Traceback" not in err, err

    shown = json.loads(script_ok("agents", "show", "assistant", "--json", cwd=tmp_path).stdout)
    assert shown["model_settings"]["temperature"] == 0.2
    assert "api_key" in shown["model_settings"]
    assert tool_rows(db) == before


async def test_an_import_refused_because_another_admin_made_the_agent_leaves_it(
    tmp_path: Path,
) -> None:
    """The undo of a write the storage refused would undo someone else's: the agent
    another admin created between the import's look and its create stays, and the
    import updates it, as it would have had it looked a moment later."""
    from chatwright import bundles, testing
    from chatwright.registry import LoadPolicy, Plugins
    from chatwright.runtime import Runtime

    plugins = Plugins.load(LoadPolicy(allow=frozenset()))
    url = f"sqlite:///{tmp_path / 'race.db'}"
    runtime = Runtime(testing.settings(plugins, storage={"url": url}), plugins)
    await runtime.start(upgrade=True)
    try:
        storage = runtime.storage
        data = {
            "format": bundles.FORMAT,
            "version": bundles.VERSION,
            "agent": {"name": "shared", "system_prompt": "", "model": "offline:x"},
            "tools": [],
        }
        looked = storage.agents.get

        async def then_made(name: str) -> object:
            found = await looked(name)
            storage.agents.get = looked  # type: ignore[method-assign]
            await storage.agents.create(name, system_prompt="the other admin's", model="offline:x")
            return found

        storage.agents.get = then_made  # type: ignore[method-assign]
        report = await bundles.import_bundle(runtime, bundles.check(data, "b.json"))
        assert (report.action, report.changed) == ("updated", ["system_prompt"])
        kept = await storage.agents.get("shared")
        assert kept is not None and kept.system_prompt == ""
    finally:
        await runtime.close()


async def test_a_servers_interrupt_handler_is_left_as_it_is() -> None:
    """Outside the CLI (a server's SIGINT handler stops the server), an import's undo
    does not take SIGINT over, even when two undos overlap."""
    import asyncio

    from chatwright.bundles import _interrupts_held

    heard: list[int] = []

    def server_handler(number: int, frame: object) -> None:
        heard.append(number)

    async def undoing(seconds: float) -> None:
        with _interrupts_held():
            assert signal.getsignal(signal.SIGINT) is server_handler
            await asyncio.sleep(seconds)

    before = signal.signal(signal.SIGINT, server_handler)
    try:
        await asyncio.gather(undoing(0.05), undoing(0.1))
        assert signal.getsignal(signal.SIGINT) is server_handler
        signal.raise_signal(signal.SIGINT)
        assert heard == [signal.SIGINT]
    finally:
        signal.signal(signal.SIGINT, before)
