"""``chatwright pending``: list, approve and deny tool calls that wait for a decision.

The commands act as an administrator over the database: ``list`` shows every
user's actions unless ``--user`` narrows it, and ``approve``/``deny`` find the
action's user themselves. How an action and its preview are shown lives here
too, since ``chatwright chat`` shows them the same way before it asks.
"""

from __future__ import annotations

import json
import shlex
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import click

from chatwright import hookimpl
from chatwright.cli import AppContext, pass_app
from chatwright.commands import inputs
from chatwright.commands.output import echo_json, escaped, printable
from chatwright.errors import BudgetExceededError, NotFoundError, PreviewChangedError

if TYPE_CHECKING:
    from chatwright.approvals import PendingAction, Preview, RowChange
    from chatwright.runtime import Runtime, Turn

DECIDED_BY = "cli"
"""Who decided, in the audit log, when ``--by`` names no one."""
LONGEST_VALUE = 60
MOST_LISTED = 100
"""Most actions ``pending list`` prints (the oldest first)."""


# -- how actions and row changes are shown ---------------------------------------------


def _json(value: Any) -> str:
    """JSON for a terminal: what a row or a model wrote cannot move the cursor or recolour.

    ``json.dumps`` escapes the C0 controls (ESC included); the rest a terminal acts on
    (DEL, the C1 controls, CSI among them, the line separators, the bidirectional
    controls) is escaped here.
    """
    return escaped(json.dumps(value, ensure_ascii=False, default=str))


def _value(value: Any) -> str:
    text = _json(value)
    return text if len(text) <= LONGEST_VALUE else text[: LONGEST_VALUE - 3] + "..."


def _columns(row: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={_value(v)}" for k, v in row.items())


def change_line(change: RowChange) -> str:
    """One row a write changes (or changed): its key, then what happens to it."""
    key = ", ".join(f"{k}={_value(v)}" for k, v in change.key.items()) or "(no key)"
    before, after = change.before, change.after
    if before is None and after is None:
        return f"{key}: nothing"
    if before is None:
        assert after is not None
        return f"{key}: new row {_columns(after)}"
    if after is None:
        return f"{key}: removed ({_columns(before)})"
    changed = [
        f"{column}: {_value(before.get(column))} → {_value(after.get(column))}"
        for column in dict.fromkeys([*before, *after])
        if before.get(column) != after.get(column)
    ]
    return printable(f"{key}: {'; '.join(changed) if changed else 'unchanged'}")


def preview_lines(preview: Preview) -> list[str]:
    """A preview as the user reads it: the operation, how many rows, each row listed."""
    rows = f"{preview.count} row{'' if preview.count == 1 else 's'}"
    shown = len(preview.rows)
    more = f" (showing {shown})" if shown < preview.count else ""
    lines = [printable(f"{preview.operation} on {preview.table}: {rows}{more}")]
    lines += [f"  {change_line(change)}" for change in preview.rows]
    return lines


def action_lines(action: PendingAction, *, owner: bool = False) -> list[str]:
    """A pending action: the call, whose it is, its state, then its preview indented."""
    args = _json(dict(action.args))
    who = f"user {action.user_id!r}, " if owner else ""
    state = (
        f"expires {action.expires_at.isoformat(timespec='seconds')}"
        if action.status == "pending"
        else action.status + (f" by {action.decided_by}" if action.decided_by else "")
    )
    # What a user or a model stored (a tool's name, who decided) is printed escaped.
    lines = [
        printable(f"{action.id}  {action.tool_name} {args}"),
        printable(f"    {who}agent {action.agent_name!r}, chat {action.chat_id}, {state}"),
    ]
    if action.preview is not None:
        lines += [f"    {line}" for line in preview_lines(action.preview)]
    return lines


def echo_waiting(actions: list[PendingAction], *, err: bool = False) -> None:
    """The actions a turn stopped at, and the commands that decide them."""
    click.echo("Waiting for approval (nothing was written yet):", err=err)
    for action in actions:
        for line in action_lines(action):
            click.echo(f"  {line}", err=err)
    for action in actions:
        click.echo(
            f"Decide with `chatwright pending approve {action.id}` "
            f"or `chatwright pending deny {action.id}`.",
            err=err,
        )


def echo_turn(turn: Turn) -> None:
    """What a decision led to: the model's reply, and any calls that wait again."""
    if turn.response:
        click.echo(turn.response)
    if turn.status == "approval_required" and turn.pending:
        echo_waiting(turn.pending)


# -- the commands -----------------------------------------------------------------------


@click.group()
def pending() -> None:
    """List, approve and deny tool calls waiting for a user's decision."""


@pending.command("list")
@click.option("--user", help="Only this user's actions.")
@click.option("--chat", "chat_id", type=click.UUID, help="Only this chat's actions.")
@click.option("--all", "every", is_flag=True, help="Also decided and expired actions.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def pending_list(
    app: AppContext, user: str | None, chat_id: uuid.UUID | None, every: bool, as_json: bool
) -> None:
    """List pending actions (every user's unless --user), oldest first, with their previews.

    At most 100 are listed; --user and --chat narrow the list.
    """
    if user is not None:
        inputs.name("--user", user)

    async def work(runtime: Runtime) -> list[PendingAction]:
        return await runtime.pending(
            user, chat_id=chat_id, status=None if every else "pending", limit=MOST_LISTED
        )

    actions = app.run(work)
    if as_json:
        echo_json([a.as_dict() for a in actions])
        return
    if not actions:
        click.echo("No pending actions." if not every else "No actions.")
        return
    for action in actions:
        for line in action_lines(action, owner=True):
            click.echo(line)
    if len(actions) == MOST_LISTED:
        click.echo(f"(the oldest {MOST_LISTED}; narrow the list with --user or --chat)", err=True)


def _decide(app: AppContext, action_id: uuid.UUID, approve: bool, by: str | None) -> None:
    from chatwright.commands.chat import show_step

    decided_by = inputs.name("--by", by) if by is not None else DECIDED_BY

    async def work(runtime: Runtime) -> None:
        action = await runtime.storage.pending.get(None, action_id)
        if action is None:
            raise NotFoundError(f"no pending action {action_id}; see `chatwright pending list`")

        async def show(message: Any) -> None:
            show_step(message)

        try:
            turn = await runtime.decide(
                action.user_id, action_id, approve, decided_by=decided_by, on_message=show
            )
        except BudgetExceededError as exc:
            # The message speaks to the user ("your budget"); this is their operator. Said
            # as it is (a user id is no template), with what the operator can do.
            said = exc.about_them()
            # "--" first for an id that would read as an option.
            quoted = shlex.quote(action.user_id)
            who = printable(f"-- {quoted}" if action.user_id.startswith("-") else quoted)
            raise click.ClickException(
                f"user {printable(repr(action.user_id))}: {said}. `chatwright budgets show "
                f"{who}` shows their budgets; `chatwright "
                f"budgets set {who} --daily N` (or --monthly N) changes them"
            ) from None
        except PreviewChangedError as exc:
            from chatwright.approvals import PendingAction

            if isinstance(exc.action, PendingAction):
                click.echo("The rows changed since the preview; the action waits again:")
                for line in action_lines(exc.action, owner=True):
                    click.echo(f"  {line}")
            raise
        verb = "Approved" if approve else "Denied"
        said = f"{verb} {action.tool_name} ({action_id}) of user {action.user_id!r}."
        click.echo(printable(said))
        echo_turn(turn)

    app.run(work)


@pending.command("approve")
@click.argument("action_id", type=click.UUID, metavar="ID")
@click.option("--by", help=f"Who decided, for the audit log (default: {DECIDED_BY}).")
@pass_app
def pending_approve(app: AppContext, action_id: uuid.UUID, by: str | None) -> None:
    """Run a pending call with its stored arguments and continue its chat's turn.

    When the rows it would change are no longer as previewed, nothing is
    written: the new preview is shown and the action waits again.
    """
    _decide(app, action_id, True, by)


@pending.command("deny")
@click.argument("action_id", type=click.UUID, metavar="ID")
@click.option("--by", help=f"Who decided, for the audit log (default: {DECIDED_BY}).")
@pass_app
def pending_deny(app: AppContext, action_id: uuid.UUID, by: str | None) -> None:
    """Refuse a pending call; the model is told the user declined and the turn goes on."""
    _decide(app, action_id, False, by)


@hookimpl
def register_commands(cli: click.Group) -> None:
    cli.add_command(pending)
