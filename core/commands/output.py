"""How the built-in commands print: JSON, aligned tables, lists and yes/no cells."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Any

import click


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


_TERMINAL_ACTS = re.compile(
    "[\x00-\x1f\x7f-\x9f\u2028\u2029\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)
"""What a terminal acts on rather than shows: the C0 and C1 controls (an escape
sequence's ESC or CSI, line breaks), DEL, the Unicode line separators, the
bidirectional controls (which reorder what follows on the line, so that a value
can make the line read otherwise) and lone surrogates (which no terminal encoding
can write)."""


def escaped(text: str, keep: str = "") -> str:
    """``text`` with each character a terminal would act on (:data:`_TERMINAL_ACTS`)
    written as its escape (``\\u`` and four hex digits), but those in ``keep``: a
    value stored by anyone (a prompt, a tool's name, a row of an original database)
    cannot clear the screen, colour what follows, reorder a line or fake one."""

    def one(found: re.Match[str]) -> str:
        char = found[0]
        return char if char in keep else f"\\u{ord(char):04x}"

    return _TERMINAL_ACTS.sub(one, text)


def printable(text: str) -> str:
    """``text`` for one cell or line of output: :func:`escaped`, tabs kept."""
    return escaped(text, "\t")


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
