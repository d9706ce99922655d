"""Validation of agent definitions, shared by the CLI and the HTTP API.

An agent is a row (DESIGN §3); this module holds the rules a row must follow
before it is stored: a usable name, a ``provider:name`` model spec, a positive
history window, and a system prompt whose only placeholders are ``{memory}``
and ``{custom_instructions}`` (literal braces are doubled, as in ``str.format``).
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from chatwright.errors import InvalidInputError

if TYPE_CHECKING:
    from chatwright.registry import Plugins

PROMPT_PLACEHOLDERS = frozenset({"memory", "custom_instructions"})
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$"
MODEL_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*:[^\s\x00-\x1f\x7f-\x9f]+\Z")
MAX_HISTORY_WINDOW = 10_000
SETTING_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,99}")
"""A model setting's key: a keyword argument of the model's class."""
MAX_PROMPT = 1_000_000
"""The most characters of a system prompt (some 250,000 tokens: more than a model reads)."""
LIMITS = ("turn_timeout", "max_model_calls", "max_tool_calls", "history_tokens")


def non_finite(value: Any, where: str) -> str | None:
    """Where in ``value`` (a JSON value named ``where``) a number is NaN or infinite
    (JSON has no such number: ``NaN``, ``Infinity``, or one too large, as ``1e400``);
    None when there is none. Walked with a stack: a value is as deep as its parser
    allowed."""
    stack: list[tuple[str, Any]] = [(where, value)]
    while stack:
        at, item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return at
        if isinstance(item, dict):
            stack.extend((f"{at}.{key}", v) for key, v in item.items())
        elif isinstance(item, list | tuple):
            stack.extend((f"{at}.{n}", v) for n, v in enumerate(item))
    return None


def places(value: Any, start: str = "") -> Iterator[tuple[str, Any]]:
    """Every value in ``value`` with its place (``tools[3].config.table``; the top is
    ``start``), in the document's order; walked with a stack, as deep as its parser allowed."""
    stack: list[tuple[str, Any]] = [(start, value)]
    while stack:
        at, item = stack.pop()
        yield at, item
        if isinstance(item, dict):
            # A key that cannot be shown as it is (a control character) is shown escaped.
            steps = [(k if str(k).isprintable() else repr(k), v) for k, v in item.items()]
            stack.extend(reversed([(f"{at}.{k}" if at else str(k), v) for k, v in steps]))
        elif isinstance(item, list):
            stack.extend(reversed([(f"{at}[{n}]", v) for n, v in enumerate(item)]))


def unstorable_text(text: str) -> str | None:
    """What in ``text`` no database stores as given (a NUL, a lone surrogate); None if nothing."""
    from chatwright.history import UNSTORABLE

    found = UNSTORABLE.search(text)
    if found is None:
        return None
    if found.group() == "\x00":
        return "a NUL character (\\u0000), which the database cannot store"
    return (
        f"a lone surrogate (\\u{ord(found.group()):04x}), which is not a character (nor "
        "UTF-8 text) and cannot be stored"
    )


def unstorable(value: Any, where: str, *, top: str | None = None) -> str | None:
    """What to tell a user whose ``value`` (named ``where``) holds a NUL or a lone
    surrogate in a string or a key, at any depth; None when it holds none. ``top`` names
    the value itself when ``where`` is empty."""
    for at, item in places(value, where):
        if isinstance(item, str):
            found = unstorable_text(item)
            if found is not None:
                return f"{at or top} holds {found}; remove it"
        elif isinstance(item, dict):
            for key in item:
                found = unstorable_text(str(key))
                if found is not None:
                    return f"{at or top} has a key {key!r} holding {found}; rename it"
    return None


def not_a_json_number(where: str) -> str:
    """What to tell a user whose value holds, at ``where``, a number JSON cannot hold."""
    return (
        f"{where} is NaN or infinite (or too large to be a number), which JSON cannot "
        "hold; give a finite number"
    )


MAX_JSON_DEPTH = 24
"""The deepest nesting of objects and lists kept in an agent's settings or a tool's config:
real ones are a few levels deep, much deeper ones cannot be shown, and one this deep still
fits in a bundle (which allows 32 levels from its top, where a tool's config is 3 down)."""


def too_deep(value: Any, where: str) -> str | None:
    """What to tell a user whose ``value`` (named ``where``) nests objects and lists deeper
    than :data:`MAX_JSON_DEPTH`; None when it does not. Walked with a stack."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if not isinstance(item, dict | list | tuple):
            continue
        if depth >= MAX_JSON_DEPTH:
            return (
                f"{where} is nested deeper than {MAX_JSON_DEPTH} levels of objects and "
                "lists; flatten it"
            )
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children)
    return None


def json_problem(value: Any, where: str) -> str | None:
    """Why ``value`` (named ``where``) cannot be kept as JSON settings: nested too deep
    (:func:`too_deep`) or holding a number JSON cannot hold; None when it can."""
    deep = too_deep(value, where)
    if deep is not None:
        return deep
    text = unstorable(value, where)
    if text is not None:
        return text
    found = non_finite(value, where)
    return None if found is None else not_a_json_number(found)


def finite_only(value: Any, where: str) -> None:
    """Refuse (``ValueError``) a value :func:`json_problem` finds a problem with."""
    problem = json_problem(value, where)
    if problem is not None:
        raise ValueError(problem)


def check_prompt(prompt: str) -> str:
    try:
        pieces = [(f, s, c) for _, f, s, c in string.Formatter().parse(prompt) if f is not None]
    except ValueError as exc:
        raise ValueError(
            f"unbalanced braces ({exc}); write a literal brace as {{{{ or }}}}"
        ) from None
    fields = [f for f, _, _ in pieces]
    shaped = sorted(
        {
            "{" + f + (f"!{c}" if c else "") + (f":{s}" if s else "") + "}"
            for f, s, c in pieces
            if f in PROMPT_PLACEHOLDERS and (s or c)
        }
    )
    if shaped:
        raise ValueError(
            f"placeholder {', '.join(shaped)} has a conversion or format spec, which "
            "prompts do not take; write {memory} or {custom_instructions} alone"
        )
    unknown = sorted({f for f in fields if f not in PROMPT_PLACEHOLDERS})
    if unknown:
        names = ", ".join("{" + f + "}" for f in unknown)
        raise ValueError(
            f"unknown placeholder {names}; use {{memory}} and {{custom_instructions}}, "
            "and double literal braces"
        )
    return prompt


class AgentChanges(BaseModel):
    """Fields that can be set on an agent; every one optional.

    Strict: a value of another JSON type is refused, not converted (``true`` is not a
    history window of 1, nor ``"yes"`` a summarize of true).
    """

    model_config = ConfigDict(extra="forbid", strict=True)

    system_prompt: str | None = None
    model: str | None = None
    model_settings: dict[str, Any] | None = None
    history_window: int | None = Field(None, ge=1, le=MAX_HISTORY_WINDOW)
    # Limits of a turn (None: the setting of the same name applies).
    turn_timeout: float | None = Field(None, gt=0, le=86400)
    max_model_calls: int | None = Field(None, ge=1, le=1000)
    max_tool_calls: int | None = Field(None, ge=1, le=10_000)
    history_tokens: int | None = Field(None, ge=100, le=10_000_000)
    summarize: bool | None = None

    @field_validator("system_prompt")
    @classmethod
    def _prompt(cls, value: str | None) -> str | None:
        problem = None if value is None else unstorable_text(value)
        if problem is not None:
            raise ValueError(f"it holds {problem}; remove it")
        if value is not None and len(value) > MAX_PROMPT:
            raise ValueError(
                f"it is {len(value):,} characters long; a system prompt has at most {MAX_PROMPT:,}"
            )
        return None if value is None else check_prompt(value)

    @field_validator("model_settings")
    @classmethod
    def _settings(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        finite_only(value, "model_settings")
        for key, given in (value or {}).items():
            # Each is a keyword argument of the model's class: a name, or no chat works.
            # A key given None is removed, whatever it is (one stored before this check).
            if given is not None and not SETTING_KEY.fullmatch(key):
                raise ValueError(
                    f"setting {key[:80]!r} is not a name a model takes (letters, digits and "
                    "'_', not starting with a digit, at most 100 characters)"
                )
        return value

    @field_validator("model")
    @classmethod
    def _model(cls, value: str | None) -> str | None:
        if value is not None and not MODEL_PATTERN.match(value):
            raise ValueError("a model spec is provider:name, as in openai:gpt-4o-mini")
        return value

    def changes(self) -> dict[str, Any]:
        """The fields given; a limit given as None is kept (it goes back to its setting)."""
        data = self.model_dump(exclude_unset=True)
        return {k: v for k, v in data.items() if v is not None or k in LIMITS}


class AgentDefinition(AgentChanges):
    """A new agent: a name and a model are required."""

    name: str = Field(pattern=NAME_PATTERN)
    system_prompt: str = ""
    model: str
    history_window: int = Field(50, ge=1, le=MAX_HISTORY_WINDOW)

    def changes(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


def validate_agent(name: str, data: dict[str, Any], *, partial: bool = False) -> dict[str, Any]:
    """Validated fields of agent ``name``, or :class:`InvalidInputError` naming each bad field.

    With ``partial`` only the given fields are checked (a change to an existing agent).
    """
    try:
        if partial:
            return AgentChanges.model_validate(data).changes()
        return AgentDefinition.model_validate({**data, "name": name}).changes()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'value'}: "
            + e["msg"].removeprefix("Value error, ")
            for e in exc.errors()
        )
        raise InvalidInputError(f"invalid agent {name!r}: {problems}") from None


def check_model_provider(plugins: Plugins, name: str, model: str) -> None:
    """Refuse a model spec whose provider no plugin registers, when the agent is stored.

    Only the provider is checked: a missing package or API key is the model
    factory's to report, at the first chat (see :mod:`chatwright.models`).
    """
    provider = model.partition(":")[0]
    known = plugins.collect("register_models")
    if provider not in known:
        import difflib

        close = difflib.get_close_matches(provider, known, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        names = ", ".join(sorted(known)) or "none"
        raise InvalidInputError(
            f"invalid agent {name!r}: model: no model provider {provider!r}; {hint}"
            f"known providers: {names}"
        )
