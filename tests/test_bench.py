"""The benchmark runner and its comparison apps still work: a tiny run of every section.

Not a measurement: one or two turns per target, checking that each section
produces its rows with numbers, and that the table lands between the markers
of a markdown file.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from tests.harness import ADMIN_URL, admin_connect, libpq

pytest.importorskip("langgraph.checkpoint.sqlite", reason="pip install -e '.[bench]'")

from bench.run import main

TINY = [
    "--rounds", "1", "--turns", "1", "--clients", "2", "--inproc-turns", "2",
    "--bytes-turns", "20", "--messages", "50", "--users", "11", "--cli-runs", "1",
]  # fmt: skip
NUMBER = r"([0-9][0-9,]*\.?[0-9]*)"


def table(markdown: str) -> dict[str, tuple[str, str]]:
    """measure -> (result, ratio), from the rows of the markdown table."""
    rows = {}
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 6 and cells[0].isdigit():
            rows[cells[1]] = (cells[2], cells[3])
    return rows


def number(text: str) -> float:
    found = re.search(NUMBER, text)
    assert found, f"no number in {text!r}"
    return float(found.group(1).replace(",", ""))


def run(tmp_path: Path, *args: str) -> dict[str, tuple[str, str]]:
    out = tmp_path / "performance.md"
    out.write_text("# Performance\n\n<!-- bench:begin -->\nold\n<!-- bench:end -->\n\nkept\n")
    assert main([*TINY, *args, "--write", str(out)]) == 0
    text = out.read_text()
    assert "old" not in text
    assert text.startswith("# Performance\n\n<!-- bench:begin -->\nMeasured with `python -m")
    assert text.endswith("<!-- bench:end -->\n\nkept\n")
    return table(text)


def test_every_section_but_postgresql(tmp_path: Path) -> None:
    rows = run(tmp_path, "--no-pg", "--sections", "1,2,4,5,6,7")
    assert not [m for m in rows if m.startswith("FAILED")], rows
    # Where /proc tells a process's CPU time, each server's CPU per turn is given too.
    cpu = rf", server CPU {NUMBER} ms a turn" if Path("/proc/self/stat").exists() else ""
    for target in ("chatwright-sqlite", "floor", "langgraph"):
        result = rows[f"HTTP, 2 clients: {target}"][0]
        assert re.fullmatch(rf"{NUMBER} turns/s, p50 {NUMBER} ms, p99 {NUMBER} ms{cpu}", result)
        assert number(result) > 0
    assert rows["HTTP: chatwright-pg"][0] == "skipped: not asked for (--no-pg)"
    for measure in (
        "turns/s chatwright-sqlite / floor",
        "turns/s chatwright-sqlite / langgraph",
        "Runtime.chat / bare ainvoke",
        "AsyncSqliteSaver / chatwright",
        "long chat / fresh chat",
        "chatwright --help / python -c pass",
    ):
        assert number(rows[measure][1]) > 0, measure
    # Section 2 also times a turn's storage work alone, as the least a turn adds.
    assert number(rows["a turn's storage work alone (start, exchange, end)"][0]) > 0
    assert number(rows["(bare ainvoke + storage work alone) / bare ainvoke"][1]) > 1
    assert number(rows["bytes per turn after 20 turns: AsyncSqliteSaver"][0]) > 0
    assert number(rows["RSS after one turn each, 11 users"][0]) > 10  # MiB
    assert "turn on a chat of 50 messages (SQLite)" in rows


def test_postgresql_sections(tmp_path: Path) -> None:
    admin_connect().close()  # skips, saying why, when no server answers (fails with CI=true)
    admin = libpq(ADMIN_URL)
    listed = "SELECT datname FROM pg_database WHERE datname LIKE 'chatwright_bench_%'"
    with admin_connect() as conn:
        before = set(conn.execute(listed).fetchall())  # another run's, if one is going on
    # Ten turns a window, not two: a window's start-up varies by a transaction or two
    # (a pooled connection idle for a second is pinged first), which two turns did not
    # outweigh on a busy machine.
    rows = run(
        tmp_path, "--sections", "1,3", "--targets", "chatwright-pg", "--inproc-turns", "10",
        "--pg", admin,
    )  # fmt: skip
    assert number(rows["HTTP, 2 clients: chatwright-pg"][0]) > 0
    # A turn is at least the tool's insert and its own; each window's start-up can differ
    # by a transaction (a pooled connection pinged after idling), read over 10 turns.
    assert number(rows["PostgreSQL transactions per cached turn, all"][0]) >= 1.5
    assert number(rows["... of which the insert tool's own"][0]) >= 0.5
    assert number(rows["new connections per cached turn"][0]) >= 0
    assert number(rows["cached turn through Runtime.chat (PostgreSQL)"][0]) > 0
    assert number(rows["bare ainvoke of the same built graph (PostgreSQL)"][0]) > 0
    assert number(rows["Runtime.chat / bare ainvoke (PostgreSQL)"][1]) > 0
    with admin_connect() as conn:
        left = set(conn.execute(listed).fetchall()) - before
    assert left == set(), "the run's database was not dropped"


def test_a_failed_part_of_a_section_hides_none_of_its_other_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Section 3's comparison on PostgreSQL failing leaves its judged rows in the table,
    with a FAILED row for the part that failed, and the run fails."""
    admin_connect().close()  # skips, saying why, when no server answers (fails with CI=true)
    from bench import inprocess

    async def counted(*_: object) -> inprocess.PerTurn:
        return inprocess.PerTurn(transactions=4.0, tool_transactions=1.0, sessions=0.0)

    async def broken(*_: object) -> None:
        raise RuntimeError("the comparison broke")

    monkeypatch.setattr(inprocess, "pg_activity", counted)
    monkeypatch.setattr(inprocess, "runtime_vs_graph", broken)
    out = tmp_path / "performance.md"
    out.write_text("<!-- bench:begin -->\n<!-- bench:end -->\n")
    args = [*TINY, "--sections", "3", "--pg", libpq(ADMIN_URL), "--write", str(out)]
    assert main(args) == 1
    rows = table(out.read_text())
    assert rows["transactions per turn besides the tool's"][0] == "3.0"
    assert rows["new connections per cached turn"][0] == "0.00"
    assert rows["FAILED"] == ("the comparison broke", "")


def test_an_unreachable_postgresql_is_skipped_saying_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nobody = "postgresql://postgres@127.0.0.1:1/postgres"
    rows = run(tmp_path, "--sections", "3", "--pg", nobody)
    assert rows == {
        "PostgreSQL transactions and connections": (
            "skipped: user=postgres dbname=postgres host=127.0.0.1 port=1 does not answer "
            "(pass --pg URL)",
            "",
        )
    }
    assert "skipping the PostgreSQL parts" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sections", "9"], "--sections takes numbers among"),
        (["--sections", "one"], "--sections takes numbers among"),
        (["--targets", "nginx"], "--targets: unknown nginx; choose among chatwright-sqlite"),
        (["--rounds", "0"], "--rounds must be at least 1"),
    ],
)
def test_bad_options_are_named(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="no /proc here")
def test_a_servers_cpu_time_is_read_from_proc() -> None:
    from bench.common import cpu_seconds

    before = cpu_seconds(os.getpid())
    deadline = time.process_time() + 0.1
    while time.process_time() < deadline:
        pass
    after = cpu_seconds(os.getpid())
    assert before is not None and after is not None
    assert 0.05 <= after - before <= 5.0
    gone = max(int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()) + 100_000
    assert cpu_seconds(gone) is None
