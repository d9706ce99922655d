"""``chat --user`` and ``sessions list --user`` take the user ids the other commands take.

``chat`` stored memory, messages and a session under any ``--user``: an empty
one, one holding a control character, one of 1000 characters (which PostgreSQL
refused with "the database refused a value", naming nothing). ``users export``
and ``users erase`` refuse those ids, so what was stored under one could be
neither exported nor erased. Both commands now refuse them as the others do,
naming ``--user``, before anything is stored.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness import DATA_TABLES, assert_error, ok, run
from tests.test_cli_tools import sql

pytestmark = pytest.mark.usefixtures("example")

BAD_USERS = {
    "empty": ("", "--user is empty"),
    "blank": ("   ", "--user is empty"),
    "a control character": ("a\x01", "--user holds a control character"),
    "a newline": ("alice\nbob", "--user holds a control character"),
    "1000 characters": ("u" * 1000, "--user is 1000 characters long"),
    "256 characters": ("u" * 256, "--user is 256 characters long"),
    "a byte that is not UTF-8": ("x\udcff", "--user holds a lone surrogate (\\udcff"),
}


def stored() -> dict[str, list[tuple[object, ...]]]:
    """Every row of every table chatwright keeps a user's data in."""
    return {table: sql(f"SELECT * FROM {table}") for table in DATA_TABLES}


@pytest.mark.parametrize("case", BAD_USERS)
def test_chat_refuses_a_user_id_users_erase_refuses(case: str) -> None:
    user, said = BAD_USERS[case]
    before = stored()
    assert_error(run("chat", "--user", user, "-m", "remember that x"), said)
    assert_error(run("chat", "--user", user, "--new", "-m", "list my tasks"), said)
    assert stored() == before
    # The same id is one `users erase` refuses: nothing it could not erase was stored.
    assert_error(run("users", "erase", user, "--yes"), said.replace("--user", "USER"))


@pytest.mark.parametrize("case", BAD_USERS)
def test_sessions_list_refuses_it_too(case: str) -> None:
    user, said = BAD_USERS[case]
    assert_error(run("sessions", "list", "--user", user), said)
    assert_error(run("sessions", "list", "--user", user, "--json"), said)


def test_the_longest_user_id_is_stored_and_erased_and_one_more_is_refused(workdir: Path) -> None:
    longest = "u" * 255
    assert_error(run("chat", "--user", longest + "u", "-m", "hi"), "--user is 256 characters")
    assert_error(run("sessions", "list", "--user", longest + "u"), "--user is 256 characters")
    ok("chat", "--user", longest, "-m", "remember that the sky is blue")
    assert sql("SELECT count(*) FROM chat_sessions WHERE user_id = ?", (longest,)) == [(1,)]
    assert longest in ok("sessions", "list", "--user", longest).stdout
    ok("users", "erase", longest, "--yes")
    assert sql("SELECT count(*) FROM chat_sessions WHERE user_id = ?", (longest,)) == [(0,)]
