"""The ``offline`` model: a few plain requests mapped to CRUD tools by rule.

It is not a language model. It exists so that the quickstart works with no
API key and no network, and it says so whenever it does not understand. It
recognises these requests (case does not matter):

- "add a task to buy milk", "remind me to call Sam", "add a note: the door code is 4711"
- "list my tasks", "show my done tasks", "list my notes"
- "complete task 3", "mark task 3 as done", "delete task 3", "delete note 2"
- "remember that I like tea", "what do you remember"

and picks the agent's tool by what it does: ``crud`` tools carry their table
and operation in their metadata (``chatwright_crud``), so the names of the
tools do not matter. Its answers are built from the tool results.

"Remember that …" is one call when the memory tool appends (its metadata names
the args it appends): the database adds the fact. With a memory tool that
replaces the notes (an older install's, or a user's own), it reads the notes
first and saves them with the fact added.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from pydantic import BaseModel

HELP = (
    "I'm chatwright's offline model: a few rules, not a language model, so I only "
    'understand requests like "add a task to buy milk", "list my tasks", "complete '
    'task 3", "delete task 3", "add a note: …", "list my notes", "remember that …" '
    'and "what do you remember". For real conversations give the agent a real model, '
    "for example `chatwright agents set assistant --model openai:gpt-4o-mini` with "
    "OPENAI_API_KEY set, or `--model ollama:llama3.1` for a local one."
)
MEMORY_TABLE = "agent_memories"

NOUNS = {
    "task": "tasks",
    "tasks": "tasks",
    "todo": "tasks",
    "todos": "tasks",
    "note": "notes",
    "notes": "notes",
}


@dataclass(frozen=True)
class Intent:
    action: str  # create | read | update | delete | remember | recall
    table: str
    text: str = ""
    row_id: int | None = None
    status: str | None = None


PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^(?:please )?(?:remind me|remember) to\s+(?P<text>.+)$"), "create-task"),
    (re.compile(r"^(?:please )?remember(?: that)?\s+(?P<text>.+)$"), "remember"),
    (re.compile(r"^what do you (?:remember|know)\b"), "recall"),
    (
        re.compile(
            r"^(?:please )?(?:add|create|new)(?: a| an)?(?: new)? (?P<noun>task|todo|note)s?"
            r"(?:\s*(?::|to|that|saying|called)\s*|\s+)(?P<text>.+)$"
        ),
        "create",
    ),
    (
        re.compile(
            r"^(?:please )?(?:complete|finish|close|mark)(?: the)? (?:task|todo) #?(?P<id>\d+)"
            r"(?: as (?:done|complete|completed|finished))?$"
        ),
        "complete",
    ),
    (
        re.compile(
            r"^(?:please )?(?:delete|remove)(?: the)? (?P<noun>task|todo|note) #?(?P<id>\d+)$"
        ),
        "delete",
    ),
    (
        re.compile(
            r"^(?:please )?(?:list|show|show me|what are|what's on|get)(?: all)? my"
            r"(?: (?P<status>pending|open|done|completed))? (?P<noun>tasks|todos|notes)\b"
        ),
        "read",
    ),
]


def parse(text: str) -> Intent | None:
    text = " ".join(text.strip().rstrip(".!?").split())
    lowered = text.lower()
    for pattern, kind in PATTERNS:
        match = pattern.match(lowered)
        if match is None:
            continue
        groups = match.groupdict()
        # Keep the user's own capitalisation for text that is stored.
        original = text[match.start("text") : match.end("text")] if groups.get("text") else ""
        if kind == "remember":
            return Intent("remember", MEMORY_TABLE, text=original)
        if kind == "recall":
            return Intent("recall", MEMORY_TABLE)
        if kind == "create-task":
            return Intent("create", "tasks", text=original)
        if kind == "create":
            return Intent("create", NOUNS[groups["noun"]], text=original)
        if kind == "complete":
            return Intent("update", "tasks", row_id=int(groups["id"]), status="done")
        if kind == "delete":
            return Intent("delete", NOUNS[groups["noun"]], row_id=int(groups["id"]))
        status = groups.get("status")
        status = {"open": "pending", "completed": "done"}.get(status or "", status)
        return Intent("read", NOUNS[groups["noun"]], status=status)
    return None


def _crud(tool: BaseTool) -> dict[str, Any]:
    meta = (tool.metadata or {}).get("chatwright_crud")
    return meta if isinstance(meta, dict) else {}


def find_tool(tools: Sequence[BaseTool], table: str, *operations: str) -> BaseTool | None:
    for operation in operations:
        for tool in tools:
            meta = _crud(tool)
            if meta.get("table") == table and meta.get("operation") == operation:
                return tool
    return None


def _json_schema(tool: BaseTool) -> dict[str, Any]:
    schema = tool.tool_call_schema
    if isinstance(schema, dict):
        return schema
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        return schema.model_json_schema()
    return {}


def _properties(tool: BaseTool) -> dict[str, Any]:
    return dict(_json_schema(tool).get("properties", {}))


def _text_arg(tool: BaseTool) -> str | None:
    """The argument that takes the request's text: the first required string, else any string."""
    json_schema = _json_schema(tool)
    required = json_schema.get("required", [])
    props = json_schema.get("properties", {})

    def is_string(spec: dict[str, Any]) -> bool:
        options = spec.get("anyOf", [spec])
        return any(
            o.get("type") == "string" and "format" not in o and "enum" not in o for o in options
        )

    for name in [*required, *props]:
        if name in props and is_string(props[name]):
            return str(name)
    return None


def _call(tool: BaseTool, args: dict[str, Any], n: int) -> AIMessage:
    return AIMessage(
        content="",
        tool_calls=[{"name": tool.name, "args": args, "id": f"offline_{n}", "type": "tool_call"}],
    )


def _result(message: ToolMessage) -> tuple[dict[str, Any] | None, str | None]:
    content = message.content if isinstance(message.content, str) else str(message.content)
    if message.status == "error":
        return None, content
    try:
        data = json.loads(content)
    except ValueError:
        return None, content
    return (data, None) if isinstance(data, dict) else (None, content)


def _label(row: dict[str, Any]) -> str:
    text = next((v for k, v in row.items() if k in {"title", "body", "notes"} and v), "")
    status = f" ({row['status']})" if row.get("status") else ""
    due = f", due {row['due_date']}" if row.get("due_date") else ""
    number = f"#{row['id']}: " if "id" in row else ""
    return f"{number}{text}{status}{due}"


def _appender(tools: Sequence[BaseTool]) -> tuple[BaseTool, str] | None:
    """A memory tool that adds a fact to the notes (``append``), and its argument."""
    for tool in tools:
        meta = _crud(tool)
        names = meta.get("append")
        if meta.get("table") == MEMORY_TABLE and isinstance(names, list) and names:
            return tool, str(names[0])
    return None


def first_call(intent: Intent, tools: Sequence[BaseTool]) -> AIMessage:
    appender = _appender(tools) if intent.action == "remember" else None
    if appender is not None:
        # The database adds the fact to the notes: one call, nothing read first.
        appending, arg = appender
        return _call(appending, {arg: intent.text}, 1)
    if intent.action in {"remember", "recall"}:
        reader = find_tool(tools, MEMORY_TABLE, "read")
        saver = find_tool(tools, MEMORY_TABLE, "upsert", "update", "create")
        if reader is None:
            # A saver that does not append replaces the notes: without reading them
            # first, old facts would be lost.
            return AIMessage(content="I have no tool to read my memory, so I cannot add to it.")
        if intent.action == "remember" and saver is None:
            return AIMessage(content="I have no tool to save memories.")
        return _call(reader, {}, 1)
    operations = {
        "create": ("create",),
        "read": ("read",),
        "update": ("update",),
        "delete": ("delete",),
    }
    tool = find_tool(tools, intent.table, *operations[intent.action])
    if tool is None:
        return AIMessage(content=f"I have no tool to {intent.action} {intent.table}. {HELP}")
    props = _properties(tool)
    args: dict[str, Any] = {}
    if intent.action == "create":
        name = _text_arg(tool)
        if name is None:
            return AIMessage(content=f"I don't know which field of {intent.table} to write. {HELP}")
        args[name] = intent.text
    if intent.row_id is not None:
        args["id"] = intent.row_id
    if intent.status is not None and "status" in props:
        args["status"] = intent.status
    return _call(tool, args, 1)


def _save_memory(saver: BaseTool, old: str, fact: str) -> AIMessage:
    """A save that replaces the notes: the old ones with the fact added."""
    name = _text_arg(saver) or "notes"
    notes = f"{old.rstrip()}\n- {fact}" if old.strip() else f"- {fact}"
    return _call(saver, {name: notes}, 2)


def follow_up(intent: Intent, tools: Sequence[BaseTool], results: list[ToolMessage]) -> AIMessage:
    data, error = _result(results[-1])
    if error is not None:
        return AIMessage(content=f"That did not work: {error}")
    assert data is not None
    noun = intent.table.removesuffix("s") if intent.table != MEMORY_TABLE else "memory"
    if intent.action == "remember":
        if len(results) == 1 and _appender(tools) is None:
            saver = find_tool(tools, MEMORY_TABLE, "upsert", "update", "create")
            if saver is None:
                return AIMessage(content="I have no tool to save memories.")
            rows = data.get("rows") or []
            if not rows and data.get("truncated"):
                # The notes were too long to be shown: saving "the old ones with the fact
                # added" would replace them with the fact alone.
                return AIMessage(
                    content="Your notes are too long for me to read whole, so I left them "
                    "as they are and did not save that. Raise tools.max_result_chars, or "
                    "give the memory tool the append option."
                )
            old = str(rows[0].get("notes", "")) if rows else ""
            return _save_memory(saver, old, intent.text)
        return AIMessage(content=f"Noted: {intent.text}.")
    if intent.action == "recall":
        rows = data.get("rows") or []
        notes = str(rows[0].get("notes", "")).strip() if rows else ""
        return AIMessage(
            content=f"Here is what I remember:\n{notes}"
            if notes
            else "I don't remember anything about you yet."
        )
    if intent.action == "create":
        row = data.get("created") or {}
        return AIMessage(content=f"Added {noun} {_label(row)}.")
    if intent.action == "read":
        rows = data.get("rows") or []
        if not rows:
            if intent.status:
                return AIMessage(content=f"You have no {intent.status} {intent.table}.")
            return AIMessage(content=f"You have no {intent.table} yet.")
        lines = "\n".join(f"- {_label(r)}" for r in rows)
        more = f"\n({data['truncated']})" if data.get("truncated") else ""
        return AIMessage(content=f"Your {intent.table}:\n{lines}{more}")
    if intent.action == "update":
        rows = data.get("rows") or []
        return AIMessage(content=f"Done: {noun} {_label(rows[0]) if rows else intent.row_id}.")
    return AIMessage(content=f"Deleted {noun} #{intent.row_id}.")


def respond(messages: Sequence[BaseMessage], tools: Sequence[BaseTool]) -> AIMessage:
    last_human = max(
        (i for i, m in enumerate(messages) if isinstance(m, HumanMessage)), default=None
    )
    if last_human is None:
        return AIMessage(content=HELP)
    request = messages[last_human].content
    intent = parse(request if isinstance(request, str) else str(request))
    if intent is None:
        return AIMessage(content=HELP)
    results = [m for m in messages[last_human + 1 :] if isinstance(m, ToolMessage)]
    if not results:
        return first_call(intent, tools)
    return follow_up(intent, tools, results)


class OfflineChatModel(BaseChatModel):
    """Rule-based replies; see the module docstring for what it understands."""

    @property
    def _llm_type(self) -> str:
        return "chatwright-offline"

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        bound = self.bind(chatwright_tools=[t for t in tools if isinstance(t, BaseTool)])
        return cast("Runnable[LanguageModelInput, AIMessage]", bound)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        reply = respond(messages, kwargs.get("chatwright_tools", []))
        return ChatResult(generations=[ChatGeneration(message=reply)])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        reply = respond(messages, kwargs.get("chatwright_tools", []))
        return ChatResult(generations=[ChatGeneration(message=reply)])
