"""Plugins whose hooks misbehave: each fault is one line naming the plugin, and a plugin
that can be skipped is, without breaking what does not need it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

from chatwright import hookimpl
from chatwright.cache import ExecutorCache
from chatwright.cli import build_cli
from chatwright.errors import ModelConfigError, PluginError
from chatwright.models import build_model
from chatwright.registry import LoadPolicy, Plugins
from chatwright.settings import Settings, load_settings
from chatwright.stores import ToolRow
from chatwright.tools import ToolContext, build_row
from tests.harness import scrub_environ

Register = Callable[[str, Any], None]


@pytest.fixture(autouse=True)
def _clean(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scrub_environ(monkeypatch)
    monkeypatch.chdir(tmp_path)


def with_plugin(plugin: object, name: str = "rogue", *, strict: bool = False) -> Plugins:
    """The bundled plugins and ``plugin``."""
    plugins = Plugins(LoadPolicy(strict=strict))
    plugins.load_entry_points()
    plugins.register(plugin, name)
    return plugins


def invoke(plugins: Plugins, *args: str) -> Result:
    return CliRunner().invoke(build_cli(plugins), list(args))


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


# -- settings ----------------------------------------------------------------------


def exploding() -> int:
    raise RuntimeError("default factory exploded")


class ExplodingDefault:
    @hookimpl
    def register_settings(self, register: Register) -> None:
        from pydantic import BaseModel, Field

        class Rogue(BaseModel):
            x: int = Field(default_factory=exploding)

        register("rogue", Rogue)


class RequiredKey:
    @hookimpl
    def register_settings(self, register: Register) -> None:
        from pydantic import BaseModel

        class Rogue(BaseModel):
            need: int

        register("rogue", Rogue)


@pytest.mark.parametrize(
    ("plugin", "said"),
    [
        (ExplodingDefault(), "default factory exploded"),
        (RequiredKey(), "no default for rogue.need; every key of a plugin's settings needs"),
    ],
)
def test_a_settings_model_without_usable_defaults_skips_only_its_plugin(
    plugin: object, said: str, caplog: pytest.LogCaptureFixture
) -> None:
    plugins = with_plugin(plugin)
    result = invoke(plugins, "config", "show")
    assert result.exit_code == 0, result.output
    assert "[storage]" in result.stdout and "[rogue]" not in result.stdout
    (line,) = [w for w in warnings(caplog) if "rogue" in w]
    assert line.startswith("chatwright: skipped plugin 'rogue': register_settings failed")
    assert said in line
    with pytest.raises(PluginError, match=f"plugin 'rogue' register_settings failed.*{said}"):
        load_settings(plugins=with_plugin(plugin, strict=True))


# -- commands ----------------------------------------------------------------------


class SubcommandThief:
    @hookimpl
    def register_commands(self, cli: click.Group) -> None:
        agents = cli.commands["agents"]
        assert isinstance(agents, click.Group)

        @agents.command(name="list")
        def hijack() -> None:
            click.echo("hijacked")

        @agents.command(name="extra")
        def extra() -> None:
            click.echo("extra")


def test_a_plugin_cannot_replace_a_built_in_subcommand() -> None:
    from chatwright.commands.agents import agents

    builtin_list = agents.commands["list"]
    plugins = with_plugin(SubcommandThief())
    root = build_cli(plugins)
    group = root.commands["agents"]
    assert isinstance(group, click.Group)
    assert group.commands["list"] is builtin_list
    assert "extra" not in group.commands  # the whole plugin's commands are refused
    (info,) = [i for i in plugins.infos() if i.name == "rogue"]
    assert info.error == "register_commands tried to replace the command 'agents list' (built in)"


class ChatRemover:
    @hookimpl
    def register_commands(self, cli: click.Group) -> None:
        del cli.commands["chat"]


def test_a_plugin_that_removes_a_command_is_said_to_remove_it() -> None:
    plugins = with_plugin(ChatRemover())
    root = build_cli(plugins)
    assert "chat" in root.commands
    (info,) = [i for i in plugins.infos() if i.name == "rogue"]
    assert info.error == "register_commands tried to remove the command 'chat' (built in)"


# -- models ------------------------------------------------------------------------


class BadModels:
    @hookimpl
    def register_models(self, register: Register) -> None:
        register("text", lambda name, settings: "not a model")
        register("keyerror", self.raises)

    @staticmethod
    def raises(name: str, settings: Any) -> Any:
        raise KeyError("k")


def test_a_model_factory_that_is_not_callable_skips_its_plugin() -> None:
    class NotCallable:
        @hookimpl
        def register_models(self, register: Register) -> None:
            register("nc", "not a factory")

    plugins = with_plugin(NotCallable())
    with pytest.raises(ModelConfigError) as raised:
        build_model(plugins, "nc:x", {})
    assert "no model provider named 'nc'" in str(raised.value)
    assert "plugin 'rogue' failed and was skipped" in str(raised.value)
    (info,) = [i for i in plugins.infos() if i.name == "rogue"]
    assert info.error == (
        "register_models failed: model provider 'nc' must be registered with a factory, a "
        "function (name, settings) -> chat model; got 'not a factory'"
    )
    assert build_model(plugins, "offline:assistant", {}) is not None  # the others work


def test_a_model_factory_that_returns_no_model_or_raises_is_a_model_config_error() -> None:
    plugins = with_plugin(BadModels())
    with pytest.raises(ModelConfigError) as returned:
        build_model(plugins, "text:x", {})
    assert str(returned.value).startswith(
        "model 'text:x': model provider 'text' (plugin 'rogue') is broken: its factory "
        "returned str, not a LangChain chat model; disable the plugin with "
        "CHATWRIGHT_DISABLE_PLUGINS=rogue"
    )
    with pytest.raises(ModelConfigError) as raised:
        build_model(plugins, "keyerror:x", {})
    assert str(raised.value).startswith(
        "model 'keyerror:x': model provider 'keyerror' (plugin 'rogue') failed to make the "
        "model: KeyError: 'k'"
    )
    assert ModelConfigError.http_status == 503


# -- tool types --------------------------------------------------------------------


def _config_model() -> type:
    from pydantic import BaseModel

    class Empty(BaseModel):
        pass

    return Empty


class SyncBuild:
    config_model = _config_model()

    def build(self, row: Any, config: Any, context: Any) -> Any:
        return None


class NoneBuild:
    config_model = _config_model()

    async def build(self, row: Any, config: Any, context: Any) -> Any:
        return None


def tool_types(value: object) -> object:
    class Types:
        @hookimpl
        def register_tool_types(self, register: Register) -> None:
            register("t", value)

    return Types()


@pytest.mark.parametrize(
    ("value", "said"),
    [
        (None, "got None, which has no config_model or build"),
        (NoneBuild, "got the class NoneBuild: register NoneBuild() instead"),
        ("x", "got 'x', which has no config_model or build"),
        (SyncBuild(), "its build must be a coroutine function"),
    ],
)
def test_register_refuses_what_is_not_a_tool_type(value: object, said: str) -> None:
    plugins = with_plugin(tool_types(value))
    assert "t" not in plugins.collect("register_tool_types")
    assert "crud" in plugins.collect("register_tool_types")  # the others are there
    (info,) = [i for i in plugins.infos() if i.name == "rogue"]
    assert info.error is not None
    assert info.error.startswith("register_tool_types failed: tool type 't' must be registered")
    assert said in info.error


def test_a_tool_type_whose_build_returns_no_tool_is_reported_as_broken() -> None:
    plugins = with_plugin(tool_types(NoneBuild()))
    now = datetime.now(UTC)
    row = ToolRow(1, 1, "tt", "t", "", {}, True, 0, now, now)
    context = ToolContext("a", None, Settings())  # type: ignore[arg-type]
    report = asyncio.run(build_row(row, "a", plugins, context))
    assert [p.brief() for p in report.problems] == [
        "type: tool type 't' (plugin 'rogue') is broken: its build returned None, not a "
        "LangChain tool; disable the plugin with CHATWRIGHT_DISABLE_PLUGINS=rogue"
    ]


# -- config show -------------------------------------------------------------------


class OddDefaults:
    @hookimpl
    def register_settings(self, register: Register) -> None:
        from pydantic import BaseModel

        class Rogue(BaseModel):
            raw: bytes = b"\xff\xfe"
            text: bytes = b"plain"
            table: dict[str, Any] = {"a": None, "b": 1}
            items: list[Any] = [None, 1]

        register("rogue", Rogue)


def test_config_show_prints_any_default_truthfully() -> None:
    plugins = with_plugin(OddDefaults())
    result = invoke(plugins, "config", "show")
    assert result.exit_code == 0, result.output
    section = result.stdout.split("[rogue]\n", 1)[1].split("\n\n", 1)[0]
    assert section.splitlines() == [
        "# raw = b'\\xff\\xfe' (bytes that are not UTF-8 text, which TOML cannot write)",
        'text = "plain"',
        '# table = {"a": null, "b": 1} (as JSON: it holds null, which TOML cannot write)',
        "# items = [null, 1] (as JSON: it holds null, which TOML cannot write)",
    ]
    as_json = invoke(plugins, "config", "show", "--json")
    assert as_json.exit_code == 0, as_json.output
    assert '"table": {\n      "a": null,' in as_json.stdout


# -- examples and eviction policies --------------------------------------------------


class Installs:
    summary = "nothing"
    model = None

    def __init__(self, outcome: Callable[[], Any]) -> None:
        self.outcome = outcome

    async def install(self, runtime: Any) -> Any:
        return self.outcome()


def examples(example: Installs) -> object:
    class Examples:
        @hookimpl
        def register_examples(self, register: Register) -> None:
            register("odd", example)

    return Examples()


def _explode() -> Any:
    raise RuntimeError("install exploded")


@pytest.mark.parametrize(
    ("outcome", "said"),
    [
        (
            lambda: "not a list",
            "install returned 'not a list', not a list of what it created (strings)",
        ),
        (_explode, "install failed: RuntimeError: install exploded"),
    ],
)
def test_an_example_whose_install_misbehaves_is_named(
    outcome: Callable[[], Any], said: str
) -> None:
    plugins = with_plugin(examples(Installs(outcome)))
    result = invoke(plugins, "init", "--example", "odd")
    assert result.exit_code == 1
    assert result.output.splitlines()[-1] == (
        f"Error: example 'odd' (plugin 'rogue') is broken: its {said}; disable the plugin "
        "with CHATWRIGHT_DISABLE_PLUGINS=rogue and report it to its author"
    )


class GarbagePolicy:
    def select(self, entries: Any, active: Any, now: float) -> Any:
        return "garbage"


def test_an_eviction_policy_whose_select_returns_garbage_is_named() -> None:
    async def build(key: str) -> str:
        return key

    async def main() -> None:
        cache = ExecutorCache(build, GarbagePolicy())
        with pytest.raises(PluginError) as raised:
            await cache.get("a", version="1")
        assert str(raised.value) == (
            f"eviction policy GarbagePolicy (module {__name__}, the cache.policy setting) is "
            "broken: its select() returned 'garbage', not a list of (key, reason) pairs; set "
            "cache.policy to another policy, or disable its plugin with "
            "CHATWRIGHT_DISABLE_PLUGINS"
        )
        with pytest.raises(PluginError, match=r"its select\(\) returned 'garbage'"):
            cache.sweep(set())
        assert raised.value.http_status == 503  # the server is misconfigured, not broken

    asyncio.run(main())


# -- return values of collection hooks ----------------------------------------------


class ReturnsAList:
    @hookimpl
    def register_models(self, register: Register) -> Any:
        return [("mine", lambda name, settings: None)]


def test_a_collection_hook_that_returns_something_is_warned_of_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    plugins = with_plugin(ReturnsAList())
    plugins.collect("register_models")
    plugins.unregister("nobody")  # asks the plugins again
    plugins.collect("register_models")
    said = [w for w in warnings(caplog) if "rogue" in w]
    assert said == [
        "chatwright: plugin 'rogue': register_models returned <list>, which is ignored; a "
        "collection hook declares each thing by calling register(name, value) and returns "
        "nothing"
    ]


# -- found by a review of the above ---------------------------------------------------


def _logged(function: Callable[..., Any]) -> Callable[..., Any]:
    """A plain (not async) decorator, as a logging or timing one is."""
    import functools

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return function(*args, **kwargs)

    return wrapper


class LazyCached:
    import functools as _functools

    @_functools.cached_property
    def config_model(self) -> type:
        return _config_model()

    @_logged
    async def build(self, row: Any, config: Any, context: Any) -> Any:
        return None


def test_a_lazy_or_decorated_tool_type_is_accepted() -> None:
    """A ``config_model`` as a cached property, a ``build`` under a plain decorator: both
    work at run time, and were refused."""
    plugins = with_plugin(tool_types(LazyCached()))
    assert "t" in plugins.collect("register_tool_types")
    assert all(i.error is None for i in plugins.infos())


class CrudAgain:
    @hookimpl(trylast=True)
    def register_tool_types(self, register: Register) -> None:
        register("crud", object.__new__(NoneBuild))


def test_chatwrights_own_name_stays_its_own_whatever_order_the_plugins_register_in(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Two plugins registering ``crud`` before the bundled one is reached were a clash,
    and the bundled registration was then dropped."""
    plugins = Plugins(LoadPolicy())
    plugins.register(CrudAgain(), "first")
    plugins.register(CrudAgain(), "second")
    plugins.load_entry_points()
    assert plugins.get("register_tool_types", "crud").plugin == "crud"
    said = warnings(caplog)
    assert any("plugin 'first' registers the tool type 'crud'" in w for w in said)
    assert any("plugin 'second' registers the tool type 'crud'" in w for w in said)


class HiddenAndOdd:
    @hookimpl
    def register_settings(self, register: Register) -> None:
        from pydantic import BaseModel, Field

        class Odd(BaseModel):
            raw: bytes = b"\xff"

        class Hidden(BaseModel):
            shown: str = "yes"
            internal: str = Field("do-not-show-me", exclude=True)

        register("odd", Odd)
        register("hidden", Hidden)


def test_config_show_keeps_excluded_keys_out_whatever_another_section_holds() -> None:
    plugins = with_plugin(HiddenAndOdd())
    result = invoke(plugins, "config", "show")
    assert result.exit_code == 0, result.output
    assert 'shown = "yes"' in result.stdout
    assert "do-not-show-me" not in result.stdout


class LoopedGroup:
    @hookimpl
    def register_commands(self, cli: click.Group) -> None:
        @cli.group("loop")
        def loop() -> None:
            """A group inside itself."""

        loop.add_command(loop, "again")


def test_a_group_added_inside_itself_does_not_break_the_command_line() -> None:
    plugins = with_plugin(LoopedGroup())
    plugins.register(SubcommandThief(), "thief")
    result = invoke(plugins, "--help")
    assert result.exit_code == 0, result.output
    assert "loop" in result.stdout


# -- event hooks on the terminal ---------------------------------------------------

FAILING_STARTUP = """
import sys

from chatwright import hookimpl
from chatwright.cli import build_cli
from chatwright.registry import LoadPolicy, Plugins


class Rogue:
    @hookimpl
    def startup(self, runtime):
        raise RuntimeError("startup exploded")


plugins = Plugins(LoadPolicy())
plugins.load_entry_points()
plugins.register(Rogue(), "rogue")
build_cli(plugins).main(args=sys.argv[1:], prog_name="chatwright")
"""


def test_a_failing_event_hook_is_one_line_on_the_terminal(tmp_path: Path) -> None:
    """Attack: a plugin whose event hook raised printed its traceback under every command;
    a command prints errors as one line (CHATWRIGHT_DEBUG=1 gives the traceback)."""
    import os
    import subprocess
    import sys

    script = tmp_path / "run.py"
    script.write_text(FAILING_STARTUP, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATWRIGHT_")}

    def command(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(script), *args],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
            env={**env, **extra},
        )

    assert command("init", "--example").returncode == 0
    listed = command("agents", "list")
    assert listed.returncode == 0, listed.stderr
    assert "assistant" in listed.stdout
    assert listed.stderr.splitlines() == [
        "chatwright: plugin 'rogue' failed in startup: RuntimeError: startup exploded "
        "(CHATWRIGHT_DEBUG=1 shows where)"
    ]
    debugged = command("agents", "list", CHATWRIGHT_DEBUG="1")
    assert "Traceback (most recent call last)" in debugged.stderr
    assert 'raise RuntimeError("startup exploded")' in debugged.stderr
