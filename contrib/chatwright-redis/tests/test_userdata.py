"""Erasing a user's sessions and deleting one chat's: every key of theirs goes, no one else's.

A user id with ``*`` and ``:`` in it must not reach another user's keys through
the glob patterns the erasure scans with.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from chatwright_redis.store import RedisSessionStore

IDLE = 60.0
USERS = ("ali*e", "ali*e:x", "bob")


@pytest.fixture
async def store(redis_url: str, prefix: str) -> AsyncIterator[RedisSessionStore]:
    opened = RedisSessionStore.from_url(redis_url, prefix=prefix, idle_timeout=IDLE)
    yield opened
    await opened.close()


async def keys(raw: aioredis.Redis, prefix: str) -> dict[str, str]:
    """Every key under the prefix with a dump of its value, to compare before and after."""
    out: dict[str, str] = {}
    async for name in raw.scan_iter(f"{prefix}*", 1000):
        kind = await raw.type(name)
        if kind == "string":
            out[name] = str(await raw.get(name))
        elif kind == "hash":
            out[name] = str(sorted((await raw.hgetall(name)).items()))
        elif kind == "zset":
            out[name] = str(await raw.zrange(name, 0, -1))
        elif kind == "set":
            out[name] = str(sorted(await raw.smembers(name)))
    return out


async def seed(store: RedisSessionStore) -> dict[str, list[uuid.UUID]]:
    chats: dict[str, list[uuid.UUID]] = {}
    for user in USERS:
        first = await store.open(user, "assistant", client_key="tab-1")
        second = await store.open(user, "other", chat_id=uuid.uuid4())
        chats[user] = [first.chat_id, second.chat_id]
    return chats


def mention(found: dict[str, str], *words: str) -> dict[str, str]:
    return {k: v for k, v in found.items() if any(w in k or w in v for w in words)}


async def test_erase_user_deletes_every_key_of_theirs_only(
    store: RedisSessionStore, raw: aioredis.Redis, prefix: str
) -> None:
    chats = await seed(store)
    before = await keys(raw, prefix)
    assert await store.erase_user("ali*e") == 2
    after = await keys(raw, prefix)
    assert await store.list("ali*e") == []
    for chat_id in chats["ali*e"]:
        assert await store.chat_owner(chat_id) is None
    # Nothing names the erased user any more: no key, no member of the active set.
    assert not any("ali%2Ae:" in k or k.endswith("ali%2Ae") for k in after)
    assert "ali%2Ae:" not in after[f"{prefix}active"]
    # The others' keys are all as they were (the active set less the erased members).
    for user in ("ali*e:x", "bob"):
        assert len(await store.list(user)) == 2
        for chat_id in chats[user]:
            assert (await store.chat_owner(chat_id) or ("",))[0] == user
    untouched = {k: v for k, v in before.items() if k in after and not k.endswith("active")}
    assert {k: after[k] for k in untouched} == untouched
    assert await store.count_active() == 4
    # Nothing left: nothing to erase.
    assert await store.erase_user("ali*e") == 0


async def test_delete_chat_leaves_the_users_other_chats_and_refuses_anothers(
    store: RedisSessionStore, raw: aioredis.Redis, prefix: str
) -> None:
    chats = await seed(store)
    first, second = chats["bob"]
    assert await store.delete_chat("bob", first) == 1
    assert await store.chat_owner(first) is None
    assert [s.chat_id for s in await store.list("bob")] == [second]
    # The latest-chat pointer went with it: a new open starts a new chat.
    fresh = await store.open("bob", "assistant")
    assert fresh.chat_id != first
    # Another user's chat: nothing happens, as for an unknown one.
    before = await keys(raw, prefix)
    assert await store.delete_chat("bob", chats["ali*e"][0]) == 0
    assert await store.delete_chat("bob", uuid.uuid4()) == 0
    assert await keys(raw, prefix) == before


async def test_the_storage_user_data_takes_the_sessions_from_redis(
    store: RedisSessionStore, tmp_path: object
) -> None:
    from chatwright.errors import NotFoundError
    from chatwright.plugins.sql.storage import SQLStorage
    from chatwright.settings import Settings
    from chatwright.stores import NewMessage, WithSessionStore

    backend = SQLStorage.from_settings(
        Settings(storage={"url": f"sqlite+aiosqlite:///{tmp_path}/r.db"})
    )  # type: ignore[arg-type]
    await backend.upgrade()
    storage = WithSessionStore(backend, store)
    try:
        chats = {}
        for user in ("alice", "bob"):
            session = await storage.sessions.open(user, "assistant")
            hello = NewMessage("human", {"type": "human", "data": {"content": "hi"}})
            await storage.messages.append(user, session.chat_id, [hello])
            chats[user] = session.chat_id
        archive = await storage.user_data.export("alice")
        assert [s["chat_id"] for s in archive.tables["chat_sessions"]] == [str(chats["alice"])]
        with pytest.raises(NotFoundError):
            await storage.user_data.delete_chat("alice", chats["bob"])
        report = await storage.user_data.erase("alice", requested_by="test")
        assert report.tables["chat_sessions"] == 1 and report.tables["chat_messages"] == 1
        assert await store.chat_owner(chats["alice"]) is None
        assert (await store.chat_owner(chats["bob"]) or ("",))[0] == "bob"
        deleted = await storage.user_data.delete_chat("bob", chats["bob"])
        assert dict(deleted.tables)["chat_sessions"] == 1
        assert await store.list("bob") == []
    finally:
        await backend.close()
