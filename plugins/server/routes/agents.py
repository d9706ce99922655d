"""Agents: the ones configured, their tools, and the caller's prompt customizations."""

from __future__ import annotations

from fastapi import APIRouter, Request

from chatwright.errors import UnknownAgentError
from chatwright.plugins.server.auth import Principal
from chatwright.plugins.server.dependencies import JSONRoute, RuntimeDep, User, agent_exists
from chatwright.plugins.server.errors import USER, responses
from chatwright.plugins.server.schemas import (
    AgentDetail,
    AgentSummary,
    Customization,
    CustomizationOut,
    ToolEntry,
)
from chatwright.plugins.server.tool_checks import ToolChecks
from chatwright.runtime import Runtime

router = APIRouter(prefix="/api/agents", tags=["agents"], route_class=JSONRoute)


@router.get("", responses=responses(*USER))
async def agents(runtime: RuntimeDep, who: User) -> list[AgentSummary]:
    """The configured agents."""
    return [
        AgentSummary(name=a.name, model=a.model, history_window=a.history_window)
        for a in await runtime.storage.agents.list()
    ]


@router.get("/{name}", response_model_exclude_unset=True, responses=responses(*USER, 404))
async def agent(name: str, request: Request, runtime: RuntimeDep, who: User) -> AgentDetail:
    """An agent and its tool rows; admins also see whether each tool loads."""
    found = await runtime.storage.agents.get(name)
    if found is None:
        raise UnknownAgentError(name)
    # The tool check is cached per agent while its rows are unchanged (ToolChecks),
    # so every caller may have it: a row refused at load is listed as not active.
    checks: ToolChecks = request.app.state.tool_checks
    tools = []
    for report in await checks.reports(runtime, name):
        # Only the fields passed here are sent (the route excludes unset ones).
        admin = {"ok": report.ok, "problems": [p.brief() for p in report.problems]}
        entry = ToolEntry.of(report.row, **(admin if who.admin else {}))
        entry.is_active = report.row.is_active and report.ok
        tools.append(entry)
    return AgentDetail(
        name=found.name, model=found.model, history_window=found.history_window, tools=tools
    )


async def _customizations(runtime: Runtime, who: Principal, name: str) -> list[CustomizationOut]:
    return [
        CustomizationOut.of(c) for c in await runtime.storage.customizations.list(who.user_id, name)
    ]


@router.get("/{name}/customizations", responses=responses(*USER, 404))
async def get_customizations(name: str, runtime: RuntimeDep, who: User) -> list[CustomizationOut]:
    """The caller's prompt customizations of the agent."""
    await agent_exists(runtime, name)
    return await _customizations(runtime, who, name)


@router.put("/{name}/customizations", responses=responses(*USER, 404, 413, 422))
async def put_customization(
    name: str, body: Customization, runtime: RuntimeDep, who: User
) -> list[CustomizationOut]:
    """Set one of the caller's customizations; the agent's prompt has it from the next turn."""
    await agent_exists(runtime, name)
    await runtime.storage.customizations.put(
        who.user_id,
        name,
        body.kind,
        body.content,
        priority=body.priority,
        is_active=body.is_active,
    )
    return await _customizations(runtime, who, name)
