"""The turn path under load, from outside: a real ``chatwright serve`` on a real PostgreSQL.

The load driver and the ``pg_stat_activity`` sampler are those of
``bench/load.py``, which reports the same figures at full size. The database
is made with ``chatwright init --example`` and ``chatwright agents add`` (a
``scripted`` agent whose replies each sleep a little, so that turns overlap),
the server runs with the default pool (``storage.pool_size`` 15,
``storage.max_overflow`` 0). With no PostgreSQL server the test skips, saying
why; with ``CI=true`` it fails instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.load import Server, burst, postgres_database, sampling, set_up
from tests.harness import ADMIN_URL, admin_connect

CHATS = 200
SLEEP = 0.3
POOL = 15 + 0  # the defaults of storage.pool_size and storage.max_overflow


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    admin_connect().close()  # skips (or fails with CI=true) when no server answers
    with postgres_database(ADMIN_URL) as (_, url):
        set_up(url, tmp_path_factory.mktemp("load-init"), replies=CHATS, sleep=SLEEP)
        yield url


async def test_200_chats_at_once_get_no_503_and_the_server_holds_a_bounded_pool(
    database: str, tmp_path: Path
) -> None:
    """Before turns stopped holding a connection each, 60 chats at once got 503s ("too
    many clients"); then a session open that took a second pooled connection while
    holding one deadlocked the pool until storage.statement_timeout (503 again)."""
    # No sweep during the load: the pool's connections are the turns' alone.
    with (
        Server(database, tmp_path, CHATWRIGHT_SESSIONS__SWEEP_INTERVAL="3600") as server,
        sampling(database) as seen,
    ):
        got = await burst(server.url, CHATS, turns=1)
        log = server.log()

    assert dict(got.statuses) == {200: 2 * CHATS}, (got.statuses, got.errors, log[-3000:])
    assert got.turns == CHATS
    assert seen.samples > 10, "pg_stat_activity was hardly sampled"
    # The load took many connections at once: the bound below was under test.
    assert seen.pool > 5, seen
    assert seen.pool <= POOL, f"more connections than pool_size + max_overflow: {seen}"
    assert seen.listener == 1, seen
    assert seen.lock == 0, seen
    assert seen.total <= POOL + 1, seen  # + the config listener
    assert "Traceback" not in log, log
