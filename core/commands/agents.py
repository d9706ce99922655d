"""``chatwright agents``: list, show, add, change and delete agents; export and import bundles.

The ``--prompt``/``--model``/``--setting`` options and the parsing of
``--setting KEY=VALUE`` live here, with the commands that take them, and so do
the options of an agent's bounds (``--turn-timeout``, ``--max-model-calls``,
``--max-tool-calls``, ``--history-tokens``, ``--summarize``): a number, or
``none`` to go back to the setting of the same name (for ``--history-tokens``:
no token bound).

Longer than 450 lines because it holds every ``agents`` subcommand and the
options they share; the work itself is in :mod:`chatwright.catalog` and
:mod:`chatwright.bundles`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from chatwright import hookimpl
from chatwright.cli import AppContext, pass_app
from chatwright.commands import inputs
from chatwright.commands.output import echo_json, echo_list, printable
from chatwright.errors import InvalidInputError, UnknownAgentError, not_utf8

if TYPE_CHECKING:
    from chatwright.runtime import Runtime


@click.group()
def agents() -> None:
    """List, show, add, change, delete, export and import agents."""


def _parse_settings(pairs: Sequence[str]) -> dict[str, Any]:
    """``--setting KEY=VALUE`` pairs: a VALUE that is JSON is what it spells, else text."""
    result: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise InvalidInputError(f"--setting {pair!r} is not KEY=VALUE (e.g. temperature=0.2)")
        try:
            result[key.strip()] = inputs.json_value(raw, f"--setting {key.strip()!r}")
        except ValueError:
            result[key.strip()] = raw
    return result


class OrNone(click.ParamType[Any, Any]):
    """A number, or ``none`` (the agent then follows the setting of the same name)."""

    def __init__(self, kind: type[int] | type[float]) -> None:
        self.kind = kind
        self.name = f"{kind.__name__}|none"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if value is None or isinstance(value, (int, float)):
            return value
        text = str(value).strip()
        if text.lower() == "none":
            return NONE
        try:
            return self.kind(text)
        except ValueError:
            what = "a whole number" if self.kind is int else "a number of seconds"
            self.fail(f"{value!r} is not {what} or none", param, ctx)


# What an option given as ``none`` parses to (an option not given is None).
NONE = object()

# agent field -> (option, type, help, what none means), in the order they are shown.
LIMIT_OPTIONS = {
    "turn_timeout": (
        "--turn-timeout",
        OrNone(float),
        "Seconds a turn may run",
        "the setting turns.timeout",
    ),
    "max_model_calls": (
        "--max-model-calls",
        OrNone(int),
        "Most model calls per turn",
        "the setting turns.max_model_calls",
    ),
    "max_tool_calls": (
        "--max-tool-calls",
        OrNone(int),
        "Most tool calls per turn",
        "the setting turns.max_tool_calls",
    ),
    "history_tokens": (
        "--history-tokens",
        OrNone(int),
        "Most tokens of history sent to the model (besides --history-window)",
        "no token bound",
    ),
}


def agent_options(f: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--prompt", help="System prompt; may use {memory} and {custom_instructions}."),
        click.option(
            "--prompt-file",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            help="Read the system prompt from a file.",
        ),
        click.option(
            "--model", type=inputs.TEXT, help="Model spec provider:name (e.g. openai:gpt-4o-mini)."
        ),
        click.option(
            "--setting",
            "settings_",
            multiple=True,
            metavar="KEY=VALUE",
            help="Model setting (repeatable), e.g. temperature=0.2 or base_url=http://…; "
            "`set` merges them into the agent's settings, KEY=null removes one.",
        ),
        click.option("--history-window", type=int, help="Messages of history sent to the model."),
        *(
            click.option(flag, field, type=kind, help=f"{what}; none: {default}.")
            for field, (flag, kind, what, default) in LIMIT_OPTIONS.items()
        ),
        click.option(
            "--summarize/--no-summarize",
            default=None,
            help="Keep a stored summary of the history that falls out of the window.",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _agent_fields(
    prompt: str | None,
    prompt_file: Path | None,
    model: str | None,
    settings_: Sequence[str],
    history_window: int | None,
    limits: dict[str, Any],
) -> dict[str, Any]:
    if prompt is not None and prompt_file is not None:
        raise InvalidInputError("give --prompt or --prompt-file, not both")
    fields: dict[str, Any] = {}
    if prompt_file is not None:
        try:
            fields["system_prompt"] = inputs.read_text_file(prompt_file, "--prompt-file")
        except UnicodeDecodeError as exc:
            raise InvalidInputError(not_utf8(str(prompt_file), exc)) from None
    elif prompt is not None:
        fields["system_prompt"] = prompt
    if model is not None:
        fields["model"] = model
    if settings_:
        fields["model_settings"] = _parse_settings(settings_)
    if history_window is not None:
        fields["history_window"] = history_window
    for key, value in limits.items():
        if value is not None:
            fields[key] = None if value is NONE else value
    return fields


@agents.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def agents_list(app: AppContext, as_json: bool) -> None:
    """List agents."""
    from chatwright.stores import as_dict

    async def work(runtime: Runtime) -> list[dict[str, Any]]:
        return [as_dict(a) for a in await runtime.storage.agents.list()]

    echo_list(
        app.run(work),
        as_json=as_json,
        empty="No agents yet; add one with `chatwright agents add NAME` "
        "or `chatwright init --example`.",
        headers=["name", "model", "history", "updated"],
        cells=lambda r: (r["name"], r["model"], r["history_window"], r["updated_at"][:19]),
    )


@agents.command("show")
@click.argument("name", type=inputs.AGENT)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def agents_show(app: AppContext, name: str, as_json: bool) -> None:
    """Show one agent and its tool rows."""
    from chatwright.stores import as_dict

    async def work(runtime: Runtime) -> dict[str, Any]:
        agent = await runtime.storage.agents.get(name)
        if agent is None:
            raise UnknownAgentError(name)
        data = as_dict(agent)
        data["tools"] = [
            {
                k: v
                for k, v in as_dict(t).items()
                if k in {"id", "name", "type", "is_active", "position"}
            }
            for t in await runtime.storage.tools.list(name)
        ]
        return data

    from chatwright.redaction import redacted

    data = app.run(work)
    # An api_key in model_settings is shown like a secret setting: hidden.
    data["model_settings"] = redacted(data["model_settings"])
    if as_json:
        echo_json(data)
        return
    for key in ("name", "model", "history_window", "created_at", "updated_at"):
        click.echo(f"{key}: {printable(str(data[key]))}")
    for key in (*LIMIT_OPTIONS, "summarize"):
        value = data.get(key)
        unset = f"none ({LIMIT_OPTIONS[key][3]})" if key in LIMIT_OPTIONS else None
        click.echo(f"{key}: {unset if value is None else value}")
    click.echo(f"model_settings: {json.dumps(data['model_settings'])}")
    click.echo("system_prompt:")
    for line in data["system_prompt"].splitlines() or [""]:
        click.echo(f"  {printable(line)}")
    click.echo(f"tools: {len(data['tools'])}")
    for t in data["tools"]:
        state = "" if t["is_active"] else " (disabled)"
        click.echo(f"  #{t['id']} {printable(t['name'])} [{printable(t['type'])}]{state}")


@agents.command("add")
@click.argument("name", type=inputs.AGENT)
@agent_options
@pass_app
def agents_add(
    app: AppContext,
    name: str,
    prompt: str | None,
    prompt_file: Path | None,
    model: str | None,
    settings_: Sequence[str],
    history_window: int | None,
    turn_timeout: Any,
    max_model_calls: Any,
    max_tool_calls: Any,
    history_tokens: Any,
    summarize: bool | None,
) -> None:
    """Add an agent (model defaults to the models.default setting)."""
    from chatwright.catalog import agent_fields, create_agent

    limits = {
        "turn_timeout": turn_timeout,
        "max_model_calls": max_model_calls,
        "max_tool_calls": max_tool_calls,
        "history_tokens": history_tokens,
        "summarize": summarize,
    }
    fields = _agent_fields(prompt, prompt_file, model, settings_, history_window, limits)
    # Checked before the database is opened, so that a typo costs no connection.
    agent_fields(app, name, fields, partial=False)

    async def work(runtime: Runtime) -> None:
        agent = await create_agent(runtime, name, fields)
        click.echo(f"Added agent {agent.name!r} (model {agent.model})")

    app.run(work)


@agents.command("set")
@click.argument("name", type=inputs.AGENT)
@agent_options
@pass_app
def agents_set(
    app: AppContext,
    name: str,
    prompt: str | None,
    prompt_file: Path | None,
    model: str | None,
    settings_: Sequence[str],
    history_window: int | None,
    turn_timeout: Any,
    max_model_calls: Any,
    max_tool_calls: Any,
    history_tokens: Any,
    summarize: bool | None,
) -> None:
    """Change an agent's prompt, model, model settings, history window or bounds.

    --setting values are merged into the agent's model settings; KEY=null removes KEY.
    A bound given as none follows its setting again (e.g. --max-model-calls none).
    """
    from chatwright.catalog import agent_fields, change_agent

    limits = {
        "turn_timeout": turn_timeout,
        "max_model_calls": max_model_calls,
        "max_tool_calls": max_tool_calls,
        "history_tokens": history_tokens,
        "summarize": summarize,
    }
    fields = _agent_fields(prompt, prompt_file, model, settings_, history_window, limits)
    if not fields:
        raise click.UsageError(
            "nothing to change; give --prompt, --prompt-file, --model, --setting, "
            "--history-window, --turn-timeout, --max-model-calls, --max-tool-calls, "
            "--history-tokens or --summarize"
        )

    async def work(runtime: Runtime) -> None:
        agent = await change_agent(runtime, name, fields)
        valid = agent_fields(app, name, fields, partial=True)
        click.echo(f"Updated agent {agent.name!r}: {', '.join(sorted(valid))}")

    app.run(work)


@agents.command("delete")
@click.argument("name", type=inputs.AGENT)
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_app
def agents_delete(app: AppContext, name: str, yes: bool) -> None:
    """Delete an agent and its tool rows.

    Its users' chats, sessions, memory and customizations are kept (they are
    found by the agent's name: an agent added again under it has them back).
    """
    from chatwright.catalog import delete_agent

    if not yes:
        try:
            asked = click.confirm(
                f"Delete agent {name!r} and its tool rows (chats and memory are kept)?", err=True
            )
        except click.Abort:  # no answer (end of input, ^C)
            asked = False
        if not asked:
            raise click.ClickException("nothing deleted (pass --yes to delete without asking)")

    async def work(runtime: Runtime) -> None:
        deleted = await delete_agent(runtime, name)
        click.echo(
            f"Deleted agent {name!r} and its {deleted.tools} tool row(s); its chats, sessions "
            "and memory are kept"
        )

    app.run(work)


@agents.command("export")
@click.argument("name", type=inputs.AGENT)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["json", "yaml"]),
    help="File format (default: from the --output name's extension, else json).",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Write to this file instead of standard output.",
)
@pass_app
def agents_export(app: AppContext, name: str, fmt: str | None, output: Path | None) -> None:
    """Write an agent with its tool rows and settings as one bundle (secrets left out, marked).

    A model setting whose key looks like a secret (api_key, *token*, *secret*,
    *password*…) and a tool config field its type declares secret are written
    as {"$secret": "<where>"}; `agents import` fills them in again.
    """
    from chatwright.bundles import dump, export_bundle

    if fmt is None:
        fmt = "yaml" if output is not None and output.suffix in (".yaml", ".yml") else "json"

    async def work(runtime: Runtime) -> str:
        agent = await runtime.storage.agents.get(name)
        if agent is None:
            raise UnknownAgentError(name)
        tools = await runtime.storage.tools.list(name)
        return dump(export_bundle(agent, tools, runtime.plugins), fmt)

    text = app.run(work)
    if output is None:
        click.echo(text, nl=False)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise InvalidInputError(f"cannot write {output}: {exc.strerror}") from None
    click.echo(f"Exported agent {name!r} to {output}", err=True)


@agents.command("import")
@click.argument("file", type=click.File("rb"))
@click.option("--dry-run", is_flag=True, help="Check the bundle and say what would change.")
@click.option(
    "--prune", is_flag=True, help="Remove the agent's tools that the bundle does not have."
)
@click.option(
    "--secret",
    "secrets",
    multiple=True,
    metavar="WHERE=VALUE",
    help='A secret the bundle marks {"$secret": WHERE} (repeatable), e.g. '
    "model_settings.api_key=sk-…",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_app
def agents_import(
    app: AppContext,
    file: Any,
    dry_run: bool,
    prune: bool,
    secrets: Sequence[str],
    as_json: bool,
) -> None:
    """Create or update an agent and its tools from a bundle (JSON or YAML).

    Tools are matched by name. Everything is checked first (each tool row as
    `tools add` does); if anything is wrong nothing changes. Tools the agent
    has and the bundle has not are kept, or removed with --prune. A secret
    marker takes --secret, else the value already stored, else the variable
    CHATWRIGHT_SECRET_<WHERE> (e.g. CHATWRIGHT_SECRET_MODEL_SETTINGS_API_KEY).
    """
    import os

    from chatwright.bundles import MAX_BYTES, check, import_bundle, parse

    source = "standard input" if file.name == "<stdin>" else file.name
    given: dict[str, str] = {}
    for pair in secrets:
        where, sep, value = pair.partition("=")
        if not sep or not where.strip():
            raise InvalidInputError(f"--secret {pair!r} is not WHERE=VALUE")
        given[where.strip()] = value
    bundle = check(parse(file.read(MAX_BYTES + 1), source), source)

    async def work(runtime: Runtime) -> dict[str, Any]:
        report = await import_bundle(
            runtime, bundle, secrets=given, environ=os.environ, prune=prune, dry_run=dry_run
        )
        return report.as_dict()

    report = app.run(work)
    if as_json:
        echo_json(report)
        return
    verb = "would be" if dry_run else "was"
    action = report["action"]
    changed = f" ({', '.join(report['changed'])})" if action == "updated" else ""
    click.echo(f"Agent {report['agent']!r} {verb} {action}{changed}")
    for key, words in (
        ("added", "added"),
        ("updated", "updated"),
        ("unchanged", "unchanged"),
        ("removed", "removed"),
        ("kept", "kept (not in the bundle; --prune removes them)"),
    ):
        names = report["tools"][key]
        if key == "updated":
            # A change of a tool's write safety is never silent.
            safety = report["tools"].get("safety", {})
            names = [f"{n} ({'; '.join(safety[n])})" if n in safety else n for n in names]
        if names:
            click.echo(f"  tools {words}: {printable(', '.join(names))}")
    if dry_run:
        click.echo("Dry run: nothing was changed.")


@hookimpl
def register_commands(cli: click.Group) -> None:
    cli.add_command(agents)
