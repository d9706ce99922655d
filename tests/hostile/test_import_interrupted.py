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
        try:
            if tool_rows(db) > before + 100:
                break
        except sqlite3.OperationalError:
            pass  # the import holds the write lock
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
