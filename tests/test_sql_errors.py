"""How the sql backend answers the driver's errors: a lost database is 503, never 500."""

from __future__ import annotations

import pytest
from sqlalchemy import exc

from chatwright.errors import StorageError
from chatwright.plugins.sql.errors import DatabaseErrors


@pytest.mark.parametrize(
    "error",
    [
        exc.OperationalError("SELECT 1", {}, Exception("server closed the connection")),
        exc.InterfaceError("SELECT 1", {}, Exception("connection already closed")),
        # What a pooler (PgBouncer) gives when the server connection is lost mid-transaction.
        exc.InternalError("SELECT 1", {}, Exception("server conn crashed?")),
    ],
    ids=["operational", "interface", "internal"],
)
def test_a_lost_connection_is_the_database_being_unavailable(error: exc.DBAPIError) -> None:
    with pytest.raises(StorageError, match="unavailable") as raised, DatabaseErrors("db", 30):
        raise error
    assert raised.value.http_status == 503
    assert "server conn" not in str(raised.value)  # driver text stays in the log


class _Held(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__("canceling statement due to lock timeout")
        self.sqlstate = sqlstate


@pytest.mark.parametrize("sqlstate", ["55P03", "40P01"], ids=["lock-timeout", "deadlock"])
def test_rows_held_too_long_are_a_503_logged_as_a_warning_unless_expected(
    sqlstate: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A lock timeout or a deadlock is RowsHeld (503): the sweeper takes another way on
    it and says it expects it (logged at debug level); anyone else's is a warning, as
    an operator's own lock_timeout must show in the log."""
    from chatwright.plugins.sql.errors import EXPECTED_WAITS, RowsHeld

    error = exc.OperationalError("DELETE ...", {}, _Held(sqlstate))
    caplog.set_level("DEBUG", logger="chatwright.plugins.sql.errors")
    with pytest.raises(RowsHeld) as raised, DatabaseErrors("db", 30):
        raise error
    assert raised.value.http_status == 503
    assert "try again" in str(raised.value) and "lock timeout" not in str(raised.value)
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    caplog.clear()
    expected = EXPECTED_WAITS.set(True)
    try:
        with pytest.raises(RowsHeld), DatabaseErrors("db", 30):
            raise error
    finally:
        EXPECTED_WAITS.reset(expected)
    assert [r.levelname for r in caplog.records] == ["DEBUG"]
