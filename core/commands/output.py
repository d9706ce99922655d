"""How the built-in commands print: JSON, aligned tables, lists and yes/no cells."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Any

import click


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


_UNPRINTABLE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")
"""What a terminal would act on (an escape sequence's ESC or CSI, a line break), but tab."""


def printable(text: str) -> str:
    """``text`` with each character a terminal would act on written as its escape: a value
    stored by anyone (an agent's prompt, a tool's name) cannot clear the screen, colour
    what follows or fake a line of the output."""
    return _UNPRINTABLE.sub(lambda m: f"\\u{ord(m[0]):04x}", text)


def echo_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    if not rows:
        return
    cells = [[str(h) for h in headers]] + [
        ["" if v is None else printable(str(v)) for v in r] for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def echo_list(
    rows: Sequence[dict[str, Any]],
    *,
    as_json: bool,
    empty: str,
    headers: Sequence[str],
    cells: Callable[[dict[str, Any]], Sequence[Any]],
) -> None:
    """A list command's output: JSON, a message when empty, or a table."""
    if as_json:
        echo_json(list(rows))
    elif not rows:
        click.echo(empty)
    else:
        echo_table(headers, [cells(r) for r in rows])


def yes_no(value: object) -> str:
    return "yes" if value else "no"
