""":mod:`chatwright.catalog`, the admin operations the CLI, bundles and the API share.

Run on a started runtime over SQLite and PostgreSQL (the ``runtimes``
fixture), with the example agent seeded; the CLI's ``tools set`` is driven
once over every field it can change.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import sqlalchemy as sa

from chatwright import catalog
from chatwright.errors import (
    AlreadyExistsError,
    InvalidInputError,
    NotFoundError,
    ToolNameTakenError,
    UnknownAgentError,
)
from chatwright.plugins.example import assistant as example
from chatwright.runtime import Runtime
from tests.harness import ok

AGENT = example.AGENT


async def started(runtimes: Any) -> Runtime:
    runtime: Runtime = await runtimes()
    await example.seed(runtime.storage, "offline:assistant")
    return runtime


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ([], "must hold one JSON object"),
        ({}, 'the tool needs a "name"'),
        ({"name": ""}, 'the tool needs a "name"'),
        ({"name": "x", "id": 1}, "unknown field 'id'"),
        ({"name": "x", "is_active": "yes"}, "is_active must be true or false"),
        ({"name": "x", "position": True}, "position must be an integer"),
        ({"name": "x", "position": 2**40}, "position must be an integer"),
        ({"name": "x", "description": 5}, "description must be a string"),
    ],
)
def test_a_tool_definition_names_its_bad_field(data: Any, needle: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        catalog.tool_definition(data, "src")
    assert str(caught.value).startswith("src") and needle in str(caught.value)


def test_tool_changes_refuse_a_type_and_nothing() -> None:
    with pytest.raises(InvalidInputError, match="type of a tool row cannot change"):
        catalog.tool_changes({"type": "crud"}, "body")
    with pytest.raises(InvalidInputError, match="nothing to change"):
        catalog.tool_changes({}, "body")
    assert catalog.tool_changes({"order": 3}, "body") == {"position": 3}


async def test_change_tool_covers_every_field_and_validates_what_the_model_sees(
    runtimes: Any,
) -> None:
    runtime = await started(runtimes)
    row = (await runtime.storage.tools.list(AGENT))[1]
    config = dict(row.config)
    config["limit"] = 3
    changes = {
        "name": "renamed",
        "description": "Renamed.",
        "config": config,
        "is_active": False,
        "position": 77,
        "approval": "user",
        "approval_default": "auto",
    }
    changed = await catalog.change_tool(runtime, row.id, changes)
    for key, value in changes.items():
        assert getattr(changed, key) == value, key
    with pytest.raises(InvalidInputError, match=f"tool row {row.id} not changed: config"):
        await catalog.change_tool(runtime, row.id, {"config": {"table": "ghosts"}})
    assert (await runtime.storage.tools.get(row.id)) == changed
    with pytest.raises(NotFoundError, match="no tool row with id 2147483648"):
        await catalog.change_tool(runtime, 2**31, {"description": "x"})


async def test_copy_is_checked_against_the_target_agent(runtimes: Any) -> None:
    runtime = await started(runtimes)
    await catalog.create_agent(runtime, "other", {"model": "offline:other"})
    row = (await runtime.storage.tools.list(AGENT))[0]
    copy = await catalog.copy_tool(runtime, row.id, "other")
    assert (copy.name, copy.type, copy.config, copy.description) == (
        row.name,
        row.type,
        row.config,
        row.description,
    )
    assert copy.id != row.id and copy.agent_id != row.agent_id
    with pytest.raises(AlreadyExistsError, match="already has a tool named") as clash:
        await catalog.copy_tool(runtime, row.id, "other")
    assert f"(row {copy.id}); give the copy a name of its own (--name NEW" in str(clash.value)
    assert "pick another name" not in str(clash.value)
    with pytest.raises(UnknownAgentError):
        await catalog.copy_tool(runtime, row.id, "nobody")
    with pytest.raises(InvalidInputError, match="not added: name"):
        await catalog.copy_tool(runtime, row.id, "other", name="bad name")
    assert [t.name for t in await runtime.storage.tools.list("other")] == [row.name]


async def test_a_store_renaming_a_tool_onto_a_taken_name_names_the_row_and_the_ways_out(
    runtimes: Any,
) -> None:
    runtime = await started(runtimes)
    first, second = (await runtime.storage.tools.list(AGENT))[:2]
    with pytest.raises(ToolNameTakenError) as clash:
        # The store itself, past the catalog's own check: the database refuses the name.
        await runtime.storage.tools.update(second.id, name=first.name)
    said = str(clash.value)
    assert said.startswith(
        f"agent {AGENT!r} already has a tool named {first.name!r} (row {first.id}); "
        "pick another name, rename that row with "
        f"`chatwright tools set {first.id} --name NEW`"
    ), said
    assert (await runtime.storage.tools.get(second.id)).name == second.name  # type: ignore[union-attr]


async def test_remove_takes_the_users_choices_with_the_row(runtimes: Any) -> None:
    runtime = await started(runtimes)
    row = (await runtime.storage.tools.list(AGENT))[0]
    await catalog.change_tool(runtime, row.id, {"approval": "user"})
    await runtime.choose_approval("ann", row.id, "auto")
    removed, agent = await catalog.remove_tool(runtime, row.id)
    assert (removed.id, agent) == (row.id, AGENT)
    assert await runtime.storage.tools.get(row.id) is None
    async with runtime.storage.read() as conn:  # type: ignore[attr-defined]
        left = await conn.scalar(
            sa.text("SELECT count(*) FROM tool_approval_choices WHERE tool_id = :id"),
            {"id": row.id},
        )
    assert left == 0
    with pytest.raises(NotFoundError, match=f"no tool row with id {row.id}"):
        await catalog.remove_tool(runtime, row.id)


async def test_agents_are_created_changed_and_deleted(runtimes: Any) -> None:
    runtime = await started(runtimes)
    made = await catalog.create_agent(
        runtime, "kim", {"model": "offline:kim", "model_settings": {"a": 1, "b": 2}}
    )
    assert made.history_window == 50
    changed = await catalog.change_agent(
        runtime, "kim", {"model_settings": {"a": None, "c": 3}, "max_tool_calls": 4}
    )
    assert changed.model_settings == {"b": 2, "c": 3} and changed.max_tool_calls == 4
    replaced = await catalog.change_agent(
        runtime, "kim", {"model_settings": {"z": 1}}, merge_settings=False
    )
    assert replaced.model_settings == {"z": 1}
    with pytest.raises(InvalidInputError, match="invalid agent 'kim': model: no model provider"):
        await catalog.change_agent(runtime, "kim", {"model": "nope:x"})
    with pytest.raises(InvalidInputError, match="nothing to change"):
        await catalog.change_agent(runtime, "kim", {})
    with pytest.raises(UnknownAgentError):
        await catalog.change_agent(runtime, "nobody", {"history_window": 3})
    tools = len(await runtime.storage.tools.list(AGENT))
    deleted = await catalog.delete_agent(runtime, AGENT)
    assert deleted.tools == tools and await runtime.storage.agents.get(AGENT) is None
    with pytest.raises(UnknownAgentError):
        await catalog.delete_agent(runtime, AGENT)


@pytest.mark.usefixtures("example")
def test_tools_set_changes_every_field_from_the_cli() -> None:
    row = json.loads(ok("tools", "list", "--json").stdout)[1]
    config = {**row["config"], "limit": 2}
    ok(
        "tools",
        "set",
        str(row["id"]),
        "--name",
        "fresh_name",
        "--description",
        "Fresh.",
        "--config",
        json.dumps(config),
        "--approval",
        "user",
        "--approval-default",
        "auto",
        "--inactive",
        "--position",
        "42",
    )
    (after,) = [r for r in json.loads(ok("tools", "list", "--json").stdout) if r["id"] == row["id"]]
    assert (after["name"], after["description"], after["config"]) == (
        "fresh_name",
        "Fresh.",
        config,
    )
    assert (after["approval"], after["approval_default"]) == ("user", "auto")
    assert (after["is_active"], after["position"]) == (False, 42)
