"""A :class:`~chatwright.stores.SessionStore` on Redis.

Redis holds the hot, short-lived state of sessions: which client is engaged
with which chat right now, heartbeats, idleness. Messages, agents and
everything else stay in the storage backend (SQL), the durable record of the
conversation; only the small map from a chat to its owner is durable here too.

Keys, all behind the configured prefix (``chatwright:`` by default), with user
ids, agent names and client keys URL-encoded so that no value can forge a key
name (``:`` and ``*`` are encoded, for one):

``session:{id}`` (hash, TTL)
    One session's fields. Every write that sets ``updated_at`` resets the TTL
    to twice ``sessions.idle_timeout``, so a session nobody sweeps still
    vanishes; a sweeper that runs deactivates it first, at ``idle_timeout``.
``chat:{chat_id}`` (string, no expiry)
    ``{user}:{agent}`` of the chat, set once (``SET NX``) by the first open.
    It must outlive every session: it is what lets the user back into the
    chat's messages, which SQL keeps forever. Run Redis with persistence
    (``appendonly yes``) in production, or chats become unreachable when
    Redis restarts empty.
``latest:{user}:{agent}`` (string, no expiry)
    The chat of the user's most recent open with the agent, resumed by an
    open without ``chat_id``. Durable for the same reason.
``key:{user}:{agent}:{client_key}`` (string, TTL)
    The session opened with that client key, claimed with ``SET NX`` so
    concurrent opens agree; dropped when the session is deactivated.
``active`` (sorted set)
    ``{user}:{agent}:{id}`` of every active session, scored by its last
    heartbeat: the sweeper's range query, ``count_active`` (``ZCARD``) and
    ``active_keys`` read it alone.
``user:{user}`` (sorted set, TTL)
    The user's session ids by ``updated_at``, for ``list``.
``live:{chat_id}`` (set, TTL)
    Ids of the chat's active sessions, for ``touch_chat`` after every turn.
``reply:{token}`` (string, a minute)
    What one open, deactivate or sweep call did (session ids, a flag), for its
    retry (see :mod:`chatwright_redis.scripts`).

Every change to a session and its indexes is one Lua script
(:mod:`chatwright_redis.scripts`), so it is atomic without locks. A call whose
connection drops is sent once more, on a new connection: every script is safe
to run twice (the ones that answer what they changed keep their answer for a
retry), and so is every other call.
All calls go through ``redis.asyncio``: none blocks the event loop.
"""

from __future__ import annotations

import builtins
import json
import logging
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, cast
from urllib.parse import quote, unquote

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from chatwright.errors import InvalidInputError, NotFoundError, SettingsError, StorageError
from chatwright.stores import ChatSession
from chatwright_redis import scripts
from chatwright_redis.config import URL_VARIABLE, redact

log = logging.getLogger(__name__)
DETAILS = "the server log has the details"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _micros(moment: datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // _MICROSECOND


def _moment(micros: str) -> datetime:
    return _EPOCH + int(micros) * _MICROSECOND


def _now() -> int:
    return _micros(datetime.now(UTC))


def _encode(*parts: str) -> str:
    return ":".join(quote(part, safe="") for part in parts)


def _decode_pair(text: str) -> tuple[str, str]:
    user, agent = text.split(":")
    return unquote(user), unquote(agent)


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


class Keys:
    """The names of every key, behind one prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.active = f"{prefix}active"
        self.session_pattern = f"{_glob_escape(prefix)}session:*"

    def session(self, session_id: uuid.UUID) -> str:
        return f"{self.prefix}session:{session_id}"

    def chat(self, chat_id: uuid.UUID) -> str:
        return f"{self.prefix}chat:{chat_id}"

    def live(self, chat_id: uuid.UUID) -> str:
        return f"{self.prefix}live:{chat_id}"

    def latest(self, user_id: str, agent_name: str) -> str:
        return f"{self.prefix}latest:{_encode(user_id, agent_name)}"

    def slot(self, user_id: str, agent_name: str, client_key: str) -> str:
        return f"{self.prefix}key:{_encode(user_id, agent_name, client_key)}"

    def user(self, user_id: str) -> str:
        return f"{self.prefix}user:{_encode(user_id)}"


def _hash(flat: Sequence[str]) -> dict[str, str]:
    """HGETALL as a Lua script returns it (a flat list) as a dict."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _session(fields: Mapping[str, str]) -> ChatSession:
    return ChatSession(
        id=uuid.UUID(fields["id"]),
        chat_id=uuid.UUID(fields["chat_id"]),
        user_id=fields["user_id"],
        agent_name=fields["agent_name"],
        is_active=fields["is_active"] == "1",
        client_key=fields.get("client_key"),
        created_at=_moment(fields["created_at"]),
        updated_at=_moment(fields["updated_at"]),
        metadata=json.loads(fields["metadata"]),
    )


class RedisSessionStore:
    """Sessions in Redis; see the module docstring for the keys and why."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str,
        idle_timeout: float,
        description: str = "Redis",
        source: str = URL_VARIABLE,
    ) -> None:
        self._redis = client
        self._source = source
        self._keys = Keys(prefix)
        self._ttl_ms = max(1, round(idle_timeout * 2000))
        self.description = description
        self._open = client.register_script(scripts.OPEN)
        self._heartbeat = client.register_script(scripts.HEARTBEAT)
        self._deactivate = client.register_script(scripts.DEACTIVATE)
        self._touch_chat = client.register_script(scripts.TOUCH_CHAT)
        self._sweep = client.register_script(scripts.SWEEP)

    @classmethod
    def from_url(
        cls, url: str, *, prefix: str, idle_timeout: float, source: str = URL_VARIABLE
    ) -> RedisSessionStore:
        """A store on the server at ``url``; nothing connects before the first call.

        :param source: where ``url`` was set (a setting, a variable), named in errors.
        """
        try:
            # One retry on a dropped connection, as after a restart of Redis every pooled
            # connection is dead: the call goes again on a new one. Every script is safe
            # to send twice (see chatwright_redis.scripts), and so is every other call.
            # Not on a timeout: a call that outlives a long socket_timeout could outlive
            # the minute its answer is kept. (retry_on_error: redis-py 5 needs it too.)
            dropped = (RedisConnectionError,)
            client = aioredis.Redis.from_url(
                url,
                decode_responses=True,
                socket_connect_timeout=5.0,
                retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 1, supported_errors=dropped),
                retry_on_error=list(dropped),
            )
        except ValueError as exc:
            # The parser's words may quote a piece of a password it misread.
            why = str(exc) if redact(url) == url else "it does not parse"
            raise SettingsError(
                f"{source} = {redact(url)!r} is not a Redis URL ({why}); "
                "use redis://host:port/db, rediss:// for TLS or unix:///path, with any "
                "'#', '?', '/' or '@' in the password percent-encoded"
            ) from None
        return cls(
            client,
            prefix=prefix,
            idle_timeout=idle_timeout,
            description=f"Redis at {redact(url)}",
            source=source,
        )

    @contextmanager
    def _reaching(self) -> Iterator[None]:
        """Turn redis-py's errors into a :class:`StorageError`.

        The error says what failed and no more: the HTTP API answers it to whoever
        asked. Where the server is, what it said and which setting points at it go to
        the log (which the CLI prints above its error line).
        """
        try:
            yield
        except (RedisConnectionError, RedisTimeoutError) as exc:
            log.warning(
                "chatwright: cannot reach the session store, %s (%s); start Redis there "
                "or point %s at it",
                self.description,
                exc,
                self._source,
            )
            raise StorageError(f"the session store (Redis) cannot be reached; {DETAILS}") from exc
        except RedisError as exc:
            log.warning("chatwright: the session store, %s, failed: %s", self.description, exc)
            raise StorageError(f"the session store (Redis) failed; {DETAILS}") from exc

    def _user_args(self, user_id: str) -> list[str | int]:
        return [self._keys.prefix, user_id, _now(), self._ttl_ms]

    async def open(
        self,
        user_id: str,
        agent_name: str,
        *,
        chat_id: uuid.UUID | None = None,
        client_key: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> ChatSession:
        session_id = uuid.uuid4()
        now = _now()
        keys = [
            self._keys.session(session_id),
            self._keys.latest(user_id, agent_name),
            self._keys.active,
            self._keys.user(user_id),
        ]
        fields = ["user_id", user_id, "agent_name", agent_name]
        fields += ["metadata", json.dumps(dict(metadata or {}))]
        if client_key is not None:
            slot = self._keys.slot(user_id, agent_name, client_key)
            keys.append(slot)
            fields += ["client_key", client_key, "_slot", slot]
        args: list[str | int] = [
            self._keys.prefix,
            str(session_id),
            "" if chat_id is None else str(chat_id),
            str(uuid.uuid4()),
            _encode(user_id, agent_name),
            now,
            self._ttl_ms,
            f"{_encode(user_id, agent_name)}:{session_id}",
            now - 2000 * self._ttl_ms,
            uuid.uuid4().hex,
            *fields,
        ]
        with self._reaching():
            status, payload = await self._open(keys=keys, args=args)
        if status == "owner":
            owner_user, owner_agent = _decode_pair(payload)
            if owner_user != user_id:
                raise NotFoundError(f"no chat {chat_id} for this user")
            raise InvalidInputError(
                f"chat {chat_id} belongs to agent {owner_agent!r}, not {agent_name!r}"
            )
        return _session(_hash(payload))

    async def get(self, user_id: str, session_id: uuid.UUID) -> ChatSession | None:
        with self._reaching():
            fields = cast(dict[str, str], await self._redis.hgetall(self._keys.session(session_id)))
        if not fields or fields["user_id"] != user_id:
            return None
        return _session(fields)

    async def _change(
        self, script: AsyncScript, user_id: str, session_id: uuid.UUID
    ) -> ChatSession | None:
        keys = [self._keys.session(session_id), self._keys.user(user_id), self._keys.active]
        with self._reaching():
            flat = await script(keys=keys, args=self._user_args(user_id))
        return None if flat is None else _session(_hash(flat))

    async def heartbeat(self, user_id: str, session_id: uuid.UUID) -> ChatSession | None:
        return await self._change(self._heartbeat, user_id, session_id)

    async def deactivate(self, user_id: str, session_id: uuid.UUID) -> ChatSession | None:
        found = await self.deactivate_once(user_id, session_id)
        return None if found is None else found[0]

    async def deactivate_once(
        self, user_id: str, session_id: uuid.UUID
    ) -> tuple[ChatSession, bool] | None:
        """Deactivate; whether this call did is whether the script found it active (a
        script is atomic: of a close and a sweep at once, one finds it so)."""
        keys = [self._keys.session(session_id), self._keys.user(user_id), self._keys.active]
        with self._reaching():
            args = [*self._user_args(user_id), uuid.uuid4().hex]
            answer = await self._deactivate(keys=keys, args=args)
        if answer is None:
            return None
        closed, flat = answer
        return _session(_hash(flat)), bool(int(closed))

    async def list(
        self, user_id: str | None = None, *, active: bool | None = None
    ) -> builtins.list[ChatSession]:
        with self._reaching():
            if user_id is None:
                # Every user's sessions: an operator's listing, so a SCAN is fine.
                names = [n async for n in self._redis.scan_iter(self._keys.session_pattern, 1000)]
            else:
                ids = cast(list[str], await self._redis.zrange(self._keys.user(user_id), 0, -1))
                names = [f"{self._keys.prefix}session:{i}" for i in ids]
            async with self._redis.pipeline(transaction=False) as pipe:
                for name in names:
                    pipe.hgetall(name)
                found = await pipe.execute()
        # Ids whose key has expired are skipped (and trimmed from the index by later opens).
        sessions = [_session(fields) for fields in found if fields]
        return sorted(
            (
                s
                for s in sessions
                if (user_id is None or s.user_id == user_id)
                and (active is None or s.is_active == active)
            ),
            key=lambda s: s.updated_at,
            reverse=True,
        )

    async def sweep(self, idle_before: datetime, *, limit: int) -> builtins.list[ChatSession]:
        """Deactivate up to ``limit`` idle sessions; each script call is one atomic step.

        A script looks at no more members of ``active`` than are still wanted,
        so a step is bounded by ``limit``; members left by expired keys are
        dropped without counting, hence the loop. Concurrent sweepers never
        share a session: a script runs alone, and a deactivated session has
        left ``active`` when it ends.
        """
        if limit < 1:
            raise InvalidInputError(f"a sweep batch must hold at least 1 session, not {limit}")
        cutoff = _micros(idle_before)
        swept: builtins.list[ChatSession] = []
        with self._reaching():
            while len(swept) < limit:
                wanted = limit - len(swept)
                looked, hashes = await self._sweep(
                    keys=[self._keys.active],
                    args=[self._keys.prefix, cutoff, wanted, uuid.uuid4().hex],
                )
                swept += [_session(_hash(flat)) for flat in hashes]
                if looked < wanted:
                    break
        return swept

    async def sweep_ids(self, idle_before: datetime, *, limit: int) -> builtins.list[uuid.UUID]:
        # The script returns the hashes anyway; parsing them is the small part.
        return [s.id for s in await self.sweep(idle_before, limit=limit)]

    async def sweep_count(self, idle_before: datetime, *, limit: int) -> int:
        return len(await self.sweep(idle_before, limit=limit))

    async def active_keys(self) -> set[tuple[str, str]]:
        with self._reaching():
            members = cast(list[str], await self._redis.zrange(self._keys.active, 0, -1))
        return {_decode_pair(member.rpartition(":")[0]) for member in members}

    async def count_active(self) -> int:
        with self._reaching():
            return await self._redis.zcard(self._keys.active)

    async def chat_owner(self, chat_id: uuid.UUID) -> tuple[str, str] | None:
        with self._reaching():
            owner = cast(str | None, await self._redis.get(self._keys.chat(chat_id)))
        return None if owner is None else _decode_pair(owner)

    async def touch_chat(self, user_id: str, chat_id: uuid.UUID) -> int:
        keys = [self._keys.live(chat_id), self._keys.user(user_id), self._keys.active]
        with self._reaching():
            return cast(int, await self._touch_chat(keys=keys, args=self._user_args(user_id)))

    async def _user_sessions(self, user_id: str) -> builtins.list[dict[str, str]]:
        ids = cast(list[str], await self._redis.zrange(self._keys.user(user_id), 0, -1))
        async with self._redis.pipeline(transaction=False) as pipe:
            for session_id in ids:
                pipe.hgetall(f"{self._keys.prefix}session:{session_id}")
            found = cast(list[dict[str, str]], await pipe.execute())
        return [fields for fields in found if fields and fields.get("user_id") == user_id]

    async def _scan(self, pattern: str) -> builtins.list[str]:
        return [name async for name in self._redis.scan_iter(pattern, 1000)]

    def _forget(self, pipe: Any, user_id: str, fields: Mapping[str, str]) -> None:
        """Queue the deletion of one session and its index entries on ``pipe``."""
        session_id = fields["id"]
        pipe.delete(f"{self._keys.prefix}session:{session_id}")
        pipe.zrem(self._keys.user(user_id), session_id)
        pipe.zrem(self._keys.active, f"{_encode(user_id, fields['agent_name'])}:{session_id}")
        if fields.get("_slot"):
            pipe.delete(fields["_slot"])
        pipe.srem(self._keys.live(uuid.UUID(fields["chat_id"])), session_id)

    async def erase_user(self, user_id: str) -> int:
        """Delete the user's sessions, their chats' owner entries and latest-chat pointers.

        Finding the user's chats scans the ``chat:*`` keys (no index maps a user to
        their chats): an operator's step, as rare as erasing a user is.
        """
        owner_prefix = quote(user_id, safe="") + ":"
        mine = _glob_escape(quote(user_id, safe=""))
        with self._reaching():
            sessions = await self._user_sessions(user_id)
            chats = await self._scan(f"{_glob_escape(self._keys.prefix)}chat:*")
            owned: builtins.list[str] = []
            for start in range(0, len(chats), 500):
                batch = chats[start : start + 500]
                owners = cast(list[str | None], await self._redis.mget(batch))
                owned += [
                    k
                    for k, o in zip(batch, owners, strict=True)
                    if o and o.startswith(owner_prefix)
                ]
            pointers = await self._scan(f"{_glob_escape(self._keys.prefix)}latest:{mine}:*")
            slots = await self._scan(f"{_glob_escape(self._keys.prefix)}key:{mine}:*")
            members = [
                m async for m, _ in self._redis.zscan_iter(self._keys.active, match=f"{mine}:*")
            ]
            async with self._redis.pipeline(transaction=True) as pipe:
                for fields in sessions:
                    self._forget(pipe, user_id, fields)
                chat_prefix = f"{self._keys.prefix}chat:"
                for name in owned:
                    pipe.delete(name, self._keys.live(uuid.UUID(name[len(chat_prefix) :])))
                for name in (*pointers, *slots):
                    pipe.delete(name)
                if members:
                    pipe.zrem(self._keys.active, *members)
                pipe.delete(self._keys.user(user_id))
                await pipe.execute()
        return len(sessions)

    async def delete_chat(self, user_id: str, chat_id: uuid.UUID) -> int:
        """Delete the user's sessions of the chat, its owner entry and pointers to it.

        Another user's chat is left as it is (0), the same as an unknown one.
        """
        with self._reaching():
            owner = cast(str | None, await self._redis.get(self._keys.chat(chat_id)))
            if owner is not None and _decode_pair(owner)[0] != user_id:
                return 0
            sessions = [
                f for f in await self._user_sessions(user_id) if f["chat_id"] == str(chat_id)
            ]
            agents = {f["agent_name"] for f in sessions}
            if owner is not None:
                agents.add(_decode_pair(owner)[1])
            pointers = [self._keys.latest(user_id, agent) for agent in sorted(agents)]
            current = cast(list[str | None], await self._redis.mget(pointers)) if pointers else []
            async with self._redis.pipeline(transaction=True) as pipe:
                for fields in sessions:
                    self._forget(pipe, user_id, fields)
                if owner is not None:
                    pipe.delete(self._keys.chat(chat_id), self._keys.live(chat_id))
                for name, value in zip(pointers, current, strict=True):
                    if value == str(chat_id):
                        pipe.delete(name)
                await pipe.execute()
        return len(sessions)

    async def ping(self) -> None:
        """Raise StorageError unless Redis answers (for the server's /healthz)."""
        with self._reaching():
            await self._redis.ping()

    async def close(self) -> None:
        await self._redis.aclose()
