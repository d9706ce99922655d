"""The windows turns read, kept per chat, and read again only as far as they changed.

A turn reads its chat's last ``history_window`` messages (its window). Most of
them are the window the chat's previous turn read, so a turn store keeps each
chat's window, with the chat's revision as read with it: a counter that
migration 0008's triggers move on every update or deletion of the chat's
messages (0 before the first). The next turn reads the revision (with its
agent row), the messages newer than the kept window's last, and how many of
the user's messages the chat holds from the kept window's first to its last.
When the revision has not moved and that count is the kept window's length,
the window is the kept one followed by the newer messages; otherwise the turn
reads the window whole, as it would have without a kept one.

The count finds a message that came into the kept window's span without an
update: on PostgreSQL, one inserted outside a turn (the message store's
``append``) that committed after a turn read messages with greater ids; on
either database, one inserted with an id chosen by hand. When the kept window
held all of the user's messages in the chat, the count starts at 0, so that
such a message below its first is found too.

On PostgreSQL the revision is read by the turn's first statement and the
messages by its second, each with its own snapshot: a transaction that edits
a message and commits between the two shows from the chat's next turn on.

A chat's window is kept for the (chat, user) it was read for.
:data:`KEPT_MESSAGES` bounds how many messages all kept windows hold together,
and ``KEPT_CHARS`` (:mod:`chatwright.stores`) how many characters of text; the
chats used least recently are let go first.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from chatwright.stores import KEPT_CHARS, Message, message_weight

KEPT_MESSAGES = 4096
"""Most messages the kept windows of a turn store hold together."""

Key = tuple[uuid.UUID, str]
"""A kept window's chat and user."""


@dataclass(frozen=True)
class Kept:
    revision: int
    """The chat's revision read with the window."""
    messages: list[Message]
    """The window, oldest first."""
    whole: bool
    """Whether the window held all of the user's messages in the chat then."""
    weight: int = 0
    """What its messages weigh together (:func:`chatwright.stores.message_weight`)."""


class Windows:
    """Kept windows by (chat, user); see the module docstring."""

    def __init__(self, most: int = KEPT_MESSAGES, chars: int = KEPT_CHARS) -> None:
        self.most = most
        self.chars = chars
        self._kept: OrderedDict[Key, Kept] = OrderedDict()
        self._held = 0
        self._weight = 0

    def span(self, key: Key, revision: int) -> tuple[int, int]:
        """The ids between which to count the user's messages, and after which to read
        the newer ones, when the chat's kept window can be built on at ``revision``;
        else (0, 0): read the window whole.

        The count starts at the kept window's first message, or at 0 when the kept
        window held all of the user's messages: then a message that came in below
        its first (committed late, or inserted with a chosen id) is in the window.
        """
        kept = self._kept.get(key)
        if kept is None or revision != kept.revision or not kept.messages:
            return 0, 0
        return 0 if kept.whole else kept.messages[0].id, kept.messages[-1].id

    def window(
        self,
        key: Key,
        revision: int,
        after: int,
        newer: Sequence[Message],
        limit: int,
        spanned: int,
    ) -> list[Message] | None:
        """The window (oldest first) from ``newer``, the messages read after message
        ``after`` (oldest first, at most ``limit``); None when it must be read whole.

        :param spanned: how many of the user's messages the chat holds now between the
            ids :meth:`span` gave (read with ``newer``).
        What it returns is kept for the chat's next turn (a copy: what the turn does
        to its list does not reach the kept one).
        """
        kept = self._kept.get(key)
        if after == 0 or len(newer) >= limit:
            # Read whole, or all of it is new: the window is what was read.
            made, whole = list(newer), len(newer) < limit
            weight = _weight(made)
        elif (
            kept is None
            or revision != kept.revision
            or not kept.messages
            or kept.messages[-1].id != after
            or spanned != len(kept.messages)
        ):
            return None
        else:
            joined = [*kept.messages, *newer]
            if len(joined) < limit and not kept.whole:
                # The kept window was cut to a smaller limit than this turn's.
                return None
            made, whole = joined[-limit:], kept.whole and len(joined) <= limit
            # Weighed as it changed: the messages that came, less those that left.
            weight = kept.weight + _weight(newer) - _weight(joined[: len(joined) - len(made)])
        self._keep(key, revision, made, whole, weight)
        return list(made)

    def _keep(
        self, key: Key, revision: int, messages: list[Message], whole: bool, weight: int
    ) -> None:
        old = self._kept.pop(key, None)
        if old is not None:
            self._held -= len(old.messages)
            self._weight -= old.weight
        if not messages or len(messages) > self.most or weight > self.chars:
            return
        self._kept[key] = Kept(revision, messages, whole, weight)
        self._held += len(messages)
        self._weight += weight
        while self._held > self.most or self._weight > self.chars:
            _, gone = self._kept.popitem(last=False)
            self._held -= len(gone.messages)
            self._weight -= gone.weight

    def __len__(self) -> int:
        return len(self._kept)


def _weight(messages: Sequence[Message]) -> int:
    return sum(message_weight(m.content) for m in messages)
