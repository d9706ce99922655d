"""The ``[mcp]`` settings keep the secrets written in them out of what chatwright prints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from chatwright.errors import SettingsError
from chatwright.settings import load_settings

SERVERS = {
    "local": {
        "command": "mcp-files",
        "args": ["--root", "/srv/shared"],
        "env": {"FILES_TOKEN": "sk-env-81c3f0", "FROM_ENV": "${FILES_SOURCE}"},
    },
    "remote": {
        "url": "https://mcp.example.com/mcp",
        "headers": {"Authorization": "Bearer sk-auth-5e2b", "X-Upstream": "sk-head-77d1a9"},
    },
}


def test_config_show_hides_the_values_of_env_and_headers() -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CHATWRIGHT_")}
    env = {**base, "CHATWRIGHT_MCP__SERVERS": json.dumps(SERVERS)}
    printed = {}
    for form, options in (("json", ["--json"]), ("toml", [])):
        done = subprocess.run(
            [sys.executable, "-m", "chatwright", "config", "show", *options],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        for secret in ("sk-env-81c3f0", "sk-auth-5e2b", "sk-head-77d1a9"):
            assert secret not in done.stdout
        printed[form] = done.stdout
    shown = json.loads(printed["json"])["mcp"]["servers"]
    hidden = "**********"
    assert shown["local"]["env"] == {"FILES_TOKEN": hidden, "FROM_ENV": hidden}
    assert shown["local"]["args"] == ["--root", "/srv/shared"]
    assert shown["remote"]["headers"] == {"Authorization": hidden, "X-Upstream": hidden}


@pytest.mark.parametrize(
    ("where", "value", "problem"),
    [
        (
            "headers.Authorization",
            "Bearer sk-bad-0a9f ${not a name}",
            "${not a name} is not a variable reference; write ${NAME}",
        ),
        (
            "headers.X-Key",
            "sk-bad-0a9f${CHATWRIGHT_SERVER__JWT_SECRET}",
            "${CHATWRIGHT_SERVER__JWT_SECRET} is one of chatwright's own variables; MCP "
            "servers never get CHATWRIGHT_* variables",
        ),
        ("env.PIN", 90210, "must be a string, not int"),
    ],
)
def test_a_settings_error_names_the_setting_and_not_its_value(
    plugins: Any, where: str, value: Any, problem: str
) -> None:
    kind, _, name = where.partition(".")
    spec: dict[str, Any] = (
        {"url": "https://mcp.example.com/mcp"} if kind == "headers" else {"command": "mcp-files"}
    )
    spec[kind] = {name: value}
    with pytest.raises(SettingsError) as raised:
        load_settings(None, {"mcp": {"servers": {"x": spec}}}, plugins)
    assert str(raised.value) == (
        f"setting 'mcp.servers.x.{where}' is invalid: {problem} (its value is not shown: it "
        "may hold a secret)"
    )
    assert "sk-bad-0a9f" not in str(raised.value) and "90210" not in str(raised.value)


@pytest.mark.parametrize(
    ("servers", "where", "kind"),
    [
        ({"x": "mcp-files --token sk-bad-0a9f"}, "x", "str"),
        ({"x": ["mcp-files", "sk-bad-0a9f"]}, "x", "list"),
        ({"x": {"command": "mcp-files", "env": "TOKEN=sk-bad-0a9f"}}, "x.env", "str"),
        (
            {"x": {"url": "https://mcp.example.com/mcp", "headers": ["sk-bad-0a9f"]}},
            "x.headers",
            "list",
        ),
    ],
)
def test_a_server_or_its_secrets_of_the_wrong_type_are_not_echoed(
    plugins: Any, servers: dict[str, Any], where: str, kind: str
) -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings(None, {"mcp": {"servers": servers}}, plugins)
    text = str(raised.value)
    assert f"setting 'mcp.servers.{where}' is invalid" in text, text
    assert f"not {kind}" in text and "its value is not shown" in text, text
    assert "sk-bad-0a9f" not in text
