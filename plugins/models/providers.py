"""LangChain providers through ``init_chat_model``, with errors that say what to do.

The client options (:class:`~chatwright.models.ClientOptions`) become the
provider class's own keyword arguments where it takes them, unless the agent's
``model_settings`` set them: a model call that hangs then fails after the
timeout instead of holding the turn until its own limit. OpenAI-compatible
models also report usage when they stream (``stream_usage``), so streamed
turns are counted like the others.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from chatwright.errors import ModelConfigError
from chatwright.plugins.models import PROVIDERS

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel

    from chatwright.models import ClientOptions

# provider -> the keyword its LangChain class takes for the request timeout. Those
# not listed take neither a timeout nor max_retries (or name them differently).
TIMEOUT_KWARGS: dict[str, str] = {
    "openai": "timeout",
    "azure_openai": "timeout",
    "anthropic": "default_request_timeout",
    "groq": "timeout",
    "mistralai": "timeout",
    "google_genai": "timeout",
    "fireworks": "timeout",
    "together": "timeout",
    "deepseek": "timeout",
    "xai": "timeout",
    "perplexity": "timeout",
}
# Other names model_settings may use for the same timeout.
TIMEOUT_ALIASES = {"timeout", "request_timeout", "default_request_timeout"}


def client_kwargs(
    provider: str, settings: Mapping[str, Any], client: ClientOptions | None
) -> dict[str, Any]:
    """What the client options add to ``settings`` for ``provider``."""
    added: dict[str, Any] = {}
    timeout_kwarg = TIMEOUT_KWARGS.get(provider)
    if client is not None and timeout_kwarg is not None:
        if not TIMEOUT_ALIASES & set(settings):
            added[timeout_kwarg] = client.timeout
        if "max_retries" not in settings:
            added["max_retries"] = client.max_retries
    if provider in {"openai", "azure_openai"} and "stream_usage" not in settings:
        added["stream_usage"] = True
    return added


def build_langchain_model(
    provider: str,
    name: str,
    settings: Mapping[str, Any],
    *,
    client: ClientOptions | None = None,
) -> BaseChatModel:
    from langchain.chat_models import init_chat_model

    package, key_env = PROVIDERS[provider]
    kwargs = {**dict(settings), **client_kwargs(provider, settings, client)}
    if (
        provider == "openai"
        and kwargs.get("base_url")
        and not (kwargs.get("api_key") or os.environ.get("OPENAI_API_KEY"))
    ):
        # Local OpenAI-compatible servers (Ollama, llama.cpp, vLLM) take any key.
        kwargs["api_key"] = "not-needed"
    spec = f"{provider}:{name}"
    try:
        model: BaseChatModel = init_chat_model(name, model_provider=provider, **kwargs)
    except ImportError:
        raise ModelConfigError(
            f"model {spec!r} needs the package {package}: pip install {package}"
        ) from None
    except Exception as exc:
        hint = f"; set {key_env} or model_settings.api_key" if key_env else ""
        reason = " ".join(str(exc).split())
        raise ModelConfigError(f"cannot create model {spec!r}: {reason}{hint}") from None
    return model
