"""Originals whose history table is unlike LangChain's, against the streamed import.

An attack on the history read as a stream found these, each fixed:

- A history table without an ``id`` column, or with one id given to two rows: the
  rows to append were found by their id's text, so only the first row of a chat was
  appended (again on every run), or a chat's last rows were lost and an earlier one
  appended twice. Rows are now found by their place in the chat, as both reads see
  it (``ctid`` breaks ties in the order), the id checking that nothing moved.
- A ``session_id`` column of a nondeterministic collation: the chat's sort key could
  not be computed, and the import stopped. The key is computed in the "C" collation.
- A json or jsonb ``session_id`` column: the key was made of its quoted JSON text, so
  one chat's rows came apart in the order, were imported out of order or not at all.
  The key is the JSON string's text; rows of one chat that still come apart (a
  session_id that is no string) are skipped, with why, never lost unsaid.
- A row deleted between the report and the import: the report still counted it.
"""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from tests.harness import libpq
from tests.hostile.test_import_review_fixes import CHAT, USER, imported, messages_of
from tests.test_bundles import db as db
from tests.test_import_history_stream import OTHER_CHAT, contents, tiny_batches
from tests.test_import_llm_agent import original_database

__all__ = ["db", "tiny_batches"]  # fixtures

on_sqlite = pytest.mark.parametrize("db", ["sqlite"], indirect=True)


def tables(conn: Any, history: str) -> None:
    conn.execute(
        "CREATE TABLE agent_configurations (id int, agent_name text, llm_config jsonb, "
        "system_prompt text)"
    )
    conn.execute("CREATE TABLE chat_sessions (id int, user_id text, agent_name text, chat_id uuid)")
    conn.execute(f"CREATE TABLE chat_message_history ({history})")
    conn.execute(
        "INSERT INTO agent_configurations VALUES "
        "(1, 'support', '{\"model\": \"offline:assistant\"}', 'Hi')"
    )
    conn.execute("INSERT INTO chat_sessions VALUES (1, %s, 'support', %s)", (USER, CHAT))
    conn.execute("INSERT INTO chat_sessions VALUES (2, %s, 'support', %s)", (USER, OTHER_CHAT))


def said(n: int) -> str:
    return json.dumps({"type": "human" if n % 2 else "ai", "data": {"content": f"m{n}"}})


def row(conn: Any, n: int, *, row_id: Any = None, session: Any = CHAT, ids: bool = True) -> None:
    when = "now() + make_interval(secs => %s)"
    if ids:
        conn.execute(
            f"INSERT INTO chat_message_history VALUES (%s, %s, %s, {when})",
            (n if row_id is None else row_id, session, said(n), n),
        )
    else:
        conn.execute(
            f"INSERT INTO chat_message_history VALUES (%s, %s, {when})", (session, said(n), n)
        )


def more(original: str, *rows: dict[str, Any]) -> None:
    with psycopg.connect(libpq(original), autocommit=True) as conn:
        for given in rows:
            row(conn, **given)


@on_sqlite
@pytest.mark.usefixtures("tiny_batches")
def test_a_history_without_ids_is_imported_whole_and_once(db: str) -> None:
    def build(conn: Any) -> None:
        tables(conn, "session_id text, message jsonb, created_at timestamptz")
        for n in range(1, 6):
            row(conn, n, ids=False, session=CHAT if n != 3 else OTHER_CHAT)

    with original_database("history_rows", build) as original:
        assert sorted(messages_of(imported(original))) == [("import", 1), ("import", 4)]
        assert contents(db, CHAT) == ["m1", "m2", "m4", "m5"]
        more(original, {"n": 6, "ids": False})
        assert sorted(messages_of(imported(original))) == [
            ("exists", 1),
            ("exists", 4),
            ("import", 1),
        ]
        imported(original)
    assert contents(db, CHAT) == ["m1", "m2", "m4", "m5", "m6"]
    assert contents(db, OTHER_CHAT) == ["m3"]


@on_sqlite
@pytest.mark.usefixtures("tiny_batches")
def test_rows_sharing_an_id_are_each_imported_once(db: str) -> None:
    def build(conn: Any) -> None:
        tables(conn, "id int, session_id text, message jsonb, created_at timestamptz")
        for n, row_id in [(1, 1), (2, 2), (3, 3), (4, 3), (5, 3)]:
            row(conn, n, row_id=row_id)

    with original_database("history_rows", build) as original:
        assert messages_of(imported(original)) == [("import", 5)]
        assert contents(db, CHAT) == ["m1", "m2", "m3", "m4", "m5"]
        # A row added since with an id the chat has already: appended once, after.
        more(original, {"n": 6, "row_id": 3})
        assert messages_of(imported(original)) == [("exists", 5), ("import", 1)]
        assert messages_of(imported(original)) == [("exists", 6)]
    assert contents(db, CHAT) == ["m1", "m2", "m3", "m4", "m5", "m6"]


@on_sqlite
def test_a_session_id_of_a_nondeterministic_collation_is_read(db: str) -> None:
    def build(conn: Any) -> None:
        conn.execute(
            "CREATE COLLATION ci (provider = icu, locale = 'und-u-ks-level2', "
            "deterministic = false)"
        )
        tables(conn, "id int, session_id text COLLATE ci, message jsonb, created_at timestamptz")
        for n, session in enumerate([CHAT, OTHER_CHAT, CHAT.upper()], start=1):
            row(conn, n, session=session)

    with original_database("history_rows", build) as original:
        report = imported(original)
    assert report["failed"] == []
    assert contents(db, CHAT) == ["m1", "m3"]
    assert contents(db, OTHER_CHAT) == ["m2"]


@on_sqlite
@pytest.mark.usefixtures("tiny_batches")
def test_a_jsonb_session_id_keeps_each_chat_together_and_in_order(db: str) -> None:
    spellings = [CHAT, "urn:uuid:" + CHAT, OTHER_CHAT, CHAT.upper(), "{" + CHAT + "}"]

    def build(conn: Any) -> None:
        tables(conn, "id int, session_id jsonb, message jsonb, created_at timestamptz")
        for n, session in enumerate(spellings, start=1):
            row(conn, n, session=json.dumps(session))
        # Not strings: one object and a string of the same JSON text, which sort together
        # in the database but are two keys here; each is reported, neither lost unsaid.
        for n, session in [(6, {"a": 1}), (7, '{"a": 1}'), (8, {"a": 1})]:
            row(conn, n, session=json.dumps(session))

    with original_database("history_rows", build) as original:
        report = imported(original)
    assert report["failed"] == []
    assert contents(db, CHAT) == ["m1", "m2", "m4", "m5"]
    assert contents(db, OTHER_CHAT) == ["m3"]
    odd = [i for i in report["items"] if i["target"] == "messages of chat None"]
    assert [(i["action"], i["count"]) for i in odd] == [("skip", 1)] * 3
    not_uuid = "session_id is not a UUID (it is the chat id)"
    assert [i["problems"][0] for i in odd] == [not_uuid] * 3
    assert "come apart from its others in the original's order" in odd[2]["problems"][1]


@on_sqlite
def test_rows_deleted_after_the_report_are_not_counted_as_imported(
    db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import click

    from tests.harness import run

    def build(conn: Any) -> None:
        tables(conn, "id int, session_id text, message jsonb, created_at timestamptz")
        for n in range(1, 5):
            row(conn, n)

    with original_database("history_rows", build) as original:

        def delete_then_yes(*args: Any, **kwargs: Any) -> bool:
            with psycopg.connect(libpq(original), autocommit=True) as conn:
                conn.execute("DELETE FROM chat_message_history WHERE id IN (2, 4)")
            return True

        monkeypatch.setattr(click, "confirm", delete_then_yes)
        result = run("import", "llm-agent", "--from", original, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    (item,) = [i for i in report["items"] if i["kind"] == "messages"]
    assert item["count"] == 2
    assert any("2 message(s) appended, not 4" in p for p in item["problems"])
    assert contents(db, CHAT) == ["m1", "m3"]
