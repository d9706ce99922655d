"""The ``chatwright`` command-line runner (DESIGN §8).

Most tests drive :func:`chatwright.cli.build_cli` with click's ``CliRunner`` in
a fresh working directory with every ``CHATWRIGHT_*`` variable removed, so the
zero-configuration SQLite file ``chatwright.db`` is used. A few run the
installed console script in a subprocess, and one runs the same flow against
PostgreSQL by changing nothing but the database URL.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sqlite3
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

import chatwright
from chatwright import NotFoundError, hookimpl
from chatwright.cli import build_cli
from chatwright.registry import LoadPolicy, Plugins
from tests import harness
from tests.harness import (
    ADMIN_URL,
    CONSOLE_SCRIPT,
    DB_FILE,
    assert_error,
    clean_env,
    ok,
    ok_json,
    pg_env,
    run,
    script,
)

pytestmark = pytest.mark.usefixtures("workdir")

VERSION_TABLE = "chatwright_schema_version"
AGENT_KEYS = {
    "id",
    "name",
    "system_prompt",
    "model",
    "model_settings",
    "history_window",
    "created_at",
    "updated_at",
    "config_version",
    "turn_timeout",
    "max_model_calls",
    "max_tool_calls",
    "history_tokens",
    "summarize",
}
HEAVY_PREFIXES = ("langchain", "fastapi", "sqlalchemy", "alembic", "pydantic", "uvicorn", "openai")


# -- helpers ----------------------------------------------------------------


def assert_usage_error(result: Result, *needles: str) -> str:
    """A pure usage error: click's exit 2, its last line ``Error: …`` naming ``needles``."""
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Error:"), result.stderr
    for needle in needles:
        assert needle in last, f"{needle!r} not in {last!r}"
    return last


def agent_json(name: str) -> dict[str, Any]:
    data: dict[str, Any] = ok_json("agents", "show", name, "--json")
    return data


def agent_names() -> list[str]:
    return [a["name"] for a in ok_json("agents", "list", "--json")]


def schema_revision(path: Path) -> str | None:
    """The revision recorded in a SQLite database file, read without chatwright."""
    with sqlite3.connect(path) as conn:
        row = conn.execute(f"SELECT version_num FROM {VERSION_TABLE}").fetchone()
    return None if row is None else str(row[0])


def add_tool_rows(agent: str, *rows: tuple[str, bool]) -> None:
    """Add ``(name, active)`` tool rows through the storage API (no CLI command exists yet)."""
    from chatwright.runtime import Runtime
    from chatwright.settings import load_settings

    async def work() -> None:
        async with Runtime(load_settings(), Plugins.load(LoadPolicy())) as runtime:
            for name, active in rows:
                row = await runtime.storage.tools.add(
                    agent, name, type="crud", config={"table": name}, description=f"{name} table"
                )
                if not active:
                    await runtime.storage.tools.set_active(row.id, False)

    asyncio.run(work())


class ProbePlugin:
    """An inline plugin adding commands: a group, a failing command and a refusing one."""

    @hookimpl
    def register_commands(self, cli: click.Group) -> None:
        @cli.group("probe")
        def probe() -> None:
            """Probe commands added by a test plugin."""

        @probe.command("sub")
        def sub() -> None:
            """A nested probe command."""
            click.echo("sub ran")

        @cli.command("explode")
        def explode() -> None:
            """Fail with an unexpected exception."""
            raise RuntimeError("boom-1234")

        @cli.command("refuse")
        def refuse() -> None:
            """Fail with a user-facing chatwright error."""
            raise NotFoundError("no widget named 'w1'")


def probe_plugins(policy: LoadPolicy | None = None) -> Plugins:
    plugins = Plugins.load(policy)
    plugins.register(ProbePlugin(), "probe", version="9.9")
    return plugins


def command_paths(
    group: click.Group, prefix: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    """Every command and subcommand below ``group``, depth first."""
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None
        path = (*prefix, name)
        yield path, command
        if isinstance(command, click.Group):
            yield from command_paths(command, path)


def script_ok(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The console script, which must succeed with nothing on standard error."""
    proc = harness.script_ok(*args, cwd=cwd)
    assert proc.stderr == "", proc.stderr
    return proc


# -- --version and help -----------------------------------------------------


def test_version_prints_the_package_version() -> None:
    result = ok("--version")
    assert result.output == f"chatwright, version {chatwright.__version__}\n"


def test_help_works_on_the_root_and_every_command(workdir: Path) -> None:
    plugins = probe_plugins()
    root = build_cli(plugins)
    paths = [((), root), *command_paths(root)]
    visited = {path for path, _ in paths}
    # The walk must really reach the built-in commands and the ones a plugin added.
    assert {
        ("init",),
        ("plugins",),
        ("config",),
        ("config", "show"),
        ("db",),
        ("db", "upgrade"),
        ("db", "current"),
        ("agents",),
        ("agents", "list"),
        ("agents", "show"),
        ("agents", "add"),
        ("agents", "set"),
        ("probe",),
        ("probe", "sub"),
        ("explode",),
    } <= visited

    for path, command in paths:
        for flag in ("-h", "--help"):
            result = run(*path, flag, plugins=plugins)
            where = f"chatwright {' '.join(path)} {flag}"
            assert result.exit_code == 0, f"{where}: {result.output}"
            assert result.output.startswith(" ".join(("Usage: chatwright", *path)) + " "), where
            assert "-h, --help" in result.output, where
            flat = " ".join(result.output.split())
            if command.help:
                first_words = " ".join(command.help.split()[:4])
                assert first_words in flat, f"{where}: help text {first_words!r} missing"
            if isinstance(command, click.Group):
                for name in command.list_commands(click.Context(command)):
                    assert f" {name} " in flat, f"{where}: subcommand {name!r} not listed"
    # Help never touches the database.
    assert not (workdir / DB_FILE).exists()


# -- init -------------------------------------------------------------------


def test_init_writes_settings_file_and_migrates_database(workdir: Path) -> None:
    result = ok("init")
    assert "Wrote chatwright.toml" in result.output
    config = tomllib.loads((workdir / "chatwright.toml").read_text(encoding="utf-8"))
    # Without an example the file names no model: the core has none to offer.
    assert config == {
        "storage": {"backend": "sql", "url": "sqlite+aiosqlite:///chatwright.db"},
        "models": {},
    }
    info = ok_json("db", "current", "--json")
    assert info["up_to_date"] is True
    assert info["head"]
    assert schema_revision(workdir / DB_FILE) == info["head"]
    assert f"at revision {info['head']}" in result.output
    with sqlite3.connect(workdir / DB_FILE) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"agents", "agent_tools", "chat_sessions", "chat_messages"} <= tables
    # No example agent without --example.
    assert agent_names() == []


def test_init_again_keeps_an_edited_settings_file(workdir: Path) -> None:
    ok("init")
    ok("agents", "add", "keeper", "--model", "offline:assistant")
    path = workdir / "chatwright.toml"
    edited = path.read_text(encoding="utf-8").replace(
        '# default = "openai:gpt-4o-mini"', 'default = "offline:edited"'
    )
    assert "offline:edited" in edited
    path.write_text(edited, encoding="utf-8")

    result = ok("init")
    assert "Wrote" not in result.output
    assert path.read_text(encoding="utf-8") == edited
    assert ok_json("config", "show", "--json")["models"]["default"] == "offline:edited"
    assert ok_json("db", "current", "--json")["up_to_date"] is True
    assert agent_names() == ["keeper"]


def test_init_example_uses_models_default_of_an_existing_settings_file(workdir: Path) -> None:
    text = '[models]\ndefault = "ollama:llama3.2"\n'
    (workdir / "chatwright.toml").write_text(text, encoding="utf-8")
    result = ok("init", "--example")
    assert "Wrote" not in result.output
    assert (workdir / "chatwright.toml").read_text(encoding="utf-8") == text
    assert agent_json("assistant")["model"] == "ollama:llama3.2"


def test_init_example_writes_its_model_as_models_default_of_a_new_settings_file() -> None:
    ok("init", "--example")
    config = tomllib.loads(Path("chatwright.toml").read_text(encoding="utf-8"))
    assert config["models"] == {"default": "offline:assistant"}
    # Agents added afterwards get the example's model, as the quickstart shows.
    ok("agents", "add", "helper")
    assert agent_json("helper")["model"] == "offline:assistant"


def test_init_example_without_models_default_gives_the_agent_the_example_model(
    workdir: Path,
) -> None:
    text = '[storage]\nbackend = "sql"\n'
    (workdir / "chatwright.toml").write_text(text, encoding="utf-8")
    ok("init", "--example")
    assert (workdir / "chatwright.toml").read_text(encoding="utf-8") == text
    assert agent_json("assistant")["model"] == "offline:assistant"


def test_init_with_config_flag_writes_that_file(workdir: Path) -> None:
    result = ok("--config", "custom.toml", "init")
    assert "Wrote custom.toml" in result.output
    assert (workdir / "custom.toml").exists()
    assert not (workdir / "chatwright.toml").exists()
    assert ok_json("--config", "custom.toml", "db", "current", "--json")["up_to_date"] is True


def test_init_with_config_env_writes_that_file(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHATWRIGHT_CONFIG", "custom.toml")
    result = run("init")
    assert result.exit_code == 0, result.output
    assert (workdir / "custom.toml").exists()


def test_init_example_creates_assistant_once_and_leaves_it_alone() -> None:
    result = ok("init", "--example")
    assert "Created table tasks, table notes, agent 'assistant'" in result.output
    assistant = agent_json("assistant")
    assert [t["name"] for t in assistant["tools"]] == [
        "add_task",
        "list_tasks",
        "update_task",
        "delete_task",
        "add_note",
        "list_notes",
        "read_memory",
        "save_memory",
    ]
    assert all(t["type"] == "crud" and t["is_active"] for t in assistant["tools"])
    assert assistant["model"] == "offline:assistant"
    assert "{memory}" in assistant["system_prompt"]
    assert "{custom_instructions}" in assistant["system_prompt"]
    assert assistant["history_window"] == 50

    ok("agents", "set", "assistant", "--model", "openai:gpt-4o-mini", "--history-window", "9")
    before = agent_json("assistant")
    again = ok("init", "--example")
    assert "(agent 'assistant') is already there" in again.output
    assert "Created" not in again.output
    assert agent_json("assistant") == before
    assert agent_names() == ["assistant"]


# -- plugins ----------------------------------------------------------------


def test_plugins_hides_bundled_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    # An empty allowlist loads the bundled plugins only, whatever else is installed.
    monkeypatch.setenv("CHATWRIGHT_LOAD_PLUGINS", "")
    result = ok("plugins")
    assert "No plugins installed" in result.output
    assert "--all" in result.output
    assert "sql" not in result.output
    assert ok_json("plugins", "--json") == []


def test_plugins_all_json_lists_bundled_sql() -> None:
    data = ok_json("plugins", "--all", "--json")
    assert isinstance(data, list)
    assert data
    for item in data:
        assert set(item) == {"name", "version", "hooks", "bundled", "error"}
    sql = next(item for item in data if item["name"] == "sql")
    assert sql["bundled"] is True
    assert "register_storage_backends" in sql["hooks"]
    assert sql["error"] is None
    assert isinstance(sql["version"], str)
    assert sql["version"]


def test_plugins_lists_installed_plugins_with_hooks() -> None:
    plugins = probe_plugins(LoadPolicy(allow=frozenset()))
    data = json.loads(ok("plugins", "--json", plugins=plugins).stdout)
    assert data == [
        {
            "name": "probe",
            "version": "9.9",
            "hooks": ["register_commands"],
            "bundled": False,
            "error": None,
        }
    ]
    table = ok("plugins", plugins=plugins).output.splitlines()
    assert table[0].split() == ["name", "version", "bundled", "hooks", "/", "error"]
    assert table[1].split() == ["probe", "9.9", "no", "register_commands"]
    assert len(table) == 2
    everything = ok("plugins", "--all", plugins=plugins).output.splitlines()
    rows = {line.split()[0]: line.split() for line in everything[1:]}
    assert rows["sql"][2:] == ["yes", "register_settings,", "register_storage_backends"]
    assert rows["probe"][2] == "no"


def test_plugins_reports_a_plugin_whose_hook_fails() -> None:
    class Broken:
        @hookimpl
        def register_commands(self, cli: click.Group) -> None:
            raise ValueError("cannot add commands today")

    plugins = Plugins.load(LoadPolicy(allow=frozenset()))
    plugins.register(Broken(), "broken")
    data = json.loads(ok("plugins", "--json", plugins=plugins).stdout)
    (broken,) = data
    assert broken["name"] == "broken"
    assert "register_commands failed" in broken["error"]
    assert "cannot add commands today" in broken["error"]
    # The rest of the runner still works.
    assert ok("init", plugins=plugins).exit_code == 0


# -- config show ------------------------------------------------------------


def test_config_show_defaults_text_and_json() -> None:
    text = ok("config", "show").output
    lines = text.splitlines()
    assert lines[0].startswith("# settings file: none")
    assert "[storage]" in lines
    assert "[models]" in lines
    assert 'backend = "sql"' in lines
    assert 'url = "sqlite+aiosqlite:///chatwright.db"' in lines
    assert "# default is not set" in lines
    assert "pool_size = 15" in lines
    assert "echo = false" in lines

    data = ok_json("config", "show", "--json")
    assert data["storage"]["backend"] == "sql"
    assert data["storage"]["url"] == "sqlite+aiosqlite:///chatwright.db"
    assert data["storage"]["pool_size"] == 15
    assert data["models"] == {
        "default": None,
        "request_timeout": 60.0,
        "max_retries": 2,
        "tokenizer": "estimate",
    }
    assert "config_file" not in data


def test_what_config_show_prints_reads_back_as_a_settings_file(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # usage.prices was printed as a Python repr in quotes, which no settings file takes.
    prices = {"openai:gpt-4o-mini": {"input": 0.15, "output": 0.6}, "x": {"input": 1.5e-07}}
    monkeypatch.setenv("CHATWRIGHT_USAGE__PRICES", json.dumps(prices))
    shown = workdir / "shown.toml"
    shown.write_text(ok("config", "show").output, encoding="utf-8")
    monkeypatch.delenv("CHATWRIGHT_USAGE__PRICES")
    again = ok_json("--config", str(shown), "config", "show", "--json")
    assert again["usage"]["prices"]["openai:gpt-4o-mini"] == {
        "input": 0.15,
        "output": 0.6,
        "cached_input": None,
    }
    assert again["usage"]["prices"]["x"]["input"] == 1.5e-07
    # Every other setting reads back as it was shown.
    monkeypatch.setenv("CHATWRIGHT_USAGE__PRICES", json.dumps(prices))
    assert again == ok_json("config", "show", "--json")


def test_config_show_reads_file_and_environment(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (workdir / "chatwright.toml").write_text(
        '[models]\ndefault = "ollama:from-file"\n[storage]\npool_size = 3\n', encoding="utf-8"
    )
    monkeypatch.setenv("CHATWRIGHT_STORAGE__POOL_SIZE", "7")
    data = ok_json("config", "show", "--json")
    assert data["models"]["default"] == "ollama:from-file"
    assert data["storage"]["pool_size"] == 7  # environment beats the file
    text = ok("config", "show").output
    assert text.splitlines()[0] == f"# settings file: {workdir / 'chatwright.toml'}"
    assert "pool_size = 7" in text.splitlines()


def test_config_show_database_flag_overrides_and_password_is_redacted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CHATWRIGHT_STORAGE__URL", "postgresql://envuser:env-s3cret@envhost/envdb")
    from_env = ok("config", "show", "--json").stdout
    assert json.loads(from_env)["storage"]["url"] == "postgresql://envuser:***@envhost/envdb"
    assert "env-s3cret" not in from_env

    flag = ["--database", "postgresql://alice:flag-s3cret@db.example:5432/app"]
    data = json.loads(ok(*flag, "config", "show", "--json").stdout)
    assert data["storage"]["url"] == "postgresql://alice:***@db.example:5432/app"
    text = ok(*flag, "config", "show").output
    assert 'url = "postgresql://alice:***@db.example:5432/app"' in text.splitlines()
    for output in (text, json.dumps(data)):
        assert "flag-s3cret" not in output
        assert "envhost" not in output


def test_config_show_hides_an_unparseable_url() -> None:
    result = ok("--database", "not a url but s3cret", "config", "show", "--json")
    assert "s3cret" not in result.output
    assert json.loads(result.stdout)["storage"]["url"] == "<unparseable URL hidden>"


def test_config_show_reports_an_unknown_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATWRIGHT_STORAGE__ULR", "sqlite:///x.db")
    assert_error(run("config", "show"), "storage.ulr", "storage.url")


# -- db ---------------------------------------------------------------------


def test_db_current_before_init(workdir: Path) -> None:
    info = ok_json("db", "current", "--json")
    assert info["current"] is None
    assert info["exists"] is False
    assert info["up_to_date"] is False
    assert info["head"]
    assert DB_FILE in info["database"]
    text = ok("db", "current").output
    assert "`chatwright db upgrade`" in text
    assert f"newest revision {info['head']}" in text
    assert not (workdir / DB_FILE).exists()


def test_db_upgrade_then_current(workdir: Path) -> None:
    result = ok("db", "upgrade")
    info = ok_json("db", "current", "--json")
    assert info["up_to_date"] is True
    assert info["current"] == info["head"]
    assert info["head"] is not None
    assert f"revision {info['head']} (newest)" in result.output
    assert schema_revision(workdir / DB_FILE) == info["head"]
    text = ok("db", "current").output
    assert "up to date" in text
    assert "run `chatwright db upgrade`" not in text
    # Upgrading a current database is harmless and keeps the data.
    ok("agents", "add", "survivor", "--model", "offline:assistant")
    ok("db", "upgrade")
    assert agent_names() == ["survivor"]


# -- agents -----------------------------------------------------------------


def test_agents_list_empty() -> None:
    ok("db", "upgrade")
    result = ok("agents", "list")
    assert "No agents yet" in result.output
    assert "chatwright agents add" in result.output
    assert ok_json("agents", "list", "--json") == []


def test_agents_list_table_and_json() -> None:
    ok("db", "upgrade")
    ok("agents", "add", "beta", "--model", "openai:gpt-4o-mini", "--history-window", "12")
    ok("agents", "add", "alpha", "--model", "offline:assistant")
    rows = ok_json("agents", "list", "--json")
    assert [r["name"] for r in rows] == ["alpha", "beta"]
    for row in rows:
        assert set(row) == AGENT_KEYS
    assert rows[1]["model"] == "openai:gpt-4o-mini"
    assert rows[1]["history_window"] == 12

    lines = ok("agents", "list").output.splitlines()
    assert lines[0].split() == ["name", "model", "history", "updated"]
    assert lines[1].split() == ["alpha", "offline:assistant", "50", rows[0]["updated_at"][:19]]
    assert lines[2].split() == ["beta", "openai:gpt-4o-mini", "12", rows[1]["updated_at"][:19]]
    assert len(lines) == 3


def test_agents_show_text_and_json_with_tools() -> None:
    ok("db", "upgrade")
    ok(
        "agents",
        "add",
        "helper",
        "--prompt",
        "First line.\nRemember: {memory}",
        "--model",
        "anthropic:claude-3-5-haiku",
        "--setting",
        "temperature=0.2",
        "--history-window",
        "12",
    )
    assert agent_json("helper")["tools"] == []
    add_tool_rows("helper", ("tasks", True), ("notes", False))

    data = agent_json("helper")
    assert set(data) == AGENT_KEYS | {"tools"}
    assert data["name"] == "helper"
    assert data["system_prompt"] == "First line.\nRemember: {memory}"
    assert data["model"] == "anthropic:claude-3-5-haiku"
    assert data["model_settings"] == {"temperature": 0.2}
    assert data["history_window"] == 12
    tools = data["tools"]
    assert [t["name"] for t in tools] == ["tasks", "notes"]
    for tool in tools:
        assert set(tool) == {"id", "name", "type", "is_active", "position"}
        assert tool["type"] == "crud"
    assert [t["is_active"] for t in tools] == [True, False]
    assert [t["position"] for t in tools] == [0, 1]

    lines = ok("agents", "show", "helper").output.splitlines()
    assert "name: helper" in lines
    assert "model: anthropic:claude-3-5-haiku" in lines
    assert "history_window: 12" in lines
    assert 'model_settings: {"temperature": 0.2}' in lines
    at = lines.index("system_prompt:")
    assert lines[at + 1 : at + 3] == ["  First line.", "  Remember: {memory}"]
    assert "tools: 2" in lines
    assert f"  #{tools[0]['id']} tasks [crud]" in lines
    assert f"  #{tools[1]['id']} notes [crud] (disabled)" in lines


def test_agents_add_with_every_option(workdir: Path) -> None:
    ok("db", "upgrade")
    prompt = "You help.\nNotes: {memory}\n{custom_instructions}\nLiteral {{braces}}.\n"
    (workdir / "prompt.txt").write_text(prompt, encoding="utf-8")
    result = ok(
        "agents",
        "add",
        "helper",
        "--prompt-file",
        "prompt.txt",
        "--model",
        "openai:gpt-4o-mini",
        "--setting",
        "temperature=0.2",
        "--setting",
        "max_tokens=256",
        "--setting",
        "base_url=http://localhost:11434/v1",
        "--setting",
        'stop=["END"]',
        "--setting",
        "streaming=true",
        "--history-window",
        "7",
    )
    assert "Added agent 'helper'" in result.output
    assert "openai:gpt-4o-mini" in result.output
    data = agent_json("helper")
    assert data["system_prompt"] == prompt
    assert data["model"] == "openai:gpt-4o-mini"
    assert data["history_window"] == 7
    settings = data["model_settings"]
    assert settings == {
        "temperature": 0.2,
        "max_tokens": 256,
        "base_url": "http://localhost:11434/v1",
        "stop": ["END"],
        "streaming": True,
    }
    assert isinstance(settings["temperature"], float)
    assert isinstance(settings["max_tokens"], int)


def test_agents_add_defaults_and_inline_prompt(monkeypatch: pytest.MonkeyPatch) -> None:
    ok("db", "upgrade")
    monkeypatch.setenv("CHATWRIGHT_MODELS__DEFAULT", "offline:assistant")
    ok("agents", "add", "plain")
    plain = agent_json("plain")
    assert plain["model"] == "offline:assistant"
    assert plain["system_prompt"] == ""
    assert plain["model_settings"] == {}
    assert plain["history_window"] == 50

    ok("agents", "add", "inline", "--prompt", "Hi {custom_instructions}")
    assert agent_json("inline")["system_prompt"] == "Hi {custom_instructions}"

    monkeypatch.setenv("CHATWRIGHT_MODELS__DEFAULT", "ollama:llama3.2")
    ok("agents", "add", "local")
    assert agent_json("local")["model"] == "ollama:llama3.2"


def test_agents_add_without_model_or_models_default_says_what_to_give() -> None:
    ok("db", "upgrade")
    assert_error(
        run("agents", "add", "plain"),
        "'plain'",
        "--model",
        "models.default",
        "CHATWRIGHT_MODELS__DEFAULT",
    )
    assert agent_names() == []


def test_agents_set_changes_given_fields_and_leaves_the_others(workdir: Path) -> None:
    ok("db", "upgrade")
    ok(
        "agents",
        "add",
        "helper",
        "--prompt",
        "Old {memory}",
        "--model",
        "openai:gpt-4o-mini",
        "--setting",
        "temperature=0.2",
        "--history-window",
        "7",
    )
    ok("agents", "add", "bystander", "--prompt", "untouched", "--model", "offline:assistant")
    bystander = agent_json("bystander")
    first = agent_json("helper")

    result = ok("agents", "set", "helper", "--model", "anthropic:claude-3-5-haiku")
    assert "Updated agent 'helper'" in result.output
    assert "model" in result.output
    second = agent_json("helper")
    assert second["model"] == "anthropic:claude-3-5-haiku"
    for key in ("id", "system_prompt", "model_settings", "history_window", "created_at", "tools"):
        assert second[key] == first[key], key
    assert second["updated_at"] >= first["updated_at"]

    ok("agents", "set", "helper", "--prompt", "New {custom_instructions}", "--history-window", "3")
    third = agent_json("helper")
    assert third["system_prompt"] == "New {custom_instructions}"
    assert third["history_window"] == 3
    assert third["model"] == "anthropic:claude-3-5-haiku"
    assert third["model_settings"] == {"temperature": 0.2}

    (workdir / "p.txt").write_text("From file {memory}\n", encoding="utf-8")
    ok("agents", "set", "helper", "--prompt-file", "p.txt", "--setting", "temperature=0.7")
    fourth = agent_json("helper")
    assert fourth["system_prompt"] == "From file {memory}\n"
    assert fourth["model_settings"]["temperature"] == 0.7
    assert fourth["history_window"] == 3
    assert fourth["model"] == "anthropic:claude-3-5-haiku"

    assert agent_json("bystander") == bystander


def test_agents_set_setting_keeps_other_model_settings() -> None:
    ok("db", "upgrade")
    ok(
        "agents",
        "add",
        "helper",
        "--setting",
        "temperature=0.2",
        "--setting",
        "base_url=http://localhost:11434/v1",
        "--model",
        "offline:assistant",
    )
    ok("agents", "set", "helper", "--setting", "temperature=0.9")
    assert agent_json("helper")["model_settings"] == {
        "temperature": 0.9,
        "base_url": "http://localhost:11434/v1",
    }


# -- agents: errors ---------------------------------------------------------


def test_agents_add_duplicate_name_keeps_the_existing_agent() -> None:
    ok("db", "upgrade")
    ok("agents", "add", "twin", "--prompt", "original", "--model", "openai:gpt-4o-mini")
    before = agent_json("twin")
    assert_error(
        run("agents", "add", "twin", "--prompt", "impostor", "--model", "openai:gpt-4o"),
        "'twin'",
        "already exists",
    )
    assert agent_json("twin") == before
    assert agent_names() == ["twin"]


def test_agents_show_unknown_agent() -> None:
    ok("db", "upgrade")
    assert_error(run("agents", "show", "ghost"), "'ghost'")
    assert_error(run("agents", "show", "ghost", "--json"), "'ghost'")


def test_agents_set_unknown_agent_creates_nothing() -> None:
    ok("db", "upgrade")
    ok("agents", "add", "real", "--model", "offline:assistant")
    before = agent_json("real")
    assert_error(run("agents", "set", "ghost", "--model", "openai:gpt-4o"), "'ghost'")
    assert agent_names() == ["real"]
    assert agent_json("real") == before


ADD_ERRORS = [
    pytest.param(["--model", "nocolon"], ["'newbie'", "model", "provider:name"], id="model"),
    pytest.param(["--history-window", "0"], ["'newbie'", "history_window"], id="window-0"),
    pytest.param(["--history-window", "-5"], ["'newbie'", "history_window"], id="window-neg"),
    pytest.param(["--prompt", "Hi {foo}"], ["'newbie'", "{foo}"], id="placeholder"),
    pytest.param(["--prompt", "Hi {memory"], ["'newbie'", "brace"], id="unbalanced"),
    pytest.param(["--setting", "noequals"], ["'noequals'", "KEY=VALUE"], id="setting"),
    pytest.param(
        ["--prompt", "p", "--prompt-file", "prompt.txt"],
        ["--prompt", "--prompt-file"],
        id="both-prompts",
    ),
]


@pytest.mark.parametrize(("args", "needles"), ADD_ERRORS)
def test_agents_add_rejects_invalid_input(
    workdir: Path, args: list[str], needles: list[str]
) -> None:
    ok("db", "upgrade")
    (workdir / "prompt.txt").write_text("from file", encoding="utf-8")
    assert_error(run("agents", "add", "newbie", "--model", "openai:gpt-4o", *args), *needles)
    assert agent_names() == []


def test_agents_add_rejects_a_bad_name() -> None:
    ok("db", "upgrade")
    assert_error(run("agents", "add", "bad/name"), "'bad/name'", "name")
    assert agent_names() == []


SET_ERRORS = [
    pytest.param(["--model", "nocolon"], ["'keep'", "model", "provider:name"], id="model"),
    pytest.param(["--history-window", "0"], ["'keep'", "history_window"], id="window-0"),
    pytest.param(
        ["--model", "openai:gpt-4o", "--history-window", "0"],
        ["'keep'", "history_window"],
        id="one-bad-of-two",
    ),
    pytest.param(["--prompt", "Hi {foo}"], ["'keep'", "{foo}"], id="placeholder"),
    pytest.param(["--setting", "=1"], ["'=1'", "KEY=VALUE"], id="setting"),
    pytest.param(
        ["--prompt", "p", "--prompt-file", "prompt.txt"],
        ["--prompt", "--prompt-file"],
        id="both-prompts",
    ),
]


@pytest.mark.parametrize(("args", "needles"), SET_ERRORS)
def test_agents_set_rejects_invalid_input_and_keeps_the_agent(
    workdir: Path, args: list[str], needles: list[str]
) -> None:
    ok("db", "upgrade")
    ok(
        "agents",
        "add",
        "keep",
        "--prompt",
        "Keep {memory}",
        "--setting",
        "temperature=0.2",
        "--model",
        "offline:assistant",
    )
    add_tool_rows("keep", ("tasks", True))
    before = agent_json("keep")
    (workdir / "prompt.txt").write_text("from file", encoding="utf-8")
    assert_error(run("agents", "set", "keep", *args), *needles)
    assert agent_json("keep") == before


def test_agents_set_with_nothing_to_change_is_a_usage_error() -> None:
    ok("db", "upgrade")
    ok("agents", "add", "keep", "--model", "offline:assistant")
    before = agent_json("keep")
    assert_usage_error(run("agents", "set", "keep"), "nothing to change", "--prompt")
    assert agent_json("keep") == before


def test_agents_prompt_file_must_exist() -> None:
    ok("db", "upgrade")
    assert_usage_error(
        run("agents", "add", "newbie", "--prompt-file", "missing.txt"), "missing.txt"
    )
    assert agent_names() == []


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["agents", "list"], id="list"),
        pytest.param(["agents", "list", "--json"], id="list-json"),
        pytest.param(["agents", "show", "someone"], id="show"),
        pytest.param(["agents", "add", "someone", "--model", "openai:gpt-4o"], id="add"),
        pytest.param(["agents", "set", "someone", "--model", "openai:gpt-4o"], id="set"),
    ],
)
def test_agents_commands_on_a_database_that_is_not_initialised(args: list[str]) -> None:
    # No command but init and db upgrade creates a database file.
    assert_error(run(*args), DB_FILE, "there is no database at", "`chatwright init`")
    assert ok_json("db", "current", "--json")["exists"] is False
    # An empty file (not a chatwright database yet) is refused as not initialised.
    sqlite3.connect(DB_FILE).close()
    assert Path(DB_FILE).exists()
    assert_error(
        run(*args), DB_FILE, "not initialised", "`chatwright db upgrade`", "`chatwright init`"
    )
    # The command neither created the schema nor stored anything.
    assert ok_json("db", "current", "--json")["current"] is None


def test_disabled_storage_plugin_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # build_cli() reads the environment when it loads plugins, which `run` does after this.
    monkeypatch.setenv("CHATWRIGHT_DISABLE_PLUGINS", "sql")
    assert_error(
        run("agents", "list"),
        "no storage backend named 'sql' is available",
        "CHATWRIGHT_DISABLE_PLUGINS",
    )
    names = [p["name"] for p in ok_json("plugins", "--all", "--json")]
    assert "sql" not in names


# -- unexpected errors ------------------------------------------------------


def test_plugin_command_runs() -> None:
    assert ok("probe", "sub", plugins=probe_plugins()).output == "sub ran\n"


def test_chatwright_error_in_a_command_is_one_line() -> None:
    line = assert_error(run("refuse", plugins=probe_plugins()), "'w1'")
    assert line == "Error: no widget named 'w1'"


def test_unexpected_exception_is_one_error_line_without_traceback() -> None:
    line = assert_error(
        run("explode", plugins=probe_plugins()), "RuntimeError", "boom-1234", "CHATWRIGHT_DEBUG=1"
    )
    assert line.startswith("Error: unexpected RuntimeError")


def test_debug_lets_an_unexpected_exception_propagate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATWRIGHT_DEBUG", "1")
    with pytest.raises(RuntimeError, match="boom-1234"):
        run("explode", plugins=probe_plugins(), catch_exceptions=False)


def test_debug_zero_does_not_show_the_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATWRIGHT_DEBUG", "0")
    assert_error(run("explode", plugins=probe_plugins()), "boom-1234")


def test_one_built_runner_invoked_twice_does_not_leak_state() -> None:
    root = build_cli()
    runner = CliRunner()
    first = runner.invoke(root, ["--database", "sqlite:///other.db", "config", "show", "--json"])
    assert json.loads(first.stdout)["storage"]["url"] == "sqlite:///other.db"
    second = runner.invoke(root, ["config", "show", "--json"])
    assert json.loads(second.stdout)["storage"]["url"] == "sqlite+aiosqlite:///chatwright.db"


# -- the installed console script ---------------------------------------------


def test_console_script_version_and_help(workdir: Path) -> None:
    assert CONSOLE_SCRIPT.exists(), f"console script not installed at {CONSOLE_SCRIPT}"
    version = script_ok("--version", cwd=workdir)
    assert version.stdout == f"chatwright, version {chatwright.__version__}\n"
    help_ = script_ok("--help", cwd=workdir)
    assert help_.stdout.startswith("Usage: chatwright ")
    listed = {line.split()[0] for line in help_.stdout.split("Commands:")[1].splitlines() if line}
    assert {"init", "plugins", "config", "db", "agents"} <= listed
    assert script_ok("agents", "-h", cwd=workdir).stdout.startswith("Usage: chatwright agents ")
    assert not (workdir / DB_FILE).exists()


def test_console_script_workflow(workdir: Path) -> None:
    before = json.loads(script_ok("db", "current", "--json", cwd=workdir).stdout)
    assert before["up_to_date"] is False
    assert before["current"] is None

    init = script_ok("init", "--example", cwd=workdir)
    assert "Wrote chatwright.toml" in init.stdout
    assert "agent 'assistant' (model offline:assistant)" in init.stdout
    assert (workdir / "chatwright.toml").exists()

    plugins = json.loads(script_ok("plugins", "--all", "--json", cwd=workdir).stdout)
    sql = next(p for p in plugins if p["name"] == "sql")
    assert sql["bundled"] is True
    assert "register_storage_backends" in sql["hooks"]

    config = script_ok("config", "show", cwd=workdir).stdout.splitlines()
    assert config[0] == f"# settings file: {workdir / 'chatwright.toml'}"
    assert 'url = "sqlite+aiosqlite:///chatwright.db"' in config

    upgrade = script_ok("db", "upgrade", cwd=workdir)
    assert "(newest)" in upgrade.stdout
    current = json.loads(script_ok("db", "current", "--json", cwd=workdir).stdout)
    assert current["up_to_date"] is True
    assert current["current"] == current["head"] == before["head"]

    added = script_ok(
        "agents",
        "add",
        "helper",
        "--model",
        "openai:gpt-4o-mini",
        "--setting",
        "temperature=0.2",
        "--history-window",
        "5",
        cwd=workdir,
    )
    assert "Added agent 'helper'" in added.stdout
    changed = script_ok("agents", "set", "helper", "--prompt", "Hi {memory}", cwd=workdir)
    assert "Updated agent 'helper'" in changed.stdout

    shown = json.loads(script_ok("agents", "show", "helper", "--json", cwd=workdir).stdout)
    assert shown["system_prompt"] == "Hi {memory}"
    assert shown["model"] == "openai:gpt-4o-mini"
    assert shown["model_settings"] == {"temperature": 0.2}
    assert shown["history_window"] == 5
    assert shown["tools"] == []
    assert "name: helper" in script_ok("agents", "show", "helper", cwd=workdir).stdout

    listed = json.loads(script_ok("agents", "list", "--json", cwd=workdir).stdout)
    assert [a["name"] for a in listed] == ["assistant", "helper"]
    table = script_ok("agents", "list", cwd=workdir).stdout.splitlines()
    assert [line.split()[0] for line in table] == ["name", "assistant", "helper"]


@pytest.mark.parametrize(
    ("upgrade", "args", "extra_env", "needle"),
    [
        pytest.param(True, ["agents", "show", "nobody"], {}, "'nobody'", id="unknown-agent"),
        pytest.param(False, ["agents", "list"], {}, "chatwright db upgrade", id="not-initialised"),
        pytest.param(
            True, ["agents", "add", "x", "--model", "nocolon"], {}, "'x'", id="invalid-input"
        ),
        pytest.param(
            False,
            ["config", "show"],
            {"CHATWRIGHT_STORAGE__BOGUS": "1"},
            "storage.bogus",
            id="unknown-setting",
        ),
        pytest.param(
            False,
            ["agents", "list"],
            {"CHATWRIGHT_DISABLE_PLUGINS": "sql"},
            "'sql'",
            id="no-backend",
        ),
    ],
)
def test_console_script_error_is_one_line(
    workdir: Path, upgrade: bool, args: list[str], extra_env: dict[str, str], needle: str
) -> None:
    if upgrade:
        script_ok("db", "upgrade", cwd=workdir)
    proc = script(*args, cwd=workdir, env=clean_env(**extra_env))
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("Error:")
    assert needle in lines[0]


def test_help_does_not_import_heavy_modules(workdir: Path) -> None:
    code = (
        "import json, sys\n"
        "from chatwright.cli import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        f"prefixes = {HEAVY_PREFIXES!r}\n"
        "heavy = sorted(m for m in sys.modules if m.startswith(prefixes))\n"
        "print('HEAVY=' + json.dumps(heavy))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=workdir,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Usage: chatwright")  # main really printed the help
    heavy_line = proc.stdout.strip().splitlines()[-1]
    assert heavy_line.startswith("HEAVY=")
    assert json.loads(heavy_line.removeprefix("HEAVY=")) == []


# -- PostgreSQL ---------------------------------------------------------------


@pytest.fixture
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database, dropped afterwards; its URL (no driver suffix)."""
    psycopg = pytest.importorskip("psycopg")
    from psycopg import sql
    from sqlalchemy.engine import make_url

    admin = make_url(ADMIN_URL).set(drivername="postgresql")
    try:
        conn = psycopg.connect(
            admin.render_as_string(hide_password=False), autocommit=True, connect_timeout=5
        )
    except psycopg.OperationalError as exc:
        reason = (
            f"no PostgreSQL server answers at {admin.render_as_string(hide_password=True)} "
            f"(set CHATWRIGHT_ADMIN_URL to an admin URL): {' '.join(str(exc).split())}"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    name = f"cw_cli_{secrets.token_hex(6)}"
    with conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            yield admin.set(database=name).render_as_string(hide_password=False)
        finally:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def _pg_agent_names(url: str) -> list[str]:
    import psycopg

    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute("SELECT name FROM agents ORDER BY name")]


@pytest.mark.postgresql
def test_postgresql_by_url_only(
    workdir: Path, pg_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = pg_database.rsplit("/", 1)[1]
    # The URL, and through the run's PgBouncer (if it has one) the pooler keys with it.
    reach = pg_env(pg_database)
    for name, value in reach.items():
        monkeypatch.setenv(name, value)

    before = ok_json("db", "current", "--json")
    assert before["up_to_date"] is False
    assert before["current"] is None
    assert before["database"].startswith("postgresql")
    assert database in before["database"]

    ok("db", "upgrade")
    after = ok_json("db", "current", "--json")
    assert after["up_to_date"] is True
    assert after["current"] == after["head"]

    ok(
        "agents",
        "add",
        "pgagent",
        "--setting",
        "temperature=0.2",
        "--history-window",
        "9",
        "--model",
        "offline:assistant",
    )
    rows = ok_json("agents", "list", "--json")
    assert [r["name"] for r in rows] == ["pgagent"]
    assert rows[0]["model_settings"] == {"temperature": 0.2}
    assert isinstance(rows[0]["model_settings"]["temperature"], float)
    assert rows[0]["history_window"] == 9
    assert_error(
        run("agents", "add", "pgagent", "--model", "openai:gpt-4o"), "'pgagent'", "already exists"
    )

    # The same with the --database flag instead of the environment.
    monkeypatch.delenv("CHATWRIGHT_STORAGE__URL")
    flag = reach["CHATWRIGHT_STORAGE__URL"]
    ok("--database", flag, "agents", "add", "second", "--model", "openai:gpt-4o-mini")
    rows = ok_json("--database", flag, "agents", "list", "--json")
    assert [r["name"] for r in rows] == ["pgagent", "second"]
    assert rows[1]["model"] == "openai:gpt-4o-mini"

    # Really in PostgreSQL, not in a SQLite file of the working directory.
    assert _pg_agent_names(pg_database) == ["pgagent", "second"]
    assert not (workdir / DB_FILE).exists()


# -- the edges users hit ----------------------------------------------------


def test_init_with_the_database_in_the_environment_writes_no_other_url(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHATWRIGHT_STORAGE__URL", "sqlite+aiosqlite:///elsewhere.db")
    ok("init")
    text = (workdir / "chatwright.toml").read_text(encoding="utf-8")
    storage = tomllib.loads(text)["storage"]
    assert "url" not in storage, text
    assert "CHATWRIGHT_STORAGE__URL" in text
    assert (workdir / "elsewhere.db").exists()
    assert not (workdir / DB_FILE).exists()
    # The file and the environment agree: the same database next time.
    assert "elsewhere.db" in ok_json("config", "show", "--json")["storage"]["url"]


def test_init_with_the_database_flag_writes_no_other_url(workdir: Path) -> None:
    ok("--database", "sqlite+aiosqlite:///flagged.db", "init")
    storage = tomllib.loads((workdir / "chatwright.toml").read_text(encoding="utf-8"))["storage"]
    assert "url" not in storage


def test_init_without_a_database_writes_the_sqlite_default(workdir: Path) -> None:
    ok("init")
    storage = tomllib.loads((workdir / "chatwright.toml").read_text(encoding="utf-8"))["storage"]
    assert storage["url"] == "sqlite+aiosqlite:///chatwright.db"


def test_agents_show_hides_secret_model_settings() -> None:
    ok("db", "upgrade")
    ok(
        "agents",
        "add",
        "keyed",
        "--model",
        "openai:gpt-4o-mini",
        "--setting",
        "api_key=sk-very-secret",
        "--setting",
        "temperature=0.2",
        "--setting",
        "base_url=https://user:hunter2@proxy.example/v1",
    )
    for result in (ok("agents", "show", "keyed"), ok("agents", "show", "keyed", "--json")):
        assert "sk-very-secret" not in result.output
        assert "hunter2" not in result.output
    shown = agent_json("keyed")["model_settings"]
    assert shown["api_key"] == "**********"
    assert shown["temperature"] == 0.2
    assert shown["base_url"] == "https://user:***@proxy.example/v1"


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["agents", "add", "typo", "--model", "opnai:gpt-4o"], id="add"),
        pytest.param(["agents", "set", "assistant", "--model", "opnai:gpt-4o"], id="set"),
    ],
)
def test_an_unknown_model_provider_is_refused_when_the_agent_is_stored(args: list[str]) -> None:
    ok("init", "--example")
    before = agent_json("assistant")["model"]
    assert_error(run(*args), "no model provider 'opnai'", "did you mean 'openai'?")
    assert agent_names() == ["assistant"]
    assert agent_json("assistant")["model"] == before


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        pytest.param({"CHATWRIGHT_CACHE__POLICY": "lru-typo"}, "cache.policy", id="cache-policy"),
        pytest.param({"CHATWRIGHT_SESSIONS__STORE": "nowhere"}, "sessions.store", id="store"),
    ],
)
def test_serve_refuses_an_unknown_plugin_name_in_one_line(
    workdir: Path, env: dict[str, str], needle: str
) -> None:
    script_ok("init", cwd=workdir)
    proc = script("serve", "--port", "0", cwd=workdir, env=clean_env(**env))
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    (line,) = proc.stderr.splitlines()
    assert line.startswith("Error: ") and needle in line, line


def test_serve_on_a_port_in_use_is_one_line(workdir: Path) -> None:
    import socket

    script_ok("init", cwd=workdir)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = script("serve", "--port", str(port), cwd=workdir)
    assert proc.returncode == 1, proc.stderr
    (line,) = proc.stderr.splitlines()
    assert line.startswith("Error: cannot listen on 127.0.0.1:") and "--port" in line, line


@pytest.mark.parametrize(
    ("key", "secret"),
    [
        ("api_key", True),
        ("OPENAI_API_KEY", True),
        ("accessToken", True),
        ("jwt_secret", True),
        ("db_password", True),
        ("max_tokens", False),
        ("max_keys", False),
        ("temperature", False),
    ],
)
def test_one_rule_says_which_keys_hold_secrets(key: str, secret: bool) -> None:
    from chatwright.redaction import HIDDEN, is_secret_key, redacted

    assert is_secret_key(key) is secret
    assert (redacted({"nested": {key: "value"}})["nested"][key] == HIDDEN) is secret
