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
from urllib.parse import quote, quote_plus

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
        forms: set[str] = set()
        for secret in secrets:
            escaped = json.dumps(secret)[1:-1]
            forms |= {
                secret,
                escaped,
                escaped.replace("/", "\\/"),
                json.dumps(secret, ensure_ascii=False)[1:-1],
                quote(secret, safe=""),
                quote_plus(secret),
            }
        # The usual spellings: a body cut short may end with the start of one.
        # Longest first, so that a form containing another is replaced whole.
        self.forms = sorted(forms, key=len, reverse=True)
        patterns = [
            "".join(map(_char_pattern, secret))
            for secret in sorted(set(secrets), key=len, reverse=True)
        ]
        self._pattern = re.compile("|".join(patterns)) if patterns else None

    def text(self, text: str) -> str:
        return self._pattern.sub(MARK, text) if self._pattern else text

    def cut_text(self, text: str) -> str:
        """``text`` redacted, for text cut short: a secret's start at its end is dropped too."""
        text = self.text(text)
        cut = max(
            (
                size
                for form in self.forms
                for size in range(1, min(len(form), len(text) + 1))
                if text.endswith(form[:size])
            ),
            default=0,
        )
        return text[:-cut] + MARK if cut else text

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
