"""Keeping the secrets a call sent out of what the call gives back.

An endpoint may echo the request's headers (debugging endpoints, error pages
that print the request, proxies): the secret a header carried would then reach
the model, the stored conversation and the user. :class:`Redactor` replaces
every occurrence of each value expanded for the call, written as it was sent,
JSON-escaped or percent-encoded, by :data:`MARK` — in the response text, in
the parsed JSON (where ``\\u`` escapes are decoded) and in error messages.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, quote_plus

MARK = "[redacted]"


class Redactor:
    """Removes a call's secret values from text and JSON."""

    def __init__(self, secrets: Iterable[str]) -> None:
        forms: set[str] = set()
        for secret in secrets:
            if secret:
                forms |= {
                    secret,
                    json.dumps(secret)[1:-1],
                    quote(secret, safe=""),
                    quote_plus(secret),
                }
        # Longest first, so that a form containing another is replaced whole.
        self.forms = sorted(forms, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, self.forms))) if self.forms else None

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
