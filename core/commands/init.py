"""``chatwright init``: the settings file, the schema and, on request, an example.

Examples come from plugins through ``register_examples``; this module says
what one is (:class:`Example`) and installs the one asked for.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

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

DEFAULT_URL_LINES = """\
# SQLite file in this directory; postgresql://user@host:5432/dbname for PostgreSQL.
url = "sqlite+aiosqlite:///chatwright.db"
"""
URL_ELSEWHERE_LINES = """\
# url is not written here: it was given by {source} when this file was
# written (a URL may hold a password). Set it here or keep giving it there.
"""


def _url_source(app: AppContext) -> str | None:
    """Where storage.url comes from when not from this file: --database or the environment."""
    import os

    if app.overrides.get("storage", {}).get("url"):
        return "--database"
    if any(name.upper() == "CHATWRIGHT_STORAGE__URL" for name in os.environ):
        return "CHATWRIGHT_STORAGE__URL"
    return None


def config_text(app: AppContext) -> str:
    """The new settings file: the SQLite default, or no URL when the one in use is given."""
    source = _url_source(app)
    lines = DEFAULT_URL_LINES if source is None else URL_ELSEWHERE_LINES.format(source=source)
    return CONFIG_TEMPLATE.replace(DEFAULT_URL_LINES, lines)


# The example `init --example` installs; the bundled `example` plugin registers it.
DEFAULT_EXAMPLE = "assistant"


class Example(Protocol):
    """What ``register_examples`` registers: a set-up that installs itself."""

    @property
    def summary(self) -> str:
        """What it sets up, for messages (``agent 'assistant'``)."""
        ...

    async def install(self, runtime: Runtime) -> list[str]:
        """Create what is missing of the example; return what was created, for the user."""
        ...


@click.command()
@click.option(
    "--example",
    "example",
    is_flag=False,
    flag_value=DEFAULT_EXAMPLE,
    default=None,
    metavar="[NAME]",
    help="Also install an example; alone, the 'assistant' agent and its tables.",
)
@pass_app
def init(app: AppContext, example: str | None) -> None:
    """Create the settings file and the database schema (safe to run again)."""
    # Before anything is written: a blocked or missing example plugin is one clear error.
    chosen: Example | None = (
        app.plugins.get("register_examples", example).value if example is not None else None
    )
    path = Path(app.config) if app.config else Path("chatwright.toml")
    if not path.exists():
        path.write_text(config_text(app), encoding="utf-8")
        click.echo(f"Wrote {path}")
        app.config = str(path)

    async def work(runtime: Runtime) -> None:
        storage = runtime.storage
        revision = await storage.current_revision()
        click.echo(f"Database {storage.description} is at revision {revision}")
        if chosen is None:
            return
        created = await chosen.install(runtime)
        if created:
            click.echo("Created " + ", ".join(created))
        else:
            click.echo(f"The example ({chosen.summary}) is already there; left as it is")

    app.run(work, upgrade=True)


@hookimpl
def register_commands(cli: click.Group) -> None:
    cli.add_command(init)
