"""``chatwright config``: the effective settings, secrets redacted."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
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


def _plain(value: Any) -> Any:
    """A settings value as JSON can hold it, when pydantic cannot dump it as JSON (bytes
    that are not UTF-8 text): bytes as text where they are UTF-8, else as ``b'…'``."""
    from pydantic import BaseModel, SecretBytes, SecretStr
    from pydantic_core import to_jsonable_python

    if isinstance(value, SecretStr | SecretBytes):
        return str(value)  # "**********"
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return repr(value)
    if isinstance(value, BaseModel):
        fields = type(value).model_fields
        value = {name: getattr(value, name) for name, f in fields.items() if not f.exclude}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    return to_jsonable_python(value, fallback=repr)


def _dump(settings: Settings) -> dict[str, Any]:
    try:
        dumped: dict[str, Any] = settings.model_dump(mode="json")
    except Exception:  # a plugin's default pydantic cannot write as JSON (bytes, mostly)
        fields = type(settings).model_fields
        dumped = {n: _plain(getattr(settings, n)) for n, f in fields.items() if not f.exclude}
    return dumped


def _redacted(settings: Settings) -> dict[str, Any]:
    from chatwright.redaction import hide_url, redacted

    # SecretStr values (a plugin's too) dump as "**********" already.
    data: dict[str, Any] = redacted(_dump(settings))
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
            held = _value_at(settings, section, key)
            if value is None:
                click.echo(f"# {key} is not set")
            elif isinstance(held, bytes) and not _is_text(held):
                why = "bytes that are not UTF-8 text, which TOML cannot write"
                click.echo(f"# {key} = {held!r} ({why})")
            elif _holds_null(held):
                # TOML has no null: left out, it would read back as another value.
                shown = json.dumps(value, ensure_ascii=False)
                click.echo(f"# {key} = {shown} (as JSON: it holds null, which TOML cannot write)")
            else:
                click.echo(f"{key} = {_toml_value(value)}")


def _value_at(settings: Settings, section: str, key: str) -> Any:
    """The value of ``section.key`` as the settings hold it (``plugins.x`` too)."""
    if section.startswith("plugins."):
        return settings.plugins.get(section.removeprefix("plugins."), {}).get(key)
    return getattr(getattr(settings, section, None), key, None)


def _is_text(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _holds_null(value: Any) -> bool:
    """Whether a list or a plain table in ``value`` holds None: an unset key of a
    model (``cached_input`` of a price) is only not written, but there it is a value."""
    from pydantic import BaseModel

    if isinstance(value, BaseModel):
        return any(_holds_null(getattr(value, n)) for n in type(value).model_fields)
    if isinstance(value, Mapping):
        return any(v is None or _holds_null(v) for v in value.values())
    if isinstance(value, list | tuple | set | frozenset):
        return any(v is None or _holds_null(v) for v in value)
    return False


@hookimpl
def register_commands(cli: click.Group) -> None:
    cli.add_command(config)
