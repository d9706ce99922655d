"""An installed plugin that fails to import stops neither `--help` nor `serve`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

CHATWRIGHT = str(Path(sys.executable).parent / "chatwright")


def broken_distribution(root: Path) -> dict[str, str]:
    """A fake installed distribution whose entry point raises on import."""
    (root / "exploding_plugin.py").write_text("raise RuntimeError('kaboom at import')\n")
    info = root / "exploding_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: exploding-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[chatwright]\nexploding = exploding_plugin\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATWRIGHT_")}
    env["PYTHONPATH"] = str(root)
    return env


def test_help_and_plugins_survive_a_plugin_that_fails_to_import(tmp_path: Path) -> None:
    env = broken_distribution(tmp_path)
    helped = subprocess.run([CHATWRIGHT, "--help"], env=env, capture_output=True, text=True)
    assert helped.returncode == 0
    assert "Commands:" in helped.stdout
    warning = [line for line in helped.stderr.splitlines() if "exploding" in line]
    assert len(warning) == 1 and "kaboom at import" in warning[0]
    assert "Traceback" not in helped.stderr

    listed = subprocess.run(
        [CHATWRIGHT, "plugins", "--json"], env=env, capture_output=True, text=True
    )
    (entry,) = [p for p in json.loads(listed.stdout) if p["name"] == "exploding"]
    assert entry["version"] == "1.0" and entry["bundled"] is False
    assert "kaboom at import" in entry["error"]


def test_serve_survives_a_plugin_that_fails_to_import(tmp_path: Path) -> None:
    env = broken_distribution(tmp_path)
    env["CHATWRIGHT_STORAGE__URL"] = f"sqlite+aiosqlite:///{tmp_path / 'b.db'}"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [CHATWRIGHT, "serve", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert server.poll() is None, server.stderr.read() if server.stderr else ""
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.2)
        assert health.status_code == 200
    finally:
        server.terminate()
        _, errors = server.communicate(timeout=10)
    assert "skipped plugin 'exploding'" in errors
