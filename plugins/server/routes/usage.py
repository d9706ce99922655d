"""The caller's token usage and budgets: ``GET /api/usage``.

Only ever the caller's own: the user id comes from the token, never from the
query. Operators see every user's with ``chatwright usage`` and manage
budgets with ``chatwright budgets``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query

from chatwright.errors import StorageError
from chatwright.plugins.server.dependencies import JSONRoute, RuntimeDep, SettingsDep, User
from chatwright.plugins.server.errors import USER, responses
from chatwright.plugins.server.usage_schemas import BudgetOut, UsageReport, UsageRow, UsageTotals
from chatwright.usage import bound, budget_states, check_range

router = APIRouter(tags=["usage"], route_class=JSONRoute)

# Longer than any ISO 8601 date or time; a longer value is refused before it is parsed.
Bound = Annotated[
    str | None,
    Query(
        max_length=40,
        description="An ISO 8601 date (2026-11-30) or time (2026-11-30T12:00:00Z; UTC when "
        "it names no zone).",
    ),
]


@router.get("/api/usage", responses=responses(*USER, 422))
async def usage(
    runtime: RuntimeDep,
    settings: SettingsDep,
    who: User,
    since: Bound = None,
    until: Bound = None,
) -> UsageReport:
    """The caller's tokens per UTC day, agent and model, their totals, and their budgets.

    since includes its day or time; until excludes its time, and includes its day when
    it is a date. Without them, every recorded turn.
    """
    start = bound("since", since) if since is not None else None
    end = bound("until", until, end=True) if until is not None else None
    check_range(start, end, "since and until")
    store = getattr(runtime.storage, "usage", None)
    if store is None:
        raise StorageError(f"the storage backend {settings.storage.backend!r} keeps no token usage")
    lines = await store.lines(who.user_id, since=start, until=end)
    rows = [UsageRow.of(line) for line in lines if line.user_id == who.user_id]
    states = await budget_states(store, settings, who.user_id, datetime.now(UTC))
    return UsageReport(
        since=start.isoformat() if start else None,
        until=end.isoformat() if end else None,
        currency=settings.usage.currency,
        rows=rows,
        totals=UsageTotals.of(rows),
        budgets=[BudgetOut.of(state) for state in states],
    )
