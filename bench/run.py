"""The turn path's benchmarks side by side, in one run, as one table.

Run from the repository root:

    .venv/bin/python -m bench.run                     # everything (about 15 minutes)
    .venv/bin/python -m bench.run --quick             # fewer rounds and users (2-3 minutes)
    .venv/bin/python -m bench.run --sections 1,3      # some sections only
    .venv/bin/python -m bench.run --write docs/performance.md

Sections (docs/performance.md says what each measures and why):

1. HTTP turns/s and p50/p99 latency: chatwright on SQLite and PostgreSQL, a
   bare FastAPI + LangChain app (the floor) and the same with LangGraph's
   SQLite checkpointer, each a server process, rounds interleaved.
2. ``Runtime.chat`` next to the bare ``ainvoke`` of the same built graph.
3. PostgreSQL transactions and new connections per cached turn, and section 2's
   comparison on PostgreSQL (shown, not judged).
4. Storage bytes per turn: chatwright's SQLite file vs ``AsyncSqliteSaver``'s.
5. A turn on a chat of 100,000 messages vs on a fresh chat.
6. Resident memory after one turn each for many users vs for 10.
7. ``chatwright --help`` vs ``python -c pass``.

Everything is offline: the scripted model, loopback servers, a temporary
directory and, for PostgreSQL, a database created for the run and dropped at
its end (``--pg URL``, default ``BENCH_PG_URL`` or the server on 127.0.0.1:5432;
when it does not answer, its parts are skipped and the table says so).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench import http_turns, inprocess, pg
from bench.common import DEFAULT_PG, ROOT, chatwright_script, clean_env, median, percentile

ALL_SECTIONS = (1, 2, 3, 4, 5, 6, 7)
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


@dataclass
class Row:
    section: int
    measure: str
    result: str
    ratio: str = ""
    goal: str = ""
    met: bool | None = None


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


def ratio_row(section: int, measure: str, value: float, goal: str, met: bool | None) -> Row:
    return Row(section, measure, "", f"{value:.2f}x", goal, met)


# -- the sections ---------------------------------------------------------------------


def section_http(args: argparse.Namespace, tmp: Path, pg_url: str | None) -> list[Row]:
    made = http_turns.run(tmp, args.targets, pg_url, args.clients, args.rounds, args.turns)
    rows, rate, cpu = [], {}, {}
    for target in made:
        rate[target.name] = median(target.rates)
        p50 = percentile(target.latencies, 0.50)
        p99 = percentile(target.latencies, 0.99)
        result = f"{rate[target.name]:.0f} turns/s, p50 {ms(p50)}, p99 {ms(p99)}"
        if target.cpu:
            cpu[target.name] = median(target.cpu)
            result += f", server CPU {ms(cpu[target.name])} a turn"
        if target.failures:
            failed = sum(target.failures.values())
            reasons = "; ".join(f"{n}x {why}" for why, n in target.failures.most_common(3))
            result += f"; {failed} of {target.attempts} turns failed: {reasons}"
        rows.append(Row(1, f"HTTP, {args.clients} clients: {target.name}", result))
    wanted = [
        ("chatwright-sqlite", "floor", 0.6),
        ("chatwright-sqlite", "langgraph", 2.0),
        ("chatwright-pg", "floor", 0.5),
    ]
    for a, b, goal in wanted:
        if a in rate and b in rate:
            value = rate[a] / rate[b]
            rows.append(ratio_row(1, f"turns/s {a} / {b}", value, f">= {goal}x", value >= goal))
    # The same comparison by the servers' CPU per turn: each server is one process that a
    # closed loop keeps busy, and what it spends per turn does not depend on how fast the
    # clients, which share the machine, send the next request. Not a goal of its own.
    for a, b in [("chatwright-sqlite", "floor"), ("chatwright-pg", "floor")]:
        if a in cpu and b in cpu and cpu[a] > 0:
            rows.append(ratio_row(1, f"server CPU a turn {b} / {a}", cpu[b] / cpu[a], "", None))
    return rows


def section_runtime(args: argparse.Namespace, tmp: Path) -> list[Row]:
    url = f"sqlite:///{tmp / 'runtime.db'}"
    times = asyncio.run(inprocess.runtime_vs_graph(url, args.inproc_turns))
    a, b, s = median(times.through), median(times.bare), median(times.storage)
    return [
        Row(2, "cached turn through Runtime.chat (SQLite)", ms(a)),
        Row(2, "bare ainvoke of the same built graph", ms(b)),
        ratio_row(2, "Runtime.chat / bare ainvoke", a / b, "<= 1.25x", a / b <= 1.25),
        # Not a goal: what storing a turn costs by itself, in the same rounds.
        Row(2, "a turn's storage work alone (start, exchange, end)", ms(s)),
        ratio_row(2, "(bare ainvoke + storage work alone) / bare ainvoke", (b + s) / b, "", None),
    ]


def section_pg(args: argparse.Namespace, pg_url: str, admin_url: str) -> list[Row]:
    per = asyncio.run(inprocess.pg_activity(pg_url, admin_url, args.inproc_turns))
    besides = per.transactions - per.tool_transactions
    return [
        Row(3, "PostgreSQL transactions per cached turn, all", f"{per.transactions:.1f}"),
        Row(3, "... of which the insert tool's own", f"{per.tool_transactions:.1f}"),
        Row(
            3,
            "transactions per turn besides the tool's",
            f"{besides:.1f}",
            "",
            "<= 3",
            besides <= 3,
        ),
        Row(
            3, "new connections per cached turn", f"{per.sessions:.2f}", "", "0", per.sessions == 0
        ),
    ]


def section_pg_runtime(args: argparse.Namespace, pg_url: str) -> list[Row]:
    """Section 2's comparison on PostgreSQL, where each of a turn's statements is a round
    trip: shown, not judged (the goal is section 2's, on SQLite)."""
    times = asyncio.run(inprocess.runtime_vs_graph(pg_url, args.inproc_turns))
    a, b = median(times.through), median(times.bare)
    return [
        Row(3, "cached turn through Runtime.chat (PostgreSQL)", ms(a)),
        Row(3, "bare ainvoke of the same built graph (PostgreSQL)", ms(b)),
        ratio_row(3, "Runtime.chat / bare ainvoke (PostgreSQL)", a / b, "", None),
    ]


def section_bytes(args: argparse.Namespace, tmp: Path) -> list[Row]:
    ours = asyncio.run(inprocess.chatwright_bytes(tmp, args.bytes_turns))
    theirs = asyncio.run(inprocess.langgraph_bytes(tmp, args.bytes_turns))
    n = args.bytes_turns
    return [
        Row(4, f"bytes per turn after {n} turns: chatwright SQLite", f"{ours:,.0f} B"),
        Row(4, f"bytes per turn after {n} turns: AsyncSqliteSaver", f"{theirs:,.0f} B"),
        # A few turns may fit in the pages a SQLite file already has.
        ratio_row(4, "AsyncSqliteSaver / chatwright", theirs / ours, "", None)
        if ours > 0
        else Row(4, "AsyncSqliteSaver / chatwright", "chatwright's file did not grow"),
    ]


def section_long_chat(args: argparse.Namespace, tmp: Path) -> list[Row]:
    url = f"sqlite:///{tmp / 'long.db'}"
    on_long, on_fresh = asyncio.run(inprocess.long_chat(url, args.messages, args.inproc_turns))
    a, b = median(on_long), median(on_fresh)
    return [
        Row(5, f"turn on a chat of {args.messages:,} messages (SQLite)", ms(a)),
        Row(5, "turn on a fresh chat", ms(b)),
        ratio_row(5, "long chat / fresh chat", a / b, "", None),
    ]


def memory_of(users: int, tmp: Path) -> int:
    argv = [sys.executable, "-m", "bench.memory", str(users), str(tmp / f"memory-{users}.db")]
    done = subprocess.run(argv, env=clean_env(), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"bench.memory {users} failed:\n{done.stderr[-2000:]}")
    return int(done.stdout.split()[-1])


def section_memory(args: argparse.Namespace, tmp: Path) -> list[Row]:
    few, many = memory_of(10, tmp), memory_of(args.users, tmp)
    extra = many - few
    # The goal is for 10,000 users: with a cache that evicts, fewer say little about it.
    judged = args.users >= 10_000
    return [
        Row(6, "RSS after one turn each, 10 users", mib(few)),
        Row(6, f"RSS after one turn each, {args.users:,} users", mib(many)),
        Row(
            6,
            f"{args.users:,} users - 10 users",
            mib(extra),
            "",
            "<= 30 MiB" if judged else "<= 30 MiB at 10,000 users",
            extra <= 30 * 2**20 if judged else None,
        ),
    ]


def section_cli(args: argparse.Namespace) -> list[Row]:
    from bench.cli_startup import timed

    env = clean_env()
    bare = [sys.executable, "-c", "pass"]
    helped = [chatwright_script(), "--help"]
    a, b = [], []
    for _ in range(args.cli_runs):
        a.append(timed(bare, env))
        b.append(timed(helped, env))
    return [
        Row(7, "python -c pass", ms(median(a))),
        Row(7, "chatwright --help", ms(median(b))),
        ratio_row(7, "chatwright --help / python -c pass", median(b) / median(a), "", None),
    ]


# -- the run --------------------------------------------------------------------------


def machine(started: datetime, load: float, pg_version: str) -> list[tuple[str, str]]:
    meminfo = Path("/proc/meminfo").read_text().split()
    ram = int(meminfo[meminfo.index("MemTotal:") + 1]) * 1024
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return [
        ("date", started.strftime("%Y-%m-%d %H:%M UTC")),
        ("commit", commit or "unknown"),
        ("cores", str(os.cpu_count())),
        ("RAM", f"{ram / 2**30:.1f} GiB"),
        ("Python", platform.python_version()),
        ("PostgreSQL", pg_version),
        ("load average", f"{load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"),
    ]


def render_text(rows: list[Row]) -> str:
    table = [("#", "measure", "result", "ratio", "goal", "")]
    table += [
        (
            str(r.section),
            r.measure,
            r.result,
            r.ratio,
            r.goal,
            "" if r.met is None else ("met" if r.met else "NOT met"),
        )
        for r in rows
    ]
    widths = [max(len(line[i]) for line in table) for i in range(6)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in table
    )


def render_markdown(rows: list[Row], about: list[tuple[str, str]], command: str) -> str:
    lines = [
        f"Measured with `{command}` on: "
        + ", ".join(f"{name} {value}" for name, value in about)
        + ".",
        "",
        "| # | measure | result | ratio | goal | |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        met = "" if r.met is None else ("met" if r.met else "**not met**")
        cells = [str(r.section), r.measure, r.result, r.ratio, r.goal, met]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def write_markdown(path: Path, text: str) -> None:
    old = path.read_text(encoding="utf-8") if path.exists() else f"{BEGIN}\n{END}\n"
    if BEGIN not in old or END not in old:
        raise SystemExit(f"{path} has no {BEGIN} ... {END} markers to put the table between")
    head, rest = old.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    path.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}", encoding="utf-8")


@dataclass
class Postgres:
    url: str | None = None
    """The run's database, or None when it is not used or not reachable."""
    version: str | None = None
    skipped: str = "skipped: not asked for (--no-pg)"


@contextmanager
def postgres(admin_url: str, wanted: bool) -> Iterator[Postgres]:
    """The run's own database, created on the server at ``admin_url``, dropped at the end."""
    if not wanted:
        yield Postgres()
        return
    try:
        version = pg.server_version(admin_url)
    except pg.Unreachable as exc:
        print(f"{exc}; skipping the PostgreSQL parts (pass --pg URL)", file=sys.stderr)
        yield Postgres(skipped=f"skipped: {pg.safe(admin_url)} does not answer (pass --pg URL)")
        return
    with pg.fresh_database(admin_url) as url:
        yield Postgres(url, version)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--sections",
        default=",".join(map(str, ALL_SECTIONS)),
        help="comma-separated section numbers (default: all)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="fewer rounds, turns and users: a run of 2-3 minutes"
    )
    parser.add_argument("--rounds", type=int, help="HTTP rounds per target (5; quick 3)")
    parser.add_argument("--turns", type=int, help="HTTP turns per client per round (20; quick 10)")
    parser.add_argument(
        "--targets",
        default=",".join(http_turns.TARGETS),
        help=f"comma-separated servers of section 1 (default: {', '.join(http_turns.TARGETS)})",
    )
    parser.add_argument("--clients", type=int, default=16, help="concurrent HTTP clients (16)")
    parser.add_argument(
        "--inproc-turns", type=int, help="turns per variant, sections 2, 3, 5 (50; quick 15)"
    )
    parser.add_argument("--bytes-turns", type=int, help="turns for section 4 (500; quick 100)")
    parser.add_argument(
        "--messages", type=int, help="stored messages, section 5 (100000; quick 20000)"
    )
    parser.add_argument("--users", type=int, help="users, section 6 (10000; quick 500)")
    parser.add_argument(
        "--cli-runs", type=int, help="runs of each command, section 7 (21; quick 7)"
    )
    parser.add_argument(
        "--pg",
        default=os.environ.get("BENCH_PG_URL", DEFAULT_PG),
        help="PostgreSQL admin URL; a database is created there for the run",
    )
    parser.add_argument("--no-pg", action="store_true", help="skip the PostgreSQL parts")
    parser.add_argument(
        "--write",
        type=Path,
        metavar="MARKDOWN",
        help="also put the table into this file, between its bench markers",
    )
    args = parser.parse_args(argv)
    defaults = {
        "rounds": (5, 3),
        "turns": (20, 10),
        "inproc_turns": (50, 15),
        "bytes_turns": (500, 100),
        "messages": (100_000, 20_000),
        "users": (10_000, 500),
        "cli_runs": (21, 7),
    }
    for name, (full, quick) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    try:
        args.sections = sorted({int(s) for s in args.sections.split(",") if s.strip()})
    except ValueError:
        parser.error(f"--sections takes numbers among {ALL_SECTIONS}, like 1,3")
    if not args.sections or not set(args.sections) <= set(ALL_SECTIONS):
        parser.error(f"--sections takes numbers among {ALL_SECTIONS}, like 1,3")
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = sorted(set(args.targets) - set(http_turns.TARGETS))
    if unknown or not args.targets:
        parser.error(
            f"--targets: unknown {', '.join(unknown) or 'empty list'}; "
            f"choose among {', '.join(http_turns.TARGETS)}"
        )
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    started, load = datetime.now(UTC), os.getloadavg()[0]
    command = shlex.join(["python", "-m", "bench.run", *(sys.argv[1:] if argv is None else argv)])
    rows: list[Row] = []
    failed = False
    needs_pg = 3 in args.sections or (1 in args.sections and "chatwright-pg" in args.targets)
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="chatwright-bench-")))
        db = stack.enter_context(postgres(args.pg, needs_pg and not args.no_pg))
        runs: dict[int, Callable[[], list[Row]]] = {
            1: lambda: section_http(args, tmp, db.url),
            2: lambda: section_runtime(args, tmp),
            3: lambda: (
                section_pg(args, db.url, args.pg)
                if db.url
                else [Row(3, "PostgreSQL transactions and connections", db.skipped)]
            ),
            4: lambda: section_bytes(args, tmp),
            5: lambda: section_long_chat(args, tmp),
            6: lambda: section_memory(args, tmp),
            7: lambda: section_cli(args),
        }
        # Parts of a section run on their own: a failed one hides none of the others' rows.
        more: dict[int, Callable[[], list[Row]]] = {
            3: lambda: section_pg_runtime(args, db.url) if db.url else [],
        }
        for section in args.sections:
            start = time.monotonic()
            print(f"section {section} ...", file=sys.stderr, flush=True)
            for part in (runs[section], more.get(section)):
                if part is None:
                    continue
                try:
                    got = part()
                except Exception as exc:  # one broken section must not hide the others
                    failed = True
                    reason = " ".join(str(exc).split())[:300] or type(exc).__name__
                    got = [Row(section, "FAILED", reason)]
                rows += got
            print(f"section {section}: {time.monotonic() - start:.0f} s", file=sys.stderr)
        if 1 in args.sections and "chatwright-pg" in args.targets and db.url is None:
            rows.insert(0, Row(1, "HTTP: chatwright-pg", db.skipped))
    tried = needs_pg and not args.no_pg
    about = machine(started, load, db.version or ("not reachable" if tried else "not used"))
    print(", ".join(f"{k} {v}" for k, v in about))
    print(render_text(rows))
    if args.write:
        write_markdown(args.write, render_markdown(rows, about, command))
        print(f"table written to {args.write}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
