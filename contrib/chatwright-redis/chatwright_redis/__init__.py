"""chatwright-redis: chat sessions in Redis, messages in the storage backend.

Install it next to chatwright and set ``sessions.store = "redis"``::

    [sessions]
    store = "redis"

The server is named by ``CHATWRIGHT_REDIS_URL`` (default
``redis://127.0.0.1:6379/0``) and every key starts with
``CHATWRIGHT_REDIS_PREFIX`` (default ``chatwright:``); see
:mod:`chatwright_redis.config` for why these are environment variables and
not settings. :mod:`chatwright_redis.store` describes the keys.

The plugin only declares the store: redis-py is imported, and the client made,
when chatwright first needs the sessions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from chatwright import hookimpl

if TYPE_CHECKING:
    from chatwright import SessionStoreRegister
    from chatwright.settings import Settings
    from chatwright_redis.store import RedisSessionStore


def session_store(settings: Settings) -> RedisSessionStore:
    """The Redis session store, configured from ``settings`` and the environment."""
    from chatwright_redis.config import RedisConfig
    from chatwright_redis.store import RedisSessionStore

    config = RedisConfig.from_settings(settings.plugins.get("redis", {}))
    return RedisSessionStore.from_url(
        config.url,
        prefix=config.prefix,
        idle_timeout=settings.sessions.idle_timeout,
        source=config.source,
    )


@hookimpl
def register_session_stores(register: SessionStoreRegister) -> None:
    """Declare the ``redis`` session store."""
    register("redis", session_store)
