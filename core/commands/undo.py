"""``chatwright undo``: revert the writes of a chat's turn, as its owner would.

The chat's owner is looked up (an administrator names only the chat); the
runtime does the rest in one transaction, audits it and notes it in the chat.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import click

from chatwright import hookimpl
from chatwright.cli import AppContext, pass_app
from chatwright.errors import NotFoundError

if TYPE_CHECKING:
    from chatwright.runtime import Runtime


@click.command()
@click.argument("chat_id", type=click.UUID, metavar="CHAT_ID")
@click.option(
    "--turn",
    "turn_id",
    type=click.UUID,
    help="Undo this turn (default: the latest turn of the chat with writes not yet undone).",
)
@pass_app
def undo(app: AppContext, chat_id: uuid.UUID, turn_id: uuid.UUID | None) -> None:
    """Revert the rows a chat's turn wrote, all or nothing.

    Refused, naming the rows, when any of them changed since the turn wrote
    them; nothing is reverted then.
    """
    from chatwright.commands.pending import change_line

    async def work(runtime: Runtime) -> None:
        owner = await runtime.storage.sessions.chat_owner(chat_id)
        if owner is None:
            raise NotFoundError(
                f"no chat {chat_id}; `chatwright chats list --user USER` lists a user's chats"
            )
        user = owner[0]
        report = await runtime.undo(user, chat_id, turn_id=turn_id)
        count = len(report.changes)
        entries = ", ".join(str(e) for e in report.entries)
        click.echo(
            f"Undid turn {report.turn_id} of chat {chat_id} (user {user!r}): "
            f"{count} row change{'' if count == 1 else 's'} reverted "
            f"(audit entr{'y' if len(report.entries) == 1 else 'ies'} {entries})."
        )
        for change in report.changes:
            click.echo(f"  {change_line(change)}")

    app.run(work)


@hookimpl
def register_commands(cli: click.Group) -> None:
    cli.add_command(undo)
