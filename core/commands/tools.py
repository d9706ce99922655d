"""``chatwright tools``: list, add, change, copy, remove, check, disable and enable tool rows.

The checks of a tool row given as JSON (``tools add --file``) live here too,
and ``tools choose``, a user's own approval choice for a row in ``user`` mode.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from chatwright import hookimpl
from chatwright.approvals import (
    APPROVAL_MODES,
    DEFAULT_USER_CHOICE,
    USER_CHOICES,
)
from chatwright.cli import AppContext, pass_app
from chatwright.commands import inputs
from chatwright.commands.output import echo_json, echo_list, printable, yes_no
from chatwright.errors import InvalidInputError, UnknownAgentError, not_utf8

if TYPE_CHECKING:
    from chatwright.runtime import Runtime


@click.group()
def tools() -> None:
    """List, add, change, copy, remove, check and disable the tool rows of agents."""


POSITIONS = click.IntRange(-(2**31), 2**31 - 1)
ROW_IDS = click.IntRange(1, 2**31 - 1)
"""The ids a tool row can have (a 32-bit column): a larger number names no row."""


def approval_text(row: dict[str, Any]) -> str:
    """A row's approval mode as ``tools list`` shows it: ``user`` with its default."""
    mode = str(row.get("approval", "auto"))
    return f"user ({row.get('approval_default')})" if mode == "user" else mode


def _tool_definition(text: str, source: str) -> dict[str, Any]:
    from chatwright.catalog import stored_row, tool_definition

    try:
        data = inputs.json_value(text, source)
    except ValueError as exc:
        raise InvalidInputError(f"{source} is not valid JSON: {exc}") from None
    data, dropped = stored_row(data, source)
    if dropped:
        click.echo(f"{source}: ignored {', '.join(dropped)} (a new row gets its own)", err=True)
    return tool_definition(data, source)


@tools.command("list")
@click.option("--agent", type=inputs.AGENT, help="Only this agent's tools.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def tools_list(app: AppContext, agent: str | None, as_json: bool) -> None:
    """List tool rows (all agents, or one); an active row that does not load is "refused"."""
    from chatwright.stores import as_dict
    from chatwright.tools import check_tools

    async def work(runtime: Runtime) -> list[dict[str, Any]]:
        if agent is not None and await runtime.storage.agents.get(agent) is None:
            raise UnknownAgentError(agent)
        reports = await check_tools(runtime.storage, runtime.settings, runtime.plugins, agent)
        return [
            {
                "agent": r.agent,
                **as_dict(r.row),
                "problems": [p.brief() for p in r.problems],
            }
            for r in reports
        ]

    rows = app.run(work)
    echo_list(
        rows,
        as_json=as_json,
        empty="No tools; add one with `chatwright tools add --agent NAME --file tool.json`.",
        headers=["id", "agent", "name", "type", "active", "position", "approval"],
        cells=lambda r: (
            r["id"],
            r["agent"],
            r["name"],
            r["type"],
            _active(r),
            r["position"],
            approval_text(r),
        ),
    )
    refused = sum(1 for r in rows if _active(r) == "refused")
    if refused and not as_json:
        click.echo(
            f"{refused} active row(s) refused at load; `chatwright tools check` says why", err=True
        )


def _active(row: dict[str, Any]) -> str:
    # An active row that fails to load is not in any chat: say so, not "yes".
    if row["is_active"] and row["problems"]:
        return "refused"
    return yes_no(row["is_active"])


@tools.command("add")
@click.option("--agent", type=inputs.AGENT, required=True, help="The agent the tool belongs to.")
@click.option(
    "--file",
    "file",
    type=click.File("r", encoding="utf-8"),
    default="-",
    show_default="standard input",
    help="JSON of the row: {name, type, description, config}.",
)
@click.option(
    "--approval",
    type=click.Choice(APPROVAL_MODES),
    help="auto: runs at once; required: every call waits for the user's decision; user: "
    "each user chooses (default: the row's approval, else auto).",
)
@click.option(
    "--approval-default",
    type=click.Choice(USER_CHOICES),
    help=f"For --approval user: what users who have not chosen get (default: "
    f"{DEFAULT_USER_CHOICE}).",
)
@pass_app
def tools_add(
    app: AppContext,
    agent: str,
    file: Any,
    approval: str | None,
    approval_default: str | None,
) -> None:
    """Validate a tool row against its type and the database, then insert it."""
    from chatwright.catalog import add_tool
    from chatwright.stores import as_dict

    source = "standard input" if file.name == "<stdin>" else file.name
    try:
        text = inputs.read_text_file(file, "--file")
    except UnicodeDecodeError as exc:
        raise InvalidInputError(not_utf8(source, exc)) from None
    data = _tool_definition(text, source)

    async def work(runtime: Runtime) -> None:
        row = await add_tool(
            runtime, agent, data, approval=approval, approval_default=approval_default
        )
        click.echo(
            f"Added tool {row.name!r} (row {row.id}) to agent {agent!r}, "
            f"approval {approval_text(as_dict(row))}"
        )

    app.run(work)


@tools.command("check")
@click.option("--agent", type=inputs.AGENT, help="Only this agent's tools.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def tools_check(app: AppContext, agent: str | None, as_json: bool) -> None:
    """Validate every tool row against its type and the live schema (exit 1 if any is bad)."""
    from chatwright.tools import check_tools

    async def work(runtime: Runtime) -> list[dict[str, Any]]:
        if agent is not None and await runtime.storage.agents.get(agent) is None:
            raise UnknownAgentError(agent)
        reports = await check_tools(runtime.storage, runtime.settings, runtime.plugins, agent)
        return [r.as_dict() | {"active": r.row.is_active} for r in reports]

    reports = app.run(work)
    if as_json:
        echo_json([{k: v for k, v in r.items() if k != "active"} for r in reports])
    elif not reports:
        click.echo("No tool rows to check.")
    for r in [] if as_json else reports:
        state = "ok  " if r["ok"] else "BAD "
        off = "" if r["active"] else " (disabled)"
        where = printable(f"{r['agent']}/{r['name']} [{r['type']}]")
        click.echo(f"{state} #{r['id']} {where}{off}")
        for problem in r["problems"]:
            click.echo(f"       {printable(problem)}")
    bad = [r for r in reports if not r["ok"]]
    if bad:
        if not as_json:
            click.echo(f"{len(bad)} of {len(reports)} tool rows have problems", err=True)
        raise SystemExit(1)


def _set_active(app: AppContext, tool_id: int, active: bool) -> None:
    async def work(runtime: Runtime) -> None:
        row = await runtime.storage.tools.set_active(tool_id, active)
        click.echo(f"Tool {row.name!r} (row {row.id}) is now {'enabled' if active else 'disabled'}")

    app.run(work)


@tools.command("disable")
@click.argument("tool_id", type=int, metavar="ID")
@pass_app
def tools_disable(app: AppContext, tool_id: int) -> None:
    """Stop loading a tool row (sets is_active = false; nothing is deleted)."""
    _set_active(app, tool_id, False)


@tools.command("enable")
@click.argument("tool_id", type=int, metavar="ID")
@pass_app
def tools_enable(app: AppContext, tool_id: int) -> None:
    """Load a disabled tool row again."""
    _set_active(app, tool_id, True)


@tools.command("set")
@click.argument("tool_id", type=ROW_IDS, metavar="ID")
@click.option("--name", help="The tool's new name (as the model sees it).")
@click.option("--description", type=inputs.TEXT, help="The model's instructions for the tool.")
@click.option("--config", "config_json", metavar="JSON", help="The whole new config, as JSON.")
@click.option(
    "--approval",
    type=click.Choice(APPROVAL_MODES),
    help="auto: runs at once; required: every call waits for the user's decision; user: "
    "each user chooses.",
)
@click.option(
    "--approval-default",
    type=click.Choice(USER_CHOICES),
    help="For approval user: what users who have not chosen get.",
)
@click.option("--active/--inactive", "active", default=None, help="Load the row, or stop.")
@click.option("--position", type=POSITIONS, help="Order among the agent's tools.")
@pass_app
def tools_set(
    app: AppContext,
    tool_id: int,
    name: str | None,
    description: str | None,
    config_json: str | None,
    approval: str | None,
    approval_default: str | None,
    active: bool | None,
    position: int | None,
) -> None:
    """Change a tool row; a new name, description or config is validated like `tools add`.

    A row that does not load can still be given another approval mode or
    disabled; changing what the model sees of it needs a row that loads.
    """
    from chatwright.catalog import change_tool
    from chatwright.stores import as_dict

    changes: dict[str, Any] = {
        key: value
        for key, value in {
            "name": name,
            "description": description,
            "approval": approval,
            "approval_default": approval_default,
            "is_active": active,
            "position": position,
        }.items()
        if value is not None
    }
    if config_json is not None:
        try:
            config = inputs.json_value(config_json, "--config")
        except ValueError as exc:
            raise InvalidInputError(f"--config is not valid JSON: {exc}") from None
        if not isinstance(config, dict):
            raise InvalidInputError("--config must be one JSON object (the tool's config)")
        changes["config"] = config
    if not changes:
        raise click.UsageError(
            "nothing to change; give --name, --description, --config, --approval, "
            "--approval-default, --active/--inactive or --position"
        )

    async def work(runtime: Runtime) -> None:
        updated = await change_tool(runtime, tool_id, changes)
        click.echo(
            f"Updated tool {updated.name!r} (row {updated.id}): changed "
            f"{', '.join(sorted(changes))}; its approval is now {approval_text(as_dict(updated))}"
        )

    app.run(work)


@tools.command("remove")
@click.argument("tool_id", type=ROW_IDS, metavar="ID")
@pass_app
def tools_remove(app: AppContext, tool_id: int) -> None:
    """Delete a tool row (and its users' approval choices); `tools disable` keeps it instead."""
    from chatwright.catalog import remove_tool

    async def work(runtime: Runtime) -> None:
        row, agent = await remove_tool(runtime, tool_id)
        click.echo(f"Removed tool {row.name!r} (row {row.id}) from agent {agent!r}")

    app.run(work)


@tools.command("copy")
@click.argument("tool_id", type=ROW_IDS, metavar="ID")
@click.option(
    "--to", "to_agent", type=inputs.AGENT, required=True, help="The agent that gets the copy."
)
@click.option("--name", help="The copy's name (default: the row's name).")
@pass_app
def tools_copy(app: AppContext, tool_id: int, to_agent: str, name: str | None) -> None:
    """Copy a tool row to an agent, validated against it like `tools add`."""
    from chatwright.catalog import copy_tool

    async def work(runtime: Runtime) -> None:
        row = await copy_tool(runtime, tool_id, to_agent, name=name)
        click.echo(
            f"Copied tool row {tool_id} to agent {to_agent!r} as {row.name!r} (row {row.id})"
        )

    app.run(work)


@tools.command("choose")
@click.argument("tool_id", type=ROW_IDS, metavar="ID")
@click.argument("choice", type=click.Choice([*USER_CHOICES, "default"]))
@click.option("--user", required=True, help="The user whose choice it is.")
@pass_app
def tools_choose(app: AppContext, tool_id: int, choice: str, user: str) -> None:
    """Set a user's approval choice for a row in approval mode "user".

    auto: the user's calls run at once; required: each waits for their
    decision; default: forget the choice (the row's approval_default applies).
    """
    inputs.name("--user", user)

    async def work(runtime: Runtime) -> None:
        await runtime.choose_approval(user, tool_id, None if choice == "default" else choice)
        row = await runtime.storage.tools.get(tool_id)
        fallback = row.approval_default if row is not None else DEFAULT_USER_CHOICE
        effective = fallback if choice == "default" else choice
        click.echo(
            f"User {user!r}: tool row {tool_id} is now {effective!r}"
            + (" (the row's default)" if choice == "default" else "")
        )

    app.run(work)


@hookimpl
def register_commands(cli: click.Group) -> None:
    cli.add_command(tools)
