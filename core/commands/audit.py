"""``chatwright audit list``: the log of every write tools made, newest first.

An administrator's view over the database: every user's entries unless
``--user`` narrows it. The log itself is append-only (see docs/tools.md); this
command only reads it.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import click

from chatwright import hookimpl
from chatwright.cli import AppContext, pass_app
from chatwright.commands import inputs
from chatwright.commands.output import echo_list

if TYPE_CHECKING:
    from chatwright.runtime import Runtime

MOST_ENTRIES = 1000
HEADERS = (
    "id",
    "at",
    "user",
    "agent",
    "chat",
    "tool",
    "operation",
    "table",
    "rows",
    "outcome",
    "approval",
)


@click.group()
def audit() -> None:
    """Read the audit log of the writes tools made."""


@audit.command("list")
@click.option("--user", help="Only this user's entries.")
@click.option(
    "--since",
    metavar="TIME",
    help="Only entries from then on: an ISO 8601 date or time (UTC unless it says), "
    "or an age such as 30m, 2h, 1d.",
)
@click.option("--chat", "chat_id", type=click.UUID, help="Only this chat's entries.")
@click.option(
    "--limit",
    type=click.IntRange(1, MOST_ENTRIES),
    default=50,
    show_default=True,
    help="Most entries to print.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON, with the rows' before/after.")
@pass_app
def audit_list(
    app: AppContext,
    user: str | None,
    since: str | None,
    chat_id: uuid.UUID | None,
    limit: int,
    as_json: bool,
) -> None:
    """List audit entries, newest first: who wrote what, through which tool, approved by whom."""
    if user is not None:
        inputs.name("--user", user)
    after = inputs.since(since) if since is not None else None

    async def work(runtime: Runtime) -> list[dict[str, Any]]:
        entries = await runtime.storage.audit.list(user, since=after, chat_id=chat_id, limit=limit)
        return [e.as_dict(images=as_json) for e in entries]

    echo_list(
        app.run(work),
        as_json=as_json,
        empty="No audit entries.",
        headers=HEADERS,
        cells=lambda e: (
            e["id"],
            (e["at"] or "")[:19],
            e["user_id"],
            e["agent_name"],
            e["chat_id"],
            e["tool_name"],
            e["operation"],
            e["table"],
            ",".join(str(r) for r in e["row_ids"]) or "-",
            e["outcome"],
            _approval(e),
        ),
    )


def _approval(entry: dict[str, Any]) -> str:
    approval = entry["approval"] or "-"
    by = entry["decided_by"]
    return f"{approval} by {by}" if by and approval not in {"auto", "-"} else approval


@hookimpl
def register_commands(cli: click.Group) -> None:
    cli.add_command(audit)
