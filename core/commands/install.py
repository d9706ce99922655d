"""``chatwright install`` and ``uninstall``: pip, run in the environment chatwright runs in."""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence

import click

from chatwright import hookimpl


def _pip(arguments: Sequence[str]) -> None:
    import subprocess

    command = [sys.executable, "-m", "pip", *arguments]
    click.echo("$ " + " ".join(command), err=True)
    code = subprocess.call(command)
    if code:
        raise click.ClickException(f"pip failed (exit status {code}); see its output above")


@click.command()
@click.argument("packages", nargs=-1)
@click.option("-U", "--upgrade", is_flag=True, help="Upgrade the packages if installed.")
@click.option(
    "-e",
    "--editable",
    "editable",
    multiple=True,
    metavar="PATH",
    help="Install a local project in editable mode.",
)
def install(packages: tuple[str, ...], upgrade: bool, editable: tuple[str, ...]) -> None:
    """Install plugins (or any package) into the environment chatwright runs in.

    PACKAGES are what pip takes: names from an index, paths, URLs.
    """
    if not packages and not editable:
        raise click.UsageError("name at least one package, path or -e PATH")
    arguments = ["install"]
    if upgrade:
        arguments.append("--upgrade")
    for path in editable:
        arguments += ["--editable", path]
    _pip([*arguments, *packages])


def _name(requirement: str) -> str:
    """The distribution a requirement names (``name`` of ``name[extra]>=1.0``)."""
    named = re.match(r"\s*([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)", requirement)
    return named.group(1) if named else requirement


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _needed() -> set[str]:
    """What ``chatwright`` runs on: itself, pip, and the requirements it installs with,
    with theirs in turn (the extras they ask for included), as installed here."""
    from importlib.metadata import PackageNotFoundError, requires

    from packaging.requirements import InvalidRequirement, Requirement

    needed = {"chatwright", "pip"}
    todo: list[tuple[str, frozenset[str]]] = [("chatwright", frozenset())]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        name, extras = todo.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        try:
            requirements = requires(name) or []
        except PackageNotFoundError:  # not installed, or run from a source tree
            continue
        for text in requirements:
            try:
                requirement = Requirement(text)
            except InvalidRequirement:
                continue
            marker = requirement.marker
            if marker is not None and not any(
                marker.evaluate({"extra": extra}) for extra in (extras or {""})
            ):
                continue
            child = _canonical(requirement.name)
            needed.add(child)
            todo.append((child, frozenset(requirement.extras)))
    return needed


@click.command()
@click.argument("packages", nargs=-1, required=True)
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
def uninstall(packages: tuple[str, ...], yes: bool) -> None:
    """Uninstall packages from the environment chatwright runs in.

    chatwright itself, pip and what chatwright runs on are refused.
    """
    from importlib.metadata import PackageNotFoundError, distribution

    # pip takes a requirement (name==1.0, name[extra]); the name is what is installed.
    names = {package: _name(package) for package in packages}
    if any(_canonical(name) == "chatwright" for name in names.values()):
        raise click.UsageError("uninstalling chatwright itself would remove this command; use pip")
    needed = _needed()
    kept = sorted({name for name in names.values() if _canonical(name) in needed})
    if kept:
        listed = ", ".join(repr(n) for n in kept)
        raise click.UsageError(
            f"chatwright needs {listed} to run: uninstalling it would break this command "
            "(and `chatwright install`, which could put it back); use pip if you mean it"
        )
    missing = []
    for package, name in names.items():
        try:
            distribution(name)
        except (PackageNotFoundError, ValueError):
            missing.append(package)
    if missing:
        # pip only warns and succeeds: a name mistyped would read as done.
        listed = ", ".join(repr(n) for n in missing)
        raise click.ClickException(
            f"not installed here: {listed}; nothing was uninstalled. `chatwright plugins` "
            "lists the plugins installed, with their distributions"
        )
    _pip(["uninstall", *(["--yes"] if yes else []), *packages])


@hookimpl
def register_commands(cli: click.Group) -> None:
    cli.add_command(install)
    cli.add_command(uninstall)
