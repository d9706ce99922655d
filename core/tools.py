"""Tool loading: ``agent_tools`` rows -> validated config -> LangChain tools.

A tool type (registered through ``register_tool_types``) has a pydantic
``config_model`` and an async ``build``. Loading an agent's tools reads its
active rows in one query and, for each row, in order:

1. finds the row's type among the registered ones;
2. parses the ``config`` JSON and validates it with the type's config model;
3. calls ``build``, which checks the config against the live database (tables,
   columns, types) and returns a LangChain tool, or raises
   :class:`ToolConfigError` with the problems it found.

Any fault in any step skips that row only and becomes a :class:`ToolProblem`
naming the agent, the tool, the row id, the JSON path and the reason. Problems
are logged, returned to the caller, shown by ``chatwright tools check`` and by
the API. Nothing is silent, and one bad row never keeps the others from loading.

Checking a row (``chatwright tools check``, ``tools add``) is the same code path
with no user: the tool is built and thrown away.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Protocol

from langchain_core.tools import BaseTool, StructuredTool
from pydantic import BaseModel, ValidationError

from chatwright.approvals import APPROVAL_MODES, USER_CHOICES
from chatwright.errors import ChatwrightError, one_line
from chatwright.registry import Plugins
from chatwright.settings import Settings
from chatwright.stores import InvalidJSON, Storage, TableInfo, ToolRow

log = logging.getLogger(__name__)

TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True)
class ConfigProblem:
    """One fault in a tool config: where (a JSON path inside the row) and why."""

    path: str
    reason: str


class ToolConfigError(ChatwrightError):
    """Raised by a tool type's ``build`` when a config does not fit the database."""

    def __init__(self, problems: Sequence[ConfigProblem]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(f"{p.path}: {p.reason}" for p in self.problems))


@dataclass(frozen=True)
class TurnContext:
    """Who a turn runs for: LangChain's runtime context of every turn's graph run.

    The runtime passes it as ``context=`` when it runs an agent, so that one
    built agent serves every user: a tool asks for it when it is called (see
    :func:`current_turn`), never when it is built.
    """

    user_id: str
    agent_name: str
    chat_id: uuid.UUID
    turn_id: uuid.UUID | None = None
    """The turn's id: what its writes are audited (and undone) under."""
    choices: dict[int, str] = field(default_factory=dict)
    """The user's approval choices for the agent's ``user``-mode tool rows, by row id:
    read afresh for each model reply that calls such a row
    (:func:`chatwright.writes.choices_now`), empty until then."""


_calling_as: ContextVar[TurnContext | None] = ContextVar("chatwright_calling_as", default=None)


def current_turn() -> TurnContext | None:
    """The turn the calling tool runs in; None outside a turn (a tool only checked).

    Inside an agent run it is LangChain's runtime context of the run; outside
    one, what :func:`calling_as` set.
    """
    from langgraph.runtime import get_runtime

    try:
        context: Any = getattr(get_runtime(), "context", None)
    except (RuntimeError, KeyError):
        context = None
    if isinstance(context, TurnContext):
        return context
    return _calling_as.get()


@contextmanager
def calling_as(turn: TurnContext) -> Iterator[None]:
    """Call tools of a shared build outside an agent run, for ``turn``'s user.

    For callers that run tools themselves instead of through a model (tests, a
    server exposing tools to other programs); a turn's agent run passes its
    context to LangChain instead.
    """
    token = _calling_as.set(turn)
    try:
        yield
    finally:
        _calling_as.reset(token)


class ToolContext:
    """What a tool type gets to build a tool for one agent, shared by all its users.

    :param user_id: fixes the user (tests, tools called outside a turn); by
        default :attr:`user_id` is the user of the turn the tool is called in.
    """

    def __init__(
        self,
        agent_name: str,
        storage: Storage,
        settings: Settings,
        user_id: str | None = None,
    ) -> None:
        self.agent_name = agent_name
        self.storage = storage
        self.settings = settings
        self._user_id = user_id
        self._tables: dict[str, TableInfo | None] = {}

    def __repr__(self) -> str:
        return f"ToolContext(agent_name={self.agent_name!r})"

    @property
    def user_id(self) -> str | None:
        """The user a tool call is for, read at call time; None when there is none.

        None while a tool is built and when it is only checked (``tools check``):
        a tool must refuse to run then. A tool type reads it in the tool's body,
        never in ``build``: the built tool serves every user of the agent.
        """
        if self._user_id is not None:
            return self._user_id
        turn = current_turn()
        if turn is None or turn.agent_name != self.agent_name:
            return None
        return turn.user_id

    async def describe(self, table: str) -> TableInfo | None:
        """The live schema of an application table, reflected once per load."""
        # Not a second schema cache: the record store reflects afresh on every
        # describe() (and keeps the table only to build statements); this memo
        # lives for one load, so that eight tools on one table reflect it once.
        if table not in self._tables:
            self._tables[table] = await self.storage.records.describe(table)
        return self._tables[table]


class ToolType(Protocol):
    """What ``register_tool_types`` registers."""

    @property
    def config_model(self) -> type[BaseModel]:
        """Validates a row's ``config``."""
        ...

    async def build(
        self, row: ToolRow, config: Any, context: ToolContext
    ) -> BaseTool | Sequence[BaseTool]:
        """A LangChain tool for the row (or several: a row naming a catalogue of tools);
        :class:`ToolConfigError` when it cannot be built."""
        ...


@dataclass(frozen=True)
class ToolProblem:
    """Why one ``agent_tools`` row was not loaded."""

    agent: str
    tool: str
    row_id: int
    type: str
    path: str
    reason: str

    def __str__(self) -> str:
        return (
            f"agent {self.agent!r}, tool {self.tool!r} (row {self.row_id}, type {self.type!r}), "
            f"{self.path}: {self.reason}"
        )

    def brief(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass
class RowReport:
    """The outcome of loading one row: a tool, or the problems that stopped it."""

    agent: str
    row: ToolRow
    tool: BaseTool | None = None
    problems: list[ToolProblem] = field(default_factory=list)
    tools: list[BaseTool] = field(default_factory=list)
    """Every tool the row gave (``tool`` is the first): a type may build several."""

    @property
    def ok(self) -> bool:
        return self.tool is not None and not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {
            "agent": self.agent,
            "id": self.row.id,
            "name": self.row.name,
            "type": self.row.type,
            "ok": self.ok,
            "problems": [p.brief() for p in self.problems],
        }


@dataclass
class LoadedTools:
    tools: list[BaseTool]
    problems: list[ToolProblem]


def _json_path(loc: Sequence[int | str]) -> str:
    path = "config"
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def parse_config(raw: Any) -> tuple[Mapping[str, Any] | None, ConfigProblem | None]:
    """The row's config as an object, or the problem that prevents it."""
    if isinstance(raw, InvalidJSON):
        return None, ConfigProblem("config", f"not valid JSON ({raw.error})")
    if isinstance(raw, str):
        # A JSON document stored as a JSON string (seen in rows written by hand).
        try:
            raw = json.loads(raw)
        except ValueError as exc:
            return None, ConfigProblem("config", f"not valid JSON ({exc})")
    if not isinstance(raw, Mapping):
        return None, ConfigProblem("config", f"must be a JSON object, not {type(raw).__name__}")
    return raw, None


async def build_row(row: ToolRow, agent: str, plugins: Plugins, context: ToolContext) -> RowReport:
    """Validate and build one row; never raises for a fault of the row."""
    report = RowReport(agent=agent, row=row)

    def problem(path: str, reason: str) -> RowReport:
        report.problems.append(ToolProblem(agent, row.name, row.id, row.type, path, reason))
        return report

    if not TOOL_NAME.match(row.name or ""):
        problem("name", "tool names are 1-64 letters, digits, '_' or '-' (model APIs require it)")
    if row.approval not in APPROVAL_MODES:
        problem(
            "approval",
            f"{row.approval!r} is not an approval mode; use one of {', '.join(APPROVAL_MODES)}",
        )
    if row.approval_default not in USER_CHOICES:
        problem(
            "approval_default",
            f"{row.approval_default!r} is not a choice; use one of {', '.join(USER_CHOICES)}",
        )
    types = plugins.collect("register_tool_types")
    registration = types.get(row.type)
    if registration is None:
        clash = plugins.clash("register_tool_types", row.type)
        if clash is not None:
            return problem("type", clash)
        known = ", ".join(sorted(types)) or "none"
        return problem("type", f"unknown tool type {row.type!r}; known types: {known}")
    tool_type: ToolType = registration.value
    data, parse_problem = parse_config(row.config)
    if parse_problem is not None:
        return problem(parse_problem.path, parse_problem.reason)
    try:
        config = tool_type.config_model.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors():
            problem(_json_path(error["loc"]), error["msg"].removeprefix("Value error, "))
        return report
    except Exception as exc:  # a config model that fails on odd input must not break loading
        return problem("config", one_line(exc))
    if report.problems:
        return report
    try:
        built = await tool_type.build(row, config, context)
        tools = list(built) if isinstance(built, Sequence) else [built]
        if not tools:
            return problem("config", "the row gives no tool")
        wrong = [t for t in tools if not isinstance(t, BaseTool)]
        if wrong:
            got = "None" if wrong[0] is None else type(wrong[0]).__name__
            # Not the row's fault: no config makes this type build a tool.
            return problem(
                "type",
                f"tool type {row.type!r} (plugin {registration.plugin!r}) is broken: its "
                f"build returned {got}, not a LangChain tool; disable the "
                f"plugin with CHATWRIGHT_DISABLE_PLUGINS={registration.plugin}",
            )
        for tool in tools:
            # The row a built tool came from: its id and approval mode, for the runtime.
            tool.metadata = {**(tool.metadata or {}), "chatwright_row": row}
        report.tool, report.tools = tools[0], tools
    except ToolConfigError as exc:
        for p in exc.problems:
            problem(p.path, p.reason)
    except Exception as exc:  # a broken tool type must not break the agent
        problem("config", one_line(exc))
    return report


async def check_tools(
    storage: Storage, settings: Settings, plugins: Plugins, agent_name: str | None = None
) -> list[RowReport]:
    """Build every row (active or not) of one agent or of all agents, without a user."""
    rows = await storage.tools.list(agent_name)
    agents = {a.id: a.name for a in await storage.agents.list()}
    contexts: dict[str, ToolContext] = {}
    reports = []
    for row in rows:
        agent = agents.get(row.agent_id, str(row.agent_id))
        context = contexts.setdefault(agent, ToolContext(agent, storage, settings))
        reports.append(await build_row(row, agent, plugins, context))
    return reports


async def load_tools(
    storage: Storage,
    settings: Settings,
    plugins: Plugins,
    agent_name: str,
    user_id: str | None = None,
) -> LoadedTools:
    """The agent's active tools and the problems of the rows left out.

    The tools serve the user of whichever turn calls them; with ``user_id`` they
    serve that user only, in a turn or outside one (a tool called directly).
    """
    context = ToolContext(agent_name, storage, settings, user_id=user_id)
    loaded = LoadedTools(tools=[], problems=[])
    given: dict[str, ToolRow] = {}  # each tool name, and the row that gave it first
    for row in await storage.tools.list(agent_name, active_only=True):
        report = await build_row(row, agent_name, plugins, context)
        if not report.ok:
            for p in report.problems:
                log.warning("chatwright: tool row skipped: %s", p)
            loaded.problems.extend(report.problems)
            continue
        for tool in report.tools:
            first = given.setdefault(tool.name, row)
            if first is row:
                loaded.tools.append(tool)
                continue
            # A model calls a tool by its name: a second tool of one name would take
            # the calls meant for the first (a server's tool shadowing a crud row's).
            p = ToolProblem(
                agent_name,
                row.name,
                row.id,
                row.type,
                "name",
                f"it gives a tool named {tool.name!r}, which row {first.id} ({first.name!r}) "
                "gives already; it is left out: rename one of them",
            )
            log.warning("chatwright: tool left out: %s", p)
            loaded.problems.append(p)
    return loaded


class StrictTool(StructuredTool):
    """A StructuredTool that validates arguments even when it takes none.

    Tool types build their tools with it (with ``handle_validation_error=
    invalid_arguments``) so that a model's unknown or ill-typed arguments come
    back as a readable tool error and the turn goes on.

    LangChain skips validation for an empty argument schema, which would let
    ``read_memory(user_id="bob")`` through silently; here it is refused like
    any unknown argument.
    """

    def _to_args_and_kwargs(
        self, tool_input: str | dict[str, Any], tool_call_id: str | None
    ) -> tuple[tuple[str, ...], dict[str, Any]]:
        schema = self.args_schema
        if (
            isinstance(tool_input, dict)
            and isinstance(schema, type)
            and issubclass(schema, BaseModel)
            and not schema.model_fields
        ):
            schema.model_validate(tool_input)
            return (), {}
        return super()._to_args_and_kwargs(tool_input, tool_call_id)

    @property
    def tool_call_schema(self) -> Any:
        """What the model is shown: with aliased fields, the arguments' model itself.

        LangChain's copy of the model (which leaves out injected arguments) drops
        the aliases, so the model would be shown the fields' own names, which the
        tool then refuses. A tool type whose argument names are not all valid
        field names (``_id``) gives its fields aliases, and takes no injected ones.
        """
        schema = self.args_schema
        if (
            isinstance(schema, type)
            and issubclass(schema, BaseModel)
            and any(f.alias for f in schema.model_fields.values())
        ):
            return schema
        return super().tool_call_schema


def invalid_arguments(error: ValidationError) -> str:
    """A validation error as the model reads it: each bad argument and why."""
    parts = []
    for e in error.errors():
        name = ".".join(str(p) for p in e["loc"]) or "arguments"
        if e["type"] == "extra_forbidden":
            parts.append(f"{name}: unknown argument, not allowed")
        elif e["type"] == "missing":
            parts.append(f"{name}: required")
        else:
            parts.append(f"{name}: {e['msg']}")
    return "Invalid arguments: " + "; ".join(parts)
