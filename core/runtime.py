"""The runtime: settings, plugins, storage and built agents of one process.

A :class:`Runtime` is what the CLI commands and the server hold. Starting it
builds the storage backend named by ``storage.backend`` (through the plugin
that registered it), checks or upgrades the schema, and fires the ``startup``
hook; closing it fires ``shutdown`` and closes the storage.

:meth:`Runtime.chat` runs one chat turn, the same for the CLI and the server:

1. the chat must belong to the user and the agent (else "not found");
2. turns of one chat run one at a time (an asyncio lock per chat, and the
   storage's ``chat_lock`` across processes: an advisory lock on PostgreSQL);
3. the agent's config version is read (one query) and the built agent taken
   from the executor cache, rebuilt if the version changed;
4. the last ``history_window`` messages are read (one indexed query) and the
   system prompt is assembled with the user's memory and instructions;
5. the agent runs on that input; it holds no conversation state of its own,
   so concurrent chats of one user and agent cannot see each other;
6. every message is first made storable (:func:`chatwright.history.storable`:
   NUL characters, lone surrogates, values nested too deeply), so that what is
   stored and what the caller gets back are the same;
7. the human message is stored before the model runs, each complete tool
   exchange (the AI message calling tools and all their results) as soon as it
   completes, and the final reply together with touching the chat's sessions,
   in one transaction. When the model fails, the human message (and every
   complete tool exchange before the failure) is still stored, and a
   :class:`~chatwright.errors.ModelError` is raised.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any

from chatwright.errors import (
    ChatwrightError,
    ModelConfigError,
    ModelError,
    NotFoundError,
    StorageError,
    UnknownAgentError,
)
from chatwright.registry import Plugins
from chatwright.settings import Settings, load_settings
from chatwright.stores import Agent, InvalidJSON, NewMessage, Storage

if TYPE_CHECKING:
    from langchain_core.messages import BaseMessage
    from langchain_core.tools import BaseTool

    from chatwright.cache import ExecutorCache, Key
    from chatwright.tools import ToolProblem

log = logging.getLogger(__name__)

OnMessage = Callable[["BaseMessage"], Awaitable[None]]
OnToken = Callable[[str], Awaitable[None]]


@dataclass
class BuiltAgent:
    """What the executor cache holds for one (user, agent): no conversation state."""

    agent: Agent
    graph: Any
    tools: list[BaseTool]
    problems: list[ToolProblem]


@dataclass
class ToolCallRecord:
    name: str
    args: dict[str, Any]
    result: Any
    error: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "args": self.args, "result": self.result, "error": self.error}


@dataclass
class Turn:
    """The outcome of one chat turn."""

    chat_id: uuid.UUID
    response: str
    tool_calls: list[ToolCallRecord] = field(default_factory=list)
    messages: list[BaseMessage] = field(default_factory=list)


def _tool_calls(messages: list[BaseMessage]) -> list[ToolCallRecord]:
    from langchain_core.messages import AIMessage, ToolMessage

    results = {m.tool_call_id: m for m in messages if isinstance(m, ToolMessage)}
    records = []
    for message in messages:
        if not isinstance(message, AIMessage):
            continue
        for call in message.tool_calls:
            reply = results.get(call.get("id") or "")
            result: Any = None
            if reply is not None:
                text = reply.text
                try:
                    result = json.loads(text)
                except ValueError:
                    result = text
            records.append(
                ToolCallRecord(
                    call["name"],
                    dict(call["args"]),
                    result,
                    error=reply is not None and reply.status == "error",
                )
            )
    return records


class Runtime:
    def __init__(self, settings: Settings | None = None, plugins: Plugins | None = None) -> None:
        self.plugins = plugins if plugins is not None else Plugins.load()
        self.settings = settings if settings is not None else load_settings(plugins=self.plugins)
        self._storage: Storage | None = None
        self._cache: ExecutorCache | None = None
        self._turn_locks: weakref.WeakValueDictionary[uuid.UUID, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )

    @property
    def storage(self) -> Storage:
        if self._storage is None:
            raise RuntimeError("the runtime is not started; use `async with runtime:`")
        return self._storage

    def build_storage(self) -> Storage:
        """The storage backend chosen by ``storage.backend``, not yet connected."""
        name = self.settings.storage.backend
        registration = self.plugins.get(
            "register_storage_backends", name, setting="storage.backend"
        )
        storage: Storage = registration.value(self.settings)
        store = self.settings.sessions.store
        if store != "default":
            from chatwright.stores import WithSessionStore

            factory = self.plugins.get(
                "register_session_stores", store, setting="sessions.store"
            ).value
            storage = WithSessionStore(storage, factory(self.settings))
        return storage

    async def start(self, *, upgrade: bool = False) -> Runtime:
        """Open the storage; ``upgrade`` migrates the schema, otherwise it must be current."""
        storage = self.build_storage()
        try:
            if upgrade:
                await storage.upgrade()
            else:
                current = await storage.current_revision()
                head = storage.head_revision()
                if current != head:
                    state = f"at revision {current}" if current else "not initialised"
                    raise StorageError(
                        f"the database {storage.description} is {state} but this version of "
                        f"chatwright needs revision {head}; run `chatwright db upgrade` "
                        "(or `chatwright init` for a new database)"
                    )
        except BaseException:
            await storage.close()
            raise
        self._storage = storage
        try:
            self.plugins.notify("startup", runtime=self)
        except BaseException:
            self._storage = None
            await storage.close()
            raise
        return self

    async def close(self) -> None:
        if self._storage is None:
            return
        try:
            self.plugins.notify("shutdown", runtime=self)
        finally:
            storage, self._storage = self._storage, None
            await storage.close()

    async def __aenter__(self) -> Runtime:
        if self._storage is None:
            await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- the executor cache -------------------------------------------------

    @property
    def cache(self) -> ExecutorCache:
        """The executor cache, made on first use with the policy named by ``cache.policy``."""
        if self._cache is None:
            from chatwright.cache import ExecutorCache

            name = self.settings.cache.policy
            factory = self.plugins.get(
                "register_eviction_policies", name, setting="cache.policy"
            ).value
            self._cache = ExecutorCache(
                self._build_agent,
                factory(self.settings),
                on_evict=lambda key, reason: self.plugins.notify(
                    "executor_evicted", key=key, reason=reason
                ),
            )
        return self._cache

    async def _build_agent(self, key: Key) -> BuiltAgent:
        from langchain.agents import create_agent

        from chatwright.models import build_model
        from chatwright.tools import load_tools

        user_id, name = key
        # The version check that led here read these rows too, but only to digest
        # them; a build reads the rows it builds from, in the same state as what
        # it caches. (A version counter instead of the digest removes that read.)
        agent = await self.storage.agents.get(name)
        if agent is None:
            raise UnknownAgentError(name)
        if isinstance(agent.model_settings, InvalidJSON):
            raise ModelConfigError(
                f"agent {name!r}: model_settings is not valid JSON ({agent.model_settings.error})"
            )
        # Creating a model may import a provider package: keep that off the event loop.
        model = await asyncio.to_thread(
            build_model, self.plugins, agent.model, agent.model_settings
        )
        loaded = await load_tools(self.storage, self.settings, self.plugins, name, user_id)
        graph = await asyncio.to_thread(lambda: create_agent(model, loaded.tools))
        return BuiltAgent(agent, graph, loaded.tools, loaded.problems)

    def config_changed(self, agent_name: str) -> None:
        """Drop every user's built agent for ``agent_name`` (another process changed it)."""
        if self._cache is not None:
            self._cache.evict_where(lambda key: key[1] == agent_name, "config-changed")

    async def agent_for(self, user_id: str, agent_name: str) -> BuiltAgent:
        """The built agent for a user, from the cache when its config has not changed."""
        version = await self.storage.agents.config_version(agent_name)
        if version is None:
            raise UnknownAgentError(agent_name)
        entry = await self.cache.get((user_id, agent_name), version)
        built: BuiltAgent = entry.value
        return built

    # -- turns --------------------------------------------------------------

    def _lock(self, chat_id: uuid.UUID) -> asyncio.Lock:
        lock = self._turn_locks.get(chat_id)
        if lock is None:
            lock = self._turn_locks[chat_id] = asyncio.Lock()
        return lock

    async def _finish(
        self, storage: Storage, user_id: str, chat_id: uuid.UUID, rest: list[NewMessage]
    ) -> None:
        """Store the end of a turn and mark the chat used; once stored, the turn has succeeded."""
        from chatwright.stores import WithSessionStore

        if not isinstance(storage, WithSessionStore):
            # The reply and the chat's "last used" in one transaction.
            await storage.messages.append(user_id, chat_id, rest, touch=True)
            return
        # Sessions live in another store: the reply is stored first, and a failure
        # to touch afterwards must not make a stored turn look failed (a client
        # would retry it and repeat its tool calls).
        await storage.messages.append(user_id, chat_id, rest)
        try:
            await storage.sessions.touch_chat(user_id, chat_id)
        except StorageError as exc:
            log.warning("chat %s: its sessions were not marked used: %s", chat_id, exc)

    async def chat(
        self,
        user_id: str,
        agent_name: str,
        chat_id: uuid.UUID,
        message: str,
        *,
        on_message: OnMessage | None = None,
        on_token: OnToken | None = None,
    ) -> Turn:
        """Run one turn of a chat; see the module docstring for the steps.

        :param on_message: awaited with each message the turn produces (AI replies,
            tool calls, tool results), as soon as it exists.
        :param on_token: awaited with each piece of reply text as the model
            streams it (the whole reply at once for models that do not stream).
        """
        from langchain_core.messages import HumanMessage, SystemMessage, ToolMessage

        from chatwright.history import complete_prefix, storable, to_model_input, to_store
        from chatwright.prompts import system_prompt

        storage = self.storage
        if await storage.sessions.chat_owner(chat_id) != (user_id, agent_name):
            raise NotFoundError(
                f"no chat {chat_id} with agent {agent_name!r} for this user; open a session first"
            )
        async with self._lock(chat_id), storage.chat_lock(chat_id):
            human = storable(HumanMessage(content=message))
            try:
                built = await self.agent_for(user_id, agent_name)
            except ModelConfigError:
                # The agent exists but its model cannot be made: keep what the user said.
                await storage.messages.append(user_id, chat_id, to_store([human]))
                raise
            stored = await storage.messages.window(user_id, chat_id, built.agent.history_window)
            system = await system_prompt(storage, built.agent, user_id)
            inputs = [SystemMessage(content=system), *to_model_input(stored), human]
            # What the user said is kept before the model runs, and each complete
            # tool exchange as soon as it completes: after a crash the chat still
            # records every tool call whose effect may be in the database.
            await storage.messages.append(user_id, chat_id, to_store([human]))
            produced: list[BaseMessage] = []
            kept = 0
            modes = ["updates", "messages"] if on_token is not None else ["updates"]
            try:
                async for mode, chunk in built.graph.astream(
                    {"messages": inputs}, stream_mode=modes
                ):
                    if mode == "messages":
                        piece, meta = chunk
                        is_reply = piece.type in {"ai", "AIMessageChunk"} and piece.text
                        if on_token and is_reply and meta.get("langgraph_node") == "model":
                            await on_token(piece.text)
                        continue
                    for update in chunk.values():
                        for produced_message in (update or {}).get("messages", []):
                            produced.append(storable(produced_message))
                            if on_message is not None:
                                await on_message(produced[-1])
                    complete = len(complete_prefix(produced))
                    if complete > kept and isinstance(produced[complete - 1], ToolMessage):
                        await storage.messages.append(
                            user_id, chat_id, to_store(produced[kept:complete])
                        )
                        kept = complete
            except Exception as exc:
                await storage.messages.append(
                    user_id, chat_id, to_store(complete_prefix(produced)[kept:])
                )
                if isinstance(exc, ChatwrightError) and not isinstance(exc, ModelError):
                    raise
                reason = " ".join(str(exc).split()) or type(exc).__name__
                raise ModelError(
                    f"the model of agent {agent_name!r} ({built.agent.model}) failed: {reason}; "
                    "your message was kept, try again"
                ) from exc
            await self._finish(storage, user_id, chat_id, to_store(produced[kept:]))
        final = next((m for m in reversed(produced) if m.type == "ai" and m.text), None)
        return Turn(
            chat_id=chat_id,
            response=final.text if final is not None else "",
            tool_calls=_tool_calls(produced),
            messages=produced,
        )
