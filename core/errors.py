"""Errors a user can meet.

Every exception here carries a message that names the thing at fault (an
agent, a tool row, a setting, a plugin) and says what to do about it. The CLI
prints them as one line and exits 1; the HTTP server turns them into JSON with
the status code given by ``http_status``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from chatwright.usage import TurnUsage


class ChatwrightError(Exception):
    """Base class of every error meant to be shown to a user as it is."""

    http_status = 400
    usage: TurnUsage | None = None
    """The tokens a turn that ended with this error had spent (set by the runtime)."""


class SettingsError(ChatwrightError):
    """A setting has an invalid value or an unknown name."""


class PluginError(ChatwrightError):
    """A plugin failed to load or registered something it should not have."""

    http_status = 500


class DuplicateRegistrationError(PluginError):
    """Two plugins registered the same name for the same kind of thing."""


class UnknownNameError(ChatwrightError):
    """A setting or argument names something no plugin provides."""


class StorageError(ChatwrightError):
    """The storage backend cannot do what was asked (unreachable, not migrated…)."""

    http_status = 503


class NotFoundError(ChatwrightError):
    """The named row does not exist (or is not visible to the caller)."""

    http_status = 404


class UnknownAgentError(NotFoundError):
    """No agent has this name: the one wording for the CLI, the API and the runtime."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"no agent named {name!r}; see `chatwright agents list`")


class ChatBusyError(ChatwrightError):
    """Another turn of the chat is still running and did not end in time."""

    http_status = 409


class ApprovalPendingError(ChatwrightError):
    """The chat waits for the user's decision on tool calls; decide them first."""

    http_status = 409

    def __init__(self, message: str, actions: list[object] | None = None) -> None:
        self.actions = list(actions or [])
        super().__init__(message)


class InterruptedCallsError(ChatwrightError):
    """The chat has approved calls whose process stopped while they ran: a turn store's
    ``begin`` with a message refuses it, storing nothing, so that the holder of the
    chat ends them first (:meth:`chatwright.decisions.Decisions.end_interrupted`) and
    their results come before the new message. The runtime does so; not for users."""

    http_status = 409

    def __init__(self, actions: list[object]) -> None:
        self.actions = list(actions)
        super().__init__(
            f"chat has {len(self.actions)} approved call(s) whose process stopped while "
            "they ran; they are ended before the next turn"
        )


class UnrecordedWritesError(ChatwrightError):
    """The chat's last turn stopped after a tool's write and before storing the write's
    call and result: a turn store's ``begin`` with a message refuses the chat, storing
    nothing, so that its holder stores them first, as the audit log has them
    (:meth:`chatwright.decisions.Decisions.record_unrecorded`), and the model knows of
    the write before the new message. The runtime does so; not for users."""

    http_status = 409

    def __init__(self, entries: list[object]) -> None:
        self.entries = list(entries)
        super().__init__(
            f"chat has {len(self.entries)} write(s) of a turn that stopped before it "
            "stored them; they are stored before the next turn"
        )


class AlreadyDecidedError(ChatwrightError):
    """A pending action was decided already (or expired) and cannot be decided again."""

    http_status = 409


class PreviewChangedError(ChatwrightError):
    """The rows a write would change are no longer as previewed: nothing was written.

    ``preview`` is the fresh preview (a :class:`chatwright.approvals.Preview`).
    """

    http_status = 409

    def __init__(self, message: str, preview: object = None, action: object = None) -> None:
        self.preview = preview
        self.action = action
        """The pending action asked again (a :class:`chatwright.approvals.PendingAction`)."""
        super().__init__(message)


class UndoConflictError(ChatwrightError):
    """An undo would overwrite rows changed since the turn wrote them: nothing was reverted."""

    http_status = 409


class ToolChangedError(ChatwrightError):
    """A tool row changed since the caller saw it (its digest differs): nothing was stored."""

    http_status = 409


class AlreadyExistsError(ChatwrightError):
    """A row with the same unique name already exists."""

    http_status = 409


class ToolNameTakenError(AlreadyExistsError):
    """A tool row's name that another row of the agent has (a disabled row keeps its
    name), with the ways to free it.

    :meth:`worded` gives the message with another first way, for a caller that
    has one of its own (a copy can take a name of its own).
    """

    def __init__(self, agent_name: str, name: str, row_id: int, *, active: bool = True) -> None:
        self.agent_name = agent_name
        self.name = name
        self.row_id = row_id
        self.active = active
        super().__init__(self.worded("pick another name"))

    def worded(self, first_way: str) -> str:
        """The message, ``first_way`` offered before renaming or removing the row."""
        state = "" if self.active else ", disabled"
        return (
            f"agent {self.agent_name!r} already has a tool named {self.name!r} "
            f"(row {self.row_id}{state}); {first_way}, rename that row with "
            f"`chatwright tools set {self.row_id} --name NEW`, or remove it with "
            f"`chatwright tools remove {self.row_id}`"
        )


class InvalidInputError(ChatwrightError):
    """Input from a user or a client failed validation."""

    http_status = 422


class AgentChangedError(InvalidInputError):
    """A tool was about to act for a turn whose agent, or one of its tool rows, changed
    since the turn started (an approval made required, a row disabled or removed, the
    agent deleted): the call was not run, and the model is told so."""

    http_status = 409


class TooLargeError(ChatwrightError):
    """A message or a request is larger than the settings allow."""

    http_status = 413


class ModelError(ChatwrightError):
    """The chat model failed during a turn (provider error, timeout, bad reply)."""

    http_status = 502


class TurnTimeoutError(ModelError):
    """A turn ran past its time limit and was cancelled; the human message is kept."""

    http_status = 504


class BudgetExceededError(ChatwrightError):
    """The user's token budget is spent (or would be by concurrent turns): no model ran.

    ``resets_at`` is when the spent budget resets (an aware UTC datetime), or
    None when only another running turn stands in the way; ``retry_after`` is
    the seconds to wait before trying again.

    The message speaks to the user whose budget it is. Where it names them, the
    text given holds ``{your}`` or ``{yours}``, so that :meth:`about_them` can say
    the same to someone acting for them (an operator deciding a call of theirs).
    """

    http_status = 429

    def __init__(self, text: str, *, resets_at: object = None, retry_after: float = 1.0) -> None:
        self.text = text
        self.resets_at = resets_at
        self.retry_after = retry_after
        super().__init__(_owned(text, "your", "yours"))

    def about_them(self) -> str:
        """The message as said of the user to someone else ("their budget")."""
        return _owned(self.text, "their", "theirs")

    def add(self, more: str) -> None:
        """Add ``more`` to the end of the message (worded like ``text``)."""
        self.text += more
        self.args = (_owned(self.text, "your", "yours"),)


def _owned(text: str, your: str, yours: str) -> str:
    return text.replace("{your}", your).replace("{yours}", yours)


class ModelConfigError(ChatwrightError):
    """A model cannot be created: unknown provider, missing package or API key."""

    http_status = 503


def one_line(exc: BaseException) -> str:
    """An exception as one line of text for a user or a log.

    A :class:`ChatwrightError`'s message is written for users and shown as it
    is; any other exception is prefixed with its class name, since its message
    alone ("0", "'x'") often says nothing.
    """
    text = " ".join(str(exc).split())
    if isinstance(exc, ChatwrightError) and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def not_utf8(source: str, exc: UnicodeDecodeError) -> str:
    """What to tell a user whose file (``source``) is not UTF-8 text."""
    return f"{source} is not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8"
