"""``chatwright init``: the settings file, the schema and, on request, the example."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from chatwright import hookimpl
from chatwright.cli import AppContext, pass_app

if TYPE_CHECKING:
    from chatwright.runtime import Runtime


CONFIG_TEMPLATE = """\
# chatwright configuration. Every key can also be set with an environment
# variable: [storage] url -> CHATWRIGHT_STORAGE__URL. See `chatwright config show`.

[storage]
backend = "sql"
# SQLite file in this directory; postgresql://user@host:5432/dbname for PostgreSQL.
url = "sqlite+aiosqlite:///chatwright.db"

[models]
# Model given to agents created without one. `offline` needs no key and no network.
default = "offline:assistant"
"""


@click.command()
@click.option(
    "--example", is_flag=True, help="Also create the example tables and the 'assistant' agent."
)
@pass_app
def init(app: AppContext, example: bool) -> None:
    """Create the settings file and the database schema (safe to run again)."""
    path = Path(app.config) if app.config else Path("chatwright.toml")
    if not path.exists():
        path.write_text(CONFIG_TEMPLATE, encoding="utf-8")
        click.echo(f"Wrote {path}")
        app.config = str(path)

    async def work(runtime: Runtime) -> None:
        storage = runtime.storage
        revision = await storage.current_revision()
        click.echo(f"Database {storage.description} is at revision {revision}")
        if not example:
            return
        from chatwright import example as seed_example

        created = await seed_example.seed(storage, runtime.settings.models.default)
        if created:
            click.echo("Created " + ", ".join(created))
        else:
            click.echo(
                f"The example (agent {seed_example.AGENT!r}) is already there; left as it is"
            )

    app.run(work, upgrade=True)


@hookimpl
def register_commands(cli: click.Group) -> None:
    cli.add_command(init)
