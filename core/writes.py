"""A turn's tool calls under write safety: holding calls for approval, guarding writes.

The runtime builds an agent with up to three LangChain middlewares from here,
only when they have something to do (a turn on an agent that needs none of
them pays nothing):

- :func:`hold_for_approval` ends the agent run right after a model reply that
  calls a tool needing the user's approval (``after_model`` jumping to the
  end), so that no tool of that reply runs inside the graph. The runtime then
  runs the reply's other calls itself and stores the held ones as pending
  actions (:meth:`chatwright.runtime.Runtime.chat`).
- :func:`guard_writes` runs every call of a tool that writes through
  :func:`guarded`: the ``before_write`` hooks may veto it, ``after_write``
  hears how it ended, and a tool that acts outside the storage is not called
  once the turn lost its chat (:func:`chatwright.turns.ensure_held`). Calls
  the runtime runs itself (an approved action, the other calls of a held
  reply) go through :func:`call_tool`, the same path.
- :func:`catch_tool_faults`, innermost, makes a tool's unexpected exception
  the result of its call (:func:`tool_fault`) instead of the end of the turn:
  the other calls of the same reply run to their end (a write cancelled
  half-way would be lost to the audit log), ``after_write`` hears of the
  failure, and neither the model nor the client gets the exception's text,
  which the server's log keeps.

A built tool knows its row (``metadata["chatwright_row"]``, set by the tool
loader), whether it writes (``metadata["chatwright_writes"]``) and, for
``crud``, how to preview a call (``metadata["chatwright_preview"]``) and that
its writes check the turn's lease themselves (``metadata["chatwright_checks_held"]``);
a tool may also say how its arguments are shown in the audit log
(``metadata["chatwright_redact"]``, :func:`audit_args`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from langchain_core.messages import AIMessage, ToolMessage

from chatwright.approvals import (
    Decision,
    NewAuditEntry,
    Preview,
    WriteCall,
    WriteOutcome,
    _decision,
    current_decision,
    needs_approval,
)
from chatwright.errors import AgentChangedError, ChatwrightError, PreviewChangedError, one_line
from chatwright.tools import TurnContext, calling_as, current_turn
from chatwright.turns import ensure_held

if TYPE_CHECKING:
    from langchain_core.messages.tool import ToolCall
    from langchain_core.tools import BaseTool

    from chatwright.registry import Plugins
    from chatwright.stores import Storage, ToolRow

log = logging.getLogger(__name__)


def row_of(tool: BaseTool | None) -> ToolRow | None:
    """The ``agent_tools`` row a built tool came from (None for a tool made elsewhere)."""
    if tool is None:
        return None
    row: ToolRow | None = (tool.metadata or {}).get("chatwright_row")
    return row


def writes(tool: BaseTool) -> bool:
    """Whether calls of the tool write (their tool type says so in the metadata)."""
    return bool((tool.metadata or {}).get("chatwright_writes"))


def checks_held(tool: BaseTool) -> bool:
    """Whether the tool's writes check themselves, in their own transaction, that their
    turn still holds its chat (``crud``'s do); other write tools' calls are preceded by
    :func:`chatwright.turns.ensure_held`."""
    return bool((tool.metadata or {}).get("chatwright_checks_held"))


def audit_args(tool: BaseTool | None, args: Mapping[str, Any]) -> dict[str, Any]:
    """A call's arguments as the audit log records them: through the tool's
    ``metadata["chatwright_redact"]`` when it has one. A tool type whose calls may carry
    values it must keep out of the log (the values of environment variables it fills
    into requests, say) gives its tools that function, which takes the arguments and
    returns them with those values hidden; the entries core records of its calls (a
    veto, a denial, an expiry) then hide them as its own entries do."""
    redact = (tool.metadata or {}).get("chatwright_redact") if tool is not None else None
    if not callable(redact):
        return dict(args)
    try:
        shown = redact(dict(args))
    except Exception:
        log.exception("the audit redaction of tool %r failed", getattr(tool, "name", None))
        return {"[left out]": "the tool's redaction of its arguments failed"}
    return dict(shown) if isinstance(shown, Mapping) else {"[redacted]": shown}


def operation_of(tool: BaseTool | None) -> str:
    """The audit word for what a call of the tool does (``crud``: its operation)."""
    crud = (tool.metadata or {}).get("chatwright_crud") if tool is not None else None
    if isinstance(crud, Mapping) and crud.get("operation"):
        return str(crud["operation"])
    return "write" if tool is not None and writes(tool) else "call"


def waits(tool: BaseTool | None, choices: Mapping[int, str]) -> bool:
    """Whether a call of ``tool`` waits for the user, given the user's choices."""
    row = row_of(tool)
    if row is None:
        return False
    return needs_approval(row.approval, row.approval_default, choices.get(row.id))


def asks_user(tool: BaseTool | None) -> bool:
    """Whether a call of ``tool`` waits or not by its user's own choice (``user`` mode)."""
    row = row_of(tool)
    return row is not None and row.approval == "user"


async def choices_now(
    storage: Storage, context: TurnContext, tools: list[BaseTool | None]
) -> Mapping[int, str]:
    """The user's approval choices as they are now, for a reply calling ``tools``.

    Read only when one of them is in ``user`` mode (the others do not ask), and kept
    in ``context.choices``, which the rest of the turn's handling of that reply
    reads: a choice the user changes during a turn counts from the next call on.
    """
    if any(asks_user(tool) for tool in tools):
        now = await storage.pending.choices(context.user_id, context.agent_name)
        context.choices.clear()
        context.choices.update(now)
    return context.choices


def may_wait(tools: list[BaseTool]) -> bool:
    """Whether any call of these tools can wait for approval (for some user)."""
    return any(row.approval != "auto" for row in map(row_of, tools) if row is not None)


async def preview_call(tool: BaseTool, call: ToolCall, context: TurnContext) -> Preview | None:
    """The preview of a call for ``context``'s user; None when the tool has none.

    Raises what the tool raises for arguments it would refuse.
    """
    preview = (tool.metadata or {}).get("chatwright_preview")
    if preview is None:
        return None
    with calling_as(context):
        result: Preview | None = await preview(**dict(call["args"]))
    return result


def error_result(call: ToolCall, text: str) -> ToolMessage:
    return ToolMessage(
        content=text, tool_call_id=str(call.get("id")), name=call["name"], status="error"
    )


def tool_fault(call: ToolCall, exc: Exception) -> ToolMessage:
    """The result of a call whose tool raised: a :class:`ToolException` or a
    :class:`~chatwright.errors.ChatwrightError` says what it says (written for the
    model, or for users); any other exception is a fault of the tool's code, logged
    with its traceback and named to the model by its class only (its text may hold
    anything: a path, a query, a secret)."""
    from langchain_core.tools import ToolException

    if isinstance(exc, (ToolException, ChatwrightError)):
        return error_result(call, f"Error: {one_line(exc)}")
    row = call["name"]
    log.error("tool %r failed on a call of its own: %s", row, one_line(exc), exc_info=exc)
    return error_result(
        call,
        f"Error: tool {row} failed ({type(exc).__name__}); what it did before it failed is "
        "not known, and the server's log has the details",
    )


def unknown_tool(call: ToolCall, tools: Mapping[str, BaseTool]) -> ToolMessage:
    names = ", ".join(sorted(tools)) or "none"
    return error_result(
        call, f"Error: {call['name']!r} is not a tool of this agent; its tools are: {names}"
    )


def cut(result: Any, limit: int | None) -> Any:
    """A tool's result cut to ``limit`` characters (``tools.max_result_chars``), saying
    so, when its text is longer: a tool type of a plugin may not cap its own results,
    and every later turn of the chat sends them to the model again."""
    if limit is None or not isinstance(result, ToolMessage):
        return result
    text = result.content
    if isinstance(text, list):
        # Content blocks: their text (a block that is not text, as its JSON), cut as one.
        import json

        def piece(block: Any) -> str:
            if isinstance(block, dict) and isinstance(block.get("text"), str):
                return str(block["text"])
            if isinstance(block, str):
                return block
            return json.dumps(block, ensure_ascii=False, default=str)

        pieces = [piece(b) for b in text]
        if sum(len(p) for p in pieces) <= limit:
            return result
        text = "".join(pieces)
    if not isinstance(text, str) or len(text) <= limit:
        return result
    note = f" … [cut: the result had {len(text)} characters, tools.max_result_chars is {limit}]"
    return result.model_copy(update={"content": text[: max(0, limit - len(note))] + note})


async def invoke(tool: BaseTool, call: ToolCall, limit: int | None = None) -> ToolMessage:
    """Run one call outside an agent run; the tool's faults become an error result, and
    its result is cut to ``limit`` characters (:func:`cut`).

    :class:`~chatwright.errors.PreviewChangedError` goes through: the caller
    asks the user again.
    """
    try:
        result = await tool.ainvoke(
            {"type": "tool_call", "name": call["name"], "args": call["args"], "id": call["id"]}
        )
    except PreviewChangedError:
        raise
    except Exception as exc:
        return tool_fault(call, exc)
    if not isinstance(result, ToolMessage):
        result = ToolMessage(
            content=str(result), tool_call_id=str(call.get("id")), name=call["name"]
        )
    made: ToolMessage = cut(result, limit)
    return made


async def guarded(
    plugins: Plugins,
    storage: Storage,
    tool: BaseTool,
    call: ToolCall,
    run: Callable[[], Awaitable[Any]],
) -> Any:
    """Run a write tool's call between the ``before_write`` and ``after_write`` hooks."""
    row = row_of(tool)
    turn = current_turn()
    decision = current_decision()
    if turn is None or row is None:
        return await run()
    write = WriteCall(
        user_id=turn.user_id,
        agent_name=turn.agent_name,
        chat_id=turn.chat_id,
        turn_id=turn.turn_id,
        tool_id=row.id,
        tool_name=row.name,
        tool_type=row.type,
        args=dict(call["args"]),
        approval=decision.approval,
        decided_by=decision.decided_by,
    )

    async def refused(outcome: str, reason: str, text: str) -> ToolMessage:
        """The call is not run: on record, told to the hooks, answered to the model."""
        await storage.audit.record(
            NewAuditEntry(
                user_id=turn.user_id,
                agent_name=turn.agent_name,
                tool_name=row.name,
                operation=operation_of(tool),
                outcome=outcome,
                chat_id=turn.chat_id,
                turn_id=turn.turn_id,
                tool_id=row.id,
                args=audit_args(tool, call["args"]),
                error=reason,
                approval=decision.approval,
                decided_by=decision.decided_by,
                pending_id=decision.pending_id,
            )
        )
        vetoed = outcome == "vetoed"
        plugins.notify("after_write", call=write, outcome=WriteOutcome(False, text, vetoed=vetoed))
        return error_result(call, text)

    reason = plugins.veto("before_write", call=write)
    if reason is not None:
        return await refused("vetoed", reason, f"refused: {reason}")
    if not checks_held(tool):
        # A tool whose writes do not check the turn's lease themselves (one that acts
        # elsewhere than the record store) is not called once the turn lost its chat,
        # nor once its agent changed (AgentChangedError).
        try:
            await ensure_held()
        except AgentChangedError as exc:
            return await refused("error", str(exc), str(exc))
    result = await run()
    if isinstance(result, ToolMessage):
        outcome = WriteOutcome(result.status != "error", result.text)
        plugins.notify("after_write", call=write, outcome=outcome)
    return result


async def call_tool(
    plugins: Plugins,
    storage: Storage,
    tools: Mapping[str, BaseTool],
    call: ToolCall,
    context: TurnContext,
    decision: Decision | None = None,
    *,
    limit: int | None = None,
) -> ToolMessage:
    """Run one call of a turn outside its agent run (held replies, approved actions); its
    result cut to ``limit`` characters (``tools.max_result_chars``)."""
    tool = tools.get(call["name"])
    if tool is None:
        return unknown_tool(call, tools)
    token = _decision.set(decision)
    try:
        with calling_as(context):
            if writes(tool):
                result: ToolMessage = await guarded(
                    plugins, storage, tool, call, lambda: invoke(tool, call, limit)
                )
                return result
            return await invoke(tool, call, limit)
    finally:
        _decision.reset(token)


def hold_for_approval(storage: Storage, tools: list[BaseTool]) -> Any:
    """The middleware that ends a run at a reply calling a tool that waits for the user
    (by the user's approval choices as they are when the reply comes)."""
    from langchain.agents.middleware import AgentMiddleware, hook_config

    by_name = {t.name: t for t in tools}

    class HoldForApproval(AgentMiddleware):
        @hook_config(can_jump_to=["end"])
        async def aafter_model(self, state: Any, runtime: Any) -> dict[str, Any] | None:
            messages = state["messages"]
            last = messages[-1] if messages else None
            if not isinstance(last, AIMessage) or not last.tool_calls:
                return None
            called = [by_name.get(c["name"]) for c in last.tool_calls]
            context = runtime.context
            choices: Mapping[int, str] = {}
            if isinstance(context, TurnContext):
                choices = await choices_now(storage, context, called)
            if any(waits(tool, choices) for tool in called):
                return {"jump_to": "end"}
            return None

    return HoldForApproval()


def guard_writes(plugins: Plugins, storage: Storage, tools: list[BaseTool]) -> Any:
    """The middleware that runs every write tool call through :func:`guarded`."""
    from langchain.agents.middleware import AgentMiddleware

    by_name = {t.name: t for t in tools}

    class GuardWrites(AgentMiddleware):
        async def awrap_tool_call(self, request: Any, handler: Any) -> Any:
            tool = by_name.get(request.tool_call["name"])
            if tool is None or not writes(tool):
                return await handler(request)
            return await guarded(
                plugins, storage, tool, request.tool_call, lambda: handler(request)
            )

    return GuardWrites()


def catch_tool_faults(limit: int | None = None) -> Any:
    """The middleware, innermost around each tool call, that makes a tool's exception
    its call's result (:func:`tool_fault`), and cuts a result to ``limit`` characters
    (:func:`cut`). LangGraph's own signals (an interrupt, a jump to a parent graph) and
    a :class:`~chatwright.errors.ChatwrightError` go through: they are meant to stop
    the run."""
    from langchain.agents.middleware import AgentMiddleware
    from langgraph.errors import GraphBubbleUp

    class CatchToolFaults(AgentMiddleware):
        async def awrap_tool_call(self, request: Any, handler: Any) -> Any:
            try:
                result = await handler(request)
            except (GraphBubbleUp, ChatwrightError):
                raise
            except Exception as exc:
                return tool_fault(request.tool_call, exc)
            return cut(result, limit)

    return CatchToolFaults()
