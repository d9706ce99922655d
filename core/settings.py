"""Settings: one pydantic model, four layers, sections from the core and from plugins.

From lowest to highest precedence: the defaults written here, the TOML file
(``chatwright.toml`` in the working directory, or the path given by
``--config`` / ``CHATWRIGHT_CONFIG``), ``CHATWRIGHT_*`` environment variables
(nested keys joined by ``__``, as in ``CHATWRIGHT_STORAGE__URL``), and finally
command-line flags. Zero configuration works: the defaults use a SQLite file
``chatwright.db`` in the working directory.

The core defines only its own sections here. Plugins add keys to them, or
sections of their own, through the ``register_settings`` hook:
:func:`settings_class` builds the model of the loaded plugins (core sections
extended by plugin fields, plus plugin sections), and plugin code reads its
part, typed, with :meth:`Settings.section`.

Unknown keys are errors, so a typo in the TOML file or an environment variable
is reported instead of silently ignored. :func:`load_settings` turns every
validation problem into one :class:`~chatwright.errors.SettingsError` whose
message names the key, where it can be set, and what is wrong.

Longer than 450 lines because every core section is declared here with the
description users read in ``config show`` and the docs, next to the loading
that reports on them: which key, given where (the file, or which environment
variable), what is wrong with it, and for JSON in the environment a good value.
"""

from __future__ import annotations

import contextvars
import difflib
import functools
import json
import math
import os
import tomllib
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar, Union, get_args, get_origin

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings import SettingsError as SourceError

from chatwright.errors import DuplicateRegistrationError, PluginError, SettingsError

if TYPE_CHECKING:
    from chatwright.registry import Plugins, Registration

CONFIG_FILE_NAME = "chatwright.toml"
ENV_PREFIX = "CHATWRIGHT_"
CONFIG_ENV = "CHATWRIGHT_CONFIG"
# CHATWRIGHT_* variables that are read directly, not settings.
NOT_SETTINGS = frozenset(
    {
        "config",
        "load_plugins",
        "disable_plugins",
        "strict_plugins",
        "trace_plugins",
        "debug",
        "test_database_url",
        "serve_overrides",
    }
)


_SECTION_CONFIG = ConfigDict(extra="forbid", validate_assignment=True)
# Upper bounds of durations, in seconds: a duration with none could be infinite,
# or too long for the date arithmetic and timers that use it.
HOUR = 3600
DAY = 86400
WEEK = 7 * DAY
CORE = "chatwright's core"
M = TypeVar("M", bound=BaseModel)


def _members(annotation: Any) -> tuple[Any, ...]:
    """The members of a union annotation, None left out; the annotation alone otherwise."""
    if get_origin(annotation) in (Union, types.UnionType):
        return tuple(a for a in get_args(annotation) if a is not type(None))
    return (annotation,)


def _number_kind(annotation: Any) -> type | None:
    """``int`` or ``float`` when a setting holds that kind of number (or nothing), else None."""
    members = _members(annotation)
    if len(members) == 1 and members[0] in (int, float):
        return members[0]  # type: ignore[no-any-return]
    return None


class _TomlText(str):
    """A string of the TOML file where a setting holds a number.

    TOML has numbers, so ``pool_size = "10"`` is a mistake there; only the
    environment, where every value is text, gives numbers as text.
    """

    __slots__ = ()


_NUMBER_WORDS = {int: "a whole number", float: "a number"}


class _Section(BaseModel):
    """A settings section: unknown keys refused, numbers only where numbers belong.

    Every section of the settings model has it as a base, a plugin's too
    (:func:`_section_class`), so a boolean (or the TOML file's text) given for a
    number is refused everywhere the same way instead of read as 1, 0 or 10.
    """

    model_config = _SECTION_CONFIG

    @field_validator("*", mode="before")
    @classmethod
    def _numbers_are_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        if not isinstance(value, bool | _TomlText):
            return value
        field = cls.model_fields.get(info.field_name or "")
        kind = _number_kind(field.annotation) if field is not None else None
        if kind is None:
            return str(value) if isinstance(value, _TomlText) else value
        if isinstance(value, bool):
            raise PydanticCustomError(
                "number_not_boolean",
                "must be {wanted}, not a boolean",
                {"wanted": _NUMBER_WORDS[kind]},
            )
        raise PydanticCustomError(
            "number_not_text",
            "must be {wanted}, not a string: write the number without quotes",
            {"wanted": _NUMBER_WORDS[kind]},
        )


class StorageSettings(_Section):
    backend: str = Field(
        "sql", description="Storage backend, by the name a plugin registered it under."
    )
    url: str = Field(
        "sqlite+aiosqlite:///chatwright.db",
        description="Database URL (SQLAlchemy form); postgresql://… selects PostgreSQL.",
    )


class ModelsSettings(_Section):
    default: str | None = Field(
        None,
        description="Model spec given to agents created without one (provider:name); "
        "unset, `agents add` needs --model.",
    )
    request_timeout: float = Field(
        60.0,
        gt=0,
        le=HOUR,
        description="Seconds the model client waits for a provider's answer (connect and read) "
        "before it gives up, for providers whose client takes a timeout (OpenAI-compatible, "
        "Anthropic and most others); an agent's model_settings.timeout overrides it.",
    )
    max_retries: int = Field(
        2,
        ge=0,
        le=10,
        description="Times the model client retries a failed request (where the provider's "
        "client retries); an agent's model_settings.max_retries overrides it.",
    )
    tokenizer: Literal["estimate", "model"] = Field(
        "estimate",
        description="How history is counted in tokens for agents with history_tokens: "
        "'estimate' (about four characters a token, no download, the same for every model) "
        "or 'model' (the model's own tokenizer where it has one, the estimate otherwise; "
        "OpenAI's downloads its encoding on first use).",
    )


class SessionsSettings(_Section):
    store: str = Field(
        "default",
        description="Where sessions live: 'default' (the storage backend) or a session "
        "store a plugin registers (e.g. 'redis').",
    )
    idle_timeout: float = Field(
        1800.0,
        gt=0,
        le=WEEK,
        description="Seconds without a heartbeat after which a session is idle (a week at most).",
    )
    sweep_interval: float = Field(
        60.0,
        ge=0.01,
        le=DAY,
        description="Seconds between two passes of the server's session sweeper (0.01 to a day).",
    )
    heartbeat_interval: float = Field(
        60.0,
        ge=0.1,
        le=HOUR,
        description="Seconds between two heartbeats of the web page (0.1 to an hour).",
    )
    sweep_batch: int = Field(
        10_000,
        ge=1,
        le=100_000,
        description="Idle sessions one sweeper step deactivates at once (one short "
        "transaction; the sweeper yields to requests between steps).",
    )


class CacheSettings(_Section):
    policy: str = Field(
        "idle-session", description="Eviction policy of the executor cache, by plugin name."
    )
    max_entries: int = Field(100, ge=1, description="Most built agents kept at once.")


class ToolsSettings(_Section):
    max_result_chars: int = Field(
        4000, ge=200, description="Longest tool result, in characters, sent back to the model."
    )
    approval_timeout: float = Field(
        86400.0,
        ge=10,
        le=366 * DAY,
        description="Seconds a pending action waits for the user's decision before it expires "
        "(an expired action counts as denied).",
    )
    preview_rows: int = Field(
        20,
        ge=1,
        le=1000,
        description="Most rows a write's preview (and a pending action) lists; the count says "
        "how many there are in all.",
    )


class TurnsSettings(_Section):
    timeout: float = Field(
        300.0,
        gt=0,
        le=DAY,
        description="Seconds a turn may run (model calls and tools) before it is cancelled: "
        "the message and complete tool exchanges are kept, the chat is freed, and the "
        "caller gets 504. An agent's turn_timeout overrides it.",
    )
    max_model_calls: int = Field(
        25,
        ge=1,
        le=1000,
        description="Most model calls in one turn; the turn then ends with a message saying so. "
        "An agent's max_model_calls overrides it.",
    )
    max_tool_calls: int = Field(
        50,
        ge=1,
        le=10_000,
        description="Most tool calls in one turn; calls beyond it are not run and the turn ends "
        "with a message saying so. An agent's max_tool_calls overrides it.",
    )
    memory_chars: int = Field(
        4000,
        ge=100,
        le=1_000_000,
        description="Longest memory text a system prompt shows, in characters: the newest lines "
        "are kept.",
    )
    customization_chars: int = Field(
        8000,
        ge=100,
        le=1_000_000,
        description="Most characters of a user's active customizations a system prompt shows: "
        "the highest priority first, whole; the first one past it is cut there, later ones "
        "are left out.",
    )
    summary_batch: int = Field(
        200,
        ge=10,
        le=10_000,
        description="Most messages that fell out of the window one summary step reads "
        "(agents with summarize): older ones are summarised by later turns.",
    )


class BudgetsSettings(_Section):
    daily_tokens: int | None = Field(
        None,
        ge=0,
        description="Tokens (input + output) a user may spend per UTC day, over all agents; "
        "unset: no daily budget. Per-user overrides: `chatwright budgets set`.",
    )
    monthly_tokens: int | None = Field(
        None,
        ge=0,
        description="Tokens a user may spend per calendar month (UTC); unset: no monthly budget.",
    )
    turn_estimate: int = Field(
        4000,
        ge=0,
        description="Tokens a running turn is assumed to spend, to decide whether another "
        "concurrent turn of the same user still fits the budget (see docs/usage.md).",
    )


MAX_PRICE = 1_000_000.0  # per million tokens: a million currency units


class Price(_Section):
    """Prices of one model, per million tokens, in any one currency."""

    # Bounded (inf refused): a turn's cost must stay a finite number however many
    # tokens it spent, or it is not recorded and `chat --usage` cannot print it.
    input: float = Field(
        0.0, ge=0, le=MAX_PRICE, description="Per million input tokens (not cached)."
    )
    output: float = Field(0.0, ge=0, le=MAX_PRICE, description="Per million output tokens.")
    cached_input: float | None = Field(
        None,
        ge=0,
        le=MAX_PRICE,
        description="Per million cached input tokens; unset: the input price.",
    )


class UsageSettings(_Section):
    prices: dict[str, Price] = Field(
        default_factory=dict,
        examples=[{"openai:gpt-4o-mini": {"input": 0.15, "output": 0.6, "cached_input": 0.075}}],
        description='Prices per model spec (a table per model: [usage.prices."openai:gpt-4o"] '
        "input = 2.5, output = 10.0, cached_input = 1.25), per million tokens; turns of "
        "those models get a cost.",
    )
    currency: str = Field("USD", max_length=10, description="What the prices are in (shown).")


_toml_layer: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "toml", default=None
)


class _TomlLayer(PydanticBaseSettingsSource):
    """The parsed TOML file, handed over by :func:`load_settings`."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return (_toml_layer.get() or {}).get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_toml_layer.get() or {})


class Settings(BaseSettings):
    """The core settings; :func:`settings_class` adds the loaded plugins' sections.

    Plugins read their own typed settings with :meth:`section`.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        validate_assignment=True,
    )

    storage: StorageSettings = Field(default_factory=StorageSettings)  # type: ignore[arg-type]
    models: ModelsSettings = Field(default_factory=ModelsSettings)  # type: ignore[arg-type]
    tools: ToolsSettings = Field(default_factory=ToolsSettings)  # type: ignore[arg-type]
    cache: CacheSettings = Field(default_factory=CacheSettings)  # type: ignore[arg-type]
    sessions: SessionsSettings = Field(default_factory=SessionsSettings)  # type: ignore[arg-type]
    turns: TurnsSettings = Field(default_factory=TurnsSettings)  # type: ignore[arg-type]
    budgets: BudgetsSettings = Field(default_factory=BudgetsSettings)  # type: ignore[arg-type]
    usage: UsageSettings = Field(default_factory=UsageSettings)  # type: ignore[arg-type]
    plugins: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        examples=[{"redis": {"url": "redis://cache:6379/0"}}],
        description="Settings of installed plugins, a table per plugin: [plugins.redis] url = ….",
    )

    config_file: Path | None = Field(
        None, exclude=True, description="The TOML file these settings were read from."
    )

    # The section each plugin settings model is part of (filled by settings_class).
    plugin_sections: ClassVar[Mapping[type[BaseModel], str]] = {}
    _defaults: dict[type[BaseModel], BaseModel] = PrivateAttr(default_factory=dict)

    def section(self, model: type[M]) -> M:
        """The settings a plugin registered as ``model``, typed as ``model``.

        Settings built without that plugin (constructed directly, say) give the
        model's defaults, the same instance each time.
        """
        name = type(self).plugin_sections.get(model)
        if name is not None:
            value = getattr(self, name)
            if isinstance(value, model):
                return value
        default = self._defaults.get(model)
        if isinstance(default, model):
            return default
        try:
            built = model()
        except ValidationError:
            raise SettingsError(
                f"these settings have no section with {model.__name__} and it has required "
                "keys; read the settings with load_settings() so that its plugin's section "
                "is included"
            ) from None
        self._defaults[model] = built
        return built

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # First wins: CLI flags (init), then the environment, then the TOML file.
        return (init_settings, env_settings, _TomlLayer(settings_cls))


def _config_path(
    explicit: str | os.PathLike[str] | None, environ: Mapping[str, str]
) -> Path | None:
    """The TOML file to read, or None when the default file does not exist."""
    if explicit is not None:
        return Path(explicit)
    from_env = environ.get(CONFIG_ENV)
    if from_env:
        return Path(from_env)
    default = Path.cwd() / CONFIG_FILE_NAME
    return default if default.exists() else None


MAX_CONFIG_BYTES = 1024 * 1024
"""The most bytes of a configuration file read (an endless one, /dev/zero, is refused)."""


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
        if len(data) > MAX_CONFIG_BYTES:
            raise SettingsError(
                f"configuration file {path} is larger than {MAX_CONFIG_BYTES:,} bytes, more "
                f"than any settings file holds; point --config / {CONFIG_ENV} at the right file"
            )
        return tomllib.loads(data.decode("utf-8"))
    except FileNotFoundError:
        raise SettingsError(
            f"configuration file {path} does not exist; create it with `chatwright init` "
            f"or point --config / {CONFIG_ENV} at an existing file"
        ) from None
    except UnicodeDecodeError as exc:
        raise SettingsError(
            f"configuration file {path} is not UTF-8 text ({exc.reason} at byte {exc.start}); "
            "TOML files are UTF-8: save it as UTF-8"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"configuration file {path} is not valid TOML: {exc}") from None
    except RecursionError:
        raise SettingsError(f"configuration file {path} is nested too deeply to read") from None
    except OSError as exc:
        raise SettingsError(f"cannot read configuration file {path}: {exc.strerror}") from None


def _model_member(annotation: Any) -> type[BaseModel] | None:
    for member in _members(annotation):
        if isinstance(member, type) and issubclass(member, BaseModel):
            return member
    return None


def _mapping_values(annotation: Any) -> Any:
    """The value type of a dict annotation (``Any`` when not given), or None."""
    for member in _members(annotation):
        origin = get_origin(member) or member
        if isinstance(origin, type) and issubclass(origin, Mapping):
            args = get_args(member)
            return args[1] if len(args) == 2 else Any
    return None


def _mark_text(value: Any, annotation: Any) -> Any:
    """``value`` from the TOML file, each string where a number belongs marked as
    :class:`_TomlText` (which the sections refuse)."""
    if isinstance(value, str):
        return _TomlText(value) if _number_kind(annotation) is not None else value
    if not isinstance(value, dict):
        return value
    model = _model_member(annotation)
    if model is not None:
        fields = model.model_fields
        return {
            k: _mark_text(v, fields[k].annotation) if k in fields else v for k, v in value.items()
        }
    inner = _mapping_values(annotation)
    if inner is not None:
        return {k: _mark_text(v, inner) for k, v in value.items()}
    return value


def _annotation_at(model: type[BaseModel], loc: Sequence[Any]) -> Any:
    """The annotation of the value at ``loc`` (keys of sections, tables, lists), or None."""
    annotation: Any = model
    for part in loc:
        section = _model_member(annotation)
        if section is not None:
            field = section.model_fields.get(str(part))
            if field is None:
                return None
            annotation = field.annotation
            continue
        inner = _mapping_values(annotation)
        if inner is not None:
            annotation = inner
            continue
        items = [m for m in _members(annotation) if get_origin(m) in (list, tuple, set, frozenset)]
        if not items or not isinstance(part, int):
            return None
        args = get_args(items[0])
        annotation = args[0] if args else Any
    return annotation


def _setting_loc(model: type[BaseModel], loc: Sequence[Any]) -> tuple[Any, ...]:
    """The part of ``loc`` that names a setting: up to the first key that is not a section
    (``usage.prices`` of ``usage.prices."openai:gpt-4o".input``)."""
    annotation: Any = model
    for i, part in enumerate(loc):
        section = _model_member(annotation)
        field = section.model_fields.get(str(part)) if section is not None else None
        if field is None:
            return tuple(loc[: i + 1])
        annotation = field.annotation
        if _model_member(annotation) is None:
            return tuple(loc[: i + 1])
    return tuple(loc)


def _json_kind(annotation: Any) -> str | None:
    """The JSON type the environment gives this setting in ("object", "array"), or None."""
    kinds = set()
    for member in _members(annotation):
        origin = get_origin(member) or member
        if not isinstance(origin, type):
            return None
        if issubclass(origin, BaseModel | Mapping):
            kinds.add("object")
        elif issubclass(origin, list | tuple | set | frozenset):
            kinds.add("array")
        else:
            return None
    return kinds.pop() if len(kinds) == 1 else None


def _example(annotation: Any, depth: int = 0) -> Any:
    """A value of ``annotation`` to show as an example (text where any text will do)."""
    members = _members(annotation)
    member = members[0] if members else annotation
    origin = get_origin(member)
    if origin is Literal:
        return get_args(member)[0]
    if depth > 3:
        return {}
    section = _model_member(member)
    if section is not None:
        for name, field in section.model_fields.items():
            if not field.exclude and isinstance(field.default, str | int | float):
                return {name: field.default}
        return {}
    inner = _mapping_values(member)
    if inner is not None:
        return {"name": _example(inner, depth + 1)}
    if origin in (list, tuple, set, frozenset):
        args = get_args(member)
        item = _example(args[0] if args else str, depth + 1)
        return [item, "second"] if item == "first" else [item]
    if member in (int, float):
        return 1
    if member is bool:
        return True
    return "first"


@dataclass(frozen=True)
class _FromEnv:
    """A setting given by an environment variable: the variable and its value (decoded
    from JSON for a setting that holds a table or a list)."""

    variable: str
    value: Any
    json_kind: str | None
    example: str

    def holds(self, rest: Sequence[Any]) -> bool:
        """Whether the value has something at ``rest`` (keys below the variable's setting)."""
        value = self.value
        for part in rest:
            listed = isinstance(value, list) and isinstance(part, int) and 0 <= part < len(value)
            if not (listed or (isinstance(value, dict) and part in value)):
                return False
            value = value[part]
        return True

    def good_value(self) -> str:
        return f"{self.variable} must hold a JSON {self.json_kind}, e.g. {self.example}"


def _json_example(variable: str, field: FieldInfo | None, annotation: Any) -> str:
    examples = field.examples if field is not None else None
    value = examples[0] if examples else _example(annotation)
    return f"{variable}='{json.dumps(value)}'"


def _environment_values(
    environ: Mapping[str, str], model: type[Settings]
) -> dict[tuple[str, ...], _FromEnv]:
    """The settings the environment gives, by their location in the settings.

    A setting that holds a table or a list is given as JSON: text that is not
    JSON is reported here, naming the variable, what is wrong and a good value
    (pydantic-settings would only say that a section could not be read).
    """
    found: dict[tuple[str, ...], _FromEnv] = {}
    for variable, text in environ.items():
        if not variable.upper().startswith(ENV_PREFIX):
            continue
        name = variable[len(ENV_PREFIX) :].lower()
        if name in NOT_SETTINGS:
            continue
        loc = tuple(name.split("__"))
        annotation = _annotation_at(model, loc)
        if annotation is None:
            continue
        kind = _json_kind(annotation)
        field = _field_at(model, loc)
        example = _json_example(variable, field, annotation) if kind else ""
        value: Any = text
        if kind is not None:
            try:
                value = json.loads(text)
            except (ValueError, RecursionError) as exc:
                what = "is empty" if not text.strip() else f"is not JSON ({_json_problem(exc)})"
                raise SettingsError(
                    f"setting {'.'.join(loc)!r} from environment variable {variable} {what}; "
                    f"{variable} must hold a JSON {kind}, e.g. {example}"
                ) from None
        found[loc] = _FromEnv(variable, value, kind, example)
    return found


def _json_problem(exc: BaseException) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at character {exc.pos + 1}"
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return str(exc)


def _field_at(model: type[BaseModel], loc: Sequence[Any]) -> FieldInfo | None:
    """The field declared at ``loc``, when ``loc`` ends at a key of a section."""
    if not loc:
        return None
    section = _model_member(_annotation_at(model, loc[:-1]))
    return section.model_fields.get(str(loc[-1])) if section is not None else None


def _from_env(loc: Sequence[Any], from_env: Mapping[tuple[str, ...], _FromEnv]) -> _FromEnv | None:
    """The environment variable whose value holds what is at ``loc``, if one does."""
    for n in range(len(loc), 0, -1):
        given = from_env.get(tuple(str(p) for p in loc[:n]))
        if given is not None and given.holds(loc[n:]):
            return given
    return None


def _known_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        if field.exclude:
            continue
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys.extend(_known_keys(annotation, f"{prefix}{name}."))
        else:
            keys.append(f"{prefix}{name}")
    return keys


def env_var(key: str) -> str:
    """The environment variable that sets a dotted key: storage.url -> CHATWRIGHT_STORAGE__URL."""
    return ENV_PREFIX + key.replace(".", "__").upper()


NUMBER_BOUNDS = frozenset(
    {"less_than", "less_than_equal", "greater_than", "greater_than_equal", "finite_number"}
)
"""pydantic's error types of a number out of its bounds (what NaN fails)."""


def _is_nan(value: object) -> bool:
    """Whether a setting's value is NaN, as a number or as text (from the environment)."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return False
    return isinstance(value, float) and math.isnan(value)


def _describe(
    error: Mapping[str, Any],
    config_file: Path | None,
    model: type[Settings],
    not_loaded: str,
    from_env: Mapping[tuple[str, ...], _FromEnv] | None = None,
) -> str:
    loc = tuple(error["loc"])
    key = ".".join(str(part) for part in loc)
    given = _from_env(loc, from_env or {})
    if error["type"] == "extra_forbidden":
        close = [repr(c) for c in difflib.get_close_matches(key, _known_keys(model), n=1)]
        top = {n: f for n, f in model.model_fields.items() if not f.exclude}
        near = difflib.get_close_matches(key, sorted(top), n=1) if len(loc) == 1 else []
        if near:
            # A name at the top level is likelier a section misspelt ([storag]) than a
            # key of one: the names of the top level are what it may have meant.
            kind = top[near[0]].annotation
            is_section = isinstance(kind, type) and issubclass(kind, BaseModel)
            close = [f"the section {near[0]!r}" if is_section else repr(near[0])]
        section = _model_member(_annotation_at(model, loc[:-1]))
        if not close and section is not None:
            # A key of a table inside a table (usage.prices."openai:gpt-4o".inptu).
            names = [n for n, f in section.model_fields.items() if not f.exclude]
            near = difflib.get_close_matches(str(loc[-1]), names, n=1)
            close = [repr(".".join(str(p) for p in (*loc[:-1], near[0])))] if near else []
        hint = f"; did you mean {close[0]}?" if close else ""
        origin = ""
        if given is not None:
            origin = f" (in environment variable {given.variable}"
            origin += f"; {given.good_value()})" if given.json_kind else ")"
        return f"unknown setting {key!r}{hint}{origin}{not_loaded}"
    setting = ".".join(str(part) for part in _setting_loc(model, loc))
    where = f"{env_var(setting)} or [{setting.rpartition('.')[0] or 'top level'}] in "
    where += str(config_file) if config_file else CONFIG_FILE_NAME
    got = error.get("input")
    shown = json.dumps(got) if isinstance(got, bool) else repr(got)
    # NaN fails every bound, and pydantic names the bound: the fault is that it is no number.
    bound = error["type"] in NUMBER_BOUNDS
    msg = "Input should be a number, not nan" if bound and _is_nan(got) else error["msg"]
    if given is None:
        return f"setting {key!r} is invalid: {msg} (got {shown}; set it with {where})"
    good = f"; {given.good_value()}" if given.json_kind else ""
    return (
        f"setting {key!r} is invalid: {msg} (got {shown} from environment variable "
        f"{given.variable}{good}; set it with {where})"
    )


def _check_environment(
    environ: Mapping[str, str], model: type[Settings] = Settings, not_loaded: str = ""
) -> None:
    """Report CHATWRIGHT_* variables that look like settings but name none.

    pydantic-settings checks keys inside a known section; a misspelled section
    (CHATWRIGHT_STORGE__URL) or a single underscore (CHATWRIGHT_STORAGE_URL)
    would otherwise be ignored without a word.
    """
    sections = {name for name in model.model_fields if name != "config_file"}
    for variable in environ:
        if not variable.upper().startswith(ENV_PREFIX):
            continue
        name = variable[len(ENV_PREFIX) :].lower()
        if name in NOT_SETTINGS or name in sections:
            continue
        section, nested, _ = name.partition("__")
        if nested and section not in sections:
            close = difflib.get_close_matches(section, sorted(sections), n=1)
            hint = f"; did you mean {env_var(close[0])}__…?" if close else ""
            raise SettingsError(
                f"unknown setting in environment variable {variable}: no section "
                f"{section!r}{hint}{not_loaded}"
            )
        for known in sections:
            if not nested and name.startswith(known + "_"):
                rest = name[len(known) + 1 :]
                raise SettingsError(
                    f"unknown setting in environment variable {variable}; nested keys are "
                    f"joined by two underscores: {env_var(known + '.' + rest)}"
                )


def _section_class(section: str, models: Sequence[type[BaseModel]]) -> type[BaseModel]:
    """One section made of several models' fields, unknown keys forbidden."""
    name = "".join(part.title() for part in section.split("_")) + "Settings"
    # pydantic collects fields from the far end of the MRO: reversed bases put
    # the first model's fields (the core section's) first.
    # _Section last: its checks apply to every model's fields.
    built = types.new_class(
        name,
        (*reversed(models), _Section),
        exec_body=lambda ns: ns.update(model_config=_SECTION_CONFIG, __module__=__name__),
    )
    if not issubclass(built, BaseModel):  # pragma: no cover - bases are models
        raise TypeError(name)
    return built


@functools.cache
def _build(registrations: tuple[Registration, ...]) -> type[Settings]:
    owners: dict[str, str] = {}  # dotted key -> who defines it
    parts: dict[str, list[type[BaseModel]]] = {}
    for name, field in Settings.model_fields.items():
        core = field.annotation
        if isinstance(core, type) and issubclass(core, BaseModel):
            parts[name] = [core]
            owners.update({f"{name}.{key}": CORE for key in core.model_fields})
    sections: dict[type[BaseModel], str] = {}
    for reg in registrations:
        section, model = reg.name, reg.value
        if section in Settings.model_fields and section not in parts:
            raise PluginError(
                f"plugin {reg.plugin!r} registers settings section {section!r}, a name "
                "chatwright reserves; the plugin must choose another"
            )
        for key in model.model_fields:
            dotted = f"{section}.{key}"
            first = owners.setdefault(dotted, reg.plugin)
            if first == CORE:
                raise DuplicateRegistrationError(
                    f"plugin {reg.plugin!r} redefines the setting {dotted!r} of {CORE}; a "
                    "plugin may add keys to a core section, not redefine them"
                )
            if first != reg.plugin:
                raise DuplicateRegistrationError(
                    f"setting {dotted!r} is defined by both plugin {first!r} and plugin "
                    f"{reg.plugin!r}; disable one of them with CHATWRIGHT_DISABLE_PLUGINS"
                )
        parts.setdefault(section, []).append(model)
        sections[model] = section
    fields: dict[str, Any] = {}
    for section, models in parts.items():
        if section in Settings.model_fields and len(models) == 1:
            continue  # a core section no plugin extends
        cls = _section_class(section, models)
        fields[section] = (cls, Field(default_factory=cls))
    built = create_model("Settings", __base__=Settings, __module__=__name__, **fields)
    built.plugin_sections = sections
    return built


def settings_class(plugins: Plugins) -> type[Settings]:
    """The settings model of these plugins: core sections, extended, plus plugin sections.

    Built once per set of registrations. A key defined twice (by two plugins, or
    by a plugin and the core) is a :class:`~chatwright.errors.DuplicateRegistrationError`.
    """
    return _build(tuple(plugins.collect_settings()))


def load_settings(
    config: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    plugins: Plugins | None = None,
) -> Settings:
    """Read settings from defaults, the TOML file, the environment and ``overrides``.

    :param config: path of the TOML file; by default ``$CHATWRIGHT_CONFIG`` or
        ``./chatwright.toml`` when it exists.
    :param overrides: nested values from command-line flags (highest precedence).
    :param plugins: the plugins whose settings are read with the core's; by
        default the installed ones (:meth:`Plugins.load`).
    """
    if plugins is None:
        from chatwright.registry import Plugins

        plugins = Plugins.load()
    model = settings_class(plugins)
    not_loaded = plugins.not_loaded("settings")
    path = _config_path(config, os.environ)
    data = _read_toml(path) if path is not None else {}
    _check_environment(os.environ, model, not_loaded)
    from_env = _environment_values(os.environ, model)
    token = _toml_layer.set(_mark_text(data, model))
    try:
        settings = model(**dict(overrides or {}))
    except ValidationError as exc:
        problems = [_describe(e, path, model, not_loaded, from_env) for e in exc.errors()]
        raise SettingsError("; ".join(problems)) from None
    except SourceError as exc:
        raise SettingsError(
            f"cannot read settings from the environment ({exc}); a whole-section variable "
            "such as CHATWRIGHT_STORAGE must hold a JSON object, or set one key with "
            "CHATWRIGHT_STORAGE__URL"
        ) from None
    finally:
        _toml_layer.reset(token)
    settings.config_file = path
    return settings
