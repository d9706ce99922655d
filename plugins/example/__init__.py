"""The bundled example: what ``chatwright init --example`` installs, and its model.

It registers the ``assistant`` example (tables ``tasks`` and ``notes``, the
agent ``assistant`` and its ``crud`` tool rows) and the ``offline`` model
provider, a few rules that need no key and no network, so that the quickstart
works before a real model is configured. The core names no default model: the
example's agent gets ``offline:assistant`` unless ``models.default`` names
another, and ``init --example`` writes it as ``models.default`` into the
settings file it creates. Blocking this plugin
(``CHATWRIGHT_DISABLE_PLUGINS=example``) leaves a core with no demo in it.
Nothing beyond the registration is imported until the example is installed or
the model is built.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from chatwright import ExampleRegister, ModelRegister, hookimpl

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel


def _offline(name: str, settings: Mapping[str, Any]) -> BaseChatModel:
    from chatwright.plugins.example.offline import OfflineChatModel

    return OfflineChatModel()


@hookimpl
def register_examples(register: ExampleRegister) -> None:
    from chatwright.plugins.example.assistant import AssistantExample

    register("assistant", AssistantExample())


@hookimpl
def register_models(register: ModelRegister) -> None:
    register("offline", _offline)
