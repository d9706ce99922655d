"""``chatwright import llm-agent`` reads the original's history as a stream, never whole.

The history is read twice, a batch at a time, ordered so that one chat's rows
come together however its session_id is spelled: once to plan, once to append.
These tests make the batches, the pages of stored messages and the appends tiny
so that every chat crosses their edges; check that an import's memory does not
grow with the history; and change or break the original between the report and
the import.
"""

from __future__ import annotations

import json
import tracemalloc
import uuid
from collections.abc import AsyncGenerator
from typing import Any

import psycopg
import pytest

from tests.harness import libpq, run
from tests.hostile.test_import_review_fixes import (
    CHAT,
    USER,
    base,
    history,
    imported,
    messages_of,
    on_storage,
    with_original,
)
from tests.test_bundles import db as db

OTHER_CHAT = "1b2c3d4e-5f60-4a1b-8c2d-3e4f5a6b7c8d"
SPELLINGS = [
    CHAT,
    CHAT.upper(),
    "{" + CHAT + "}",
    "urn:uuid:" + CHAT,
    CHAT.replace("-", ""),
]


@pytest.fixture
def tiny_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    from chatwright.plugins.importing import history as history_module
    from chatwright.plugins.importing import source as source_module

    monkeypatch.setattr(source_module, "HISTORY_BATCH", 3)
    monkeypatch.setattr(history_module, "APPEND_BATCH", 2)
    monkeypatch.setattr(history_module, "STORED_PAGE", 2)


def two_chats(conn: Any) -> None:
    base(conn)
    conn.execute("INSERT INTO chat_sessions VALUES (2, %s, 'support', %s)", (USER, OTHER_CHAT))
    for n in range(1, 21):
        if n % 4 == 0:
            history(conn, n, f"other {n}", session=OTHER_CHAT)
        elif n == 7:
            conn.execute(
                'INSERT INTO chat_message_history VALUES (7, %s, \'{"type": "robot"}\', now())',
                (CHAT,),
            )
        else:
            history(conn, n, f"chat {n}", session=SPELLINGS[n % len(SPELLINGS)])


def contents(url: str, chat: str, limit: int = 1000) -> list[str]:
    async def read(storage: Any) -> list[str]:
        rows = await storage.messages.window(USER, uuid.UUID(chat), limit)
        return [m.content["data"]["content"] for m in rows]

    found: list[str] = on_storage(url, read)
    return found


def add_rows(original: str, *rows: tuple[int, str, str]) -> None:
    with psycopg.connect(libpq(original), autocommit=True) as conn:
        for n, content, session in rows:
            history(conn, n, content, session=session)


@pytest.mark.usefixtures("tiny_batches")
def test_chats_spelled_many_ways_cross_every_batch_in_order(db: str) -> None:
    mine = [f"chat {n}" for n in range(1, 21) if n % 4 and n != 7]
    other = [f"other {n}" for n in range(4, 21, 4)]
    with with_original(two_chats) as original:
        report = imported(original)
        assert report["failed"] == []
        assert report["tables"]["chat_message_history"] == 20
        assert sorted(messages_of(report)) == [("import", 5), ("import", 14)]
        (robot,) = [p for i in report["items"] for p in i["problems"] if "robot" in p]
        assert robot.startswith("row 7: message type 'robot'")
        assert contents(db, CHAT) == mine
        assert contents(db, OTHER_CHAT) == other

        # Rows added since, in both chats and several spellings: appended after the rest.
        add_rows(
            original,
            (21, "chat 21", SPELLINGS[1]),
            (22, "other 22", OTHER_CHAT),
            (23, "chat 23", SPELLINGS[3]),
            (24, "chat 24", SPELLINGS[0]),
            (25, "chat 25", SPELLINGS[2]),
        )
        again = imported(original)
        assert again["failed"] == []
        assert sorted(messages_of(again)) == [
            ("exists", 5),
            ("exists", 14),
            ("import", 1),
            ("import", 4),
        ]
        assert contents(db, CHAT) == [*mine, "chat 21", "chat 23", "chat 24", "chat 25"]
        assert contents(db, OTHER_CHAT) == [*other, "other 22"]
        assert sorted(messages_of(imported(original))) == [("exists", 6), ("exists", 18)]


@pytest.mark.usefixtures("tiny_batches")
def test_a_chat_holding_messages_imported_otherwise_is_matched_by_number(db: str) -> None:
    def build(conn: Any) -> None:
        base(conn)
        for n in range(1, 6):
            history(conn, n, f"old {n}")

    with with_original(build) as original:
        imported(original)
        # The rows as the import no longer makes them, and two more.
        with psycopg.connect(libpq(original), autocommit=True) as conn:
            conn.execute("DELETE FROM chat_message_history")
            for n in range(1, 8):
                history(conn, n, f"row {n}")
        report = imported(original)
    assert messages_of(report) == [("exists", 5), ("import", 2)]
    (note,) = [p for i in report["items"] for p in i["problems"]]
    assert "the first 5 row(s) are taken as imported (the chat holds 5 message(s))" in note
    assert contents(db, CHAT) == [f"old {n}" for n in range(1, 6)] + ["row 6", "row 7"]


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
def test_an_imports_memory_does_not_grow_with_the_history(
    db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The peak of Python's allocations while importing 3,000 messages of 2 KB against
    300, in batches of 100: a history read whole, or held until written, would add some
    16 MB."""
    from chatwright.plugins.importing import history as history_module
    from chatwright.plugins.importing import source as source_module

    for name, module in (("HISTORY_BATCH", source_module), ("APPEND_BATCH", history_module)):
        monkeypatch.setattr(module, name, 100)
    filler = "x" * 2000

    def build(n: int) -> Any:
        def fill(conn: Any) -> None:
            base(conn)
            message = json.dumps({"type": "human", "data": {"content": filler}})
            conn.execute(
                "INSERT INTO chat_message_history "
                "SELECT n, %s, %s::jsonb, now() FROM generate_series(1, %s) AS n",
                (CHAT, message, n),
            )

        return fill

    peaks = {}
    for n in (300, 3000):
        with with_original(build(n)) as original:
            if n == 300:  # every module an import uses loaded before the first is traced
                run("import", "llm-agent", "--from", original, "--dry-run")
            tracemalloc.start()
            try:
                report = imported(original)
                peaks[n] = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
    # The second original's first 300 rows are the messages the first import stored.
    assert messages_of(report) == [("exists", 300), ("import", 2700)]
    assert len(contents(db, CHAT, 5000)) == 3000
    grown = peaks[3000] - peaks[300]
    assert grown < 2_000_000, f"{peaks}: {grown:,} bytes more for 2,700 more messages"


@pytest.mark.parametrize(
    ("deleted", "why", "left"),
    [
        ("id IN (1, 3)", "(row 1 is not where it was); run the import again", ["row 2", "row 4"]),
        ("true", "row 1 of chat_message_history is gone from the original since the report", []),
    ],
    ids=["the first row", "every row"],
)
def test_a_row_gone_between_the_report_and_the_import(
    db: str, monkeypatch: pytest.MonkeyPatch, deleted: str, why: str, left: list[str]
) -> None:
    import click

    def build(conn: Any) -> None:
        base(conn)
        for n in range(1, 5):
            history(conn, n, f"row {n}")

    with with_original(build) as original:

        def delete_then_yes(*args: Any, **kwargs: Any) -> bool:
            with psycopg.connect(libpq(original), autocommit=True) as conn:
                conn.execute(f"DELETE FROM chat_message_history WHERE {deleted}")
            return True

        monkeypatch.setattr(click, "confirm", delete_then_yes)
        result = run("import", "llm-agent", "--from", original)
        assert result.exit_code == 0, result.output
        assert "failed: messages of chat" in result.output
        assert why in result.output
        assert contents(db, CHAT) == []
        # The chat itself was imported; the next run appends what is there now.
        report = imported(original)
    assert report["failed"] == []
    assert contents(db, CHAT) == left


def test_an_original_going_away_mid_import_fails_its_chats_with_why(
    db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chatwright.plugins.importing import source as source_module

    reads = []
    streamed = source_module.Source.history

    async def breaks_on_second_read(self: Any) -> AsyncGenerator[list[dict[str, Any]]]:
        reads.append(1)
        async for batch in streamed(self):
            yield batch
            if len(reads) == 2:
                raise source_module.SourceError("cannot read the original database: gone")

    monkeypatch.setattr(source_module, "HISTORY_BATCH", 2)
    monkeypatch.setattr(source_module.Source, "history", breaks_on_second_read)

    with with_original(two_chats) as original:
        result = run("import", "llm-agent", "--from", original, "--yes")
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    failed = [line for line in result.output.splitlines() if line.startswith("failed:")]
    assert len(failed) == 2, result.output
    assert all("cannot read the original database: gone; run the import again" in f for f in failed)


@pytest.mark.usefixtures("tiny_batches")
def test_a_row_changed_in_the_original_since_is_not_imported_again_nor_what_follows(
    db: str,
) -> None:
    """A row edited in the original after its import used to end the rows found in the
    chat: it and every row after it were appended a second time."""

    def build(conn: Any) -> None:
        base(conn)
        for n, said in enumerate(["hello", "two", "three", "ok", "ok"], start=1):
            history(conn, n, said)

    with with_original(build) as original:
        imported(original)
        with psycopg.connect(libpq(original), autocommit=True) as conn:
            conn.execute(
                "UPDATE chat_message_history SET message = jsonb_set(message, "
                "'{data,content}', '\"two (edited)\"') WHERE id = 2"
            )
        add_rows(original, (6, "ok", CHAT), (7, "four", CHAT))
        report = imported(original)
        assert report["failed"] == []
        assert messages_of(report) == [("exists", 5), ("import", 2)]
        (changed,) = [p for i in report["items"] for p in i["problems"]]
        assert changed.startswith("1 of these row(s) differ from the chat's messages")
        assert contents(db, CHAT) == ["hello", "two", "three", "ok", "ok", "ok", "four"]
        assert messages_of(imported(original)) == [("exists", 7)]
