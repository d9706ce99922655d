"""What an import of the original system does: a plan of items, reported, then applied.

:func:`make_plan` maps every row read from the original (:mod:`.source`) to
an :class:`Item`: what it becomes in chatwright, whether it is imported, and
each problem met on the way (the row's id, what could not be mapped, why).
Nothing is written while planning, so the plan is also the dry run's report.
An agent is checked as ``chatwright agents add`` checks one (its name, its model's
provider, its fields): one it would refuse is skipped, with why, never renamed
(its tools, chats, memory and customizations name it as it is).
:func:`apply` then writes the items to be imported, in order: agents, tools,
customizations, memory, chats, messages.

Running it again imports nothing twice: an agent is known by its name (and
told from an agent this import did not create by its system prompt, which
must be the one the import makes of the original's), a tool row by (agent,
name), a customization by (user, agent, kind), memory by (user, agent), a chat
by its id (kept from the original) and its messages by the chat's first
messages being the history rows imported before: the rows after them (added to
the original since) are appended. A second row of the original with the same key is skipped, with
the first one's id.

A value no database stores (a NUL, a lone surrogate) in any field imported
skips its row, naming the field; the rows under a skipped or failed agent or
chat are not imported either (:attr:`Item.parent`).

Only the storage protocol of :mod:`chatwright.stores` is used, so an import
works into any backend.

Longer than 450 lines because each table of the original is mapped here with
its own checks, and the whole mapping is read, and reviewed, together.
"""

from __future__ import annotations

import json
import logging
import math
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from chatwright.agents import (
    MODEL_PATTERN,
    NAME_PATTERN,
    json_problem,
    unstorable,
    unstorable_text,
    validate_agent,
)
from chatwright.errors import InvalidInputError, one_line
from chatwright.plugins.importing.source import HISTORY, Source, UnreadableJSON, chat_id, jsonish

if TYPE_CHECKING:
    from chatwright.plugins.importing.history import Span
    from chatwright.registry import Plugins
    from chatwright.runtime import Runtime
    from chatwright.stores import Agent, Storage

log = logging.getLogger(__name__)

MAX_TEXT = 1_000_000
"""The most characters of one prompt, note, customization or message imported."""
HISTORY_WINDOW = 100
"""The original sent the last 100 messages of a chat to the model."""
ROLES = ("human", "ai", "tool", "system")
MODEL_SETTINGS = ("temperature", "max_tokens", "top_p", "timeout", "max_retries")
PROVIDERS_BY_NAME = (
    (("gpt-", "o1", "o3", "o4", "chatgpt"), "openai"),
    (("claude",), "anthropic"),
    (("gemini",), "google_genai"),
    (("mistral", "codestral"), "mistralai"),
)
PLACEHOLDERS = {"ltm_notes": "{memory}", "custom_instructions": "{custom_instructions}"}
MAX_KIND = 100
"""The most characters of a customization's kind (chatwright's column)."""
PRIORITY = (-(2**31), 2**31 - 1)
"""The priorities a customization may have, and the positions a tool row may have
(chatwright's columns)."""
PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}|\{|\}")

Step = Callable[["Storage"], Awaitable[None]]


@dataclass
class Item:
    """One thing of the original and what the import does with it."""

    kind: str
    """agent, tool, customization, memory, chat or messages."""
    source: str
    """The row it comes from: its table and id."""
    target: str
    """What it becomes in chatwright."""
    action: str = "import"
    """import, import disabled, exists (already imported: left as it is) or skip."""
    problems: list[str] = field(default_factory=list)
    count: int = 1
    step: Step | None = None
    parent: Item | None = field(default=None, repr=False)
    """The agent or chat this row belongs to: when that is not imported, neither is this."""
    history: Span | None = field(default=None, repr=False)
    """The rows of the history a ``messages`` item appends (read again when applied)."""

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "kind": self.kind,
            "source": shown(self.source),
            "target": shown(self.target),
            "action": self.action,
            "problems": [shown(p) for p in self.problems],
        }
        if self.kind == "messages":
            data["count"] = self.count
        return data

    def skip(self, problem: str) -> Item:
        self.action = "skip"
        self.problems.append(problem)
        self.step = None
        return self


@dataclass
class Plan:
    source: Source
    items: list[Item] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, item: Item) -> Item:
        self.items.append(item)
        return item

    @property
    def todo(self) -> list[Item]:
        return [i for i in self.items if i.step is not None]

    def counts(self) -> dict[str, dict[str, int]]:
        counts: dict[str, dict[str, int]] = {}
        for item in self.items:
            per = counts.setdefault(item.kind, {})
            per[item.action] = per.get(item.action, 0) + item.count
        return counts

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source.url,
            "schema": self.source.schema,
            "tables": self.source.sizes(),
            "notes": self.notes,
            "counts": self.counts(),
            "items": [i.as_dict() for i in self.items],
        }


def shown(text: str) -> str:
    """``text`` with each character a terminal would act on or no database takes (a control,
    an escape sequence's ESC or CSI, a line break or tab, a bidirectional control, a lone
    surrogate) written as its escape (:func:`chatwright.commands.output.escaped`): a
    report naming a row's value can always be printed, each entry is one line, and the
    original's data cannot clear the operator's screen or fake a line of the report."""
    from chatwright.commands.output import escaped

    return escaped(text)


def _unstorable(**fields: Any) -> str | None:
    """What in the first of ``fields`` (values by the name the report gives them) holding a
    NUL or a lone surrogate, anywhere in it, no database stores; None when none does."""
    for name, value in fields.items():
        found = unstorable(value, name)
        if found is not None:
            return f"{found} in the original"
    return None


def _parent_problem(what: str, parent: Item | None) -> str | None:
    """Why a row belonging to ``what`` (an agent or chat, planned as ``parent``; None when
    no row of agent_configurations is it) is not imported; None when it may be."""
    if parent is None:
        return f"{what} is not imported: agent_configurations has no row of it"
    if parent.action == "skip":
        return f"{what} is not imported ({parent.source} is skipped)"
    return None


def _text_id(value: Any) -> str:
    return "" if value is None else str(value)


def _too_long(what: str, text: str) -> str | None:
    if len(text) > MAX_TEXT:
        return f"{what} is {len(text):,} characters long; at most {MAX_TEXT:,} are imported"
    return None


# -- agents ---------------------------------------------------------------------


def prompt_template(text: str) -> tuple[str, list[str]]:
    """The original's system prompt as chatwright's template, and what was not mapped.

    ``{{ltm_notes}}`` becomes ``{memory}``, ``{{custom_instructions}}`` stays
    itself; any other brace is doubled, so that it is shown as written.
    """
    unknown: list[str] = []

    def swap(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is None:
            return match.group(0) * 2
        if name in PLACEHOLDERS:
            return PLACEHOLDERS[name]
        unknown.append(name)
        return "{{" + match.group(0) + "}}"

    return PLACEHOLDER.sub(swap, text), unknown


def model_spec(llm: Mapping[str, Any]) -> tuple[str | None, str]:
    """``provider:model`` from an ``llm_config``, or None and why not."""
    model = llm.get("model") or llm.get("model_name")
    if not isinstance(model, str) or not model.strip():
        return None, "llm_config names no model"
    model = model.strip()
    provider = llm.get("provider")
    if isinstance(provider, str) and provider.strip():
        return f"{provider.strip().lower()}:{model}", ""
    if ":" in model:
        return model, ""
    for prefixes, name in PROVIDERS_BY_NAME:
        if model.lower().startswith(prefixes):
            return f"{name}:{model}", ""
    return None, f"cannot tell the provider of model {model!r} (llm_config has no provider)"


def model_problem(plugins: Plugins, spec: str) -> str | None:
    """Why ``spec`` is not a model spec ``agents add`` takes (its provider registered, as
    :func:`chatwright.agents.check_model_provider` checks); None when it is one."""
    found = unstorable_text(spec)
    if found is not None:
        return f"it holds {found}"
    provider = spec.partition(":")[0]
    known = plugins.collect("register_models")
    if provider not in known:
        return (
            f"no model provider {provider[:80]!r}; known providers: "
            f"{', '.join(sorted(known)) or 'none'}"
        )
    if not MODEL_PATTERN.match(spec):
        return "not a model spec (provider:name, the name without spaces)"
    return None


def not_ours(name: str) -> str:
    """Why the original's agent ``name`` is not imported over chatwright's agent of that name,
    which this import did not create."""
    return (
        f"chatwright already has an agent {name!r} that this import did not create (its "
        "system prompt is not the one this row makes, by which the import knows its own): "
        "it is left as it is, and nothing of this agent (tools, customizations, memory, "
        "chats) is imported; rename or delete chatwright's agent, or rename the agent in "
        "the original (and the rows naming it), and run the import again"
    )


def _agent_item(
    plan: Plan,
    row: Mapping[str, Any],
    existing: Mapping[str, Agent],
    planned: dict[str, Item],
    fallback: str | None,
    plugins: Plugins,
) -> Item:
    """The row's item; ``planned`` (by name) gets the first item of each name."""
    name = row.get("agent_name")
    source = f"agent_configurations {_text_id(row.get('id'))}"
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        item = plan.add(Item("agent", source, "?"))
        if isinstance(name, str):
            planned.setdefault(name, item)
        return item.skip("agent_name is empty or over 200 characters")
    item = plan.add(Item("agent", source, f"agent {name!r}"))
    first = planned.setdefault(name, item)
    if not re.fullmatch(NAME_PATTERN, name):
        # Not renamed: its tools, chats, memory and customizations name it as it is.
        return item.skip(
            f"agent name {name!r} is not one chatwright takes (letters, digits, '_', '.' "
            "and '-', starting with a letter or digit); rename the agent in the original "
            "(and the rows naming it) and run the import again"
        )
    if first is not item:
        return item.skip(f"{first.source} has the same agent_name; only the first row is imported")
    raw_prompt = row.get("system_prompt")
    prompt, unknown = prompt_template(raw_prompt if isinstance(raw_prompt, str) else "")
    if name in existing:
        if existing[name].system_prompt != prompt:
            return item.skip(not_ours(name))
        item.action = "exists"
        return item
    found = _unstorable(system_prompt=raw_prompt)
    if found is not None:
        return item.skip(found)
    try:
        llm = jsonish(row.get("llm_config"))
    except UnreadableJSON as error:
        return item.skip(f"llm_config: {error}")
    if llm is None:
        llm = {}
    if not isinstance(llm, Mapping):
        item.problems.append("llm_config is not a JSON object")
        llm = {}
    spec, why = model_spec(llm)
    if spec is not None:
        found = model_problem(plugins, spec)
        if found is not None:
            why = f"model {spec[:200]!r}: {found}"
            spec = None
    if spec is None:
        if fallback is None:
            item.skip(f"{why}; give --model SPEC for such agents")
            return item
        item.problems.append(f"{why}; given model {fallback!r}")
        spec = fallback
    settings: dict[str, Any] = {}
    for key, value in llm.items():
        if key in {"model", "model_name", "provider"}:
            continue
        if isinstance(value, float) and not math.isfinite(value):
            item.problems.append(
                f"llm_config.{key} not mapped: {value!r} is not a number JSON can hold"
            )
        elif (
            key in MODEL_SETTINGS and isinstance(value, int | float) and not isinstance(value, bool)
        ):
            settings[key] = value
        else:
            item.problems.append(
                f"llm_config.{key} not mapped (not a model setting chatwright sets)"
            )
    if "temperature" not in settings:
        settings["temperature"] = 0.7  # the original's default
    if raw_prompt is not None and not isinstance(raw_prompt, str):
        item.problems.append("system_prompt is not text; imported empty")
    for placeholder in unknown:
        item.problems.append(f"placeholder {{{{{placeholder}}}}} not known; kept as text")
    too_long = _too_long("system_prompt", prompt)
    if too_long:
        return item.skip(too_long)
    fields = {
        "system_prompt": prompt,
        "model": spec,
        "model_settings": settings,
        "history_window": HISTORY_WINDOW,
    }
    try:
        # What `agents add` checks, the name and model having been checked above.
        valid = validate_agent(name, fields)
    except InvalidInputError as error:
        return item.skip(str(error))
    valid.pop("name", None)

    async def create(storage: Storage) -> None:
        await storage.agents.create(name, **valid)

    item.step = create
    return item


# -- tools ------------------------------------------------------------------------


@dataclass
class ToolDraft:
    name: Any
    type: Any
    description: Any
    config: Any
    active: bool
    position: int


def _tool_drafts(plan: Plan) -> list[tuple[Mapping[str, Any], ToolDraft | str]]:
    """Each ``agent_tools`` row as a draft of a tool row, or why it cannot be one."""
    columns = set(plan.source.columns.get("agent_tools", []))
    definitions = {_text_id(r.get("id")): r for r in plan.source.rows("tools")}
    drafts: list[tuple[Mapping[str, Any], ToolDraft | str]] = []
    for row in plan.source.rows("agent_tools"):
        try:
            drafts.append((row, _tool_draft(row, columns, definitions, plan)))
        except UnreadableJSON as error:
            drafts.append((row, f"a config of it: {error}"))
    return drafts


def _tool_draft(
    row: Mapping[str, Any],
    columns: set[str],
    definitions: Mapping[str, Mapping[str, Any]],
    plan: Plan,
) -> ToolDraft | str:
    """One ``agent_tools`` row as a draft of a tool row, or why it cannot be one."""
    order = row.get("order")
    position = order if isinstance(order, int) and abs(order) < 2**31 else 0
    active = row.get("is_active") is not False
    named = row.get("name") is not None or row.get("tool_name") is not None
    if "tool_id" in columns and not named:
        definition = definitions.get(_text_id(row.get("tool_id")))
        if definition is None:
            why = "its tool_id names no row of the tools table"
            return why if "tools" in plan.source.tables else "no tools table"
        config = jsonish(definition.get("config"))
        override = jsonish(row.get("config_override"))
        if isinstance(config, Mapping) and isinstance(override, Mapping):
            config = {**config, **override}
        elif override not in (None, {}):
            return "config_override is not a JSON object"
        draft = ToolDraft(
            definition.get("name"),
            definition.get("type"),
            definition.get("description"),
            config,
            active,
            position,
        )
    else:
        # The tool's own columns, or the same prefixed with tool_ (another of its shapes).
        own = "tool_" if row.get("tool_name") is not None else ""
        draft = ToolDraft(
            row.get(f"{own}name"),
            row.get(f"{own}type"),
            row.get("description"),
            jsonish(row.get(f"{own}config")),
            active,
            position,
        )
    return draft


async def _tool_items(plan: Plan, runtime: Runtime, agents: Mapping[str, tuple[str, Item]]) -> None:
    """One item per ``agent_tools`` row; ``agents``: each agent's name and item by its id."""
    from chatwright.plugins.crud.config import normalize_legacy
    from chatwright.stores import ToolRow, is_framework_table
    from chatwright.tools import TOOL_NAME, ToolContext, build_row

    storage = runtime.storage
    known = {
        (a.name, t.name)
        for a in await storage.agents.list()
        for t in await storage.tools.list(a.name)
    }
    first: dict[tuple[str, str], Item] = {}
    types = runtime.plugins.collect("register_tool_types")
    now = datetime.now(UTC)
    for row, draft in _tool_drafts(plan):
        source = f"agent_tools {_text_id(row.get('id'))}"
        if row.get("is_deleted") is True:
            plan.add(Item("tool", source, "-", action="skip", problems=["deleted in the original"]))
            continue
        named, parent = agents.get(_text_id(row.get("agent_id")), (None, None))
        why = (
            "its agent_id names no row of agent_configurations"
            if parent is None
            else _parent_problem("its agent", parent)
        )
        agent = named if why is None else None
        if isinstance(draft, str):
            plan.add(Item("tool", source, "?")).skip(draft)
            continue
        name = draft.name if isinstance(draft.name, str) else ""
        item = plan.add(Item("tool", source, f"tool {agent or '?'}/{name or '?'}", parent=parent))
        if agent is None:
            item.skip(why or "its agent_id names no agent")
            continue
        if not TOOL_NAME.match(name):
            item.skip(f"tool name {str(draft.name)[:80]!r} is not 1-64 letters, digits, '_' or '-'")
            continue
        earlier = first.setdefault((agent, name), item)
        if earlier is not item:
            item.skip(
                f"{earlier.source} has the same name for this agent; only the first row is imported"
            )
            continue
        if (agent, name) in known:
            item.action = "exists"
            continue
        order = row.get("order")
        if isinstance(order, int) and not isinstance(order, bool) and order != draft.position:
            item.problems.append(
                f'"order" {order} does not fit a position ({PRIORITY[0]} to {PRIORITY[1]}); '
                "imported at position 0"
            )
        config = draft.config
        kind = draft.type if isinstance(draft.type, str) else ""
        if not isinstance(config, Mapping):
            item.skip("its config is not a JSON object")
            continue
        problem = json_problem(config, "config")
        if problem is not None:
            item.skip(problem)
            continue
        if kind == "CRUDTool":
            try:
                config = normalize_legacy(dict(config))
            except ValueError as error:
                item.skip(f"config: {error}")
                continue
            kind = "crud"
        elif kind not in types:
            item.skip(f"tool type {kind[:80]!r} is not one chatwright has")
            continue
        table = config.get("table")
        if isinstance(table, str) and is_framework_table(table):
            item.skip(f"it names {table[:80]!r}, a chatwright table, which no tool may use")
            continue
        description = draft.description if isinstance(draft.description, str) else ""
        found = _unstorable(description=description)
        if found is not None:
            item.skip(found)
            continue
        candidate = ToolRow(
            id=0,
            agent_id=0,
            name=name,
            type=kind,
            description=description,
            config=config,
            is_active=True,
            position=draft.position,
            created_at=now,
            updated_at=now,
        )
        report = await build_row(
            candidate, agent, runtime.plugins, ToolContext(agent, storage, runtime.settings)
        )
        active = draft.active
        if not report.ok:
            reasons = [p.brief() for p in report.problems]
            item.problems.extend(reasons)
            if any("chatwright table" in r for r in reasons):
                item.skip("it names a chatwright table, which no tool may use")
                continue
            if active:
                item.action = "import disabled"
                active = False
        elif not active:
            item.problems.append("inactive in the original; imported disabled")
            item.action = "import disabled"

        async def add(
            storage: Storage, c: ToolRow = candidate, on: bool = active, a: str = agent
        ) -> None:
            await storage.tools.add(
                a,
                c.name,
                type=c.type,
                config=c.config,
                description=c.description,
                is_active=on,
                position=c.position,
            )

        item.step = add


# -- per user ---------------------------------------------------------------------


def _user(value: Any) -> str | None:
    text = _text_id(value).strip()
    return text if 0 < len(text) <= 255 else None


def customization_text(content: Any) -> tuple[str | None, str]:
    """The text of a customization's ``content``, decoded (a string is the text as it is),
    and how it was found."""
    if isinstance(content, str):
        return content, ""
    if isinstance(content, Mapping):
        for key in ("instructions", "text", "content", "instruction"):
            if isinstance(content.get(key), str):
                return content[key], ""
        return json.dumps(content, ensure_ascii=False), "content kept as its JSON text"
    if isinstance(content, list) and all(isinstance(c, str) for c in content):
        return "\n".join(content), ""
    if content is None:
        return None, "content is empty"
    return json.dumps(content, ensure_ascii=False), "content kept as its JSON text"


def _priority(value: Any) -> tuple[int, str]:
    """A customization's ``priority`` as chatwright keeps it, and what was changed."""
    low, high = PRIORITY
    if value is None:
        return 0, ""
    if not isinstance(value, int) or isinstance(value, bool):
        return 0, f"priority {str(value)[:40]!r} is not a whole number; imported as 0"
    if not low <= value <= high:
        kept = min(max(value, low), high)
        return kept, (
            f"priority {value} is out of chatwright's range ({low} to {high}); imported as {kept}"
        )
    return value, ""


async def _customization_items(plan: Plan, storage: Storage, agents: Mapping[str, Item]) -> None:
    first: dict[tuple[str, str, str], Item] = {}
    for row in plan.source.rows("user_agent_prompt_customizations"):
        source = f"user_agent_prompt_customizations {_text_id(row.get('id'))}"
        user, agent = _user(row.get("user_id")), row.get("agent_name")
        kind = row.get("customization_type") or "instruction_set"
        item = plan.add(Item("customization", source, f"customization {user}/{agent}/{kind}"))
        if user is None or not isinstance(agent, str) or not isinstance(kind, str):
            item.skip("user_id, agent_name or customization_type is missing")
            continue
        item.parent = agents.get(agent)
        why = _parent_problem(f"agent {agent!r}", item.parent)
        if why is not None:
            item.skip(why)
            continue
        found = _unstorable(user_id=user, customization_type=kind)
        if found is not None:
            item.skip(found)
            continue
        if len(kind) > MAX_KIND:
            item.skip(
                f"customization_type is {len(kind):,} characters long; a kind is at most "
                f"{MAX_KIND} (shorten it in the original)"
            )
            continue
        key = (user, agent, kind)
        earlier = first.setdefault(key, item)
        if earlier is not item:
            item.skip(
                f"{earlier.source} has the same user_id, agent_name and customization_type; "
                "only the first row is imported"
            )
            continue
        if kind in {c.kind for c in await storage.customizations.list(user, agent)}:
            item.action = "exists"
            continue
        try:
            raw = plan.source.value("user_agent_prompt_customizations", row, "content")
        except UnreadableJSON as error:
            item.skip(f"content: {error}")
            continue
        text, note = customization_text(raw)
        if text is None:
            item.skip(note)
            continue
        if note:
            item.problems.append(note)
        if unstorable_text(text) is not None:
            item.skip(_unstorable(content=raw) or str(_unstorable(content=text)))
            continue
        too_long = _too_long("content", text)
        if too_long:
            item.skip(too_long)
            continue
        priority, changed = _priority(row.get("priority"))
        if changed:
            item.problems.append(changed)
        active = row.get("is_active") is not False

        async def put(
            storage: Storage,
            k: tuple[str, str, str] = key,
            t: str = text,
            p: int = priority,
            on: bool = active,
        ) -> None:
            await storage.customizations.put(k[0], k[1], k[2], t, priority=p, is_active=on)

        item.step = put


async def _memory_items(plan: Plan, storage: Storage, agents: Mapping[str, Item]) -> None:
    first: dict[tuple[str, str], Item] = {}
    for row in plan.source.rows("agent_long_term_memory"):
        source = f"agent_long_term_memory {_text_id(row.get('id'))}"
        user, agent = _user(row.get("user_id")), row.get("agent_id")
        item = plan.add(Item("memory", source, f"memory {user}/{agent}"))
        if user is None or not isinstance(agent, str):
            item.skip("user_id or agent_id is missing")
            continue
        item.parent = agents.get(agent)
        why = _parent_problem(f"agent {agent!r} (agent_id)", item.parent)
        if why is not None:
            item.skip(why)
            continue
        found = _unstorable(user_id=user)
        if found is not None:
            item.skip(found)
            continue
        earlier = first.setdefault((user, agent), item)
        if earlier is not item:
            item.skip(
                f"{earlier.source} has the same user_id and agent_id; only the first row is "
                "imported"
            )
            continue
        if await storage.memories.get(user, agent) is not None:
            item.action = "exists"
            continue
        notes = row.get("notes")
        if not isinstance(notes, str):
            item.skip("notes are not text")
            continue
        found = _unstorable(notes=notes) or _too_long("notes", notes)
        if found is not None:
            item.skip(found)
            continue

        async def put(storage: Storage, u: str = user, a: str = agent, n: str = notes) -> None:
            await storage.memories.put(u, a, n)

        item.step = put


def _same_chat(earlier: Item, same: bool) -> str:
    """Why a second row of ``chat_sessions`` with the chat id of ``earlier`` is skipped
    (``same``: of the same user and agent)."""
    if earlier.action == "skip":
        return (
            f"{earlier.source} has the same chat_id: a chat is imported once, from its first "
            "row, which is skipped"
        )
    if same:
        return (
            f"another session of the chat of {earlier.source}, which is imported from that "
            "row: a chat is imported once, as one closed session"
        )
    return (
        f"{earlier.source} has the same chat_id, for another user or agent: a chat has one "
        "user and agent, so this row is not imported"
    )


async def _chat_items(
    plan: Plan, storage: Storage, agents: Mapping[str, Item]
) -> dict[uuid.UUID, tuple[str, Item]]:
    """One item per row of ``chat_sessions``; returns each chat's user and item (its first
    row's: a chat is imported once)."""
    chats: dict[uuid.UUID, tuple[str, Any, Item]] = {}
    for row in plan.source.rows("chat_sessions"):
        source = f"chat_sessions {_text_id(row.get('id'))}"
        chat = chat_id(row.get("chat_id") or row.get("id"))
        user, agent = _user(row.get("user_id")), row.get("agent_name")
        item = plan.add(Item("chat", source, f"chat {chat}"))
        if chat is None:
            item.skip("chat_id is not a UUID")
            continue
        if chat in chats:
            owner, named, earlier = chats[chat]
            item.skip(_same_chat(earlier, (user, agent) == (owner, named)))
            continue
        chats[chat] = (user or "", agent, item)
        if user is None or not isinstance(agent, str):
            item.skip("user_id or agent_name is missing")
            continue
        item.parent = agents.get(agent)
        why = _parent_problem(f"agent {agent!r}", item.parent) or _unstorable(user_id=user)
        if why is not None:
            item.skip(why)
            continue
        found = await storage.sessions.chat_owner(chat)
        if found is not None:
            if found != (user, agent):
                item.skip("chatwright already has a chat with this id, of another user or agent")
                continue
            item.action = "exists"
        else:
            try:
                metadata = jsonish(row.get("metadata"))
            except UnreadableJSON as error:
                item.problems.append(f"metadata: {error}; the chat is imported without it")
                metadata = None
            meta = dict(metadata) if isinstance(metadata, Mapping) else {}
            problem = json_problem(meta, "metadata")
            if metadata is not None and not isinstance(metadata, Mapping):
                item.problems.append(
                    "metadata is not a JSON object; the chat is imported without it"
                )
            elif problem is not None:
                item.problems.append(
                    f"{problem} in the original; the chat is imported without its metadata"
                )
                meta = {}

            # The session is opened now; when the original's began is kept beside it.
            began = row.get("created_at")
            if isinstance(began, datetime):
                meta = {**meta, "imported_created_at": began.isoformat()}

            async def open_chat(
                storage: Storage,
                u: str = user,
                a: str = agent,
                c: uuid.UUID = chat,
                m: dict[str, Any] = meta,
            ) -> None:
                session = await storage.sessions.open(
                    u, a, chat_id=c, metadata={**m, "imported": True}
                )
                await storage.sessions.deactivate(u, session.id)

            item.step = open_chat
    return {chat: (user, item) for chat, (user, _, item) in chats.items()}


async def make_plan(source: Source, runtime: Runtime, model: str | None = None) -> Plan:
    """Map everything read (see the module docstring); writes nothing."""
    from chatwright.plugins.importing.history import plan_history

    storage = runtime.storage
    plan = Plan(source, notes=list(source.notes))
    for table in ("agent_configurations", "agent_tools", HISTORY):
        if table not in source.columns:
            plan.notes.append(f"table {source.schema}.{table} not found; nothing of it imported")
    if model is not None:
        found = model_problem(runtime.plugins, model)
        if found is not None:
            raise InvalidInputError(f"--model {model[:200]!r}: {found}")
    existing = {a.name: a for a in await storage.agents.list()}
    by_name: dict[str, Item] = {}
    by_id: dict[str, tuple[str, Item]] = {}
    for row in source.rows("agent_configurations"):
        item = _agent_item(plan, row, existing, by_name, model, runtime.plugins)
        by_id.setdefault(_text_id(row.get("id")), (str(row.get("agent_name")), item))
    await _tool_items(plan, runtime, by_id)
    await _customization_items(plan, storage, by_name)
    await _memory_items(plan, storage, by_name)
    owners = await _chat_items(plan, storage, by_name)
    await plan_history(plan, storage, owners)
    return plan


async def apply(plan: Plan, storage: Storage) -> list[Item]:
    """Write the plan's items in order, and return those not imported after all.

    An item whose write fails, whatever the error, is ``failed``, with why; an item
    whose agent or chat (:attr:`Item.parent`) was not imported is then ``skip``. The
    rest go on.
    """
    from chatwright.errors import ChatwrightError
    from chatwright.plugins.importing.history import append_history

    missed = []
    history = []
    for item in plan.todo:
        assert item.step is not None
        parent = item.parent
        if parent is not None and parent.action in ("failed", "skip"):
            missed.append(item.skip(f"its {parent.kind} ({parent.source}) was not imported"))
            continue
        if item.history is not None:
            history.append(item)  # appended after everything else, in one read of the history
            continue
        try:
            await item.step(storage)
        except ChatwrightError as error:
            item.problems.append(f"not imported: {error}")
        except Exception as error:  # any fault of one item: reported, the others go on
            log.debug("importing %s failed", item.source, exc_info=True)
            item.problems.append(f"not imported: the write failed unexpectedly: {one_line(error)}")
        else:
            continue
        item.action = "failed"
        item.step = None
        missed.append(item)
    await append_history(plan, storage, history)
    missed.extend(item for item in history if item.action == "failed")
    return missed
