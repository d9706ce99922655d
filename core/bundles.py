"""Agent bundles: an agent with its tool rows and settings as one JSON or YAML file.

``chatwright agents export`` writes one, ``agents import`` (and the admin
API's import) reads one back. A bundle is::

    {"format": "chatwright-agent", "version": 1,
     "agent": {"name": ..., "model": ..., "system_prompt": ..., "model_settings": {...},
               "history_window": ..., "turn_timeout": ..., ...},
     "tools": [{"name": ..., "type": ..., "description": ..., "config": {...},
                "is_active": ..., "position": ..., "approval": ..., "approval_default": ...}]}

Ids and timestamps are left out (they belong to one database); tools are
matched by name. Keys of ``model_settings`` and ``config`` are sorted, so
that export -> import -> export gives the same bytes.

Secrets are left out and marked ``{"$secret": "<where>"}``, ``<where>`` being
the value's own place (``model_settings.api_key``,
``tools.search.config.token``). A model setting is a secret when its key looks
like one (:func:`chatwright.redaction.is_secret_key`, the rule ``agents show``
hides by: ``api_key``, ``api_keys``, ``cookies``, an ``X-Auth`` header), at any
depth of objects and lists, or is a URL with a password or a credential in its
query (``?api_key=``, :func:`chatwright.redaction.secret_parameters`), marked
whole; a tool config field is one when its type declares it: a
``SecretStr`` field of the type's config model, or one with
``json_schema_extra={"secret": True}``. On import a marker takes, in order: the
value given for it (``--secret WHERE=VALUE``), the value already stored in that
place, or the environment variable ``CHATWRIGHT_SECRET_<WHERE>`` (upper case,
every other character than a letter or digit as ``_``; the CLI only). With
none of them the import is refused. A tool row whose type no loaded plugin
registers is not exported: which of its fields are secrets is not known.

A bundle gives each key of an object once, and holds no NUL character and no
lone surrogate (``\\u0000``, ``\\ud800``-``\\udfff``) in any string: no database
stores them as given (PostgreSQL's text and jsonb refuse a NUL; UTF-8 has no
surrogates). The HTTP API's request bodies and the CLI's JSON files and options
are read by :func:`loads`, which refuses an object giving a key twice as well.

An import is checked whole before anything is written: the bundle's shape, the
agent's fields, every tool row built against the live schema as ``tools add``
does. One bad row and nothing changes. A field a tool row leaves out keeps the
value of the stored row of its name (a new row takes the defaults): a bundle
without ``approval`` does not make a tool run without asking; a change of a row's
``approval``, ``approval_default`` or ``is_active`` is named in the report. Tools
stored but absent from the bundle are kept, or removed with ``prune``. The writes
are one store call each (the storage protocol has no transaction spanning an agent
and its tool rows): should one fail, the writes before it are undone, newest
first (an agent created is deleted with its tool rows, a changed row gets its old
fields back, a row removed is added again under a new id), and the error names
the write that failed.

Longer than 450 lines because the format is one contract read together: its
export, the checks of what is read back, and the import that mirrors the export.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import re
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from chatwright.agents import places, unstorable, unstorable_text
from chatwright.errors import (
    AlreadyExistsError,
    ChatwrightError,
    InvalidInputError,
    StorageError,
    TooLargeError,
    one_line,
)
from chatwright.redaction import is_secret_key, secret_pair, secret_parameters

if TYPE_CHECKING:
    from chatwright.registry import Plugins
    from chatwright.runtime import Runtime
    from chatwright.stores import Agent, ToolRow

FORMAT = "chatwright-agent"
VERSION = 1
FORMATS = ("json", "yaml")
SECRET = "$secret"
SECRET_VARIABLE = "CHATWRIGHT_SECRET_"

MAX_BYTES = 4 * 1024 * 1024
"""Largest bundle read, in bytes."""
MAX_TOOLS = 1000
MAX_DEPTH = 32
"""Deepest nesting of objects and lists."""
MAX_NODES = 200_000
"""Most values in all (a YAML alias counts each time it is used)."""
MAX_MODEL = 200
"""Longest model spec: the length of the agents table's model column."""
YAML_BREAKS = "\x85\u2028\u2029"
"""Characters YAML takes for line breaks besides CR and LF: a string holding one is written
double quoted, where they are escaped (``\\N``, ``\\L``, ``\\P``)."""

log = logging.getLogger(__name__)

AGENT_KEYS = (
    "name",
    "model",
    "system_prompt",
    "model_settings",
    "history_window",
    "turn_timeout",
    "max_model_calls",
    "max_tool_calls",
    "history_tokens",
    "summarize",
)


# -- export -----------------------------------------------------------------------------


def _sorted(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _sorted(value[k]) for k in sorted(value, key=str)}
    if isinstance(value, list | tuple):
        return [_sorted(v) for v in value]
    return value


def secret_fields(plugins: Plugins, tool_type: str) -> frozenset[str]:
    """The config fields a tool type declares secret (none when the type is unknown)."""
    from typing import get_args

    from pydantic import SecretBytes, SecretStr

    registration = plugins.collect("register_tool_types").get(tool_type)
    if registration is None:
        return frozenset()
    try:
        fields = registration.value.config_model.model_fields
    except Exception:  # a type without a usable config model declares nothing
        return frozenset()
    found = set()
    for name, info in fields.items():
        extra = info.json_schema_extra
        declared = isinstance(extra, dict) and extra.get("secret") is True
        kinds = {info.annotation, *get_args(info.annotation)}
        if declared or kinds & {SecretStr, SecretBytes}:
            found.add(info.alias or name)
    return frozenset(found)


def _has_password(value: Any) -> bool:
    """Whether ``value`` is a URL with a password (``https://user:pw@host``) or a credential
    in its query or fragment (``?api_key=…``, :func:`chatwright.redaction.secret_parameters`)."""
    if not isinstance(value, str) or "://" not in value:
        return False
    from urllib.parse import urlsplit

    try:
        password = urlsplit(value).password
    except ValueError:
        return "@" in value or "=" in value  # where a password or a parameter would be
    return password is not None or bool(secret_parameters(value))


def _mark_settings(value: Any, where: str) -> Any:
    # Lists are walked too (position as the place's step): a list of fallback
    # providers holds keys as well.
    if secret_pair(value):
        # A header given as a [name, value] pair: its value is the secret.
        return [value[0], {SECRET: f"{where}.1"}]
    if isinstance(value, list):
        return [_mark_settings(item, f"{where}.{n}") for n, item in enumerate(value)]
    if _has_password(value):
        return {SECRET: where}
    if not isinstance(value, Mapping):
        return value
    marked = {}
    for key, item in value.items():
        place = f"{where}.{key}"
        if is_secret_key(str(key)) and item not in (None, ""):
            marked[key] = {SECRET: place}
        else:
            marked[key] = _mark_settings(item, place)
    return marked


def export_bundle(agent: Agent, tools: list[ToolRow], plugins: Plugins) -> dict[str, Any]:
    """The bundle of ``agent`` and its ``tools``, secrets marked."""
    from chatwright.stores import InvalidJSON
    from chatwright.tools import parse_config

    settings = agent.model_settings
    if isinstance(settings, InvalidJSON):
        raise InvalidInputError(
            f"agent {agent.name!r}: its model_settings are not valid JSON ({settings.error}); "
            f"fix them with `chatwright agents set {agent.name} --setting KEY=VALUE`"
        )
    data = {
        "name": agent.name,
        "model": agent.model,
        "system_prompt": agent.system_prompt,
        "model_settings": _mark_settings(dict(settings), "model_settings"),
        "history_window": agent.history_window,
        "turn_timeout": agent.turn_timeout,
        "max_model_calls": agent.max_model_calls,
        "max_tool_calls": agent.max_tool_calls,
        "history_tokens": agent.history_tokens,
        "summarize": agent.summarize,
    }
    rows = []
    types = plugins.collect("register_tool_types")
    for row in tools:
        if row.type not in types:
            # Its config would go out in clear: only the type says which fields are secrets.
            raise InvalidInputError(
                f"tool row {row.id} ({row.name!r}) of agent {agent.name!r} has type "
                f"{row.type!r}, which no loaded plugin registers, so which of its config "
                "fields are secrets is not known and the agent is not exported; load the "
                f"plugin of tool type {row.type!r} (see `chatwright plugins --all`), or remove "
                f"the row with `chatwright tools remove {row.id}`"
            )
        config, problem = parse_config(row.config)
        if config is None:
            reason = problem.reason if problem else "not a JSON object"
            raise InvalidInputError(
                f"tool row {row.id} ({row.name!r}) of agent {agent.name!r}: config {reason}; "
                f"fix it with `chatwright tools set {row.id} --config JSON` or remove it"
            )
        secrets = secret_fields(plugins, row.type)
        config = {
            key: {SECRET: f"tools.{row.name}.config.{key}"}
            if key in secrets and value not in (None, "")
            else value
            for key, value in config.items()
        }
        rows.append(
            {
                "name": row.name,
                "type": row.type,
                "description": row.description,
                "config": config,
                "is_active": row.is_active,
                "position": row.position,
                "approval": row.approval,
                "approval_default": row.approval_default,
            }
        )
    agent_data = {k: _sorted(v) if k == "model_settings" else v for k, v in data.items()}
    tool_data = [{k: _sorted(v) if k == "config" else v for k, v in t.items()} for t in rows]
    return {"format": FORMAT, "version": VERSION, "agent": agent_data, "tools": tool_data}


def dump(bundle: Mapping[str, Any], fmt: str = "json") -> str:
    """The text of a bundle: indented JSON, or block-style YAML; both end with a newline."""
    if fmt == "yaml":
        import yaml

        class Dumper(yaml.SafeDumper):
            """Multi-line text (a system prompt) as a literal block, when YAML allows one."""

        def text_block(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
            # A line break YAML reads as one but JSON does not (NEL, U+2028, U+2029) would
            # come back as a space or a newline: double quoted, it is written escaped.
            if any(ch in data for ch in YAML_BREAKS):
                style: str | None = '"'
            else:
                style = "|" if "\n" in data else None
            return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)

        Dumper.add_representer(str, text_block)
        text: str = yaml.dump(
            dict(bundle),
            Dumper=Dumper,
            sort_keys=False,
            allow_unicode=True,
            default_flow_style=False,
            width=100,
        )
    else:
        text = json.dumps(bundle, indent=2, ensure_ascii=False) + "\n"
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_BYTES:
        # Written, it would be refused by the import it is there for.
        name = (bundle.get("agent") or {}).get("name", "?")
        raise TooLargeError(
            f"the bundle of agent {name!r} would be {size:,} bytes; `agents import` reads at "
            f"most {MAX_BYTES:,}: shorten its system prompt, model settings or tool configs"
        )
    return text


# -- reading ----------------------------------------------------------------------------


def measure(value: Any, source: str) -> None:
    """Refuse nesting deeper than MAX_DEPTH and more than MAX_NODES values."""
    nodes = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            raise TooLargeError(f"{source}: more than {MAX_NODES} values; a bundle is smaller")
        if depth > MAX_DEPTH:
            raise InvalidInputError(
                f"{source}: nested deeper than {MAX_DEPTH} levels; a bundle is not that deep"
            )
        if isinstance(item, dict):
            for key, child in item.items():
                if not isinstance(key, str):
                    raise InvalidInputError(f"{source}: key {key!r} is not a string")
                stack.append((child, depth + 1))
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
        elif not (item is None or isinstance(item, str | bool | int | float)):
            raise InvalidInputError(
                f"{source}: a {type(item).__name__} value; a bundle holds JSON values only"
            )


def _storable_only(data: Any, source: str) -> None:
    """Refuse a NUL or a lone surrogate in any string or key of ``data``, naming its place."""
    problem = unstorable(data, "", top="the bundle")
    if problem is not None:
        raise InvalidInputError(f"{source}: {problem}")


class _Repeated(dict[str, Any]):
    """A JSON object that gives a key more than once, kept to name that key and its place."""

    def __init__(self, pairs: list[tuple[str, Any]], key: str) -> None:
        super().__init__(pairs)
        self.key = key


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object as read, or, when it gives a key twice, a :class:`_Repeated`."""
    data = dict(pairs)
    if len(data) == len(pairs):
        return data
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            return _Repeated(pairs, key)
        seen.add(key)
    return data  # not reached: fewer keys than pairs means one repeats


def _refuse_repeated(data: Any, source: str) -> None:
    for at, item in places(data):
        if isinstance(item, _Repeated):
            raise InvalidInputError(
                f"{source}: {at or 'the top level'} gives the key {item.key!r} twice; give "
                "each key once (a reader would take either one)"
            )


class _GivenTwice(Exception):
    """Raised while JSON is read, by an object giving a key twice (its place is found after)."""


def _each_once(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    data = dict(pairs)
    if len(data) != len(pairs):
        raise _GivenTwice
    return data


_READER = json.JSONDecoder(object_pairs_hook=_each_once)


def loads(text: str | bytes, source: str, *, verb: str = "give") -> Any:
    """``text`` read as :func:`json.loads` reads it, with its errors, but an object giving a
    key twice is refused: :class:`InvalidInputError` naming ``source``, the key and its
    JSON path (``tools[0].config.table``), and asking to ``verb`` each key once.

    Each object is checked as it is read (one call each, no second pass); only a text
    that is refused is read again, to find the place.
    """
    if isinstance(text, bytes):
        # As json.loads: UTF-8, -16 or -32, a byte order mark allowed.
        text = text.decode(json.detect_encoding(text), "surrogatepass")
    elif text.startswith("\ufeff"):
        raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
    try:
        return _READER.decode(text)
    except _GivenTwice:
        data = json.loads(text, object_pairs_hook=_object)
    for at, item in places(data):
        if isinstance(item, _Repeated):
            key = item.key if item.key.isprintable() else repr(item.key)
            where = f"at {at}.{key}" if at else "at the top level"
            raise InvalidInputError(
                f"{source}: the key {item.key!r} is given twice {where}; {verb} each key "
                "once (a reader may take either value)"
            )
    return data  # not reached: the object that gave a key twice is found above


def _yaml_loader() -> Any:
    """A safe YAML loader that refuses a mapping giving a key twice (merged keys aside)."""
    import yaml

    class Loader(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            if isinstance(node, yaml.MappingNode):
                seen: set[Any] = set()
                for key_node, _ in node.value:
                    if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                        continue  # a key given by a merge (<<) may be given again: it yields
                    key = self.construct_object(key_node)
                    if key in seen:
                        mark = key_node.start_mark
                        raise _RepeatedKey(
                            f"line {mark.line + 1}, column {mark.column + 1}: the key {key!r} "
                            "is given twice in one mapping; give each key once (a reader "
                            "would take either one)"
                        )
                    seen.add(key)
            return super().construct_mapping(node, deep=deep)

    return Loader


class _RepeatedKey(Exception):
    """A YAML mapping gives a key twice (its message says where)."""


def parse(text: str | bytes, source: str) -> Any:
    """The document in ``text`` (JSON, else YAML), checked for size, depth, value types and
    keys given twice."""
    size = len(text.encode("utf-8") if isinstance(text, str) else text)
    if size > MAX_BYTES:
        raise TooLargeError(f"{source} is {size} bytes; a bundle is at most {MAX_BYTES}")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidInputError(f"{source} is not UTF-8 text ({exc.reason})") from None
    # A byte order mark (as editors on Windows write) is no part of the document: a JSON
    # file starting with one would otherwise be read as YAML, which decodes each \u
    # escape of a surrogate pair alone.
    text = text.removeprefix("\ufeff")
    stripped = text.lstrip()
    try:
        if stripped.startswith("{"):
            data = json.loads(text, object_pairs_hook=_object)
        else:
            import yaml

            data = yaml.load(text, Loader=_yaml_loader())  # a SafeLoader: plain data only
    except _RepeatedKey as exc:
        raise InvalidInputError(f"{source}: {exc}") from None
    except RecursionError:
        raise InvalidInputError(
            f"{source}: nested deeper than {MAX_DEPTH} levels; a bundle is not that deep"
        ) from None
    except ValueError as exc:
        if "digits" in str(exc) and not isinstance(exc, json.JSONDecodeError):
            raise InvalidInputError(
                f"{source} holds a whole number of more than {sys.get_int_max_str_digits()} "
                "digits, longer than any value a bundle holds; shorten it"
            ) from None
        raise InvalidInputError(f"{source} is not valid JSON: {exc}") from None
    except Exception as exc:  # yaml.YAMLError and its kin, without importing yaml first
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InvalidInputError(f"{source} is not valid JSON or YAML: {first}") from None
    measure(data, source)
    _refuse_repeated(data, source)
    return data


@dataclass(frozen=True)
class Bundle:
    agent: dict[str, Any]
    tools: list[dict[str, Any]]


def check(data: Any, source: str) -> Bundle:
    """A bundle's shape: its format and version, the agent's keys and every tool row's fields."""
    from chatwright.catalog import tool_definition

    if not isinstance(data, dict):
        raise InvalidInputError(f"{source} must hold one object (an agent bundle)")
    if data.get("format") != FORMAT:
        raise InvalidInputError(
            f'{source} is not an agent bundle: its "format" must be {FORMAT!r} '
            "(write one with `chatwright agents export NAME`)"
        )
    version = data.get("version")
    if version != VERSION or isinstance(version, bool):
        raise InvalidInputError(
            f"{source}: bundle version {version!r} is not supported; this chatwright reads "
            f"version {VERSION}"
        )
    unknown = sorted(set(data) - {"format", "version", "agent", "tools"})
    if unknown:
        raise InvalidInputError(
            f"{source}: unknown field {', '.join(map(repr, unknown))}; a bundle has format, "
            "version, agent and tools"
        )
    agent = data.get("agent")
    if not isinstance(agent, dict):
        raise InvalidInputError(f'{source}: "agent" must be an object')
    unknown = sorted(set(agent) - set(AGENT_KEYS))
    if unknown:
        raise InvalidInputError(
            f"{source}: agent: unknown field {', '.join(map(repr, unknown))}; an agent has "
            f"{', '.join(AGENT_KEYS)}"
        )
    if not isinstance(agent.get("name"), str) or not agent["name"]:
        raise InvalidInputError(f'{source}: the agent needs a "name"')
    model = agent.get("model")
    if isinstance(model, str) and len(model) > MAX_MODEL:
        raise InvalidInputError(
            f"{source}: agent.model is {len(model)} characters long; a model spec has at "
            f"most {MAX_MODEL}"
        )
    _storable_only(data, source)
    tools = data.get("tools", [])
    if not isinstance(tools, list):
        raise InvalidInputError(f'{source}: "tools" must be a list of tool rows')
    if len(tools) > MAX_TOOLS:
        raise TooLargeError(f"{source}: {len(tools)} tools; a bundle has at most {MAX_TOOLS}")
    checked = []
    names: set[str] = set()
    for index, row in enumerate(tools):
        where = f"{source}: tools[{index}]"
        if isinstance(row, dict) and "order" in row:
            raise InvalidInputError(f"{where}: unknown field 'order'; a bundle uses \"position\"")
        row = tool_definition(row, where)
        if row["name"] in names:
            raise InvalidInputError(f"{where}: a second tool named {row['name']!r}")
        names.add(row["name"])
        checked.append(row)
    return Bundle(dict(agent), checked)


# -- import -----------------------------------------------------------------------------


def secret_variable(where: str) -> str:
    """The environment variable that can hold the secret marked ``where``."""
    return SECRET_VARIABLE + re.sub(r"[^A-Za-z0-9]", "_", where).upper()


def _is_marker(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {SECRET}


def _storable_secret(value: str, where: str, origin: str) -> str:
    """``value``, the secret ``origin`` (given, in a variable) for ``where``, if it can be stored.

    A value from the environment or the command line may hold a lone surrogate: a byte
    that was not UTF-8 there.
    """
    found = unstorable_text(value)
    if found is not None:
        raise InvalidInputError(
            f"bundle not imported: the secret {origin} for {where} holds {found}; give it "
            "again as UTF-8 text"
        )
    return value


class _Secrets:
    """Fills in the markers of one import from what was given, stored or in the environment."""

    def __init__(self, given: Mapping[str, str], environ: Mapping[str, str] | None) -> None:
        self.given = given
        self.environ = environ
        self.missing: list[str] = []
        self.used: set[str] = set()

    def fill(self, value: Any, where: str, stored: Any) -> Any:
        if _is_marker(value):
            return self._resolve(value, where, stored)
        if isinstance(value, dict) and SECRET in value:
            # Stored as it is, it would be a literal object where a secret was meant.
            others = ", ".join(repr(k) for k in value if k != SECRET)
            raise InvalidInputError(
                f"bundle: the object at {where} has {SECRET!r} and also {others}; a secret "
                f'marker is {{"{SECRET}": "{where}"}} alone'
            )
        if isinstance(value, dict):
            old = stored if isinstance(stored, Mapping) else {}
            return {k: self.fill(v, f"{where}.{k}", old.get(k)) for k, v in value.items()}
        if isinstance(value, list):
            olds = stored if isinstance(stored, list) else []
            return [
                self.fill(v, f"{where}.{n}", olds[n] if n < len(olds) else None)
                for n, v in enumerate(value)
            ]
        return value

    def _resolve(self, marker: dict[str, Any], where: str, stored: Any) -> Any:
        if marker[SECRET] != where:
            raise InvalidInputError(
                f"bundle: the secret marker at {where} names {marker[SECRET]!r}; a marker names "
                "its own place"
            )
        if where in self.given:
            self.used.add(where)
            return _storable_secret(self.given[where], where, "given")
        if stored is not None and not _is_marker(stored):
            return stored
        if self.environ is not None and secret_variable(where) in self.environ:
            variable = secret_variable(where)
            return _storable_secret(self.environ[variable], where, f"in {variable}")
        self.missing.append(where)
        return None

    def check(self, environ_hint: bool) -> None:
        """Refuse an import that lacks secrets or gives some the bundle does not mark.

        :param environ_hint: the import reads ``CHATWRIGHT_SECRET_*`` variables, as the
            CLI does (where ``--secret`` gives one); else it is an HTTP request's, whose
            ``secrets`` field gives them.
        """
        if self.missing:
            where = self.missing[0]
            how = f"--secret {where}=VALUE or the environment variable {secret_variable(where)}"
            if not environ_hint:
                how = f'it in the request\'s "secrets": {{"{where}": "VALUE"}}'

            raise InvalidInputError(
                f"bundle not imported: {', '.join(self.missing)} "
                f"{'is a secret' if len(self.missing) == 1 else 'are secrets'} left out of the "
                f"export and not stored here; give {how}"
            )
        unused = sorted(set(self.given) - self.used)
        if unused:
            raise InvalidInputError(
                f"bundle not imported: no secret marker at {', '.join(unused)} "
                "(a secret is given for a place the bundle marks)"
            )


@dataclass
class ImportReport:
    """What an import did (or, in a dry run, would do)."""

    agent: str
    action: str
    """created, updated or unchanged."""
    changed: list[str] = field(default_factory=list)
    """The agent's fields that change."""
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    safety: dict[str, list[str]] = field(default_factory=dict)
    """Per tool updated, how its approval, approval_default or is_active change
    (``approval required -> auto``)."""
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    """Tools stored but not in the bundle, left as they are (without prune)."""
    dry_run: bool = False

    def tool_updated(self, name: str, safety: list[str]) -> None:
        self.updated.append(name)
        if safety:
            self.safety[name] = safety

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON; ``tools.safety`` holds, per updated tool whose write safety
        changes, the changes (``["approval required -> auto", "is_active false -> true"]``)."""
        return {
            "agent": self.agent,
            "action": self.action,
            "changed": self.changed,
            "tools": {
                "added": self.added,
                "updated": self.updated,
                "safety": self.safety,
                "unchanged": self.unchanged,
                "removed": self.removed,
                "kept": self.kept,
            },
            "dry_run": self.dry_run,
        }


def _tool_fields(row: ToolRow) -> dict[str, Any]:
    from chatwright.tools import parse_config

    config, _ = parse_config(row.config)
    return {
        "type": row.type,
        "description": row.description,
        "config": row.config if config is None else dict(config),
        "is_active": row.is_active,
        "position": row.position,
        "approval": row.approval,
        "approval_default": row.approval_default,
    }


SAFETY = ("approval", "approval_default", "is_active")
"""A tool row's fields that say how freely it runs: an import names their changes."""


def _kept_fields(row: dict[str, Any], stored: ToolRow | None) -> dict[str, Any]:
    """``row`` with the fields it leaves out taken from ``stored``, the row of its name.

    A new row takes the defaults instead, and so does the ``config`` of a row that
    replaces one of another type.
    """
    if stored is None:
        return row
    have = _tool_fields(stored)
    replaced = row.get("type", stored.type) != stored.type
    kept = {
        key: value
        for key, value in have.items()
        if key not in row and not (replaced and key == "config")
    }
    return {**kept, **row}


def _safety_changes(stored: ToolRow, candidate: ToolRow) -> list[str]:
    """How ``candidate`` changes the :data:`SAFETY` fields of ``stored``."""

    def shown(value: Any) -> str:
        return json.dumps(value) if isinstance(value, bool) else str(value)

    return [
        f"{key} {shown(getattr(stored, key))} -> {shown(getattr(candidate, key))}"
        for key in SAFETY
        if getattr(stored, key) != getattr(candidate, key)
    ]


class _CreatedMeanwhile(Exception):
    """The bundle's agent, missing when the import read it, was created before its write."""


async def import_bundle(
    runtime: Runtime,
    bundle: Bundle,
    *,
    secrets: Mapping[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
    prune: bool = False,
    dry_run: bool = False,
) -> ImportReport:
    """Create or update the bundle's agent and tools, all checked before the first write.

    Should a write fail, those before it are undone (see the module docstring) and the
    error names the write. ``environ`` is where ``CHATWRIGHT_SECRET_*`` variables are
    looked up (None: nowhere, as over HTTP, where the server's environment is not the
    caller's). An agent created by someone else between the import's read and its
    first write (two imports of one new bundle at once) is updated instead: the import
    runs again, once, reading it.
    """
    once = functools.partial(
        _import_once, runtime, bundle, secrets, environ, prune=prune, dry_run=dry_run
    )
    try:
        return await once()
    except _CreatedMeanwhile:
        # Refused again (deleted and made once more meanwhile): said as any refusal is.
        return await once(again=True)


async def _import_once(
    runtime: Runtime,
    bundle: Bundle,
    secrets: Mapping[str, str] | None,
    environ: Mapping[str, str] | None,
    *,
    prune: bool,
    dry_run: bool,
    again: bool = False,
) -> ImportReport:
    from chatwright import catalog
    from chatwright.stores import Agent
    from chatwright.tools import ToolContext, build_row

    name = bundle.agent["name"]
    current = await runtime.storage.agents.get(name)
    stored_tools = {t.name: t for t in await runtime.storage.tools.list(name)} if current else {}
    filler = _Secrets(secrets or {}, environ)
    fields = {k: v for k, v in bundle.agent.items() if k != "name"}
    if "model_settings" in fields:
        old = current.model_settings if current is not None else None
        fields["model_settings"] = filler.fill(fields["model_settings"], "model_settings", old)
    rows = []
    for row in bundle.tools:
        stored = stored_tools.get(row["name"])
        if "config" in row:
            old_config = _tool_fields(stored)["config"] if stored is not None else None
            row = {
                **row,
                "config": filler.fill(row["config"], f"tools.{row['name']}.config", old_config),
            }
        rows.append(row)
    filler.check(environ is not None)

    # The agent: every field of the bundle replaces the stored one (limits left out go
    # back to their settings), so that a bundle imported gives back the same bundle.
    if current is None:
        valid = catalog.agent_fields(runtime, name, fields, partial=False)
        report = ImportReport(name, "created", sorted(valid), dry_run=dry_run)
        target: Agent = Agent(0, name, "", valid["model"], {}, 50, *_epoch())
    else:
        full: dict[str, Any] = {"model_settings": {}, "summarize": False}
        full |= dict.fromkeys(
            ("turn_timeout", "max_model_calls", "max_tool_calls", "history_tokens")
        )
        valid = catalog.agent_fields(runtime, name, {**full, **fields}, partial=True)
        changed = sorted(k for k, v in valid.items() if getattr(current, k) != v)
        report = ImportReport(name, "updated" if changed else "unchanged", changed, dry_run=dry_run)
        target = current

    problems = []
    plans: list[_ToolWrite] = []
    context = ToolContext(name, runtime.storage, runtime.settings)
    for index, given in enumerate(rows):
        stored = stored_tools.get(given["name"])
        row = _kept_fields(given, stored)
        candidate = catalog.candidate_row(target, row)
        checked = await build_row(candidate, name, runtime.plugins, context)
        if not checked.ok:
            brief = "; ".join(p.brief() for p in checked.problems)
            problems.append(f"tools[{index}] {row['name']!r}: {brief}")
            continue
        wanted = _tool_fields(candidate)
        if stored is None:
            plans.append(_ToolWrite("add", index, row["name"], row))
            report.added.append(row["name"])
        elif stored.type != candidate.type:
            plans.append(_ToolWrite("replace", index, row["name"], row, stored))
            report.tool_updated(row["name"], _safety_changes(stored, candidate))
        else:
            have = _tool_fields(stored)
            diff = {k: v for k, v in wanted.items() if k != "type" and have[k] != v}
            if diff:
                plans.append(_ToolWrite("update", index, row["name"], diff, stored))
                report.tool_updated(row["name"], _safety_changes(stored, candidate))
            else:
                report.unchanged.append(row["name"])
    if problems:
        raise InvalidInputError(f"bundle not imported: {'; '.join(problems)}")
    in_bundle = {row["name"] for row in rows}
    for tool_name in stored_tools:
        if tool_name not in in_bundle:
            (report.removed if prune else report.kept).append(tool_name)
    if dry_run:
        return report

    writes = _Writes(runtime, name, created=current is None)
    try:
        if current is None:
            try:
                await writes.create_agent(valid)
            except AlreadyExistsError:
                if again:
                    raise
                # The first write, refused: nothing to undo (the import runs again).
                raise _CreatedMeanwhile from None
        elif report.changed:
            await writes.change_agent(current, {k: valid[k] for k in report.changed})
        for plan in plans:
            await writes.tool(plan, target)
        # Removed last: a failure before them leaves the rows where they were.
        for tool_name in report.removed:
            await writes.remove(stored_tools[tool_name], f"removing tool {tool_name!r} (pruned)")
    except _CreatedMeanwhile:
        raise
    except BaseException as error:
        # Shielded: cancelled again meanwhile (a server stopping), the undo still runs
        # to its end; a second Ctrl-C waits for it too (see _interrupts_held).
        with _interrupts_held():
            undoing = asyncio.ensure_future(writes.undo(error))
            try:
                await asyncio.shield(undoing)
            except asyncio.CancelledError:
                await asyncio.wait([undoing])
        raise
    return report


@contextlib.contextmanager
def _interrupts_held() -> Iterator[None]:
    """SIGINT held back while the block runs, then delivered.

    ``asyncio.run`` (the CLI) turns a first Ctrl-C into a cancellation, which an
    import meets by undoing its writes, and a second into ``KeyboardInterrupt``
    raised wherever the event loop happens to be: it stopped the undo part way,
    leaving a half-made import (the agent's own row, undone last, kept the bundle's
    settings). Meanwhile a Ctrl-C is noted, and delivered once the undo has ended.
    Only under ``asyncio.run``'s own handler (the CLI, in the main thread).
    """
    previous = signal.getsignal(signal.SIGINT)
    # asyncio.run sets a partial of its Runner's method.
    method = getattr(previous, "func", previous)
    if threading.current_thread() is not threading.main_thread() or not isinstance(
        getattr(method, "__self__", None), asyncio.Runner
    ):
        # Not the CLI's: a server's handler stops the server, and stays as it is.
        yield
        return
    heard: list[int] = []
    signal.signal(signal.SIGINT, lambda number, frame: heard.append(number))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if heard:
            signal.raise_signal(signal.SIGINT)


@dataclass
class _ToolWrite:
    """One tool row of the bundle to write: added, replaced (another type) or updated."""

    action: str
    index: int
    name: str
    data: dict[str, Any]
    """The row (add, replace) or its fields that change (update)."""
    stored: ToolRow | None = None


Undo = Callable[[], Awaitable[object]]


class _Writes:
    """The writes of one import, each kept with the write that puts it back.

    Should one fail, :meth:`undo` makes the writes before it, newest first, and
    names the write that failed in the error. An agent the import created is
    simply deleted: its tool rows go with it.
    """

    def __init__(self, runtime: Runtime, agent: str, *, created: bool) -> None:
        self.runtime = runtime
        self.storage = runtime.storage
        self.agent = agent
        self.created = created
        self.doing = ""
        self.done: list[tuple[str, Undo]] = []

    def _keep(self, what: str, undo: Undo) -> bool:
        """Keep ``undo`` (not for an agent the import created: deleting it undoes all)."""
        if not self.created:
            self.done.append((what, undo))
        return not self.created

    # Each write's undo is kept before the write is made, and puts back the state before
    # it whether or not the write was made: a write cancelled (Ctrl-C) or left without an
    # answer after it committed must be undone too. A write the storage refused (the name
    # taken meanwhile, a value it cannot hold) made nothing, and its undo is dropped: it
    # would undo someone else's row.

    async def _made(self, write: Awaitable[object], kept: bool) -> None:
        """Make ``write``, whose undo was just kept when ``kept``."""
        try:
            await write
        except ChatwrightError as refused:
            if kept and not isinstance(refused, StorageError):
                self.done.pop()
            raise

    async def _row_named(self, name: str) -> ToolRow | None:
        return next((r for r in await self.storage.tools.list(self.agent) if r.name == name), None)

    async def create_agent(self, valid: dict[str, Any]) -> None:
        self.doing = f"creating agent {self.agent!r}"
        name = self.agent
        self.done.append((f"the new agent {name!r}", lambda: self.storage.agents.delete(name)))
        await self._made(self.storage.agents.create(self.agent, **valid), kept=True)

    async def change_agent(self, current: Agent, changes: dict[str, Any]) -> None:
        self.doing = f"changing agent {self.agent!r}"
        before = {k: getattr(current, k) for k in changes}
        what = f"the {', '.join(before)} of agent {self.agent!r}"
        kept = self._keep(what, lambda: self.storage.agents.update(self.agent, **before))
        await self._made(self.storage.agents.update(self.agent, **changes), kept)

    async def remove(self, row: ToolRow, doing: str) -> None:
        self.doing = doing
        fields = _tool_fields(row)

        async def put_back() -> None:
            if await self._row_named(row.name) is None:
                await self.storage.tools.add(self.agent, row.name, **fields)

        kept = self._keep(f"tool {row.name!r} (removed)", put_back)
        await self._made(self.storage.tools.delete(row.id), kept)

    async def tool(self, plan: _ToolWrite, target: Agent) -> None:
        from chatwright import catalog

        place = f"tools[{plan.index}] {plan.name!r}"
        if plan.action == "update" and plan.stored is not None:
            self.doing = f"changing {place}"
            stored = plan.stored
            before = {k: _tool_fields(stored)[k] for k in plan.data}
            kept = self._keep(
                f"tool {plan.name!r} (changed)",
                lambda: self.storage.tools.update(stored.id, **before),
            )
            await self._made(self.storage.tools.update(stored.id, **plan.data), kept)
            return
        if plan.action == "replace" and plan.stored is not None:
            await self.remove(plan.stored, f"removing the stored {place} (of another type)")
        self.doing = f"adding {place}"
        candidate = catalog.candidate_row(target, plan.data)

        async def take_out() -> None:
            added = await self._row_named(plan.name)
            if added is not None:
                await self.storage.tools.delete(added.id)

        kept = self._keep(f"tool {plan.name!r} (added)", take_out)
        await self._made(
            catalog.insert_row(self.runtime, self.agent, candidate, plan.data.get("position")),
            kept,
        )

    async def undo(self, error: BaseException) -> None:
        """Put back what was written before ``error``; say so in its message."""
        left = []
        for what, undo in reversed(self.done):
            try:
                await undo()
            except Exception as failure:  # each write is undone as far as it can be
                log.warning("bundle import: %s not put back: %s", what, one_line(failure))
                left.append(what)
        if left:
            outcome = (
                f"not undone: {'; '.join(left)}; see `chatwright agents show {self.agent}` "
                "and run the import again"
            )
        elif self.done:
            outcome = "nothing was changed (the writes before it were undone)"
        else:
            outcome = "nothing was changed"
        if isinstance(error, ChatwrightError):
            # Its class kept: the status (409, 422, 503) still says what kind of failure.
            message = f"bundle not imported: {self.doing} failed: {one_line(error)}; {outcome}"
            error.args = (message,)
        else:
            log.warning("bundle import: %s failed (%s); %s", self.doing, one_line(error), outcome)


def _epoch() -> tuple[Any, Any]:
    from datetime import UTC, datetime

    start = datetime.fromtimestamp(0, UTC)
    return start, start
