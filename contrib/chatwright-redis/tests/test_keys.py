"""What the store leaves in Redis: expiring session keys, durable chat owners, safe names."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from chatwright_redis.config import DEFAULT_PREFIX, DEFAULT_URL, RedisConfig
from chatwright_redis.store import RedisSessionStore

from chatwright.errors import NotFoundError, SettingsError, StorageError
from chatwright.settings import load_settings

IDLE = 600.0


@pytest.fixture
async def store(redis_url: str, prefix: str) -> AsyncIterator[RedisSessionStore]:
    opened = RedisSessionStore.from_url(redis_url, prefix=prefix, idle_timeout=IDLE)
    yield opened
    await opened.close()


async def test_a_session_key_expires_after_twice_the_idle_timeout(
    store: RedisSessionStore, raw: aioredis.Redis, prefix: str
) -> None:
    session = await store.open("alice", "helper", client_key="tab")
    key = f"{prefix}session:{session.id}"
    ttl = await raw.pttl(key)
    assert 0 < ttl <= 2 * IDLE * 1000
    assert 0 < await raw.pttl(f"{prefix}key:alice:helper:tab") <= 2 * IDLE * 1000
    await raw.pexpire(key, 1000)
    await store.heartbeat("alice", session.id)
    assert await raw.pttl(key) > 1000  # every write starts the TTL again
    # A chat's owner and the latest chat are kept: SQL keeps the messages forever.
    assert await raw.get(f"{prefix}chat:{session.chat_id}") == "alice:helper"
    assert await raw.pttl(f"{prefix}chat:{session.chat_id}") == -1
    assert await raw.pttl(f"{prefix}latest:alice:helper") == -1


async def test_stale_sessions_vanish_without_a_sweeper(redis_url: str, prefix: str) -> None:
    store = RedisSessionStore.from_url(redis_url, prefix=prefix, idle_timeout=0.1)
    try:
        session = await store.open("alice", "helper")
        await asyncio.sleep(0.5)
        assert await store.get("alice", session.id) is None
        assert await store.list("alice") == []
        assert await store.heartbeat("alice", session.id) is None
        assert await store.touch_chat("alice", session.chat_id) == 0
        # The chat is still the user's, and the next open resumes it.
        assert await store.chat_owner(session.chat_id) == ("alice", "helper")
        reopened = await store.open("alice", "helper")
        assert reopened.chat_id == session.chat_id
        # The expired session's entry in the active set goes at the next sweep; it
        # does not count against the batch, so a batch of one still finds the live one.
        assert await store.count_active() == 2
        assert [s.id for s in await store.sweep(datetime.now(UTC), limit=1)] == [reopened.id]
        assert await store.count_active() == 0
        assert await store.sweep(datetime.now(UTC), limit=1) == []
    finally:
        await store.close()


async def test_concurrent_opens_from_two_processes_agree(redis_url: str, prefix: str) -> None:
    # Two clients with their own connections, as two server processes would have.
    first = RedisSessionStore.from_url(redis_url, prefix=prefix, idle_timeout=IDLE)
    second = RedisSessionStore.from_url(redis_url, prefix=prefix, idle_timeout=IDLE)
    try:
        opened = await asyncio.gather(
            *(
                store.open("alice", "helper", client_key="page")
                for _ in range(50)
                for store in (first, second)
            )
        )
        assert len({s.id for s in opened}) == 1
        assert await first.count_active() == 1
        fresh = uuid.uuid4()
        claims = await asyncio.gather(
            *(
                store.open(user, "helper", chat_id=fresh)
                for user in ("alice", "bob") * 10
                for store in (first, second)
            ),
            return_exceptions=True,
        )
        # One user got the new chat; every open of the other was refused.
        owners = {c.user_id for c in claims if not isinstance(c, BaseException)}
        assert len(owners) == 1
        refused = [c for c in claims if isinstance(c, BaseException)]
        assert len(refused) == 20 and all(isinstance(c, NotFoundError) for c in refused)
        assert await first.chat_owner(fresh) == (owners.pop(), "helper")
    finally:
        await first.close()
        await second.close()


async def test_key_names_cannot_be_forged_by_user_ids(store: RedisSessionStore) -> None:
    one = await store.open("a:b", "c")
    two = await store.open("a", "b:c")
    star = await store.open("*", "%2A", client_key="k:*")
    assert one.chat_id != two.chat_id
    assert await store.chat_owner(one.chat_id) == ("a:b", "c")
    assert await store.chat_owner(two.chat_id) == ("a", "b:c")
    assert await store.chat_owner(star.chat_id) == ("*", "%2A")
    assert await store.active_keys() == {("a:b", "c"), ("a", "b:c"), ("*", "%2A")}
    assert [s.id for s in await store.list("*")] == [star.id]
    assert [s.id for s in await store.list("a")] == [two.id]
    assert (await store.open("*", "%2A", client_key="k:*")).id == star.id


async def test_listing_every_user_stays_within_the_prefix(redis_url: str, prefix: str) -> None:
    # Unescaped, the pattern of "…[x]*:" would also match the other store's keys.
    globby = RedisSessionStore.from_url(redis_url, prefix=f"{prefix}[x]*:", idle_timeout=IDLE)
    plain = RedisSessionStore.from_url(redis_url, prefix=f"{prefix}x-:", idle_timeout=IDLE)
    try:
        mine = await globby.open("alice", "helper")
        theirs = await plain.open("bob", "helper")
        assert [s.id for s in await globby.list()] == [mine.id]
        assert [s.id for s in await plain.list()] == [theirs.id]
    finally:
        await globby.close()
        await plain.close()


@pytest.mark.parametrize(
    "url",
    [
        "redis://:hunter2@127.0.0.1:1/0",
        "redis://127.0.0.1:1/0?password=hunter2",
        "unix:///nowhere/redis.sock?db=0&password=hunter2",
    ],
)
async def test_an_unreachable_server_is_named_in_the_log_not_in_the_error(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The error reaches API callers (a 503): where the server is goes to the log only.
    store = RedisSessionStore.from_url(url, prefix="x:", idle_timeout=IDLE)
    try:
        with pytest.raises(StorageError, match="cannot be reached; the server log") as caught:
            await store.open("alice", "helper")
        said = str(caught.value)
        assert "hunter2" not in said and "127.0.0.1" not in said and "nowhere" not in said
        logged = caplog.text
        assert "CHATWRIGHT_REDIS_URL" in logged and "hunter2" not in logged
        assert ("127.0.0.1:1" if "127" in url else "/nowhere/redis.sock") in logged
    finally:
        await store.close()


@pytest.mark.parametrize(
    "url",
    [
        "redis://:hun#ter2@127.0.0.1:1/0",
        "redis://u:hun?ter2@127.0.0.1:1/0",
        "redis://u:hun/ter2@127.0.0.1:1/0",
        "redis://u:hun@ter2@127.0.0.1:1/0",
    ],
)
async def test_a_password_with_unencoded_delimiters_shows_nowhere(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # They should be percent-encoded; left as they are, the URL parses oddly, and
    # whatever fails is reported without any part of the password.
    said = ""
    try:
        store = RedisSessionStore.from_url(url, prefix="x:", idle_timeout=IDLE)
    except SettingsError as error:
        said = str(error)
    else:
        try:
            with pytest.raises(StorageError) as caught:
                await store.open("alice", "helper")
            said = str(caught.value)
        finally:
            await store.close()
    for text in (said, caplog.text):
        assert "hun" not in text and "ter2" not in text, text
    assert said


async def test_an_unreachable_server_set_in_the_settings_names_that_setting(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The table's url wins over CHATWRIGHT_REDIS_URL: the log says to change the table."""
    environ = {"CHATWRIGHT_REDIS_URL": "redis://127.0.0.1:6379/0"}
    config = RedisConfig.from_settings({"url": "redis://127.0.0.1:1/0"}, environ)
    store = RedisSessionStore.from_url(
        config.url, prefix="x:", idle_timeout=IDLE, source=config.source
    )
    try:
        with pytest.raises(StorageError):
            await store.open("alice", "helper")
        assert "point plugins.redis.url (in chatwright" in caplog.text
        assert "CHATWRIGHT_REDIS_URL" not in caplog.text
    finally:
        await store.close()
    assert RedisConfig.from_environ(environ).source == "CHATWRIGHT_REDIS_URL"
    assert "plugins.redis.url or CHATWRIGHT_REDIS_URL" in RedisConfig.from_environ({}).source


def test_a_url_whose_port_is_out_of_range_is_a_settings_error() -> None:
    with pytest.raises(SettingsError, match="is not a Redis URL") as caught:
        RedisSessionStore.from_url("redis://:pw1@127.0.0.1:70000/0", prefix="x:", idle_timeout=IDLE)
    assert "pw1" not in str(caught.value)


def test_a_url_that_is_not_redis_is_a_settings_error() -> None:
    with pytest.raises(SettingsError, match="CHATWRIGHT_REDIS_URL"):
        RedisSessionStore.from_url("http://127.0.0.1:6379", prefix="x:", idle_timeout=IDLE)


def test_the_url_and_prefix_come_from_the_environment() -> None:
    assert RedisConfig.from_environ({}) == RedisConfig(DEFAULT_URL, DEFAULT_PREFIX)
    custom = {"CHATWRIGHT_REDIS_URL": "redis://cache:6380/2", "CHATWRIGHT_REDIS_PREFIX": "cw:"}
    assert RedisConfig.from_environ(custom) == RedisConfig("redis://cache:6380/2", "cw:")
    with pytest.raises(SettingsError, match="CHATWRIGHT_REDIS_URL"):
        RedisConfig.from_environ({"CHATWRIGHT_REDIS_URL": " "})


def test_chatwright_settings_accept_the_variables(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CHATWRIGHT_REDIS_URL", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("CHATWRIGHT_REDIS_PREFIX", "cw:")
    assert load_settings(overrides={"sessions": {"store": "redis"}}).sessions.store == "redis"
    shown = subprocess.run(
        [sys.executable, "-m", "chatwright", "config", "show"],
        capture_output=True,
        text=True,
        env={**os.environ, "CHATWRIGHT_SESSIONS__STORE": "redis"},
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    assert 'store = "redis"' in shown.stdout


def test_config_from_the_plugins_table_beats_the_environment() -> None:
    env = {"CHATWRIGHT_REDIS_URL": "redis://env:6379/1", "CHATWRIGHT_REDIS_PREFIX": "e:"}
    assert RedisConfig.from_settings({}, env) == RedisConfig("redis://env:6379/1", "e:")
    table = {"url": "redis://table:6379/3"}
    assert RedisConfig.from_settings(table, env) == RedisConfig("redis://table:6379/3", "e:")
    with pytest.raises(SettingsError, match=r"plugins\.redis\.host"):
        RedisConfig.from_settings({"host": "x"}, env)
