"""``chatwright config``: the effective settings, secrets redacted."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

import click

from chatwright import hookimpl
from chatwright.cli import AppContext, pass_app
from chatwright.commands.output import echo_json

if TYPE_CHECKING:
    from chatwright.settings import Settings


@click.group()
def config() -> None:
    """Inspect settings."""


def _redacted(settings: Settings) -> dict[str, Any]:
    from chatwright.redaction import hide_url, redacted

    # SecretStr values (a plugin's too) dump as "**********" already.
    data: dict[str, Any] = redacted(settings.model_dump(mode="json"))
    # Even a storage.url that is not a URL at all may hold a password.
    data["storage"]["url"] = hide_url(settings.storage.url)
    return data


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _toml_value(value: Any) -> str:
    """``value`` as TOML, so that what ``config show`` prints reads back as a settings
    file: a mapping (``usage.prices``) is an inline table, without its unset keys."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        pairs = [
            f"{key if _BARE_KEY.fullmatch(key) else json.dumps(key)} = {_toml_value(item)}"
            for key, item in ((str(k), v) for k, v in value.items())
            if item is not None
        ]
        return "{ " + ", ".join(pairs) + " }" if pairs else "{}"
    return json.dumps("" if value is None else str(value))


@config.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def config_show(app: AppContext, as_json: bool) -> None:
    """Print the effective settings, secrets redacted."""
    settings = app.settings
    data = _redacted(settings)
    if as_json:
        echo_json(data)
        return
    source = settings.config_file or "none (defaults and environment)"
    click.echo(f"# settings file: {source}")
    plugin_sections = data.pop("plugins", {})
    sections = [*data.items(), *((f"plugins.{n}", v) for n, v in plugin_sections.items())]
    for section, values in sections:
        click.echo(f"\n[{section}]")
        for key, value in values.items():
            if value is None:
                click.echo(f"# {key} is not set")
            else:
                click.echo(f"{key} = {_toml_value(value)}")


@hookimpl
def register_commands(cli: click.Group) -> None:
    cli.add_command(config)
