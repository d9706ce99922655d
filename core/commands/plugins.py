"""``chatwright plugins``: what is loaded, the hooks each plugin implements, load errors."""

from __future__ import annotations

import click

from chatwright import hookimpl
from chatwright.cli import AppContext, pass_app
from chatwright.commands.output import echo_json, echo_table


@click.command("plugins")
@click.option("--all", "show_all", is_flag=True, help="Include the bundled plugins.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def plugins_command(app: AppContext, show_all: bool, as_json: bool) -> None:
    """List installed plugins, the hooks they implement and load errors."""
    infos = app.plugins.infos(include_bundled=show_all)
    if as_json:
        echo_json([i.as_dict() for i in infos])
        return
    if not infos:
        click.echo("No plugins installed (bundled ones are shown with --all).")
        return
    echo_table(
        ["name", "version", "bundled", "hooks / error"],
        [
            (i.name, i.version or "-", "yes" if i.bundled else "no", i.error or ", ".join(i.hooks))
            for i in infos
        ],
    )


@hookimpl
def register_commands(cli: click.Group) -> None:
    cli.add_command(plugins_command)
