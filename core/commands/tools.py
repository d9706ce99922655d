"""``chatwright tools``: list, add, check, disable and enable the tool rows of agents.

The checks of a tool row given as JSON (``tools add --file``) live here too.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click

from chatwright import hookimpl
from chatwright.cli import AppContext, pass_app
from chatwright.commands.output import echo_json, echo_list, yes_no
from chatwright.errors import InvalidInputError, UnknownAgentError

if TYPE_CHECKING:
    from chatwright.runtime import Runtime


@click.group()
def tools() -> None:
    """List, add, check and disable the tool rows of agents."""


def _tool_definition(text: str, source: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise InvalidInputError(f"{source} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidInputError(f"{source} must hold one JSON object (a tool row)")
    unknown = sorted(
        set(data) - {"name", "type", "description", "config", "is_active", "position", "order"}
    )
    if unknown:
        raise InvalidInputError(
            f"{source}: unknown field {', '.join(map(repr, unknown))}; a tool row has "
            "name, type, description, config, is_active and position"
        )
    if not isinstance(data.get("name"), str) or not data["name"]:
        raise InvalidInputError(f'{source}: the tool needs a "name"')
    checks = {
        "type": (str, "a string"),
        "description": (str, "a string"),
        "is_active": (bool, "true or false"),
    }
    for key, (kind, words) in checks.items():
        if key in data and not isinstance(data[key], kind):
            raise InvalidInputError(f"{source}: {key} must be {words}, not {data[key]!r}")
    for key in ("position", "order"):
        if key in data and (isinstance(data[key], bool) or not isinstance(data[key], int)):
            raise InvalidInputError(f"{source}: {key} must be an integer, not {data[key]!r}")
    return data


@tools.command("list")
@click.option("--agent", help="Only this agent's tools.")
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
        headers=["id", "agent", "name", "type", "active", "position"],
        cells=lambda r: (
            r["id"],
            r["agent"],
            r["name"],
            r["type"],
            _active(r),
            r["position"],
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
@click.option("--agent", required=True, help="The agent the tool belongs to.")
@click.option(
    "--file",
    "file",
    type=click.File("r", encoding="utf-8"),
    default="-",
    show_default="standard input",
    help="JSON of the row: {name, type, description, config}.",
)
@pass_app
def tools_add(app: AppContext, agent: str, file: Any) -> None:
    """Validate a tool row against its type and the database, then insert it."""
    from datetime import UTC, datetime

    from chatwright.stores import ToolRow
    from chatwright.tools import ToolContext, build_row

    source = "standard input" if file.name == "<stdin>" else file.name
    data = _tool_definition(file.read(), source)
    position = data.get("position", data.get("order"))

    async def work(runtime: Runtime) -> None:
        storage = runtime.storage
        found = await storage.agents.get(agent)
        if found is None:
            raise UnknownAgentError(agent)
        now = datetime.now(UTC)
        candidate = ToolRow(
            id=0,
            agent_id=found.id,
            name=data["name"],
            type=str(data.get("type", "crud")),
            description=str(data.get("description") or ""),
            config=data.get("config", {}),
            is_active=bool(data.get("is_active", True)),
            position=int(position) if isinstance(position, int) else 0,
            created_at=now,
            updated_at=now,
        )
        context = ToolContext(agent, storage, runtime.settings)
        report = await build_row(candidate, agent, runtime.plugins, context)
        if not report.ok:
            problems = "; ".join(p.brief() for p in report.problems)
            raise InvalidInputError(f"tool {candidate.name!r} not added: {problems}")
        row = await storage.tools.add(
            agent,
            candidate.name,
            type=candidate.type,
            config=candidate.config,
            description=candidate.description,
            is_active=candidate.is_active,
            position=position if isinstance(position, int) else None,
        )
        click.echo(f"Added tool {row.name!r} (row {row.id}) to agent {agent!r}")

    app.run(work)


@tools.command("check")
@click.option("--agent", help="Only this agent's tools.")
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
        click.echo(f"{state} #{r['id']} {r['agent']}/{r['name']} [{r['type']}]{off}")
        for problem in r["problems"]:
            click.echo(f"       {problem}")
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


@hookimpl
def register_commands(cli: click.Group) -> None:
    cli.add_command(tools)
