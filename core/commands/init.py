"""``chatwright init``: the settings file, the schema and, on request, an example.

Examples come from plugins through ``register_examples``; this module says
what one is (:class:`Example`) and installs the one asked for.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import click

from chatwright import hookimpl
from chatwright.cli import AppContext, pass_app
from chatwright.errors import ChatwrightError, PluginError, one_line

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
# Model given to agents created without one (provider:name).
{default}
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


def config_text(model: str | None, url_source: str | None = None) -> str:
    """The settings file ``init`` writes.

    :param model: written as models.default when given.
    :param url_source: where the database URL in use was given (``--database``,
        the environment); then no URL is written, rather than the SQLite default.
    """
    # json.dumps of a str is a valid TOML basic string.
    line = f"default = {json.dumps(model)}" if model else '# default = "openai:gpt-4o-mini"'
    text = CONFIG_TEMPLATE.format(default=line)
    if url_source is not None:
        text = text.replace(DEFAULT_URL_LINES, URL_ELSEWHERE_LINES.format(source=url_source))
    return text


# The example `init --example` installs; the bundled `example` plugin registers it.
DEFAULT_EXAMPLE = "assistant"


class Example(Protocol):
    """What ``register_examples`` registers: a set-up that installs itself."""

    @property
    def summary(self) -> str:
        """What it sets up, for messages (``agent 'assistant'``)."""
        ...

    @property
    def model(self) -> str | None:
        """The model spec the example's agent gets when models.default is not set.

        A settings file that ``init --example`` creates names it as models.default,
        so that agents added later get it too; None for an example with no agent.
        """
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
    registration = app.plugins.get("register_examples", example) if example is not None else None
    chosen: Example | None = registration.value if registration is not None else None
    path = Path(app.config) if app.config else Path("chatwright.toml")
    if not path.exists():
        # An example written before Example had a model names none.
        model = getattr(chosen, "model", None) if chosen is not None else None
        path.write_text(config_text(model, _url_source(app)), encoding="utf-8")
        click.echo(f"Wrote {path}")
        app.config = str(path)

    async def work(runtime: Runtime) -> None:
        storage = runtime.storage
        revision = await storage.current_revision()
        click.echo(f"Database {storage.description} is at revision {revision}")
        if chosen is None:
            return
        assert registration is not None
        broken = (
            f"example {registration.name!r} (plugin {registration.plugin!r}) is broken: its "
            "install {}; disable the plugin with CHATWRIGHT_DISABLE_PLUGINS="
            f"{registration.plugin} and report it to its author"
        )
        try:
            created = await chosen.install(runtime)
        except ChatwrightError:
            raise  # the example's own words (a backend that cannot create tables)
        except Exception as exc:
            raise PluginError(broken.format(f"failed: {one_line(exc)}")) from exc
        if not isinstance(created, list | tuple) or not all(isinstance(c, str) for c in created):
            raise PluginError(
                broken.format(
                    f"returned {_shown(created)}, not a list of what it created (strings)"
                )
            )
        if created:
            click.echo("Created " + ", ".join(created))
        else:
            click.echo(f"The example ({chosen.summary}) is already there; left as it is")

    app.run(work, upgrade=True)


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:59] + "…"


@hookimpl
def register_commands(cli: click.Group) -> None:
    cli.add_command(init)
