"""The plugin's settings: ``[plugins.redis]`` in chatwright's settings, or the environment.

``url`` and ``prefix`` come from the ``[plugins.redis]`` table of chatwright's
settings (``chatwright.toml``, or ``CHATWRIGHT_PLUGINS__REDIS__URL``); when
the table does not set them, from ``CHATWRIGHT_REDIS_URL`` and
``CHATWRIGHT_REDIS_PREFIX``; then the defaults.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit

from chatwright.errors import SettingsError

URL_VARIABLE = "CHATWRIGHT_REDIS_URL"
PREFIX_VARIABLE = "CHATWRIGHT_REDIS_PREFIX"
DEFAULT_URL = "redis://127.0.0.1:6379/0"
DEFAULT_PREFIX = "chatwright:"
SECTION_URL = "plugins.redis.url (in chatwright.toml, or CHATWRIGHT_PLUGINS__REDIS__URL)"
DEFAULT_SOURCE = f"plugins.redis.url or {URL_VARIABLE}"
"""Where to set the URL when neither is set (the default URL is used)."""


@dataclass(frozen=True)
class RedisConfig:
    url: str = DEFAULT_URL
    """A redis-py URL: ``redis://``, ``rediss://`` (TLS) or ``unix://``."""
    prefix: str = DEFAULT_PREFIX
    """Prepended to every key name, so that several deployments can share a server."""
    source: str = field(default=URL_VARIABLE, compare=False)
    """Where ``url`` was set, for messages that say where to change it."""

    @classmethod
    def from_settings(
        cls, section: Mapping[str, object], environ: Mapping[str, str] | None = None
    ) -> RedisConfig:
        """From the ``[plugins.redis]`` table, falling back to the environment."""
        unknown = sorted(set(section) - {"url", "prefix"})
        if unknown:
            raise SettingsError(
                f"unknown setting plugins.redis.{unknown[0]}; the redis plugin takes url and prefix"
            )
        env = dict(os.environ if environ is None else environ)
        if "url" in section:
            env[URL_VARIABLE] = str(section["url"])
        if "prefix" in section:
            env[PREFIX_VARIABLE] = str(section["prefix"])
        config = cls.from_environ(env)
        if "url" in section:
            # The table wins over CHATWRIGHT_REDIS_URL: that is where to change it.
            return replace(config, source=SECTION_URL)
        return config

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> RedisConfig:
        env = os.environ if environ is None else environ
        url = env.get(URL_VARIABLE, DEFAULT_URL).strip()
        if not url:
            raise SettingsError(
                f"{URL_VARIABLE} is empty; set it to a Redis URL such as {DEFAULT_URL} "
                "or unset it to use that one"
            )
        source = URL_VARIABLE if URL_VARIABLE in env else DEFAULT_SOURCE
        return cls(url=url, prefix=env.get(PREFIX_VARIABLE, DEFAULT_PREFIX), source=source)


def redact(url: str) -> str:
    """The URL for messages and logs: a password in its user part replaced by ``***``,
    and the values of its credential query parameters (``?password=``, the only way to
    give one to a ``unix://`` socket) hidden. A URL that does not parse is hidden whole."""
    from chatwright.redaction import hide_parameters

    try:
        # The user part ends at the last "@": a password may hold "#", "?", "/" or "@"
        # left unencoded, which would end the network location for urlsplit.
        scheme, sep, rest = url.partition("://")
        userinfo, at, after = rest.rpartition("@")
        if sep and at and ":" in userinfo:
            url = f"{scheme}://{userinfo.partition(':')[0]}:***@{after}"
        urlsplit(url)  # a ValueError for what no parser reads (an unclosed "[", say)
        return hide_parameters(url)
    except ValueError:
        return "<a URL that does not parse, hidden>"
