"""The admin operations on agents and their tool rows, validated once for every caller.

``chatwright agents``/``tools``, the bundle import (:mod:`chatwright.bundles`)
and the server's admin routes all change the catalog through these functions,
so that a bad row gets the same error text from each of them:

- a tool row given as data is checked field by field (:func:`tool_definition`,
  :func:`tool_changes`), then built by its type against the live schema
  (:func:`check_tool_row`, the check of ``tools add``);
- an agent's fields are checked by :func:`chatwright.agents.validate_agent`
  and its model provider by :func:`chatwright.agents.check_model_provider`.

Errors are chatwright errors (:class:`InvalidInputError`, :class:`NotFoundError`,
:class:`UnknownAgentError`, :class:`AlreadyExistsError`), which the CLI prints
and the API answers as 422, 404 or 409. Every change goes through the stores,
whose rows bump the agent's config version, so a cached executor of a changed
agent is rebuilt at its next turn.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from chatwright.agents import (
    check_model_provider,
    json_problem,
    unstorable,
    validate_agent,
)
from chatwright.approvals import APPROVAL_MODES, DEFAULT_APPROVAL, DEFAULT_USER_CHOICE, USER_CHOICES
from chatwright.errors import (
    AlreadyExistsError,
    InvalidInputError,
    NotFoundError,
    ToolNameTakenError,
    UnknownAgentError,
)
from chatwright.stores import Agent, ToolRow

if TYPE_CHECKING:
    from chatwright.registry import Plugins
    from chatwright.runtime import Runtime
    from chatwright.settings import Settings


class Configured(Protocol):
    """Settings and plugins: a runtime, or the CLI's context before any database is opened."""

    @property
    def settings(self) -> Settings: ...

    @property
    def plugins(self) -> Plugins: ...


ROW_FIELDS = frozenset(
    {
        "name",
        "type",
        "description",
        "config",
        "is_active",
        "position",
        "order",
        "approval",
        "approval_default",
    }
)
"""The fields of a tool row given as data (``order`` is the original system's ``position``)."""

CHANGEABLE = ("name", "description", "config", "is_active", "position", "approval")
MODEL_VISIBLE = frozenset({"name", "type", "description", "config"})
"""The fields whose change makes the row be built again before it is stored."""

MAX_POSITION = 2**31 - 1
MAX_ROW_ID = 2**31 - 1

_CHECKS: dict[str, tuple[type, str]] = {
    "name": (str, "a non-empty string"),
    "type": (str, "a string"),
    "description": (str, "a string"),
    "is_active": (bool, "true or false"),
    "approval": (str, f"one of {', '.join(APPROVAL_MODES)}"),
    "approval_default": (str, f"one of {', '.join(USER_CHOICES)}"),
}


def _check_known(data: Mapping[str, Any], source: str) -> None:
    unknown = sorted(set(data) - ROW_FIELDS)
    if unknown:
        raise InvalidInputError(
            f"{source}: unknown field {', '.join(map(repr, unknown))}; a tool row has "
            "name, type, description, config, is_active, position, approval and "
            "approval_default"
        )


def _finite_config(data: Mapping[str, Any], source: str) -> None:
    problem = json_problem(data.get("config"), "config")
    if problem is not None:
        raise InvalidInputError(f"{source}: {problem}")


def _check_kinds(data: Mapping[str, Any], source: str) -> None:
    _finite_config(data, source)
    texts = {k: v for k, v in data.items() if k != "config"}
    problem = unstorable(texts, "", top="the row")
    if problem is not None:
        raise InvalidInputError(f"{source}: {problem}")
    for key, (kind, words) in _CHECKS.items():
        value = data.get(key)
        if key in data and (not isinstance(value, kind) or (key == "name" and not value)):
            raise InvalidInputError(f"{source}: {key} must be {words}, not {value!r}")
    for key in ("position", "order"):
        value = data.get(key)
        if key in data and (
            isinstance(value, bool) or not isinstance(value, int) or abs(value) > MAX_POSITION
        ):
            raise InvalidInputError(
                f"{source}: {key} must be an integer (at most {MAX_POSITION} either way), "
                f"not {value!r}"
            )


def tool_definition(data: Any, source: str) -> dict[str, Any]:
    """A new tool row given as data (a JSON object), its fields checked; ``source`` names it."""
    if not isinstance(data, dict):
        raise InvalidInputError(f"{source} must hold one JSON object (a tool row)")
    _check_known(data, source)
    if not isinstance(data.get("name"), str) or not data["name"]:
        raise InvalidInputError(f'{source}: the tool needs a "name"')
    _check_kinds(data, source)
    return dict(data)


EXPORTED_FIELDS = ("id", "agent_id", "agent", "created_at", "updated_at", "problems")
"""Fields of a tool row as it was stored somewhere (``tools list --json``, the original
system's ``agent_tools``) that a new row does not take: :func:`stored_row` drops them."""
ORIGINAL_NAMES = {"tool_name": "name", "tool_type": "type", "tool_config": "config"}
"""The original system's first column names of a tool row, and chatwright's."""


def stored_row(data: Any, source: str) -> tuple[Any, list[str]]:
    """A tool row copied from where it was stored, made a definition for :func:`tool_definition`.

    Rows listed by ``chatwright tools list --json`` or exported from the original
    system's ``agent_tools`` carry their id, agent, timestamps and (there)
    ``is_deleted``, and may use the original's first column names (``tool_name``,
    ``tool_type``, ``tool_config``). Those are dropped or renamed; returns the
    definition and the fields dropped, for the caller to say so. A row marked
    deleted is refused. Anything that is not an object is left to
    :func:`tool_definition` to refuse.
    """
    if not isinstance(data, dict):
        return data, []
    row = dict(data)
    deleted = row.pop("is_deleted", None)
    if deleted is True:
        raise InvalidInputError(
            f"{source}: the row is marked is_deleted; it was removed where it came from"
        )
    dropped = [] if deleted is None else ["is_deleted"]
    for old, new in ORIGINAL_NAMES.items():
        if old in row:
            if new in row:
                raise InvalidInputError(f"{source}: give {new!r} or {old!r}, not both")
            row[new] = row.pop(old)
    for key in EXPORTED_FIELDS:
        if key in row:
            del row[key]
            dropped.append(key)
    return row, dropped


def tool_changes(data: Any, source: str) -> dict[str, Any]:
    """Changes of a tool row given as data, checked like a new row's fields."""
    if not isinstance(data, dict):
        raise InvalidInputError(f"{source} must hold one JSON object (the fields to change)")
    if "type" in data:
        raise InvalidInputError(
            f"{source}: the type of a tool row cannot change; add a new row with "
            "`chatwright tools add` and remove this one"
        )
    _check_known(data, source)
    _check_kinds(data, source)
    changes = dict(data)
    if "order" in changes:
        changes.setdefault("position", changes["order"])
        del changes["order"]
    if not changes:
        raise InvalidInputError(
            f"{source}: nothing to change; give any of {', '.join(CHANGEABLE)} or approval_default"
        )
    return changes


def candidate_row(agent: Agent, data: Mapping[str, Any], **given: Any) -> ToolRow:
    """The row ``data`` would be (not stored): id 0, defaults filled in."""
    position = data.get("position", data.get("order"))
    now = datetime.now(UTC)
    return ToolRow(
        id=0,
        agent_id=agent.id,
        name=str(data["name"]),
        type=str(data.get("type", "crud")),
        description=str(data.get("description") or ""),
        config=data.get("config", {}),
        is_active=bool(data.get("is_active", True)),
        position=int(position) if isinstance(position, int) else 0,
        created_at=now,
        updated_at=now,
        approval=given.get("approval") or data.get("approval", DEFAULT_APPROVAL),
        approval_default=given.get("approval_default")
        or data.get("approval_default", DEFAULT_USER_CHOICE),
    )


async def check_tool_row(runtime: Runtime, row: ToolRow, agent: str, failure: str) -> None:
    """Build ``row`` as a chat would; InvalidInputError ``failure: problems`` if it fails."""
    from chatwright.tools import ToolContext, build_row

    context = ToolContext(agent, runtime.storage, runtime.settings)
    report = await build_row(row, agent, runtime.plugins, context)
    if not report.ok:
        problems = "; ".join(p.brief() for p in report.problems)
        raise InvalidInputError(f"{failure}: {problems}")


async def agent_named(runtime: Runtime, name: str) -> Agent:
    found = await runtime.storage.agents.get(name)
    if found is None:
        raise UnknownAgentError(name)
    return found


async def tool_row(runtime: Runtime, tool_id: int) -> ToolRow:
    found = None
    if not isinstance(tool_id, bool) and 0 < tool_id <= MAX_ROW_ID:
        found = await runtime.storage.tools.get(tool_id)
    if found is None:
        raise NotFoundError(f"no tool row with id {tool_id}; see `chatwright tools list`")
    return found


async def agent_of(runtime: Runtime, row: ToolRow) -> str:
    """The name of the agent a tool row belongs to."""
    names = {a.id: a.name for a in await runtime.storage.agents.list()}
    return names.get(row.agent_id, str(row.agent_id))


# -- tool rows -------------------------------------------------------------------------


async def add_tool(
    runtime: Runtime,
    agent: str,
    data: Mapping[str, Any],
    *,
    approval: str | None = None,
    approval_default: str | None = None,
) -> ToolRow:
    """Validate a tool row (checked by :func:`tool_definition`) against its type, then add it."""
    found = await agent_named(runtime, agent)
    candidate = candidate_row(found, data, approval=approval, approval_default=approval_default)
    await check_tool_row(runtime, candidate, agent, f"tool {candidate.name!r} not added")
    position = data.get("position", data.get("order"))
    return await insert_row(
        runtime, agent, candidate, position if isinstance(position, int) else None
    )


async def insert_row(
    runtime: Runtime, agent: str, candidate: ToolRow, position: int | None
) -> ToolRow:
    """Store ``candidate`` (a checked :func:`candidate_row`) as a new row of ``agent``'s.

    ``position`` None puts it after the agent's last tool.
    """
    return await runtime.storage.tools.add(
        agent,
        candidate.name,
        type=candidate.type,
        config=candidate.config,
        description=candidate.description,
        is_active=candidate.is_active,
        position=position,
        approval=candidate.approval,
        approval_default=candidate.approval_default,
    )


async def change_tool(runtime: Runtime, tool_id: int, changes: Mapping[str, Any]) -> ToolRow:
    """Change a tool row; a new name, description or config is validated like a new row.

    A row that does not load can still get another approval mode, position or
    be disabled; changing what the model sees of it needs a row that loads.
    """
    row = await tool_row(runtime, tool_id)
    _finite_config(changes, f"tool row {tool_id} not changed")
    if MODEL_VISIBLE & set(changes):
        agent = await agent_of(runtime, row)
        candidate = replace(row, **changes)
        await check_tool_row(runtime, candidate, agent, f"tool row {tool_id} not changed")
    return await runtime.storage.tools.update(tool_id, **changes)


async def remove_tool(runtime: Runtime, tool_id: int) -> tuple[ToolRow, str]:
    """Delete a tool row (its users' approval choices go with it); the row and its agent."""
    row = await tool_row(runtime, tool_id)
    agent = await agent_of(runtime, row)
    if not await runtime.storage.tools.delete(tool_id):
        raise NotFoundError(f"no tool row with id {tool_id}; see `chatwright tools list`")
    return row, agent


async def copy_tool(
    runtime: Runtime, tool_id: int, to_agent: str, *, name: str | None = None
) -> ToolRow:
    """A copy of a tool row for agent ``to_agent``, validated against that agent."""
    row = await tool_row(runtime, tool_id)
    data: dict[str, Any] = {
        "name": row.name if name is None else name,
        "type": row.type,
        "description": row.description,
        "config": row.config,
        "is_active": row.is_active,
        "approval": row.approval,
        "approval_default": row.approval_default,
    }
    tool_definition(data, f"copy of tool row {tool_id}")
    try:
        return await add_tool(runtime, to_agent, data)
    except AlreadyExistsError as exc:
        # The way that changes no other row first.
        own = 'give the copy a name of its own (--name NEW; "name" in the API\'s body)'
        if isinstance(exc, ToolNameTakenError):
            raise AlreadyExistsError(exc.worded(own)) from None
        raise AlreadyExistsError(f"{exc}; {own}") from None


# -- agents ----------------------------------------------------------------------------


def agent_fields(
    runtime: Configured, name: str, fields: Mapping[str, Any], *, partial: bool
) -> dict[str, Any]:
    """Validated fields of agent ``name``: the shape and the model's provider."""
    data = dict(fields)
    if not partial and "model" not in data:
        default = runtime.settings.models.default
        if default is None:
            raise InvalidInputError(
                f"which model for agent {name!r}? give --model PROVIDER:NAME, or set "
                "models.default (CHATWRIGHT_MODELS__DEFAULT or [models] default in the "
                "settings file)"
            )
        data["model"] = default
    valid = validate_agent(name, data, partial=partial)
    valid.pop("name", None)
    if "model" in valid:
        check_model_provider(runtime.plugins, name, valid["model"])
    return valid


async def create_agent(runtime: Runtime, name: str, fields: Mapping[str, Any]) -> Agent:
    """Add an agent (the model defaults to the ``models.default`` setting)."""
    valid = agent_fields(runtime, name, fields, partial=False)
    return await runtime.storage.agents.create(name, **valid)


def merged_settings(stored: Any, changes: Mapping[str, Any]) -> dict[str, Any]:
    """``stored`` model settings with ``changes`` merged in; a None value removes its key."""
    merged = dict(stored) if isinstance(stored, Mapping) else {}
    for key, value in changes.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


async def change_agent(
    runtime: Runtime, name: str, fields: Mapping[str, Any], *, merge_settings: bool = True
) -> Agent:
    """Change an agent; model settings are merged into the stored ones unless told not to."""
    # An agent that is not there first: its fields' faults are no use to whoever asked.
    current = await agent_named(runtime, name)
    valid = agent_fields(runtime, name, fields, partial=True)
    if not valid:
        raise InvalidInputError(f"agent {name!r}: nothing to change")
    if "model_settings" in valid and merge_settings:
        valid["model_settings"] = merged_settings(current.model_settings, valid["model_settings"])
    return await runtime.storage.agents.update(name, **valid)


@dataclass(frozen=True)
class DeletedAgent:
    agent: Agent
    tools: int
    """How many tool rows went with it."""


async def delete_agent(runtime: Runtime, name: str) -> DeletedAgent:
    """Delete an agent and its tool rows.

    Its users' chats, sessions, memory and customizations are kept: they are
    the users' data, found by the agent's name, and an agent created again
    under that name has them back.
    """
    found = await agent_named(runtime, name)
    tools = len(await runtime.storage.tools.list(name))
    if not await runtime.storage.agents.delete(name):
        raise UnknownAgentError(name)
    return DeletedAgent(found, tools)
