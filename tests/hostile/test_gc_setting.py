"""``server.gc_threshold``, set to what it must refuse.

The setting goes straight to ``gc.set_threshold``: a negative value raises
there, a huge one lets cyclic garbage pile up for millions of allocations, and
a non-number must not reach it at all. ``chatwright serve`` refuses each with
one line naming the setting, before anything starts; the bounds themselves
serve.
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import pytest

from chatwright import testing
from chatwright.plugins.server import shutdown
from chatwright.plugins.server.app import create_app
from tests.harness import run

HOSTILE = ("-1", "-700", "1000001", "9" * 40, "1e4", "2.5", "lots", "", "[10000]", "0x2710")


def test_serve_refuses_a_hostile_gc_threshold_with_one_line_and_starts_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    started: list[Any] = []
    monkeypatch.setattr(shutdown, "run", lambda config, deadline: started.append(config))
    for bad in HOSTILE:
        monkeypatch.setenv("CHATWRIGHT_SERVER__GC_THRESHOLD", bad)
        result = run("serve", "--port", "8131")
        assert result.exit_code == 1, (bad, result.output)
        assert "server.gc_threshold" in result.stderr, (bad, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "Traceback" not in result.output
    assert started == []
    # The control: the bounds are accepted.
    for good in ("0", "1000000"):
        monkeypatch.setenv("CHATWRIGHT_SERVER__GC_THRESHOLD", good)
        assert run("serve", "--port", "8132").exit_code == 0
    assert len(started) == 2


async def test_the_largest_threshold_serves_and_is_given_back(tmp_path: Path) -> None:
    before = gc.get_threshold()
    settings = testing.settings(
        storage={"url": f"sqlite:///{tmp_path}/gc.db"}, server={"gc_threshold": 1_000_000}
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        assert gc.get_threshold()[0] == 1_000_000
    assert gc.get_threshold() == before
