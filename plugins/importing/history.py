"""The original's chat history, planned and imported as a stream: never held whole.

``chat_message_history`` may hold millions of rows, so it is read twice as a
stream (:meth:`.source.Source.history`), one chat's rows together, a batch at
a time. The first read plans: for each chat, which rows are messages
chatwright can store, which of them the chat holds already (imported by an
earlier run), and the rows to append, kept as the ids of the first and the
last of them (:class:`Span`). The second read, when the plan is applied, appends
those rows, :data:`APPEND_BATCH` messages to a statement. The memory an import
takes grows with the number of chats, not of messages (a re-run also holds, for
one chat at a time, a digest of each message the chat holds).

A chat whose rows changed in the original between the two reads is still
imported from the rows that are there: a row gone since is not appended, and a
chat whose first row to append is gone fails, with why, for a later run to
append. A chat whose appending fails part way keeps what was appended: running
the import again finds those messages and appends the rest.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from chatwright.plugins.importing.plan import (
    ROLES,
    Item,
    Plan,
    _parent_problem,
    _text_id,
    _too_long,
    _unstorable,
)
from chatwright.plugins.importing.source import (
    SourceError,
    UnreadableJSON,
    chat_id,
    chat_key,
    jsonish,
)

if TYPE_CHECKING:
    from chatwright.stores import NewMessage, Storage

STORED_PAGE = 500
"""How many of a chat's stored messages are read at once, to find those imported before."""
APPEND_BATCH = 500
"""How many messages of a chat are appended in one statement."""


@dataclass(frozen=True)
class Span:
    """The rows of one chat an item appends: from the row ``first`` to the row ``last``,
    each its place among the chat's rows as the history is read (from 1) and its id, the
    rows between that are no message left out."""

    key: str
    user: str
    chat: uuid.UUID
    first: tuple[int, str]
    last: tuple[int, str]


def message(row: Mapping[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """A history row's LangChain message dict made fit to store, or why not."""
    from langchain_core.messages import message_to_dict, messages_from_dict

    from chatwright.history import storable

    try:
        data = jsonish(row.get("message"))
    except UnreadableJSON as error:
        return None, f"message: {error}"
    if not isinstance(data, Mapping):
        return None, "message is not a JSON object"
    role = data.get("type")
    if role not in ROLES:
        return None, f"message type {str(role)[:40]!r} is not one of {', '.join(ROLES)}"
    if not isinstance(data.get("data"), Mapping) or "content" not in data["data"]:
        return None, "message has no data.content"
    found = _unstorable(message=data)
    if found is not None:
        return None, found
    text = json.dumps(data, ensure_ascii=False, default=str)
    too_long = _too_long("message", text)
    if too_long:
        return None, too_long
    try:
        parsed = messages_from_dict([dict(data)])[0]
    except Exception as error:  # LangChain's own validation; any fault of the row
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return None, f"not a valid {role} message: {first[:200]}"
    return message_to_dict(storable(parsed)), ""


def new_message(row: Mapping[str, Any], content: dict[str, Any]) -> NewMessage:
    """The message ``content`` (made of ``row``) as it is appended, dated as the row."""
    from chatwright.stores import NewMessage

    said = row.get("created_at")
    when = said if isinstance(said, datetime) else None
    if when is not None and when.tzinfo is None:
        when = when.replace(tzinfo=UTC)  # a timestamp without time zone: UTC
    return NewMessage(role=str(content["type"]), content=content, created_at=when)


async def _chats(
    source_batches: AsyncGenerator[list[dict[str, Any]]],
) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """Each row of the stream with its chat's key."""
    async with aclosing(source_batches) as batches:
        async for batch in batches:
            for row in batch:
                yield chat_key(row.get("session_id")), row


class _StoredIndex:
    """Where each message a chat holds is in it, by a digest of the message as JSON holds
    it: read a page at a time, kept for one chat while its rows are planned."""

    def __init__(self) -> None:
        self.at: dict[bytes, list[int]] = {}
        self.count = 0

    @staticmethod
    def digest(content: Mapping[str, Any]) -> bytes:
        text = json.dumps(content, sort_keys=True, default=str)
        return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()

    @classmethod
    async def read(cls, storage: Storage, user: str, chat: uuid.UUID) -> _StoredIndex:
        index, after = cls(), 0
        while page := await storage.messages.page(user, chat, limit=STORED_PAGE, after=after):
            for found in page:
                index.at.setdefault(cls.digest(found.content), []).append(index.count)
                index.count += 1
            after = page[-1].id
        return index

    def after(self, content: Mapping[str, Any], position: int) -> int | None:
        """The first position past ``position`` holding ``content``; None when none does."""
        positions = self.at.get(self.digest(content), [])
        found = bisect.bisect_right(positions, position)
        return positions[found] if found < len(positions) else None


class _ChatPlan:
    """The planning of one chat's rows, fed one at a time in order."""

    def __init__(
        self, plan: Plan, key: str, row: Mapping[str, Any], owners: Mapping[uuid.UUID, Any]
    ) -> None:
        self.plan, self.key = plan, key
        self.session_id = _text_id(row.get("session_id"))
        self.chat = chat_id(self.session_id)
        self.item = plan.add(Item("messages", "", f"messages of chat {self.chat}", count=0))
        self.rows = 0
        self.first_row = self.last_row = _text_id(row.get("id"))
        self.kept = 0
        self.ids: dict[str, tuple[int, str]] = {}
        """The place and id of the first kept row, the last one held already, the first to
        append and the last kept row."""
        self.done = 0
        """How many kept rows the chat holds already: up to the last one found in it."""
        self.stored: _StoredIndex | None = None
        self.position = -1
        """Where in the chat's messages the last kept row found in it is."""
        self.unfound = self.changed = 0
        self.user = ""
        if self.chat is None:
            self.item.skip("session_id is not a UUID (it is the chat id)")
        elif self.chat not in owners:
            self.item.skip("no row of chat_sessions is this chat, so its user is not known")
        else:
            self.user, self.item.parent = owners[self.chat]
            why = _parent_problem("its chat", self.item.parent)
            if why is not None:
                self.item.skip(why)

    async def start(self, storage: Storage) -> None:
        """The messages the chat holds already, if any, to be matched with its rows."""
        if self.item.action != "skip" and self.chat is not None:
            index = await _StoredIndex.read(storage, self.user, self.chat)
            self.stored = index if index.count else None

    async def feed(self, row: Mapping[str, Any]) -> None:
        """Plan one more row of the chat.

        An import appends a chat's rows after the messages it holds, so the rows an
        earlier run imported are found among the chat's messages, in their order; the
        messages written in chatwright in between match none of them and are passed
        over. A row found there makes it and every row before it imported already, one
        not found among them included (changed in the original since: it is not
        imported again); the rows after the last one found are appended. A chat holding
        messages none of which is one of its rows was imported otherwise (by an earlier
        version of the import): its first rows, as many as it holds messages, are taken
        as imported (:meth:`finish`).
        """
        self.rows += 1
        self.last_row = _text_id(row.get("id"))
        if self.item.action == "skip":
            return
        content, why = message(row)
        if content is None:
            self.item.problems.append(f"row {self.last_row}: {why}; left out")
            return
        self.kept += 1
        here = (self.rows, self.last_row)
        self.ids.setdefault("first", here)
        self.ids["last"] = here
        if self.stored is None:
            self.ids.setdefault("new", here)
            return
        # As many rows as the chat holds messages, for when none of them is found in it.
        if self.kept == self.stored.count:
            self.ids["held by number"] = here
        elif self.kept == self.stored.count + 1:
            self.ids["new by number"] = here
        found = self.stored.after(content, self.position)
        if found is None:
            self.unfound += 1
            self.ids.setdefault("new", here)
            return
        # Found: this row and every kept row before it were imported before (a row not
        # found among them was changed in the original since).
        self.position, self.done = found, self.kept
        self.changed += self.unfound
        self.unfound = 0
        self.ids["held"] = here
        self.ids.pop("new", None)

    def finish(self) -> None:
        item, shown = self.item, self.session_id[:80]
        item.source = f"chat_message_history {self.first_row}..{self.last_row} (session_id {shown})"
        if item.action == "skip":
            item.count = self.rows
            return
        item.count = self.kept
        if not self.kept:
            item.skip("no message of the chat could be read")
            return
        assert self.chat is not None
        new = self.ids.get("new")
        by_number = self.stored is not None and self.done == 0
        if by_number:
            assert self.stored is not None
            # Imported otherwise before (by an earlier version of the import): by number.
            self.done = min(self.stored.count, self.kept)
            self.ids["held"] = self.ids.get("held by number", self.ids["last"])
            new = self.ids.get("new by number")
        if self.done:
            # The rows stored already, and apart from them the rows added since.
            item.action, item.count = "exists", self.done
            item.source = (
                f"chat_message_history {self.ids['first'][1]}..{self.ids['held'][1]} "
                f"(session_id {shown})"
            )
            if by_number:
                assert self.stored is not None
                item.problems.append(
                    "no message of the chat is one of its history rows as this import makes "
                    f"them; the first {self.done} row(s) are taken as imported (the chat "
                    f"holds {self.stored.count} message(s))"
                )
            elif self.changed:
                item.problems.append(
                    f"{self.changed} of these row(s) differ from the chat's messages: changed "
                    "in the original since they were imported; not imported again"
                )
            if new is None:
                return
            item = self.plan.add(
                Item(
                    "messages",
                    f"chat_message_history {new[1]}..{self.ids['last'][1]} (session_id {shown})",
                    f"messages of chat {self.chat}, after the {self.done} it holds",
                    count=self.kept - self.done,
                    parent=self.item.parent,
                )
            )
        assert new is not None
        item.history = Span(self.key, self.user, self.chat, new, self.ids["last"])
        item.step = written_by_apply


async def written_by_apply(storage: Storage) -> None:
    """The step of a history item: :func:`append_history` writes it, in one pass for all."""
    raise RuntimeError("a chat's history is appended by append_history, not by its step")


async def plan_history(
    plan: Plan, storage: Storage, owners: Mapping[uuid.UUID, tuple[str, Item]]
) -> None:
    """An item per chat of the history (two when the chat holds some of its rows already:
    those, ``exists``, and the rest); reads the history once, writes nothing."""
    chat: _ChatPlan | None = None
    rows = 0
    planned: set[str] = set()
    async for key, row in _chats(plan.source.history()):
        rows += 1
        if chat is None or key != chat.key:
            if chat is not None:
                chat.finish()
                planned.add(chat.key)
            chat = _ChatPlan(plan, key, row, owners)
            if key in planned:
                # Its rows apart from the chat's others: its session_id is of a type whose
                # order in the database is not the one its text has here.
                chat.item.skip(
                    "these rows of the chat come apart from its others in the original's "
                    f"order (its session_id column is of type {plan.source.session_id_type}); "
                    "not imported"
                )
            await chat.start(storage)
        await chat.feed(row)
    if chat is not None:
        chat.finish()
    plan.source.history_rows = rows


class _ChatAppend:
    """The appending of one history item's rows, fed the chat's rows in order."""

    def __init__(self, item: Item, span: Span) -> None:
        self.item, self.span = item, span
        self.started = self.ended = False
        self.pending: list[NewMessage] = []
        self.appended = 0
        self.rows = 0

    async def feed(self, storage: Storage, row: Mapping[str, Any]) -> None:
        """The chat's next row: appended from the span's first place to its last (found by
        place, for ids need not be unique, nor there at all; the first's id says whether
        the rows before it changed since the plan)."""
        self.rows += 1
        if self.ended:
            return
        if not self.started:
            if self.rows < self.span.first[0]:
                return
            row_id = _text_id(row.get("id"))
            if row_id != self.span.first[1]:
                self.fail(
                    f"not imported: the chat's rows changed in the original since the report "
                    f"(row {self.span.first[1][:80]} is not where it was); run the import again"
                )
                return
            self.started = True
        content, _ = message(row)  # a row left out was reported by the plan
        if content is not None:
            self.pending.append(new_message(row, content))
        if self.rows == self.span.last[0]:
            self.ended = True
        if len(self.pending) >= APPEND_BATCH or self.ended:
            await self.flush(storage)

    async def flush(self, storage: Storage) -> None:
        if self.pending and self.item.action != "failed":
            await storage.messages.append(self.span.user, self.span.chat, self.pending)
            self.appended += len(self.pending)
        self.pending = []

    def fail(self, problem: str) -> None:
        self.item.action, self.item.step, self.ended = "failed", None, True
        self.pending = []
        self.item.problems.append(problem)
        if self.appended:
            self.item.problems.append(
                f"{self.appended} of its messages were appended; run the import again to "
                "append the rest"
            )


async def append_history(plan: Plan, storage: Storage, items: list[Item]) -> None:
    """Append the rows of ``items`` (history items to import), reading the history once.

    An item whose write fails, whatever the error, is ``failed``, with why; the other
    chats go on.
    """
    from chatwright.errors import ChatwrightError, one_line

    chats = {i.history.key: _ChatAppend(i, i.history) for i in items if i.history is not None}
    if not chats:
        return
    current: _ChatAppend | None = None

    async def guarded(chat: _ChatAppend, work: Any) -> None:
        try:
            await work
        except ChatwrightError as error:
            chat.fail(f"not imported: {error}")
        except Exception as error:  # any fault of one chat: reported, the others go on
            chat.fail(f"not imported: the write failed unexpectedly: {one_line(error)}")

    async def close(chat: _ChatAppend | None) -> None:
        if chat is None or chat.item.action == "failed":
            return
        await guarded(chat, chat.flush(storage))
        if not chat.started and chat.item.action != "failed":
            chat.fail(
                f"not imported: row {chat.span.first[1][:80]} of chat_message_history is gone "
                "from the original since the report; run the import again"
            )
        elif chat.item.action != "failed" and chat.appended != chat.item.count:
            chat.item.problems.append(
                f"{chat.appended} message(s) appended, not {chat.item.count}: the chat's rows "
                "changed in the original since the report"
            )
            chat.item.count = chat.appended

    try:
        async for key, row in _chats(plan.source.history()):
            if current is None or key != current.span.key:
                await close(current)
                current = chats.pop(key, None)
                if current is None:
                    continue
            if current.item.action != "failed":
                await guarded(current, current.feed(storage, row))
    except SourceError as error:  # the original went away: what is left is not imported
        for chat in [current, *chats.values()]:
            if chat is not None and chat.item.action != "failed" and not chat.ended:
                chat.fail(f"not imported: {error}; run the import again")
        return
    await close(current)
    for chat in chats.values():  # whose rows were all gone
        await close(chat)
