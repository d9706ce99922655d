"""``chatwright import llm-agent`` against originals written after, or unlike, the usual.

- History written to a chat after a first import was never imported: the chat holding
  any message was taken as imported whole, and the report counted the new rows as
  ``exists``. The rows the chat does not hold are now appended, the report counting
  ``exists`` for the rows stored and ``import`` for the new ones.
- One json or jsonb value Python's JSON reader refuses (a number of over 4300 digits,
  nesting of 1000+ levels), which PostgreSQL stores, stopped the whole import, the dry
  run too, with "unexpected". Such a value now fails its row only.
- A customization whose jsonb ``content`` is a string was decoded a second time: a
  string holding JSON was changed, or skipped. It is imported as it is.
- A chat whose history rows spell its session_id two ways (upper and lower case) was
  imported out of order; history whose ``id`` is no serial (a uuid) was imported in
  ``id`` order rather than as it was written.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import pytest

from tests.harness import libpq, ok
from tests.test_bundles import db as db
from tests.test_bundles import on_storage
from tests.test_import_llm_agent import original_database

USER = "6f1c3c2e-58a4-4a1e-9d4f-0d1b2c3d4e5f"
CHAT = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"

TABLES = """
CREATE TABLE agent_configurations (id int, agent_name text, llm_config jsonb, system_prompt text);
CREATE TABLE chat_sessions (id int, user_id text, agent_name text, chat_id uuid);
CREATE TABLE chat_message_history (id {id_type}, session_id text, message jsonb,
                                   created_at timestamptz);
CREATE TABLE user_agent_prompt_customizations (id int, user_id text, agent_name text,
                                               customization_type text, content jsonb);
"""


def base(conn: Any, id_type: str = "int") -> None:
    conn.execute(TABLES.format(id_type=id_type))
    conn.execute(
        "INSERT INTO agent_configurations VALUES "
        "(1, 'support', '{\"model\": \"offline:assistant\"}', 'Hi')"
    )
    conn.execute("INSERT INTO chat_sessions VALUES (1, %s, 'support', %s)", (USER, CHAT))


def history(conn: Any, n: int, content: str, session: str = CHAT, extra: str = "") -> None:
    role = "human" if n % 2 else "ai"
    said = json.dumps(content)
    message = f'{{"type": "{role}", "data": {{"content": {said}{extra}}}}}'
    conn.execute(
        "INSERT INTO chat_message_history VALUES (%s, %s, %s::jsonb, "
        "now() + make_interval(secs => %s))",
        (n, session, message, n),
    )


def stored(url: str) -> list[str]:
    async def read(storage: Any) -> list[str]:
        rows = await storage.messages.window(USER, uuid.UUID(CHAT), 1000)
        return [m.content["data"]["content"] for m in rows]

    result: list[str] = on_storage(url, read)
    return result


def imported(original: str) -> dict[str, Any]:
    out = ok("import", "llm-agent", "--from", original, "--yes", "--json").stdout
    report: dict[str, Any] = json.loads(out)
    return report


def with_original(build: Callable[[Any], None]) -> AbstractContextManager[str]:
    return original_database("fixes", build)


def messages_of(report: dict[str, Any]) -> list[tuple[str, int]]:
    return [(i["action"], i["count"]) for i in report["items"] if i["kind"] == "messages"]


def test_history_added_after_a_first_import_is_appended_by_the_next(db: str) -> None:
    def build(conn: Any) -> None:
        base(conn)
        history(conn, 1, "one")
        history(conn, 2, "two")

    with with_original(build) as original:
        assert messages_of(imported(original)) == [("import", 2)]
        import psycopg

        with psycopg.connect(libpq(original), autocommit=True) as conn:
            history(conn, 3, "three, written after the first import")
            history(conn, 4, "four")
        report = imported(original)
        assert report["failed"] == []
        assert messages_of(report) == [("exists", 2), ("import", 2)]
        assert stored(db) == ["one", "two", "three, written after the first import", "four"]
        # And once more: nothing twice.
        again = imported(original)
    assert messages_of(again) == [("exists", 4)]
    assert stored(db) == ["one", "two", "three, written after the first import", "four"]


def test_history_added_after_chatwright_wrote_to_the_chat_is_appended_once(db: str) -> None:
    from chatwright.stores import NewMessage

    def build(conn: Any) -> None:
        base(conn)
        history(conn, 1, "one")

    with with_original(build) as original:
        imported(original)

        async def reply(storage: Any) -> None:
            said = {"type": "human", "data": {"content": "written in chatwright"}}
            await storage.messages.append(USER, uuid.UUID(CHAT), [NewMessage("human", said)])

        on_storage(db, reply)
        import psycopg

        with psycopg.connect(libpq(original), autocommit=True) as conn:
            history(conn, 2, "two, late in the original")
        imported(original)
        report = imported(original)
    assert messages_of(report) == [("exists", 2)]
    assert stored(db) == ["one", "written in chatwright", "two, late in the original"]


@pytest.mark.parametrize(
    "extra",
    [', "response_metadata": {"n": 1e5000}', ', "response_metadata": ' + "[" * 1500 + "]" * 1500],
    ids=["long-number", "deep-nesting"],
)
def test_one_unreadable_jsonb_value_fails_its_row_not_the_import(db: str, extra: str) -> None:
    def build(conn: Any) -> None:
        base(conn)
        history(conn, 1, "one")
        history(conn, 2, "hostile", extra=extra)
        history(conn, 3, "three")

    with with_original(build) as original:
        dry = ok("import", "llm-agent", "--from", original, "--dry-run")
        assert "unexpected" not in dry.output
        report = imported(original)
    assert report["counts"]["agent"] == {"import": 1}
    (item,) = [i for i in report["items"] if i["kind"] == "messages"]
    assert item["count"] == 2
    assert len(item["problems"]) == 1
    assert item["problems"][0].startswith("row 2: message: its JSON cannot be read (")
    assert stored(db) == ["one", "three"]


def test_an_unreadable_llm_config_skips_its_agent_only(db: str) -> None:
    def build(conn: Any) -> None:
        base(conn)
        conn.execute(
            "INSERT INTO agent_configurations VALUES (2, 'huge', %s::jsonb, 'Hi')",
            ('{"model": "offline:assistant", "temperature": 1' + "0" * 5000 + "}",),
        )

    with with_original(build) as original:
        report = imported(original)
    items = {i["source"]: i for i in report["items"]}
    assert items["agent_configurations 1"]["action"] == "import"
    assert items["agent_configurations 2"]["action"] == "skip"
    assert items["agent_configurations 2"]["problems"][0].startswith(
        "llm_config: its JSON cannot be read ("
    )


@pytest.mark.parametrize("text", ['"Always answer in French"', "null", '["a", "b"]'])
def test_a_customization_string_is_imported_as_it_is(db: str, text: str) -> None:
    def build(conn: Any) -> None:
        base(conn)
        conn.execute(
            "INSERT INTO user_agent_prompt_customizations VALUES "
            "(1, %s, 'support', 'instruction_set', to_jsonb(%s::text))",
            (USER, text),
        )

    with with_original(build) as original:
        imported(original)

    async def read(storage: Any) -> list[str]:
        return [c.content for c in await storage.customizations.list(USER, "support")]

    assert on_storage(db, read) == [text]


def test_a_chat_whose_session_id_is_spelled_two_ways_keeps_its_order(db: str) -> None:
    def build(conn: Any) -> None:
        base(conn)
        history(conn, 1, "1 hello")
        history(conn, 2, "2 hi there", session=CHAT.upper())
        history(conn, 3, "3 how are you")
        history(conn, 4, "4 fine", session=CHAT.upper())

    with with_original(build) as original:
        report = imported(original)
    assert messages_of(report) == [("import", 4)]
    assert stored(db) == ["1 hello", "2 hi there", "3 how are you", "4 fine"]


def test_history_with_uuid_ids_keeps_the_order_it_was_written(db: str) -> None:
    def build(conn: Any) -> None:
        base(conn, id_type="uuid DEFAULT gen_random_uuid()")
        for n in range(1, 9):
            conn.execute(
                "INSERT INTO chat_message_history (session_id, message, created_at) "
                "VALUES (%s, %s::jsonb, now() + make_interval(secs => %s))",
                (CHAT, json.dumps({"type": "human", "data": {"content": str(n)}}), n),
            )

    with with_original(build) as original:
        imported(original)
    assert stored(db) == [str(n) for n in range(1, 9)]
