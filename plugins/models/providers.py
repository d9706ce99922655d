"""LangChain providers through ``init_chat_model``, with errors that say what to do."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from chatwright.errors import ModelConfigError
from chatwright.plugins.models import PROVIDERS

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel


def build_langchain_model(provider: str, name: str, settings: Mapping[str, Any]) -> BaseChatModel:
    from langchain.chat_models import init_chat_model

    package, key_env = PROVIDERS[provider]
    kwargs = dict(settings)
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
