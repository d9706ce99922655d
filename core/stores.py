"""What a storage backend must provide.

A backend is one object implementing :class:`Storage`: a handful of stores,
each a :class:`typing.Protocol` over plain records, plus schema management.
The bundled ``sql`` plugin implements them on SQLAlchemy (SQLite and
PostgreSQL); a plugin can implement all of them on anything else, and the
contract suite in :mod:`chatwright.testing` checks that it behaves the same.

Every method is a coroutine and must not block the event loop. Methods that
touch a user's data take ``user_id`` explicitly, so that a backend can enforce
isolation per call (the ``supabase`` backend sets row-level-security claims
from it) and so that no method can return another user's rows.

Records are frozen dataclasses: cheap to build, safe to share between tasks.
The application tables that tools work on, and the :class:`RecordStore` over
them, are described in :mod:`chatwright.tables`; their names are re-exported
here.

Longer than 450 lines because it is the whole contract a backend implements:
every store's protocol and record, read together by backend authors.
"""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

# Re-exported: the application-table types lived here first, and plugins import
# them from this module.
from chatwright.tables import FRAMEWORK_TABLES as FRAMEWORK_TABLES
from chatwright.tables import ColumnInfo as ColumnInfo
from chatwright.tables import ColumnKind as ColumnKind
from chatwright.tables import ColumnSpec as ColumnSpec
from chatwright.tables import OrderBy as OrderBy
from chatwright.tables import RecordStore

if TYPE_CHECKING:
    from chatwright.approvals import AuditStore, PendingStore
    from chatwright.usage import UsageStore
from chatwright.tables import TableCreator as TableCreator
from chatwright.tables import TableInfo as TableInfo
from chatwright.tables import TableSpec as TableSpec
from chatwright.tables import is_framework_table as is_framework_table

DEFAULT_HISTORY_WINDOW = 50


@dataclass(frozen=True)
class InvalidJSON:
    """A JSON column whose stored text does not parse (possible on SQLite).

    Stores return it in place of the value, so one bad row is reported by
    whoever reads it instead of failing the whole query.
    """

    text: str
    error: str


@dataclass(frozen=True)
class Agent:
    id: int
    name: str
    system_prompt: str
    model: str
    model_settings: Mapping[str, Any] | InvalidJSON
    history_window: int
    created_at: datetime
    updated_at: datetime
    config_version: int = 0
    """Bumped by the database on every change of the row or of its tool rows."""
    turn_timeout: float | None = None
    """Seconds a turn may run; None: the ``turns.timeout`` setting."""
    max_model_calls: int | None = None
    """Most model calls per turn; None: ``turns.max_model_calls``."""
    max_tool_calls: int | None = None
    """Most tool calls per turn; None: ``turns.max_tool_calls``."""
    history_tokens: int | None = None
    """Most tokens of history sent to the model (besides ``history_window`` messages); None:
    no token bound."""
    summarize: bool = False
    """Whether messages that fall out of the window are summarised (:mod:`chatwright.window`)."""

    @property
    def version(self) -> str:
        """The config version of a build from this row: see :meth:`AgentStore.config_version`."""
        return config_version(self.id, self.created_at, self.config_version)


def config_version(agent_id: int, created_at: datetime, counter: int) -> str:
    """An agent's config version, from the row's id, creation time and change counter.

    The id and creation time tell apart an agent deleted and created again.
    """
    return f"{agent_id}:{created_at.isoformat()}:{counter}"


@dataclass(frozen=True)
class ToolRow:
    """One row of ``agent_tools``; ``config`` is the raw JSON, not yet validated."""

    id: int
    agent_id: int
    name: str
    type: str
    description: str
    config: Any
    is_active: bool
    position: int
    created_at: datetime
    updated_at: datetime
    approval: str = "auto"
    """``auto``, ``required`` or ``user``: see :mod:`chatwright.approvals`."""
    approval_default: str = "required"
    """For ``user`` mode: what users who have not chosen get (``auto`` or ``required``)."""


@dataclass(frozen=True)
class ChatSession:
    """One client engagement (``id``) with a persistent conversation (``chat_id``)."""

    id: uuid.UUID
    chat_id: uuid.UUID
    user_id: str
    agent_name: str
    is_active: bool
    client_key: str | None
    created_at: datetime
    updated_at: datetime
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class NewMessage:
    """A message to append: ``content`` is a LangChain message dict."""

    role: str
    content: Mapping[str, Any]
    created_at: datetime | None = None
    """When it was said, for messages brought in from elsewhere (an import); None: now."""


@dataclass(frozen=True)
class Message:
    id: int
    chat_id: uuid.UUID
    user_id: str
    role: str
    content: Mapping[str, Any]
    created_at: datetime


KEPT_CHARS = 16_000_000
"""Most characters of message text that each of the turn path's caches of stored messages
holds (:func:`message_weight`), besides its bound on how many messages: a few chats of
very long messages (a model's long replies, large tool arguments) take the room of many
chats of short ones instead of holding gigabytes."""


def message_weight(content: Mapping[str, Any]) -> int:
    """About how many characters a stored message (a LangChain message dict) holds: its
    text, and its tool calls' arguments when it has any; at least 1. What the caches
    of stored messages count against :data:`KEPT_CHARS`."""
    data = content.get("data")
    if not isinstance(data, Mapping):
        return 1 + len(repr(content))
    text = data.get("content")
    weight = 1 + (len(text) if isinstance(text, str) else len(repr(text)))
    for key in ("tool_calls", "invalid_tool_calls"):
        calls = data.get(key)
        if calls:
            weight += len(repr(calls))
    return weight


@dataclass(frozen=True)
class ChatInfo:
    """One of a user's chats as a list of chats shows it."""

    chat_id: uuid.UUID
    agent_name: str | None
    """The chat's agent; None from a backend that does not keep the chat's sessions (the
    ``redis`` session store keeps them): :func:`chatwright.conversations.list_chats` fills it."""
    title: str
    """The text of its first human message on one line, cut at ``TITLE_LENGTH`` characters
    (:func:`chatwright.conversations.title_of`); empty when it has none."""
    messages: int
    created_at: datetime
    """When its first message was stored."""
    last_activity: datetime
    """When its newest message was stored."""
    last_id: int
    """The id of its newest message: the list's order, and the cursor of the next page."""


@dataclass(frozen=True)
class PromptCustomization:
    id: int
    user_id: str
    agent_name: str
    kind: str
    content: str
    is_active: bool
    priority: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class ChatSummary:
    """A chat's summary of the messages that fell out of its window (one per chat)."""

    chat_id: uuid.UUID
    user_id: str
    text: str
    through_id: int
    """The id of the last message the summary covers."""
    updated_at: datetime
    messages: int = 0
    """How many messages it covers in all."""


@dataclass(frozen=True)
class NewSummary:
    """A summary to store for a chat, replacing the one it extends."""

    text: str
    through_id: int
    messages: int


@dataclass(frozen=True)
class AgentMemory:
    user_id: str
    agent_name: str
    notes: str
    updated_at: datetime


class AgentStore(Protocol):
    async def get(self, name: str) -> Agent | None: ...

    async def list(self) -> builtins.list[Agent]: ...

    async def create(
        self,
        name: str,
        *,
        system_prompt: str,
        model: str,
        model_settings: Mapping[str, Any] | None = None,
        history_window: int = DEFAULT_HISTORY_WINDOW,
        **limits: Any,
    ) -> Agent:
        """Insert an agent; :class:`~chatwright.errors.AlreadyExistsError` if the name is taken.

        ``limits`` are any of ``turn_timeout``, ``max_model_calls``, ``max_tool_calls``,
        ``history_tokens`` and ``summarize`` (see :class:`Agent`).
        """
        ...

    async def update(self, name: str, **changes: Any) -> Agent:
        """Change some of ``system_prompt``, ``model``, ``model_settings``, ``history_window``,
        and the limits (``turn_timeout``, ``max_model_calls``, ``max_tool_calls``,
        ``history_tokens``, ``summarize``; None sets a limit back to its setting).

        :class:`~chatwright.errors.NotFoundError` if there is no such agent.
        """
        ...

    async def delete(self, name: str) -> bool:
        """Delete an agent and its tools; False when there was none."""
        ...

    async def config_version(self, name: str) -> str | None:
        """The agent's :attr:`Agent.version`, in one query; None if there is no agent.

        Any change to the agent row or its tool rows, through chatwright or plain
        SQL, changes it (the ``sql`` backend's triggers bump a counter).
        """
        ...


class ToolStore(Protocol):
    async def list(
        self, agent_name: str | None = None, *, active_only: bool = False
    ) -> builtins.list[ToolRow]:
        """Tool rows ordered by agent, then ``position``, in one query."""
        ...

    async def get(self, tool_id: int) -> ToolRow | None: ...

    async def add(
        self,
        agent_name: str,
        name: str,
        *,
        type: str,
        config: Any,
        description: str = "",
        is_active: bool = True,
        position: int | None = None,
        approval: str = "auto",
        approval_default: str = "required",
    ) -> ToolRow:
        """Insert a row; ``position`` defaults to after the agent's last tool."""
        ...

    async def set_active(self, tool_id: int, active: bool) -> ToolRow: ...

    async def delete(self, tool_id: int) -> bool:
        """Delete a tool row and its users' approval choices; False when there was none."""
        ...

    async def update(self, tool_id: int, **changes: Any) -> ToolRow:
        """Change some of ``name``, ``description``, ``config``, ``is_active``, ``position``,
        ``approval``, ``approval_default``; :class:`~chatwright.errors.NotFoundError` if none.
        """
        ...


class SessionStore(Protocol):
    async def open(
        self,
        user_id: str,
        agent_name: str,
        *,
        chat_id: uuid.UUID | None = None,
        client_key: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> ChatSession:
        """Start a session, or return the active one with the same ``client_key``.

        Without ``chat_id`` the session resumes the user's latest chat with the
        agent, or starts a new chat. Idempotent per (user, agent, client_key),
        enforced by the database so that concurrent calls agree.
        """
        ...

    async def get(self, user_id: str, session_id: uuid.UUID) -> ChatSession | None: ...

    async def heartbeat(self, user_id: str, session_id: uuid.UUID) -> ChatSession | None:
        """Touch ``updated_at``; None when the session is not the user's."""
        ...

    async def deactivate(self, user_id: str, session_id: uuid.UUID) -> ChatSession | None: ...

    async def deactivate_once(
        self, user_id: str, session_id: uuid.UUID
    ) -> tuple[ChatSession, bool] | None:
        """:meth:`deactivate`, also saying whether this call deactivated the session (it
        was active until then); None when the session is not the user's.

        Optional: with it, a client's close and a sweeper's pass closing one session
        at the same moment report it to ``session_deactivated`` once. A store without
        it (this empty body) is closed with :meth:`deactivate`, whether it was active
        read just before, and such a race may report the session twice.
        """
        ...

    async def list(
        self, user_id: str | None = None, *, active: bool | None = None
    ) -> builtins.list[ChatSession]: ...

    async def sweep(self, idle_before: datetime, *, limit: int) -> builtins.list[ChatSession]:
        """Deactivate up to ``limit`` active sessions last touched before ``idle_before``.

        Returns them as stored after deactivation. One call is one short atomic
        step (one transaction, one script), so a sweeper calls it again and
        again, yielding in between, until a call returns fewer than ``limit``:
        that means no idle session was left for it. Callers in several
        processes may sweep at once; each session is returned by exactly one
        call (the SQL store deletes each batch's rows, and a row deleted by one
        step is not deleted again by another), so a session is never reported
        deactivated twice.
        """
        ...

    async def sweep_ids(self, idle_before: datetime, *, limit: int) -> builtins.list[uuid.UUID]:
        """:meth:`sweep`, returning only the ids: for a sweeper that needs no rows.

        The sweeper calls it when no plugin implements ``session_deactivated``
        and its caller wants the ids (``chatwright sessions sweep --verbose``).
        A store may simply return ``[s.id for s in await self.sweep(...)]``.
        """
        ...

    async def sweep_count(self, idle_before: datetime, *, limit: int) -> int:
        """:meth:`sweep`, returning only how many sessions it deactivated.

        The sweeper calls it when nobody needs the rows or the ids (no
        ``session_deactivated`` hook; the server's passes), so that a step of
        a large pass costs the event loop one row instead of ``limit``. A store
        may simply return ``len(await self.sweep_ids(...))``.
        """
        ...

    async def active_keys(self) -> set[tuple[str, str]]:
        """(user_id, agent_name) of every active session, in one query."""
        ...

    async def count_active(self) -> int:
        """How many sessions are active."""
        ...

    async def chat_owner(self, chat_id: uuid.UUID) -> tuple[str, str] | None:
        """(user_id, agent_name) of a chat, or None when it has no session."""
        ...

    async def touch_chat(self, user_id: str, chat_id: uuid.UUID) -> int:
        """Mark the user's active sessions of a chat as used now; how many there were."""
        ...

    async def erase_user(self, user_id: str) -> int:
        """Delete every session of the user's, and what the store keeps to find their chats.

        For erasing a user (:mod:`chatwright.userdata`); returns how many sessions
        there were. A store without it cannot take part in an erasure: this default,
        for stores that subclass the protocol, says so.
        """
        from chatwright.errors import StorageError

        raise StorageError(f"the session store {type(self).__name__} cannot delete sessions")

    async def delete_chat(self, user_id: str, chat_id: uuid.UUID) -> int:
        """Delete the user's sessions of one chat and the chat's owner entry; how many.

        Nothing of another user's chat is touched (0). Default: as :meth:`erase_user`.
        """
        from chatwright.errors import StorageError

        raise StorageError(f"the session store {type(self).__name__} cannot delete sessions")


class MessageStore(Protocol):
    async def append(
        self,
        user_id: str,
        chat_id: uuid.UUID,
        messages: Sequence[NewMessage],
        *,
        touch: bool = False,
    ) -> builtins.list[Message]:
        """Append messages in one transaction; all or none are stored.

        With ``touch``, also mark the chat's active sessions as used (what
        :meth:`SessionStore.touch_chat` does) in the same transaction, even when
        ``messages`` is empty.
        """
        ...

    async def window(self, user_id: str, chat_id: uuid.UUID, limit: int) -> builtins.list[Message]:
        """The last ``limit`` messages of a chat, oldest first, in one indexed query."""
        ...

    async def page(
        self,
        user_id: str,
        chat_id: uuid.UUID,
        *,
        limit: int,
        before: int | None = None,
        after: int | None = None,
    ) -> builtins.list[Message]:
        """Up to ``limit`` messages with ``id < before`` (newest page by default), oldest first.

        With ``after``, only messages with ``id > after``, and the page is the
        oldest such one (reading forward from ``after``).
        """
        ...

    async def chats(
        self,
        user_id: str,
        *,
        agent_name: str | None = None,
        limit: int,
        before: int | None = None,
    ) -> builtins.list[ChatInfo]:
        """Up to ``limit`` of the user's chats that hold messages, the most recently active
        first (by :attr:`ChatInfo.last_id`), in one query over the messages' indexes.

        With ``before``, only chats whose newest message's id is below it (the ``last_id``
        of the previous page's last chat). With ``agent_name``, only that agent's chats, and
        those whose agent the backend does not know (``agent_name`` None).
        """
        ...


class CustomizationStore(Protocol):
    async def list(
        self, user_id: str, agent_name: str, *, active_only: bool = False
    ) -> builtins.list[PromptCustomization]:
        """Customizations by descending priority."""
        ...

    async def put(
        self,
        user_id: str,
        agent_name: str,
        kind: str,
        content: str,
        *,
        priority: int = 0,
        is_active: bool = True,
    ) -> PromptCustomization:
        """Insert or replace the customization of this (user, agent, kind)."""
        ...


class SummaryStore(Protocol):
    async def get(self, user_id: str, chat_id: uuid.UUID) -> ChatSummary | None:
        """The chat's summary, when it has one and is the user's."""
        ...

    async def put(self, user_id: str, chat_id: uuid.UUID, summary: NewSummary) -> ChatSummary:
        """Store the chat's summary, replacing the one before (backends without a turn store
        of their own; the ``sql`` backend stores it in the turn's last transaction)."""
        ...


class MemoryStore(Protocol):
    async def get(self, user_id: str, agent_name: str) -> AgentMemory | None: ...

    async def put(self, user_id: str, agent_name: str, notes: str) -> AgentMemory:
        """Insert or replace the notes of this (user, agent)."""
        ...


@runtime_checkable
class Storage(Protocol):
    """A storage backend: the stores, plus schema management and lifecycle."""

    @property
    def agents(self) -> AgentStore: ...

    @property
    def tools(self) -> ToolStore: ...

    @property
    def sessions(self) -> SessionStore: ...

    @property
    def messages(self) -> MessageStore: ...

    @property
    def customizations(self) -> CustomizationStore: ...

    @property
    def memories(self) -> MemoryStore: ...

    @property
    def records(self) -> RecordStore: ...

    @property
    def pending(self) -> PendingStore:
        """Pending actions awaiting a user's approval (see :mod:`chatwright.approvals`)."""
        ...

    @property
    def audit(self) -> AuditStore:
        """The append-only audit log of tools' writes."""
        ...

    @property
    def usage(self) -> UsageStore:
        """Token usage per turn, and per-user budgets (see :mod:`chatwright.usage`)."""
        ...

    @property
    def summaries(self) -> SummaryStore:
        """Chats' summaries of what fell out of their windows."""
        ...

    # ``user_data`` (a :class:`chatwright.userdata.UserDataStore`: one user's data
    # exported, erased, one chat deleted) is optional, like ``turns``: read it with
    # :func:`chatwright.userdata.user_data_of`, which answers for a backend without it
    # with a store whose every call says the backend cannot.

    @property
    def description(self) -> str:
        """Where the data lives, secrets redacted (for messages and `config show`)."""
        ...

    async def upgrade(self) -> str | None:
        """Bring the schema to the newest revision; return the revision."""
        ...

    async def current_revision(self) -> str | None:
        """The schema revision the database is at, or None when it has none."""
        ...

    def head_revision(self) -> str | None:
        """The newest schema revision this version of the backend knows."""
        ...

    async def ping(self) -> None:
        """Raise :class:`~chatwright.errors.StorageError` unless the database answers."""
        ...

    def chat_lock(self, chat_id: uuid.UUID) -> AbstractAsyncContextManager[None]:
        """Hold while a turn runs on a chat: one turn per chat across all processes.

        A backend used by one process only may return a no-op; the runtime also
        serialises turns in-process.
        """
        ...

    def exclusive(self, name: str) -> AbstractAsyncContextManager[bool]:
        """Try to become the one process doing ``name`` right now.

        Yields True when this process holds it until the block ends, False when
        another process does (the caller then skips its work). The sweeper
        does not need it: :meth:`SessionStore.sweep` hands each idle session
        to one caller only.
        """
        ...

    async def watch_config(self, changed: Callable[[str], None]) -> None:
        """Call ``changed(agent_name)`` whenever another process changes an agent's config.

        Runs until cancelled; a backend without notifications returns at once
        (the per-turn version check still catches every change).
        """
        ...

    async def close(self) -> None: ...


def as_dict(record: object) -> dict[str, Any]:
    """A record as JSON-ready data: datetimes in ISO 8601, UUIDs as strings."""
    from dataclasses import fields

    def plain(value: Any) -> Any:
        if isinstance(value, datetime):
            return value.isoformat()
        if isinstance(value, uuid.UUID):
            return str(value)
        if isinstance(value, InvalidJSON):
            return {"invalid_json": value.text, "error": value.error}
        if isinstance(value, Mapping):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [plain(v) for v in value]
        return value

    return {f.name: plain(getattr(record, f.name)) for f in fields(record)}  # type: ignore[arg-type]


class WithSessionStore:
    """A storage backend whose sessions live in a separate session store.

    Everything but ``sessions`` is the backend's; closing closes both.
    """

    def __init__(self, storage: Storage, sessions: SessionStore) -> None:
        self._storage = storage
        self.sessions = sessions

    @property
    def backend(self) -> Storage:
        """The storage backend underneath (everything but the sessions)."""
        return self._storage

    def __getattr__(self, name: str) -> Any:
        return getattr(self._storage, name)

    @property
    def user_data(self) -> Any:
        """The backend's user data, joined with the sessions of the session store."""
        from chatwright.userdata import JoinedUserData, user_data_of

        return JoinedUserData(user_data_of(self._storage), self.sessions)

    async def ping(self) -> None:
        await self._storage.ping()
        ping = getattr(self.sessions, "ping", None)
        if ping is not None:
            await ping()

    async def close(self) -> None:
        try:
            close = getattr(self.sessions, "close", None)
            if close is not None:
                await close()
        finally:
            await self._storage.close()
