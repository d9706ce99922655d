"""Resolving model specs (``provider:name``) to chat models through plugins.

A provider is registered by ``register_models`` under a prefix; its factory
receives the part after the colon and the agent's ``model_settings``. Factories
run at first use, so a missing package or API key is reported when an agent
is built, naming what to install or set, never at start-up.

A factory may also take a keyword argument ``client`` (:class:`ClientOptions`):
the runtime then passes the ``models.request_timeout`` and ``models.max_retries``
settings, which the factory applies where the agent's ``model_settings`` do not
set them. Factories of two arguments (most third-party ones) keep working: they
are called without it.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from chatwright.errors import ChatwrightError, ModelConfigError, one_line
from chatwright.registry import Plugins

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel


@dataclass(frozen=True)
class ClientOptions:
    """How a model's client talks to its provider, from the ``models`` settings."""

    timeout: float
    """Seconds to wait for an answer (connect and read) before giving up."""
    max_retries: int
    """Times to retry a failed request."""


class ModelFactory(Protocol):
    """What ``register_models`` registers for a prefix."""

    def __call__(self, name: str, settings: Mapping[str, Any]) -> BaseChatModel: ...


def split_spec(spec: str) -> tuple[str, str]:
    provider, sep, name = spec.partition(":")
    if not sep or not provider or not name:
        raise ModelConfigError(
            f"model spec {spec!r} is not provider:name (for example openai:gpt-4o-mini "
            "or offline:assistant)"
        )
    return provider, name


def _takes_client(factory: Any) -> bool:
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(
        (p.name == "client" and p.kind in {p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD})
        or p.kind is p.VAR_KEYWORD
        for p in params
    )


def build_model(
    plugins: Plugins,
    spec: str,
    settings: Mapping[str, Any],
    *,
    client: ClientOptions | None = None,
) -> BaseChatModel:
    """The chat model for a spec; :class:`ModelConfigError` says what is missing.

    :param client: passed to factories that take a ``client`` keyword argument.
    """
    provider, name = split_spec(spec)
    try:
        registration = plugins.get("register_models", provider)
    except ChatwrightError as exc:
        raise ModelConfigError(f"model {spec!r}: {exc}") from None
    factory: ModelFactory = registration.value
    by = f"model provider {provider!r} (plugin {registration.plugin!r})"
    try:
        if client is not None and _takes_client(factory):
            with_client: Any = factory
            built: object = with_client(name, dict(settings), client=client)
        else:
            built = factory(name, dict(settings))
    except ChatwrightError:
        raise  # the factory's own words: a missing key, a bad setting
    except Exception as exc:
        raise ModelConfigError(
            f"model {spec!r}: {by} failed to make the model: {one_line(exc)}; check the "
            "agent's model_settings, or disable the plugin with "
            f"CHATWRIGHT_DISABLE_PLUGINS={registration.plugin}"
        ) from exc
    from langchain_core.language_models import BaseChatModel

    if not isinstance(built, BaseChatModel):
        raise ModelConfigError(
            f"model {spec!r}: {by} is broken: its factory returned {type(built).__name__}, "
            "not a LangChain chat model; disable the plugin with "
            f"CHATWRIGHT_DISABLE_PLUGINS={registration.plugin} and report it to its author"
        )
    return built
