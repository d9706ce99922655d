"""The rule a user's chat message must pass, the same in the terminal and over HTTP.

A message is refused when it is empty (or only white space) and when it is
longer than ``server.max_message_chars`` (the server plugin's setting; its
default when that plugin is not loaded). ``chatwright chat`` and the chat
routes both call :func:`check_message`, so what one accepts the other does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from chatwright.errors import InvalidInputError, TooLargeError

if TYPE_CHECKING:
    from chatwright.settings import Settings

DEFAULT_MAX_MESSAGE_CHARS = 16_000


def max_message_chars(settings: Settings) -> int:
    """The longest message accepted: ``server.max_message_chars``, or its default."""
    server = getattr(settings, "server", None)
    limit = getattr(server, "max_message_chars", DEFAULT_MAX_MESSAGE_CHARS)
    return limit if isinstance(limit, int) else DEFAULT_MAX_MESSAGE_CHARS


def check_message(settings: Settings, message: str) -> None:
    """Refuse an empty message (422) or one longer than the setting allows (413)."""
    if not message.strip():
        raise InvalidInputError("the message is empty; type something to send")
    cap = max_message_chars(settings)
    if len(message) > cap:
        raise TooLargeError(
            f"message too long ({len(message)} characters; at most {cap}, "
            "the setting server.max_message_chars)"
        )
