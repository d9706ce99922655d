"""``chatwright users``: one user's data, exported or erased, by an operator.

The same work as ``GET /api/me/export`` and ``DELETE /api/me`` (see
docs/privacy.md), for any user, with no bound on the archive's size: it is
written to a file (or standard output) as it is serialised.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from chatwright import hookimpl
from chatwright.cli import AppContext, pass_app
from chatwright.commands import inputs
from chatwright.commands.output import echo_json, echo_table

if TYPE_CHECKING:
    from chatwright.runtime import Runtime
    from chatwright.userdata import ErasureReport, UserArchive


@click.group()
def users() -> None:
    """Export or erase one user's data (chats, memory, customizations, tool tables, …)."""


@users.command("export")
@click.argument("user")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Write the archive to this file (default: standard output).",
)
@pass_app
def users_export(app: AppContext, user: str, output: Path | None) -> None:
    """Write everything of USER's as one JSON archive (the shape of GET /api/me/export)."""
    inputs.name("USER", user)
    if output is not None and output.parent.exists() and not output.parent.is_dir():
        raise click.ClickException(f"cannot write {output}: {output.parent} is not a directory")

    async def work(runtime: Runtime) -> UserArchive:
        from chatwright.userdata import user_data_of

        return await user_data_of(runtime.storage).export(user)

    data = app.run(work).as_dict()
    if output is None:
        _write(data, sys.stdout)
        sys.stdout.write("\n")
        return
    # Written beside it and renamed when whole: a failure leaves what was there before.
    partial = output.with_name(f".{output.name}.{os.getpid()}.partial")
    try:
        with partial.open("w", encoding="utf-8") as file:
            _write(data, file)
        os.replace(partial, output)
    except OSError as exc:
        raise click.ClickException(
            f"cannot write the archive to {output}: {exc.strerror or exc}"
        ) from None
    finally:
        partial.unlink(missing_ok=True)
    rows = sum(len(r) for r in data["tables"].values())
    rows += sum(len(t["rows"]) for t in data["app_tables"].values())
    click.echo(f"Wrote {rows} rows of user {user!r} to {output}.", err=True)


def _write(data: dict[str, Any], file: Any) -> None:
    # Serialised straight into the file, never whole in memory as one string; strict
    # JSON (the values are made plain first: no NaN gets this far).
    json.dump(data, file, indent=1, ensure_ascii=False, allow_nan=False)


@users.command("erase")
@click.argument("user")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
@click.option(
    "--keep-budget",
    is_flag=True,
    help="Keep what USER's token budget counts (this day's and month's totals, their "
    "budget override), as an erasure USER asks for over HTTP does.",
)
@pass_app
def users_erase(app: AppContext, user: str, yes: bool, as_json: bool, keep_budget: bool) -> None:
    """Delete everything of USER's, in one transaction; print the rows deleted per table.

    The erasure is recorded in the audit log, with the counts and without the user id.
    """
    inputs.name("USER", user)
    if not yes:
        try:
            asked = click.confirm(
                f"Erase all data of user {user!r}? This cannot be undone", default=False, err=True
            )
        except click.Abort:  # no answer (end of input, ^C)
            asked = False
        if not asked:
            raise click.ClickException("nothing erased (pass --yes to erase without asking)")

    async def work(runtime: Runtime) -> ErasureReport:
        from chatwright.userdata import user_data_of

        return await user_data_of(runtime.storage).erase(
            user, requested_by="operator", keep_budget=keep_budget
        )

    report = app.run(work)
    if as_json:
        echo_json(report.as_dict())
        return
    rows = [(t, n) for t, n in report.tables.items() if n]
    rows += [(f"{t} (tool table)", n) for t, n in report.app_tables.items() if n]
    if rows:
        echo_table(("table", "rows"), rows)
    click.echo(f"Erased {report.total} rows of user {user!r}.")
    for table, why in report.skipped.items():
        click.echo(f"Left alone: table {table!r}: {why}.", err=True)
    for table, why in report.kept.items():
        click.echo(f"Kept: table {table!r}: {why}.", err=True)


@hookimpl
def register_commands(cli: click.Group) -> None:
    cli.add_command(users)
