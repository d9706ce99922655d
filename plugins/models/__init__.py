"""Chat-model providers: LangChain's, plus ``scripted``.

Every provider that LangChain's ``init_chat_model`` knows is registered under
its own prefix (``openai:gpt-4o-mini``, ``anthropic:claude-…``, ``ollama:…``);
``model_settings`` are passed through, so ``base_url`` points ``openai:`` at
any OpenAI-compatible server. ``scripted`` replays given replies, for tests;
the quickstart's ``offline`` model comes with the ``example`` plugin. Nothing
is imported until a model is built.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from chatwright import hookimpl

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel

    from chatwright import ModelFactory, ModelRegister
    from chatwright.models import ClientOptions

# prefix -> (package to install, environment variable holding the key or None)
PROVIDERS: dict[str, tuple[str, str | None]] = {
    "openai": ("langchain-openai", "OPENAI_API_KEY"),
    "azure_openai": ("langchain-openai", "AZURE_OPENAI_API_KEY"),
    "anthropic": ("langchain-anthropic", "ANTHROPIC_API_KEY"),
    "ollama": ("langchain-ollama", None),
    "google_genai": ("langchain-google-genai", "GOOGLE_API_KEY"),
    "google_vertexai": ("langchain-google-vertexai", None),
    "bedrock": ("langchain-aws", None),
    "bedrock_converse": ("langchain-aws", None),
    "mistralai": ("langchain-mistralai", "MISTRAL_API_KEY"),
    "groq": ("langchain-groq", "GROQ_API_KEY"),
    "cohere": ("langchain-cohere", "COHERE_API_KEY"),
    "fireworks": ("langchain-fireworks", "FIREWORKS_API_KEY"),
    "together": ("langchain-together", "TOGETHER_API_KEY"),
    "deepseek": ("langchain-deepseek", "DEEPSEEK_API_KEY"),
    "xai": ("langchain-xai", "XAI_API_KEY"),
    "perplexity": ("langchain-perplexity", "PPLX_API_KEY"),
    "huggingface": ("langchain-huggingface", "HUGGINGFACEHUB_API_TOKEN"),
    "nvidia": ("langchain-nvidia-ai-endpoints", "NVIDIA_API_KEY"),
}


def _langchain(provider: str) -> ModelFactory:
    def build(
        name: str, settings: Mapping[str, Any], *, client: ClientOptions | None = None
    ) -> BaseChatModel:
        from chatwright.plugins.models.providers import build_langchain_model

        return build_langchain_model(provider, name, settings, client=client)

    return build


def _scripted(name: str, settings: Mapping[str, Any]) -> BaseChatModel:
    from chatwright.plugins.models.scripted import ScriptedChatModel

    return ScriptedChatModel.from_settings(settings)


@hookimpl
def register_models(register: ModelRegister) -> None:
    for provider in PROVIDERS:
        register(provider, _langchain(provider))
    register("scripted", _scripted)
