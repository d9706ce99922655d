"""Deciding pending actions: the runtime's write safety.

:class:`Decisions` holds what :meth:`chatwright.runtime.Runtime.decide`,
:meth:`~chatwright.runtime.Runtime.undo` (in :mod:`chatwright.undo`) and
:meth:`~chatwright.runtime.Runtime.choose_approval` do; see
:mod:`chatwright.approvals` for the records and :mod:`chatwright.writes` for how
a turn stops at calls that wait for the user.

A decision runs like a turn of the chat: it queues on the chat's in-process
lock and takes the chat's turn (``TurnStore.begin`` with no message), so that
it cannot interleave with a turn, another decision or an undo of the chat, on
this process or another. Of two approvals of one action, the store's atomic
``decide`` lets one through; the other is told it was decided already.

Longer than 450 lines because deciding an action is one flow, read together:
the checks before the claim (budgets, the agent's build), the claim, the
approved call (bounded in time, checked against the tool row the user was
asked about, and ended cleanly when cut off) and the turn it resumes.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from chatwright.approvals import Preview as PreviewRecord
from chatwright.approvals import no_tool_row
from chatwright.errors import (
    AlreadyDecidedError,
    BudgetExceededError,
    ChatBusyError,
    InvalidInputError,
    NotFoundError,
    PreviewChangedError,
)
from chatwright.runtime import OnMessage, OnToken, ToolCallRecord, Turn, _tool_calls

if TYPE_CHECKING:
    from langchain_core.messages import BaseMessage
    from langchain_core.tools import BaseTool

    from chatwright.approvals import Decision, PendingAction, UndoReport
    from chatwright.errors import TurnTimeoutError
    from chatwright.runtime import BuiltAgent, Runtime
    from chatwright.stores import Agent, Storage
    from chatwright.tools import TurnContext
    from chatwright.turns import TurnStart


STOPPED_WHILE_RUNNING = "its process stopped while it ran"
"""Why an approved call ended by the chat's next holder has no answer of its own."""


class Decisions:
    """Write safety's operations on one runtime."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    @property
    def storage(self) -> Storage:
        return self.runtime.storage

    @property
    def timeout(self) -> float:
        """Seconds a pending action waits (``tools.approval_timeout``)."""
        return self.runtime.settings.tools.approval_timeout

    async def audit_decision(self, action: PendingAction, status: str, by: str | None) -> None:
        """An audit entry for a call that was not run: denied, or expired. Its arguments
        go through the tool's redaction (:meth:`_audit_args`)."""
        from chatwright.approvals import NewAuditEntry

        await self.storage.audit.record(
            NewAuditEntry(
                user_id=action.user_id,
                agent_name=action.agent_name,
                tool_name=action.tool_name,
                operation=action.preview.operation if action.preview else "call",
                outcome=status,
                chat_id=action.chat_id,
                turn_id=action.turn_id,
                tool_id=action.tool_id,
                table=action.preview.table if action.preview else None,
                args=await self._audit_args(action),
                approval=status,
                decided_by=by,
                pending_id=action.id,
            )
        )

    async def _audit_args(self, action: PendingAction) -> dict[str, Any]:
        """The action's arguments as its audit entry records them: through the redaction of
        the tool serving its name now (:func:`chatwright.writes.audit_args`), taken from the
        agent's cached build, or built. When there is no such tool any more, or the agent
        cannot be built, they are left out: what they may hold cannot be told."""
        from chatwright.writes import audit_args

        entry = self.runtime.cache.peek(action.agent_name)
        built = entry.value if entry is not None else None
        if built is None:
            try:
                built = await self.runtime.agent_for(action.user_id, action.agent_name)
            except Exception:  # a decision is never refused for the sake of its record
                built = None
        tool: BaseTool | None = built.by_name.get(action.tool_name) if built else None
        if tool is None:
            return {
                "[left out]": f"no tool {action.tool_name!r} of agent {action.agent_name!r} "
                "to hide what the arguments may hold; the pending action keeps them"
            }
        return audit_args(tool, action.args)

    async def settle_expired(self, user_id: str, agent_name: str, chat_id: uuid.UUID) -> None:
        """Answer the chat's expired actions as not run (expired = denied), without the model."""
        from chatwright.history import to_store

        turns = self.runtime.turns
        start = await turns.begin(user_id, agent_name, chat_id, None)
        messages: list[BaseMessage] = []
        try:
            await self.ended(start, messages)
            await self.settle(start.pending, datetime.now(UTC), messages)
        finally:
            await asyncio.shield(turns.finish(start, to_store(messages), touch=False))

    async def settle(
        self,
        actions: list[PendingAction],
        now: datetime,
        messages: list[BaseMessage],
        *,
        but: uuid.UUID | None = None,
        on_message: OnMessage | None = None,
    ) -> None:
        """Answer the expired ones of ``actions`` (a chat's pending actions, read by a
        holder of the chat's turn) as not run: each one's result goes to ``messages``,
        to store with what the holder stores, and to ``on_message``. ``but``: an action
        left as it is."""
        from chatwright.history import storable

        for action in actions:
            if action.id == but or not action.expired(now):
                continue
            decided = await self.storage.pending.decide(
                action.user_id, action.id, "expired", EXPIRY
            )
            if decided is None:
                continue  # decided meanwhile by another process
            messages.append(storable(_not_run(action, expired=True)))
            await self.audit_decision(action, "expired", None)
            if on_message is not None:
                await on_message(messages[-1])

    async def _spent(self, user_id: str) -> bool:
        """Whether one of the user's token budgets is used up now (no reservation)."""
        from chatwright.usage import budget_states

        store = getattr(self.storage, "usage", None)
        settings = self.runtime.settings
        if store is None:
            return False
        now = datetime.now(UTC)
        states = await budget_states(store, settings, user_id, now)
        return any(s.limit is not None and s.used >= s.limit for s in states)

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
        """Approve or deny a pending action, and continue its turn once nothing else waits.

        Approving runs the tool with the stored arguments; denying gives the
        model a tool result saying the user declined. When the chat's last
        pending action is decided the model runs on, and the returned turn is
        that continuation (it may stop again at new calls); otherwise it
        carries no reply and ``status`` says what still waits.

        :raises NotFoundError: no such action for this user.
        :raises AlreadyDecidedError: decided already, or expired (said so).
        :raises PreviewChangedError: the rows changed since the preview; the
            action is pending again with the fresh preview (``exc.preview``).
        """
        from chatwright.approvals import Decision
        from chatwright.history import storable, to_store
        from chatwright.tools import TurnContext
        from chatwright.turns import holding_turn

        by = decided_by or user_id
        action = await self.storage.pending.get(user_id, action_id)
        if action is None:
            raise NotFoundError(f"no pending action {action_id} for this user")
        turns = self.runtime.turns
        from chatwright.runtime import STOPPED_BEFORE_DECISION

        async with self.runtime.queued(user_id, action.chat_id, STOPPED_BEFORE_DECISION):
            # Deciding the chat's last pending action resumes the model: it is checked
            # against the user's budgets and holds a reservation under its turn, as a new
            # turn does (for the approved call and the turn after it). Deciding another
            # one runs no model, and is never refused for a budget.
            waiting = await self.storage.pending.list(
                user_id, chat_id=action.chat_id, status="pending"
            )
            # Expired actions wait for nothing: they are settled as not run with this one,
            # which resumes the model when no other live action is left (an expired one
            # itself resumes nothing: it is only answered as not run).
            now = datetime.now(UTC)
            resumes = any(a.id == action_id and not a.expired(now) for a in waiting) and all(
                a.id == action_id or a.expired(now) for a in waiting
            )
            try:
                # Beginning waits while another process's turn holds the chat.
                async with self.runtime.until_stopped(STOPPED_BEFORE_DECISION):
                    start = await turns.begin(
                        user_id,
                        action.agent_name,
                        action.chat_id,
                        None,
                        turn_id=action.turn_id if resumes else None,
                        budget=self.runtime.budget_limits(spans=2) if resumes else None,
                    )
            except NotFoundError:
                # The chat went (deleted, its user erased) while this waited for it: the
                # action went with it, and "open a session first" would bring back neither.
                if await self.storage.pending.get(user_id, action_id) is None:
                    raise NotFoundError(
                        f"no pending action {action_id} for this user: it went with its "
                        f"chat {action.chat_id}, deleted meanwhile"
                    ) from None
                raise
            except BudgetExceededError as exc:
                exc.add(
                    f"; pending action {action_id} ({action.tool_name}) was not decided "
                    "(deciding it runs the model on) and still waits"
                )
                raise
            resumed = False
            carried: list[BaseMessage] = []
            try:
                # Approved calls whose process stopped while they ran (this one among them,
                # perhaps): ended first, their results stored with this decision's.
                await self.ended(start, carried)
                now = datetime.now(UTC)
                live = [a for a in start.pending if a.id == action_id or not a.expired(now)]
                current = next((a for a in start.pending if a.id == action_id), None)
                alone = [a.id for a in live] == [action_id]
                if not resumes and alone and current is not None and not current.expired(now):
                    # The chat's other actions were decided by another process, or expired,
                    # meanwhile: this decision would now resume the model, unchecked
                    # against the budgets.
                    raise ChatBusyError(
                        f"the other calls of chat {action.chat_id} were decided or "
                        f"expired meanwhile; decide pending action {action_id} again"
                    )
                if current is None:
                    raise _already_decided(await self.storage.pending.get(user_id, action_id))
                if current.expired(now):
                    # Every expired call of the reply is answered now, this one with them
                    # (said by the error, not as a message).
                    await self.settle(start.pending, now, carried)
                    raise AlreadyDecidedError(
                        f"pending action {action_id} ({current.tool_name}) expired at "
                        f"{current.expires_at.isoformat()} and was not run; ask again"
                    )
                status = "approved" if approve else "denied"
                # Built before the action is claimed: an agent whose model cannot be made
                # leaves it pending, to approve once the agent is fixed.
                built = (
                    await self.runtime.built(action.agent_name, start.agent.version)
                    if approve
                    else None
                )
                claimed = await self.storage.pending.decide(user_id, action_id, status, by)
                if claimed is None:
                    raise _already_decided(await self.storage.pending.get(user_id, action_id))
                call: Any = {
                    "name": claimed.tool_name,
                    "args": dict(claimed.args),
                    "id": claimed.tool_call_id,
                    "type": "tool_call",
                }
                if built is not None:
                    context = TurnContext(
                        user_id=user_id,
                        agent_name=action.agent_name,
                        chat_id=action.chat_id,
                        turn_id=claimed.turn_id,
                    )
                    decision = Decision("approved", by, claimed.id, expect=claimed.preview)
                    # The approved call's write is made only while this decision holds the chat.
                    holding = holding_turn.set(start)
                    try:
                        await self._same_row(built, call, context, claimed)
                        result, stopped = await self._run_bounded(
                            built, call, context, decision, claimed, start.agent
                        )
                    except PreviewChangedError:
                        raise  # asked again: pending, with what the call would do now
                    except BaseException as exc:
                        # Not to stay approved, never run and never decidable again.
                        carried.append(storable(await self._cut_off(claimed, exc)))
                        raise
                    finally:
                        holding_turn.reset(holding)
                    if stopped is not None:
                        carried.append(storable(result))
                        raise stopped
                else:
                    result = _not_run(claimed, expired=False)
                    await self.audit_decision(claimed, "denied", by)
                carried.append(storable(result))
                if on_message is not None:
                    await on_message(carried[-1])
                # The chat's other expired actions are answered now, as not run: none of
                # them waits for a decision any more (the first of carried stays this one's).
                # Read the clock again: the call may have run for a while.
                now = datetime.now(UTC)
                await self.settle(start.pending, now, carried, but=action_id, on_message=on_message)
                still = [a for a in start.pending if a.id != action_id and not a.expired(now)]
                if not still and not resumes and await self._spent(user_id):
                    # The others expired while the call ran: resuming would be a model
                    # call this decision was not checked for, and a budget is spent.
                    raise BudgetExceededError(
                        f"pending action {action_id} ({claimed.tool_name}) ran and the "
                        "chat's other calls expired meanwhile, but a budget of {yours} is "
                        "spent, so the model did not go on; send a message once it resets"
                    )
                if still:
                    return Turn(
                        chat_id=action.chat_id,
                        response="",
                        tool_calls=_records([call], carried),
                        messages=carried,
                        turn_id=claimed.turn_id,
                        status="approval_required",
                        pending=still,
                    )
                # Stored before the model runs on: a process that stops meanwhile leaves
                # the decided results in the chat, where the next turn reads them.
                await turns.append(start, to_store(carried))
                resumed = True
                turn = await self.runtime.run_turn(
                    start, claimed.turn_id, [], carried, on_message, on_token, carried_stored=True
                )
                turn.tool_calls = [*_records([call], carried[:1]), *turn.tool_calls]
                return turn
            finally:
                if not resumed:
                    await asyncio.shield(turns.finish(start, to_store(carried), touch=False))

    async def _run_bounded(
        self,
        built: BuiltAgent,
        call: Any,
        context: TurnContext,
        decision: Decision,
        action: PendingAction,
        agent: Agent,
    ) -> tuple[BaseMessage, TurnTimeoutError | None]:
        """Run an approved call within the agent's turn time limit (see :meth:`_run_approved`).

        A call still running when the limit passes, or when the process stops
        its turns, is cancelled (its uncommitted write rolls back): the action
        ends ``failed``, and the result for the model says so, with the
        :class:`~chatwright.errors.TurnTimeoutError` for the caller.
        """
        from langchain_core.messages import ToolMessage

        from chatwright.errors import TurnTimeoutError
        from chatwright.limits import limits_of

        seconds = limits_of(agent, self.runtime.settings).timeout
        try:
            async with self.runtime.bounded(seconds) as scope:
                return await self._run_approved(built, call, context, decision, action), None
        except TimeoutError:
            if not scope.expired():
                raise
        # Stopped by its time limit, or by the server stopping its turns (a shutdown).
        stopping = self.runtime.stopping
        why = (
            "the server stopped while it ran"
            if stopping
            else f"it ran past the time limit of {seconds:g} s"
        )
        text = (
            f"error: {action.tool_name} was stopped before it finished: {why}, and nothing "
            "it had not committed was written"
        )
        await asyncio.shield(
            self.storage.pending.complete(action.user_id, action.id, "failed", text)
        )
        result = ToolMessage(
            content=text, tool_call_id=action.tool_call_id, name=action.tool_name, status="error"
        )
        said = (
            "was stopped because the server stopped"
            if stopping
            else f"ran past the time limit of {seconds:g} s of agent {action.agent_name!r} "
            "and was stopped"
        )
        return result, TurnTimeoutError(
            f"the approved call of {action.tool_name} (pending action {action.id}) {said}; "
            "what happened is in the chat, ask again"
        )

    async def _same_row(
        self, built: BuiltAgent, call: Any, context: TurnContext, action: PendingAction
    ) -> None:
        """Nothing when the tool row serving the call's name is the row the user was asked
        about, as it was then; otherwise the action is pending again, with what the call
        of the row as it is now would do, and :class:`~chatwright.errors.PreviewChangedError`
        says so. (A name no row serves any more runs nothing: the call's result says so.)
        """
        from chatwright.approvals import tool_digest
        from chatwright.writes import preview_call, row_of

        tool = built.by_name.get(action.tool_name)
        if tool is None:
            return
        row = row_of(tool)
        digest = tool_digest(row) if row is not None else None
        same_id = (row.id if row is not None else None) == action.tool_id
        if same_id and (action.tool_digest is None or digest == action.tool_digest):
            return
        shown = True
        try:
            fresh = await preview_call(tool, call, context)
        except Exception:
            # No preview of the row as it is now (the database away, arguments the row now
            # refuses): the action keeps the row it was asked about, so that approving it
            # again checks again, and never runs unseen what the row became.
            fresh, shown = None, False
        expires = datetime.now(UTC) + timedelta(seconds=self.timeout)
        again = await self.storage.pending.reopen(
            action.user_id,
            action.id,
            fresh,
            expires,
            tool_id=row.id if row is not None and shown else None,
            tool_digest=digest if shown else None,
        )
        raise PreviewChangedError(
            f"tool {action.tool_name!r} of agent {action.agent_name!r} changed since you were "
            f"asked about this call (pending action {action.id}); nothing was run: look at it "
            "again and decide"
            + (
                "" if shown else " (what it would do now could not be shown; deny it, or try again)"
            ),
            preview=fresh,
            action=again,
        )

    async def _cut_off(self, action: PendingAction, exc: BaseException) -> BaseMessage:
        """End an approved action whose run was cut off (cancelled, the database away):
        ``failed``, with why; the result the chat keeps for its call."""
        from chatwright.errors import one_line

        reason = "it was cancelled" if isinstance(exc, asyncio.CancelledError) else one_line(exc)
        return await self._ended_unanswered(action, reason)

    async def end_interrupted(self, user_id: str, agent_name: str, chat_id: uuid.UUID) -> None:
        """End the chat's approved calls whose process stopped while they ran, storing
        their results as a turn's would be stored (see :meth:`ended`): a turn's ``begin``
        with a message refuses such a chat (:class:`~chatwright.errors.InterruptedCallsError`),
        so that the results come before the message."""
        from chatwright.history import to_store

        turns = self.runtime.turns
        start = await turns.begin(user_id, agent_name, chat_id, None)
        messages: list[BaseMessage] = []
        try:
            await self.ended(start, messages)
        finally:
            await asyncio.shield(turns.finish(start, to_store(messages), touch=False))

    async def record_unrecorded(self, user_id: str, agent_name: str, chat_id: uuid.UUID) -> None:
        """Store the calls and results of the writes of the chat's last turn that stopped
        before storing them, as its audit log has them
        (:func:`chatwright.history.recovered_writes`): a turn's ``begin`` with a message
        refuses such a chat (:class:`~chatwright.errors.UnrecordedWritesError`), so that
        they come before the message. Read again under the chat's lease: two processes
        that both found them store them once."""
        from chatwright.history import recovered_writes, to_store

        turns = self.runtime.turns
        start = await turns.begin(user_id, agent_name, chat_id, None)
        messages: list[BaseMessage] = []
        try:
            messages = recovered_writes(start.unrecorded)
        finally:
            await asyncio.shield(turns.finish(start, to_store(messages), touch=False))

    async def ended(self, start: TurnStart, messages: list[BaseMessage]) -> None:
        """End the approved actions of the started turn's chat (``start.interrupted``):
        their process stopped while the call ran, since this turn holds the chat. Each
        ends ``done`` when the audit log has its write, else ``failed``, and its result
        goes to ``messages`` (to store with what the holder stores). A failure to read
        the audit log leaves the rest approved, for the chat's next holder."""
        from chatwright.history import storable

        for action in start.interrupted:
            ended = await self._ended_unanswered(action, STOPPED_WHILE_RUNNING, certain=True)
            messages.append(storable(ended))

    async def _ended_unanswered(
        self, action: PendingAction, reason: str, *, certain: bool = False
    ) -> BaseMessage:
        """End an approved action whose call's answer was lost (``reason``): ``done`` when
        the audit log has its write, else ``failed``; the result for its call.

        :param certain: raise when the audit log cannot be read or the action not ended
            (nothing is ended then), rather than end it ``failed`` all the same (as a
            call cut off in this process must be, its turn ending now).
        """
        from langchain_core.messages import ToolMessage

        made = None
        try:
            # Its write may have committed before the cut: the audit log says.
            entries = await asyncio.shield(
                self.storage.audit.list(
                    action.user_id, chat_id=action.chat_id, turn_id=action.turn_id, limit=100
                )
            )
            made = next(
                (e for e in entries if e.pending_id == action.id and e.outcome == "ok"), None
            )
        except Exception:
            if certain:
                raise
        if made is not None:
            status, text = (
                "done",
                f"{action.tool_name} ran and its write was made (audit entry {made.id}), but "
                f"it was cut off before its answer was kept ({reason}); do not run it again",
            )
        else:
            status, text = (
                "failed",
                f"error: {action.tool_name} was cut off before it finished ({reason}); "
                "nothing it had not committed was written",
            )
        ok = made is not None
        try:
            ended = await asyncio.shield(
                self.storage.pending.complete(action.user_id, action.id, status, text)
            )
            if ended is None and certain:
                # Ended meanwhile by someone else: its result as they stored it.
                other = await self.storage.pending.get(action.user_id, action.id)
                if other is not None and other.result is not None:
                    text, ok = other.result, other.status == "done"
        except Exception:
            if certain:
                raise
        return ToolMessage(
            content=text,
            tool_call_id=action.tool_call_id,
            name=action.tool_name,
            status="success" if ok else "error",
        )

    async def _run_approved(
        self,
        built: BuiltAgent,
        call: Any,
        context: TurnContext,
        decision: Decision,
        action: PendingAction,
    ) -> BaseMessage:
        """Run an approved call; rows changed since the preview put it back to pending."""
        from chatwright.writes import call_tool

        pending = self.storage.pending
        try:
            result = await call_tool(
                self.runtime.plugins,
                self.storage,
                built.by_name,
                call,
                context,
                decision,
                limit=self.runtime.settings.tools.max_result_chars,
            )
        except PreviewChangedError as exc:
            expires = datetime.now(UTC) + timedelta(seconds=self.timeout)
            fresh = exc.preview if isinstance(exc.preview, PreviewRecord) else None
            again = await pending.reopen(action.user_id, action.id, fresh, expires)
            raise PreviewChangedError(
                f"the rows that {action.tool_name} would change are no longer as shown when "
                f"it was asked (pending action {action.id}); nothing was written: look at the "
                "new preview and decide again",
                preview=fresh,
                action=again,
            ) from None
        failed = getattr(result, "status", "success") == "error"
        await pending.complete(
            action.user_id, action.id, "failed" if failed else "done", result.text
        )
        return result

    async def undo(
        self, user_id: str, chat_id: uuid.UUID, *, turn_id: uuid.UUID | None = None
    ) -> UndoReport:
        """Revert the writes of one turn of the user's chat: :func:`chatwright.undo.undo_turn`."""
        from chatwright.undo import undo_turn

        return await undo_turn(self.runtime, user_id, chat_id, turn_id=turn_id)

    async def choose_approval(
        self, user_id: str, tool_id: int, choice: str | None, *, digest: str | None = None
    ) -> None:
        """Set the user's choice (``auto``/``required``, None to clear) for a ``user``-mode row.

        :param digest: the row as the user saw it (:func:`chatwright.approvals.tool_digest`);
            a row changed since is refused by the store (409), nothing stored.
        """
        from chatwright.approvals import USER_CHOICES

        row = await self.storage.tools.get(tool_id)
        if row is None:
            raise NotFoundError(no_tool_row(tool_id))
        if row.approval != "user":
            raise InvalidInputError(
                f"tool {row.name!r} (row {tool_id}) has approval {row.approval!r}: only rows in "
                "'user' mode take a user's choice"
            )
        if choice is not None and choice not in USER_CHOICES:
            raise InvalidInputError(
                f"{choice!r} is not an approval choice; use one of {', '.join(USER_CHOICES)}"
            )
        await self.storage.pending.choose(user_id, tool_id, choice, digest=digest)


EXPIRY = "expiry"
"""Who decided an action that expired."""


def _not_run(action: PendingAction, *, expired: bool) -> BaseMessage:
    from langchain_core.messages import ToolMessage

    if expired:
        text = (
            f"Not run: the user did not decide by {action.expires_at.isoformat()} and the "
            "request expired (as if declined)."
        )
    else:
        text = "Not run: the user declined this call."
    return ToolMessage(
        content=text, tool_call_id=action.tool_call_id, name=action.tool_name, status="error"
    )


def _already_decided(action: PendingAction | None) -> AlreadyDecidedError:
    if action is None:
        return AlreadyDecidedError("this pending action is gone")
    when = f" at {action.decided_at.isoformat()}" if action.decided_at else ""
    who = f" by {action.decided_by}" if action.decided_by and action.decided_by != EXPIRY else ""
    word = {"done": "approved and run", "failed": "approved (it failed)"}.get(
        action.status, action.status
    )
    return AlreadyDecidedError(
        f"pending action {action.id} ({action.tool_name}) was {word}{when}{who} already"
    )


def _records(calls: list[Any], results: list[BaseMessage]) -> list[ToolCallRecord]:
    from langchain_core.messages import AIMessage

    return _tool_calls([AIMessage(content="", tool_calls=calls), *results])
