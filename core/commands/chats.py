"""``chatwright chats``: a user's past chats, and one chat's whole transcript.

Both read only. ``list`` pages through one user's chats, the most recently
active first; ``show`` prints a chat as it was stored: every message, each tool
call with its arguments and its result, the chat's summary where the messages
it covers end, and the tool calls still waiting for a decision. Text written by
a model or a tool is printed with its control characters escaped, so that it
cannot move the cursor or recolour the terminal.
"""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING, Any

import click

from chatwright import hookimpl
from chatwright.cli import AppContext, pass_app
from chatwright.commands import inputs
from chatwright.commands.output import echo_json, echo_table, escaped

if TYPE_CHECKING:
    from chatwright.conversations import ChatPage, Transcript
    from chatwright.runtime import Runtime
    from chatwright.stores import Message

LOCAL_USER = "local"
LONGEST_RESULT = 500
"""Most characters of a tool result ``show`` prints (``--json`` has them whole)."""


def _safe(text: str) -> str:
    """A message's text for the terminal: :func:`escaped`, its lines and tabs kept."""
    return escaped(text, "\t\n")


def _json(value: Any) -> str:
    return _safe(json.dumps(value, ensure_ascii=False, default=str))


@click.group()
def chats() -> None:
    """List a user's past chats and show one chat's transcript."""


@chats.command("list")
@click.option("--user", default=LOCAL_USER, show_default=True, help="Whose chats.")
@click.option("--agent", type=inputs.AGENT, help="Only chats with this agent.")
@click.option(
    "--limit",
    type=int,
    default=20,
    show_default=True,
    help="Most chats to list (1 to 100).",
)
@click.option(
    "--before",
    type=int,
    metavar="CURSOR",
    help="The next page: the cursor the previous page printed.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON: chats and the next cursor.")
@pass_app
def chats_list(
    app: AppContext,
    user: str,
    agent: str | None,
    limit: int,
    before: int | None,
    as_json: bool,
) -> None:
    """List the user's chats, the most recently active first.

    Each chat shows its first message as a title, how many messages it holds and
    when it was last used; `chatwright chats show CHAT_ID` prints one whole.
    """
    from chatwright.conversations import check_page, list_chats
    from chatwright.stores import as_dict

    inputs.name("--user", user)
    check_page(limit, before, limit_name="--limit", before_name="--before")

    async def work(runtime: Runtime) -> ChatPage:
        return await list_chats(runtime.storage, user, agent_name=agent, limit=limit, before=before)

    page = app.run(work)
    if as_json:
        echo_json({"chats": [as_dict(c) for c in page.chats], "next": page.next})
        return
    if not page.chats:
        click.echo("No chats." if before is None else "No older chats.")
    echo_table(
        ["chat", "agent", "messages", "last activity", "title"],
        [
            (
                c.chat_id,
                c.agent_name,
                c.messages,
                c.last_activity.isoformat(timespec="seconds"),
                _safe(c.title),
            )
            for c in page.chats
        ],
    )
    if page.next is not None:
        click.echo(f"(older chats: --before {page.next})", err=True)


@chats.command("show")
@click.argument("chat_id", type=click.UUID, metavar="CHAT_ID")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def chats_show(app: AppContext, chat_id: uuid.UUID, as_json: bool) -> None:
    """Print a chat: its messages with tool calls and results, summary and pending calls."""
    from chatwright.conversations import transcript

    async def work(runtime: Runtime) -> Transcript:
        return await transcript(runtime.storage, chat_id)

    found = app.run(work)
    if as_json:
        echo_json(transcript_dict(found))
        return
    n = len(found.messages)
    click.echo(
        f"Chat {found.chat_id} with agent {_safe(found.agent_name)!r}, "
        f"user {_safe(found.user_id)!r}: {n} message{'' if n == 1 else 's'}"
    )
    summary = found.summary
    for message in found.messages:
        if summary is not None and message.id > summary.through_id:
            _echo_summary(found)
            summary = None
        _echo_message(message)
    if summary is not None:
        _echo_summary(found)
    if found.pending:
        from chatwright.commands.pending import action_lines

        click.echo("Waiting for a decision (`chatwright pending approve|deny ID`):")
        for action in found.pending:
            for line in action_lines(action):
                click.echo(f"  {line}")


def transcript_dict(found: Transcript) -> dict[str, Any]:
    """A transcript as JSON: messages as stored (LangChain message dicts), summary, pending."""
    from chatwright.stores import as_dict

    return {
        "chat_id": str(found.chat_id),
        "user_id": found.user_id,
        "agent_name": found.agent_name,
        "messages": [as_dict(m) for m in found.messages],
        "summary": as_dict(found.summary) if found.summary is not None else None,
        "pending": [a.as_dict() for a in found.pending],
    }


def _echo_summary(found: Transcript) -> None:
    assert found.summary is not None
    n = found.summary.messages
    click.echo(f"[Summary of the {n} message{'' if n == 1 else 's'} before this point]")
    click.echo(_safe(found.summary.text))
    click.echo("[End of summary]")


def _echo_message(message: Message) -> None:
    from chatwright.conversations import message_text

    data = message.content.get("data")
    data = data if isinstance(data, dict) else {}
    when = message.created_at.isoformat(timespec="seconds")
    text = _safe(message_text(message.content))
    if message.role == "tool":
        status = data.get("status", "success")
        shown = text if len(text) <= LONGEST_RESULT else text[: LONGEST_RESULT - 3] + "..."
        mark = "✗" if status == "error" else "←"
        click.echo(f"  {mark} {_safe(str(data.get('name') or 'tool'))} ({status}): {shown}")
        return
    if text or message.role != "ai":
        click.echo(f"[{when}] {message.role}: {text}")
    for call in data.get("tool_calls") or []:
        if isinstance(call, dict):
            click.echo(f"  → {_safe(str(call.get('name')))} {_json(call.get('args'))}")


@hookimpl
def register_commands(cli: click.Group) -> None:
    cli.add_command(chats)
