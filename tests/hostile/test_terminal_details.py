"""An error whose details went to the log points the terminal user at them, not at a server.

Before, ``chatwright agents list`` on a database that could not be reached
ended with "Error: the database is unavailable; the server log has the
details": there is no server, and the details (chatwright logs them as a
warning, which the CLI prints on standard error) were on the line above. The
error now says so.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from chatwright.cli import for_terminal
from tests.harness import free_port, script


@pytest.mark.parametrize("command", [("agents", "list"), ("db", "current")], ids=" ".join)
def test_an_unreachable_database_points_at_the_warning_above(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    url = f"postgresql://nobody@127.0.0.1:{free_port()}/nowhere"
    proc = script("--database", url, *command, cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stderr.splitlines()
    assert (
        lines[-1] == "Error: the database is unavailable; the warning printed above has the details"
    )
    # The details are there, above the error.
    assert any("connection failed" in line and "127.0.0.1" in line for line in lines[:-1]), lines
    assert "server log" not in proc.stderr
    assert "Traceback" not in proc.stderr


def test_only_the_server_log_is_reworded() -> None:
    assert for_terminal("the database rejected a statement; the server log has the details") == (
        "the database rejected a statement; the warning printed above has the details"
    )
    assert for_terminal("no such agent 'x'") == "no such agent 'x'"
