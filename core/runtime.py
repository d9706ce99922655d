"""The runtime: settings, plugins, storage and built agents of one process.

A :class:`Runtime` is what the CLI commands and the server hold. Starting it
builds the storage backend named by ``storage.backend`` (through the plugin
that registered it), checks or upgrades the schema, and fires the ``startup``
hook; closing it fires ``shutdown`` and closes the storage.

:meth:`Runtime.chat` runs one chat turn, the same for the CLI and the server,
in two transactions besides the tools' own, and one more per round of tool
calls (see :mod:`chatwright.turns` and the storage's ``turns`` store):

1. turns of one chat run one at a time: an asyncio lock per (user, chat) in
   the process, and across processes the chat's turn lease, taken by
2. the first transaction, which checks that the chat belongs to the user and
   the agent (else "not found"), reads the agent row with its config version,
   the last ``history_window`` messages, the user's memory and instructions,
   and stores the human message;
3. the built agent comes from the executor cache under the agent's name,
   rebuilt when the version read differs from the one it was built from. It
   holds nothing of any user and no conversation state: the turn passes the
   history in, and the user to the tools through LangChain's runtime context
   (:class:`~chatwright.tools.TurnContext`), so one build serves every user
   and concurrent chats cannot see each other;
4. every message is made storable (:func:`chatwright.history.storable`: NUL
   characters, lone surrogates, values nested too deeply), so that what is
   stored and what the caller gets back are the same;
5. each complete tool exchange (the AI message calling tools and all their
   results) is stored as soon as it completes, so that a process killed
   later in the turn leaves no tool write out of the chat. One stopped
   between a write's commit and its exchange's (killed, or cut off while
   another call of the round ran) leaves the write in the audit log only:
   the chat's next turn stores its call and a result saying it was made,
   before its message (:meth:`chatwright.decisions.Decisions.record_unrecorded`;
   an approved call's is ended by the chat's next holder,
   :meth:`chatwright.decisions.Decisions.end_interrupted`); the last
   transaction stores the rest (the reply), marks the chat's sessions used
   and gives the lease back. When the model fails, the complete tool
   exchanges before the failure are stored (the chat is not marked used) and
   a :class:`~chatwright.errors.ModelError` is raised; the human message is
   stored in any case. A dead process's lease expires and the chat goes on.
   A step whose answer was lost after the database committed it (a
   cancellation, ``storage.statement_timeout``, a dropped connection) is
   stored once: a start that may have taken the lease gives it back in the
   background until it has found it, and an exchange whose storing failed is
   looked for in the chat before the end stores it again (see
   ``Runtime._stored_after_all`` for the one case this misses).
6. a reply calling a tool that needs the user's approval ends the agent run
   before any of its tools runs (:mod:`chatwright.writes`): its other calls run
   at once, the held ones are stored as pending actions with the last
   transaction, and the turn returns with status ``approval_required``. A
   decision continues it (:mod:`chatwright.decisions`): the same steps, with
   the decided call's result in place of a human message.

Longer than 450 lines because a turn's steps, from the executor cache to the
last transaction, read best in one place; deciding and undoing live in
:mod:`chatwright.decisions`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import json
import logging
import uuid
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any

from chatwright.approvals import PendingAction as PendingActionRecord
from chatwright.errors import (
    ApprovalPendingError,
    ChatBusyError,
    ChatwrightError,
    InterruptedCallsError,
    ModelConfigError,
    ModelError,
    StorageError,
    TurnTimeoutError,
    UnknownAgentError,
    UnrecordedWritesError,
)
from chatwright.registry import Plugins
from chatwright.settings import Settings, load_settings
from chatwright.stores import Agent, InvalidJSON, NewMessage, Storage

if TYPE_CHECKING:
    from langchain_core.messages import BaseMessage
    from langchain_core.tools import BaseTool

    from chatwright.approvals import NewPending, PendingAction, UndoReport
    from chatwright.cache import ExecutorCache, Key
    from chatwright.decisions import Decisions
    from chatwright.tools import ToolProblem, TurnContext
    from chatwright.turns import TurnStart, TurnStore
    from chatwright.usage import BudgetLimits, TurnUsage

log = logging.getLogger(__name__)

# Seconds closing waits for a stopped turn to store what it made.
STOP_WAIT = 10.0
# Seconds between looks at whether the runtime stops, while a request waits for its chat.
STOP_POLL = 0.1

# What a request that waited for its chat is answered when the server stops meanwhile
# (Runtime.until_stopped): it was not started, and is not started later.
STOPPED_BEFORE_REQUEST = (
    "the server stopped before this request started; nothing was done, try again"
)
STOPPED_BEFORE_TURN = (
    "the server stopped before this turn started, and your message was not kept; send it again"
)
STOPPED_BEFORE_DECISION = (
    "the server stopped before this decision was made; the action still waits, decide it again"
)
STOPPED_BEFORE_UNDO = "the server stopped before the undo started; nothing was undone, try again"

SUMMARY_HEADING = "\n\nSummary of the earlier conversation:\n"
STORED_LOOK_BACK = 8
"""Messages read past a tool exchange's length when looking for it after its storing
failed (see ``Runtime._stored_after_all``): messages stored outside turns meanwhile."""
MODEL_REASON_CHARS = 500
"""The most characters of a failed model call's error a turn's error repeats."""

OnMessage = Callable[["BaseMessage"], Awaitable[None]]
OnToken = Callable[[str], Awaitable[None]]


@dataclass
class BuiltAgent:
    """What the executor cache holds for one agent: nothing of any user, no conversation."""

    agent: Agent
    graph: Any
    tools: list[BaseTool]
    problems: list[ToolProblem]
    by_name: dict[str, BaseTool] = field(default_factory=dict)
    model: Any = None
    """The chat model the graph calls (for summaries and token counts)."""
    recursion_limit: int = 25
    """LangGraph's step limit for a run of ``graph``, above what the call limits allow."""


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
    """The outcome of one chat turn (or of a turn resumed after a decision).

    ``status`` is ``"done"``, or ``"approval_required"`` when the turn stopped
    at tool calls that wait for the user: ``pending`` holds them.
    """

    chat_id: uuid.UUID
    response: str
    tool_calls: list[ToolCallRecord] = field(default_factory=list)
    messages: list[BaseMessage] = field(default_factory=list)
    turn_id: uuid.UUID | None = None
    status: str = "done"
    pending: list[PendingAction] = field(default_factory=list)
    usage: TurnUsage | None = None
    """The tokens the turn's model calls spent (summaries included)."""
    stopped: str | None = None
    """Why the turn ended early, with a message to the user: ``max_model_calls``,
    ``max_tool_calls`` or ``invalid_tool_call``; None when the model simply answered."""


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
        self._turn_locks: weakref.WeakValueDictionary[tuple[str, uuid.UUID], asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )
        self._turns: TurnStore | None = None
        self._turns_of: Storage | None = None
        self._decisions: Decisions | None = None
        # The tasks running a turn's model loop, with its time limit once it runs.
        self._running: dict[asyncio.Task[Any], asyncio.Timeout | None] = {}
        # The ends of turns (storing what they made, giving the chat back), which go on
        # when the turn's own task is cancelled meanwhile.
        self._ending: set[asyncio.Future[None]] = set()
        self._stopping = False

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

    def stop_turns(self) -> int:
        """End the running turns now, as if their time limit had passed: each keeps its
        human message and complete tool exchanges and gives its chat back, and its caller
        gets a :class:`~chatwright.errors.TurnTimeoutError`. Turns that start later are
        stopped at once too (the process is going away). How many were running."""
        self._stopping = True
        now = asyncio.get_running_loop().time()
        for task, scope in list(self._running.items()):
            if scope is None:
                task.cancel()
            elif not scope.expired():
                # Its run may be over, the turn storing what it made: it ends by itself.
                with contextlib.suppress(RuntimeError):
                    scope.reschedule(now)
        return len(self._running)

    def _ended(self, ending: asyncio.Future[None]) -> None:
        """A turn's end is over: forget it (its error goes to the turn's caller, or is
        logged by :meth:`_orphan_ended`)."""
        self._ending.discard(ending)
        if not ending.cancelled():
            ending.exception()  # retrieved: asyncio reports none as lost

    @staticmethod
    def _orphan_ended(chat_id: uuid.UUID, ending: asyncio.Future[None]) -> None:
        """The end of a turn whose task was cancelled meanwhile is over: a failure has
        no caller to go to, so it is logged."""
        if ending.cancelled():
            log.warning("chat %s: the end of a cancelled turn was cancelled too", chat_id)
            return
        error = ending.exception()
        if error is not None:
            log.warning("chat %s: the end of a cancelled turn failed: %s", chat_id, error)

    @property
    def stopping(self) -> bool:
        """Whether :meth:`stop_turns` was called: the process is stopping its turns."""
        return self._stopping

    @asynccontextmanager
    async def bounded(self, seconds: float | None) -> AsyncIterator[asyncio.Timeout]:
        """A time limit on work done for a turn outside the turn's own run (an approved
        call): :meth:`stop_turns` ends it like a running turn's."""
        task = asyncio.current_task()
        scope = asyncio.timeout(seconds)
        async with scope:
            if task is not None:
                self._running[task] = scope
            try:
                if self._stopping:
                    scope.reschedule(asyncio.get_running_loop().time())
                yield scope
            finally:
                if task is not None:
                    self._running.pop(task, None)

    @asynccontextmanager
    async def until_stopped(self, refusal: str) -> AsyncIterator[None]:
        """Beginning a turn, a decision or an undo, whose waits for its chat (held by
        another process's turn: the turn store's pauses between attempts,
        :func:`chatwright.turns.pause_for_chat`) :meth:`stop_turns` ends, as it ends
        running turns: a stopping server neither waits past its shutdown deadline nor
        starts the work after it. Ended so, :class:`~chatwright.errors.TurnTimeoutError`
        with ``refusal`` (what was not done, and what to do). Only the pauses end: an
        attempt under way (its transaction, the recovery steps before it) is left to
        finish, so that nothing is left half done or said not to be when it is."""
        from chatwright.turns import chat_pause

        if self._stopping:
            raise TurnTimeoutError(refusal)  # whether or not it would have had to wait
        loop = asyncio.get_running_loop()

        async def pause(seconds: float) -> None:
            until = loop.time() + seconds
            while not self._stopping:
                left = until - loop.time()
                if left <= 0:
                    return
                await asyncio.sleep(min(left, STOP_POLL))
            raise TurnTimeoutError(refusal)

        token = chat_pause.set(pause)
        try:
            yield
        finally:
            chat_pause.reset(token)

    async def close(self) -> None:
        if self._storage is None:
            return
        if self._running:
            # Turns still running store what they made and free their chats first.
            self.stop_turns()
            running = set(self._running)
            _, late = await asyncio.wait(running, timeout=STOP_WAIT)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late, timeout=STOP_WAIT)
        if self._ending:
            # Ends that outlived their turn's task: let them store and give chats back;
            # one that cannot in time is cancelled (its lease expires by itself).
            _, left = await asyncio.wait(set(self._ending), timeout=STOP_WAIT)
            for ending in left:
                ending.cancel()
            if left:
                await asyncio.wait(left, timeout=STOP_WAIT)
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

        from chatwright.limits import limits_of, recursion_limit, turn_limits
        from chatwright.models import ClientOptions, build_model
        from chatwright.tools import TurnContext, load_tools
        from chatwright.tracing import inline_when_untraced
        from chatwright.writes import (
            catch_tool_faults,
            checks_held,
            guard_writes,
            hold_for_approval,
            may_wait,
            writes,
        )

        inline_when_untraced()
        name = key
        agent = await self.storage.agents.get(name)
        if agent is None:
            raise UnknownAgentError(name)
        if isinstance(agent.model_settings, InvalidJSON):
            raise ModelConfigError(
                f"agent {name!r}: model_settings is not valid JSON ({agent.model_settings.error})"
            )
        # Creating a model may import a provider package: keep that off the event loop.
        client = ClientOptions(
            timeout=self.settings.models.request_timeout,
            max_retries=self.settings.models.max_retries,
        )
        model_settings = agent.model_settings
        model = await asyncio.to_thread(
            lambda: build_model(self.plugins, agent.model, model_settings, client=client)
        )
        loaded = await load_tools(self.storage, self.settings, self.plugins, name)
        # Write safety's middlewares, only where they have work to do.
        middleware = []
        if may_wait(loaded.tools):
            middleware.append(hold_for_approval(self.storage, loaded.tools))
        hooked = self.plugins.implemented("before_write") or self.plugins.implemented("after_write")
        written = [t for t in loaded.tools if writes(t)]
        # A write tool that does not check its turn's lease itself is checked before each call.
        if written and (hooked or not all(checks_held(t) for t in written)):
            middleware.append(guard_writes(self.plugins, self.storage, loaded.tools))
        if loaded.tools:
            # Innermost around a tool call: its exception is its result, not the turn's end.
            middleware.append(catch_tool_faults(self.settings.tools.max_result_chars))
        # Last, so that its after-model step runs first (LangChain runs them in reverse).
        limits = limits_of(agent, self.settings)
        middleware.append(turn_limits(name, limits))
        graph = await asyncio.to_thread(
            lambda: create_agent(
                model, loaded.tools, context_schema=TurnContext, middleware=middleware
            )
        )
        return BuiltAgent(
            agent,
            graph,
            loaded.tools,
            loaded.problems,
            by_name={t.name: t for t in loaded.tools},
            model=model,
            recursion_limit=recursion_limit(limits, len(middleware)),
        )

    def config_changed(self, agent_name: str) -> None:
        """Drop the built agent of ``agent_name`` (another process changed it)."""
        if self._cache is not None:
            self._cache.evict(agent_name, "config-changed")

    async def built(self, agent_name: str, version: str) -> BuiltAgent:
        """The built agent for ``version`` of the agent's config, from the cache when current."""
        entry = await self.cache.get(agent_name, version)
        built: BuiltAgent = entry.value
        return built

    async def agent_for(self, user_id: str, agent_name: str) -> BuiltAgent:
        """The built agent (the same for every user), from the cache when current.

        ``user_id`` is not part of the build; it is kept for callers that name one.
        """
        version = await self.storage.agents.config_version(agent_name)
        if version is None:
            raise UnknownAgentError(agent_name)
        return await self.built(agent_name, version)

    # -- turns --------------------------------------------------------------

    def turn_lock(self, user_id: str, chat_id: uuid.UUID) -> asyncio.Lock:
        """The in-process lock that queues turns (and decisions, undos) of one user's chat."""
        # Keyed by the user too: a chat is one user's, and another user's request
        # must be refused at once, not queued behind the owner's turn (a timing
        # answer to "does this chat exist?").
        key = (user_id, chat_id)
        lock = self._turn_locks.get(key)
        if lock is None:
            lock = self._turn_locks[key] = asyncio.Lock()
        return lock

    @asynccontextmanager
    async def queued(
        self, user_id: str, chat_id: uuid.UUID, stopped: str = STOPPED_BEFORE_REQUEST
    ) -> AsyncIterator[None]:
        """The chat's :meth:`turn_lock` held for a block, waited for at most as long as a
        turn waits for another process's turn of the chat (the storage's ``turn_wait``,
        when it has one): past it, :class:`~chatwright.errors.ChatBusyError` (409), and
        nothing of the waiting request is stored. Without a bound, requests queued behind
        a long turn of one chat would each wait for all of those before them."""
        lock = self.turn_lock(user_id, chat_id)
        wait = getattr(self.storage, "turn_wait", None)
        if not isinstance(wait, int | float) or isinstance(wait, bool) or wait <= 0:
            wait = None
        if self._stopping:
            raise TurnTimeoutError(stopped)
        try:
            # Bounded by turn_wait, and ended by stop_turns as a running turn is.
            async with asyncio.timeout(wait), self.bounded(None) as stop:
                await lock.acquire()
        except TimeoutError:
            if stop.expired() and self._stopping:
                raise TurnTimeoutError(stopped) from None
            raise ChatBusyError(
                f"another turn of chat {chat_id} has been running for over {wait:g} s; "
                "try again when it has finished"
            ) from None
        try:
            yield
        finally:
            lock.release()

    @property
    def turns(self) -> TurnStore:
        """The storage's turn store (or one made of its other stores)."""
        if self._turns is None or self._turns_of is not self._storage:
            from chatwright.turns import turn_store

            self._turns, self._turns_of = turn_store(self.storage), self._storage
        return self._turns

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
        :raises ApprovalPendingError: the chat waits for decisions on tool calls
            (expired ones are settled as denied and the turn goes on).
        """
        from langchain_core.messages import HumanMessage

        from chatwright.history import storable_with_data

        turn_id = uuid.uuid4()
        budget = self.budget_limits()
        async with self.queued(user_id, chat_id, STOPPED_BEFORE_TURN):
            human, data = storable_with_data(HumanMessage(content=message))
            new = NewMessage(role=human.type, content=data)
            # Beginning waits while another process's turn holds the chat.
            async with self.until_stopped(STOPPED_BEFORE_TURN):
                start = await self._begin(user_id, agent_name, chat_id, new, turn_id, budget)
            return await self.run_turn(start, turn_id, [human], [], on_message, on_token)

    async def _begin(
        self,
        user_id: str,
        agent_name: str,
        chat_id: uuid.UUID,
        new: NewMessage,
        turn_id: uuid.UUID,
        budget: BudgetLimits,
    ) -> TurnStart:
        """Begin a turn with a message. A chat's approved calls whose process stopped
        while they ran, its expired actions, and the writes of a turn that stopped before
        storing them refuse it: they are ended or stored first (their results go in
        before the message, so the model knows), once each."""
        ended = settled = recorded = False
        while True:
            try:
                return await self.turns.begin(
                    user_id, agent_name, chat_id, new, turn_id=turn_id, budget=budget
                )
            except InterruptedCallsError:
                if ended:
                    raise
                ended = True
                await self.decisions.end_interrupted(user_id, agent_name, chat_id)
            except UnrecordedWritesError:
                if recorded:
                    raise
                recorded = True
                await self.decisions.record_unrecorded(user_id, agent_name, chat_id)
            except ApprovalPendingError as exc:
                now = datetime.now(UTC)
                waiting = [a for a in exc.actions if isinstance(a, PendingActionRecord)]
                if settled or not waiting or any(not a.expired(now) for a in waiting):
                    raise
                settled = True
                await self.decisions.settle_expired(user_id, agent_name, chat_id)

    async def _stored_after_all(self, start: TurnStart, exchange: Sequence[NewMessage]) -> bool:
        """Whether a tool exchange whose storing failed is in the chat all the same.

        Storing it is one atomic step, but a step that ran out of time, was cancelled
        or lost its connection may have committed before its answer was lost: the
        end of the turn would then store the exchange a second time. The chat's last
        messages say (nothing but the turn's own end can follow it: the turn holds the
        chat); when they cannot be read, the end stores it as if it was not. Not
        covered: a statement the server still runs when the chat is read (its
        cancellation did not reach the server, which, behind a pooler, has no
        statement timeout of its own) commits after it, and the exchange is then
        stored twice.
        """
        if not exchange:
            return False
        try:
            tail = await self.storage.messages.window(
                start.user_id, start.chat_id, len(exchange) + STORED_LOOK_BACK
            )
        except ChatwrightError:
            return False
        # As stored: JSON keeps no tuple and no key that is not a string.
        wanted = [(m.role, json.loads(json.dumps(m.content, default=str))) for m in exchange]
        found = [(m.role, json.loads(json.dumps(m.content, default=str))) for m in tail]
        span = len(wanted)
        return any(found[i : i + span] == wanted for i in range(len(found) - span + 1))

    def budget_limits(self, spans: int = 1) -> BudgetLimits:
        """What a new turn's budget check uses: the settings (a user's override wins).

        :param spans: how many time limits the turn may run for in a row (2 for a
            decision: the approved call, then the turn it resumes).
        """
        from dataclasses import replace

        from chatwright.usage import HOLD_MARGIN, BudgetLimits

        # A reservation outlives the longest turn the setting allows, plus the wait for the
        # chat; the turn store lengthens it for an agent whose own limit is longer.
        hold = spans * self.settings.turns.timeout + HOLD_MARGIN
        return replace(BudgetLimits.of(self.settings, hold), spans=spans)

    async def run_turn(
        self,
        start: TurnStart,
        turn_id: uuid.UUID,
        tail: list[BaseMessage],
        carried: list[BaseMessage],
        on_message: OnMessage | None,
        on_token: OnToken | None,
        *,
        carried_stored: bool = False,
    ) -> Turn:
        """Run the model on a started turn until it answers or stops for approval.

        :param tail: messages of the turn already stored (the human message).
        :param carried: messages of the turn to store with what it produces (the
            results of decided actions when a turn resumes).
        :param carried_stored: ``carried`` is stored already.
        """
        from langchain_core.messages import AIMessage, SystemMessage, ToolMessage
        from langgraph.errors import GraphRecursionError

        from chatwright.history import (
            Dumped,
            answered,
            complete_prefix,
            storable,
            storable_value,
            storable_with_data,
            to_store,
        )
        from chatwright.limits import (
            STOPPED,
            limits_of,
            model_calls_started,
            stop_message,
            stopped_by,
        )
        from chatwright.prompts import fill
        from chatwright.tools import TurnContext
        from chatwright.turns import holding_turn
        from chatwright.usage import cut_off_call, priced, usage_of
        from chatwright.window import Fitted, fit

        turns = self.turns
        user_id, agent_name, chat_id = start.user_id, start.agent_name, start.chat_id
        if start.turn_id is None:
            # A turn resumed after a decision: its usage is recorded under the turn's id.
            start.turn_id = turn_id
        produced: list[BaseMessage] = list(carried)
        dumped: Dumped = {}  # what storing each produced message stores, made once
        kept = len(carried) if carried_stored else 0  # how many of them are stored
        # A record of a tool exchange under way, and how many messages it stores: it
        # runs shielded, and a turn cut off meanwhile waits for it before its end, so
        # that the end neither stores the exchange again nor loses it.
        appending: tuple[asyncio.Future[None], int] | None = None
        ended = False
        held: list[PendingAction] = []
        limits = limits_of(start.agent, self.settings)
        fitted = Fitted([])
        spent: TurnUsage | None = None

        # Each model call's prompt size (the limits' middleware adds them), the reply
        # text streamed since the last answered call, and whether the turn was cut off
        # (out of time, cancelled): a call cut off before it answered still counts.
        prompts: list[Any] = []
        streamed = 0
        cut = False
        counting: contextvars.Token[list[Any] | None] | None = None
        holding: contextvars.Token[TurnStart | None] | None = None

        def usage() -> TurnUsage:
            # A stop message is the runtime's, not a model call.
            calls = [m for m in produced if stopped_by(m) is None]
            prices = self.settings.usage.prices
            made = usage_of(start.agent.model, calls, prices)
            if cut:
                unanswered = cut_off_call(start.agent.model, prompts, made.model_calls, streamed)
                made = made.plus(priced(unanswered, prices))
            for extra in fitted.usage:
                made = made.plus(extra)
            return made

        async def end(
            messages: list[BaseMessage], *, touch: bool, pending: Sequence[NewPending] = ()
        ) -> None:
            nonlocal ended
            ended = True
            # One task, shielded as a whole: a cancellation that comes meanwhile (a
            # request cancelled after its turn was stopped, say) must not keep it from
            # storing what the turn made and giving the chat back.
            ending = asyncio.ensure_future(ending_steps(messages, touch=touch, pending=pending))
            self._ending.add(ending)
            ending.add_done_callback(self._ended)
            try:
                await asyncio.shield(ending)
            except asyncio.CancelledError:
                if not ending.done():
                    ending.add_done_callback(functools.partial(self._orphan_ended, chat_id))
                raise

        async def ending_steps(
            messages: list[BaseMessage], *, touch: bool, pending: Sequence[NewPending]
        ) -> None:
            nonlocal held, spent, kept, appending
            if appending is not None:
                stored, upto = appending
                appending = None
                with contextlib.suppress(Exception):
                    await asyncio.shield(stored)
                done = stored.done() and not stored.cancelled() and stored.exception() is None
                if not done:
                    # Failed, yet it may have been stored all the same, its answer lost.
                    exchange = to_store(messages[kept:upto], dumped)
                    done = await self._stored_after_all(start, exchange)
                if done:
                    kept = upto
            try:
                spent = usage()
            except Exception:
                # What the turn made is stored and the chat given back all the same.
                log.exception("the usage of a turn of agent %r could not be counted", agent_name)
                spent = None
            held = await turns.finish(
                start,
                to_store(messages[kept:], dumped),
                touch=touch,
                pending=pending,
                usage=spent,
                summary=fitted.new_summary,
            )

        task = asyncio.current_task()
        if task is not None:
            self._running[task] = None
        try:
            try:
                built = await self.built(agent_name, start.agent.version)
            except ModelConfigError:
                # The agent exists but its model cannot be made: what the user said is kept.
                await end(complete_prefix(produced), touch=False)
                raise
            context = TurnContext(
                user_id=user_id, agent_name=agent_name, chat_id=chat_id, turn_id=turn_id
            )
            modes = ["updates", "messages"] if on_token is not None else ["updates"]
            waiting: list[NewPending] = []
            scope = asyncio.timeout(limits.timeout)
            # The graph's tasks copy this context: the limits' middleware adds to this list.
            counting = model_calls_started.set(prompts)
            # The tools' writes are made only while this turn holds the chat.
            holding = holding_turn.set(start)
            try:
                async with scope:
                    if task is not None:
                        self._running[task] = scope
                        if self._stopping:
                            scope.reschedule(asyncio.get_running_loop().time())
                    await fit(
                        start,
                        built.model,
                        self.settings,
                        self.storage,
                        into=fitted,
                        until=scope.when(),
                    )
                    system = fill(
                        start.agent.system_prompt,
                        start.memory,
                        start.instructions,
                        self.settings.turns.memory_chars,
                        self.settings.turns.customization_chars,
                    )
                    if fitted.summary:
                        system += SUMMARY_HEADING + fitted.summary
                    inputs = [SystemMessage(content=system), *fitted.history, *tail]
                    while True:
                        run_input = answered([*inputs, *produced])
                        async for mode, chunk in built.graph.astream(
                            {"messages": run_input},
                            {"recursion_limit": built.recursion_limit},
                            stream_mode=modes,
                            context=context,
                        ):
                            if mode == "messages":
                                piece, meta = chunk
                                is_model = (
                                    piece.type in {"ai", "AIMessageChunk"}
                                    and meta.get("langgraph_node") == "model"
                                    # A stop message of the limits is a message, not tokens.
                                    and STOPPED not in piece.response_metadata
                                )
                                if not is_model:
                                    continue
                                # A call cut off counts what it streamed (cut_off_call): its
                                # text, and the arguments of the tool calls it was making.
                                for call in getattr(piece, "tool_call_chunks", None) or ():
                                    streamed += len(call.get("args") or "")
                                if on_token and piece.text:
                                    streamed += len(piece.text)
                                    await on_token(piece.text)
                                continue
                            for update in chunk.values():
                                for produced_message in (update or {}).get("messages", []):
                                    streamed = 0  # answered: counted from its report
                                    made, data = storable_with_data(produced_message)
                                    dumped[id(made)] = (made, data)
                                    produced.append(made)
                                    if on_message is not None:
                                        await on_message(produced[-1])
                            complete = len(complete_prefix(produced))
                            if complete > kept and isinstance(produced[complete - 1], ToolMessage):
                                stored = asyncio.ensure_future(
                                    turns.append(start, to_store(produced[kept:complete], dumped))
                                )
                                appending = (stored, complete)
                                await asyncio.shield(stored)
                                kept, appending = complete, None
                        last = produced[-1] if produced else None
                        if not (isinstance(last, AIMessage) and last.tool_calls):
                            break
                        # The run ended at a reply calling a tool that waits for the user.
                        results, waiting = await self._hold(built, last, context)
                        for result in results:
                            produced.append(storable(result))
                            if on_message is not None:
                                await on_message(produced[-1])
                        if waiting:
                            break
                        # Every held call was refused before it could wait: the model goes on.
            except GraphRecursionError:
                # The call limits should end a run first; if they did not, the same clean stop.
                produced = complete_prefix(produced)
                produced.append(
                    stop_message(
                        "max_model_calls",
                        f"I stopped here: this turn took more steps than agent {agent_name!r} "
                        "allows. Ask me to go on, or raise its max_model_calls.",
                    )
                )
                if on_message is not None:
                    await on_message(produced[-1])
                waiting = []
            except Exception as exc:
                # A call that broke after it streamed part of its answer (the connection
                # dropped, an error event, a read timeout) was not refused: the provider
                # charges for it, and it counts as one cut off by the time limit does.
                cut = (isinstance(exc, TimeoutError) and scope.expired()) or streamed > 0
                await end(complete_prefix(produced), touch=False)
                if isinstance(exc, TimeoutError) and scope.expired() and self._stopping:
                    raise TurnTimeoutError(
                        f"the server stopped before the turn of agent {agent_name!r} "
                        f"({start.agent.model}) ended; your message was kept, try again"
                    ) from None
                if isinstance(exc, TimeoutError) and scope.expired():
                    raise TurnTimeoutError(
                        f"the turn of agent {agent_name!r} ({start.agent.model}) ran past its "
                        f"time limit of {limits.timeout:g} s and was stopped; your message was "
                        "kept, try again"
                    ) from None
                if isinstance(exc, ChatwrightError) and not isinstance(exc, ModelError):
                    raise
                # Made storable: a provider's text may hold a lone surrogate, which no
                # UTF-8 answer (JSON, a stream's event) can carry.
                # Cut short: a provider's error body (a proxy's page, a server's dump) is
                # not the user's to receive whole, in the answer or the stream's event.
                reason = storable_value(" ".join(str(exc).split())) or type(exc).__name__
                if len(reason) > MODEL_REASON_CHARS:
                    reason = reason[:MODEL_REASON_CHARS] + "…"
                raise ModelError(
                    f"the model of agent {agent_name!r} ({start.agent.model}) failed: "
                    f"{reason}; your message was kept, try again"
                ) from exc
            await end(produced, touch=True, pending=waiting)
        except ChatwrightError as exc:
            # What the failed turn spent is stored with it; its caller counts it too.
            exc.usage = spent
            raise
        finally:
            try:
                if not ended:
                    # Cancelled, or failed outside the model: keep the complete
                    # exchanges, give the chat back.
                    cut = True
                    await end(complete_prefix(produced), touch=False)
            finally:
                if task is not None:
                    self._running.pop(task, None)
                if counting is not None:
                    model_calls_started.reset(counting)
                if holding is not None:
                    holding_turn.reset(holding)
        final = next((m for m in reversed(produced) if m.type == "ai" and m.text), None)
        return Turn(
            stopped=stopped_by(produced[-1]) if produced and not held else None,
            chat_id=chat_id,
            response=final.text if final is not None else "",
            tool_calls=_tool_calls(produced),
            messages=produced,
            turn_id=turn_id,
            status="approval_required" if held else "done",
            pending=held,
            usage=spent,
        )

    async def _hold(
        self, built: BuiltAgent, reply: Any, context: TurnContext
    ) -> tuple[list[BaseMessage], list[NewPending]]:
        """Split a reply that stopped its run: run the calls that need no approval, and
        make the others pending actions (with their previews)."""
        from langchain_core.tools import ToolException
        from pydantic import ValidationError

        from chatwright.approvals import NewPending, tool_digest
        from chatwright.tools import invalid_arguments
        from chatwright.writes import call_tool, error_result, preview_call, row_of, waits

        results: list[BaseMessage] = []
        waiting: list[NewPending] = []
        expires = datetime.now(UTC) + timedelta(seconds=self.settings.tools.approval_timeout)
        # A run ends at a reply calling tools only through the hold middleware, which read
        # the user's choices for this very reply into the context: the split is by those.
        choices = context.choices
        for call in reply.tool_calls:
            tool = built.by_name.get(call["name"])
            row = row_of(tool)
            if tool is None or row is None or not waits(tool, choices):
                results.append(
                    await call_tool(
                        self.plugins,
                        self.storage,
                        built.by_name,
                        call,
                        context,
                        None,
                        limit=self.settings.tools.max_result_chars,
                    )
                )
                continue
            try:
                preview = await preview_call(tool, call, context)
            except (ToolException, ValidationError, ChatwrightError) as exc:
                # Arguments the tool would refuse: the model hears why, nobody is asked.
                # In the words the same arguments get from a call that needs no approval.
                reason = (
                    invalid_arguments(exc) if isinstance(exc, ValidationError) else f"Error: {exc}"
                )
                results.append(error_result(call, reason))
                continue
            assert context.turn_id is not None
            waiting.append(
                NewPending(
                    turn_id=context.turn_id,
                    tool_id=row.id,
                    tool_name=call["name"],
                    tool_call_id=str(call.get("id")),
                    args=dict(call["args"]),
                    preview=preview,
                    expires_at=expires,
                    tool_digest=tool_digest(row),
                )
            )
        return results, waiting

    # -- write safety (see chatwright.approvals) -------------------------------

    async def pending(
        self,
        user_id: str | None,
        *,
        chat_id: uuid.UUID | None = None,
        status: str | None = "pending",
        limit: int = 100,
    ) -> list[PendingAction]:
        """The user's pending actions (``user_id`` None: every user's, for the CLI)."""
        return await self.storage.pending.list(user_id, chat_id=chat_id, status=status, limit=limit)

    @property
    def decisions(self) -> Decisions:
        from chatwright.decisions import Decisions

        if self._decisions is None:
            self._decisions = Decisions(self)
        return self._decisions

    async def decide(
        self,
        user_id: str,
        action_id: uuid.UUID,
        approve: bool,
        *,
        decided_by: str | None = None,
        on_message: OnMessage | None = None,
        on_token: OnToken | None = None,
    ) -> Turn:
        """Approve or deny a pending action: :meth:`chatwright.decisions.Decisions.decide`."""
        return await self.decisions.decide(
            user_id,
            action_id,
            approve,
            decided_by=decided_by,
            on_message=on_message,
            on_token=on_token,
        )

    async def undo(
        self, user_id: str, chat_id: uuid.UUID, *, turn_id: uuid.UUID | None = None
    ) -> UndoReport:
        """Revert one turn's writes: :meth:`chatwright.decisions.Decisions.undo`."""
        return await self.decisions.undo(user_id, chat_id, turn_id=turn_id)

    async def choose_approval(
        self, user_id: str, tool_id: int, choice: str | None, *, digest: str | None = None
    ) -> None:
        """Set the user's choice (``auto``/``required``, None to clear) for a ``user``-mode row
        (:meth:`chatwright.decisions.Decisions.choose_approval`)."""
        await self.decisions.choose_approval(user_id, tool_id, choice, digest=digest)
