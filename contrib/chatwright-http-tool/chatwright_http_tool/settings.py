"""The plugin's settings: which environment variables ``http`` tools may send, and where.

A row's headers may reference ``${NAME}``, but a row is data: whoever can
write ``agent_tools`` would otherwise choose both a variable of the server's
environment and the host it is sent to. So the plugin's settings decide,
in the ``[plugins.http.secrets]`` table of chatwright's settings::

    [plugins.http.secrets]
    CATALOGUE_TOKEN = ["api.example.com"]

(or ``CHATWRIGHT_PLUGINS__HTTP__SECRETS='{"CATALOGUE_TOKEN": ["api.example.com"]}'``).
A variable may be expanded only when it is listed there, and only in a row
whose every allowed host (the hosts redirects may lead to included) is one of
the variable's hosts. chatwright's own variables (``CHATWRIGHT_*``: the JWT
secret, database URLs with passwords) are never expanded, even when listed.

Names are compared without regard to case, because settings read from
``CHATWRIGHT_PLUGINS__HTTP__SECRETS__<NAME>`` variables arrive lowercased.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from chatwright.errors import SettingsError
from chatwright.tools import ConfigProblem
from chatwright_http_tool.config import (
    ENV_NAME,
    ENV_REFERENCE,
    HOST_ENTRY,
    HttpConfig,
    split_host_entry,
)

SECTION = "http"
OWN_PREFIX = "CHATWRIGHT_"
EXAMPLE = 'CATALOGUE_TOKEN = ["api.example.com"]'


def is_own_variable(name: str) -> bool:
    """Whether ``name`` is one of chatwright's variables (read case-insensitively)."""
    return name.upper().startswith(OWN_PREFIX)


@dataclass(frozen=True)
class SecretHosts:
    """One listed variable and the host entries it may be sent to."""

    name: str
    hosts: tuple[str, ...]

    def covers(self, entry: str) -> bool:
        """Whether every address a row's ``allowed_hosts`` entry allows is one of ours.

        ``api.example.com`` covers any port of that host; ``api.example.com:8443``
        covers that port only, so it does not cover a row's bare ``api.example.com``.
        """
        host, port = split_host_entry(entry)
        for mine in self.hosts:
            my_host, my_port = split_host_entry(mine)
            if my_host == host and my_port in (None, port):
                return True
        return False


@dataclass(frozen=True)
class HttpSettings:
    """The ``[plugins.http]`` table, checked."""

    secrets: dict[str, SecretHosts] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, plugins: Mapping[str, Mapping[str, object]]) -> HttpSettings:
        """From chatwright's ``plugins`` settings; SettingsError naming the key at fault."""
        section = plugins.get(SECTION, {})
        unknown = sorted(set(section) - {"secrets"})
        if unknown:
            raise SettingsError(
                f"unknown setting plugins.{SECTION}.{unknown[0]}; the http plugin takes "
                f"secrets, a table like [plugins.{SECTION}.secrets] {EXAMPLE}"
            )
        table = section.get("secrets", {})
        if isinstance(table, str):
            # A whole table in one environment variable arrives as its JSON text.
            try:
                table = json.loads(table)
            except ValueError as exc:
                raise SettingsError(
                    f"setting plugins.{SECTION}.secrets is not a valid JSON object ({exc}); "
                    'write it like {"CATALOGUE_TOKEN": ["api.example.com"]}'
                ) from None
        if not isinstance(table, Mapping):
            raise SettingsError(
                f"setting plugins.{SECTION}.secrets must be a table of variable name -> hosts, "
                f"like [plugins.{SECTION}.secrets] {EXAMPLE}"
            )
        secrets: dict[str, SecretHosts] = {}
        for name, hosts in table.items():
            key = f"plugins.{SECTION}.secrets.{name}"
            if is_own_variable(str(name)):
                raise SettingsError(
                    f"setting {key} is refused: http tools never send chatwright's own "
                    f"variables ({OWN_PREFIX}*); remove it"
                )
            if (
                not isinstance(hosts, list)
                or not hosts
                or not all(isinstance(h, str) and HOST_ENTRY.match(h) for h in hosts)
            ):
                raise SettingsError(
                    f"setting {key} must be a non-empty list of the hosts the variable may be "
                    f'sent to, like ["api.example.com", "127.0.0.1:8080"] (got {hosts!r})'
                )
            secrets[str(name).upper()] = SecretHosts(str(name), tuple(hosts))
        return cls(secrets)

    def rule(self, name: str) -> SecretHosts | None:
        """Where the variable ``name`` may be sent; None when it may not be expanded."""
        return None if is_own_variable(name) else self.secrets.get(name.upper())

    def problems(self, config: HttpConfig) -> list[ConfigProblem]:
        """Every ``${NAME}`` of the row's headers that these settings do not let it send."""
        found: list[ConfigProblem] = []
        for header, value in config.headers.items():
            path = f"config.headers.{header}"
            for name in dict.fromkeys(ENV_REFERENCE.findall(value)):
                if not ENV_NAME.match(name):
                    continue  # reported by config.problems
                if is_own_variable(name):
                    found.append(
                        ConfigProblem(
                            path,
                            f"${{{name}}} is one of chatwright's own variables; http tools never "
                            f"send {OWN_PREFIX}* variables",
                        )
                    )
                    continue
                rule = self.rule(name)
                if rule is None:
                    found.append(
                        ConfigProblem(
                            path,
                            f"${{{name}}} is not listed in [plugins.{SECTION}.secrets]; list it "
                            f'there with the hosts it may be sent to: {name} = ["<host>"]',
                        )
                    )
                    continue
                outside = [entry for entry in config.allowed_hosts if not rule.covers(entry)]
                if outside:
                    found.append(
                        ConfigProblem(
                            path,
                            f"${{{name}}} may be sent to {', '.join(rule.hosts)} only "
                            f"([plugins.{SECTION}.secrets]), but allowed_hosts has "
                            f"{', '.join(outside)}",
                        )
                    )
        return found
