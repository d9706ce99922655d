"""The built-in commands of the ``chatwright`` runner, one module per command group.

Each module is a plugin: it adds its commands through ``register_commands``,
like any installed plugin does. The core registers these modules itself,
before any entry point is loaded, so they cannot be lost, blocked or taken
over by an installed plugin; ``chatwright plugins`` does not list them, as
they are part of the core rather than something that can be turned off.
Like every command module, they import nothing heavy at module level.
"""

from __future__ import annotations

import importlib
from types import ModuleType

# Modules of this package that are plugins, in the order their commands are added.
BUILTIN_MODULES = (
    "init",
    "plugins",
    "config",
    "db",
    "agents",
    "chat",
    "sessions",
    "chats",
    "install",
    "tools",
    "pending",
    "audit",
    "undo",
    "usage",
    "users",
)


def builtin_plugins() -> dict[str, ModuleType]:
    """The built-in command modules by plugin name (``chatwright.commands.<module>``)."""
    return {
        f"{__name__}.{module}": importlib.import_module(f"{__name__}.{module}")
        for module in BUILTIN_MODULES
    }
