"""The plugin manager: loading entry points, the load policy, and every hook.

Fake installed distributions are built in ``tmp_path`` (a module plus a
``*.dist-info`` directory with an ``entry_points.txt``) and put on ``sys.path``,
so that entry-point discovery runs exactly as it does for a real plugin. Every
fake module touches a marker file ``<module>.imported`` next to itself as the
first thing it does, so a test can prove that a module was never imported,
even one that raises at import (and is therefore never left in sys.modules).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import os
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from chatwright import SettingsRegister, hookimpl
from chatwright.cli import build_cli
from chatwright.errors import (
    ChatwrightError,
    DuplicateRegistrationError,
    PluginError,
    UnknownNameError,
)
from chatwright.registry import COLLECTIONS, LoadPolicy, PluginInfo, Plugins, Registration
from chatwright.runtime import Runtime
from chatwright.settings import Settings, load_settings
from chatwright.stores import ChatSession
from tests.harness import Recorder, clean_env, script

# The storage backends the bundled plugins register.
BUNDLED_BACKENDS = frozenset({"sql", "supabase"})

# The bundled plugins: entry points of chatwright's own distribution.
BUNDLED = frozenset(
    ep.name
    for ep in metadata.entry_points(group="chatwright")
    if ep.dist is not None and ep.dist.name == "chatwright"
)

# Plugins other distributions installed in this environment bring (the contrib
# plugins, say). The tests reason about the bundled plugins and their own fakes,
# so they leave these out of what they compare.
INSTALLED_ELSEWHERE = frozenset(
    ep.name for ep in metadata.entry_points(group="chatwright") if ep.name not in BUNDLED
)


def ours(names: Iterable[str]) -> list[str]:
    """``names`` in their order, less the plugins installed by other distributions."""
    return [name for name in names if name not in INSTALLED_ELSEWHERE]


# -- fixtures and helpers -----------------------------------------------------


MARKER = "Path(__file__).with_name(__name__ + '.imported').touch()"

BROKEN_SOURCE = f"""
from pathlib import Path
{MARKER}
raise RuntimeError("boom from broken_cw_plugin\\nwith a second line")
"""

GOOD_SOURCE = f"""
from pathlib import Path
{MARKER}
import click
from chatwright import hookimpl


def build_memory(settings):
    return ("memory-test storage", settings)


@hookimpl
def register_storage_backends(register):
    register("memory-test", build_memory)


@hookimpl
def register_commands(cli):
    @cli.command("good-hello")
    def good_hello():
        click.echo("hello from good-cw-plugin")
"""

TYPO_SOURCE = f"""
from pathlib import Path
{MARKER}
from chatwright import hookimpl


@hookimpl
def register_storage_backend(register):
    register("typo-backend", object)
"""


class FakeDists:
    """Builds fake installed distributions in one directory on sys.path."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.modules: list[str] = []

    def add(self, dist: str, ep_name: str, module: str, source: str) -> None:
        (self.root / f"{module}.py").write_text(textwrap.dedent(source), encoding="utf-8")
        info = self.root / f"{module}-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n", encoding="utf-8"
        )
        (info / "entry_points.txt").write_text(
            f"[chatwright]\n{ep_name} = {module}\n", encoding="utf-8"
        )
        self.modules.append(module)
        importlib.invalidate_caches()

    def broken(self) -> None:
        self.add("broken-cw-plugin", "broken", "broken_cw_plugin", BROKEN_SOURCE)

    def good(self) -> None:
        self.add("good-cw-plugin", "good", "good_cw_plugin", GOOD_SOURCE)

    def typo(self) -> None:
        self.add("typo-cw-plugin", "typo", "typo_cw_plugin", TYPO_SOURCE)

    def imported(self, module: str) -> bool:
        return (self.root / f"{module}.imported").exists()


@pytest.fixture
def dists(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDists]:
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    importlib.invalidate_caches()
    fake = FakeDists(root)
    try:
        yield fake
    finally:
        for module in fake.modules:
            sys.modules.pop(module, None)
        importlib.invalidate_caches()


def backends_plugin(*names: str) -> object:
    """An inline plugin object registering storage backends under ``names``."""

    class Backends:
        @hookimpl
        def register_storage_backends(self, register: Callable[[str, Any], None]) -> None:
            for name in names:
                register(name, self.factory)

        @staticmethod
        def factory(settings: Settings) -> str:
            return f"storage for {settings.storage.url}"

    return Backends()


class InlineBackend:
    """The inline plugin of the ``inline`` fixture."""

    @hookimpl
    def register_storage_backends(self, register: Callable[[str, Any], None]) -> None:
        register("inline-store", self.build)

    @staticmethod
    def build(settings: Settings) -> str:
        return "inline storage"


@pytest.fixture
def inline() -> Iterator[Plugins]:
    plugins = Plugins(LoadPolicy())
    plugins.register(InlineBackend(), "inline", version="1.2")
    try:
        yield plugins
    finally:
        plugins.unregister("inline")


def warnings_from_registry(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == "chatwright.registry" and r.levelno == logging.WARNING
    ]


def by_name(plugins: Plugins) -> dict[str, PluginInfo]:
    return {i.name: i for i in plugins.infos()}


# -- inline plugins -------------------------------------------------------------


def test_inline_plugin_is_collected_and_named(inline: Plugins) -> None:
    found = inline.collect("register_storage_backends")
    assert set(found) == {"inline-store"}
    reg = inline.get("register_storage_backends", "inline-store")
    assert isinstance(reg, Registration)
    assert reg.plugin == "inline"
    assert reg.kind == "storage backend"
    assert reg.name == "inline-store"
    assert reg.value is InlineBackend.build
    info = by_name(inline)["inline"]
    assert info.hooks == ["register_storage_backends"]
    assert info.version == "1.2"
    assert info.bundled is False
    assert info.error is None


def test_unregister_removes_plugin_and_its_registrations(inline: Plugins) -> None:
    assert "inline-store" in inline.collect("register_storage_backends")
    inline.unregister("inline")
    assert inline.collect("register_storage_backends") == {}
    assert "inline" not in by_name(inline)
    # The name can be used again once unregistered.
    inline.register(InlineBackend(), "inline")
    assert inline.get("register_storage_backends", "inline-store").plugin == "inline"


def test_register_same_plugin_name_twice_is_an_error(inline: Plugins) -> None:
    with pytest.raises(PluginError, match="'inline' is already registered"):
        inline.register(backends_plugin("other"), "inline")


def test_get_unknown_name_lists_known_names(inline: Plugins) -> None:
    with pytest.raises(UnknownNameError) as excinfo:
        inline.get("register_storage_backends", "nope", setting="storage.backend")
    message = str(excinfo.value)
    assert "no storage backend named 'nope'" in message
    assert "'inline-store'" in message
    assert "storage.backend" in message
    assert "CHATWRIGHT_DISABLE_PLUGINS" not in message


def test_registration_with_wrong_argument_name_is_a_plugin_error() -> None:
    class WrongArgs:
        @hookimpl
        def startup(self, rt: Any) -> None:  # the spec says `runtime`
            pass

    plugins = Plugins(LoadPolicy())
    with pytest.raises(PluginError, match=r"'wrong'.*failed to register"):
        plugins.register(WrongArgs(), "wrong")
    assert by_name(plugins)["wrong"].error is not None


def test_register_rejects_empty_names() -> None:
    plugins = Plugins(LoadPolicy())
    plugins.register(backends_plugin(""), "empty")
    found = plugins.collect("register_storage_backends")
    assert found == {}
    assert "non-empty strings" in (by_name(plugins)["empty"].error or "")


# -- entry points -----------------------------------------------------------------


def test_bundled_sql_plugin_is_loaded() -> None:
    plugins = Plugins.load(LoadPolicy())
    info = by_name(plugins)["sql"]
    assert info.bundled is True
    assert info.error is None
    assert info.version == metadata.version("chatwright")
    assert info.hooks == ["register_settings", "register_storage_backends"]
    reg = plugins.get("register_storage_backends", "sql")
    assert reg.plugin == "sql"
    assert callable(reg.value)


def test_broken_entry_point_is_skipped_and_reported(
    dists: FakeDists, caplog: pytest.LogCaptureFixture
) -> None:
    dists.broken()
    caplog.set_level(logging.WARNING, logger="chatwright.registry")

    plugins = Plugins.load(LoadPolicy())

    assert dists.imported("broken_cw_plugin")
    infos = by_name(plugins)
    broken = infos["broken"]
    assert broken.bundled is False
    assert broken.version == "0.1"
    assert broken.distribution == "broken-cw-plugin"
    assert broken.hooks == []
    assert broken.error is not None
    assert "RuntimeError" in broken.error
    assert "boom from broken_cw_plugin" in broken.error
    assert "\n" not in broken.error
    # The bundled plugin is unaffected.
    assert infos["sql"].error is None
    assert plugins.get("register_storage_backends", "sql").plugin == "sql"
    # One warning, on one line, naming the plugin, without a traceback.
    warnings = warnings_from_registry(caplog)
    assert len(warnings) == 1
    text = warnings[0].getMessage()
    assert "\n" not in text
    assert "'broken'" in text
    assert "boom from broken_cw_plugin" in text
    assert warnings[0].exc_info is None


def test_good_entry_point_is_loaded_with_version_and_hooks(dists: FakeDists) -> None:
    dists.good()
    plugins = Plugins.load(LoadPolicy())

    info = by_name(plugins)["good"]
    assert info.error is None
    assert info.version == "0.1"
    assert info.bundled is False
    assert info.distribution == "good-cw-plugin"
    assert info.hooks == ["register_commands", "register_storage_backends"]
    found = plugins.collect("register_storage_backends")
    assert set(found) >= {"sql", "memory-test"}
    assert found["memory-test"].plugin == "good"
    assert found["sql"].plugin == "sql"
    assert found["memory-test"].value(None) == ("memory-test storage", None)


def test_broken_and_good_entry_points_together(
    dists: FakeDists, caplog: pytest.LogCaptureFixture
) -> None:
    dists.broken()
    dists.good()
    caplog.set_level(logging.WARNING, logger="chatwright.registry")
    plugins = Plugins.load(LoadPolicy())
    infos = by_name(plugins)
    assert infos["broken"].error is not None
    assert infos["good"].error is None
    assert set(plugins.collect("register_storage_backends")) == BUNDLED_BACKENDS | {"memory-test"}
    assert len(warnings_from_registry(caplog)) == 1


def test_strict_policy_makes_broken_entry_point_fatal(dists: FakeDists) -> None:
    dists.broken()
    with pytest.raises(PluginError) as excinfo:
        Plugins.load(LoadPolicy(strict=True))
    message = str(excinfo.value)
    assert "'broken'" in message
    assert "boom from broken_cw_plugin" in message
    assert isinstance(excinfo.value.__cause__, RuntimeError)


def test_strict_from_environ_makes_broken_entry_point_fatal(dists: FakeDists) -> None:
    dists.broken()
    policy = LoadPolicy.from_environ({"CHATWRIGHT_STRICT_PLUGINS": "1"})
    with pytest.raises(PluginError, match="'broken'"):
        Plugins.load(policy)


# -- the load policy --------------------------------------------------------------


def test_a_policy_name_that_matches_nothing_is_warned_of_with_what_it_may_mean(
    dists: FakeDists, caplog: pytest.LogCaptureFixture
) -> None:
    dists.good()
    caplog.set_level(logging.WARNING, logger="chatwright.registry")
    policy = LoadPolicy.from_environ(
        {
            "CHATWRIGHT_DISABLE_PLUGINS": "crudd,good,sql",
            "CHATWRIGHT_LOAD_PLUGINS": "good-cw-plugn,good,crud",
        }
    )
    plugins = Plugins.load(policy)
    # What the names did is unchanged: good is blocked, the bundled crud loads.
    assert "good" not in by_name(plugins) and "crud" in by_name(plugins)
    said = sorted(w.getMessage() for w in warnings_from_registry(caplog))
    assert len(said) == 4, said
    disable_typo, load_crud, load_good, load_typo = said  # D before L, then by name
    assert "CHATWRIGHT_DISABLE_PLUGINS names 'crudd'" in disable_typo
    assert "blocks nothing" in disable_typo and "did you mean 'crud'?" in disable_typo
    assert "CHATWRIGHT_LOAD_PLUGINS names 'good-cw-plugn'" in load_typo
    assert "did you mean 'good-cw-plugin'?" in load_typo
    # A plugin's name where the list takes distributions: which one to give.
    assert "'good'" in load_good and "distribution 'good-cw-plugin', give that" in load_good
    assert "'crud'" in load_crud and "bundled plugins always load" in load_crud


def test_policy_names_that_match_are_not_warned_of(
    dists: FakeDists, caplog: pytest.LogCaptureFixture
) -> None:
    dists.good()
    caplog.set_level(logging.WARNING, logger="chatwright.registry")
    Plugins.load(
        LoadPolicy.from_environ(
            {
                "CHATWRIGHT_DISABLE_PLUGINS": "Good_CW.Plugin,crud",
                "CHATWRIGHT_LOAD_PLUGINS": "chatwright,good-cw-plugin",
            }
        )
    )
    Plugins.load(LoadPolicy.from_environ({"CHATWRIGHT_LOAD_PLUGINS": ""}))
    assert warnings_from_registry(caplog) == []


def test_a_policy_name_that_matches_nothing_is_a_warning_even_when_strict(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A block kept after its plugin was uninstalled must not stop every command.
    caplog.set_level(logging.WARNING, logger="chatwright.registry")
    policy = LoadPolicy.from_environ(
        {"CHATWRIGHT_DISABLE_PLUGINS": "crudd", "CHATWRIGHT_STRICT_PLUGINS": "1"}
    )
    assert "crud" in by_name(Plugins.load(policy))  # blocked nothing, and no error
    (said,) = [w.getMessage() for w in warnings_from_registry(caplog)]
    assert "'crudd'" in said and "did you mean 'crud'?" in said


def test_chatwright_itself_is_never_what_a_policy_name_meant(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Blocking the chatwright distribution blocks every bundled plugin: a hint to do so
    # for a plugin distribution that is not installed would break everything.
    caplog.set_level(logging.WARNING, logger="chatwright.registry")
    policy = LoadPolicy.from_environ(
        {
            "CHATWRIGHT_DISABLE_PLUGINS": "chatwright-nosuch",
            "CHATWRIGHT_LOAD_PLUGINS": "chatwright-nosuch-either",
        }
    )
    Plugins.load(policy)
    said = [w.getMessage() for w in warnings_from_registry(caplog)]
    assert len(said) == 2, said
    assert not any("'chatwright'?" in text for text in said), said


def test_a_misspelt_policy_name_is_one_warning_line_from_the_cli(workdir: Path) -> None:
    env = {**clean_env(), "CHATWRIGHT_DISABLE_PLUGINS": "crudd"}
    done = script("plugins", cwd=workdir, env=env)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if "crudd" in line]
    assert len(lines) == 1 and "did you mean 'crud'?" in lines[0], done.stderr
    assert "Traceback" not in done.stderr


def test_from_environ_defaults() -> None:
    policy = LoadPolicy.from_environ({})
    assert policy.allow is None
    assert policy.block == frozenset()
    assert policy.strict is False


def test_from_environ_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATWRIGHT_LOAD_PLUGINS", "a")
    monkeypatch.setenv("CHATWRIGHT_DISABLE_PLUGINS", "b")
    monkeypatch.setenv("CHATWRIGHT_STRICT_PLUGINS", "1")
    assert LoadPolicy.from_environ() == LoadPolicy(
        allow=frozenset({"a"}), block=frozenset({"b"}), strict=True
    )


def test_from_environ_parses_lists_and_normalises_names() -> None:
    policy = LoadPolicy.from_environ(
        {
            "CHATWRIGHT_LOAD_PLUGINS": " Good_CW.Plugin , other--thing,,",
            "CHATWRIGHT_DISABLE_PLUGINS": "SQL, My.Plugin",
        }
    )
    assert policy.allow == frozenset({"good-cw-plugin", "other-thing"})
    assert policy.block == frozenset({"sql", "my-plugin"})


def test_from_environ_empty_allowlist_is_not_none() -> None:
    policy = LoadPolicy.from_environ({"CHATWRIGHT_LOAD_PLUGINS": ""})
    assert policy.allow == frozenset()
    assert policy.allow is not None


@pytest.mark.parametrize(
    ("value", "strict"),
    [
        ("1", True),
        ("true", True),
        ("YES", True),
        (" on ", True),
        ("0", False),
        ("", False),
        ("no", False),
    ],
)
def test_from_environ_strict_values(value: str, strict: bool) -> None:
    assert LoadPolicy.from_environ({"CHATWRIGHT_STRICT_PLUGINS": value}).strict is strict


def test_empty_allowlist_loads_bundled_only_without_importing(
    dists: FakeDists, caplog: pytest.LogCaptureFixture
) -> None:
    dists.good()
    dists.broken()
    caplog.set_level(logging.WARNING, logger="chatwright.registry")
    plugins = Plugins.load(LoadPolicy.from_environ({"CHATWRIGHT_LOAD_PLUGINS": ""}))

    assert set(by_name(plugins)) == BUNDLED
    assert not dists.imported("good_cw_plugin")
    assert not dists.imported("broken_cw_plugin")
    assert "good_cw_plugin" not in sys.modules
    assert warnings_from_registry(caplog) == []
    assert set(plugins.collect("register_storage_backends")) == BUNDLED_BACKENDS


@pytest.mark.parametrize("allow", ["good-cw-plugin", "Good_CW.Plugin", "GOOD.cw_plugin"])
def test_allowlist_loads_only_named_distributions_and_bundled(dists: FakeDists, allow: str) -> None:
    dists.good()
    dists.broken()
    plugins = Plugins.load(LoadPolicy.from_environ({"CHATWRIGHT_LOAD_PLUGINS": allow}))

    assert set(by_name(plugins)) == BUNDLED | {"good"}
    assert by_name(plugins)["good"].error is None
    assert dists.imported("good_cw_plugin")
    assert not dists.imported("broken_cw_plugin")
    assert set(plugins.collect("register_storage_backends")) == BUNDLED_BACKENDS | {"memory-test"}


def test_allowlist_uses_distribution_not_entry_point_name(dists: FakeDists) -> None:
    dists.good()
    plugins = Plugins.load(LoadPolicy.from_environ({"CHATWRIGHT_LOAD_PLUGINS": "good"}))
    assert set(by_name(plugins)) == BUNDLED
    assert not dists.imported("good_cw_plugin")


def test_blocklist_blocks_bundled_sql(dists: FakeDists) -> None:
    dists.good()
    plugins = Plugins.load(LoadPolicy.from_environ({"CHATWRIGHT_DISABLE_PLUGINS": "sql"}))

    assert "sql" not in by_name(plugins)
    assert "sql" not in plugins.collect("register_storage_backends")
    with pytest.raises(UnknownNameError) as excinfo:
        plugins.get("register_storage_backends", "sql")
    message = str(excinfo.value)
    assert "no storage backend named 'sql'" in message
    assert "known: 'memory-test'" in message
    assert "CHATWRIGHT_DISABLE_PLUGINS blocks sql" in message


def test_blocklist_with_nothing_left_says_none_known() -> None:
    blocked = {"CHATWRIGHT_DISABLE_PLUGINS": "SQL, supabase"}
    plugins = Plugins.load(LoadPolicy.from_environ(blocked))
    with pytest.raises(UnknownNameError, match="known: none; CHATWRIGHT_DISABLE_PLUGINS"):
        plugins.get("register_storage_backends", "sql")


@pytest.mark.parametrize("blocked", ["broken", "broken-cw-plugin", "Broken_CW_Plugin"])
def test_blocklist_by_plugin_or_distribution_name_applies_before_import(
    dists: FakeDists, caplog: pytest.LogCaptureFixture, blocked: str
) -> None:
    dists.broken()
    dists.good()
    caplog.set_level(logging.WARNING, logger="chatwright.registry")
    policy = LoadPolicy.from_environ(
        {"CHATWRIGHT_DISABLE_PLUGINS": blocked, "CHATWRIGHT_STRICT_PLUGINS": "1"}
    )
    plugins = Plugins.load(policy)  # strict, yet no error: never imported
    assert set(ours(by_name(plugins))) == BUNDLED | {"good"}
    assert not dists.imported("broken_cw_plugin")
    assert warnings_from_registry(caplog) == []


# -- duplicates, misspelled hooks, failing hooks --------------------------------------


def test_a_name_two_plugins_register_fails_only_where_it_is_used(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Before: collecting raised, and every backend, tool type or model of every plugin
    went with it (one plugin's clash took down the tools of every agent)."""
    plugins = Plugins(LoadPolicy())
    plugins.register(backends_plugin("shared", "alpha-only"), "alpha")
    plugins.register(backends_plugin("shared"), "beta")
    found = plugins.collect("register_storage_backends")
    assert "alpha-only" in found and "shared" not in found
    with pytest.raises(DuplicateRegistrationError) as excinfo:
        plugins.get("register_storage_backends", "shared")
    message = str(excinfo.value)
    assert "storage backend 'shared'" in message
    assert "'alpha'" in message
    assert "'beta'" in message
    assert isinstance(excinfo.value, PluginError)
    assert plugins.clash("register_storage_backends", "shared") == message
    assert plugins.clash("register_storage_backends", "alpha-only") is None
    assert "neither is used" in caplog.text


def test_a_plugin_registering_a_bundled_name_is_ignored_for_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    plugins = Plugins.load(LoadPolicy())
    plugins.register(backends_plugin("sql"), "impostor")
    assert plugins.get("register_storage_backends", "sql").plugin == "sql"
    assert "plugin 'impostor' registers the storage backend 'sql'" in caplog.text
    assert "the plugin's is ignored" in caplog.text


def test_same_name_in_different_collections_is_not_a_duplicate() -> None:
    class Both:
        @hookimpl
        def register_storage_backends(self, register: Callable[[str, Any], None]) -> None:
            register("same", 1)

        @hookimpl
        def register_eviction_policies(self, register: Callable[[str, Any], None]) -> None:
            register("same", 2)

    plugins = Plugins(LoadPolicy())
    plugins.register(Both(), "both")
    assert plugins.get("register_storage_backends", "same").value == 1
    assert plugins.get("register_eviction_policies", "same").value == 2


class Misspelled:
    @hookimpl
    def register_storage_backend(self, register: Callable[[str, Any], None]) -> None:
        register("typo", object)


def test_misspelled_hook_via_register_is_a_plugin_error() -> None:
    plugins = Plugins(LoadPolicy())
    with pytest.raises(PluginError) as excinfo:
        plugins.register(Misspelled(), "typo")
    message = str(excinfo.value)
    assert "'typo'" in message
    assert "'register_storage_backend'" in message
    assert "did you mean 'register_storage_backends'" in message
    # The plugin was not left half-registered: nothing pending, nothing collected.
    plugins._pm.check_pending()
    assert plugins.collect("register_storage_backends") == {}


def test_misspelled_hook_via_register_with_strict_policy() -> None:
    plugins = Plugins(LoadPolicy(strict=True))
    with pytest.raises(PluginError, match="did you mean 'register_storage_backends'"):
        plugins.register(Misspelled(), "typo")


def test_unknown_hook_without_close_match_has_no_hint() -> None:
    class Unrelated:
        @hookimpl
        def zzzz_qqqq(self) -> None:
            pass

    plugins = Plugins(LoadPolicy())
    with pytest.raises(PluginError, match="unknown hook 'zzzz_qqqq'") as excinfo:
        plugins.register(Unrelated(), "unrelated")
    assert "did you mean" not in str(excinfo.value)


def test_misspelled_hook_via_entry_point_is_skipped_and_reported(
    dists: FakeDists, caplog: pytest.LogCaptureFixture
) -> None:
    dists.typo()
    dists.good()
    caplog.set_level(logging.WARNING, logger="chatwright.registry")

    plugins = Plugins.load(LoadPolicy())  # must not fail in check_pending()

    info = by_name(plugins)["typo"]
    assert info.error is not None
    assert "did you mean 'register_storage_backends'" in info.error
    assert info.hooks == []
    assert by_name(plugins)["good"].error is None
    assert set(plugins.collect("register_storage_backends")) == BUNDLED_BACKENDS | {"memory-test"}
    warnings = warnings_from_registry(caplog)
    assert len(warnings) == 1
    assert "did you mean 'register_storage_backends'" in warnings[0].getMessage()


def test_misspelled_hook_via_entry_point_strict(dists: FakeDists) -> None:
    dists.typo()
    with pytest.raises(PluginError, match=r"'typo'.*did you mean 'register_storage_backends'"):
        Plugins.load(LoadPolicy(strict=True))


class RaisingBackends:
    @hookimpl
    def register_storage_backends(self, register: Callable[[str, Any], None]) -> None:
        register("half-done", object)
        raise ValueError("cannot register today")


def test_failing_collection_hook_is_isolated(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="chatwright.registry")
    plugins = Plugins.load(LoadPolicy())
    plugins.register(backends_plugin("before"), "before")
    plugins.register(RaisingBackends(), "raising")
    plugins.register(backends_plugin("after"), "after")

    found = plugins.collect("register_storage_backends")

    assert set(found) == BUNDLED_BACKENDS | {"before", "after"}  # not "half-done"
    assert found["before"].plugin == "before"
    assert found["after"].plugin == "after"
    error = by_name(plugins)["raising"].error
    assert error is not None
    assert "register_storage_backends failed" in error
    assert "ValueError: cannot register today" in error
    warnings = warnings_from_registry(caplog)
    assert len(warnings) == 1
    assert "'raising'" in warnings[0].getMessage()
    # Asking again gives the same answer without calling the plugin again.
    assert set(plugins.collect("register_storage_backends")) == BUNDLED_BACKENDS | {
        "before",
        "after",
    }


def test_failing_collection_hook_is_fatal_when_strict() -> None:
    plugins = Plugins.load(LoadPolicy(strict=True))
    plugins.register(backends_plugin("other"), "other")
    plugins.register(RaisingBackends(), "raising")
    with pytest.raises(PluginError) as excinfo:
        plugins.collect("register_storage_backends")
    assert "'raising'" in str(excinfo.value)
    assert "cannot register today" in str(excinfo.value)
    assert isinstance(excinfo.value.__cause__, ValueError)


# -- event hooks --------------------------------------------------------------------


class RaisingStartup:
    @hookimpl
    def startup(self, runtime: Any) -> None:
        raise RuntimeError("startup exploded")


def test_notify_calls_every_implementation_despite_a_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    first, last = Recorder(), Recorder()
    plugins = Plugins(LoadPolicy())
    plugins.register(first, "first")
    plugins.register(RaisingStartup(), "raising")
    plugins.register(last, "last")
    runtime = object()

    plugins.notify("startup", runtime=runtime)

    assert (first.startups, last.startups) == ([runtime], [runtime])
    errors = [r for r in caplog.records if r.name == "chatwright.registry"]
    assert len(errors) == 1
    assert errors[0].levelno == logging.ERROR
    assert "'raising'" in errors[0].getMessage()
    assert "startup" in errors[0].getMessage()
    assert errors[0].exc_info is not None
    # An event-hook failure does not disable the plugin.
    assert by_name(plugins)["raising"].error is None


def test_notify_reraises_when_strict() -> None:
    plugins = Plugins(LoadPolicy(strict=True))
    plugins.register(RaisingStartup(), "raising")
    with pytest.raises(RuntimeError, match="startup exploded"):
        plugins.notify("startup", runtime=object())


# -- one test per hook (test_hook_<name>) ----------------------------------------------


def test_every_hook_has_a_test() -> None:
    names = Plugins.hook_names()
    assert set(names) >= {"register_storage_backends", "startup", "executor_evicted"}
    missing = [n for n in names if f"test_hook_{n}" not in globals()]
    assert missing == []
    # ... and every collection hook is known to the registry.
    assert {n for n in names if n.startswith("register_") and n != "register_commands"} == set(
        COLLECTIONS
    )


def test_hook_register_storage_backends(tmp_path: Path) -> None:
    plugins = Plugins.load(LoadPolicy())
    plugins.register(backends_plugin("mine"), "mine")
    found = plugins.collect("register_storage_backends")
    assert set(found) == BUNDLED_BACKENDS | {"mine"}
    reg = plugins.get("register_storage_backends", "mine", setting="storage.backend")
    assert reg.plugin == "mine"
    assert reg.kind == "storage backend"
    settings = Settings(storage={"url": "sqlite:///x.db"})
    assert reg.value(settings) == "storage for sqlite:///x.db"

    # The runtime builds the backend that storage.backend names.
    settings = load_settings(
        overrides={"storage": {"backend": "mine", "url": f"sqlite:///{tmp_path}/y.db"}}
    )
    assert Runtime(settings, plugins).build_storage() == f"storage for sqlite:///{tmp_path}/y.db"
    settings = load_settings(overrides={"storage": {"backend": "missing"}})
    with pytest.raises(UnknownNameError, match=r"'missing'.*storage\.backend.*'mine', 'sql'"):
        Runtime(settings, plugins).build_storage()


class FakeToolType:
    @property
    def config_model(self) -> Any:
        from pydantic import BaseModel

        return BaseModel

    async def build(self, row: Any, config: Any, context: Any) -> str:
        return f"tool {row}"


def test_hook_register_tool_types() -> None:
    tool_type = FakeToolType()

    class Tools:
        @hookimpl
        def register_tool_types(self, register: Callable[[str, Any], None]) -> None:
            register("echo", tool_type)

    plugins = Plugins(LoadPolicy())
    plugins.register(Tools(), "tools")
    reg = plugins.get("register_tool_types", "echo")
    assert reg == Registration("tool type", "echo", tool_type, "tools")
    assert by_name(plugins)["tools"].hooks == ["register_tool_types"]
    with pytest.raises(UnknownNameError, match=r"no tool type named 'crud'.*known: 'echo'"):
        plugins.get("register_tool_types", "crud")
    # Nothing leaks into the other collections.
    assert plugins.collect("register_storage_backends") == {}


def test_hook_register_eviction_policies() -> None:
    def lru(settings: Settings) -> str:
        return "lru policy"

    class Policies:
        @hookimpl
        def register_eviction_policies(self, register: Callable[[str, Any], None]) -> None:
            register("lru-test", lru)

    plugins = Plugins(LoadPolicy())
    plugins.register(Policies(), "policies")
    reg = plugins.get("register_eviction_policies", "lru-test")
    assert reg == Registration("eviction policy", "lru-test", lru, "policies")
    assert reg.value(Settings()) == "lru policy"
    with pytest.raises(UnknownNameError, match="no eviction policy named 'ttl'"):
        plugins.get("register_eviction_policies", "ttl", setting="cache.policy")


def test_hook_register_models() -> None:
    def offline(name: str, model_settings: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        return (name, model_settings)

    class Models:
        @hookimpl
        def register_models(self, register: Callable[[str, Any], None]) -> None:
            register("offline-test", offline)

    plugins = Plugins(LoadPolicy())
    plugins.register(Models(), "models")
    reg = plugins.get("register_models", "offline-test")
    assert reg == Registration("model provider", "offline-test", offline, "models")
    assert reg.value("assistant", {"t": 1}) == ("assistant", {"t": 1})
    with pytest.raises(UnknownNameError, match="no model provider named 'openai'"):
        plugins.get("register_models", "openai")


def test_hook_register_commands() -> None:
    seen: list[click.Group] = []

    class Commands:
        @hookimpl
        def register_commands(self, cli: click.Group) -> None:
            seen.append(cli)

            @cli.command("hello-test")
            @click.argument("who")
            def hello(who: str) -> None:
                """Greet somebody."""
                click.echo(f"hello, {who}")

    plugins = Plugins(LoadPolicy())
    plugins.register(Commands(), "commands")
    root = build_cli(plugins)

    assert seen == [root]
    assert "hello-test" in root.commands
    runner = CliRunner()
    result = runner.invoke(root, ["hello-test", "world"])
    assert result.exit_code == 0, result.output
    assert result.stdout == "hello, world\n"
    help_result = runner.invoke(root, ["--help"])
    assert "hello-test" in help_result.stdout

    # Commands never leak into a runner built without the plugin.
    assert "hello-test" not in build_cli(Plugins(LoadPolicy())).commands


def test_entry_point_plugin_commands_run(dists: FakeDists) -> None:
    dists.good()
    root = build_cli(Plugins.load(LoadPolicy()))
    result = CliRunner().invoke(root, ["good-hello"])
    assert result.exit_code == 0, result.output
    assert result.stdout == "hello from good-cw-plugin\n"


def test_failing_register_commands_is_isolated(caplog: pytest.LogCaptureFixture) -> None:
    class BadCommands:
        @hookimpl
        def register_commands(self, cli: click.Group) -> None:
            raise RuntimeError("no commands for you")

    plugins = Plugins(LoadPolicy())
    plugins.register(BadCommands(), "bad")
    root = build_cli(plugins)
    assert "config" in root.commands
    assert "no commands for you" in (by_name(plugins)["bad"].error or "")
    assert len(warnings_from_registry(caplog)) == 1


@pytest.fixture
def runtime_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.chdir(tmp_path)
    return load_settings(overrides={"storage": {"url": f"sqlite+aiosqlite:///{tmp_path}/t.db"}})


class Lifecycle:
    def __init__(self) -> None:
        self.events: list[tuple[str, Any, Any]] = []

    @hookimpl
    def startup(self, runtime: Runtime) -> None:
        self.events.append(("startup", runtime, runtime.storage))

    @hookimpl
    def shutdown(self, runtime: Runtime) -> None:
        self.events.append(("shutdown", runtime, runtime.storage))


async def test_hook_startup(runtime_settings: Settings, tmp_path: Path) -> None:
    plugins = Plugins.load(LoadPolicy())
    observer = Lifecycle()
    plugins.register(observer, "observer")
    runtime = Runtime(runtime_settings, plugins)
    assert observer.events == []

    await runtime.start(upgrade=True)
    try:
        assert len(observer.events) == 1
        event, seen_runtime, seen_storage = observer.events[0]
        assert event == "startup"
        assert seen_runtime is runtime
        assert seen_storage is runtime.storage
        assert seen_storage.head_revision() is not None
        assert await seen_storage.current_revision() == seen_storage.head_revision()
    finally:
        await runtime.close()
    assert (tmp_path / "t.db").exists()


async def test_hook_startup_not_fired_when_start_fails(runtime_settings: Settings) -> None:
    plugins = Plugins.load(LoadPolicy())
    observer = Lifecycle()
    plugins.register(observer, "observer")
    runtime = Runtime(runtime_settings, plugins)
    with pytest.raises(ChatwrightError, match="chatwright db upgrade"):
        await runtime.start()  # schema not created and no upgrade asked
    assert observer.events == []


async def test_hook_shutdown(runtime_settings: Settings) -> None:
    plugins = Plugins.load(LoadPolicy())
    observer = Lifecycle()
    plugins.register(observer, "observer")
    runtime = Runtime(runtime_settings, plugins)
    await runtime.start(upgrade=True)
    storage = runtime.storage
    assert [e[0] for e in observer.events] == ["startup"]

    await runtime.close()

    assert [e[0] for e in observer.events] == ["startup", "shutdown"]
    _, seen_runtime, seen_storage = observer.events[1]
    assert seen_runtime is runtime
    assert seen_storage is storage  # storage was still open during shutdown
    with pytest.raises(RuntimeError, match="not started"):
        _ = runtime.storage
    # Closing twice does not fire the hook twice.
    await runtime.close()
    assert len(observer.events) == 2


async def test_hook_shutdown_via_async_with(runtime_settings: Settings) -> None:
    first = Runtime(runtime_settings, Plugins.load(LoadPolicy()))
    await first.start(upgrade=True)
    await first.close()

    plugins = Plugins.load(LoadPolicy())
    observer = Lifecycle()
    plugins.register(observer, "observer")
    async with Runtime(runtime_settings, plugins) as runtime:
        assert [e[0] for e in observer.events] == ["startup"]
    assert [(e[0], e[1]) for e in observer.events] == [
        ("startup", runtime),
        ("shutdown", runtime),
    ]


async def test_failing_startup_hook_in_strict_mode_leaves_runtime_closed(
    runtime_settings: Settings,
) -> None:
    plugins = Plugins.load(LoadPolicy(strict=True))
    plugins.register(RaisingStartup(), "raising")
    runtime = Runtime(runtime_settings, plugins)
    try:
        with pytest.raises(RuntimeError, match="startup exploded"):
            await runtime.start(upgrade=True)
        with pytest.raises(RuntimeError, match="not started"):
            _ = runtime.storage
    finally:
        try:
            leaked = runtime.storage
        except RuntimeError:
            pass
        else:
            await leaked.close()


def _session() -> ChatSession:
    now = datetime.now(UTC)
    return ChatSession(
        id=uuid.uuid4(),
        chat_id=uuid.uuid4(),
        user_id="user-1",
        agent_name="assistant",
        is_active=False,
        client_key=None,
        created_at=now,
        updated_at=now,
    )


def test_hook_session_deactivated() -> None:
    calls: list[tuple[ChatSession, str]] = []

    class Watcher:
        @hookimpl
        def session_deactivated(self, session: ChatSession, reason: str) -> None:
            calls.append((session, reason))

    class ReasonOnly:
        @hookimpl
        def session_deactivated(self, reason: str) -> None:  # a subset of the arguments
            calls.append((None, reason))  # type: ignore[arg-type]

    plugins = Plugins(LoadPolicy())
    plugins.register(Watcher(), "watcher")
    plugins.register(ReasonOnly(), "reason-only")
    assert by_name(plugins)["watcher"].hooks == ["session_deactivated"]
    assert by_name(plugins)["watcher"].error is None

    session = _session()
    plugins.notify("session_deactivated", session=session, reason="idle")
    plugins.notify("session_deactivated", session=session, reason="client")

    assert sorted(calls, key=lambda c: (c[1], c[0] is None)) == [
        (session, "client"),
        (None, "client"),
        (session, "idle"),
        (None, "idle"),
    ]


def test_hook_executor_evicted() -> None:
    calls: list[tuple[tuple[str, str], str]] = []

    class Watcher:
        @hookimpl
        def executor_evicted(self, key: tuple[str, str], reason: str) -> None:
            calls.append((key, reason))

    plugins = Plugins(LoadPolicy())
    plugins.register(Watcher(), "watcher")
    assert by_name(plugins)["watcher"].hooks == ["executor_evicted"]

    plugins.notify("executor_evicted", key=("user-1", "assistant"), reason="ttl")
    plugins.notify("executor_evicted", key=("user-2", "helper"), reason="config-changed")

    assert calls == [(("user-1", "assistant"), "ttl"), (("user-2", "helper"), "config-changed")]


def _write_call(**changes: Any) -> Any:
    from chatwright.approvals import WriteCall

    call = WriteCall(
        user_id="alice",
        agent_name="assistant",
        chat_id=uuid.uuid4(),
        turn_id=uuid.uuid4(),
        tool_id=3,
        tool_name="delete_task",
        tool_type="crud",
        args={"id": 3},
        approval="auto",
    )
    return dataclasses.replace(call, **changes)


def test_hook_before_write(caplog: pytest.LogCaptureFixture) -> None:
    """A veto hook: the first reason wins, a plugin that raises vetoes, None lets it run."""
    seen: list[str] = []

    class Weekdays:
        @hookimpl
        def before_write(self, call: Any) -> str | None:
            seen.append("weekdays")
            return "not on a Sunday" if call.args.get("day") == "sunday" else None

    class Broken:
        @hookimpl
        def before_write(self, call: Any) -> str | None:
            seen.append("broken")
            if call.tool_name == "explode":
                raise RuntimeError("policy database unreachable")
            return None

    plugins = Plugins(LoadPolicy())
    plugins.register(Weekdays(), "weekdays")
    plugins.register(Broken(), "broken")
    assert plugins.implemented("before_write")
    assert plugins.veto("before_write", call=_write_call()) is None
    assert sorted(seen) == ["broken", "weekdays"]
    reason = plugins.veto("before_write", call=_write_call(args={"day": "sunday"}))
    assert reason == "not on a Sunday"
    with caplog.at_level(logging.ERROR):
        reason = plugins.veto("before_write", call=_write_call(tool_name="explode"))
    assert reason is not None and "'broken'" in reason and "policy database unreachable" in reason
    assert "policy database unreachable" in caplog.text


def test_hook_after_write() -> None:
    from chatwright.approvals import WriteOutcome

    heard: list[tuple[str, bool, bool]] = []

    class Listener:
        @hookimpl
        def after_write(self, call: Any, outcome: WriteOutcome) -> None:
            heard.append((call.tool_name, outcome.ok, outcome.vetoed))

    plugins = Plugins(LoadPolicy())
    plugins.register(Listener(), "listener")
    plugins.notify("after_write", call=_write_call(), outcome=WriteOutcome(True, '{"deleted": 1}'))
    plugins.notify(
        "after_write",
        call=_write_call(tool_name="add_task"),
        outcome=WriteOutcome(False, "refused: no", vetoed=True),
    )
    assert heard == [("delete_task", True, False), ("add_task", False, True)]


def test_hook_with_unknown_argument_is_rejected() -> None:
    class Wrong:
        @hookimpl
        def executor_evicted(self, key: Any, why: str) -> None:
            pass

    with pytest.raises(PluginError, match="failed to register"):
        Plugins(LoadPolicy()).register(Wrong(), "wrong")


# -- reporting ------------------------------------------------------------------------


def test_infos_include_bundled_flag(dists: FakeDists) -> None:
    dists.good()
    plugins = Plugins.load(LoadPolicy())
    plugins.register(InlineBackend(), "inline")

    everything = ours(i.name for i in plugins.infos())
    assert everything == [*sorted(BUNDLED), "good", "inline"]  # bundled first, then by name
    third_party = plugins.infos(include_bundled=False)
    assert ours(i.name for i in third_party) == ["good", "inline"]
    assert all(not i.bundled for i in third_party)


def test_plugin_info_as_dict_keys() -> None:
    plugins = Plugins.load(LoadPolicy())
    data = by_name(plugins)["sql"].as_dict()
    assert set(data) == {"name", "version", "hooks", "bundled", "error"}
    assert data == {
        "name": "sql",
        "version": metadata.version("chatwright"),
        "hooks": ["register_settings", "register_storage_backends"],
        "bundled": True,
        "error": None,
    }
    info = PluginInfo("x", None, [], False, error="boom", distribution="x-dist")
    assert info.as_dict() == {
        "name": "x",
        "version": None,
        "hooks": [],
        "bundled": False,
        "error": "boom",
    }


def test_plugins_command_reports_errors(dists: FakeDists) -> None:
    dists.broken()
    dists.good()
    root = build_cli(Plugins.load(LoadPolicy()))
    runner = CliRunner()

    result = runner.invoke(root, ["plugins", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert set(ours(rows)) == {"broken", "good"}
    assert "boom from broken_cw_plugin" in rows["broken"]["error"]
    assert rows["good"]["hooks"] == ["register_commands", "register_storage_backends"]

    result = runner.invoke(root, ["plugins", "--all"])
    assert result.exit_code == 0, result.output
    assert "sql" in result.stdout
    assert "boom from broken_cw_plugin" in result.stdout


async def test_hook_register_session_stores(tmp_path: Path) -> None:
    """A plugin's session store replaces the backend's sessions, and only them."""

    class MemorySessions:
        def __init__(self) -> None:
            self.opened: list[tuple[str, str]] = []
            self.closed = False

        async def open(self, user_id: str, agent_name: str, **kwargs: object) -> str:
            self.opened.append((user_id, agent_name))
            return "opened"

        async def close(self) -> None:
            self.closed = True

    store = MemorySessions()

    class Plugin:
        @hookimpl
        def register_session_stores(self, register: Callable[[str, object], None]) -> None:
            register("memory", lambda settings: store)

    plugins = Plugins(LoadPolicy())
    plugins.load_entry_points()
    plugins.register(Plugin(), "memory-sessions")
    settings = load_settings(
        overrides={
            "storage": {"url": f"sqlite+aiosqlite:///{tmp_path / 's.db'}"},
            "sessions": {"store": "memory"},
        }
    )
    runtime = Runtime(settings, plugins)
    await runtime.start(upgrade=True)
    assert await runtime.storage.sessions.open("u", "a") == "opened"
    assert store.opened == [("u", "a")]
    assert await runtime.storage.agents.list() == []  # the rest is the backend's
    await runtime.close()
    assert store.closed

    unknown = load_settings(overrides={"sessions": {"store": "nowhere"}})
    with pytest.raises(
        UnknownNameError, match=r"no session store named 'nowhere'.*sessions\.store"
    ):
        Runtime(unknown, plugins).build_storage()


def test_a_plugin_command_never_replaces_an_existing_one() -> None:
    class Impostor:
        @hookimpl
        def register_commands(self, cli: click.Group) -> None:
            @cli.command("init")
            def init() -> None:
                click.echo("hijacked")

            @cli.command("extra")
            def extra() -> None:
                click.echo("extra")

    plugins = Plugins(LoadPolicy())
    plugins.load_entry_points()
    plugins.register(Impostor(), "impostor")
    root = build_cli(plugins)
    assert "extra" not in root.commands  # the whole plugin's commands are refused
    from chatwright.commands.init import init as builtin_init

    assert root.commands["init"] is builtin_init
    (info,) = [i for i in plugins.infos() if i.name == "impostor"]
    assert info.error is not None
    assert "replace the command 'init' (built in)" in info.error


# -- typed register callbacks ------------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent

# Each marked line must be reported by mypy, and no other.
MISTYPED_PLUGIN = """
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chatwright import (
    EvictionPolicyRegister,
    ModelRegister,
    SessionStoreRegister,
    StorageBackendRegister,
    ToolTypeRegister,
    hookimpl,
)
from chatwright.plugins.crud import LazyCrudType
from chatwright.plugins.eviction import LRUPolicy
from chatwright.plugins.example.offline import OfflineChatModel
from chatwright.plugins.sql import build as build_sql
from chatwright.settings import Settings


def lru(settings: Settings) -> LRUPolicy:
    return LRUPolicy(settings.cache.max_entries)


def not_a_policy(settings: Settings) -> str:
    return "lru"


def offline(name: str, settings: Mapping[str, Any]) -> OfflineChatModel:
    return OfflineChatModel()


@hookimpl
def register_storage_backends(register: StorageBackendRegister) -> None:
    register("sql", build_sql)
    register("wrong", lambda: build_sql)  # mistyped
    register(42, build_sql)  # mistyped


@hookimpl
def register_session_stores(register: SessionStoreRegister) -> None:
    register("wrong", build_sql)  # mistyped


@hookimpl
def register_tool_types(register: ToolTypeRegister) -> None:
    register("crud", LazyCrudType())
    register("wrong", LazyCrudType)  # mistyped


@hookimpl
def register_eviction_policies(register: EvictionPolicyRegister) -> None:
    register("lru", lru)
    register("wrong", not_a_policy)  # mistyped


@hookimpl
def register_models(register: ModelRegister) -> None:
    register("offline", offline)
    register("wrong", lru)  # mistyped
"""


def test_mypy_reports_a_mistyped_registration(tmp_path: Path) -> None:
    import subprocess

    pytest.importorskip("mypy")
    plugin = tmp_path / "mistyped_plugin.py"
    plugin.write_text(MISTYPED_PLUGIN, encoding="utf-8")
    # A process of its own (mypy changes the interpreter's recursion limit), with the
    # repository's settings and cache: chatwright itself is checked once, by `mypy`.
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            str(plugin),
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "--cache-dir",
            str(ROOT / ".mypy_cache"),
            "--no-error-summary",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    stdout, stderr, status = done.stdout, done.stderr, done.returncode
    reported = {int(line.split(":")[1]) for line in stdout.splitlines() if ": error:" in line}
    marked = {
        number
        for number, line in enumerate(MISTYPED_PLUGIN.splitlines(), start=1)
        if line.endswith("# mistyped")
    }
    assert status == 1, stdout + stderr
    assert reported == marked, stdout


def test_register_callbacks_are_typed_by_their_protocols() -> None:
    import typing

    import chatwright
    from chatwright import hookspecs

    expected = {
        "register_storage_backends": chatwright.StorageBackendRegister,
        "register_session_stores": chatwright.SessionStoreRegister,
        "register_tool_types": chatwright.ToolTypeRegister,
        "register_eviction_policies": chatwright.EvictionPolicyRegister,
        "register_models": chatwright.ModelRegister,
        "register_examples": chatwright.ExampleRegister,
        "register_settings": chatwright.SettingsRegister,
    }
    assert set(expected) == set(COLLECTIONS)
    for hook, protocol in expected.items():
        assert typing.get_type_hints(getattr(hookspecs, hook))["register"] is protocol


# -- CHATWRIGHT_TRACE_PLUGINS --------------------------------------------------------------

TRACE_LINE = r"chatwright trace: plugin '{plugin}' {hook}\({args}\) \d+\.\d{{3}} ms"


class Traced:
    """A plugin with a collection hook, an event hook that works and one that fails."""

    @hookimpl
    def register_storage_backends(self, register: Callable[[str, Any], None]) -> None:
        register("traced-a", object)
        register("traced-b", object)

    @hookimpl
    def executor_evicted(self, key: tuple[str, str]) -> None:
        pass

    @hookimpl
    def startup(self, runtime: object) -> None:
        raise RuntimeError("startup went wrong")


def test_trace_plugins_writes_a_line_per_hook_call(capsys: pytest.CaptureFixture[str]) -> None:
    import re

    plugins = Plugins(LoadPolicy(), trace=True)
    plugins.register(Traced(), "traced")
    plugins.collect("register_storage_backends")
    plugins.notify("executor_evicted", key=("ann", "helper"), reason="capacity")
    plugins.notify("startup", runtime=Runtime(Settings(), plugins))
    root = click.Group("chatwright")
    plugins.add_commands(root)  # no plugin adds commands: no line

    lines = capsys.readouterr().err.splitlines()
    expected = [
        TRACE_LINE.format(
            plugin="traced", hook="register_storage_backends", args="register=<function>"
        )
        + ": registered 'traced-a', 'traced-b'",
        TRACE_LINE.format(
            plugin="traced",
            hook="executor_evicted",
            args=re.escape("key=('ann', 'helper'), reason='capacity'"),
        ),
        TRACE_LINE.format(plugin="traced", hook="startup", args="runtime=<Runtime>")
        + ": raised RuntimeError: startup went wrong",
    ]
    traced = [line for line in lines if line.startswith("chatwright trace:")]
    assert len(traced) == len(expected), lines
    for line, pattern in zip(traced, expected, strict=True):
        assert re.fullmatch(pattern, line), line


def test_trace_plugins_is_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert Plugins(LoadPolicy()).trace is False
    plugins = Plugins(LoadPolicy())
    plugins.register(Traced(), "traced")
    plugins.collect("register_storage_backends")
    assert capsys.readouterr().err == ""

    monkeypatch.setenv("CHATWRIGHT_TRACE_PLUGINS", "1")
    assert Plugins(LoadPolicy()).trace is True
    from chatwright.settings import NOT_SETTINGS

    assert "trace_plugins" in NOT_SETTINGS  # read directly, never taken for a setting


TRACED_SOURCE = """
import time

import click
from chatwright import hookimpl

time.sleep(0.05)


@hookimpl
def register_commands(cli):
    @cli.command("traced-hello")
    def traced_hello():
        click.echo("hello")


@hookimpl
def startup(runtime):
    time.sleep(0.02)
"""


def test_trace_plugins_through_the_runner(dists: FakeDists, tmp_path: Path) -> None:
    import re
    import subprocess

    dists.add("traced-cw-plugin", "traced", "traced_cw_plugin", TRACED_SOURCE)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATWRIGHT_")}
    env["PYTHONPATH"] = str(dists.root)
    env["CHATWRIGHT_TRACE_PLUGINS"] = "1"
    env["CHATWRIGHT_STORAGE__URL"] = f"sqlite+aiosqlite:///{tmp_path / 'traced.db'}"
    runner = str(Path(sys.executable).parent / "chatwright")
    done = subprocess.run(
        [runner, "init"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()

    def found(pattern: str) -> str:
        matching = [line for line in lines if re.fullmatch(pattern, line)]
        assert len(matching) == 1, (pattern, lines)
        return matching[0]

    found(
        TRACE_LINE.format(plugin="traced", hook="register_commands", args="cli=<\\w+>")
        + ": added 'traced-hello'"
    )
    found(
        TRACE_LINE.format(plugin="sql", hook="register_storage_backends", args="register=<\\w+>")
        + ": registered 'sql'"
    )
    slept = found(TRACE_LINE.format(plugin="traced", hook="startup", args="runtime=<Runtime>"))
    assert float(slept.split()[-2]) >= 20  # the duration is the hook's, in milliseconds
    # Its import too (the source sleeps 0.05 s as it is imported).
    imported = found(r"chatwright trace: plugin 'traced' imported traced_cw_plugin in [\d.]+ ms")
    assert float(imported.split()[-2]) >= 50

    quiet = subprocess.run(
        [runner, "plugins"],
        env={k: v for k, v in env.items() if k != "CHATWRIGHT_TRACE_PLUGINS"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert quiet.returncode == 0, quiet.stderr
    assert "chatwright trace" not in quiet.stderr


class TodoExample:
    """An example that records what it was asked to install."""

    summary = "agent 'assistant' (todo)"

    def __init__(self) -> None:
        self.installed: list[Runtime] = []

    async def install(self, runtime: Runtime) -> list[str]:
        self.installed.append(runtime)
        if len(self.installed) > 1:
            return []
        await runtime.storage.agents.create("assistant", system_prompt="Hi.", model="scripted:x")
        return ["agent 'assistant'"]


def test_hook_register_examples(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The bundled `example` plugin registers `assistant`.
    bundled = Plugins.load(LoadPolicy()).get("register_examples", "assistant")
    assert bundled.plugin == "example"
    assert bundled.kind == "example"

    # `init --example` installs whatever plugin registers `assistant`, here one that
    # stands in for the blocked bundled plugin.
    example = TodoExample()

    class Examples:
        @hookimpl
        def register_examples(self, register: Callable[[str, Any], None]) -> None:
            register("assistant", example)

    plugins = Plugins(LoadPolicy(block=frozenset({"example"})))
    plugins.load_entry_points()
    plugins.register(Examples(), "examples")
    assert set(plugins.collect("register_examples")) == {"assistant"}
    monkeypatch.chdir(tmp_path)
    database = ["--database", f"sqlite+aiosqlite:///{tmp_path}/t.db"]
    root = build_cli(plugins)
    first = CliRunner().invoke(root, [*database, "init", "--example"])
    assert first.exit_code == 0, first.output
    assert "Created agent 'assistant'" in first.output
    again = CliRunner().invoke(root, [*database, "init", "--example", "assistant"])
    assert again.exit_code == 0, again.output
    assert "The example (agent 'assistant' (todo)) is already there" in again.output
    assert len(example.installed) == 2
    unknown = CliRunner().invoke(root, [*database, "init", "--example", "nope"])
    assert unknown.exit_code == 1
    assert unknown.output.startswith(
        "Error: no example named 'nope' is available; known: 'assistant'"
    )


def test_init_example_with_the_example_plugin_blocked_is_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CHATWRIGHT_DISABLE_PLUGINS", "example")
    result = CliRunner().invoke(build_cli(), ["init", "--example"])
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        "Error: no example named 'assistant' is available; known: none; "
        "CHATWRIGHT_DISABLE_PLUGINS blocks example"
    ]
    assert not (tmp_path / "chatwright.toml").exists()  # nothing written before the error


async def test_the_example_needs_a_backend_that_creates_tables(
    runtime_settings: Settings,
) -> None:
    from chatwright.errors import StorageError
    from chatwright.plugins.example import assistant
    from chatwright.stores import TableCreator

    runtime = Runtime(runtime_settings, Plugins.load(LoadPolicy()))
    await runtime.start(upgrade=True)
    try:
        assert isinstance(runtime.storage.records, TableCreator)  # the SQL backend can
    finally:
        await runtime.close()

    class NoTables:
        description = "a backend without table creation"
        records = object()

    with pytest.raises(StorageError, match=r"cannot create tables.*tasks and notes"):
        await assistant.seed(NoTables(), "offline:x")  # type: ignore[arg-type]


def test_hook_register_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import BaseModel, Field

    from chatwright.plugins.server.settings import ServerSettings

    class GreeterSettings(BaseModel):
        greeting: str = Field("Hello", description="What to say.")

    class Greeter:
        @hookimpl
        def register_settings(self, register: SettingsRegister) -> None:
            register("greeter", GreeterSettings)

    plugins = Plugins.load(LoadPolicy())
    plugins.register(Greeter(), "greeter")
    registered = {(r.plugin, r.name): r.value for r in plugins.collect_settings()}
    assert registered[("greeter", "greeter")] is GreeterSettings
    assert registered[("server", "server")] is ServerSettings  # the bundled ones use it too
    monkeypatch.setenv("CHATWRIGHT_GREETER__GREETING", "Hi")
    settings = load_settings(plugins=plugins)
    assert settings.section(GreeterSettings).greeting == "Hi"
    assert "register_settings" in {i.name: i for i in plugins.infos()}["greeter"].hooks

    # A plugin whose hook raises is skipped; the others' settings still load.
    class Broken:
        @hookimpl
        def register_settings(self, register: SettingsRegister) -> None:
            raise RuntimeError("settings exploded")

    plugins.register(Broken(), "broken")
    assert load_settings(plugins=plugins).section(GreeterSettings).greeting == "Hi"
    error = {i.name: i.error for i in plugins.infos()}["broken"]
    assert error is not None and "settings exploded" in error


def test_a_command_of_a_blocked_plugin_says_why_it_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CHATWRIGHT_DISABLE_PLUGINS", "server")
    missing = CliRunner().invoke(build_cli(), ["serve"])
    assert missing.exit_code == 2
    said = missing.output.splitlines()[-1]
    assert said == (
        "Error: No such command 'serve' (a plugin that is not loaded adds no commands: "
        "CHATWRIGHT_DISABLE_PLUGINS blocks server)."
    )
    # A near spelling of a loaded command is still offered; an unlike one is not.
    typo = CliRunner().invoke(build_cli(), ["agnets"]).output.splitlines()[-1]
    assert typo.endswith("blocks server). Did you mean 'agents'?"), typo
    # Loaded commands run as ever.
    assert CliRunner().invoke(build_cli(), ["agents", "--help"]).exit_code == 0
    # Shell completion parses without failing, blocked plugins or not.
    completing = CliRunner().invoke(
        build_cli(),
        [],
        env={
            "_CHATWRIGHT_COMPLETE": "bash_complete",
            "COMP_WORDS": "chatwright nosuch --",
            "COMP_CWORD": "2",
        },
        prog_name="chatwright",
    )
    assert completing.exit_code == 0, completing.output
    assert "plain,--config" in completing.output
    # With nothing blocked, click's own answer.
    monkeypatch.delenv("CHATWRIGHT_DISABLE_PLUGINS")
    assert "blocks" not in CliRunner().invoke(build_cli(), ["nosuch"]).output


def test_a_slow_plugin_import_is_warned_of(
    dists: FakeDists, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: a plugin taking seconds to import slowed every command, unseen."""
    import re

    from chatwright import registry

    monkeypatch.setattr(registry, "SLOW_IMPORT", 0.05)
    dists.add("slow-cw-plugin", "slow", "slow_cw_plugin", "import time\ntime.sleep(0.06)\n")
    caplog.set_level(logging.WARNING, logger="chatwright.registry")
    Plugins.load(LoadPolicy())
    (warned,) = [r.getMessage() for r in caplog.records if "to import" in r.getMessage()]
    assert re.search(r"plugin 'slow' \(slow-cw-plugin\) took [\d.]+ s to import", warned)
    assert "CHATWRIGHT_DISABLE_PLUGINS" in warned
