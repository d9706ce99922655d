"""A database file that is not SQLite's, or is damaged, is named as such.

Every command answered "unexpected DatabaseError … please report it" for a
file that was not a SQLite database (or whose pages were cut off): now one
line says what is wrong with the file and what to do, and the file is left
as it was.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness import script, script_ok

COMMANDS = [("agents", "list"), ("db", "upgrade"), ("db", "current"), ("chat", "-m", "hi")]


def garbage(where: Path) -> None:
    (where / "chatwright.db").write_bytes(b"these bytes are not a database " * 200)


def truncated(where: Path) -> None:
    # A real database whose later pages are gone.
    script_ok("init", "--example", cwd=where)
    for extra in where.glob("chatwright.db-*"):
        extra.unlink()
    data = (where / "chatwright.db").read_bytes()
    assert len(data) > 16384
    (where / "chatwright.db").write_bytes(data[:8192])


@pytest.mark.parametrize("damage", [garbage, truncated])
@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_a_damaged_database_file_is_named(
    tmp_path: Path, damage: object, command: tuple[str, ...]
) -> None:
    damage(tmp_path)  # type: ignore[operator]
    (tmp_path / "chatwright.toml").touch()
    before = (tmp_path / "chatwright.db").read_bytes()
    proc = script(*command, cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "is not a SQLite database, or is damaged" in proc.stderr, proc.stderr
    assert "unexpected" not in proc.stderr and "Traceback" not in proc.stderr
    assert (tmp_path / "chatwright.db").read_bytes() == before
