"""Keeping the secrets a call sent out of what the call gives back.

An endpoint may echo the request's headers (debugging endpoints, error pages
that print the request, proxies): the secret a header carried would then reach
the model, the stored conversation and the user. :class:`Redactor` replaces
every occurrence of each value expanded for the call, written as it was sent,
JSON-escaped or percent-encoded, by :data:`MARK` — in the response text, in
the parsed JSON (where ``\\u`` escapes are decoded) and in error messages.

Each character of a secret is matched in every spelling an encoder may choose
for it: as itself, as any JSON escape (``\\/``, ``\\"``, ``\\u002f`` in either
case, a surrogate pair), or percent-encoded (either case, ``+`` for a space);
so a server that escapes differently from Python, or escapes only some
characters, still shows the mark.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

MARK = "[redacted]"


def _hex(value: int, width: int) -> str:
    """A pattern for ``value`` in hexadecimal, its letters in either case."""
    return "".join(f"[{d.lower()}{d.upper()}]" if d.isalpha() else d for d in f"{value:0{width}x}")


def _char_pattern(char: str) -> str:
    """Every spelling of ``char`` as itself, JSON-escaped or percent-encoded."""
    spellings = [re.escape(char)]
    code = ord(char)
    if code > 0xFFFF:
        high, low = 0xD800 + ((code - 0x10000) >> 10), 0xDC00 + ((code - 0x10000) & 0x3FF)
        spellings.append(rf"\\u{_hex(high, 4)}\\u{_hex(low, 4)}")
    else:
        spellings.append(rf"\\u{_hex(code, 4)}")
    short = json.dumps(char)[1:-1]
    if short.startswith("\\") and not short.startswith("\\u"):
        spellings.append(re.escape(short))
    if char == "/":
        spellings.append(re.escape("\\/"))
    spellings.append("".join(f"%{_hex(byte, 2)}" for byte in char.encode("utf-8", "surrogatepass")))
    if char == " ":
        spellings.append(re.escape("+"))
    return "(?:" + "|".join(spellings) + ")"


class Redactor:
    """Removes a call's secret values from text and JSON."""

    def __init__(self, secrets: Iterable[str]) -> None:
        secrets = [secret for secret in secrets if secret]
        patterns = [
            "".join(map(_char_pattern, secret))
            for secret in sorted(set(secrets), key=len, reverse=True)
        ]
        self._pattern = re.compile("|".join(patterns)) if patterns else None
        self.secrets = sorted(set(secrets))

    def text(self, text: str) -> str:
        return self._pattern.sub(MARK, text) if self._pattern else text

    def cut_text(self, text: str) -> str:
        """``text`` redacted, for text cut short: a secret's start at its end is dropped too,
        in any spelling :meth:`text` knows, an escape cut in its middle included."""
        text = self.text(text)
        if not self.secrets:
            return text
        longest = max(len(secret) for secret in self.secrets)
        # A character is spelled in at most 12 characters (a surrogate pair's escapes).
        units = _units(text[-12 * longest - 12 :])
        start = len(text) - sum(len(spelled) for spelled, _ in units)
        for n, (spelled, _) in enumerate(units):
            if any(_starts(secret, units[n:]) for secret in self.secrets):
                return text[:start] + MARK
            start += len(spelled)
        return text

    def value(self, data: Any) -> Any:
        """Parsed JSON with every string (object keys included) redacted."""
        if not self._pattern:
            return data
        if isinstance(data, str):
            return self.text(data)
        if isinstance(data, list):
            return [self.value(item) for item in data]
        if isinstance(data, dict):
            return {self.text(key): self.value(item) for key, item in data.items()}
        return data


_UNIT = re.compile(
    r"\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}"  # a surrogate pair's escapes
    # An escape cut short at the end (after a surrogate pair's first half, maybe).
    r"|(?:\\u[dD][89abAB][0-9a-fA-F]{2})?\\(?:u[0-9a-fA-F]{0,3})?\Z"
    r"|\\u[0-9a-fA-F]{4}"  # one JSON escape
    r"|\\[^u]"  # a short JSON escape
    r"|(?:%[0-9a-fA-F]{2})+"  # percent-encoded bytes
    r"|%[0-9a-fA-F]?\Z"  # a percent-encoding cut short at the end
    r"|.",
    re.DOTALL,
)


def _decoded(spelled: str, at_end: bool) -> tuple[str, bool]:
    """The characters a unit of :func:`_units` spells, and whether it was cut short (then
    it may go on with any character): only the text's last unit may be."""
    if spelled.startswith("\\u") and len(spelled) in (6, 12):
        if at_end and len(spelled) == 6 and 0xD800 <= int(spelled[2:], 16) < 0xDC00:
            return "", True  # a surrogate pair's first half: its second was cut off
        try:
            return json.loads(f'"{spelled}"'), False
        except ValueError:
            return spelled, False
    if spelled.startswith("\\") and len(spelled) == 2 and spelled != "\\u":
        try:
            return json.loads(f'"{spelled}"'), False
        except ValueError:
            return spelled[1], False
    if spelled.startswith("%") and len(spelled) >= 3 and len(spelled) % 3 == 0:
        data = bytes.fromhex(spelled.replace("%", ""))
        try:
            return data.decode("utf-8"), False
        except UnicodeDecodeError as exc:
            # Bytes of a character cut short at the end: what comes before, then open.
            return data[: exc.start].decode("utf-8", "replace"), at_end and exc.end == len(data)
    if at_end and spelled.startswith(("\\", "%")):
        return "", True
    return spelled, False


def _units(text: str) -> list[tuple[str, tuple[str, bool]]]:
    """``text`` as units that each spell characters: itself, an escape or encoded bytes."""
    return [(m[0], _decoded(m[0], m.end() == len(text))) for m in _UNIT.finditer(text)]


def _starts(secret: str, units: list[tuple[str, tuple[str, bool]]]) -> bool:
    """Whether ``units`` (to the end of the text) spell the start of ``secret``."""
    at = 0
    for spelled, (chars, cut_short) in units:
        for char in chars:
            if at >= len(secret):
                return False
            if char != secret[at] and not (spelled == "+" and secret[at] == " "):
                return False
            at += 1
        if cut_short:
            return at < len(secret)
    return 0 < at < len(secret)
