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
