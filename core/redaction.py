"""The one rule for hiding secrets in what the CLI and the API show.

A value is hidden when its key looks like a secret: one of the words of the key
(split at ``_``, ``-``, ``.`` and camelCase) is ``password``, ``secret``,
``token``, ``key``, ``authorization`` or the like (``api_key``, ``OPENAI_API_KEY``,
``jwt_secret``, ``accessToken``, an ``Authorization`` header; not ``max_tokens``),
at any depth of a mapping, and a URL keeps everything but its password.
``config show`` and ``agents show`` both print through it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

HIDDEN = "**********"
SECRET_WORDS = frozenset(
    {
        "password",
        "passwd",
        "passphrase",
        "secret",
        "token",
        "key",
        "apikey",
        "credentials",
        "credential",
        "secrets",
        "passwords",
        "authorization",
        "cookie",
    }
)
_WORD = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")


def is_secret_key(key: str) -> bool:
    """Whether a setting or model setting of this name holds a secret."""
    return any(word.lower() in SECRET_WORDS for word in _WORD.findall(key))


def hide_url(value: str) -> str:
    """A URL without its password; anything that does not parse is hidden whole."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(value).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable URL hidden>"


def redacted(data: Any) -> Any:
    """``data`` with every secret-looking key's value and every URL's password hidden."""
    if isinstance(data, Mapping):
        return {
            key: HIDDEN
            if isinstance(key, str) and is_secret_key(key) and value not in (None, "")
            else redacted(value)
            for key, value in data.items()
        }
    if isinstance(data, list):
        return [redacted(v) for v in data]
    if isinstance(data, str) and "://" in data:
        return hide_url(data)
    return data
