"""Kept windows: a turn builds on the window its chat's previous turn read.

It reads only the messages newer than that window, and the whole window again
whenever the chat changed in another way: an edit, a deletion, a message moved
between chats, a message that came into the kept span (:mod:`.windows`). Every
test runs on SQLite and on PostgreSQL, against what the echo model was given.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import sqlalchemy as sa

from chatwright.plugins.sql import schema
from chatwright.plugins.sql.windows import Windows
from chatwright.runtime import Runtime
from chatwright.stores import Message, NewMessage
from tests.test_turn_path import ECHO, PROMPT, USER, Make, chat_of, make, seen

__all__ = ["make"]

m, r = schema.chat_messages, schema.chat_revisions


async def run(runtime: Runtime, statement: Any) -> Any:
    async with runtime.storage.write() as conn:  # type: ignore[attr-defined]
        return await conn.execute(statement)


async def revision(runtime: Runtime, chat_id: uuid.UUID) -> int:
    async with runtime.storage.read() as conn:  # type: ignore[attr-defined]
        found = await conn.scalar(sa.select(r.c.revision).where(r.c.chat_id == chat_id))
    return int(found or 0)


async def ids(runtime: Runtime, chat_id: uuid.UUID) -> list[int]:
    async with runtime.storage.read() as conn:  # type: ignore[attr-defined]
        rows = await conn.scalars(sa.select(m.c.id).where(m.c.chat_id == chat_id).order_by(m.c.id))
    return list(rows)


async def started(make: Make, **agent: Any) -> tuple[Runtime, uuid.UUID]:
    runtime, _ = await make()
    await runtime.storage.agents.create(ECHO, system_prompt=PROMPT, model="echo:x", **agent)
    return runtime, await chat_of(runtime, USER)


def human(text: str) -> dict[str, Any]:
    return {"type": "human", "data": {"type": "human", "content": text}}


async def free_id(runtime: Runtime, other: uuid.UUID) -> int:
    """The first message id of chat ``other``, free again: its messages deleted."""
    gap: int = (await ids(runtime, other))[0]
    await run(runtime, m.delete().where(m.c.chat_id == other))
    return gap


async def insert_at(runtime: Runtime, message_id: int, chat_id: uuid.UUID, text: str) -> None:
    """A human message stored with plain SQL under an id chosen by hand."""
    values = {"id": message_id, "chat_id": chat_id, "user_id": USER, "role": "human"}
    await run(runtime, m.insert().values(**values, content=human(text)))


async def test_a_turn_reads_only_the_messages_after_the_window_it_kept(make: Make) -> None:
    """Shown by a change the counter is kept from seeing: an edit whose revision is put
    back is not read, because the turn did not read that message again; once the
    revision moves, the next turn reads the window whole and sees it."""
    runtime, chat_id = await started(make)
    for text in ("one", "two"):
        await runtime.chat(USER, ECHO, chat_id, text)
    before = await revision(runtime, chat_id)
    first = (await ids(runtime, chat_id))[0]
    await run(runtime, m.update().where(m.c.id == first).values(content=human("edited")))
    assert await revision(runtime, chat_id) > before
    await run(runtime, r.update().where(r.c.chat_id == chat_id).values(revision=before))

    assert seen(await runtime.chat(USER, ECHO, chat_id, "three"))["humans"] == [
        "one",
        "two",
        "three",
    ]
    await run(runtime, r.update().where(r.c.chat_id == chat_id).values(revision=r.c.revision + 1))
    assert seen(await runtime.chat(USER, ECHO, chat_id, "four"))["humans"] == [
        "edited",
        "two",
        "three",
        "four",
    ]


async def test_a_message_deleted_from_the_kept_window_leaves_the_next_one(make: Make) -> None:
    runtime, chat_id = await started(make)
    for text in ("one", "two", "three"):
        await runtime.chat(USER, ECHO, chat_id, text)
    stored = await ids(runtime, chat_id)
    # The second turn's human message and the reply to it.
    await run(runtime, m.delete().where(m.c.id.in_(stored[2:4])))
    turn = await runtime.chat(USER, ECHO, chat_id, "four")
    assert seen(turn)["humans"] == ["one", "three", "four"]


async def test_a_message_stored_outside_a_turn_is_in_the_next_window(make: Make) -> None:
    runtime, chat_id = await started(make)
    await runtime.chat(USER, ECHO, chat_id, "one")
    await runtime.storage.messages.append(USER, chat_id, [NewMessage("human", human("aside"))])
    turn = await runtime.chat(USER, ECHO, chat_id, "two")
    assert seen(turn)["humans"] == ["one", "aside", "two"]


async def test_a_message_that_comes_into_the_kept_span_is_read(make: Make) -> None:
    """A message inserted with an id inside the kept window's span (as a message
    committed late on PostgreSQL would be) moves no counter: the count finds it."""
    runtime, chat_id = await started(make)
    other = await chat_of(runtime, USER)
    await runtime.chat(USER, ECHO, chat_id, "one")
    await runtime.chat(USER, ECHO, other, "elsewhere")
    await runtime.chat(USER, ECHO, chat_id, "two")
    gap = await free_id(runtime, other)
    before = await revision(runtime, chat_id)
    await insert_at(runtime, gap, chat_id, "late")
    assert await revision(runtime, chat_id) == before
    turn = await runtime.chat(USER, ECHO, chat_id, "three")
    assert seen(turn)["humans"] == ["one", "late", "two", "three"]


async def test_a_message_moved_to_another_chat_moves_both_windows(make: Make) -> None:
    runtime, chat_id = await started(make)
    other = await chat_of(runtime, USER)
    await runtime.chat(USER, ECHO, chat_id, "one")
    await runtime.chat(USER, ECHO, chat_id, "two")
    await runtime.chat(USER, ECHO, other, "elsewhere")
    await runtime.chat(USER, ECHO, other, "again")
    # The other chat's first exchange moves here, after this chat's first.
    moved = (await ids(runtime, other))[:2]
    await run(runtime, m.update().where(m.c.id.in_(moved)).values(chat_id=chat_id))
    here = seen(await runtime.chat(USER, ECHO, chat_id, "three"))["humans"]
    assert here == ["one", "two", "elsewhere", "three"]
    there = seen(await runtime.chat(USER, ECHO, other, "last"))["humans"]
    assert there == ["again", "last"]


async def test_a_longer_window_than_the_kept_one_is_read_whole(make: Make) -> None:
    runtime, chat_id = await started(make, history_window=2)
    for text in ("one", "two", "three"):
        assert seen(await runtime.chat(USER, ECHO, chat_id, text))["humans"][-1] == text
    assert seen(await runtime.chat(USER, ECHO, chat_id, "four"))["humans"] == ["three", "four"]
    await runtime.storage.agents.update(ECHO, history_window=20)
    turn = await runtime.chat(USER, ECHO, chat_id, "five")
    assert seen(turn)["humans"] == ["one", "two", "three", "four", "five"]


async def test_a_message_that_comes_in_below_a_whole_kept_window_is_read(make: Make) -> None:
    """A kept window that held all of the chat's messages is counted from 0: a message
    inserted below its first (a late commit, a chosen id) is in the next window."""
    runtime, chat_id = await started(make)
    other = await chat_of(runtime, USER)
    await runtime.chat(USER, ECHO, other, "elsewhere")
    await runtime.chat(USER, ECHO, chat_id, "one")
    await runtime.chat(USER, ECHO, chat_id, "two")
    first = (await ids(runtime, chat_id))[0]
    gap = await free_id(runtime, other)
    assert gap < first
    await insert_at(runtime, gap, chat_id, "early")
    turn = await runtime.chat(USER, ECHO, chat_id, "three")
    assert seen(turn)["humans"] == ["early", "one", "two", "three"]


@pytest.mark.parametrize("sql_url", ["sqlite"], indirect=True)
async def test_a_message_replaced_on_sqlite_moves_the_revision(make: Make) -> None:
    """A REPLACE deletes the row it replaces without firing delete triggers: the
    insert that replaces it moves the chat's counter itself."""
    runtime, chat_id = await started(make)
    for text in ("one", "two"):
        await runtime.chat(USER, ECHO, chat_id, text)
    first = (await ids(runtime, chat_id))[0]
    before = await revision(runtime, chat_id)
    replace = m.insert().prefix_with("OR REPLACE")
    values = {"id": first, "chat_id": chat_id, "user_id": USER, "role": "human"}
    await run(runtime, replace.values(**values, content=human("replaced")))
    assert await revision(runtime, chat_id) > before
    turn = await runtime.chat(USER, ECHO, chat_id, "three")
    assert seen(turn)["humans"] == ["replaced", "two", "three"]


@pytest.mark.parametrize("sql_url", ["postgresql"], indirect=True)
async def test_truncating_the_messages_moves_every_chats_revision(make: Make) -> None:
    """TRUNCATE fires no row trigger: it moves the counter every turn adds to its
    chat's, so that a process reads the window whole again even for a chat without
    a counter of its own, whose ids another process's turns have used again."""
    one, _ = await make()
    two, _ = await make()
    await one.storage.agents.create(ECHO, system_prompt=PROMPT, model="echo:x")
    chat_id = await chat_of(one, USER)
    await run(one, sa.text("TRUNCATE chat_messages RESTART IDENTITY"))
    await one.chat(USER, ECHO, chat_id, "one")
    # This turn keeps the window [one, its reply]: ids 1 and 2.
    await one.chat(USER, ECHO, chat_id, "two")
    assert await revision(one, chat_id) == 0
    await run(one, sa.text("TRUNCATE chat_messages RESTART IDENTITY"))
    # Ids 1 and 2 again, and as many messages as the kept window had.
    await two.chat(USER, ECHO, chat_id, "again")
    assert seen(await one.chat(USER, ECHO, chat_id, "three"))["humans"] == ["again", "three"]


# -- the kept windows themselves ------------------------------------------------------


def messages(chat_id: uuid.UUID, first: int, last: int) -> list[Message]:
    return [Message(i, chat_id, USER, "human", human(str(i)), None) for i in range(first, last + 1)]


def test_windows_keep_at_most_their_bound_and_let_the_least_recent_go() -> None:
    windows = Windows(most=10)
    chats = [uuid.uuid4() for _ in range(4)]
    for chat_id in chats:
        assert windows.window((chat_id, USER), 0, 0, messages(chat_id, 1, 4), 50, 0) is not None
    # 4 + 4 held; a third chat's 4 would make 12: the first chat's go.
    assert len(windows) == 2
    assert windows.span((chats[0], USER), 0) == (0, 0)
    assert windows.span((chats[3], USER), 0) == (0, 4)
    # Nothing larger than the bound is kept, and nothing empty.
    windows.window((chats[2], USER), 0, 0, messages(chats[2], 1, 11), 50, 0)
    windows.window((chats[1], USER), 0, 0, [], 50, 0)
    assert windows.span((chats[2], USER), 0) == (0, 0)
    assert windows.span((chats[1], USER), 0) == (0, 0)


def test_a_kept_window_is_built_on_only_when_nothing_else_changed() -> None:
    chat_id = uuid.uuid4()
    key = (chat_id, USER)
    windows = Windows()
    windows.window(key, 3, 0, messages(chat_id, 1, 4), 5, 0)
    # Whole (4 messages under a limit of 5): counted from 0.
    assert windows.span(key, 3) == (0, 4)
    assert windows.span(key, 4) == (0, 0)  # the revision moved
    assert windows.span((chat_id, "bob"), 3) == (0, 0)  # another user's
    newer = messages(chat_id, 5, 6)
    # A message went missing from the span, or came into it: read it whole.
    assert windows.window(key, 3, 4, newer, 5, 3) is None
    windows.window(key, 3, 0, messages(chat_id, 1, 4), 5, 0)
    assert windows.window(key, 3, 4, newer, 5, 5) is None
    windows.window(key, 3, 0, messages(chat_id, 1, 4), 5, 0)
    # Built on: the newest five.
    made = windows.window(key, 3, 4, newer, 5, 4)
    assert made is not None and [x.id for x in made] == [2, 3, 4, 5, 6]
    # Cut to the limit: no longer whole, counted from its first. The list given out
    # is the turn's: changing it changes nothing kept.
    assert windows.span(key, 3) == (2, 6)
    made.clear()
    assert windows.span(key, 3) == (2, 6)
    # Cut to five, it cannot serve a window of ten.
    assert windows.window(key, 3, 6, messages(chat_id, 7, 7), 10, 5) is None


def test_windows_keep_at_most_their_bound_of_text_too() -> None:
    from chatwright.stores import message_weight

    windows = Windows(most=1000, chars=5000)
    chats = [uuid.uuid4() for _ in range(4)]

    def long(chat_id: uuid.UUID, first: int, last: int) -> list[Message]:
        return [
            Message(i, chat_id, USER, "ai", human("x" * 1000), None) for i in range(first, last + 1)
        ]

    for chat_id in chats[:3]:
        windows.window((chat_id, USER), 0, 0, long(chat_id, 1, 2), 50, 0)
    # 2 + 2 + 2 messages of 1,001 characters: 6,006 of 5,000, so the first chat's go.
    assert len(windows) == 2
    assert windows.span((chats[0], USER), 0) == (0, 0)
    assert windows.span((chats[2], USER), 0) == (0, 2)
    # Built on, a window is weighed as it changed: one message in, one out.
    key = (chats[2], USER)
    made = windows.window(key, 0, 2, long(chats[2], 3, 3), 2, 2)
    assert made is not None and [x.id for x in made] == [2, 3]
    held = sum(message_weight(x.content) for k in windows._kept for x in windows._kept[k].messages)
    assert windows._weight == held == 4004
    # One message heavier than the bound is not kept, and nothing else is let go for it.
    heavy = [Message(1, chats[3], USER, "ai", human("y" * 6000), None)]
    windows.window((chats[3], USER), 0, 0, heavy, 50, 0)
    assert windows.span((chats[3], USER), 0) == (0, 0)
    assert len(windows) == 2 and windows._weight == 4004


async def test_long_messages_keep_the_turn_stores_caches_within_their_text_bound(
    make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chats of long messages: what the turn store keeps of them (the messages it made,
    the kept windows) stays within the bound of text, and each turn still sees its
    whole window, read again when its kept one was let go."""
    from chatwright.plugins.sql import turns as sql_turns
    from chatwright.stores import message_weight

    bound = 60_000
    monkeypatch.setattr(sql_turns, "KEPT_CHARS", bound)
    runtime, _ = await started(make)
    store = runtime.turns
    assert isinstance(store, sql_turns.SQLTurnStore)
    store._windows.chars = bound
    chats = [await chat_of(runtime, USER) for _ in range(4)]
    said: dict[uuid.UUID, list[str]] = {c: [] for c in chats}
    for n in range(3):
        for i, chat_id in enumerate(chats):
            text = f"{i}-{n}-" + "z" * 4000
            said[chat_id].append(text)
            assert seen(await runtime.chat(USER, ECHO, chat_id, text))["humans"] == said[chat_id]
            made = store._messages.values()
            assert store._message_chars == sum(weight for _, _, weight in made) <= bound
            windows = store._windows
            held = [x for kept in windows._kept.values() for x in kept.messages]
            assert windows._weight == sum(message_weight(x.content) for x in held) <= bound
    # Twelve turns of some 4,000 characters said and about as many echoed: not all kept.
    assert len(store._windows) < len(chats)
    # A message heavier than the bound is not kept, and lets nothing else go.
    held = (len(store._messages), store._message_chars)
    huge = json.dumps({"type": "ai", "data": {"type": "ai", "content": "h" * bound}})
    made = store._message(10**12, chats[0], USER, "ai", huge, None, stored_time=False)
    assert made.content["data"]["content"] == "h" * bound
    assert (len(store._messages), store._message_chars) == held
