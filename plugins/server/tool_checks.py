"""The tool checks behind ``GET /api/agents/{name}``, kept between calls.

Checking a tool builds it (a ``crud`` tool inspects its table), which made the
route cost some twenty times another call. Every caller needs the outcome (a
row refused at load is listed as not active; admins also see why), so the
reports of an agent are kept while its tool rows are unchanged (same ids, contents and
``updated_at``) and for at most :data:`LIFETIME` seconds, so that what a row
does not show (a table dropped or altered) is seen again soon.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from chatwright.runtime import Runtime
    from chatwright.stores import ToolRow
    from chatwright.tools import RowReport

LIFETIME = 10.0


def fingerprint(rows: list[ToolRow]) -> str:
    """What of an agent's rows a check depends on; a change to any of them shows here."""
    return json.dumps(
        [
            [r.id, r.name, r.type, r.description, r.config, r.is_active, str(r.updated_at)]
            for r in rows
        ],
        default=str,
        sort_keys=True,
    )


class ToolChecks:
    """The latest reports of each agent, with the fingerprint and time they were made at."""

    def __init__(self) -> None:
        self._kept: dict[str, tuple[str, float, list[RowReport]]] = {}

    async def reports(self, runtime: Runtime, agent_name: str) -> list[RowReport]:
        from chatwright.tools import check_tools

        rows = await runtime.storage.tools.list(agent_name)
        mark = fingerprint(rows)
        kept = self._kept.get(agent_name)
        if kept is not None and kept[0] == mark and time.monotonic() - kept[1] < LIFETIME:
            return kept[2]
        reports = await check_tools(runtime.storage, runtime.settings, runtime.plugins, agent_name)
        # Fingerprinted by the rows read before the check: a row changed meanwhile is
        # checked again at the next call.
        self._kept[agent_name] = (mark, time.monotonic(), reports)
        return reports
