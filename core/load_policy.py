"""Which plugins a process loads: the allowlist, the blocklist and strictness.

Read from three environment variables before anything is imported:

``CHATWRIGHT_LOAD_PLUGINS``
    A comma-separated allowlist of *distribution* names. Only those
    distributions' entry points are imported, plus the bundled ones. An empty
    value loads the bundled plugins only: the recovery recipe when an installed
    plugin breaks the runner.
``CHATWRIGHT_DISABLE_PLUGINS``
    A comma-separated blocklist of plugin (entry point) or distribution names;
    bundled plugins can be blocked too.
``CHATWRIGHT_STRICT_PLUGINS``
    ``1`` makes a plugin that fails to import or register a fatal error. By
    default it is skipped with a one-line warning and reported, with its
    error, by ``chatwright plugins``.

:class:`chatwright.registry.Plugins` applies the policy while loading.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field


def normalize_name(name: str) -> str:
    """Normalize a distribution or plugin name the way PyPI does (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).strip().lower()


def _name_set(value: str | None) -> frozenset[str] | None:
    if value is None:
        return None
    return frozenset(normalize_name(part) for part in value.split(",") if part.strip())


def env_flag(name: str, environ: Mapping[str, str] | None = None) -> bool:
    """Whether a boolean environment variable is on (1, true, yes, on; any case)."""
    env = os.environ if environ is None else environ
    return env.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


@dataclass
class LoadPolicy:
    """The allowlist, blocklist and strictness, usually read from the environment."""

    allow: frozenset[str] | None = None
    block: frozenset[str] = field(default_factory=frozenset)
    strict: bool = False

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> LoadPolicy:
        env = os.environ if environ is None else environ
        return cls(
            allow=_name_set(env.get("CHATWRIGHT_LOAD_PLUGINS")),
            block=_name_set(env.get("CHATWRIGHT_DISABLE_PLUGINS")) or frozenset(),
            strict=env_flag("CHATWRIGHT_STRICT_PLUGINS", env),
        )

    def admits(self, plugin_name: str, distribution: str, bundled: bool) -> bool:
        if normalize_name(plugin_name) in self.block or normalize_name(distribution) in self.block:
            return False
        if self.allow is None or bundled:
            return True
        return normalize_name(distribution) in self.allow
