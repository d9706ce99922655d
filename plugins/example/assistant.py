"""The ``assistant`` example that ``chatwright init --example`` installs.

Two application tables, ``tasks`` and ``notes`` (each row belongs to a user),
and an ``assistant`` agent whose tools are ``crud`` rows on them and on
``agent_memories``. It is data, not code: the same rows a user would insert
by hand, which makes it the reference example of tool configs.

The agent's memory is the user's ``agent_memories`` row: ``save_memory``
appends one fact to its notes (the ``crud`` option ``append``), so two chats
saving at once both keep theirs. There is no tool that rewrites the notes
whole: a rewrite racing a save would drop the saved fact. An install made when
``save_memory`` still replaced the notes gets the new row from :func:`seed`,
unless someone changed the row since.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from chatwright.errors import StorageError
from chatwright.stores import Storage, ToolRow
from chatwright.tables import ColumnSpec, TableCreator, TableSpec

if TYPE_CHECKING:
    from chatwright.runtime import Runtime

AGENT = "assistant"
# The bundled offline model: the example works with no key and no network.
MODEL = "offline:assistant"

PROMPT = """\
You are a helpful assistant that keeps the user's tasks and notes.
Use your tools to add, list, complete and delete tasks, to write and read notes,
and to save what the user asks you to remember. Answer briefly.

What you remember about this user:
{memory}

{custom_instructions}"""

TABLES = (
    TableSpec(
        "tasks",
        (
            ColumnSpec("id", "integer", primary_key=True),
            ColumnSpec("user_id", "string", nullable=False),
            ColumnSpec("title", "string", nullable=False),
            ColumnSpec("status", "string", nullable=False, default="pending"),
            ColumnSpec("due_date", "date"),
            ColumnSpec("created_at", "datetime", nullable=False, default="now"),
            ColumnSpec("updated_at", "datetime", nullable=False, default="now"),
        ),
        indexes=(("user_id", "status"),),
    ),
    TableSpec(
        "notes",
        (
            ColumnSpec("id", "integer", primary_key=True),
            ColumnSpec("user_id", "string", nullable=False),
            ColumnSpec("title", "string"),
            ColumnSpec("body", "string", nullable=False),
            ColumnSpec("created_at", "datetime", nullable=False, default="now"),
        ),
        indexes=(("user_id",),),
    ),
)

_TASK_ID = {"id": {"type": "integer", "required": True, "description": "The task's id"}}
_MEMORY_SCOPE = {"user_column": "user_id", "agent_column": "agent_name"}

TOOLS: tuple[dict[str, Any], ...] = (
    {
        "name": "add_task",
        "description": "Add a task to the user's list.",
        "config": {
            "table": "tasks",
            "operation": "create",
            "args": {
                "title": {"type": "string", "required": True, "description": "Short task title"},
                "due_date": {"type": "date", "description": "Due date, YYYY-MM-DD"},
            },
            "defaults": {"status": "pending"},
            "returning": ["id", "title", "status", "due_date"],
        },
    },
    {
        "name": "list_tasks",
        "description": "List the user's tasks, newest first; filter by status if asked.",
        "config": {
            "table": "tasks",
            "operation": "read",
            "filters": {
                "status": {"type": "string", "enum": ["pending", "done"]},
                "id": {"type": "integer"},
            },
            "returning": ["id", "title", "status", "due_date"],
            "order_by": "-created_at",
            "limit": 25,
        },
    },
    {
        "name": "update_task",
        "description": "Change a task's title, status (pending or done) or due date.",
        "config": {
            "table": "tasks",
            "operation": "update",
            "args": {
                "title": {"type": "string"},
                "status": {"type": "string", "enum": ["pending", "done"]},
                "due_date": {"type": "date"},
            },
            "filters": _TASK_ID,
            "returning": ["id", "title", "status", "due_date"],
        },
    },
    {
        "name": "delete_task",
        "description": "Delete one of the user's tasks by id.",
        "config": {"table": "tasks", "operation": "delete", "filters": _TASK_ID},
    },
    {
        "name": "add_note",
        "description": "Write a note for the user.",
        "config": {
            "table": "notes",
            "operation": "create",
            "args": {
                "body": {"type": "string", "required": True, "description": "The note's text"},
                "title": {"type": "string", "description": "Optional title"},
            },
            "returning": ["id", "title", "body"],
        },
    },
    {
        "name": "list_notes",
        "description": "List the user's notes, newest first.",
        "config": {
            "table": "notes",
            "operation": "read",
            "filters": {"id": {"type": "integer"}},
            "returning": ["id", "title", "body", "created_at"],
            "order_by": "-created_at",
            "limit": 10,
        },
    },
    {
        "name": "read_memory",
        "description": "Read what you remember about the user.",
        "config": {
            "table": "agent_memories",
            "operation": "read",
            "scope": _MEMORY_SCOPE,
            "returning": ["notes", "updated_at"],
            "limit": 1,
        },
    },
    {
        "name": "save_memory",
        "description": (
            "Add a fact to what you remember about the user: one short sentence. "
            "What you remember already is kept."
        ),
        "config": {
            "table": "agent_memories",
            "operation": "upsert",
            "args": {
                "fact": {
                    "type": "string",
                    "required": True,
                    "column": "notes",
                    "description": "The fact to remember, e.g. 'likes tea'",
                },
            },
            # Added to the notes by the database, on its own line: two chats that
            # save at once both keep their fact.
            "append": {"notes": "\n"},
            "scope": _MEMORY_SCOPE,
            "returning": ["notes"],
        },
    },
)

# save_memory as releases before the append installed it: the model rewrote all the
# notes, and two chats saving at once lost a fact. An install whose row is still
# exactly this gets the new one; a row a user changed is theirs and is left alone.
OLD_TOOLS: dict[str, dict[str, Any]] = {
    "save_memory": {
        "description": (
            "Replace what you remember about the user. Pass everything worth keeping: "
            "the old notes plus the new fact."
        ),
        "config": {
            "table": "agent_memories",
            "operation": "upsert",
            "args": {"notes": {"type": "string", "required": True, "description": "All notes"}},
            "scope": _MEMORY_SCOPE,
            "returning": ["notes"],
        },
    },
}


async def seed(storage: Storage, model: str) -> list[str]:
    """Create what is missing of the example; return what was created, for the user.

    A tool row of an earlier release that nobody changed is brought up to date
    (see :data:`OLD_TOOLS`); any other existing row is left as it is.
    """
    records = storage.records
    if not isinstance(records, TableCreator):
        names = " and ".join(spec.name for spec in TABLES)
        raise StorageError(
            f"the storage backend of {storage.description} cannot create tables, which the "
            f"example needs: create the tables {names} yourself, or use the sql backend"
        )
    done = [f"table {spec.name}" for spec in TABLES if await records.ensure_table(spec)]
    if await storage.agents.get(AGENT) is None:
        await storage.agents.create(AGENT, system_prompt=PROMPT, model=model)
        done.append(f"agent {AGENT!r} (model {model})")
    have = {t.name: t for t in await storage.tools.list(AGENT)}
    for tool in TOOLS:
        row = have.get(tool["name"])
        if row is None:
            await storage.tools.add(
                AGENT,
                tool["name"],
                type="crud",
                config=tool["config"],
                description=tool["description"],
            )
            done.append(f"tool {tool['name']}")
        elif _untouched(row, OLD_TOOLS.get(tool["name"])):
            await storage.tools.update(
                row.id, config=tool["config"], description=tool["description"]
            )
            # Read after init's "Created": what the row now is, and why it changed.
            done.append(f"tool {tool['name']} (replacing the old one, which rewrote all notes)")
    return done


def _untouched(row: ToolRow, old: dict[str, Any] | None) -> bool:
    """Whether ``row`` is still exactly the example's ``old`` version of it."""
    if old is None or row.type != "crud":
        return False
    config = row.config
    if isinstance(config, str):
        try:
            config = json.loads(config)
        except ValueError:
            return False
    return bool(config == old["config"] and row.description == old["description"])


class AssistantExample:
    """The example as ``register_examples`` registers it: it installs itself."""

    summary = f"agent {AGENT!r}"
    model = MODEL

    async def install(self, runtime: Runtime) -> list[str]:
        # Like `agents add`, the agent gets the model that models.default names, if any.
        return await seed(runtime.storage, runtime.settings.models.default or MODEL)
