"""``chatwright import llm-agent``: moving in from the original system's database.

A bundled plugin that adds one command group through ``register_commands``;
the core knows nothing of it. :mod:`.source` reads the original's tables,
:mod:`.plan` maps them to chatwright's agents, tool rows, customizations,
memory, chats and messages, reports each problem per row, and writes what
the user confirms. Nothing is imported until the command runs.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import click

from chatwright import hookimpl

if TYPE_CHECKING:
    from chatwright.cli import AppContext
    from chatwright.plugins.importing.plan import Plan
    from chatwright.runtime import Runtime


@click.group("import")
def import_group() -> None:
    """Import agents, tools, history and memory from another system."""


def _print_report(plan: Plan) -> None:
    from chatwright.plugins.importing.plan import shown

    click.echo(f"Source: {plan.source.url} (schema {plan.source.schema})")
    for note in plan.notes:
        click.echo(f"  note: {shown(note)}")
    for item in plan.items:
        count = f" ({item.count} messages)" if item.kind == "messages" else ""
        target, source = shown(item.target), shown(item.source)
        click.echo(f"{item.action:<15} {item.kind:<13} {target}{count}  <- {source}")
        for problem in item.problems:
            click.echo(f"{'':<16}problem: {shown(problem)}")
    summary = ", ".join(
        f"{kind}: " + ", ".join(f"{n} {action}" for action, n in actions.items())
        for kind, actions in plan.counts().items()
    )
    click.echo(f"Summary: {summary or 'nothing found'}")


@import_group.command("llm-agent")
@click.option(
    "--from",
    "url",
    required=True,
    metavar="URL",
    help="The original system's PostgreSQL database (may be the one chatwright runs on).",
)
@click.option(
    "--schema", default="public", show_default=True, help="The schema holding its tables."
)
@click.option(
    "--model",
    metavar="SPEC",
    help="Model spec for agents whose llm_config names no model or provider chatwright knows.",
)
@click.option("--yes", is_flag=True, help="Import without asking after the report.")
@click.option("--dry-run", is_flag=True, help="Only print the report; import nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the report (and outcome) as JSON.")
@click.pass_obj
def llm_agent(
    app: AppContext,
    url: str,
    schema: str,
    model: str | None,
    yes: bool,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Import from the original FastAPI + Supabase + LangChain system.

    Reads its agent_configurations, agent_tools (every shape it had),
    user_agent_prompt_customizations, agent_long_term_memory, chat_sessions and
    chat_message_history; prints what it will import and every problem per row,
    then asks (or --yes). Running it again imports nothing twice.
    """
    from chatwright.cli import run_async
    from chatwright.commands.output import echo_json
    from chatwright.plugins.importing.plan import apply, make_plan, shown
    from chatwright.plugins.importing.source import SourceError, read

    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_$]{0,62}", schema):
        raise click.BadParameter("a schema name is letters, digits and '_'", param_hint="--schema")

    # The source first: a URL that does not answer is the one error, whatever chatwright's state.
    source = run_async(read(url, schema))
    if not source.tables:
        found = "".join(f" ({note})" for note in source.notes[:1])
        raise SourceError(
            f"no table of the original system in schema {schema!r} of {source.url}{found}; "
            "check --from and --schema"
        )

    async def work(runtime: Runtime) -> dict[str, Any]:
        plan = await make_plan(source, runtime, model)
        report = plan.as_dict()
        if not as_json:
            _print_report(plan)
        todo = plan.todo
        if dry_run or not todo:
            if not as_json:
                click.echo("Dry run: nothing imported." if dry_run else "Nothing to import.")
            return {**report, "imported": 0, "failed": []}
        if not yes and not click.confirm(
            f"Import {len(todo)} item(s) into {runtime.storage.description}?", err=as_json
        ):
            if not as_json:
                click.echo("Nothing imported.")
            return {**report, "imported": 0, "failed": []}
        missed = await apply(plan, runtime.storage)
        done = len(todo) - len(missed)
        if not as_json:
            click.echo(f"Imported {done} item(s).")
            for item in missed:
                said = "failed" if item.action == "failed" else "skipped"
                why = shown("; ".join(item.problems))
                click.echo(f"{said}: {shown(item.target)} <- {shown(item.source)}: {why}")
        return {
            **plan.as_dict(),
            "imported": done,
            "failed": [i.as_dict() for i in missed if i.action == "failed"],
        }

    result = app.run(work)
    if as_json:
        echo_json(result)


@hookimpl
def register_commands(cli: click.Group) -> None:
    cli.add_command(import_group)
