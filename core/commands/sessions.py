"""``chatwright sessions``: list chat sessions, run one sweeper pass."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from chatwright import hookimpl
from chatwright.cli import AppContext, pass_app
from chatwright.commands import inputs
from chatwright.commands.output import echo_json, echo_list, yes_no

if TYPE_CHECKING:
    from chatwright.runtime import Runtime


@click.group()
def sessions() -> None:
    """List chat sessions and deactivate idle ones."""


@sessions.command("list")
@click.option("--user", help="Only this user's sessions.")
@click.option("--active/--inactive", "active", default=None, help="Only active (or inactive) ones.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def sessions_list(app: AppContext, user: str | None, active: bool | None, as_json: bool) -> None:
    """List sessions, most recently used first."""
    from chatwright.stores import as_dict

    if user is not None:
        inputs.name("--user", user)

    async def work(runtime: Runtime) -> list[dict[str, Any]]:
        return [as_dict(s) for s in await runtime.storage.sessions.list(user, active=active)]

    echo_list(
        app.run(work),
        as_json=as_json,
        empty="No sessions.",
        headers=["id", "chat", "user", "agent", "active", "last seen"],
        cells=lambda r: (
            r["id"],
            r["chat_id"],
            r["user_id"],
            r["agent_name"],
            yes_no(r["is_active"]),
            r["updated_at"][:19],
        ),
    )


@sessions.command("sweep")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (counts; ids with --verbose).")
@click.option(
    "-v", "--verbose", is_flag=True, help="Also list the id of every session deactivated."
)
@pass_app
def sessions_sweep(app: AppContext, as_json: bool, verbose: bool) -> None:
    """Run one sweeper pass: deactivate sessions idle longer than sessions.idle_timeout.

    Prints a one-line summary; the ids of the sessions it deactivated only with
    --verbose, since one pass may deactivate millions of them.
    """
    from chatwright.sessions import sweep

    async def work(runtime: Runtime) -> dict[str, Any]:
        report = await sweep(runtime, keep_ids=verbose)
        result: dict[str, Any] = {
            "deactivated": report.deactivated,
            "batches": report.batches,
            "seconds": round(report.seconds, 3),
            "active_keys": report.active_keys,
            "evicted": [[*k, reason] for k, reason in report.evicted],
        }
        if report.ids is not None:
            result["ids"] = [str(i) for i in report.ids]
        return result

    result = app.run(work)
    if as_json:
        echo_json(result)
        return
    timeout = app.settings.sessions.idle_timeout
    click.echo(
        f"Deactivated {result['deactivated']} session(s) idle for over {timeout:g} s "
        f"in {result['seconds']:.2f} s ({result['batches']} batch(es)); "
        f"{result['active_keys']} (user, agent) pair(s) still have an active session; "
        f"{len(result['evicted'])} cached agent(s) evicted"
    )
    for session_id in result.get("ids", []):
        click.echo(f"  {session_id}")


@hookimpl
def register_commands(cli: click.Group) -> None:
    cli.add_command(sessions)
