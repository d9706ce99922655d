"""An installed plugin that fails to import stops neither `--help` nor `serve`."""

from __future__ import annotations

import json
from pathlib import Path

from tests.harness import ServerProcess, clean_env, script


def broken_distribution(root: Path) -> dict[str, str]:
    """A fake installed distribution whose entry point raises on import."""
    (root / "exploding_plugin.py").write_text("raise RuntimeError('kaboom at import')\n")
    info = root / "exploding_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: exploding-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[chatwright]\nexploding = exploding_plugin\n")
    return clean_env(PYTHONPATH=str(root))


def test_help_and_plugins_survive_a_plugin_that_fails_to_import(tmp_path: Path) -> None:
    env = broken_distribution(tmp_path)
    helped = script("--help", cwd=tmp_path, env=env)
    assert helped.returncode == 0
    assert "Commands:" in helped.stdout
    warning = [line for line in helped.stderr.splitlines() if "exploding" in line]
    assert len(warning) == 1 and "kaboom at import" in warning[0]
    assert "Traceback" not in helped.stderr

    listed = script("plugins", "--json", cwd=tmp_path, env=env)
    (entry,) = [p for p in json.loads(listed.stdout) if p["name"] == "exploding"]
    assert entry["version"] == "1.0" and entry["bundled"] is False
    assert "kaboom at import" in entry["error"]


def test_serve_survives_a_plugin_that_fails_to_import(tmp_path: Path) -> None:
    env = broken_distribution(tmp_path)
    env["CHATWRIGHT_STORAGE__URL"] = f"sqlite+aiosqlite:///{tmp_path / 'b.db'}"
    server = ServerProcess(cwd=tmp_path, env=env)
    try:
        server.wait_ready()
    finally:
        server.stop()
    assert "skipped plugin 'exploding'" in server.log()
