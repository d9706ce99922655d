"""`serve --port` and `--workers` out of range are named as the options given.

They were checked only as settings, so the error told the user to fix
CHATWRIGHT_SERVER__PORT or [server] in chatwright.toml, which they had not set.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import run


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("--port", "99999"), "'--port': 99999 is not in the range 0<=x<=65535"),
        (("--port", "-1"), "'--port': -1 is not in the range"),
        (("--workers", "0"), "'--workers': 0 is not in the range x>=1"),
    ],
)
def test_an_option_out_of_range_is_named(args: tuple[str, ...], named: str) -> None:
    result = run("serve", *args)
    assert result.exit_code == 2, result.output
    assert named in result.output
    assert "CHATWRIGHT_SERVER" not in result.output


def test_serve_with_the_database_away_is_one_error_line_before_any_server_starts(
    tmp_path: Path,
) -> None:
    """Not uvicorn's start-up traceback of 227 lines, ending in a pointer to itself."""
    # A port nothing listens on: connection refused at once.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "CHATWRIGHT_CONFIG"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "chatwright",
            "--database",
            f"postgresql://nobody@127.0.0.1:{free}/none",
            "serve",
            "--port",
            "0",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert (
        lines[-1] == "Error: the database is unavailable; the warning printed above has the details"
    )
    assert "Connection refused" in done.stderr
    assert "Traceback" not in done.stderr and "Started server process" not in done.stderr
