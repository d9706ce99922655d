"""How long `chatwright --help` takes, next to a bare interpreter start.

Run: .venv/bin/python bench/cli_startup.py [--runs N]

Both commands run alternately in one process tree, so machine noise hits both
alike; the report gives medians and the ratio of the medians. The heavy
dependencies (SQLAlchemy, pydantic, LangChain, FastAPI) must not be imported
for `--help`; the last line lists any that were.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HEAVY = ("sqlalchemy", "pydantic", "langchain", "fastapi", "uvicorn", "alembic", "openai")


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, env=env)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=21)
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATWRIGHT_")}
    script = str(Path(sys.executable).parent / "chatwright")
    commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "chatwright --help": [script, "--help"],
        "chatwright --version": [script, "--version"],
    }
    samples: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(args.runs):
        for name, argv in commands.items():
            samples[name].append(timed(argv, env))
    base = statistics.median(samples["python -c pass"])
    for name, values in samples.items():
        median = statistics.median(values)
        print(f"{name:24} median {median * 1000:7.1f} ms   x{median / base:5.2f} of bare python")
    probe = (
        "import sys\nfrom chatwright.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))"
    )
    out = (
        subprocess.run(
            [sys.executable, "-c", probe], check=True, capture_output=True, text=True, env=env
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    print(f"heavy modules imported by --help: {out}")


if __name__ == "__main__":
    main()
