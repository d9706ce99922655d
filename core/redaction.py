"""The one rule for hiding secrets in what the CLI and the API show.

A value is hidden when its key looks like a secret (:func:`is_secret_key`): one
of the words of the key (split at ``_``, ``-``, ``.`` and camelCase) is
``password``, ``secret``, ``token``, ``key``, ``authorization``, ``cookie`` or the
like, in the singular or the plural (``api_key``, ``OPENAI_API_KEY``,
``jwt_secret``, ``accessToken``, ``cookies``, an ``Authorization`` header); the
plurals ``keys`` and ``tokens`` only after a word that makes them credentials
(``api_keys``, ``access_tokens``; not ``max_tokens``, ``max_keys``); and ``auth``
in a key written with hyphens, the shape of an HTTP header (``X-Auth``,
``X-Auth-User``; not the ``auth`` setting), or before ``header`` or ``string``
(``authHeader``); and ``bearer``. It is so at any depth of a mapping, and for
the value of a ``[name, value]`` pair whose name is such a key (headers given
as a list of pairs, :func:`secret_pair`). A URL keeps everything but its
password and the values of the parameters of its query (or fragment) that look
like credentials (:func:`secret_parameters`; Azure Functions' ``?code=`` too).
``config show`` and ``agents show`` both print through it, and the agent bundles
mark what it finds.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

HIDDEN = "**********"
SECRET_WORDS = frozenset(
    {
        "password",
        "passwords",
        "passwd",
        "passphrase",
        "passphrases",
        "sslpassword",
        "secret",
        "secrets",
        "token",
        "key",
        "apikey",
        "apikeys",
        "credential",
        "credentials",
        "authorization",
        "cookie",
        "cookies",
        "bearer",
    }
)
PLURAL_WORDS = frozenset({"keys", "tokens"})
"""Secret words only after one of :data:`CREDENTIAL_WORDS` (``max_tokens`` is a number)."""
CREDENTIAL_WORDS = frozenset(
    {
        "api",
        "access",
        "auth",
        "bearer",
        "refresh",
        "session",
        "private",
        "signing",
        "client",
        "service",
        "app",
        "master",
        "admin",
        "encryption",
    }
)
AUTH_PAIRS = frozenset({"header", "headers", "string"})
"""Words that make ``auth`` before them a credential in any key (``authHeader``,
``auth_string``; not the ``auth`` setting)."""
HEADER_WORDS = frozenset({"auth"})
"""Secret words in a key written with hyphens (an HTTP header's name: ``X-Auth``)."""
QUERY_WORDS = frozenset({"auth", "sig", "signature", "pwd", "pass"})
"""Secret words of a URL's query parameter, besides those of a key (``?sig=``, Azure's;
``X-Amz-Signature``)."""
QUERY_NAMES = frozenset({"code"})
"""Query parameters that hold a credential by their whole name only: Azure Functions'
``?code=`` (a ``country_code`` is no secret)."""
_WORD = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")


def _words(key: str) -> list[str]:
    return [word.lower() for word in _WORD.findall(key)]


def _secret_words(words: list[str], extra: frozenset[str]) -> bool:
    for n, word in enumerate(words):
        if word in SECRET_WORDS or word in extra:
            return True
        if word in PLURAL_WORDS and n > 0 and words[n - 1] in CREDENTIAL_WORDS:
            return True
        if word == "auth" and n + 1 < len(words) and words[n + 1] in AUTH_PAIRS:
            return True
    return False


def is_secret_key(key: str) -> bool:
    """Whether a setting, model setting or header of this name holds a secret."""
    extra = HEADER_WORDS if "-" in key else frozenset()
    return _secret_words(_words(key), extra)


_PAIR = re.compile(r"[^&;]+")


def _secret_pair(pair: str) -> str | None:
    """The name of a query parameter ``name=value`` that holds a credential, else None."""
    from urllib.parse import unquote_plus

    name, sep, value = pair.partition("=")
    name = unquote_plus(name)
    if not (sep and value):
        return None
    if name.lower() in QUERY_NAMES or _secret_words(_words(name), QUERY_WORDS | HEADER_WORDS):
        return name
    return None


def secret_parameters(url: str) -> list[str]:
    """The names of the query (and fragment) parameters of ``url`` that hold a credential.

    A parameter holds one when its value is not empty and its name is a secret key
    (:func:`is_secret_key`: ``api_key``, ``apikey``, ``key``, ``token``,
    ``access_token``, ``secret``, ``password``, ``X-Amz-Credential``…) or holds one
    of :data:`QUERY_WORDS` (``auth``, ``sig``, ``signature``, ``pwd``, ``pass``).
    """
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    found = (
        _secret_pair(m.group())
        for text in (parts.query, parts.fragment)
        for m in _PAIR.finditer(text)
    )
    return [name for name in found if name is not None]


def hide_parameters(url: str) -> str:
    """``url`` with the values of its :func:`secret_parameters` hidden."""
    from urllib.parse import urlsplit, urlunsplit

    if not secret_parameters(url):
        return url

    def hidden(text: str) -> str:
        def one(match: re.Match[str]) -> str:
            pair = match.group()
            return pair if _secret_pair(pair) is None else f"{pair.partition('=')[0]}={HIDDEN}"

        return _PAIR.sub(one, text)

    parts = urlsplit(url)
    return urlunsplit(parts._replace(query=hidden(parts.query), fragment=hidden(parts.fragment)))


def hide_url(value: str) -> str:
    """A URL without its password and credential parameters; anything that does not parse is
    hidden whole."""
    from sqlalchemy.engine import make_url

    try:
        # Before: a fragment would be read as part of the path. After: the query as
        # rendered, its hidden values shown unquoted.
        url = make_url(hide_parameters(value))
        if url.host and "@" in url.host and url.password is not None:
            # An "@" left unencoded in the password: the parser took the rest of the
            # password for the host. None of it is shown.
            url = url.set(host=url.host.rpartition("@")[2])
        shown = url.render_as_string(hide_password=True)
        return hide_parameters(shown)
    except Exception:
        return "<unparseable URL hidden>"


def secret_pair(data: Any) -> bool:
    """Whether ``data`` is a ``[name, value]`` pair whose name is a secret key: headers
    given as a list of pairs (``[["Authorization", "Bearer …"]]``)."""
    return (
        isinstance(data, list)
        and len(data) == 2
        and isinstance(data[0], str)
        and is_secret_key(data[0])
        and data[1] not in (None, "")
    )


def redacted(data: Any) -> Any:
    """``data`` with every secret-looking key's value and every URL's secrets hidden."""
    if isinstance(data, Mapping):
        return {
            key: HIDDEN
            if isinstance(key, str) and is_secret_key(key) and value not in (None, "")
            else redacted(value)
            for key, value in data.items()
        }
    if isinstance(data, list):
        if secret_pair(data):
            return [data[0], HIDDEN]
        return [redacted(v) for v in data]
    if isinstance(data, str) and "://" in data:
        return hide_url(data)
    return data
