"""A version table holding several revisions is named, never an unexpected Alembic error.

``chatwright db current`` names a revision from a newer chatwright as such
(``tests/hostile/test_schema_revision.py``). A newer chatwright whose history
branched, or a row added by hand, leaves several rows in the version table:
every command, ``db current`` first, then failed with "unexpected CommandError:
Version table 'chatwright_schema_version' has more than one head present;
please use get_current_heads() (… please report it)". Now the revisions are
named, with what to do, and the table is left as it was.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.harness import script, script_ok

COMMANDS = [
    ("db", "current"),
    ("db", "current", "--json"),
    ("db", "upgrade"),
    ("agents", "list"),
    ("init",),
]


def rows_of(db: Path) -> list[str]:
    with sqlite3.connect(db) as conn:
        return sorted(
            v for (v,) in conn.execute("SELECT version_num FROM chatwright_schema_version")
        )


def database_with(where: Path, *extra: str) -> Path:
    script_ok("init", cwd=where)
    db = where / "chatwright.db"
    with sqlite3.connect(db) as conn:
        conn.executemany(
            "INSERT INTO chatwright_schema_version (version_num) VALUES (?)", [(v,) for v in extra]
        )
    return db


@pytest.fixture(scope="module")
def newer_branch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return database_with(tmp_path_factory.mktemp("branched"), "0099a")


@pytest.fixture(scope="module")
def by_hand(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return database_with(tmp_path_factory.mktemp("by-hand"), "0001")


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_a_newer_revision_beside_a_known_one_is_named(
    newer_branch: Path, command: tuple[str, ...]
) -> None:
    before = rows_of(newer_branch)
    proc = script(*command, cwd=newer_branch.parent)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stderr.startswith("Error: the database "), proc.stderr
    assert "is at schema revision '0099a', which this version of chatwright does not know" in (
        proc.stderr
    )
    assert "a newer chatwright migrated it" in proc.stderr
    assert "unexpected" not in proc.stderr and "head" not in proc.stderr
    assert rows_of(newer_branch) == before


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_two_known_revisions_are_named(by_hand: Path, command: tuple[str, ...]) -> None:
    before = rows_of(by_hand)
    proc = script(*command, cwd=by_hand.parent)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"is at several schema revisions at once ({', '.join(before)})" in proc.stderr, (
        proc.stderr
    )
    assert "it was changed by hand" in proc.stderr
    assert "unexpected" not in proc.stderr
    assert rows_of(by_hand) == before
