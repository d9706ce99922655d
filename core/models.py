"""Resolving model specs (``provider:name``) to chat models through plugins.

A provider is registered by ``register_models`` under a prefix; its factory
receives the part after the colon and the agent's ``model_settings``. Factories
run at first use, so a missing package or API key is reported when an agent
is built, naming what to install or set, never at start-up.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from chatwright.errors import ChatwrightError, ModelConfigError
from chatwright.registry import Plugins

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel


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


def build_model(plugins: Plugins, spec: str, settings: Mapping[str, Any]) -> BaseChatModel:
    """The chat model for a spec; :class:`ModelConfigError` says what is missing."""
    provider, name = split_spec(spec)
    try:
        registration = plugins.get("register_models", provider)
    except ChatwrightError as exc:
        raise ModelConfigError(f"model {spec!r}: {exc}") from None
    factory: ModelFactory = registration.value
    return factory(name, dict(settings))
