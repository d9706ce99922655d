"""The session-store contract suite, the one the bundled backends pass, on Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from chatwright_redis.store import RedisSessionStore

from chatwright.testing import SessionStoreContract


class TestRedisSessionStore(SessionStoreContract):
    @pytest.fixture
    async def sessions(self, redis_url: str, prefix: str) -> AsyncIterator[RedisSessionStore]:
        store = RedisSessionStore.from_url(redis_url, prefix=prefix, idle_timeout=1800)
        yield store
        await store.close()
