"""Fixtures: a Redis server that answers, and a key prefix of the test's own.

Redis is found at ``CHATWRIGHT_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``).
When it does not answer the tests are skipped, saying why, unless ``CI=true``,
where they fail. Each test writes under a fresh prefix, deleted afterwards, so
the tests can share a server with anything else.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

if importlib.util.find_spec("chatwright_redis") is None:
    # A checkout where the plugin is not installed: test its source tree.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis
import redis.asyncio as aioredis
from chatwright_redis.config import RedisConfig, redact


@pytest.fixture(scope="session")
def redis_url() -> str:
    url = RedisConfig.from_environ().url
    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        reason = (
            f"Redis does not answer at {redact(url)} ({exc}); start it or set CHATWRIGHT_REDIS_URL"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    finally:
        client.close()
    return url


def _delete_under(url: str, prefix: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        pattern = "".join("\\" + c if c in "*?[]\\" else c for c in prefix) + "*"
        names = list(client.scan_iter(match=pattern, count=1000))
        if names:
            client.delete(*names)
    finally:
        client.close()


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    """A key prefix no other test uses; its keys are deleted after the test."""
    chosen = f"chatwright-test:{uuid.uuid4().hex}:"
    yield chosen
    _delete_under(redis_url, chosen)


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A plain client, to look at the keys the store wrote."""
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()
