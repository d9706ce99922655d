"""chatwright: LLM chat agents whose configuration lives in a database.

Writing a plugin
================

A plugin is a module (or any object) with functions marked ``@hookimpl`` whose
names are hooks from :mod:`chatwright.hookspecs`. Collection hooks hand you a
``register`` callback, typed by the protocols exported here
(:class:`ToolTypeRegister`, :class:`EvictionPolicyRegister`, …) so that mypy
checks what you register::

    # chatwright_shout.py
    from chatwright import hookimpl

    @hookimpl
    def register_commands(cli):
        @cli.command()
        def shout():
            "Say hello, loudly."
            print("HELLO")

Declare it as an entry point of group ``chatwright`` in your distribution's
``pyproject.toml``, and install it next to chatwright::

    [project.entry-points.chatwright]
    shout = "chatwright_shout"

``chatwright plugins`` now lists it, with the hooks it implements. The bundled
plugins (SQL storage, the CRUD tool, eviction policies, model providers, the
server) are written exactly this way; read them in ``chatwright.plugins``.

Rules of thumb: registering only declares things (no network, no key checks,
no heavy imports at module level); raise :class:`ChatwrightError` subclasses
with messages that name the thing at fault and what to do; use only the names
exported here and in the modules they come from.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chatwright.errors import (
    AlreadyExistsError,
    ChatwrightError,
    DuplicateRegistrationError,
    InvalidInputError,
    NotFoundError,
    PluginError,
    SettingsError,
    StorageError,
    UnknownNameError,
)
from chatwright.hookspecs import (
    EvictionPolicyFactory,
    EvictionPolicyRegister,
    ExampleRegister,
    ModelRegister,
    SessionStoreFactory,
    SessionStoreRegister,
    SettingsRegister,
    StorageBackendRegister,
    StorageFactory,
    ToolTypeRegister,
    hookimpl,
)

if TYPE_CHECKING:
    from chatwright.cache import EvictionPolicy
    from chatwright.models import ModelFactory
    from chatwright.runtime import Runtime
    from chatwright.settings import Settings
    from chatwright.stores import Storage
    from chatwright.tools import ToolType

__version__ = "0.1.0"

__all__ = [
    "AlreadyExistsError",
    "ChatwrightError",
    "DuplicateRegistrationError",
    "EvictionPolicy",
    "EvictionPolicyFactory",
    "EvictionPolicyRegister",
    "ExampleRegister",
    "InvalidInputError",
    "ModelFactory",
    "ModelRegister",
    "NotFoundError",
    "PluginError",
    "Runtime",
    "SessionStoreFactory",
    "SessionStoreRegister",
    "Settings",
    "SettingsError",
    "SettingsRegister",
    "Storage",
    "StorageBackendRegister",
    "StorageError",
    "StorageFactory",
    "ToolType",
    "ToolTypeRegister",
    "UnknownNameError",
    "__version__",
    "hookimpl",
]


def __getattr__(name: str) -> Any:
    # Lazy: `import chatwright` must stay cheap for `chatwright --help`.
    if name == "Runtime":
        from chatwright.runtime import Runtime

        return Runtime
    if name == "Settings":
        from chatwright.settings import Settings

        return Settings
    if name == "Storage":
        from chatwright.stores import Storage

        return Storage
    if name == "EvictionPolicy":
        from chatwright.cache import EvictionPolicy

        return EvictionPolicy
    if name == "ModelFactory":
        from chatwright.models import ModelFactory

        return ModelFactory
    if name == "ToolType":
        from chatwright.tools import ToolType

        return ToolType
    raise AttributeError(f"module 'chatwright' has no attribute {name!r}")
