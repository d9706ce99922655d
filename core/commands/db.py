"""``chatwright db``: schema migrations."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from chatwright import hookimpl
from chatwright.cli import AppContext, pass_app, run_async
from chatwright.commands.output import echo_json

if TYPE_CHECKING:
    from chatwright.runtime import Runtime


@click.group()
def db() -> None:
    """Manage the database schema."""


@db.command("upgrade")
@pass_app
def db_upgrade(app: AppContext) -> None:
    """Migrate the database to the newest schema revision."""

    async def work(runtime: Runtime) -> None:
        revision = await runtime.storage.current_revision()
        click.echo(f"Database {runtime.storage.description} is at revision {revision} (newest)")

    app.run(work, upgrade=True)


@db.command("current")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def db_current(app: AppContext, as_json: bool) -> None:
    """Show the schema revision of the database and the newest one.

    A SQLite database file that does not exist is reported, not created.
    """
    from chatwright.runtime import Runtime

    missing = app.missing_database()

    async def work() -> dict[str, Any]:
        storage = Runtime(app.settings, app.plugins).build_storage()
        try:
            # Connecting to a SQLite file that does not exist would create it.
            current = None if missing is not None else await storage.current_revision()
        finally:
            await storage.close()
        head = storage.head_revision()
        return {
            "database": storage.description,
            "exists": missing is None,
            "current": current,
            "head": head,
            "up_to_date": current == head,
        }

    info = run_async(work())
    if as_json:
        echo_json(info)
        return
    if missing is not None:
        click.echo(
            f"{info['database']}: no database yet (newest revision {info['head']}); create it "
            "with `chatwright init` or `chatwright db upgrade`"
        )
        return
    state = "up to date" if info["up_to_date"] else "run `chatwright db upgrade`"
    click.echo(f"{info['database']}: revision {info['current']} (newest {info['head']}; {state})")


@hookimpl
def register_commands(cli: click.Group) -> None:
    cli.add_command(db)
