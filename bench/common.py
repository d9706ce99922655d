"""What every benchmark of the turn path shares: the turn itself, the seed, statistics.

The turn is the same everywhere: the model calls the insert tool (one row into
the table ``bench_items``), then replies. The model is chatwright's ``scripted``
model, whose replies are listed up front, so an agent's script must be as long
as the turns it will serve: :func:`script` makes one for ``turns`` turns.
"""

from __future__ import annotations

import math
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

from chatwright.stores import Storage
from chatwright.tables import ColumnSpec, TableCreator, TableSpec

ROOT = Path(__file__).resolve().parent.parent
TABLE = "bench_items"
TOOL = "insert_item"
REPLY = "Inserted."
PROMPT = "You store items."
ITEMS = TableSpec(
    TABLE,
    (
        ColumnSpec("id", "integer", primary_key=True),
        ColumnSpec("user_id", "string", nullable=False),
        ColumnSpec("title", "string", nullable=False),
        ColumnSpec("created_at", "datetime", nullable=False, default="now"),
    ),
    indexes=(("user_id",),),
)
CRUD_CONFIG = {
    "table": TABLE,
    "operation": "create",
    "args": {"title": {"type": "string", "description": "The item's title"}},
    "returning": ["id", "title"],
}
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/postgres"


def script(turns: int) -> list[dict[str, Any]]:
    """The scripted model's replies for ``turns`` turns: call the tool, then reply."""
    call = {"tool_calls": [{"name": TOOL, "args": {"title": "bench"}}]}
    return [call, {"content": REPLY}] * turns


def is_the_turn(response: str, tool_names: Sequence[str]) -> bool:
    """Whether a turn's answer is the benchmark's turn: one insert, then the reply."""
    return response == REPLY and list(tool_names) == [TOOL]


async def seed_agent(storage: Storage, name: str, turns: int) -> None:
    """The table, and an agent ``name`` with the insert tool and a script for ``turns`` turns."""
    records = storage.records
    if not isinstance(records, TableCreator):
        raise RuntimeError(f"the storage {storage.description} cannot create tables")
    await records.ensure_table(ITEMS)
    await storage.agents.create(
        name,
        system_prompt=PROMPT,
        model=f"scripted:{name}",
        model_settings={"responses": script(turns)},
    )
    await storage.tools.add(
        name, TOOL, type="crud", config=CRUD_CONFIG, description="Insert one item."
    )


# -- statistics -------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile (``fraction`` in 0..1)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def rss_bytes() -> int:
    """This process's resident set size, from /proc/self/status."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("/proc/self/status has no VmRSS line")


# -- processes ----------------------------------------------------------------


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any CHATWRIGHT_* setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATWRIGHT_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def chatwright_script() -> str:
    return str(Path(sys.executable).parent / "chatwright")


def cpu_seconds(pid: int) -> float | None:
    """The CPU time process ``pid`` has used so far, user and system, all its threads
    (``/proc/<pid>/stat``, in clock ticks); None where there is no such file."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Served(NamedTuple):
    base: str
    """The server's base URL."""
    pid: int
    """Its process, the one that serves (uvicorn with one worker)."""


@contextmanager
def server(
    name: str, argv: list[str], port: int, env: dict[str, str], cwd: Path
) -> Iterator[Served]:
    """Run a server process until the block ends; yield it once it answers."""
    import httpx

    log = cwd / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                tail = log.read_text(errors="replace")[-2000:]
                raise RuntimeError(
                    f"the {name} server exited at start ({process.returncode}):\n{tail}"
                )
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the {name} server did not answer /healthz within 60 s")
            time.sleep(0.1)
        yield Served(base, process.pid)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
