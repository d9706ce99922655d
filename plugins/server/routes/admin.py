"""Admin routes: create, change and delete agents and tool rows; export and import bundles.

Every change goes through :mod:`chatwright.catalog` (and :mod:`chatwright.bundles`),
as the CLI's does, so a bad row gets the CLI's error text: 422 for invalid
input, 404 for an unknown agent or row, 409 for a name already taken. Bodies
are plain JSON objects, checked there rather than by a model of this module.

Only admins may call them: in local mode the local user; with JWTs a token
whose claim ``server.admin_claim`` holds ``server.admin_value`` (by default
``app_metadata.role = "chatwright_admin"``), or with ``chatwright_admin: true``.
Others get 403. A change bumps the agent's config version in the database, so
the server's cached executor of that agent is rebuilt at its next turn.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Query, Response

from chatwright.errors import InvalidInputError, UnknownAgentError
from chatwright.plugins.server.admin_schemas import (
    AgentOut,
    BundleOut,
    DeletedAgentOut,
    ImportReportOut,
    RemovedToolOut,
    ToolRowOut,
)
from chatwright.plugins.server.auth import ForbiddenError, Principal
from chatwright.plugins.server.dependencies import JSONRoute, RuntimeDep, User
from chatwright.plugins.server.errors import USER, responses
from chatwright.runtime import Runtime

router = APIRouter(tags=["admin"], route_class=JSONRoute)

ADMIN_ONLY = (
    "admin only: this route changes the agents of every user; it needs a token with the "
    "admin claim (server.admin_claim)"
)


async def admin(who: User) -> Principal:
    if not who.admin:
        raise ForbiddenError(ADMIN_ONLY)
    return who


Admin = Annotated[Principal, Depends(admin)]
JsonObject = Annotated[Any, Body(description="A JSON object; see docs/http.md for its fields.")]
CHANGE = responses(*USER, 404, 409, 413, 422)


def _storable(body: Any) -> None:
    """Refuse a NUL or a lone surrogate anywhere in ``body``: no database keeps them as sent.

    Walked with a stack, not recursion: a body is as deep as the JSON parser allowed.
    """
    from chatwright.agents import not_a_json_number
    from chatwright.history import UNSTORABLE

    stack: list[tuple[str, Any]] = [("request body", body)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, dict):
            for key, item in value.items():
                if UNSTORABLE.search(key):
                    raise InvalidInputError(
                        f"{where}: a key holds a NUL character or a lone surrogate "
                        "(\\u0000, \\ud800-\\udfff), which cannot be stored; remove it"
                    )
                stack.append((f"{where}.{key}" if where != "request body" else key, item))
        elif isinstance(value, list):
            stack.extend((f"{where}.{n}", item) for n, item in enumerate(value))
        elif isinstance(value, float) and not math.isfinite(value):
            raise InvalidInputError(not_a_json_number(where))
        elif isinstance(value, str) and UNSTORABLE.search(value):
            raise InvalidInputError(
                f"{where}: holds a NUL character or a lone surrogate (\\u0000, "
                "\\ud800-\\udfff), which cannot be stored; remove it"
            )


def _object(body: Any, what: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidInputError(f"the request body must be a JSON object ({what})")
    _storable(body)
    return body


async def _tool_out(runtime: Runtime, row: Any, agent: str) -> ToolRowOut:
    from chatwright.bundles import secret_fields

    return ToolRowOut.of(row, agent, secret_fields(runtime.plugins, row.type))


@router.post("/api/agents", status_code=201, responses=CHANGE)
async def create_agent(body: JsonObject, runtime: RuntimeDep, who: Admin) -> AgentOut:
    """Create an agent: ``name`` and the fields of ``chatwright agents add``."""
    from chatwright import catalog

    data = dict(_object(body, "an agent"))
    name = data.pop("name", None)
    if not isinstance(name, str) or not name:
        raise InvalidInputError('the agent needs a "name"')
    return AgentOut.of(await catalog.create_agent(runtime, name, data))


@router.patch("/api/agents/{name}", responses=CHANGE)
async def change_agent(name: str, body: JsonObject, runtime: RuntimeDep, who: Admin) -> AgentOut:
    """Change an agent's fields; ``model_settings`` are merged (a null value removes a key)."""
    from chatwright import catalog

    return AgentOut.of(await catalog.change_agent(runtime, name, _object(body, "the changes")))


@router.delete("/api/agents/{name}", responses=responses(*USER, 404))
async def delete_agent(name: str, runtime: RuntimeDep, who: Admin) -> DeletedAgentOut:
    """Delete an agent and its tool rows; its users' chats, sessions and memory are kept."""
    from chatwright import catalog

    deleted = await catalog.delete_agent(runtime, name)
    return DeletedAgentOut(name=name, tools=deleted.tools)


@router.post("/api/agents/{name}/tools", status_code=201, responses=CHANGE)
async def add_tool(name: str, body: JsonObject, runtime: RuntimeDep, who: Admin) -> ToolRowOut:
    """Add a tool row to the agent, validated like ``chatwright tools add``."""
    from chatwright import catalog

    _storable(body)
    row, _ = catalog.stored_row(body, "request body")
    data = catalog.tool_definition(row, "request body")
    return await _tool_out(runtime, await catalog.add_tool(runtime, name, data), name)


@router.patch("/api/tools/{tool_id}", responses=CHANGE)
async def change_tool(
    tool_id: int, body: JsonObject, runtime: RuntimeDep, who: Admin
) -> ToolRowOut:
    """Change a tool row, validated like ``chatwright tools set``."""
    from chatwright import catalog

    _storable(body)
    # A row that is not there first, as `tools set` answers it.
    await catalog.tool_row(runtime, tool_id)
    changes = catalog.tool_changes(body, "request body")
    row = await catalog.change_tool(runtime, tool_id, changes)
    return await _tool_out(runtime, row, await catalog.agent_of(runtime, row))


@router.delete("/api/tools/{tool_id}", responses=responses(*USER, 404))
async def remove_tool(tool_id: int, runtime: RuntimeDep, who: Admin) -> RemovedToolOut:
    """Delete a tool row and its users' approval choices."""
    from chatwright import catalog

    row, agent = await catalog.remove_tool(runtime, tool_id)
    return RemovedToolOut(id=row.id, name=row.name, agent=agent)


@router.post("/api/tools/{tool_id}/copy", status_code=201, responses=CHANGE)
async def copy_tool(tool_id: int, body: JsonObject, runtime: RuntimeDep, who: Admin) -> ToolRowOut:
    """Copy a tool row to the agent ``to`` (as ``name``, default the same), validated for it."""
    from chatwright import catalog

    data = _object(body, '{"to": AGENT, "name": NEW}')
    unknown = sorted(set(data) - {"to", "name"})
    if unknown:
        raise InvalidInputError(f"request body: unknown field {', '.join(map(repr, unknown))}")
    to, new_name = data.get("to"), data.get("name")
    if not isinstance(to, str) or not to:
        raise InvalidInputError('request body: "to" must name the agent that gets the copy')
    if new_name is not None and not isinstance(new_name, str):
        raise InvalidInputError('request body: "name" must be a string')
    row = await catalog.copy_tool(runtime, tool_id, to, name=new_name)
    return await _tool_out(runtime, row, to)


@router.get(
    "/api/agents/{name}/export",
    responses={
        **responses(*USER, 404, 413, 422),
        200: {
            "model": BundleOut,
            "content": {"application/yaml": {"schema": {"type": "string"}}},
        },
    },
)
async def export_agent(
    name: str,
    runtime: RuntimeDep,
    who: Admin,
    format: Annotated[Literal["json", "yaml"], Query()] = "json",
) -> Response:
    """The agent's bundle (as ``chatwright agents export``), secrets marked."""
    from chatwright.bundles import dump, export_bundle

    agent = await runtime.storage.agents.get(name)
    if agent is None:
        raise UnknownAgentError(name)
    text = dump(
        export_bundle(agent, await runtime.storage.tools.list(name), runtime.plugins), format
    )
    media = "application/yaml" if format == "yaml" else "application/json"
    return Response(text, media_type=media)


@router.post("/api/agents/import", responses=responses(*USER, 404, 409, 413, 422))
async def import_agent(body: JsonObject, runtime: RuntimeDep, who: Admin) -> ImportReportOut:
    """Create or update an agent from ``bundle`` (as ``chatwright agents import``).

    ``secrets`` fills the bundle's secret markers (``{"model_settings.api_key": "…"}``);
    ``prune`` removes the agent's tools the bundle has not; ``dry_run`` changes nothing.
    A key given twice anywhere in the body is refused, as in every body and in a bundle file.
    """
    from chatwright.bundles import check, import_bundle, measure

    data = _object(body, '{"bundle": {...}, "secrets": {...}, "prune": false, "dry_run": false}')
    unknown = sorted(set(data) - {"bundle", "secrets", "prune", "dry_run"})
    if unknown:
        raise InvalidInputError(
            f"request body: unknown field {', '.join(map(repr, unknown))}; it has bundle, "
            "secrets, prune and dry_run"
        )
    secrets = data.get("secrets") or {}
    if not isinstance(secrets, dict) or not all(isinstance(v, str) for v in secrets.values()):
        raise InvalidInputError('request body: "secrets" must map each marked place to a string')
    flags = {k: data.get(k, False) for k in ("prune", "dry_run")}
    for key, value in flags.items():
        if not isinstance(value, bool):
            raise InvalidInputError(f'request body: "{key}" must be true or false')
    # Measured as a bundle file is: depth, number of values and their types.
    measure(data.get("bundle"), "bundle")
    bundle = check(data.get("bundle"), "bundle")
    report = await import_bundle(
        runtime, bundle, secrets=secrets, prune=flags["prune"], dry_run=flags["dry_run"]
    )
    return ImportReportOut.of(report)
