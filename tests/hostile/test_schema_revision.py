"""A database migrated by a newer chatwright is named as such, never upgraded blindly.

Going back to an older version after a newer one migrated the database left
it at a revision the older one has no script for: every command told the user
to run `chatwright db upgrade`, which then failed with Alembic's own error
("unexpected CommandError … please report it").
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.harness import script, script_ok

COMMANDS = [
    ("agents", "list"),
    ("db", "upgrade"),
    ("db", "current"),
    ("init",),
    ("chat", "assistant", "-m", "hi"),
]


@pytest.fixture(scope="module")
def newer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("newer")
    script_ok("init", "--example", cwd=where)
    with sqlite3.connect(where / "chatwright.db") as conn:
        conn.execute("UPDATE chatwright_schema_version SET version_num = '0099'")
    return where


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_a_revision_from_a_newer_version_is_named(newer: Path, command: tuple[str, ...]) -> None:
    proc = script(*command, cwd=newer)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "schema revision '0099'" in proc.stderr, proc.stderr
    assert "a newer chatwright migrated it" in proc.stderr
    assert "db upgrade" not in proc.stderr and "unexpected" not in proc.stderr
    with sqlite3.connect(newer / "chatwright.db") as conn:
        [(version,)] = conn.execute("SELECT version_num FROM chatwright_schema_version")
    assert version == "0099"  # left as it was
