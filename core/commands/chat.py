"""``chatwright chat``: a conversation with an agent in the terminal.

When a turn stops at tool calls that wait for approval, an interactive chat on
a terminal shows each call with the rows it would change and asks; with ``-m``
or without a terminal to ask on, it prints them with the commands that decide
them (``chatwright pending approve|deny``) and ends.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click

from chatwright import hookimpl
from chatwright.cli import AppContext, for_terminal, pass_app
from chatwright.commands import inputs
from chatwright.errors import (
    AlreadyDecidedError,
    ApprovalPendingError,
    ChatwrightError,
    InvalidInputError,
    NotFoundError,
    PreviewChangedError,
    UnknownAgentError,
)
from chatwright.message_limits import check_message  # light: no settings or pydantic import

if TYPE_CHECKING:
    from chatwright.runtime import Runtime, Turn
    from chatwright.stores import ChatSummary, Message


LOCAL_USER = "local"


def show_step(message: Any, *, err: bool = True) -> None:
    """One line per tool call or tool result, as they happen."""
    from langchain_core.messages import AIMessage, ToolMessage

    if isinstance(message, AIMessage):
        for call in message.tool_calls:
            args = json.dumps(call["args"], ensure_ascii=False)
            click.secho(f"  → {call['name']} {args}", fg="cyan", err=err)
    elif isinstance(message, ToolMessage):
        text = message.text
        shown = text if len(text) <= 200 else text[:197] + "..."
        colour = "red" if message.status == "error" else "green"
        click.secho(f"  ← {shown}", fg=colour, err=err)


async def _pick_agent(runtime: Runtime, name: str | None) -> str:
    if name is not None:
        if await runtime.storage.agents.get(name) is None:
            raise UnknownAgentError(name)
        return name
    names = [a.name for a in await runtime.storage.agents.list()]
    if len(names) == 1:
        return names[0]
    if "assistant" in names:
        return "assistant"
    if not names:
        raise NotFoundError("there are no agents; create one with `chatwright init --example`")
    raise InvalidInputError(f"which agent? give one of: {', '.join(names)}")


def _replay(messages: Sequence[Message], summary: ChatSummary | None = None) -> None:
    """The recent messages, dimmed; the chat's summary marked where what it covers ends."""
    from chatwright.history import parsed

    started = False
    for row in messages:
        if summary is not None and row.id > summary.through_id:
            _show_summary(summary)
            summary = None
        message = parsed(row)
        started = started or (message is not None and message.type == "human")
        if message is None or not started:
            continue
        if message.type == "human":
            click.secho(f"you> {message.text}", dim=True)
        elif message.type == "ai" and message.text:
            click.secho(message.text, dim=True)
    if summary is not None:
        _show_summary(summary)


def _show_summary(summary: ChatSummary) -> None:
    n = summary.messages
    click.secho(f"[Summary of earlier messages ({n} message{'' if n == 1 else 's'})]", bold=True)
    click.secho(summary.text, dim=True)
    click.secho("[End of summary]", bold=True)


@click.command()
@click.argument("agent", type=inputs.AGENT, required=False)
@click.option("--chat-id", type=click.UUID, help="Resume this chat (default: your latest one).")
@click.option("--new", "new_chat", is_flag=True, help="Start a new chat.")
@click.option("--user", default=LOCAL_USER, show_default=True, help="Chat as this user id.")
@click.option(
    "-m", "--message", type=inputs.TEXT, help="Send one message, print the reply and exit."
)
@click.option(
    "--usage", "show_usage", is_flag=True, help="After each reply, the tokens it spent (stderr)."
)
@pass_app
def chat(
    app: AppContext,
    agent: str | None,
    chat_id: uuid.UUID | None,
    new_chat: bool,
    user: str,
    message: str | None,
    show_usage: bool,
) -> None:
    """Chat with an agent in the terminal; history is kept in the database.

    Tool calls are shown as they happen (on standard error). With -m the reply
    alone goes to standard output, for scripts.

    A call that needs approval shows the rows it would change and asks
    "Approve? [y/N]" in a terminal; with -m, or with input from a pipe, the
    calls and the `chatwright pending` commands that decide them are printed.
    """
    if chat_id is not None and new_chat:
        raise click.UsageError("give --chat-id or --new, not both")
    # The user ids `users export` and `users erase` take: nothing is stored under another.
    inputs.name("--user", user)
    if message is not None:
        # The rule the HTTP API applies, before a session is opened for nothing.
        check_message(app.settings, message)

    async def work(runtime: Runtime) -> None:
        from chatwright.conversations import owner_lost

        name = await _pick_agent(runtime, agent)
        storage = runtime.storage
        if (
            chat_id is not None
            and await storage.sessions.chat_owner(chat_id) is None
            and not await owner_lost(storage, user, chat_id, name)
        ):
            # The API lets clients name new chats; here a typo must not start one silently.
            raise NotFoundError(
                f"no chat {chat_id}; leave out --chat-id to resume your latest chat, or use --new"
            )
        session = await storage.sessions.open(
            user, name, chat_id=uuid.uuid4() if new_chat else chat_id
        )

        async def show(m: Any) -> None:
            show_step(m)

        currency = runtime.settings.usage.currency if show_usage else None

        try:
            if message is not None:
                try:
                    turn = await runtime.chat(user, name, session.chat_id, message, on_message=show)
                except ApprovalPendingError as exc:
                    raise ApprovalPendingError(
                        f"{exc}: see `chatwright pending list --chat {session.chat_id}`",
                        exc.actions,
                    ) from None
                _answer(turn, currency)
                return
            await _interactive(runtime, user, name, session.chat_id, show, currency)
        finally:
            from chatwright.sessions import deactivate

            await deactivate(runtime, user, session.id)

    app.run(work)


async def _read_line(prompt: str) -> str:
    """``input(prompt)`` without holding up the event loop, and without being waited for.

    ``asyncio.to_thread`` would run it in the loop's default executor: Ctrl-C
    (SIGINT, which ``asyncio.run`` turns into cancelling the command's task)
    would never reach the ``input()`` blocked there, and ``asyncio.run`` would
    then wait for that thread, until the user pressed Enter. A daemon thread is
    not waited for; its result, if it ever comes, is dropped.
    """
    import asyncio
    import contextlib
    import threading

    loop = asyncio.get_running_loop()
    future: asyncio.Future[str] = loop.create_future()

    def settle(result: str | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result or "")

    def read() -> None:
        try:
            line, error = input(prompt), None
        except BaseException as exc:  # EOFError, KeyboardInterrupt, an I/O error
            line, error = None, exc
        # The loop may be closed: nobody waits for the line any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(settle, line, error)

    threading.Thread(target=read, name="chatwright-input", daemon=True).start()
    return await future


def _check_line(line: str) -> None:
    """What `-m` refuses, refused in a line read from standard input too.

    A byte that is not UTF-8 comes in as a lone surrogate (standard input is read
    with ``surrogateescape``) and a NUL as itself: both would be stored as U+FFFD,
    and what a tool wrote from them with it, instead of what the user meant.
    """
    inputs.text("your message", line)
    if "\x00" in line:
        raise InvalidInputError(
            "your message holds a NUL character, which cannot be stored; remove it"
        )


async def _interactive(
    runtime: Runtime,
    user: str,
    agent: str,
    chat_id: uuid.UUID,
    show: Any,
    currency: str | None = None,
) -> None:
    import asyncio
    import contextlib
    import sys

    # Approval needs someone to answer: piped input is a script, not a person.
    ask = sys.stdin.isatty()

    with contextlib.suppress(ImportError):
        import readline  # noqa: F401  (line editing and history for input())
    recent = await runtime.storage.messages.window(user, chat_id, 10)
    summary = await runtime.storage.summaries.get(user, chat_id)
    click.echo(f"Chat {chat_id} with {agent!r} as {user!r}. Ctrl-D or 'exit' to leave.")
    _replay(recent, summary)
    waiting = await _still_waiting(runtime, user, chat_id)
    if waiting is not None:
        # Left waiting by an earlier run: those come first.
        click.echo("This chat waits for decisions on earlier calls.")
        if not ask:
            _answer(waiting)
            return
        if not await _ask_until_decided(runtime, user, waiting, show, currency):
            return
    while True:
        try:
            line = await _read_line("you> ")
        except (EOFError, KeyboardInterrupt):
            click.echo()
            return
        except asyncio.CancelledError:  # Ctrl-C: the chat ends (the session is closed)
            click.echo()
            raise
        if line.strip() in {"exit", "quit", "/exit", "/quit"}:
            return
        if not line.strip():
            continue
        try:
            check_message(runtime.settings, line)
            _check_line(line)
            turn = await runtime.chat(user, agent, chat_id, line, on_message=show)
        except ApprovalPendingError as exc:
            # Another process stopped a turn of this chat meanwhile.
            click.echo("Your message was not sent: this chat waits for decisions on other calls.")
            turn = _waiting_turn(chat_id, exc)
        except ChatwrightError as exc:
            click.secho(f"Error: {for_terminal(str(exc))}", fg="red", err=True)
            continue
        if not ask:
            _answer(turn, currency)
            if turn.status == "approval_required":
                return  # nothing can be said to the chat until they are decided
            continue
        _reply(turn, currency)
        if not await _ask_until_decided(runtime, user, turn, show, currency):
            return


def _reply(turn: Turn, currency: str | None = None) -> None:
    """A turn's reply; with a ``currency`` (``--usage``), what it spent, on standard error."""
    if turn.response:
        click.echo(turn.response)
    if currency is not None:
        from chatwright.commands.usage import usage_line

        click.secho(usage_line(turn.usage, currency), dim=True, err=True)


def _answer(turn: Turn, currency: str | None = None) -> None:
    """A turn's reply; when it stopped for approval, the calls and how to decide them."""
    from chatwright.commands.pending import echo_waiting

    _reply(turn, currency)
    if turn.status == "approval_required" and turn.pending:
        echo_waiting(turn.pending)


def _waiting_turn(chat_id: uuid.UUID, exc: ApprovalPendingError) -> Turn:
    from chatwright.approvals import PendingAction
    from chatwright.runtime import Turn

    actions = [a for a in exc.actions if isinstance(a, PendingAction)]
    return Turn(chat_id=chat_id, response="", status="approval_required", pending=actions)


async def _still_waiting(runtime: Runtime, user: str, chat_id: uuid.UUID) -> Turn | None:
    """The chat's calls that still wait for a decision, as a stopped turn; None if none."""
    from datetime import UTC, datetime

    from chatwright.runtime import Turn

    now = datetime.now(UTC)
    actions = [a for a in await runtime.pending(user, chat_id=chat_id) if not a.expired(now)]
    if not actions:
        return None
    return Turn(chat_id=chat_id, response="", status="approval_required", pending=actions)


async def _ask_until_decided(
    runtime: Runtime, user: str, turn: Turn, show: Any, currency: str | None = None
) -> bool:
    """Ask about each waiting call, one at a time, until the turn is done.

    A decision continues the turn once the chat has no other waiting call, and
    the continuation may stop at new calls: those are asked about in turn.
    Ctrl-D or Ctrl-C at the question is no answer: the calls stay waiting
    (to be decided later) and the chat ends, which is when False is returned.
    """
    import asyncio

    from chatwright.commands.pending import action_lines

    while turn.status == "approval_required" and turn.pending:
        action = turn.pending[0]
        click.echo("The agent wants to run (nothing is written until you approve):")
        for text in action_lines(action):
            click.echo(f"  {text}")
        try:
            reply = await _read_line("Approve? [y/N] ")
        except (EOFError, KeyboardInterrupt, asyncio.CancelledError) as exc:
            click.echo()
            from chatwright.commands.pending import echo_waiting

            echo_waiting(turn.pending)
            if isinstance(exc, asyncio.CancelledError):
                raise  # Ctrl-C: the calls stay waiting and the chat ends
            return False
        approve = reply.strip().lower() in {"y", "yes"}
        try:
            turn = await runtime.decide(user, action.id, approve, decided_by=user, on_message=show)
        except (PreviewChangedError, AlreadyDecidedError) as exc:
            click.secho(f"Error: {exc}", fg="red", err=True)
            waiting = await runtime.pending(user, chat_id=action.chat_id)
            turn.pending = waiting
            turn.status = "approval_required" if waiting else "done"
            continue
        except ChatwrightError as exc:
            click.secho(f"Error: {for_terminal(str(exc))}", fg="red", err=True)
            return True
        if not approve:
            click.echo("Denied; the agent is told you declined.")
        _reply(turn, currency)
    return True


@hookimpl
def register_commands(cli: click.Group) -> None:
    cli.add_command(chat)
