"""The JSON the HTTP API reads and writes: request bodies, response bodies, stream events.

Every model here appears in ``/openapi.json``. Request bodies refuse unknown
fields and NUL characters; response models are built from the stores' rows by
their ``of`` constructors, so each shape is written down once. Timestamps stay
the ``isoformat()`` strings the API has always sent (``+00:00``, not ``Z``).

Longer than 450 lines because a turn's answer is declared here whole (its
tool calls, pending actions with their previews, usage, errors and stream
events), next to the requests that start it.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

if TYPE_CHECKING:
    from chatwright.approvals import PendingAction
    from chatwright.runtime import ToolCallRecord, Turn
    from chatwright.stores import (
        ChatInfo,
        ChatSession,
        ChatSummary,
        Message,
        PromptCustomization,
        ToolRow,
    )
    from chatwright.usage import TurnUsage

Timestamp = Annotated[
    str,
    Field(
        description="ISO 8601 time with its UTC offset.", json_schema_extra={"format": "date-time"}
    ),
]


class ErrorBody(BaseModel):
    """The body of every 4xx and 5xx answer."""

    error: str = Field(description="What went wrong and what to do about it.")


# -- requests ------------------------------------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        # PostgreSQL text cannot hold NUL characters; refuse them up front, not mid-turn.
        if isinstance(data, dict):
            for key, value in data.items():
                if isinstance(value, str) and "\x00" in value:
                    raise ValueError(f"{key} contains a NUL character")
        return data


class OpenSession(_Body):
    agent_name: str = Field(min_length=1, max_length=200)
    chat_id: uuid.UUID | None = Field(
        None,
        description="One of the caller's chats with the agent, to continue; without it the "
        "latest chat resumes (or, with new, a new one starts).",
    )
    new: bool = Field(False, description="Start a new chat; its id is chosen by the server.")
    client_key: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="Makes opening idempotent: the same key gets the same active session.",
    )

    @model_validator(mode="after")
    def _new_or_chat(self) -> OpenSession:
        if self.new and self.chat_id is not None:
            raise ValueError("send chat_id to continue a chat or new: true to start one, not both")
        return self


def _same_id(a: Any, b: Any) -> bool:
    """Whether two spellings name the same chat (a UUID's case and hyphens may differ)."""
    try:
        return uuid.UUID(str(a)) == uuid.UUID(str(b))
    except ValueError:
        return bool(a == b)


def _chat_request_schema(schema: dict[str, Any]) -> None:
    # The field is read under either name; show both, the older one as deprecated.
    schema["properties"]["session_id"] = {
        **schema["properties"]["chat_id"],
        "title": "Session Id",
        "description": "The older name of chat_id, still accepted; send one of the two.",
        "deprecated": True,
    }


class ChatRequest(_Body):
    model_config = ConfigDict(json_schema_extra=_chat_request_schema)

    agent_name: str = Field(min_length=1, max_length=200)
    # Defaults to None only so that a missing id is reported by the validator below
    # under both names, alongside the other fields' problems.
    chat_id: uuid.UUID = Field(
        None,
        validation_alias=AliasChoices("chat_id", "session_id"),
        validate_default=True,
        description="The conversation (the chat_id of a session); session_id is accepted too.",
    )
    message: str = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _one_name(cls, data: Any) -> Any:
        if isinstance(data, dict) and "chat_id" in data and "session_id" in data:
            if not _same_id(data["chat_id"], data["session_id"]):
                raise ValueError("send chat_id or session_id (its older name), not both")
            data = {k: v for k, v in data.items() if k != "session_id"}
        return data

    @field_validator("chat_id", mode="before")
    @classmethod
    def _required(cls, value: Any) -> Any:
        if value is None:
            raise PydanticCustomError(
                "missing", "Field required (send chat_id, or its older name session_id)"
            )
        return value


class Customization(_Body):
    kind: str = Field("instruction_set", min_length=1, max_length=100)
    content: str = Field(max_length=20_000)
    priority: int = Field(0, ge=-(2**31), le=2**31 - 1)
    is_active: bool = True


class BeaconToken(BaseModel):
    """The optional body of a deactivation sent by ``navigator.sendBeacon``."""

    access_token: str | None = Field(
        None, description="The bearer token, for clients that cannot set headers (JWT mode)."
    )


# -- responses -----------------------------------------------------------------


class Session(BaseModel):
    id: uuid.UUID
    chat_id: uuid.UUID
    agent_name: str
    is_active: bool
    created_at: Timestamp
    updated_at: Timestamp

    @classmethod
    def of(cls, session: ChatSession) -> Session:
        return cls(
            id=session.id,
            chat_id=session.chat_id,
            agent_name=session.agent_name,
            is_active=session.is_active,
            created_at=session.created_at.isoformat(),
            updated_at=session.updated_at.isoformat(),
        )


class ToolCallRef(BaseModel):
    id: str | None
    name: str | None
    args: Any


class ChatMessage(BaseModel):
    """One stored message; the tool fields are present only where they apply."""

    id: int
    role: str
    text: str
    created_at: Timestamp
    tool_calls: list[ToolCallRef] | None = Field(
        None, description="On AI messages that call tools."
    )
    tool_call_id: str | None = Field(None, description="On tool messages.")
    name: str | None = Field(None, description="On tool messages: the tool.")
    status: str | None = Field(None, description="On tool messages: success or error.")

    @classmethod
    def of(cls, message: Message) -> ChatMessage:
        data = dict(message.content.get("data", {}))
        content = data.get("content", "")
        text = (
            content
            if isinstance(content, str)
            else "".join(part.get("text", "") for part in content if isinstance(part, dict))
        )
        # Only the fields passed here are sent (the route excludes unset ones).
        extra: dict[str, Any] = {}
        if data.get("tool_calls"):
            extra["tool_calls"] = [
                ToolCallRef(id=c.get("id"), name=c.get("name"), args=c.get("args"))
                for c in data["tool_calls"]
            ]
        if message.role == "tool":
            extra["tool_call_id"] = data.get("tool_call_id")
            extra["name"] = data.get("name")
            extra["status"] = data.get("status", "success")
        return cls(
            id=message.id,
            role=message.role,
            text=text,
            created_at=message.created_at.isoformat(),
            **extra,
        )


class SummaryOut(BaseModel):
    """A chat's summary of the messages that fell out of its window (agents with summarize)."""

    text: str = Field(description="The summary, plain text, shown to the model as it is.")
    through_id: int = Field(description="The id of the last message it covers.")
    messages: int = Field(description="How many messages it covers in all.")
    updated_at: Timestamp

    @classmethod
    def of(cls, s: ChatSummary) -> SummaryOut:
        when = s.updated_at.isoformat()
        return cls(text=s.text, through_id=s.through_id, messages=s.messages, updated_at=when)


class MessagePage(BaseModel):
    chat_id: uuid.UUID
    agent_name: str
    messages: list[ChatMessage] = Field(description="Oldest first.")
    more: bool = Field(description="Whether an older page exists (pass messages[0].id as before).")
    summary: SummaryOut | None = Field(
        None, description="The chat's summary of its earlier messages (null: none)."
    )


class ToolCall(BaseModel):
    name: str
    args: dict[str, Any]
    result: Any
    error: bool

    @classmethod
    def of(cls, record: ToolCallRecord) -> ToolCall:
        return cls(name=record.name, args=record.args, result=record.result, error=record.error)


class RowChangeOut(BaseModel):
    """One row a write changes: ``before`` is null for a new row, ``after`` for a deleted one."""

    key: dict[str, Any] = Field(description="The row's primary key values.")
    before: dict[str, Any] | None
    after: dict[str, Any] | None


class PreviewOut(BaseModel):
    """The rows a write would change, read under the user's scope (at most tools.preview_rows)."""

    table: str
    operation: str
    count: int = Field(description="How many rows the write would change in all.")
    rows: list[RowChangeOut]


class PendingActionOut(BaseModel):
    """A tool call that waits for the user's decision (or was decided)."""

    id: uuid.UUID
    agent_name: str
    chat_id: uuid.UUID
    turn_id: uuid.UUID
    tool_id: int | None
    tool_name: str
    tool_call_id: str
    args: dict[str, Any] = Field(description="The arguments it runs with when approved.")
    preview: PreviewOut | None = Field(
        description="For writes that change existing rows (crud update, delete, upsert)."
    )
    status: Literal["pending", "approved", "denied", "expired", "done", "failed"]
    created_at: Timestamp
    expires_at: Timestamp = Field(description="When an undecided action expires (= denied).")
    decided_at: Timestamp | None
    decided_by: str | None
    result: str | None = Field(description="The tool's reply once it ran (or why it did not).")

    @classmethod
    def of(cls, action: PendingAction) -> PendingActionOut:
        data = action.as_dict()
        del data["user_id"]
        return cls.model_validate(data)


class UsageOut(BaseModel):
    """The tokens a turn's model calls spent."""

    model: str = Field(description="The model spec of the agent.")
    model_calls: int
    input_tokens: int
    output_tokens: int
    cached_tokens: int = Field(description="Of input_tokens, those the provider had cached.")
    total_tokens: int = Field(description="Input and output tokens: what budgets count.")
    cost: float | None = Field(description="In usage.currency; null unless usage.prices has it.")

    @classmethod
    def of(cls, usage: TurnUsage | None) -> UsageOut | None:
        """The usage of a turn, None when no model ran in it."""
        if usage is None or not usage.model_calls:
            return None
        return cls.model_validate(usage.as_dict())


STOPPED = (
    "Why the turn ended early, its response saying so to the user: max_model_calls or "
    "max_tool_calls (a limit of the agent was reached), invalid_tool_call (the model's tool "
    "call arguments were not valid JSON; nothing was run). Null when the model answered."
)


class ChatTurn(BaseModel):
    session_id: uuid.UUID = Field(description="The chat id of the conversation.")
    response: str
    tool_calls: list[ToolCall]
    error: None = Field(None, description="Always null: a failed turn answers an error status.")
    turn_id: uuid.UUID | None = Field(
        None, description="The turn, for undo; a turn resumed after a decision keeps its id."
    )
    status: Literal["done", "approval_required"] = Field(
        "done", description="approval_required: the turn stopped at calls that wait for the user."
    )
    pending: list[PendingActionOut] = Field(
        default_factory=list, description="With approval_required: the calls that wait."
    )
    usage: UsageOut | None = Field(None, description="Null when no model ran in the turn.")
    stopped: Literal["max_model_calls", "max_tool_calls", "invalid_tool_call"] | None = Field(
        None, description=STOPPED
    )

    @classmethod
    def of(cls, turn: Turn) -> ChatTurn:
        return cls(
            session_id=turn.chat_id,
            response=turn.response,
            tool_calls=[ToolCall.of(c) for c in turn.tool_calls],
            error=None,
            turn_id=turn.turn_id,
            status="approval_required" if turn.status == "approval_required" else "done",
            pending=[PendingActionOut.of(a) for a in turn.pending],
            usage=UsageOut.of(turn.usage),
            stopped=turn.stopped,  # type: ignore[arg-type]
        )


class PendingList(BaseModel):
    actions: list[PendingActionOut] = Field(description="Oldest first.")


class PendingErrorBody(ErrorBody):
    """409 from a turn: the chat waits for decisions on these calls first."""

    pending: list[PendingActionOut]


class BudgetErrorBody(ErrorBody):
    """429: the caller's token budget is spent; no model ran, nothing was stored."""

    resets_at: Timestamp | None = Field(
        description="When the spent budget resets; null when only the caller's other running "
        "turns stand in the way."
    )
    retry_after: int = Field(description="Seconds to wait before trying again (as Retry-After).")


class PreviewChangedBody(ErrorBody):
    """409 from an approval: the rows changed since the preview; decide again."""

    action: PendingActionOut | None = Field(
        default=None,
        description="When the rows changed: the action, pending again with the fresh preview.",
    )


class AgentSummary(BaseModel):
    name: str
    model: str
    history_window: int


class ToolEntry(BaseModel):
    """A tool row of an agent; ``ok`` and ``problems`` only for admins."""

    id: int
    name: str
    type: str
    description: str | None
    is_active: bool
    approval: str = Field(
        "auto", description="auto, required (every call waits) or user (each user chooses)."
    )
    approval_default: str = Field(
        "required", description="For user mode: what users who have not chosen get."
    )
    digest: str = Field(
        "",
        description="What the row does (its id, type and configuration) as a digest: give it "
        "with an approval choice (PUT /api/tools/{id}/approval) to choose for this row only.",
    )
    ok: bool | None = Field(None, description="Admins only: whether the tool loads.")
    problems: list[str] | None = Field(None, description="Admins only: why it does not.")

    @classmethod
    def of(cls, row: ToolRow, **admin: Any) -> ToolEntry:
        """The entry of ``row``; ``admin`` is ``ok`` and ``problems``, for admins only."""
        return cls(
            id=row.id,
            name=row.name,
            type=row.type,
            description=row.description,
            is_active=row.is_active,
            approval=row.approval,
            approval_default=row.approval_default,
            digest=_digest(row),
            **admin,
        )


def _digest(row: ToolRow) -> str:
    from chatwright.approvals import tool_digest

    return tool_digest(row)


class AgentDetail(AgentSummary):
    tools: list[ToolEntry]


class CustomizationOut(BaseModel):
    kind: str
    content: str
    priority: int
    is_active: bool

    @classmethod
    def of(cls, row: PromptCustomization) -> CustomizationOut:
        return cls(
            kind=row.kind, content=row.content, priority=row.priority, is_active=row.is_active
        )


class ClientConfig(BaseModel):
    """What the web page needs to know before it signs in."""

    auth: Literal["local", "jwt"]
    heartbeat_interval: float
    max_message_chars: int
    version: str


class Health(BaseModel):
    """Liveness for anyone: nothing about the deployment."""

    status: Literal["ok"]


class HealthDetail(BaseModel):
    """Readiness with its details, for admins."""

    status: Literal["ok", "unavailable"]
    database: str = Field(description="Which database is used (no credentials).")
    error: str | None = Field(description="Why the database does not answer; null when it does.")


# -- stream events (the data of each server-sent event) ------------------------


class TokenEvent(BaseModel):
    text: str


class ToolCallEvent(BaseModel):
    id: str | None
    name: str
    args: dict[str, Any]


class ToolResultEvent(BaseModel):
    id: str
    name: str | None
    result: Any = Field(description="The tool's reply as in ToolCall: its JSON value, or text.")
    error: bool


class ApprovalEvent(BaseModel):
    pending: list[PendingActionOut] = Field(description="The calls that wait for the user.")


class DoneEvent(BaseModel):
    session_id: uuid.UUID
    response: str
    tool_calls: list[ToolCall]
    turn_id: uuid.UUID | None = None
    status: Literal["done", "approval_required"] = "done"
    pending: list[PendingActionOut] = Field(default_factory=list)
    usage: UsageOut | None = None
    stopped: Literal["max_model_calls", "max_tool_calls", "invalid_tool_call"] | None = Field(
        None, description=STOPPED
    )


class ErrorEvent(ErrorBody):
    status: int = Field(description="The status the same failure gets from POST /api/chat.")
    pending: list[PendingActionOut] | None = Field(
        default=None, description="With status 409 when the chat waits for decisions: those calls."
    )
    resets_at: Timestamp | None = Field(
        default=None, description="With status 429: when the spent budget resets."
    )
    retry_after: int | None = Field(
        default=None, description="With status 429: seconds to wait before trying again."
    )


class ChatListItem(BaseModel):
    """One of the caller's chats in GET /api/chats."""

    chat_id: uuid.UUID
    agent_name: str
    title: str = Field(description="Its first message, on one line, cut at 80 characters.")
    messages: int = Field(description="How many messages it holds (tool calls and results too).")
    created_at: Timestamp = Field(description="When its first message was stored.")
    last_activity: Timestamp = Field(description="When its newest message was stored.")

    @classmethod
    def of(cls, chat: ChatInfo) -> ChatListItem:
        return cls(
            chat_id=chat.chat_id,
            agent_name=chat.agent_name or "",
            title=chat.title,
            messages=chat.messages,
            created_at=chat.created_at.isoformat(),
            last_activity=chat.last_activity.isoformat(),
        )


class ChatList(BaseModel):
    chats: list[ChatListItem] = Field(description="The most recently active first.")
    next: int | None = Field(
        description="Pass as before for the next (older) page; null when this is the last."
    )
