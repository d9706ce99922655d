"""The plugin's settings, read from the environment.

chatwright's settings refuse unknown keys (a typo must not pass silently), and
they have no section for plugins yet, so ``sessions.redis_url`` cannot be set
in ``chatwright.toml``. The Redis URL and the key prefix come from two
environment variables instead; their names start with ``CHATWRIGHT_REDIS_``,
which names no settings section, so chatwright's check of ``CHATWRIGHT_*``
variables lets them through.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from chatwright.errors import SettingsError

URL_VARIABLE = "CHATWRIGHT_REDIS_URL"
PREFIX_VARIABLE = "CHATWRIGHT_REDIS_PREFIX"
DEFAULT_URL = "redis://127.0.0.1:6379/0"
DEFAULT_PREFIX = "chatwright:"


@dataclass(frozen=True)
class RedisConfig:
    url: str = DEFAULT_URL
    """A redis-py URL: ``redis://``, ``rediss://`` (TLS) or ``unix://``."""
    prefix: str = DEFAULT_PREFIX
    """Prepended to every key name, so that several deployments can share a server."""

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> RedisConfig:
        env = os.environ if environ is None else environ
        url = env.get(URL_VARIABLE, DEFAULT_URL).strip()
        if not url:
            raise SettingsError(
                f"{URL_VARIABLE} is empty; set it to a Redis URL such as {DEFAULT_URL} "
                "or unset it to use that one"
            )
        return cls(url=url, prefix=env.get(PREFIX_VARIABLE, DEFAULT_PREFIX))


def redact(url: str) -> str:
    """The URL with its password, if any, replaced by ``***`` (for messages)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port is not None:
        host += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
